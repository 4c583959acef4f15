"""In a cluster pod: POST MIB MiB (a fixed pseudo-random block, each MiB numbered) to
HOST:PORT/upload on one connection, and compare digests.

Usage: upload.py HOST PORT MIB. Prints {"sent": sha256, "received": the server's answer,
"seconds"}.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import sys
import time
from collections.abc import Iterator


def main() -> None:
    host, port, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    block = random.Random(2544).randbytes(1 << 20)
    digest = hashlib.sha256()

    def body() -> Iterator[bytes]:
        for i in range(mib):
            chunk = i.to_bytes(8, "big") + block[8:]
            digest.update(chunk)
            yield chunk

    started = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=120)
    conn.request("POST", "/upload", body=body(), headers={"Content-Length": str(mib << 20)})
    answer = json.loads(conn.getresponse().read())
    print(
        json.dumps(
            {"sent": digest.hexdigest(), "received": answer, "seconds": time.monotonic() - started}
        )
    )


if __name__ == "__main__":
    main()
