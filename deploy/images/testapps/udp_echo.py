"""UDP echo server for the end-to-end tests: answers each datagram with the same bytes."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys

log = logging.getLogger("udp_echo")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=9001)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    # As PID 1 in its container the server would ignore SIGTERM and wait out the grace period.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", args.port))  # noqa: S104 - pod-local
    log.info("udp echo listening on %d", args.port)
    while True:
        data, peer = sock.recvfrom(65535)
        sock.sendto(data, peer)


if __name__ == "__main__":
    main()
