"""An h2c server (prior knowledge) on the workstation, with the h2 library: every request
is answered `workstation h2c <path> <x-dev header>`.

Usage: h2c_server.py PORT. Listens on 127.0.0.1, one thread per connection.
"""

from __future__ import annotations

import socket
import sys
import threading

import h2.config
import h2.connection
import h2.events


def serve(sock: socket.socket) -> None:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    while data := sock.recv(65536):
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                headers = dict(event.headers or [])
                path, dev = headers[b":path"], headers.get(b"x-dev", b"-")
                body = b"workstation h2c " + bytes(path) + b" " + bytes(dev)
                assert event.stream_id is not None
                conn.send_headers(
                    event.stream_id, [(":status", "200"), ("content-length", str(len(body)))]
                )
                conn.send_data(event.stream_id, body, end_stream=True)
        sock.sendall(conn.data_to_send())
    sock.close()


def main() -> None:
    port = int(sys.argv[1])
    listener = socket.create_server(("127.0.0.1", port))
    while True:
        client, _ = listener.accept()
        threading.Thread(target=serve, args=(client,), daemon=True).start()


if __name__ == "__main__":
    main()
