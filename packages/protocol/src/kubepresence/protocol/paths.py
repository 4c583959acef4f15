"""Where a workstation's kubepresence keeps its sockets and logs.

Sockets live in the user's runtime dir (mode 0700), logs in the user's state dir. When
rootd runs through sudo it is handed the invoking user's paths explicitly, so it never
guesses from its own (root) environment.
"""

from __future__ import annotations

import os
from pathlib import Path


def runtime_dir() -> Path:
    """Directory for the unix sockets; created 0700 on first use."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    path = Path(base) / "kubepresence" if base else Path(f"/tmp/kubepresence-{os.getuid()}")  # noqa: S108
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def state_dir() -> Path:
    """Directory for log files; created on first use."""
    base = os.environ.get("XDG_STATE_HOME")
    path = Path(base) / "kubepresence" if base else Path.home() / ".local/state/kubepresence"
    path.mkdir(parents=True, exist_ok=True)
    return path


def userd_socket() -> Path:
    return runtime_dir() / "userd.socket"


def rootd_socket() -> Path:
    return runtime_dir() / "rootd.socket"


def manager_splice_socket(userd_socket: Path) -> Path:
    """Where userd splices rootd's connections to the traffic manager: beside its own."""
    return userd_socket.with_name(f"{userd_socket.stem}-manager{userd_socket.suffix}")


def json_calls_socket(grpc_socket: Path) -> Path:
    """Where a daemon answers its JSON calls (see `jsoncalls`): beside its gRPC socket."""
    return grpc_socket.with_name(f"{grpc_socket.stem}-json{grpc_socket.suffix}")
