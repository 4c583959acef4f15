"""In a client pod: jobs run one after another, each an HTTP POST or a byte stream.

Usage: traffic.py JOBS_JSON. A job is {"kind": "http", "host", "port", "path"}: a POST of
1000 bytes with `X-Test: kept`, answered {"status", "json"}; or {"kind": "stream", "host",
"port", "size", "seed"}: SIZE seeded random bytes sent (then a half-close) while the echo
is read, answered {"sent", "got" (sha256 both), "bytes", "seconds"}. Prints the list.
"""

from __future__ import annotations

import hashlib
import json
import random
import socket
import sys
import threading
import time
from typing import Any


def http(host: str, port: int, path: str) -> dict[str, Any]:
    body = b"x" * 1000
    s = socket.create_connection((host, port), timeout=30)
    s.sendall(
        b"POST " + path.encode() + b" HTTP/1.1\r\nHost: echo\r\nX-Test: kept\r\n"
        b"Content-Length: 1000\r\nConnection: close\r\n\r\n" + body
    )
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    return {"status": head.split(b"\r\n")[0].decode(), "json": json.loads(payload)}


def stream(host: str, port: int, size: int, seed: int) -> dict[str, Any]:
    s = socket.create_connection((host, port), timeout=60)
    sent, got, count = hashlib.sha256(), hashlib.sha256(), 0
    rnd = random.Random(seed)

    def send() -> None:
        left = size
        while left:
            chunk = rnd.randbytes(min(1 << 20, left))
            sent.update(chunk)
            s.sendall(chunk)
            left -= len(chunk)
        s.shutdown(socket.SHUT_WR)

    start = time.monotonic()
    sender = threading.Thread(target=send)
    sender.start()
    while chunk := s.recv(1 << 20):
        got.update(chunk)
        count += len(chunk)
    sender.join()
    return {
        "sent": sent.hexdigest(),
        "got": got.hexdigest(),
        "bytes": count,
        "seconds": time.monotonic() - start,
    }


def main() -> None:
    jobs = json.loads(sys.argv[1])
    out = []
    for job in jobs:
        if job["kind"] == "http":
            out.append(http(job["host"], job["port"], job["path"]))
        else:
            out.append(stream(job["host"], job["port"], job["size"], job["seed"]))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
