"""Files a command will write, checked before anything is applied. Sans-IO: the caller
hands in what it found on disk.

`intercept --env-file /no/such/dir/app.env` used to create the intercept, fail to write,
and leave the cluster's traffic going to the workstation after a "failed" command. Each
output path is checked first: its directory must exist and be writable, and the path must
not be a directory.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PathFacts:
    """What the disk says about an output path and its directory."""

    is_dir: bool
    parent_exists: bool
    parent_is_dir: bool
    parent_writable: bool
    writable_if_exists: bool  # True when the file does not exist yet


def unwritable(option: str, path: str, facts: PathFacts) -> str | None:
    """Why `path` cannot be written (one line naming the option), or None."""
    if facts.is_dir:
        return f"{option} {path}: is a directory"
    if not facts.parent_exists:
        return f"{option} {path}: its directory does not exist"
    if not facts.parent_is_dir:
        return f"{option} {path}: its parent is not a directory"
    if not facts.parent_writable or not facts.writable_if_exists:
        return f"{option} {path}: not writable"
    return None


def workload_hint(workload: str) -> str | None:
    """A workload named `ns/name`, as kubectl writes a type/name: say how to name it."""
    if "/" not in workload:
        return None
    first, _, rest = workload.partition("/")
    return (
        f"{workload!r} is not a workload name: name it alone and give its namespace with"
        f" -n, e.g. `intercept {rest or '<name>'} -n {first or '<namespace>'}`"
    )
