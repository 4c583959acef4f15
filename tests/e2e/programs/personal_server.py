"""A workstation server of test_personal_intercepts that says who it is.

It reads chunked or sized bodies (answering their length and sha256), answers /chunked
with a chunked body, and turns an Upgrade request into a raw echo prefixed `NAME:`.

Usage: personal_server.py NAME PORT. Listens on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import sys
from typing import Any


def main() -> None:
    name, port = sys.argv[1], int(sys.argv[2])

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def body(self) -> tuple[int, str]:
            digest, size = hashlib.sha256(), 0
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                while True:
                    length = int(self.rfile.readline().split(b";")[0], 16)
                    if length == 0:
                        while self.rfile.readline() not in (b"\r\n", b""):
                            pass
                        break
                    left = length
                    while left:
                        data = self.rfile.read(min(left, 1 << 20))
                        digest.update(data)
                        size += len(data)
                        left -= len(data)
                    self.rfile.readline()
            else:
                left = int(self.headers.get("Content-Length") or 0)
                while left:
                    data = self.rfile.read(min(left, 1 << 20))
                    digest.update(data)
                    size += len(data)
                    left -= len(data)
            return size, digest.hexdigest()

        def handle_one(self) -> None:
            if self.headers.get("Upgrade"):
                self.send_response(101)
                self.send_header("Upgrade", self.headers["Upgrade"])
                self.send_header("Connection", "Upgrade")
                self.end_headers()
                self.wfile.flush()
                while data := self.connection.recv(65536):
                    self.connection.sendall(name.encode() + b":" + data)
                self.close_connection = True
                return
            size, digest = self.body()
            answer = json.dumps(
                {
                    "who": name,
                    "method": self.command,
                    "path": self.path,
                    "body_length": size,
                    "sha256": digest,
                }
            ).encode()
            self.send_response(200)
            if self.path.startswith("/chunked"):
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for part in (answer[:10], answer[10:]):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        do_GET = do_POST = do_PUT = handle_one  # noqa: N815 - the names http.server calls

        def log_message(self, format: str, *args: Any) -> None:
            pass

    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
