"""The benchmark's client: stdlib only, run on the node, in ws1 and in a pod.

`python3 benchclient.py MODE HOST PORT ARGS…` prints one JSON document:
- `download MIB DEADLINE`: GET /blob/MIB on one connection → bytes, sha256, seconds;
- `upload MIB DEADLINE`: POST MIB MiB of the same data → bytes and sha256 the server saw;
- `latency COUNT keepalive|new DEADLINE`: GET /small COUNT times over one keep-alive
  connection or a new connection each → per-request milliseconds and errors;
- `concurrent COUNT DEADLINE`: COUNT threads, one connection and one request each, started
  together → ok, errors by kind, seconds;
- `poll WANT DEADLINE`: GET /whoami on a new connection every 20 ms until the answer is
  WANT → the wall-clock time (time.time()) of that answer.
Every loop is bounded by its count and its DEADLINE (seconds).
"""

from __future__ import annotations

import hashlib
import json
import random
import socket
import sys
import threading
import time
from typing import Any

BLOCK = random.Random(2544).randbytes(1 << 20)  # noqa: S311 (test data, not secrets)
TAIL = memoryview(BLOCK)[8:]
IO_TIMEOUT = 30.0


def connect(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=IO_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Response:
    """Reads HTTP/1.1 responses with a Content-Length from one connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pending = b""

    def head(self) -> tuple[int, int]:
        while b"\r\n\r\n" not in self.pending:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed before the response head")
            self.pending += data
        head, _, self.pending = self.pending.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = next(
            int(line.split(b":", 1)[1])
            for line in lines
            if line.lower().startswith(b"content-length")
        )
        return status, length

    def body(self, length: int) -> bytes:
        while len(self.pending) < length:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed in the middle of the body")
            self.pending += data
        body, self.pending = self.pending[:length], self.pending[length:]
        return body


def download(host: str, port: int, mib: int, deadline: float) -> dict[str, Any]:
    start = time.monotonic()
    with connect(host, port) as sock:
        sock.sendall(b"GET /blob/%d HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n" % mib)
        response = Response(sock)
        status, length = response.head()
        digest = hashlib.sha256(response.pending)
        received = len(response.pending)
        buffer = memoryview(bytearray(1 << 20))
        while received < length and time.monotonic() - start < deadline:
            n = sock.recv_into(buffer)
            if not n:
                break
            digest.update(buffer[:n])
            received += n
    seconds = time.monotonic() - start
    return {"status": status, "bytes": received, "sha256": digest.hexdigest(), "seconds": seconds}


def upload(host: str, port: int, mib: int, deadline: float) -> dict[str, Any]:
    start = time.monotonic()
    with connect(host, port) as sock:
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: bench\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % (mib << 20)
        )
        sent = 0
        for i in range(mib):
            if time.monotonic() - start > deadline:
                break
            sock.sendall(i.to_bytes(8, "big"))
            sock.sendall(TAIL)
            sent += 1 << 20
        if sent < mib << 20:
            return {"error": "deadline", "bytes": sent, "seconds": time.monotonic() - start}
        response = Response(sock)
        status, length = response.head()
        answer = json.loads(response.body(length))
    seconds = time.monotonic() - start
    return {
        "status": status,
        "bytes": answer["bytes"],
        "sha256": answer["sha256"],
        "seconds": seconds,
    }


def latency(host: str, port: int, count: int, mode: str, deadline: float) -> dict[str, Any]:
    samples: list[float] = []
    errors: dict[str, int] = {}
    start = time.monotonic()
    keepalive = mode == "keepalive"
    sock: socket.socket | None = None
    response: Response | None = None
    for _ in range(count):
        if time.monotonic() - start > deadline:
            break
        began = time.perf_counter()
        try:
            if sock is None or response is None:
                sock = connect(host, port)
                response = Response(sock)
            connection = b"keep-alive" if keepalive else b"close"
            sock.sendall(
                b"GET /small HTTP/1.1\r\nHost: bench\r\nConnection: %s\r\n\r\n" % connection
            )
            status, length = response.head()
            body = response.body(length)
            if status != 200 or len(body) != 1024:
                raise ValueError(f"status {status}, {len(body)} bytes")
            samples.append((time.perf_counter() - began) * 1000)
        except (OSError, ValueError) as error:
            errors[type(error).__name__] = errors.get(type(error).__name__, 0) + 1
            keepalive_broken = True
        else:
            keepalive_broken = not keepalive
        if keepalive_broken and sock is not None:
            sock.close()
            sock, response = None, None
    if sock is not None:
        sock.close()
    return {"samples_ms": samples, "errors": errors, "seconds": time.monotonic() - start}


def concurrent(host: str, port: int, count: int, deadline: float) -> dict[str, Any]:
    results: list[str | None] = [None] * count
    barrier = threading.Barrier(count, timeout=deadline)

    def one(i: int) -> None:
        try:
            barrier.wait()
            with connect(host, port) as sock:
                sock.sendall(b"GET /small HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                response = Response(sock)
                status, length = response.head()
                body = response.body(length)
            results[i] = "ok" if status == 200 and len(body) == 1024 else f"status {status}"
        except (OSError, ValueError, threading.BrokenBarrierError) as error:
            results[i] = type(error).__name__

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(count)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - (time.monotonic() - start)))
    seconds = time.monotonic() - start
    errors: dict[str, int] = {}
    for result in results:
        if result != "ok":
            kind = result or "unfinished at the deadline"
            errors[kind] = errors.get(kind, 0) + 1
    return {"ok": results.count("ok"), "errors": errors, "seconds": seconds}


def poll(host: str, port: int, want: str, deadline: float) -> dict[str, Any]:
    print(json.dumps({"polling": time.time()}), flush=True)
    start, attempts, failures = time.monotonic(), 0, 0
    while time.monotonic() - start < deadline:
        attempts += 1
        try:
            with connect(host, port) as sock:
                sock.settimeout(2)
                sock.sendall(b"GET /whoami HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                response = Response(sock)
                _, length = response.head()
                if response.body(length).decode() == want:
                    return {"first": time.time(), "attempts": attempts, "failures": failures}
        except (OSError, ValueError):
            failures += 1
        time.sleep(0.02)
    return {"error": "deadline", "attempts": attempts, "failures": failures}


def main() -> None:
    mode, host, port, *rest = sys.argv[1:]
    if mode in ("download", "upload"):
        run = download if mode == "download" else upload
        result = run(host, int(port), int(rest[0]), float(rest[1]))
    elif mode == "latency":
        result = latency(host, int(port), int(rest[0]), rest[1], float(rest[2]))
    elif mode == "concurrent":
        result = concurrent(host, int(port), int(rest[0]), float(rest[1]))
    elif mode == "poll":
        result = poll(host, int(port), rest[0], float(rest[1]))
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
