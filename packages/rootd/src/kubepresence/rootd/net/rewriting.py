"""Rewriting resolv.conf in place, with a backup that outlives a crash.

The original bytes are saved under rootd's root-owned state directory BEFORE the file is
changed (written to a temporary file, fsynced, renamed), then resolv.conf is rewritten in
place (truncate and write the same inode: it may be a bind mount, as in `ip netns exec`,
where a rename would fail or replace the wrong file). `restore` writes the original back
byte for byte and deletes the backup; at start-up `recover` does the same for a backup a
crashed run left behind.

The backup lives in a directory per network namespace (keyed by the namespace's inode) and
records which file it came from (device and inode): a rootd in another namespace, where
/etc/resolv.conf is another file, never restores it over its own. It also records the rootd
that made it (pid and start time): while that process lives, the backup is its, and a
second rootd in the same namespace neither "recovers" it nor connects over it.

All of it is small synchronous file I/O, on purpose: cleanup must finish even while the
task that runs it is being cancelled.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

RESOLV_CONF = Path("/etc/resolv.conf")
_BACKUP_NAME = "resolv.conf.backup.json"


class RewriteError(OSError):
    """resolv.conf or its backup could not be read or written."""


@dataclass(frozen=True, slots=True)
class _Identity:
    device: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> _Identity:
        stat = path.stat()
        return cls(stat.st_dev, stat.st_ino)


def namespace_key() -> str:
    """Names this network namespace for the state directory."""
    try:
        return f"netns-{Path('/proc/self/ns/net').stat().st_ino}"
    except OSError:
        return "netns-unknown"


class ResolvConfRewriter:
    """resolv.conf of this network namespace, and its backup."""

    def __init__(self, state_dir: Path, path: Path = RESOLV_CONF) -> None:
        self.path = path
        self.backup_dir = state_dir / namespace_key()
        self.backup = self.backup_dir / _BACKUP_NAME

    def read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as error:
            raise RewriteError(error.errno, f"cannot read {self.path}: {error.strerror}") from None

    def save_backup(self, original: bytes) -> None:
        """Keep `original` safe (durably) before anything changes.

        RewriteError when a backup exists (another rootd is connected, or a dead one's
        leftover was not restored first).
        """
        if self.backup.exists():
            owner = self.live_owner()
            holder = f"rootd pid {owner}" if owner is not None else "a previous run"
            raise RewriteError(0, f"a backup of {self.path} by {holder} exists: {self.backup}")
        identity = _Identity.of(self.path)
        record = {
            "path": str(self.path),
            "device": identity.device,
            "inode": identity.inode,
            "pid": os.getpid(),
            "start": process_start_time(os.getpid()),
            "content": base64.b64encode(original).decode(),
        }
        self.backup_dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.backup_dir.mkdir(mode=0o700, exist_ok=True)
        temporary = self.backup.with_suffix(".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(descriptor, json.dumps(record).encode())
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        temporary.replace(self.backup)
        _fsync_dir(self.backup_dir)

    def install(self, content: bytes) -> None:
        """Write `content` over resolv.conf, in place."""
        _write_in_place(self.path, content)

    def restore(self) -> bool:
        """Put the original back and drop the backup; False if there was none."""
        try:
            record = json.loads(self.backup.read_bytes())
            original = base64.b64decode(record["content"])
            saved = _Identity(int(record["device"]), int(record["inode"]))
        except FileNotFoundError:
            return False
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise RewriteError(0, f"unreadable backup {self.backup}: {error}") from None
        try:
            current = _Identity.of(self.path)
        except OSError:
            current = None
        if current != saved:
            # Not the file we changed (another namespace, or it was replaced meanwhile):
            # keep the backup aside for a human, and do not write over someone else's file.
            aside = self.backup.with_suffix(".stale")
            self.backup.replace(aside)
            log.warning(
                "%s is no longer the file rootd changed; its original is kept in %s",
                self.path,
                aside,
            )
            return False
        _write_in_place(self.path, original)
        self.backup.unlink()
        _fsync_dir(self.backup_dir)
        log.info("restored %s", self.path)
        return True

    def has_backup(self) -> bool:
        return self.backup.exists()

    def live_owner(self) -> int | None:
        """The pid of the (other) running rootd that made the backup, or None."""
        try:
            record = json.loads(self.backup.read_bytes())
            pid, start = int(record["pid"]), record["start"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if pid == os.getpid() or start is None or process_start_time(pid) != start:
            return None
        return pid


def process_start_time(pid: int) -> int | None:
    """When process `pid` started (clock ticks after boot): tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _write_in_place(path: Path, content: bytes) -> None:
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_TRUNC)
    except OSError as error:
        raise RewriteError(error.errno, f"cannot write {path}: {error.strerror}") from None
    try:
        view = memoryview(content)
        while view:
            written = os.write(descriptor, view)
            view = view[written:]
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
