"""The cluster-side client of test_personal_intercepts: one keep-alive connection to
HOST:80, a list of requests, each answer's JSON (with who answered: a workstation
server's name, else the app pod's name).

Usage: personal_client.py HOST PLAN_JSON. A step: {"path", "method"?, "headers"?,
"body_mib"? | "chunks"?}. Prints a JSON list of {"status", "who", "path", "chunked",
"body_ok", "body_length"}.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import sys
from collections.abc import Iterator
from typing import Any


def main() -> None:
    host, plan = sys.argv[1], json.loads(sys.argv[2])
    results: list[dict[str, Any]] = []
    conn = http.client.HTTPConnection(host, 80, timeout=60)
    for step in plan:
        headers = dict(step.get("headers", {}))
        body: bytes | Iterator[bytes] | None = None
        if "body_mib" in step:
            block = os.urandom(1 << 20)
            digest = hashlib.sha256()
            for _ in range(step["body_mib"]):
                digest.update(block)
            sized = block * step["body_mib"]
            body = sized
            headers["Content-Length"] = str(len(sized))
            expected = digest.hexdigest()
        elif "chunks" in step:
            parts = [c.encode() for c in step["chunks"]]
            expected = hashlib.sha256(b"".join(parts)).hexdigest()
            body = iter(parts)
            headers["Transfer-Encoding"] = "chunked"
        else:
            expected = hashlib.sha256(b"").hexdigest()
        conn.request(
            step.get("method", "GET"),
            step["path"],
            body=body,
            headers=headers,
            encode_chunked="chunks" in step,
        )
        response = conn.getresponse()
        answer = json.loads(response.read())
        results.append(
            {
                "status": response.status,
                "who": answer.get("who") or answer.get("pod", "?"),
                "path": answer.get("path"),
                "chunked": response.getheader("Transfer-Encoding") == "chunked",
                "body_ok": answer.get("sha256", expected) == expected,
                "body_length": answer.get("body_length"),
            }
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
