"""An h2c client with the standard library only (the pod has no h2): the preface, empty
SETTINGS, one HEADERS frame in literal HPACK, then DATA of stream 1 until its end.

Usage: h2c_client.py HOST DEV. GET /h2 on HOST:80 with `x-dev: DEV`; prints {"body",
"done"}.
"""

from __future__ import annotations

import json
import socket
import struct
import sys


def literal(name: bytes, value: bytes) -> bytes:
    return bytes([0, len(name)]) + name + bytes([len(value)]) + value


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    head = struct.pack("!I", len(payload))[1:] + bytes([kind, flags])
    return head + struct.pack("!I", stream) + payload


def main() -> None:
    host, dev = sys.argv[1], sys.argv[2]
    block = b"".join(
        literal(n, v)
        for n, v in [
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":path", b"/h2"),
            (b":authority", host.encode()),
            (b"x-dev", dev.encode()),
        ]
    )
    sock = socket.create_connection((host, 80), timeout=20)
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    sock.sendall(preface + frame(4, 0, 0) + frame(1, 5, 1, block))
    buffer, body, done = b"", b"", False
    while not done:
        data = sock.recv(65536)
        if not data:
            break
        buffer += data
        while len(buffer) >= 9:
            length = int.from_bytes(buffer[:3], "big")
            if len(buffer) < 9 + length:
                break
            kind, flags = buffer[3], buffer[4]
            stream = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
            payload, buffer = buffer[9 : 9 + length], buffer[9 + length :]
            if kind == 4 and not flags & 1:
                sock.sendall(frame(4, 1, 0))  # acknowledge the server's SETTINGS
            if stream == 1 and kind == 0:
                body += payload
            if stream == 1 and kind in (0, 1) and flags & 1:
                done = True
    print(json.dumps({"body": body.decode(errors="replace"), "done": done}))


if __name__ == "__main__":
    main()
