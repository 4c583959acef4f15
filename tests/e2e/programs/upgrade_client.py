"""In a cluster pod: an Upgrade (websocket) request to HOST:80 with one extra header,
then `ping` over the upgraded connection and what came back.

Usage: upgrade_client.py HOST "NAME: VALUE". Prints {"status", "echoed"}.
"""

from __future__ import annotations

import json
import socket
import sys


def main() -> None:
    host, header = sys.argv[1], sys.argv[2]
    sock = socket.create_connection((host, 80), timeout=30)
    sock.sendall(
        (
            "GET /ws HTTP/1.1\r\nHost: echo\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\n" + header + "\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    sock.sendall(b"ping")
    echoed = b""
    while len(echoed) < len(b"alice:ping"):
        data = sock.recv(100)
        if not data:
            break
        echoed += data
    print(json.dumps({"status": head.split(b" ")[1].decode(), "echoed": echoed.decode()}))


if __name__ == "__main__":
    main()
