"""kubepresence-agent: the traffic agent sidecar (injected by the manager's webhook)."""

from __future__ import annotations

import sys

from kubepresence.agent.app import TrafficAgent
from kubepresence.protocol.lifecycle import daemon_parser, start_daemon


def main(argv: list[str] | None = None) -> int:
    parser = daemon_parser("agent", "kubepresence-agent", __doc__ or "")
    parser.add_argument(
        "--manager-address",
        default="kubepresence-manager.kubepresence:8081",
        help="HOST:PORT of the traffic manager's gRPC service",
    )
    args = parser.parse_args(argv)
    agent = TrafficAgent(manager_address=args.manager_address)
    return start_daemon("agent", "kubepresence-agent", args, agent.run)


if __name__ == "__main__":
    sys.exit(main())
