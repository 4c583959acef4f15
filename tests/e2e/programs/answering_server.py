"""A server on the workstation for the e2e tests: answers every GET with 200 and a body.

Usage: answering_server.py PORT BODY [HOST]. BODY may contain `{path}`, replaced by the
request's path; HOST is the address to listen on (default 127.0.0.1). Prints `listening`
once its socket is bound and listening: from then on a connection is accepted, which is
what the tests wait for.
"""

from __future__ import annotations

import http.server
import sys


def main() -> None:
    port, template = int(sys.argv[1]), sys.argv[2]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = template.replace("{path}", self.path).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    host = sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1"
    server = http.server.ThreadingHTTPServer((host, port), Handler)
    print("listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
