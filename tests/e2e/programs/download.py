"""One HTTP GET of HOST:PORT on a raw socket, the whole body hashed as it arrives.

Usage: download.py HOST PORT. Prints {"bytes", "sha256", "seconds"}.
"""

from __future__ import annotations

import hashlib
import json
import socket
import sys
import time


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    start = time.monotonic()
    s = socket.create_connection((host, port), timeout=60)
    s.settimeout(60)
    s.sendall(b"GET / HTTP/1.1\r\nHost: blob\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    head, _, body = head.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    header = next(h for h in lines if h.lower().startswith(b"content-length"))
    length = int(header.split(b":")[1])
    digest = hashlib.sha256(body)
    received = len(body)
    buffer = bytearray(1 << 20)
    while received < length:
        n = s.recv_into(buffer)
        if not n:
            break
        digest.update(memoryview(buffer)[:n])
        received += n
    s.close()
    seconds = time.monotonic() - start
    print(json.dumps({"bytes": received, "sha256": digest.hexdigest(), "seconds": seconds}))


if __name__ == "__main__":
    main()
