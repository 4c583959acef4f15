"""In a client pod: is there a route off the machine, does a reserved outside name
resolve, does a cluster name resolve?

connect() on a UDP socket only looks up the route: no packet is sent. 203.0.113.0/24 is
TEST-NET-3 (documentation only), and names under .example are reserved: nothing real.
Prints {"route": "found" | errno, "dns": "resolved" | errno, "cluster_dns": address or
the error}.
"""

from __future__ import annotations

import json
import socket


def main() -> None:
    result: dict[str, object] = {}
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("203.0.113.7", 9))
        result["route"] = "found"
    except OSError as exc:
        result["route"] = exc.errno
    try:
        socket.getaddrinfo("kubepresence-e2e.example", 80)
        result["dns"] = "resolved"
    except socket.gaierror as exc:
        result["dns"] = exc.errno
    try:
        result["cluster_dns"] = socket.gethostbyname("kubernetes.default")
    except OSError as exc:
        result["cluster_dns"] = str(exc)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
