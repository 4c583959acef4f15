"""kubepresence-rootd: the root daemon, started by `kubepresence connect` (through sudo)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from kubepresence.protocol import paths
from kubepresence.protocol.lazyimport import UNUSED_OPTIONAL, skip_imports
from kubepresence.protocol.lifecycle import daemon_parser, start_daemon

NOT_ROOT_EXIT = 3


def _invoking_uid() -> int:
    """The user that asked for this daemon: sudo's caller, else ourselves."""
    sudo_uid = os.environ.get("SUDO_UID", "")
    return int(sudo_uid) if sudo_uid.isdigit() else os.getuid()


def main(argv: list[str] | None = None) -> int:
    skip_imports(*UNUSED_OPTIONAL)  # before the daemon's modules import betterproto2
    from kubepresence.rootd import guardian
    from kubepresence.rootd.app import RootDaemon
    from kubepresence.rootd.vif import STATE_DIR, VifSettings

    parser = daemon_parser("rootd", "kubepresence-rootd", __doc__ or "")
    parser.add_argument("--socket", type=Path, default=None, help="unix socket to serve userd on")
    parser.add_argument(
        "--user", type=int, default=None, help="uid allowed to call (default: sudo's caller)"
    )
    parser.add_argument("--tun-name", default="kp0", help="name of the TUN device (default kp0)")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=STATE_DIR,
        help=f"root-owned directory for the resolv.conf backup (default {STATE_DIR})",
    )
    parser.add_argument("--mtu", type=int, default=1500, help="MTU of the TUN device")
    args = parser.parse_args(argv)
    if not 576 <= args.mtu <= 65535:
        parser.error(f"--mtu {args.mtu}: must be between 576 and 65535")
    if not args.tun_name or len(args.tun_name.encode()) > 15 or "/" in args.tun_name:
        parser.error(f"--tun-name {args.tun_name!r}: not a valid interface name")
    if os.geteuid() != 0:
        # Exit code 3: the machine's setup (see kubepresence.cli's exit codes).
        print(
            "kubepresence-rootd: must run as root (it creates a TUN device, routes and the "
            "resolver settings): start it with sudo, or let 'kubepresence connect' do it",
            file=sys.stderr,
        )
        return NOT_ROOT_EXIT
    uid = args.user if args.user is not None else _invoking_uid()
    settings = VifSettings(tun_name=args.tun_name, mtu=args.mtu, state_dir=args.state_dir)
    # Whatever ends this process (SIGKILL too), what it changed is put back.
    guardian.start(tun_name=args.tun_name, state_dir=args.state_dir, log_file=args.log_file)
    daemon = RootDaemon(
        socket_path=args.socket or paths.rootd_socket(), allowed_uid=uid, settings=settings
    )
    return start_daemon("rootd", "kubepresence-rootd", args, daemon.run)


if __name__ == "__main__":
    sys.exit(main())
