"""A workstation HTTP/1.1 server for test_intercept_workloads: GET answers
`workstation:<path>`; POST reads the sized body and answers {"sha256", "size"} of it.

Usage: digest_server.py PORT. Listens on 127.0.0.1, up to 256 connections queued.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import sys
from typing import Any


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(("workstation:" + self.path).encode())

    def do_POST(self) -> None:
        left = int(self.headers["Content-Length"])
        digest, size = hashlib.sha256(), 0
        while left:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
            left -= len(chunk)
        self._answer(json.dumps({"sha256": digest.hexdigest(), "size": size}).encode())

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    port = int(sys.argv[1])
    http.server.ThreadingHTTPServer.daemon_threads = True
    http.server.ThreadingHTTPServer.request_queue_size = 256
    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
