"""TCP echo server for the end-to-end tests: sends back every byte it receives."""

from __future__ import annotations

import argparse
import logging
import signal
import socketserver
import sys

log = logging.getLogger("tcp_echo")


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            self.request.sendall(data)


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    # As PID 1 in its container the server would ignore SIGTERM and wait out the grace period.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with Server(("0.0.0.0", args.port), EchoHandler) as server:  # noqa: S104 - pod-local
        log.info("tcp echo listening on %d", args.port)
        server.serve_forever()


if __name__ == "__main__":
    main()
