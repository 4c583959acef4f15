"""One HTTP GET, run in a cluster pod (`python3 -c` of this file's text) by the e2e tests.

Usage: http_get.py URL [HEADERS_JSON [TIMEOUT]]. Prints one JSON object: {"status", "body"}
for any HTTP answer (errors included), {"error"} when there was none.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request


def main() -> None:
    url = sys.argv[1]
    headers = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 20.0
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            print(json.dumps({"status": answer.status, "body": answer.read().decode()}))
    except urllib.error.HTTPError as error:
        print(json.dumps({"status": error.code, "body": error.read().decode()}))
    except Exception as error:  # noqa: BLE001 - reported to the test, which decides
        print(json.dumps({"error": repr(error)}))


if __name__ == "__main__":
    main()
