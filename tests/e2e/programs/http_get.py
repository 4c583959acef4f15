"""One HTTP GET, run in a cluster pod (`python3 -c` of this file's text) by the e2e tests.

Usage: http_get.py URL [HEADERS_JSON [TIMEOUT [RETRY_REFUSED]]]. Prints one JSON object:
{"status", "body", "attempts"} for any HTTP answer (errors included), {"error",
"attempts"} when there was none. With RETRY_REFUSED > 0, a refused connection is tried
again for that many seconds (kube-proxy applies an EndpointSlice change up to a second
after it: until then a connection may go to a pod that stopped listening); nothing else
is retried.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any


def get(url: str, headers: dict[str, str], timeout: float) -> dict[str, Any]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return {"status": answer.status, "body": answer.read().decode()}
    except urllib.error.HTTPError as error:
        return {"status": error.code, "body": error.read().decode()}
    except urllib.error.URLError as error:
        refused = isinstance(error.reason, ConnectionRefusedError)
        return {"error": repr(error), "refused": refused}
    except Exception as error:  # noqa: BLE001 - reported to the test, which decides
        return {"error": repr(error), "refused": False}


def main() -> None:
    url = sys.argv[1]
    headers = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 20.0
    retry_refused = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    deadline = time.monotonic() + retry_refused
    attempts = 0
    while True:
        attempts += 1
        answer = get(url, headers, timeout)
        if not answer.pop("refused", False) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    print(json.dumps({**answer, "attempts": attempts}))


if __name__ == "__main__":
    main()
