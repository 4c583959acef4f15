"""HTTP echo server for the end-to-end tests.

Answers every request with JSON: the pod's name and namespace (from the downward API env),
the request's method, path, headers and body length, and the peer's address, so a test
can tell which pod answered and what arrived there (through a Service, a port-forward
or an intercept).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("http_echo")
ANY_ADDRESS = "0.0.0.0"  # noqa: S104 - the pod's own interfaces


class EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _echo(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        payload = {
            "pod": os.environ.get("POD_NAME", socket.gethostname()),
            "namespace": os.environ.get("POD_NAMESPACE", ""),
            "method": self.command,
            "path": self.path,
            "headers": dict(self.headers.items()),
            "body_length": len(body),
            "peer": self.client_address[0],  # who connected: proxy-via tests tell pods apart
        }
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    # http.server dispatches on do_<METHOD>; every method gets the same echo.
    def do_GET(self) -> None:
        self._echo()

    def do_POST(self) -> None:
        self._echo()

    def do_PUT(self) -> None:
        self._echo()

    def do_DELETE(self) -> None:
        self._echo()

    def do_PATCH(self) -> None:
        self._echo()

    def do_HEAD(self) -> None:
        self._echo()

    def do_OPTIONS(self) -> None:
        self._echo()

    def log_message(self, format: str, *args: object) -> None:
        log.info("%s %s", self.address_string(), format % args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default=ANY_ADDRESS, help="address to bind: e.g. the pod's IP")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    # As PID 1 in its container the server would ignore SIGTERM and wait out the grace period.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = ThreadingHTTPServer((args.host, args.port), EchoHandler)
    log.info("http echo listening on %s:%d", args.host, args.port)
    server.serve_forever()


if __name__ == "__main__":
    main()
