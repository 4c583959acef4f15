"""Finding and removing mounts the cluster left behind (overlay rootfs, shm, netns, tmpfs)."""

from __future__ import annotations

import ctypes
import errno
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

MNT_DETACH = 2
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 1 << 20
_libc = ctypes.CDLL(None, use_errno=True)


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_points(mountinfo: Path = Path("/proc/self/mountinfo")) -> list[str]:
    """Every mount point of this mount namespace, in mount order."""
    return [
        _unescape(line.split()[4]) for line in mountinfo.read_text().splitlines() if line.strip()
    ]


def _is_under(point: str, root: str) -> bool:
    root = root.rstrip("/")
    return point == root or point.startswith(root + "/")


def mounts_under(*roots: Path | str) -> list[str]:
    return [p for p in mount_points() if any(_is_under(p, str(r)) for r in roots)]


def unmount(point: str) -> None:
    target = os.fsencode(point)
    if _libc.umount2(target, 0) == 0:
        return
    err = ctypes.get_errno()
    if err == errno.EINVAL:
        raise OSError(err, f"umount {point}: {os.strerror(err)}")  # hidden or not a mount
    # Busy: detach lazily; the kernel frees it when the last user goes away.
    if _libc.umount2(target, MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"umount {point}: {os.strerror(err)}")
    log.debug("lazily detached %s (first error %s)", point, os.strerror(err))


def is_mount_point(path: Path | str) -> bool:
    return str(path) in mount_points()


def make_shared_mount_point(path: Path) -> None:
    """Make a directory its own mount point with shared propagation, as `ip netns add` does.

    Done before anything mounts below it: a mount made on the directory while it is still
    a plain directory is hidden for good by the bind mount that comes later (issue 21).
    """
    path.mkdir(mode=0o755, parents=True, exist_ok=True)
    target = os.fsencode(path)
    # As iproute2 does: try to make it shared; EINVAL means it is no mount point (mountinfo
    # cannot tell: a mount hidden under a later one on a parent still lists the path), so
    # bind it on itself first.
    if _libc.mount(b"", target, b"none", MS_SHARED | MS_REC, None) == 0:
        return
    err = ctypes.get_errno()
    if err != errno.EINVAL:
        raise OSError(err, f"make {path} shared: {os.strerror(err)}")
    if _libc.mount(target, target, b"none", MS_BIND | MS_REC, None):
        err = ctypes.get_errno()
        raise OSError(err, f"bind-mount {path} on itself: {os.strerror(err)}")
    if _libc.mount(b"", target, b"none", MS_SHARED | MS_REC, None):
        err = ctypes.get_errno()
        raise OSError(err, f"make {path} shared: {os.strerror(err)}")


def unmount_under(*roots: Path | str) -> list[str]:
    """Unmount everything at or below the roots, deepest and newest first; return what went.

    A mount can be hidden under a later mount on a parent (e.g. an nsfs mount that propagated
    under the `ip netns` bind of /run/netns): unmounting it fails (EINVAL) until the parent is
    gone, so this goes round a few times and only reports what is still there at the end.
    """
    removed: list[str] = []
    failed: dict[str, OSError] = {}
    for _ in range(5):  # bounded: each round uncovers at most one more layer
        found = mounts_under(*roots)
        if not found:
            break
        # Deepest first; at equal depth the most recent mount (later in mountinfo) first.
        order = sorted(
            enumerate(found), key=lambda item: (item[1].count("/"), item[0]), reverse=True
        )
        for _, point in order:
            try:
                unmount(point)
                removed.append(point)
                failed.pop(point, None)
            except OSError as exc:
                failed[point] = exc
    for point in mounts_under(*roots):
        log.warning("could not unmount %s: %s", point, failed.get(point, "still mounted"))
    return removed
