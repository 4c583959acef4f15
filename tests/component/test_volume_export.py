"""Component test: the agent's volume export, mounted by userd's sshfs code, on loopback.

The agent's real `VolumeExport` serves a directory tree over raw SFTP on 127.0.0.1; the
user daemon's real `Mounts` runs `sshfs -o directport` against it. Scenarios:
- a file in the exported tree reads back through the mount, a symlinked one too (how
  Kubernetes lays out secrets and config maps);
- a file written through the mount lands in the exported tree, byte for byte (1 MiB);
- the mount's root is the export root (what lies above it does not show);
- unmounting leaves no mount and no sshfs process, and removes the point it made;
- a session the peer drops does not take the export down;
- a mount point that is a file is refused before anything runs;
- without sshfs the mount is skipped with one line, and the temporary directory goes.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kubepresence.agent.volumes.exporting import VolumeExport
from kubepresence.protocol.errors import UserError
from kubepresence.userd.mounting import (
    MountError,
    Mounts,
    is_mounted,
    prepare_mount_point,
    sshfs_command,
)

# The export serves from this test's event loop: every file operation on the mount runs
# in a thread (one on the loop itself would wait for the loop: a deadlock).
FUSE_READY = (
    os.geteuid() == 0
    and Path("/dev/fuse").exists()
    and shutil.which("sshfs") is not None
    and shutil.which("fusermount3") is not None
)
needs_fuse = pytest.mark.skipif(not FUSE_READY, reason="sshfs/fuse missing (or not root)")


@pytest.fixture
async def export(tmp_path: Path) -> AsyncIterator[VolumeExport]:
    root = tmp_path / "app-mounts"
    (root / "var/data").mkdir(parents=True)
    (root / "var/data/hello.txt").write_text("from the pod\n")
    secret = root / "var/run/secrets/kubernetes.io/serviceaccount"
    (secret / "..2026_11_26").mkdir(parents=True)
    (secret / "..2026_11_26/token").write_text("tok")
    (secret / "..data").symlink_to("..2026_11_26")
    (secret / "token").symlink_to("..data/token")
    (tmp_path / "outside.txt").write_text("not exported")
    exporting = VolumeExport(str(root), port=0, host="127.0.0.1")
    async with asyncio.TaskGroup() as group:
        assert await exporting.start(group)
        yield exporting
        exporting.close()


@needs_fuse
async def test_mount_reads_and_writes_through_the_export(
    export: VolumeExport, tmp_path: Path
) -> None:
    mounts = Mounts()
    point = prepare_mount_point(str(tmp_path / "mnt"), "echo")
    assert point.created
    mount = await mounts.mount("echo", point, "127.0.0.1", export.port)
    try:
        assert is_mounted(point.path)
        root = point.path
        assert await asyncio.to_thread((root / "var/data/hello.txt").read_text) == "from the pod\n"
        token = root / "var/run/secrets/kubernetes.io/serviceaccount/token"
        assert await asyncio.to_thread(token.read_text) == "tok"
        payload = os.urandom(1 << 20)
        await asyncio.to_thread((root / "var/data/local.bin").write_bytes, payload)
        assert (Path(export.root) / "var/data/local.bin").read_bytes() == payload
        # The root of the mount is the export root: nothing above it shows.
        assert await asyncio.to_thread(lambda: sorted(p.name for p in root.iterdir())) == ["var"]
    finally:
        assert await mounts.unmount("echo")
    assert not is_mounted(point.path)
    assert mount.process.returncode is not None  # the sshfs process is gone
    assert not point.path.exists()  # we made it, we removed it
    assert not await mounts.unmount("echo")


@needs_fuse
async def test_a_dropped_session_leaves_the_export_serving(
    export: VolumeExport, tmp_path: Path
) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", export.port)
    writer.write(b"\x00\x00\x00\x05\x01\x00\x00")  # half an SFTP init, then gone
    writer.close()
    mounts = Mounts()
    point = prepare_mount_point("", "echo")
    await mounts.mount("echo", point, "127.0.0.1", export.port)
    try:
        data = point.path / "var/data"
        listing = await asyncio.to_thread(lambda: [p.name for p in data.iterdir()])
        assert listing == ["hello.txt"]
    finally:
        await mounts.unmount_all()
    assert not point.path.exists()


@needs_fuse
async def test_nothing_listening_fails_with_one_line(tmp_path: Path) -> None:
    mounts = Mounts()
    point = prepare_mount_point(str(tmp_path / "mnt"), "echo")
    # A port bound here and never listened on: refused for certain while we hold it.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        # sshfs mounts before it connects and unmounts when refused: the mount must not
        # pass for connected in that window (seen in CI before `_wait_mounted` rechecked).
        try:
            with pytest.raises(MountError, match=rf"sshfs could not mount 127\.0\.0\.1:{port}: "):
                await mounts.mount("echo", point, "127.0.0.1", port)
        finally:
            await mounts.unmount_all()  # should it have mounted after all: leave nothing
    assert not point.path.exists()
    assert mounts.get("echo") is None


def test_bad_mount_points_are_refused(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(UserError, match="exists and is not a directory"):
        prepare_mount_point(str(file), "echo")
    (tmp_path / "full").mkdir()
    (tmp_path / "full/a").write_text("x")
    with pytest.raises(UserError, match="not an empty directory"):
        prepare_mount_point(str(tmp_path / "full"), "echo")
    with pytest.raises(UserError, match="not an absolute path"):
        prepare_mount_point("relative/dir", "echo")
    assert file.read_text() == "x"


def test_sshfs_never_prompts_and_stays_in_the_foreground() -> None:
    command = sshfs_command("10.244.0.7", 8022, Path("/tmp/m"))
    assert command[:2] == ["sshfs", "-f"]
    assert "directport=8022" in command
    assert command[-2:] == ["10.244.0.7:/", "/tmp/m"]


async def test_missing_sshfs_is_one_line_and_no_mount(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("kubepresence.userd.mounting.SSHFS", "sshfs-not-installed")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the mount point goes
    mounts = Mounts()
    point, error = await mounts.mount_intercept("echo", "", "10.244.0.7", 8022)
    assert point == ""
    assert error == "sshfs is not installed: volumes not mounted (install sshfs)"
    assert mounts.get("echo") is None
    assert await asyncio.to_thread(os.listdir, tmp_path) == []  # its temporary directory went
