"""Write then read back a file of MIB MiB (random blocks, fsync'd), timing each way: run
inside userd's mount namespace on a mounted volume by test_mount.

Usage: throughput.py PATH MIB. Removes the file; prints {"bytes", "write_mb_s",
"read_mb_s"}.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main() -> None:
    path = sys.argv[1]
    size = int(sys.argv[2]) << 20
    block = os.urandom(1 << 20)
    started = time.monotonic()
    with open(path, "wb") as f:
        for _ in range(size >> 20):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    wrote = time.monotonic() - started
    started = time.monotonic()
    with open(path, "rb") as f:
        n = 0
        while chunk := f.read(1 << 20):
            n += len(chunk)
    read = time.monotonic() - started
    Path(path).unlink()
    print(
        json.dumps({"bytes": n, "write_mb_s": size / wrote / 1e6, "read_mb_s": size / read / 1e6})
    )


if __name__ == "__main__":
    main()
