"""kubepresence-userd: the user daemon, normally started by `kubepresence connect`."""

from __future__ import annotations

import sys
from pathlib import Path

from kubepresence.protocol import paths
from kubepresence.protocol.lazyimport import UNUSED_OPTIONAL, skip_imports
from kubepresence.protocol.lifecycle import daemon_parser, start_daemon


def main(argv: list[str] | None = None) -> int:
    skip_imports(*UNUSED_OPTIONAL)  # before the daemon's modules import betterproto2
    from kubepresence.userd.app import UserDaemon

    parser = daemon_parser("userd", "kubepresence-userd", __doc__ or "")
    parser.add_argument("--socket", type=Path, default=None, help="unix socket to serve the CLI on")
    parser.add_argument(
        "--rootd-socket", type=Path, default=None, help="where the root daemon serves"
    )
    args = parser.parse_args(argv)
    daemon = UserDaemon(
        socket_path=args.socket or paths.userd_socket(),
        rootd_socket=args.rootd_socket or paths.rootd_socket(),
    )
    return start_daemon("userd", "kubepresence-userd", args, daemon.run)


if __name__ == "__main__":
    sys.exit(main())
