"""On the workstation: short cluster names through getaddrinfo (the search list), then
straight to the cluster DNS address 10.96.0.10 without it (as `dig` does).

Usage: short_names.py NAMESPACE SERVICE. Prints {"getaddrinfo": {name: "ok" | errno},
"direct": {name: {"rcode", "aa", "answers"}}}.
"""

from __future__ import annotations

import json
import socket
import sys
from typing import Any

from dnslib import QTYPE, DNSRecord


def main() -> None:
    namespace, service = sys.argv[1], sys.argv[2]
    out: dict[str, dict[str, Any]] = {"getaddrinfo": {}, "direct": {}}
    for name in (f"nosuchsvc.{namespace}", f"nosuchsvc.{namespace}.svc", f"{service}.{namespace}"):
        try:
            socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)
            out["getaddrinfo"][name] = "ok"
        except socket.gaierror as error:
            out["getaddrinfo"][name] = error.errno
    # Straight to the cluster DNS address, without the search list (as `dig` does).
    for name in (
        f"{service}.{namespace}.",
        f"nosuchsvc.{namespace}.",
        f"{service}.{namespace}.svc.",
    ):
        query = DNSRecord.question(name, "A")
        reply = DNSRecord.parse(query.send("10.96.0.10", 53, timeout=10))
        out["direct"][name] = {
            "rcode": reply.header.rcode,
            "aa": reply.header.aa,
            "answers": [[str(rr.rname), str(rr.rdata)] for rr in reply.rr if rr.rtype == QTYPE.A],
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
