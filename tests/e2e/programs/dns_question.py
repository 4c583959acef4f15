"""On the workstation: one DNS question, exactly as given (no search list), to the first
nameserver of /etc/resolv.conf (the resolver ws1 uses now), 6 s at most.

Usage: dns_question.py NAME. Prints {"rcode", "aa", "answers"}; rcode null without an
answer.
"""

from __future__ import annotations

import json
import socket
import sys

import dnslib


def main() -> None:
    with open("/etc/resolv.conf") as resolv:
        server = next(line.split()[1] for line in resolv if line.startswith("nameserver"))
    question = dnslib.DNSRecord.question(sys.argv[1], "A")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(6)
    sock.sendto(question.pack(), (server, 53))
    try:
        reply = dnslib.DNSRecord.parse(sock.recv(4096))
    except TimeoutError:  # socket.timeout
        print(json.dumps({"rcode": None, "aa": 0, "answers": []}))
    else:
        print(
            json.dumps(
                {
                    "rcode": reply.header.rcode,
                    "aa": reply.header.aa,
                    "answers": [str(rr.rdata) for rr in reply.rr],
                }
            )
        )


if __name__ == "__main__":
    main()
