"""Mounting an intercepted app's volumes on the workstation (`intercept --mount`).

The agent exports the app container's volumes over raw SFTP on the pod IP (agent
`exporting`); once the intercept is active, `sshfs -o directport=PORT POD_IP:/ POINT`
mounts them through the cluster network (the TUN device routes the pod IP). sshfs runs in
the foreground (`-f`) as our child, tracked by its PID: we know when it dies, and whom to
stop. Its output goes to `sshfs-<intercept>.log` in the state directory.

A mount ends with its intercept (`leave`), with the session (`quit`, the daemon stopping):
`fusermount3 -u`, or `umount -l` when that fails (busy), then the process is waited for
(terminated if it lingers), and a mount point we created is removed again.

Mounting is best effort: without sshfs, or when it cannot reach the export, the intercept
works without its volumes and the reason travels to the CLI as one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kubepresence.protocol import paths
from kubepresence.protocol.errors import UserError

log = logging.getLogger(__name__)

SSHFS = "sshfs"
FUSERMOUNT = "fusermount3"
# sshfs 3.7 mounts first and connects after (strace shows mount(2) before connect(2)): a
# mount point alone proves nothing; the mount counts once its root can be listed.
MOUNT_TIMEOUT = 15.0  # a reachable agent answers in well under 1 s
UNMOUNT_TIMEOUT = 5.0
POLL = 0.05


class MountError(Exception):
    """A mount did not happen; the message is one line for the user."""


@dataclass(frozen=True)
class MountPoint:
    """Where a mount goes, and whether we made the directory (then we remove it again)."""

    path: Path
    created: bool


@dataclass
class Mount:
    intercept: str
    point: MountPoint
    source: str  # "POD_IP:PORT"
    process: asyncio.subprocess.Process

    @property
    def pid(self) -> int:
        return self.process.pid


def sshfs_command(pod_ip: str, sftp_port: int, point: Path) -> list[str]:
    """The sshfs command line: SFTP straight to the agent's port, never a prompt."""
    return [
        SSHFS,
        "-f",  # stay our child: tracked by PID
        "-o",
        f"directport={sftp_port}",  # raw SFTP on TCP: no ssh, no keys, no questions
        "-o",
        "follow_symlinks",  # Kubernetes volumes (secrets, config maps) are symlink farms
        "-o",
        "dcache_timeout=2",  # the pod writes too: keep directory listings fresh
        f"{pod_ip}:/",
        str(point),
    ]


def is_mounted(point: Path, mountinfo: str | None = None) -> bool:
    """Whether `point` is a mount point (from /proc/self/mountinfo: no stat on a FUSE fs)."""
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    target = os.fsencode(str(point))
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) > 4 and _unescape(fields[4]) == target:
            return True
    return False


def _unescape(field: str) -> bytes:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    raw = os.fsencode(field)
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] == 0x5C and i + 3 < len(raw) and raw[i + 1 : i + 4].isdigit():
            out.append(int(raw[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return bytes(out)


def check_mount_point(requested: str) -> Path | None:
    """The requested mount point, resolved, if usable: absolute, and an empty directory
    or nothing yet ("" asks for a temporary directory: None). UserError otherwise."""
    if not requested:
        return None
    if not Path(requested).is_absolute():
        raise UserError(f"mount point {requested}: not an absolute path")
    path = Path(requested).resolve()  # mountinfo names the real path
    if path.is_dir():
        if is_mounted(path):
            raise UserError(f"mount point {path}: something is mounted there already")
        if any(path.iterdir()):
            raise UserError(f"mount point {path}: not an empty directory")
    elif path.exists() or path.is_symlink():
        raise UserError(f"mount point {path}: exists and is not a directory")
    else:
        _check_creatable(path)
    return path


def _check_creatable(path: Path) -> None:
    """Make (and remove again) the missing directories up to `path`: tried now, since
    asking (os.access) says yes to root where nothing can be made, such as /proc."""
    missing = [path, *(p for p in path.parents if not p.exists())]
    try:
        path.mkdir(parents=True)
    except OSError as error:
        raise UserError(f"mount point {path}: cannot create it: {error.strerror}") from None
    for made in missing:  # deepest first
        with contextlib.suppress(OSError):
            made.rmdir()


def prepare_mount_point(requested: str, intercept: str) -> MountPoint:
    """The directory to mount on: `requested` (see `check_mount_point`; made when
    missing), or a fresh temporary one. UserError (one line) when it cannot be used."""
    path = check_mount_point(requested)
    if path is None:
        path = Path(tempfile.mkdtemp(prefix=f"kubepresence-{intercept}-")).resolve()
        return MountPoint(path, created=True)
    if path.is_dir():
        return MountPoint(path, created=False)
    try:
        path.mkdir(parents=True)
    except OSError as error:
        raise UserError(f"mount point {path}: cannot create it: {error.strerror}") from None
    return MountPoint(path, created=True)


def release_mount_point(point: MountPoint) -> None:
    """Remove a mount point we created (only if it is empty and not mounted)."""
    if point.created and not is_mounted(point.path):
        with contextlib.suppress(OSError):
            point.path.rmdir()


class Mounts:
    """The daemon's sshfs mounts, one per intercept name."""

    def __init__(self) -> None:
        self._mounts: dict[str, Mount] = {}

    def get(self, intercept: str) -> Mount | None:
        return self._mounts.get(intercept)

    def get_all(self) -> list[Mount]:
        return list(self._mounts.values())

    async def mount_intercept(
        self, intercept: str, requested: str, pod_ip: str, sftp_port: int
    ) -> tuple[str, str]:
        """Mount an active intercept's volumes at `requested` ("": a temporary directory):
        (mount point, "") or ("", why not). UserError for a mount point that cannot be."""
        point = prepare_mount_point(requested, intercept)
        try:
            mount = await self.mount(intercept, point, pod_ip, sftp_port)
        except MountError as error:
            log.warning("intercept %s: %s", intercept, error)
            release_mount_point(point)
            return "", str(error)
        return str(mount.point.path), ""

    async def mount(self, intercept: str, point: MountPoint, pod_ip: str, sftp_port: int) -> Mount:
        """Mount the export at `point`; MountError (one line) when it cannot."""
        if not pod_ip or not sftp_port:
            raise MountError("the workload's agent exports no volumes")
        if shutil.which(SSHFS) is None:
            raise MountError("sshfs is not installed: volumes not mounted (install sshfs)")
        log_path = paths.state_dir() / f"sshfs-{intercept}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        command = sshfs_command(pod_ip, sftp_port, point.path)
        log.info("mounting %s:%d at %s: %s", pod_ip, sftp_port, point.path, " ".join(command))
        with log_path.open("ab") as output:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                start_new_session=True,  # a ^C at the CLI is not sshfs's to get
            )
        mount = Mount(intercept, point, f"{pod_ip}:{sftp_port}", process)
        try:
            await self._wait_mounted(mount, log_path)
        except BaseException:
            await _stop(mount)
            raise
        self._mounts[intercept] = mount
        log.info("mounted %s at %s (sshfs pid %d)", mount.source, point.path, mount.pid)
        return mount

    @staticmethod
    async def _wait_mounted(mount: Mount, log_path: Path) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + MOUNT_TIMEOUT
        while True:
            if mount.process.returncode is not None:
                reason = _last_line(log_path) or f"exit code {mount.process.returncode}"
                raise MountError(f"sshfs could not mount {mount.source}: {reason}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise MountError(
                    f"sshfs could not mount {mount.source} within {MOUNT_TIMEOUT:.0f} s"
                )
            if is_mounted(mount.point.path):
                # Listing the root asks the agent: connected, or an OSError. (A stat of the
                # root can be answered without it.) sshfs mounts *before* it connects and
                # unmounts when the connection fails: a listing that ran after that read
                # the empty directory beneath. Only a mount still there after the listing
                # proves the listing went through sshfs, i.e. that it connected.
                with contextlib.suppress(OSError, TimeoutError):
                    await asyncio.wait_for(
                        asyncio.to_thread(os.listdir, mount.point.path), remaining
                    )
                    if is_mounted(mount.point.path) and mount.process.returncode is None:
                        return
            await asyncio.sleep(POLL)

    async def unmount(self, intercept: str) -> bool:
        """Unmount the intercept's volumes; False when it had none."""
        mount = self._mounts.pop(intercept, None)
        if mount is None:
            return False
        await _stop(mount)
        return True

    async def unmount_all(self) -> None:
        for intercept in list(self._mounts):
            await self.unmount(intercept)

    async def remount_all(self) -> list[str]:
        """Make every mount again at the same place: after the cluster network came back
        from a dead root daemon, sshfs's connection (a flow of the old one) is gone or
        hangs. Returns what could not be mounted again, one line each."""
        problems = []
        for intercept, mount in list(self._mounts.items()):
            del self._mounts[intercept]
            await _stop(mount, release=False)
            pod_ip, _, port = mount.source.rpartition(":")
            try:
                await self.mount(intercept, mount.point, pod_ip, int(port))
            except MountError as error:
                release_mount_point(mount.point)
                problems.append(f"intercept {intercept}: {error}")
        return problems


async def _stop(mount: Mount, *, release: bool = True) -> None:
    """Unmount, end the sshfs process (by its PID), remove a mount point we made (unless
    it is to be used again)."""
    point = mount.point.path
    if is_mounted(point):
        for command in ([FUSERMOUNT, "-u", str(point)], ["umount", "-l", str(point)]):
            if await _run(command):
                break
        else:
            log.warning("could not unmount %s (see the log above)", point)
    process = mount.process
    if process.returncode is None:
        try:
            async with asyncio.timeout(UNMOUNT_TIMEOUT):
                await process.wait()
        except TimeoutError:
            log.info("sshfs (pid %d) still runs after the unmount: terminating it", process.pid)
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                async with asyncio.timeout(UNMOUNT_TIMEOUT):
                    await process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
    log.info("unmounted %s (sshfs pid %d exited: %s)", point, process.pid, process.returncode)
    if release:
        release_mount_point(mount.point)


async def _run(command: list[str]) -> bool:
    if shutil.which(command[0]) is None:
        return False
    try:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(UNMOUNT_TIMEOUT):
            _, err = await process.communicate()
    except (OSError, TimeoutError) as error:
        log.info("%s failed: %s", " ".join(command), error)
        return False
    if process.returncode != 0:
        log.info("%s failed: %s", " ".join(command), err.decode(errors="replace").strip())
        return False
    return True


def _last_line(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = path.read_text(errors="replace").strip().splitlines()
        if lines:
            return lines[-1].strip()
    return ""
