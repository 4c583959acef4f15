"""Component test: the kernel's own TCP/UDP stack against the TUN terminator, in a netns.

Scenarios (each in a fresh scratch network namespace, for each TUN framing: vnet header
with TSO, vnet header with checksum offload only, plain packets):
- a TCP client streams 4 MiB to an echo service and reads it back byte-exact;
- a TCP client uploads 4 MiB, half-closes, and gets the digest of what arrived;
- a TCP client downloads 4 MiB until the service closes, byte-exact;
- a connection to a port the relay refuses is refused (RST), at once or after the relay
  deferred its answer (the cluster dial failed); the sink's answer is deferred and positive;
- UDP datagrams to an echo service come back;
- an ICMP echo to a routed address is answered.

Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN for network namespaces and TUN devices). Only
198.18.0.0/15 addresses and loopback are used, inside namespaces this test creates and
deletes; the main namespace is never touched.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from kubepresence.rootd.core.endpoint import EndpointConfig
from kubepresence.rootd.core.flows import FlowId
from kubepresence.rootd.core.packets import PROTO_TCP, PROTO_UDP, OutputMode
from kubepresence.rootd.net.streams import TcpStream
from kubepresence.rootd.net.terminating import Terminator
from kubepresence.rootd.net.tun import TunDevice, configure_link

pytestmark = [
    pytest.mark.timeout(60),  # a real rootd in a network namespace, with its TUN
    pytest.mark.root,
    pytest.mark.skipif(
        os.geteuid() != 0,
        reason="needs root: CAP_NET_ADMIN and CAP_SYS_ADMIN to create network namespaces "
        "and TUN devices",
    ),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs the iproute2 `ip` command"),
    pytest.mark.skipif(not Path("/dev/net/tun").exists(), reason="needs /dev/net/tun"),
]

TUN_NAME = "kptun0"
TUN_ADDRESS = "198.18.0.1/32"
ROUTED = "198.19.0.0/16"
SERVICE = "198.19.0.5"
ECHO_PORT, SINK_PORT, SOURCE_PORT, REFUSED_PORT, DIAL_FAILS_PORT = 7, 9, 19, 1, 2
DIAL_DELAY = 0.05  # the relay "dials the cluster" for deferred ports
SIZE = 4 << 20
SEED = 2544
CLIENT_TIMEOUT = 120.0


def pattern(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"kp-test-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=10)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False, timeout=10)


class ServiceRelay:
    """In-process services behind the terminator: echo, sink-with-digest, source, UDP echo."""

    def __init__(self, tasks: asyncio.TaskGroup) -> None:
        self._tasks = tasks
        self.terminator: Terminator | None = None
        self.refused: list[FlowId] = []

    def accept(self, flow: FlowId) -> bool | None:
        if flow.protocol == PROTO_TCP and flow.destination_port in (SINK_PORT, DIAL_FAILS_PORT):
            # Deferred admission: answer the SYN once the (pretend) cluster dial is done.
            succeeds = flow.destination_port == SINK_PORT
            self._tasks.create_task(self._dial(flow, succeeds), name=f"dial {flow}")
            return None
        if flow.protocol == PROTO_TCP and flow.destination_port in (ECHO_PORT, SOURCE_PORT):
            return True
        if flow.protocol == PROTO_UDP and flow.destination_port == ECHO_PORT:
            return True
        self.refused.append(flow)
        return False

    def tcp_connected(self, stream: TcpStream) -> None:
        service = {ECHO_PORT: self._echo, SINK_PORT: self._sink, SOURCE_PORT: self._source}
        self._tasks.create_task(
            self._guard(service[stream.flow.destination_port](stream)), name=str(stream.flow)
        )

    async def _guard(self, work: Coroutine[Any, Any, None]) -> None:
        # A failing service fails the task group, and with it the test.
        await asyncio.wait_for(work, CLIENT_TIMEOUT)

    async def _dial(self, flow: FlowId, succeeds: bool) -> None:
        await asyncio.sleep(DIAL_DELAY)
        assert self.terminator is not None
        if not succeeds:
            self.refused.append(flow)
        assert self.terminator.decide(flow, succeeds)

    async def _echo(self, stream: TcpStream) -> None:
        while data := await stream.read():
            await stream.write(data)
        stream.close()
        await stream.wait_closed()

    async def _sink(self, stream: TcpStream) -> None:
        digest = hashlib.sha256()
        total = 0
        while data := await stream.read():
            digest.update(data)
            total += len(data)
        await stream.write(f"{total} {digest.hexdigest()}\n".encode())
        stream.close()
        await stream.wait_closed()

    async def _source(self, stream: TcpStream) -> None:
        data = pattern(SIZE, SEED)
        for offset in range(0, SIZE, 1 << 16):
            await stream.write(data[offset : offset + (1 << 16)])
        stream.close()
        await stream.wait_closed()

    def datagram(self, flow: FlowId, data: bytes) -> None:
        assert self.terminator is not None
        self.terminator.send_datagram(flow, b"echo:" + data)

    def datagram_flow_closed(self, flow: FlowId) -> None:
        pass


CLIENT = r"""
import hashlib, json, random, socket, sys, threading, time
service, size, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ECHO, SINK, SOURCE, REFUSED, DIAL_FAILS = 7, 9, 19, 1, 2
data = random.Random(seed).randbytes(size)
results = {}

def connect(port):
    s = socket.create_connection((service, port), timeout=30)
    s.settimeout(30)
    return s

def read_all(s):
    parts = []
    while chunk := s.recv(1 << 20):
        parts.append(chunk)
    return b"".join(parts)

start = time.monotonic()
s = connect(ECHO)
sender = threading.Thread(target=lambda: (s.sendall(data), s.shutdown(socket.SHUT_WR)))
sender.start()
echoed = read_all(s)
sender.join(30)
s.close()
results["echo"] = {"same": echoed == data, "length": len(echoed),
                   "seconds": time.monotonic() - start}

start = time.monotonic()
s = connect(SINK)
s.sendall(data)
s.shutdown(socket.SHUT_WR)
reply = read_all(s).decode().split()
s.close()
results["sink"] = {"length": int(reply[0]), "digest": reply[1],
                   "expected": hashlib.sha256(data).hexdigest(),
                   "seconds": time.monotonic() - start}

start = time.monotonic()
s = connect(SOURCE)
received = read_all(s)
s.close()
results["source"] = {"same": received == data, "length": len(received),
                     "seconds": time.monotonic() - start}

for name, port in (("refused", REFUSED), ("dial_fails", DIAL_FAILS)):
    try:
        connect(port).close()
        results[name] = "connected"
    except ConnectionRefusedError:
        results[name] = "refused"
    except OSError as error:
        results[name] = repr(error)

u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(5)
answers = []
for i in range(5):
    u.sendto(b"ping-%d" % i, (service, ECHO))
    answers.append(u.recvfrom(2048)[0].decode())
results["udp"] = answers

# ICMP echo over a raw socket (no ping binary needed); the reply carries our identifier.
import struct
def checksum(b):
    total = int.from_bytes(b, "big") % 0xFFFF
    return ~total & 0xFFFF
icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
icmp.settimeout(5)
body = struct.pack("!HH", 0x4B50, 1) + b"kubepresence"
request = struct.pack("!BBH", 8, 0, checksum(b"\x08\x00" + body)) + body
icmp.sendto(request, (service, 0))
reply = icmp.recvfrom(2048)[0]
header = (reply[0] & 0x0F) * 4
results["ping"] = {"type": reply[header], "body_same": reply[header + 4:] == body}
print(json.dumps(results))
"""


async def run_in_netns(netns: str, *command: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        "ip",
        "netns",
        "exec",
        netns,
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), CLIENT_TIMEOUT)
    except TimeoutError:
        process.kill()  # the process we started, by its handle
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


@pytest.mark.parametrize(
    ("vnet_header", "tso"),
    [(True, True), (True, False), (False, False)],
    ids=["vnet-tso", "vnet-csum", "plain"],
)
async def test_kernel_tcp_and_udp_through_the_terminator(
    netns: str, vnet_header: bool, tso: bool
) -> None:
    device = TunDevice.open_in_namespace(netns, TUN_NAME, vnet_header=vnet_header, tso=tso)
    try:
        await asyncio.to_thread(configure_link, TUN_NAME, 1500, [TUN_ADDRESS], [ROUTED], netns)
        offload = device.offload
        mode = OutputMode(offload.vnet_header, offload.checksum, offload.tso)
        async with asyncio.TaskGroup() as tasks:
            relay = ServiceRelay(tasks)
            terminator = Terminator(
                device, [ipaddress.ip_network(ROUTED)], EndpointConfig(mtu=1500, output=mode)
            )
            relay.terminator = terminator
            terminator.start(relay)
            try:
                code, out, err = await run_in_netns(
                    netns, sys.executable, "-c", CLIENT, SERVICE, str(SIZE), str(SEED)
                )
            finally:
                terminator.stop()
        assert code == 0, err
        results = json.loads(out)
        assert results["echo"] == {**results["echo"], "same": True, "length": SIZE}
        assert results["sink"]["length"] == SIZE
        assert results["sink"]["digest"] == results["sink"]["expected"]
        assert results["source"] == {**results["source"], "same": True, "length": SIZE}
        assert results["refused"] == "refused"
        assert results["dial_fails"] == "refused"
        assert [f.destination_port for f in relay.refused] == [REFUSED_PORT, DIAL_FAILS_PORT]
        assert results["udp"] == [f"echo:ping-{i}" for i in range(5)]
        assert results["ping"] == {"type": 0, "body_same": True}
        assert terminator.endpoint.stats.malformed == 0
        if tso:
            # The upload arrived as super-segments: the TSO path was really taken.
            assert terminator.largest_read > 1500 + 10
        else:
            assert terminator.largest_read <= 1500 + (10 if vnet_header else 0)
        assert device.write_errors == 0
    finally:
        device.close()
