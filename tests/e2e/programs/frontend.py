"""The frontend app of the preview test (a cluster pod's command, `python3 -c` of this
file's text): calls the backend at $BACKEND and passes the preview's header on
(propagating it is the app's job, like any tracing header). Listens on 0.0.0.0:8080.
"""

from __future__ import annotations

import http.server
import json
import os
import urllib.request
from typing import Any


def main() -> None:
    backend_url = os.environ["BACKEND"]

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            passed = {
                k: v for k, v in self.headers.items() if k.lower().startswith("x-kubepresence")
            }
            request = urllib.request.Request(backend_url + self.path, headers=passed)
            with urllib.request.urlopen(request, timeout=20) as answer:
                backend = json.loads(answer.read())
            body = json.dumps({"frontend": True, "backend": backend}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    http.server.ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()


if __name__ == "__main__":
    main()
