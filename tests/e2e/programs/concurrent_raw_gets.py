"""On the workstation: COUNT connections to HOST:PORT opened at once (a barrier), each one
GET /c/<i>; true for each answer that is a 200 naming its path, else what went wrong.

Usage: concurrent_raw_gets.py HOST PORT COUNT. Prints the JSON list of results.
"""

from __future__ import annotations

import json
import socket
import sys
import threading


def main() -> None:
    host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    results: list[bool | str | None] = [None] * count
    start = threading.Barrier(count)

    def fetch(i: int) -> None:
        try:
            start.wait(30)
            with socket.create_connection((host, port), timeout=60) as s:
                s.settimeout(60)
                s.sendall(b"GET /c/%d HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n" % i)
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            results[i] = f"/c/{i}" in data.decode() and data.startswith(b"HTTP/1.1 200")
        except Exception as error:  # noqa: BLE001 - reported to the test, which decides
            results[i] = repr(error)

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
