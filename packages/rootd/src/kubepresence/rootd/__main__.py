"""kubepresence-rootd: the root daemon, started by `kubepresence connect` (through sudo)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from kubepresence.protocol import paths
from kubepresence.protocol.lifecycle import daemon_parser, start_daemon
from kubepresence.rootd.app import RootDaemon


def _invoking_uid() -> int:
    """The user that asked for this daemon: sudo's caller, else ourselves."""
    sudo_uid = os.environ.get("SUDO_UID", "")
    return int(sudo_uid) if sudo_uid.isdigit() else os.getuid()


def main(argv: list[str] | None = None) -> int:
    parser = daemon_parser("rootd", "kubepresence-rootd", __doc__ or "")
    parser.add_argument("--socket", type=Path, default=None, help="unix socket to serve userd on")
    parser.add_argument(
        "--user", type=int, default=None, help="uid allowed to call (default: sudo's caller)"
    )
    args = parser.parse_args(argv)
    uid = args.user if args.user is not None else _invoking_uid()
    daemon = RootDaemon(socket_path=args.socket or paths.rootd_socket(), allowed_uid=uid)
    return start_daemon("rootd", "kubepresence-rootd", args, daemon.run)


if __name__ == "__main__":
    sys.exit(main())
