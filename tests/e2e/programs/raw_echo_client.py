"""In a cluster pod: a few bytes that are not HTTP to the tcp-echo Service (HOST:9000),
a half-close, and what came back.

Usage: raw_echo_client.py HOST. Prints {"echoed"}.
"""

from __future__ import annotations

import json
import socket
import sys


def main() -> None:
    sock = socket.create_connection((sys.argv[1], 9000), timeout=20)
    sock.sendall(b"\x00\x01 not http\n")
    sock.shutdown(socket.SHUT_WR)
    got = b""
    while data := sock.recv(100):
        got += data
    print(json.dumps({"echoed": got.decode()}))


if __name__ == "__main__":
    main()
