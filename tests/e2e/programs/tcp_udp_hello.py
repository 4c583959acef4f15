"""In a client pod: one hello to the TCP echo and one to the UDP echo (sent up to five
times: the UDP server may still be binding, and datagrams can be lost).

Usage: tcp_udp_hello.py TCP_HOST TCP_PORT UDP_HOST UDP_PORT. Prints {"tcp", "udp"}.
"""

from __future__ import annotations

import json
import socket
import sys


def main() -> None:
    tcp_address = (sys.argv[1], int(sys.argv[2]))
    udp_address = (sys.argv[3], int(sys.argv[4]))
    with socket.create_connection(tcp_address, timeout=10) as s:
        s.sendall(b"hello over tcp")
        tcp = s.recv(100).decode()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(2)
    udp = None
    for _ in range(5):  # the UDP server may still be binding; datagrams can be lost
        u.sendto(b"hello over udp", udp_address)
        try:
            udp = u.recv(100).decode()
            break
        except TimeoutError:  # socket.timeout
            continue
    print(json.dumps({"tcp": tcp, "udp": udp}))


if __name__ == "__main__":
    main()
