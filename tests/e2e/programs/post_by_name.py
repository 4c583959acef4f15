"""In a client pod: resolve HOST through the cluster DNS, then POST 123 bytes to
http://HOST/some/path?q=1 (the echo app answers what it saw as JSON).

Usage: post_by_name.py HOST. Prints {"address", "body"}.
"""

from __future__ import annotations

import json
import socket
import sys
import urllib.request


def main() -> None:
    host = sys.argv[1]
    address = socket.gethostbyname(host)
    url = "http://" + host + "/some/path?q=1"
    req = urllib.request.Request(url, data=b"x" * 123, method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = json.load(resp)
    print(json.dumps({"address": address, "body": body}))


if __name__ == "__main__":
    main()
