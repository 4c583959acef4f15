"""One TCP connection attempt with a timeout: prints "connected", or the error's type
and message (both as JSON).

Usage: connect_or_why.py IP PORT TIMEOUT.
"""

from __future__ import annotations

import json
import socket
import sys


def main() -> None:
    ip, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    try:
        socket.create_connection((ip, port), timeout=timeout).close()
        print(json.dumps("connected"))
    except OSError as exc:
        print(json.dumps(type(exc).__name__ + ": " + str(exc)))


if __name__ == "__main__":
    main()
