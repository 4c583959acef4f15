"""The benchmark's HTTP server: stdlib only, run in a pod and on the workstation.

`python3 benchserver.py PORT NAME [BIND]` serves, on every keep-alive connection:
- `GET /blob/N`: N MiB of deterministic bytes (MiB i = a seeded random block with i in its
  first 8 bytes), so a lost or misplaced MiB changes the checksum;
- `POST /upload` (Content-Length): reads the body, answers `{"bytes", "sha256"}`;
- `GET /small`: 1 KiB; `GET /whoami`: NAME (which server answered: app or workstation).
One thread per connection; prints `ready` once listening.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import socket
import sys
import threading
from typing import cast

BLOCK = random.Random(2544).randbytes(1 << 20)  # noqa: S311 (test data, not secrets)
TAIL = memoryview(BLOCK)[8:]
SMALL = b"k" * 1024


def head(length: int, close: bool, status: str = "200 OK") -> bytes:
    connection = "close" if close else "keep-alive"
    return (
        f"HTTP/1.1 {status}\r\nContent-Length: {length}\r\nConnection: {connection}\r\n\r\n"
    ).encode()


def serve(conn: socket.socket, name: str) -> None:
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = cast("io.BufferedReader", conn.makefile("rb", buffering=1 << 16))
        buffer = memoryview(bytearray(1 << 20))
        while True:
            line = reader.readline(8192)
            if not line:
                return
            _, target, _ = line.decode("latin-1").split(" ", 2)
            headers: dict[str, str] = {}
            while (field := reader.readline(8192)) not in (b"\r\n", b"\n", b""):
                key, _, value = field.decode("latin-1").partition(":")
                headers[key.strip().lower()] = value.strip()
            close = headers.get("connection", "").lower() == "close"
            if target.startswith("/blob/"):
                mib = int(target[len("/blob/") :])
                conn.sendall(head(mib << 20, close))
                for i in range(mib):
                    conn.sendall(i.to_bytes(8, "big"))
                    conn.sendall(TAIL)
            elif target == "/upload":
                left = int(headers.get("content-length", "0"))
                total, digest = left, hashlib.sha256()
                while left:
                    n = reader.readinto(buffer[: min(left, len(buffer))])
                    if not n:
                        return
                    digest.update(buffer[:n])
                    left -= n
                body = json.dumps({"bytes": total, "sha256": digest.hexdigest()}).encode()
                conn.sendall(head(len(body), close) + body)
            elif target == "/small":
                conn.sendall(head(len(SMALL), close) + SMALL)
            elif target == "/whoami":
                conn.sendall(head(len(name), close) + name.encode())
            else:
                conn.sendall(head(0, close, "404 Not Found"))
            if close:
                return


def main() -> None:
    port, name = int(sys.argv[1]), sys.argv[2]
    bind = sys.argv[3] if len(sys.argv) > 3 else "0.0.0.0"  # noqa: S104 (a pod's own address)
    server = socket.create_server((bind, port), backlog=4096)
    print("ready", flush=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn, name), daemon=True).start()


if __name__ == "__main__":
    main()
