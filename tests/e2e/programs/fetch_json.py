"""In a cluster pod: GET URL and print {"status", "body"} with the body parsed as JSON
(an HTTP error fails the program, which the tests check).

Usage: fetch_json.py URL.
"""

from __future__ import annotations

import json
import sys
import urllib.request


def main() -> None:
    with urllib.request.urlopen(sys.argv[1], timeout=30) as answer:
        print(json.dumps({"status": answer.status, "body": json.loads(answer.read())}))


if __name__ == "__main__":
    main()
