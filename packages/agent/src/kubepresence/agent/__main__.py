"""kubepresence-agent: the traffic agent sidecar (injected by the manager's webhook)."""

from __future__ import annotations

import os
import sys

from kubepresence.agent.app import TrafficAgent
from kubepresence.agent.core.config import load, parse_environ_block
from kubepresence.protocol.errors import ConfigError
from kubepresence.protocol.lifecycle import daemon_parser, start_daemon


def _manager_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host, int(port)


def _initial_environment() -> dict[str, str]:
    """The environment this process started with (see `parse_environ_block`)."""
    try:
        with open("/proc/self/environ", "rb") as block:
            return parse_environ_block(block.read())
    except OSError:
        return dict(os.environ)


def main(argv: list[str] | None = None) -> int:
    parser = daemon_parser("agent", "kubepresence-agent", __doc__ or "")
    parser.add_argument(
        "--manager-address",
        default="kubepresence-manager.kubepresence:8081",
        help="HOST:PORT of the traffic manager's gRPC service",
    )
    args = parser.parse_args(argv)
    try:
        host, port = _manager_address(args.manager_address)
    except ValueError as error:
        parser.error(f"--manager-address: {error}")
    try:
        config = load(_initial_environment())
    except ConfigError as error:
        print(f"kubepresence-agent: {error}", file=sys.stderr)
        return 3
    agent = TrafficAgent(config, host, port)
    return start_daemon("agent", "kubepresence-agent", args, agent.run)


if __name__ == "__main__":
    sys.exit(main())
