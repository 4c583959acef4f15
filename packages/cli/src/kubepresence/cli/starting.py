"""Starting the daemons on demand: userd as the user, rootd as root (through sudo).

Each daemon is started detached (its own session, no terminal), logs to the user's state
dir, and is waited for until its socket answers, so a slow start shows as a spinner and
a failed start as one line that points at the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from kubepresence.cli.rpc import daemons
from kubepresence.cli.sockets import socket_is_live
from kubepresence.protocol import paths
from kubepresence.protocol.errors import ConfigError, InternalError, KubepresenceError

START_TIMEOUT = 15.0


def _executable(name: str) -> str:
    """The daemon's console script, next to this interpreter first (same install)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise ConfigError(f"{name} is not installed (pip install kubepresence-{name[13:]})")
    return found


async def _spawn_detached(argv: list[str]) -> None:
    """Start a daemon in its own session; it outlives this command, so nobody waits for it."""
    await asyncio.to_thread(
        subprocess.Popen,
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


async def _answers(check: object, socket: Path, *, starting: bool = False) -> bool:
    if not socket_is_live(socket, remove_stale=not starting):
        return False
    try:
        await check(socket)  # type: ignore[operator]
    except KubepresenceError:
        return False
    return True


async def _wait_until_answering(name: str, socket: Path, log_file: Path, check: object) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT
    while loop.time() < deadline:
        if await _answers(check, socket, starting=True):
            return
        await asyncio.sleep(0.1)
    raise InternalError(f"the {name} did not start within {START_TIMEOUT:.0f} s; see {log_file}")


async def ensure_userd() -> Path:
    socket = paths.userd_socket()
    if await _answers(daemons.userd_status, socket):
        return socket
    log_file = paths.state_dir() / "userd.log"
    await _spawn_detached(
        [_executable("kubepresence-userd"), "--log-file", str(log_file), "--socket", str(socket)]
    )
    await _wait_until_answering("user daemon", socket, log_file, daemons.userd_status)
    return socket


async def ensure_rootd() -> Path:
    socket = paths.rootd_socket()
    if await _answers(daemons.rootd_version, socket):
        return socket
    log_file = paths.state_dir() / "rootd.log"
    argv = [
        _executable("kubepresence-rootd"),
        "--log-file",
        str(log_file),
        "--socket",
        str(socket),
        "--user",
        str(os.getuid()),
    ]
    if os.geteuid() != 0:
        # sudo asks for a password on the terminal once; the daemon then runs detached.
        sudo = await asyncio.to_thread(subprocess.run, ["sudo", "-v"], check=False)
        if sudo.returncode != 0:
            raise ConfigError("the root daemon needs root: sudo was refused")
        argv = ["sudo", "--non-interactive", "--background", *argv]
    await _spawn_detached(argv)
    await _wait_until_answering("root daemon", socket, log_file, daemons.rootd_version)
    return socket


async def ensure_daemons() -> Path:
    """Both daemons, started side by side (each spends a second or two importing before
    it answers); returns the user daemon's socket. When the root daemon cannot start, a
    user daemon started here for it is stopped again: a failed connect leaves nothing."""
    userd_was_up = await _answers(daemons.userd_status, paths.userd_socket())
    try:
        async with asyncio.TaskGroup() as group:
            userd = group.create_task(ensure_userd(), name="user daemon")
            try:
                await ensure_rootd()
            except KubepresenceError:
                if not userd_was_up:
                    with contextlib.suppress(KubepresenceError):
                        await daemons.quit_userd(await userd)
                raise
    except* KubepresenceError as failed:
        raise failed.exceptions[0] from None
    return userd.result()
