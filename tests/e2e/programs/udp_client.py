"""On the workstation: five datagrams to NAME:PORT (resolved to IPv4), one answer each.

Usage: udp_client.py NAME PORT. Prints {"address", "answers"}.
"""

from __future__ import annotations

import json
import socket
import sys


def main() -> None:
    name, port = sys.argv[1], int(sys.argv[2])
    address = socket.getaddrinfo(name, port, socket.AF_INET, socket.SOCK_DGRAM)[0][4]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    answers = []
    for i in range(5):
        s.sendto(b"datagram-%d" % i, address)
        answers.append(s.recv(2048).decode())
    print(json.dumps({"address": address[0], "answers": answers}))


if __name__ == "__main__":
    main()
