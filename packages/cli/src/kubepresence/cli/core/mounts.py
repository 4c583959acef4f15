"""`intercept --mount VALUE`: whether to mount the app's volumes, and where.

`true` (the default) or an empty value: a fresh temporary directory that userd makes;
`false`: no mount; anything else: a path (made absolute against the CLI's working
directory, since userd runs elsewhere). userd checks the directory itself.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

ROOT_VARIABLE = "KUBEPRESENCE_ROOT"  # where `-- CMD` finds the mounted volumes
_YES = frozenset({"true", "yes", "on", "1", ""})
_NO = frozenset({"false", "no", "off", "0"})


@dataclass(frozen=True)
class MountRequest:
    wanted: bool
    path: str = ""  # "": a temporary directory


def parse_mount(value: str, cwd: str) -> MountRequest:
    """`--mount` as given → what to ask userd for."""
    lowered = value.strip().lower()
    if lowered in _YES:
        return MountRequest(wanted=True)
    if lowered in _NO:
        return MountRequest(wanted=False)
    return MountRequest(wanted=True, path=posixpath.normpath(posixpath.join(cwd, value)))
