"""On the workstation: a datagram to ADDRESS:53 that is not a DNS query, then its
FORMERR answer when rootd sends one (5 s at most). Prints `{}`.

Usage: bad_dns_query.py ADDRESS.
"""

from __future__ import annotations

import contextlib
import socket
import sys


def main() -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.sendto(b"\x12\x34not-a-dns-query", (sys.argv[1], 53))
    with contextlib.suppress(TimeoutError):
        s.recv(512)  # FORMERR, when rootd answers it
    print("{}")


if __name__ == "__main__":
    main()
