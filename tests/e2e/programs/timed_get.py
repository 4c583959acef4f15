"""One HTTP GET from a cluster pod, timed (`python3 -c` of this file's text).

Usage: timed_get.py URL. Prints one JSON object: {"status", "body", "seconds"} for an
answer, {"error", "seconds"} without one.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request


def main() -> None:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=20) as r:
            print(
                json.dumps(
                    {
                        "status": r.status,
                        "body": r.read().decode(),
                        "seconds": time.monotonic() - started,
                    }
                )
            )
    except Exception as e:  # noqa: BLE001 - reported to the test, which decides
        print(json.dumps({"error": repr(e), "seconds": time.monotonic() - started}))


if __name__ == "__main__":
    main()
