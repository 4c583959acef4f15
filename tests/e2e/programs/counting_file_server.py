"""A plain file server on the workstation that prints `connection` for every connection
it accepts (test_intercept: only the client's request may reach the workstation, no probe).

Usage: counting_file_server.py PORT DIRECTORY. Files under DIRECTORY, 404 for the rest.
Prints `listening` first, once it accepts connections (a probe would count as one).
"""

from __future__ import annotations

import functools
import http.server
import sys
from typing import Any


class Server(http.server.ThreadingHTTPServer):
    def verify_request(self, request: Any, client_address: Any) -> bool:
        print("connection", flush=True)
        return True


class Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    port, directory = int(sys.argv[1]), sys.argv[2]
    handler = functools.partial(Files, directory=directory)
    server = Server(("127.0.0.1", port), handler)
    print("listening", flush=True)  # bound and listening: connections are accepted now
    server.serve_forever()


if __name__ == "__main__":
    main()
