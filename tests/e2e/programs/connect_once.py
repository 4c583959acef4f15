"""One TCP connection attempt, run in the workstation namespace by the e2e tests while
they wait for a server there to accept (workstation_servers.await_listening).

Usage: connect_once.py HOST PORT. Exits 0 when the connection was accepted, 1 otherwise.
"""

from __future__ import annotations

import socket
import sys


def main() -> int:
    host, port = sys.argv[1], int(sys.argv[2])
    try:
        with socket.create_connection((host, port), timeout=2):
            return 0
    except OSError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
