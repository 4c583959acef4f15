"""On the workstation: one datagram of each size to NAME:PORT (an echo), each answer
compared byte for byte (a seeded random payload per size).

Usage: udp_sizes_client.py NAME PORT SIZE,SIZE,... Prints {"address", "results": {size:
{"ok", "length", "ms"} or {"ok": false, "error"}}}.
"""

from __future__ import annotations

import json
import random
import socket
import sys
import time
from typing import Any


def main() -> None:
    name, port = sys.argv[1], int(sys.argv[2])
    sizes = [int(s) for s in sys.argv[3].split(",")]
    address = socket.getaddrinfo(name, port, socket.AF_INET, socket.SOCK_DGRAM)[0][4]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.settimeout(10)
    results: dict[int, dict[str, Any]] = {}
    for size in sizes:
        payload = random.Random(size).randbytes(size)
        started = time.monotonic()
        s.sendto(payload, address)
        try:
            answer = s.recv(65535)
        except TimeoutError:
            results[size] = {"ok": False, "error": "no answer in 10 s"}
            continue
        results[size] = {
            "ok": answer == payload,
            "length": len(answer),
            "ms": round((time.monotonic() - started) * 1000, 1),
        }
    print(json.dumps({"address": address[0], "results": results}))


if __name__ == "__main__":
    main()
