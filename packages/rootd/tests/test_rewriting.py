"""net.rewriting: resolv.conf rewritten in place, restored byte for byte, also after a crash."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubepresence.rootd.net.rewriting import ResolvConfRewriter, RewriteError, process_start_time

ORIGINAL = b"# odd bytes kept: \xff\xfe\nnameserver 192.0.2.53\nsearch corp.example\n"


@pytest.fixture
def resolv(tmp_path: Path) -> Path:
    path = tmp_path / "etc" / "resolv.conf"
    path.parent.mkdir()
    path.write_bytes(ORIGINAL)
    return path


def test_backup_install_restore_keeps_the_inode_and_the_bytes(resolv: Path, tmp_path: Path) -> None:
    inode = resolv.stat().st_ino
    rewriter = ResolvConfRewriter(tmp_path / "state", resolv)
    rewriter.save_backup(rewriter.read())
    assert rewriter.has_backup()
    assert (rewriter.backup_dir.stat().st_mode & 0o777) == 0o700
    assert (rewriter.backup_dir.parent.stat().st_mode & 0o777) == 0o700
    rewriter.install(b"nameserver 10.96.0.10\n")
    assert resolv.read_bytes() == b"nameserver 10.96.0.10\n"
    assert resolv.stat().st_ino == inode  # written in place, never renamed over
    assert rewriter.restore()
    assert resolv.read_bytes() == ORIGINAL
    assert resolv.stat().st_ino == inode
    assert not rewriter.has_backup()
    assert not rewriter.restore()  # nothing left to do


def test_a_new_rewriter_restores_what_a_crashed_one_left(resolv: Path, tmp_path: Path) -> None:
    crashed = ResolvConfRewriter(tmp_path / "state", resolv)
    crashed.save_backup(crashed.read())
    crashed.install(b"nameserver 10.96.0.10\n")
    restarted = ResolvConfRewriter(tmp_path / "state", resolv)
    assert restarted.has_backup()
    assert restarted.restore()
    assert resolv.read_bytes() == ORIGINAL


def test_a_second_backup_is_refused(resolv: Path, tmp_path: Path) -> None:
    rewriter = ResolvConfRewriter(tmp_path / "state", resolv)
    rewriter.save_backup(ORIGINAL)
    with pytest.raises(RewriteError, match="by a previous run exists"):
        rewriter.save_backup(b"changed")
    assert rewriter.restore()
    assert resolv.read_bytes() == ORIGINAL


def test_another_file_is_never_overwritten(resolv: Path, tmp_path: Path) -> None:
    rewriter = ResolvConfRewriter(tmp_path / "state", resolv)
    rewriter.save_backup(ORIGINAL)
    # resolv.conf was replaced by another file (another namespace's, or a DHCP client's).
    replacement = resolv.with_name("new")
    replacement.write_bytes(b"nameserver 198.51.100.1\n")
    replacement.replace(resolv)
    assert not rewriter.restore()
    assert resolv.read_bytes() == b"nameserver 198.51.100.1\n"
    assert not rewriter.has_backup()
    stale = rewriter.backup.with_suffix(".stale")
    assert json.loads(stale.read_text())["path"] == str(resolv)


def test_a_missing_resolv_conf_is_one_clear_error(tmp_path: Path) -> None:
    rewriter = ResolvConfRewriter(tmp_path / "state", tmp_path / "absent.conf")
    with pytest.raises(RewriteError, match="cannot read"):
        rewriter.read()


def test_a_live_rootds_backup_is_not_taken_over(resolv: Path, tmp_path: Path) -> None:
    """Another rootd in the same namespace sees the backup as owned while its maker lives."""
    rewriter = ResolvConfRewriter(tmp_path / "state", resolv)
    rewriter.save_backup(ORIGINAL)
    assert rewriter.live_owner() is None  # our own
    record = json.loads(rewriter.backup.read_text())
    # Pretend pid 1 made it: alive, and its start time is what the record says.
    record["pid"] = 1
    record["start"] = int(Path("/proc/1/stat").read_text().rsplit(")", 1)[1].split()[19])
    rewriter.backup.write_text(json.dumps(record))
    assert rewriter.live_owner() == 1
    with pytest.raises(RewriteError, match="by rootd pid 1 exists"):
        rewriter.save_backup(ORIGINAL)
    # The same pid with another start time is a reused pid: its maker is dead.
    record["start"] += 1
    rewriter.backup.write_text(json.dumps(record))
    assert rewriter.live_owner() is None


def test_a_zombie_is_not_a_live_owner() -> None:
    """A killed rootd nobody reaps yet keeps its /proc entry: it must count as dead."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert process_start_time(child.pid) is not None
        child.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while process_start_time(child.pid) is not None:  # a zombie until we reap it
            assert time.monotonic() < deadline, "the killed child still counts as alive"
            time.sleep(0.01)
        assert Path(f"/proc/{child.pid}/stat").exists()  # not reaped: still a zombie
    finally:
        child.kill()
        child.wait()
