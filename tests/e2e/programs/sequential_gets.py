"""In a cluster pod: GET URL/<i> n times, each on a new connection.

Usage: sequential_gets.py URL N. Prints a JSON list, per request {"body", "seconds"} or
{"error", "seconds"}.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from typing import Any


def main() -> None:
    url, n = sys.argv[1], int(sys.argv[2])
    out: list[dict[str, Any]] = []
    for i in range(n):
        started = time.monotonic()
        try:
            with urllib.request.urlopen(f"{url}/{i}", timeout=20) as r:
                body = r.read().decode()
            out.append({"body": body, "seconds": time.monotonic() - started})
        except Exception as e:  # noqa: BLE001 - reported to the test, which decides
            out.append({"error": repr(e), "seconds": time.monotonic() - started})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
