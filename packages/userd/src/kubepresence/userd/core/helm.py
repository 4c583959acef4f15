"""The rules of `kubepresence helm install | upgrade | uninstall`.

The three commands act on the traffic manager found in a namespace (its version, or none)
and each refuses what would surprise the user, before anything changes:

| command   | refused when                                   | the user should run  |
|-----------|------------------------------------------------|----------------------|
| install   | another version is installed                   | `helm upgrade`       |
| upgrade   | none is installed                              | `helm install`       |
| uninstall | none is installed                              | (nothing to do)      |

Installing the version that is there already is allowed: it repairs what differs.
"""

from __future__ import annotations


def refusal(action: str, installed: str | None, ours: str, namespace: str) -> str:
    """Why `action` must not run on the manager `installed` in `namespace` ("" if it may)."""
    if action == "uninstall" and installed is None:
        return f"no traffic manager in namespace {namespace}"
    if action == "install" and installed is not None and installed != ours:
        return (
            f"traffic manager {installed} is installed in {namespace}: "
            "use 'kubepresence helm upgrade'"
        )
    if action == "upgrade" and installed is None:
        return f"no traffic manager in namespace {namespace}: use 'kubepresence helm install'"
    return ""


def outcome(action: str, namespace: str, ours: str, done: str) -> str:
    """The result line: `done` is what installing did (or how many objects went)."""
    if action == "uninstall":
        return f"traffic manager removed from {namespace} ({done} objects)"
    return f"traffic manager {ours} in {namespace}: {done}"
