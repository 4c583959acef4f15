"""In a cluster pod: N GETs of URL/c<i> at once, each expecting `workstation:/c<i>`.

Usage: concurrent_gets.py URL N. Prints {"ok", "errors" (the first 5), "error_count",
"seconds"}.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def main() -> None:
    url, n = sys.argv[1], int(sys.argv[2])

    def one(i: int) -> bool | str:
        try:
            with urllib.request.urlopen(f"{url}/c{i}", timeout=60) as r:
                return bool(r.read().decode() == f"workstation:/c{i}")
        except Exception as e:  # noqa: BLE001 - reported to the test, which decides
            return repr(e)

    started = time.monotonic()
    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(one, range(n)))
    errors = [r for r in results if r is not True]
    print(
        json.dumps(
            {
                "ok": n - len(errors),
                "errors": errors[:5],
                "error_count": len(errors),
                "seconds": time.monotonic() - started,
            }
        )
    )


if __name__ == "__main__":
    main()
