"""The userspace TCP engine alone: one flow between the kernel and an in-process sink/source.

In a scratch network namespace, a TUN device routes 198.19.0.0/16 to the rootd terminator
(`NetworkEndpoint` + `Terminator`), whose relay is an in-process sink (upload: discards
what it reads, then reports the count) or source (download: writes a 64 KiB block until
the size is reached, then closes). The client is a Python socket program run with
`ip netns exec`. The baseline, measured in the same run by the same client program, is
the kernel's loopback TCP in the same namespace to a Python sink/source thread: the figure
our engine is compared against is "what the kernel does for a Python app".

Needs root. Run: `python -m benchmarks.tcp_engine [--size-mib N] [--rounds R]`.
Only 198.18.0.0/15 and loopback, inside a namespace this program creates and deletes.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Coroutine
from typing import Any

import uvloop

from kubepresence.protocol.allocator import tune_allocator
from kubepresence.rootd.core.endpoint import EndpointConfig
from kubepresence.rootd.core.flows import FlowId
from kubepresence.rootd.core.packets import OutputMode
from kubepresence.rootd.net.streams import TcpStream
from kubepresence.rootd.net.terminating import Terminator
from kubepresence.rootd.net.tun import TunDevice, configure_link

TUN_NAME = "kpbench0"
TUN_ADDRESS = "198.18.0.1/32"
ROUTED = "198.19.0.0/16"
SERVICE = "198.19.0.5"
SINK_PORT, SOURCE_PORT = 9, 19
BLOCK = b"\xa5" * (1 << 16)
CLIENT_TIMEOUT = 600.0

CLIENT = r"""
import json, socket, sys, threading, time
host, size, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
SINK, SOURCE = 9, 19
BLOCK = b"\x5a" * (1 << 20)

def upload(address):
    start = time.perf_counter()
    s = socket.create_connection(address, timeout=120)
    sent = 0
    view = memoryview(BLOCK)
    while sent < size:
        n = min(len(BLOCK), size - sent)
        s.sendall(view[:n])
        sent += n
    s.shutdown(socket.SHUT_WR)
    reply = b""
    while chunk := s.recv(100):
        reply += chunk
    s.close()
    assert int(reply) == size, (reply, size)
    return size / (time.perf_counter() - start) / 1e6

def download(address):
    start = time.perf_counter()
    s = socket.create_connection(address, timeout=120)
    buffer = bytearray(1 << 20)
    total = 0
    while n := s.recv_into(buffer):
        total += n
    s.close()
    assert total == size, (total, size)
    return size / (time.perf_counter() - start) / 1e6

def loopback_server():
    # The baseline's far end: the same sink/source behaviour, on the kernel's loopback.
    listener = socket.create_server(("127.0.0.1", 0))
    def serve():
        while True:
            connection, _ = listener.accept()
            kind = connection.recv(1)
            if kind == b"u":
                total = 0
                buffer = bytearray(1 << 20)
                while n := connection.recv_into(buffer):
                    total += n
                connection.sendall(str(total - 0).encode())
            else:
                sent = 0
                while sent < size:
                    n = min(len(BLOCK), size - sent)
                    connection.sendall(memoryview(BLOCK)[:n])
                    sent += n
            connection.close()
    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()

def loopback_upload(address):
    start = time.perf_counter()
    s = socket.create_connection(address, timeout=120)
    s.sendall(b"u")
    sent = 0
    view = memoryview(BLOCK)
    while sent < size:
        n = min(len(BLOCK), size - sent)
        s.sendall(view[:n])
        sent += n
    s.shutdown(socket.SHUT_WR)
    reply = b""
    while chunk := s.recv(100):
        reply += chunk
    s.close()
    assert int(reply) == size, (reply, size)
    return size / (time.perf_counter() - start) / 1e6

def loopback_download(address):
    start = time.perf_counter()
    s = socket.create_connection(address, timeout=120)
    s.sendall(b"d")
    buffer = bytearray(1 << 20)
    total = 0
    while n := s.recv_into(buffer):
        total += n
    s.close()
    assert total == size, (total, size)
    return size / (time.perf_counter() - start) / 1e6

local = loopback_server()
results = {"engine_upload": [], "engine_download": [], "kernel_upload": [], "kernel_download": []}
for _ in range(rounds):  # interleaved, so machine noise hits both paths alike
    results["kernel_upload"].append(loopback_upload(local))
    results["engine_upload"].append(upload((host, SINK)))
    results["kernel_download"].append(loopback_download(local))
    results["engine_download"].append(download((host, SOURCE)))
print(json.dumps(results))
"""


class SinkSourceRelay:
    """Upload sink and download source behind the terminator."""

    def __init__(self, tasks: asyncio.TaskGroup, size: int) -> None:
        self._tasks = tasks
        self._size = size

    def accept(self, flow: FlowId) -> bool:
        return flow.destination_port in (SINK_PORT, SOURCE_PORT)

    def tcp_connected(self, stream: TcpStream) -> None:
        work = self._sink(stream) if stream.flow.destination_port == SINK_PORT else None
        if work is None:
            work = self._source(stream)
        self._tasks.create_task(self._bounded(work), name=str(stream.flow))

    async def _bounded(self, work: Coroutine[Any, Any, None]) -> None:
        await asyncio.wait_for(work, CLIENT_TIMEOUT)

    async def _sink(self, stream: TcpStream) -> None:
        total = 0
        while data := await stream.read(1 << 20):
            total += len(data)
        await stream.write(str(total).encode())
        stream.close()
        await stream.wait_closed()

    async def _source(self, stream: TcpStream) -> None:
        sent = 0
        while sent < self._size:
            block = BLOCK if self._size - sent >= len(BLOCK) else BLOCK[: self._size - sent]
            await stream.write(block)
            sent += len(block)
        stream.close()
        await stream.wait_closed()

    def datagram(self, flow: FlowId, data: bytes) -> None:
        """No UDP in this benchmark."""

    def datagram_flow_closed(self, flow: FlowId) -> None:
        """No UDP in this benchmark."""


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, timeout=10)


async def measure(
    mode_name: str, vnet_header: bool, tso: bool, size: int, rounds: int
) -> dict[str, Any]:
    netns = f"kp-bench-{secrets.token_hex(4)}"
    await asyncio.to_thread(_ip, "netns", "add", netns)
    try:
        await asyncio.to_thread(_ip, "-n", netns, "link", "set", "lo", "up")
        device = TunDevice.open_in_namespace(netns, TUN_NAME, vnet_header=vnet_header, tso=tso)
        try:
            await asyncio.to_thread(configure_link, TUN_NAME, 1500, [TUN_ADDRESS], [ROUTED], netns)
            offload = device.offload
            mode = OutputMode(offload.vnet_header, offload.checksum, offload.tso)
            async with asyncio.TaskGroup() as tasks:
                terminator = Terminator(
                    device, [ipaddress.ip_network(ROUTED)], EndpointConfig(mtu=1500, output=mode)
                )
                relay = SinkSourceRelay(tasks, size)
                terminator.start(relay)
                started = time.process_time()
                try:
                    process = await asyncio.create_subprocess_exec(
                        "ip",
                        "netns",
                        "exec",
                        netns,
                        sys.executable,
                        "-c",
                        CLIENT,
                        SERVICE,
                        str(size),
                        str(rounds),
                        stdout=asyncio.subprocess.PIPE,
                        stderr=asyncio.subprocess.PIPE,
                    )
                    try:
                        out, err = await asyncio.wait_for(process.communicate(), CLIENT_TIMEOUT)
                    except TimeoutError:
                        process.kill()
                        await process.wait()
                        raise
                finally:
                    terminator.stop()
                engine_cpu = time.process_time() - started
            if process.returncode != 0:
                raise RuntimeError(f"client failed: {err.decode()}")
            figures: dict[str, list[float]] = json.loads(out)
        finally:
            device.close()
    finally:
        await asyncio.to_thread(_ip, "netns", "delete", netns, check=False)
    median = {name: statistics.median(values) for name, values in figures.items()}
    return {
        "name": f"userspace TCP engine, one flow, TUN {mode_name}",
        "bytes_per_transfer": size,
        "rounds": rounds,
        "baseline": "kernel loopback TCP, same client, same namespace",
        "upload_mb_per_s": round(median["engine_upload"], 1),
        "upload_baseline_mb_per_s": round(median["kernel_upload"], 1),
        "upload_ratio": round(median["engine_upload"] / median["kernel_upload"], 3),
        "download_mb_per_s": round(median["engine_download"], 1),
        "download_baseline_mb_per_s": round(median["kernel_download"], 1),
        "download_ratio": round(median["engine_download"] / median["kernel_download"], 3),
        "engine_cpu_seconds": round(engine_cpu, 2),
        "all_rounds": {name: [round(v, 1) for v in values] for name, values in figures.items()},
    }


async def suite(size: int, rounds: int, modes: list[str]) -> list[dict[str, Any]]:
    settings = {
        "vnet+TSO": (True, True),
        "vnet+csum": (True, False),
        "plain": (False, False),
    }
    return [await measure(name, *settings[name], size, rounds) for name in modes]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--modes", nargs="+", default=["vnet+TSO", "vnet+csum", "plain"], metavar="MODE"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("tcp_engine: needs root (network namespaces, TUN devices)", file=sys.stderr)
        return 2
    tune_allocator()  # as rootd does at start
    results = uvloop.run(suite(args.size_mib << 20, args.rounds, args.modes))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
