"""In a cluster pod: GET URL until an answer comes (failed connections counted, 20 s at
most).

A workload whose only pod was replaced (bare ReplicaSet, one-pod StatefulSet) has no
endpoint for a moment: the Service lists the new pod before kube-proxy routes to it, and
until then a caller is refused (no endpoint) or finds no route (the old pod's address).

Usage: first_answer.py URL. Prints {"body", "refused", "seconds"}; the body is the error's
repr when no answer came.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request


def main() -> None:
    started, refused = time.monotonic(), 0
    while True:
        try:
            with urllib.request.urlopen(sys.argv[1], timeout=20) as r:
                body = r.read().decode()
            break
        except OSError as e:
            unrouted = "refused" in repr(e) or "No route to host" in repr(e)
            if not unrouted or time.monotonic() - started > 20:
                body = repr(e)
                break
            refused += 1
            time.sleep(0.02)  # the next try: kube-proxy catches up within seconds
    print(json.dumps({"body": body, "refused": refused, "seconds": time.monotonic() - started}))


if __name__ == "__main__":
    main()
