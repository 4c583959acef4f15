"""A cluster pod's server (its command, `python3 -c` of this file's text) that answers
every HTTP GET with MIB MiB of deterministic bytes: MiB i is a seeded random block with i
in its first 8 bytes, so a lost or misplaced MiB shows (test_vif's blob_digest).

Usage: blob_server.py MIB PORT. Listens on 0.0.0.0, one thread per connection.
"""

from __future__ import annotations

import random
import socket
import sys
import threading


def main() -> None:
    mib = int(sys.argv[1])
    block = random.Random(2544).randbytes(1 << 20)

    def serve(conn: socket.socket) -> None:
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                data = conn.recv(4096)
                if not data:
                    return
                request += data
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (mib << 20)
            )
            for i in range(mib):
                conn.sendall(i.to_bytes(8, "big") + block[8:])

    server = socket.create_server(("0.0.0.0", int(sys.argv[2])))
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
