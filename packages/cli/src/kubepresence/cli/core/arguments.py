"""Values the command line checks itself, before a daemon starts or anything is applied.

A name the API server would refuse, or a CIDR rootd would refuse, used to get as far as an
installed traffic manager and an arrived session before the refusal came back.

Files a command will write are checked too (the caller hands in what it found on disk):
`intercept --env-file /no/such/dir/app.env` used to create the intercept, fail to write,
and leave the cluster's traffic going to the workstation after a "failed" command. Each
output path is checked first: its directory must exist and be writable, and the path must
not be a directory.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

# Namespaces and intercept names are RFC 1123 labels (the API server's rule for
# namespaces; an intercept's name also becomes part of paths, headers and URLs).
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
MAX_LABEL = 63


def label_problem(what: str, value: str) -> str | None:
    """Why `value` is not a valid `what` (one line), or None."""
    if len(value) <= MAX_LABEL and _LABEL.fullmatch(value):
        return None
    return (
        f"{what} {value!r} is not a valid name: lowercase letters, digits and '-', "
        f"at most {MAX_LABEL}, starting and ending with a letter or digit"
    )


def cidr_problem(option: str, value: str) -> str | None:
    """Why `value` is not a subnet for `option` (one line), or None."""
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError as error:
        return f"{option} {value!r} is not a CIDR such as 10.0.0.0/16 ({error})"
    return None


_HOST_LABEL = r"[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_HOST_LABEL}(\.{_HOST_LABEL})*\.?")


def address_problem(option: str, value: str) -> str | None:
    """Why `value` is neither an IP address nor a host name (one line), or None."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not _HOSTNAME.fullmatch(value):
            return f"{option} {value!r} is neither an IP address nor a host name"
    return None


def executable_problem(program: str, found: str | None) -> str | None:
    """`-- CMD`: what is wrong with CMD's program, given where `shutil.which` found it
    (checked before anything is applied)."""
    if found is None:
        return f"cannot run {program}: no such program on PATH, or not executable"
    return None


def first_problem(problems: list[str | None]) -> str | None:
    return next((p for p in problems if p), None)


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
