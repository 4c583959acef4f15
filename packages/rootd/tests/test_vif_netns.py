"""Component test: rootd as a real process in a scratch network namespace, behind a fake userd.

The fake userd (a grpclib server on a unix socket, in this test process) plays both ends
rootd talks to: userd's Connector (LookupDNS with canned answers, and liveness) and, as the
manager's socket, the Manager's DialCluster, which it answers by dialling echo servers that
run inside the namespace (its sockets are created in the namespace), with the manager's
own relay semantics (`protocol.tunnel.relay`). The "cluster" is RFC 2544 space: pods
198.19.0.0/16, services 198.18.0.0/24, DNS 198.18.0.10; the echo servers listen on
198.18.255.1, an address on the namespace's loopback outside the routed subnets; a tiny
NXDOMAIN resolver on 127.0.0.1:53 plays the resolver that was configured before.

Scenarios:
- a Connect whose subnet overlaps a local route is refused with one line naming the subnet,
  the route and the device, and nothing is applied (no TUN, resolv.conf untouched);
- Connect brings up kp0 and its routes; Status reports them; a second Connect is refused;
- TCP to a routed address is relayed byte-exact both ways with half-close (4 MiB);
- a refused dial gives ECONNREFUSED quickly;
- UDP datagrams are echoed;
- cluster names resolve through the fake (short names through the search list, over UDP
  and TCP); other names go to the previous resolver, which was asked;
- Disconnect, SIGTERM, SIGKILL + restart and a vanished userd each leave resolv.conf byte-
  identical and no TUN device or route behind.

Needs root (network namespaces, TUN devices, bind-mounted resolv.conf). Only loopback and
198.18.0.0/15 addresses, inside a namespace this test creates and deletes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dnslib
import grpclib.const
import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server, Stream

from kubepresence.protocol import streams
from kubepresence.protocol.gen import common, connector, daemon
from kubepresence.protocol.gen.google import protobuf
from kubepresence.protocol.transport import CONFIGURATION, unix_channel
from kubepresence.protocol.tunnel import control, relay, send_reset

pytestmark = [
    pytest.mark.timeout(60),  # a real rootd in a network namespace, with its TUN
    pytest.mark.root,
    pytest.mark.skipif(
        os.geteuid() != 0,
        reason="needs root: CAP_NET_ADMIN and CAP_SYS_ADMIN for network namespaces, TUN "
        "devices and the namespace's resolv.conf",
    ),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs the iproute2 `ip` command"),
    pytest.mark.skipif(not Path("/dev/net/tun").exists(), reason="needs /dev/net/tun"),
]

ECHO_HOST = "198.18.255.1"
SERVICE = "198.19.0.5"
ECHO_PORT = 7007
CLOSED_PORT = 7999
DNS_ADDRESS = "198.18.0.10"
POD_SUBNET = "198.19.0.0/16"
SERVICE_SUBNET = "198.18.0.0/24"
ORIGINAL_RESOLV = (
    b"# the scratch namespace's own resolver\nnameserver 127.0.0.1\nsearch example.test\n"
)
CANNED = {"echo.demo.svc.cluster.local.": SERVICE, "db.shop.svc.cluster.local.": "198.19.0.6"}
SIZE = 4 << 20
STEP_TIMEOUT = 20.0
_CLONE_NEWNET = 0x40000000


# -- the namespace and what runs in it ---------------------------------------------------


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=30)


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"kp-test-{secrets.token_hex(4)}"
    etc = Path("/etc/netns") / name
    run("ip", "netns", "add", name)
    try:
        run("ip", "-n", name, "link", "set", "lo", "up")
        run("ip", "-n", name, "address", "add", f"{ECHO_HOST}/32", "dev", "lo")
        # `ip netns exec` bind-mounts this over /etc/resolv.conf for what runs inside.
        etc.mkdir(parents=True)
        (etc / "resolv.conf").write_bytes(ORIGINAL_RESOLV)
        yield name
    finally:
        run("ip", "netns", "delete", name, check=False)
        shutil.rmtree(etc, ignore_errors=True)


SERVICES = r"""
import socket, sys, threading
from dnslib import DNSRecord, RCODE
host, port, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def tcp_echo(conn):
    with conn:
        while data := conn.recv(1 << 16):
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)   # half-close after the client's

def tcp():
    server = socket.create_server((host, port))
    while True:
        conn, _ = server.accept()
        threading.Thread(target=tcp_echo, args=(conn,), daemon=True).start()

def udp():
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind((host, port))
    while True:
        data, peer = server.recvfrom(65536)
        server.sendto(b"echo:" + data, peer)

def resolver():
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 53))
    while True:
        data, peer = server.recvfrom(4096)
        query = DNSRecord.parse(data)
        with open(log, "a") as out:
            out.write(str(query.q.qname) + "\n")
        reply = query.reply()
        reply.header.rcode = RCODE.NXDOMAIN
        server.sendto(reply.pack(), peer)

for work in (tcp, udp, resolver):
    threading.Thread(target=work, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()   # until the test closes our stdin (or kills us)
"""


@pytest.fixture
def services(netns: str, scratch: Path) -> Iterator[Path]:
    asked = scratch / "resolver-asked.txt"
    asked.touch()
    process = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            netns,
            sys.executable,
            "-c",
            SERVICES,
            ECHO_HOST,
            str(ECHO_PORT),
            str(asked),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        yield asked
    finally:
        process.kill()  # by its handle: the process this fixture started
        process.wait(10)


@pytest.fixture
def scratch() -> Iterator[Path]:
    # Short: unix socket paths are limited to 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="kpv-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _setns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    with open(path, "rb") as namespace:
        if libc.setns(namespace.fileno(), _CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))


def socket_in(netns: str, kind: int) -> socket.socket:
    """A socket of the namespace: setns() in a short-lived thread, the socket stays there."""
    made: list[socket.socket | OSError] = []

    def make() -> None:
        try:
            _setns(f"/run/netns/{netns}")
            made.append(socket.socket(socket.AF_INET, kind))
        except OSError as error:  # handed to the caller
            made.append(error)

    thread = threading.Thread(target=make)
    thread.start()
    thread.join()
    outcome = made[0]
    if isinstance(outcome, OSError):
        raise outcome
    outcome.setblocking(False)
    return outcome


# -- the fake userd ------------------------------------------------------------------------


@dataclass
class FakeUserd(connector.ConnectorBase):
    netns: str
    flows: list[tuple[int, str, int]] = field(default_factory=list)
    sessions: set[str] = field(default_factory=set)  # what the flows' opens named
    lookups: list[str] = field(default_factory=list)

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        mapping: dict[str, grpclib.const.Handler] = super().__mapping__()
        mapping[streams.DIAL_CLUSTER_PATH] = streams.tunnel_handler(self._tunnel)
        return mapping

    async def version(self, message: protobuf.Empty) -> common.VersionInfo:
        return common.VersionInfo(name="fake-userd", version="0")

    async def lookup_dns(self, message: common.DnsRequest) -> common.DnsResponse:
        self.lookups.append(message.name)
        address = CANNED.get(message.name.lower())
        if address is None or message.qtype != dnslib.QTYPE.A:
            return common.DnsResponse(rcode=3 if address is None else 0)
        buffer = dnslib.DNSBuffer()
        dnslib.RR(message.name, dnslib.QTYPE.A, rdata=dnslib.A(address), ttl=5).pack(buffer)
        return common.DnsResponse(rcode=0, answers=[bytes(buffer.data)])

    async def _tunnel(self, stream: Stream[Any, Any]) -> None:
        first = await stream.recv_message()
        assert first is not None
        assert first.open is not None
        conn = first.open.connection
        assert conn is not None
        host = socket.inet_ntoa(conn.destination_ip)
        assert host == SERVICE, host  # rootd only tunnels routed destinations
        self.flows.append((int(conn.protocol), host, conn.destination_port))
        self.sessions.add(first.open.session_id)
        loop = asyncio.get_running_loop()
        if conn.protocol == common.Protocol.UDP:
            await self._datagrams(stream, conn.destination_port)
            return
        sock = socket_in(self.netns, socket.SOCK_STREAM)
        try:
            await loop.sock_connect(sock, (ECHO_HOST, conn.destination_port))
        except OSError as error:
            sock.close()
            await stream.send_message(control(common.TunnelControlCode.DIAL_FAILED, str(error)))
            return
        reader, writer = await asyncio.open_connection(sock=sock)
        await stream.send_message(control(common.TunnelControlCode.CONNECTED))
        try:
            await relay(stream, reader, writer, idle_timeout=60)
        except Exception as error:  # noqa: BLE001 - the manager's behaviour: reset the flow
            await send_reset(stream, repr(error))

    async def _datagrams(self, stream: Stream[Any, Any], port: int) -> None:
        loop = asyncio.get_running_loop()
        sock = socket_in(self.netns, socket.SOCK_DGRAM)
        sock.connect((ECHO_HOST, port))
        answers: asyncio.Queue[bytes] = asyncio.Queue()

        class Answers(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                answers.put_nowait(data)

        transport, _ = await loop.create_datagram_endpoint(Answers, sock=sock)
        await stream.send_message(control(common.TunnelControlCode.CONNECTED))

        async def down() -> None:
            while True:
                await stream.send_message(common.TunnelMessage(data=await answers.get()))

        try:
            async with asyncio.TaskGroup() as group:
                sender = group.create_task(down())
                while (message := await stream.recv_message()) is not None:
                    if message.data is not None:
                        transport.sendto(message.data)
                    elif message.control is not None:
                        break
                sender.cancel()
        finally:
            transport.close()


class DroppableServer(Server):
    """A grpclib server that can drop its connections, as a userd that dies would."""

    def __init__(self, handlers: list[Any]) -> None:
        super().__init__(handlers, config=CONFIGURATION)
        self.transports: list[asyncio.BaseTransport] = []

    def _protocol_factory(self) -> Any:
        protocol = super()._protocol_factory()
        made = protocol.connection_made

        def record(transport: asyncio.BaseTransport) -> None:
            self.transports.append(transport)
            made(transport)

        protocol.connection_made = record  # type: ignore[method-assign]
        return protocol

    def vanish(self) -> None:
        self.close()
        for transport in self.transports:
            transport.close()


@pytest.fixture
async def userd(
    netns: str, scratch: Path
) -> AsyncIterator[tuple[FakeUserd, Path, DroppableServer]]:
    fake = FakeUserd(netns)
    path = scratch / "userd.socket"
    server = DroppableServer([fake])
    await server.start(path=str(path))
    try:
        yield fake, path, server
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await server.wait_closed()


# -- rootd -------------------------------------------------------------------------------


class Rootd:
    def __init__(self, netns: str, scratch: Path, name: str = "rootd") -> None:
        self.netns = netns
        self.socket = scratch / f"{name}.socket"
        self.state = scratch / "state"
        self.log = scratch / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self.launch()
        await self.wait_ready()

    def argv(self) -> list[str]:
        """rootd's command line, as the process in the namespace runs it."""
        return [
            sys.executable,
            "-m",
            "kubepresence.rootd",
            "--socket",
            str(self.socket),
            "--user",
            "0",
            "--state-dir",
            str(self.state),
            "--log-file",
            str(self.log),
            "--log-level",
            "debug",
        ]

    def launch(self) -> None:
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, *self.argv()],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + STEP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"rootd exited with {self.process.returncode}:\n{self.logs()}")
            if self.socket.exists():
                with contextlib.suppress(OSError, GRPCError):
                    await self.call(lambda stub: stub.version(timeout=2))
                    return
            await asyncio.sleep(0.1)
        pytest.fail(f"rootd did not answer in {STEP_TIMEOUT} s:\n{self.logs()}")

    async def call(self, rpc: Any) -> Any:
        channel: Channel = unix_channel(self.socket)
        try:
            return await rpc(daemon.DaemonStub(channel))
        finally:
            channel.close()

    async def connect(self, userd_socket: Path, **changes: Any) -> daemon.DaemonStatus:
        config = daemon.NetworkConfig(
            session=common.SessionInfo(session_id="client-test"),
            cluster=common.ClusterInfo(
                pod_subnets=[POD_SUBNET],
                service_subnets=[SERVICE_SUBNET],
                cluster_domain="cluster.local",
                dns_service_ip=DNS_ADDRESS,
            ),
            search_namespaces=["demo", "shop"],
            connector_socket=str(userd_socket),
            manager_socket=str(userd_socket),  # the fake plays the manager too
        )
        for key, value in changes.items():
            setattr(config, key, value)
        status: daemon.DaemonStatus = await self.call(
            lambda stub: stub.connect(config, timeout=STEP_TIMEOUT)
        )
        return status

    async def status(self) -> daemon.DaemonStatus:
        status: daemon.DaemonStatus = await self.call(lambda stub: stub.status(timeout=5))
        return status

    def signal(self, signum: int) -> int:
        assert self.process is not None
        self.process.send_signal(signum)
        return self.process.wait(STEP_TIMEOUT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # the process this test started, by its handle
            self.process.wait(10)

    def logs(self) -> str:
        return self.log.read_text() if self.log.exists() else "(no log)"


@pytest.fixture
def rootd(netns: str, scratch: Path) -> Iterator[Rootd]:
    daemon_process = Rootd(netns, scratch)
    try:
        yield daemon_process
    finally:
        daemon_process.stop()


def resolv_conf(netns: str) -> bytes:
    return Path("/etc/netns", netns, "resolv.conf").read_bytes()


def leftovers(netns: str) -> list[str]:
    """TUN devices and routes into the routed ranges that are still there."""
    links = json.loads(run("ip", "-j", "-n", netns, "link", "show").stdout)
    routes = json.loads(run("ip", "-j", "-n", netns, "route", "show", "table", "all").stdout)
    found = [f"link {link['ifname']}" for link in links if link["ifname"] != "lo"]
    found += [
        f"route {r['dst']} dev {r.get('dev')}"
        for r in routes
        if str(r.get("dst", "")).startswith(("198.19.", "198.18.0."))
    ]
    return found


async def wait_until(what: str, predicate: Any, seconds: float = STEP_TIMEOUT) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


async def in_netns(netns: str, code: str, *args: str) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        "ip",
        "netns",
        "exec",
        netns,
        sys.executable,
        "-c",
        code,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    except TimeoutError:
        process.kill()  # the process we started, by its handle
        await process.wait()
        raise
    assert process.returncode == 0, stderr.decode()
    result: dict[str, Any] = json.loads(stdout)
    return result


CLIENT = r"""
import json, random, socket, struct, sys, threading, time
import dnslib
service, dns = sys.argv[1], sys.argv[5]
port, closed, size = (int(a) for a in sys.argv[2:5])
results = {}
data = random.Random(2544).randbytes(size)

s = socket.create_connection((service, port), timeout=30)
s.settimeout(30)
sender = threading.Thread(target=lambda: (s.sendall(data), s.shutdown(socket.SHUT_WR)))
start = time.monotonic()
sender.start()
parts = []
while chunk := s.recv(1 << 20):
    parts.append(chunk)
sender.join(30)
s.close()
echoed = b"".join(parts)
seconds = time.monotonic() - start
results["tcp"] = {"same": echoed == data, "length": len(echoed), "seconds": seconds}

start = time.monotonic()
try:
    socket.create_connection((service, closed), timeout=10).close()
    results["refused"] = "connected"
except ConnectionRefusedError:
    results["refused"] = "refused"
except OSError as error:
    results["refused"] = repr(error)
results["refused_seconds"] = time.monotonic() - start

u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(5)
answers = []
for i in range(5):
    u.sendto(b"ping-%d" % i, (service, port))
    answers.append(u.recvfrom(2048)[0].decode())
results["udp"] = answers

def resolve(name):
    try:
        found = socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)
        return sorted({a[4][0] for a in found})
    except socket.gaierror as error:
        return f"gaierror {error.errno}"
names = ("echo.demo", "echo", "db", "echo.demo.svc.cluster.local", "nothere.example")
results["names"] = {n: resolve(n) for n in names}

query = dnslib.DNSRecord.question("echo.demo.svc.cluster.local", "A")
t = socket.create_connection((dns, 53), timeout=10)
packed = query.pack()
t.sendall(struct.pack("!H", len(packed)) + packed)
length = struct.unpack("!H", t.recv(2))[0]
reply = b""
while len(reply) < length:
    reply += t.recv(length - len(reply))
t.close()
parsed = dnslib.DNSRecord.parse(reply)
same = parsed.header.id == query.header.id
results["tcp_dns"] = {"id_same": same, "answers": [str(r.rdata) for r in parsed.rr]}
print(json.dumps(results))
"""


async def test_connect_refuses_a_subnet_that_overlaps_a_local_route(
    netns: str, rootd: Rootd, userd: tuple[FakeUserd, Path, DroppableServer]
) -> None:
    _, userd_socket, _ = userd
    run("ip", "-n", netns, "route", "add", "198.19.7.0/24", "dev", "lo")
    await rootd.start()
    with pytest.raises(GRPCError) as refused:
        await rootd.connect(userd_socket)
    assert refused.value.status == Status.FAILED_PRECONDITION  # a config error
    message = str(refused.value.message)
    assert "198.19.0.0/16" in message, message
    assert "198.19.7.0/24" in message, message
    assert "via lo" in message, message
    assert "\n" not in message
    assert resolv_conf(netns) == ORIGINAL_RESOLV
    assert "link kp0" not in leftovers(netns)
    assert not (await rootd.status()).connected
    # A bad CIDR is the user's mistake, also one line.
    with pytest.raises(GRPCError) as bad:
        await rootd.connect(userd_socket, also_proxy=["10.0.0.0/40"])
    assert bad.value.status == Status.INVALID_ARGUMENT
    assert "--also-proxy: '10.0.0.0/40' is not a CIDR" in str(bad.value.message)


async def test_flows_dns_and_every_way_of_ending(
    netns: str, rootd: Rootd, userd: tuple[FakeUserd, Path, DroppableServer], services: Path
) -> None:
    fake, userd_socket, userd_server = userd
    await rootd.start()
    status = await rootd.connect(userd_socket)
    assert status.connected, rootd.logs()
    assert status.vif_name == "kp0"
    assert list(status.routed_subnets) == [SERVICE_SUBNET, POD_SUBNET]
    assert status.dns_address == DNS_ADDRESS
    assert status.resolver == "resolv.conf"  # no systemd-resolved in this namespace
    written = resolv_conf(netns).decode()
    assert f"nameserver {DNS_ADDRESS}\n" in written
    assert (
        "search demo.svc.cluster.local shop.svc.cluster.local svc.cluster.local cluster.local "
        "example.test\n" in written
    )
    assert "options ndots:5\n" in written
    assert set(leftovers(netns)) >= {"link kp0", f"route {POD_SUBNET} dev kp0"}

    with pytest.raises(GRPCError) as twice:
        await rootd.connect(userd_socket)
    assert twice.value.status == Status.INVALID_ARGUMENT
    assert "already connected" in str(twice.value.message)

    results = await in_netns(
        netns, CLIENT, SERVICE, str(ECHO_PORT), str(CLOSED_PORT), str(SIZE), DNS_ADDRESS
    )
    assert results["tcp"]["same"], (results["tcp"], rootd.logs()[-3000:])
    assert results["tcp"]["length"] == SIZE
    assert results["refused"] == "refused"
    assert results["refused_seconds"] < 2.0
    assert results["udp"] == [f"echo:ping-{i}" for i in range(5)]
    names = results["names"]
    assert names["echo.demo"] == [SERVICE]  # through the search list
    assert names["echo"] == [SERVICE]  # the first search namespace
    assert names["db"] == ["198.19.0.6"]  # found in the second one
    assert names["echo.demo.svc.cluster.local"] == [SERVICE]
    assert str(names["nothere.example"]).startswith("gaierror")
    assert results["tcp_dns"] == {"id_same": True, "answers": [SERVICE]}
    # Cluster names went to the cluster, the other name to the previous resolver only.
    assert "echo.demo.svc.cluster.local." in fake.lookups
    assert "nothere.example.demo.svc.cluster.local." in fake.lookups
    assert all(name.lower().endswith(".cluster.local.") for name in fake.lookups)
    asked = (await asyncio.to_thread(services.read_text)).split()
    assert "nothere.example." in asked
    assert not any(name.endswith("cluster.local.") for name in asked)
    assert (6, SERVICE, ECHO_PORT) in fake.flows
    assert (6, SERVICE, CLOSED_PORT) in fake.flows
    assert (17, SERVICE, ECHO_PORT) in fake.flows
    assert fake.sessions == {"client-test"}  # rootd names userd's session on every flow

    # A second rootd in the same namespace (same state dir) leaves the live session alone
    # at start-up and refuses to connect over it.
    second = Rootd(netns, rootd.state.parent, name="second")
    try:
        await second.start()
        assert "link kp0" in leftovers(netns)
        assert resolv_conf(netns) == written.encode()
        with pytest.raises(GRPCError) as taken:
            await second.connect(userd_socket)
        assert taken.value.status == Status.FAILED_PRECONDITION
        assert "another kubepresence session is connected" in str(taken.value.message)
        assert resolv_conf(netns) == written.encode()
        assert (await rootd.status()).connected
    finally:
        second.stop()

    # 1. Disconnect undoes everything; the daemon stays.
    await rootd.call(lambda stub: stub.disconnect(timeout=STEP_TIMEOUT))
    assert resolv_conf(netns) == ORIGINAL_RESOLV
    assert leftovers(netns) == []
    assert not (await rootd.status()).connected

    # 2. SIGTERM while connected.
    assert (await rootd.connect(userd_socket)).connected
    assert resolv_conf(netns) != ORIGINAL_RESOLV
    assert rootd.signal(signal.SIGTERM) == 0, rootd.logs()
    assert resolv_conf(netns) == ORIGINAL_RESOLV
    assert leftovers(netns) == []

    # 3. SIGKILL while connected: the next start repairs what the dead one left.
    await rootd.start()
    assert (await rootd.connect(userd_socket)).connected
    assert rootd.signal(signal.SIGKILL) == -signal.SIGKILL
    assert resolv_conf(netns) != ORIGINAL_RESOLV  # nobody could restore it
    await rootd.start()
    assert resolv_conf(netns) == ORIGINAL_RESOLV
    assert leftovers(netns) == []
    assert "did not clean up" in rootd.logs()

    # 4. userd goes away: rootd notices and undoes everything by itself.
    assert (await rootd.connect(userd_socket)).connected
    await asyncio.to_thread(userd_socket.unlink, missing_ok=True)
    userd_server.vanish()
    started = time.monotonic()
    await wait_until(
        "rootd to disconnect after userd left",
        lambda: leftovers(netns) == [] and resolv_conf(netns) == ORIGINAL_RESOLV,
    )
    assert time.monotonic() - started < 10  # the socket refuses: no need to wait 15 s
    assert not (await rootd.status()).connected
    assert "userd went away" in rootd.logs()

    await rootd.call(lambda stub: stub.quit(timeout=5))
    assert rootd.process is not None
    assert rootd.process.wait(STEP_TIMEOUT) == 0
