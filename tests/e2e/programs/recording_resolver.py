"""The workstation's own resolver for test_vif: on 127.0.0.1:53 (UDP), prints `ready`
once bound, then every name it is asked (one per line), answering NXDOMAIN; ends after
60 s without a query.
"""

from __future__ import annotations

import socket

from dnslib import RCODE, DNSRecord


def main() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 53))
    print("ready", flush=True)
    server.settimeout(60)
    while True:
        try:
            data, peer = server.recvfrom(4096)
        except TimeoutError:
            break
        query = DNSRecord.parse(data)
        print(str(query.q.qname), flush=True)
        reply = query.reply()
        reply.header.rcode = RCODE.NXDOMAIN
        server.sendto(reply.pack(), peer)


if __name__ == "__main__":
    main()
