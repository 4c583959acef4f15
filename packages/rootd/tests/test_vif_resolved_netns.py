"""Component test: rootd with a REAL systemd-resolved on a REAL private system D-Bus.

Everything runs in a scratch network namespace and a private mount namespace that this
test creates (a "holder" process keeps the mount namespace; every other process joins it
with nsenter): a tmpfs over /run (the bus socket, resolved's runtime directory and its
configuration drop-in), /etc/resolv.conf bind-mounted to resolved's stub file (nameserver
127.0.0.53, as on Ubuntu), and /etc/passwd and /etc/group bind-mounted to copies with the
`systemd-resolve` user that resolved drops to. resolved is the Debian package's binary,
unpacked (never installed: its maintainer scripts would take over this machine's
resolv.conf) into ~/.cache/kubepresence/tools/resolved by `resolved_binaries`. A fake
upstream DNS server on 198.18.255.53 is resolved's global DNS=; the fake userd of
test_vif_netns answers the cluster's names.

Scenarios:
- rootd's detection sees this resolved from the scratch network namespace, and not from
  another one that reaches the same bus;
- with rootd connected, resolved's kp0 link carries DNS 198.18.0.10, the routing domains
  ~cluster.local ~demo ~shop, the search domains demo.svc.cluster.local
  shop.svc.cluster.local and no default route; /etc/resolv.conf is not touched; status says
  "systemd-resolved";
- cluster names asked of resolved (`resolvectl query` and its stub 127.0.0.53), the short
  `echo` and `echo.demo` too, are answered by rootd's DNS server from the fake userd;
- other names go to the upstream, which was asked for them and never for a cluster name;
- Disconnect reverts the link (seen while the link still exists: the test holds a copy of
  rootd's TUN descriptor, so kp0 outlives the session), and every link's DNS, domains and
  default route, resolved's state files and /etc/resolv.conf are as before;
- SIGKILL of rootd, again with kp0 kept alive by the test: the guardian reverts the link
  (RevertLink seen on the bus), deletes the stale TUN, and the state is as before; a
  restarted rootd has nothing left to recover and connects again;
- rootd and its guardian both SIGKILLed (kp0 kept alive): the link keeps the dead rootd's
  settings until rootd starts again, whose recovery reverts it and deletes the TUN; after
  Quit the state is as before.

Needs root (namespaces, TUN devices, mounts), nsenter/unshare, dbus-daemon/-monitor, apt-get +
dpkg-deb the first time (to fetch the package). Only loopback and 198.18.0.0/15 addresses,
inside a namespace this test creates and deletes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from kubepresence.protocol.gen import daemon

pytestmark = [
    pytest.mark.timeout(60),  # a real rootd in a network namespace, with its TUN
    pytest.mark.root,
    pytest.mark.skipif(
        os.geteuid() != 0,
        reason="needs root: CAP_NET_ADMIN and CAP_SYS_ADMIN for network and mount "
        "namespaces, TUN devices and bind mounts",
    ),
    pytest.mark.skipif(
        any(
            shutil.which(tool) is None
            for tool in ("ip", "nsenter", "unshare", "dbus-daemon", "dbus-monitor")
        ),
        reason="needs iproute2 `ip`, util-linux `nsenter`/`unshare`, `dbus-daemon` and "
        "`dbus-monitor`",
    ),
    pytest.mark.skipif(not Path("/dev/net/tun").exists(), reason="needs /dev/net/tun"),
]


def _sibling(name: str) -> ModuleType:
    """A test module beside this one (the fake userd lives there; tests are no package)."""
    qualified = f"_kp_tests_{name}"
    if qualified in sys.modules:
        return sys.modules[qualified]
    spec = importlib.util.spec_from_file_location(qualified, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


vif = _sibling("test_vif_netns")

UPSTREAM = "198.18.255.53"
UPLINK = "198.18.254.1/24"
DNS_ADDRESS = vif.DNS_ADDRESS
SERVICE = vif.SERVICE
STEP_TIMEOUT = 20.0
STUB_RESOLV = b"nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n"
RESOLVED_CONF = f"""[Resolve]
DNS={UPSTREAM}
Domains=
DNSSEC=no
DNSOverTLS=no
LLMNR=no
MulticastDNS=no
Cache=no
DNSStubListener=yes
"""
BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""
TOOLS = Path.home() / ".cache" / "kubepresence" / "tools" / "resolved"
_SYS_PIDFD_OPEN = 434
_SYS_PIDFD_GETFD = 438


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=60)


# -- systemd-resolved from the Debian package, unpacked --------------------------------


@dataclass(frozen=True)
class ResolvedTools:
    daemon: Path
    resolvectl: Path
    env: dict[str, str]  # LD_LIBRARY_PATH when the package needs its own libsystemd-shared


def _version(package: str) -> str:
    found = run("dpkg-query", "-W", "-f=${Version}", package, check=False)
    return found.stdout.strip() if found.returncode == 0 else ""


def _unpack(packages: list[str], into: Path) -> bool:
    """`apt-get download` the packages and `dpkg-deb -x` them into `into` (no scripts run)."""
    with tempfile.TemporaryDirectory(prefix="kp-debs-") as downloads:
        Path(downloads).chmod(0o777)  # apt's sandbox user writes there
        fetched = subprocess.run(
            ["apt-get", "download", *packages],
            cwd=downloads,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if fetched.returncode != 0:
            return False
        partial = into.with_name(into.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        for deb in Path(downloads).glob("*.deb"):
            run("dpkg-deb", "-x", str(deb), str(partial))
        partial.rename(into)
    return True


@pytest.fixture(scope="session")
def resolved_binaries() -> ResolvedTools:
    """resolved and resolvectl matching the installed libsystemd-shared when the archive
    still has that version (the binaries' RUNPATH finds the installed library), else the
    candidate version with its own libsystemd-shared through LD_LIBRARY_PATH."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        pytest.skip("needs apt-get and dpkg-deb to fetch the systemd-resolved package")
    installed = _version("libsystemd-shared")
    matching = TOOLS / f"systemd-resolved-{installed}"
    candidate = TOOLS / "systemd-resolved-candidate"
    TOOLS.mkdir(parents=True, exist_ok=True)
    env: dict[str, str] = {}
    if installed and (matching.is_dir() or _unpack([f"systemd-resolved={installed}"], matching)):
        root = matching
    elif candidate.is_dir() or _unpack(["systemd-resolved", "libsystemd-shared"], candidate):
        root = candidate
        env["LD_LIBRARY_PATH"] = str(root / "usr/lib/x86_64-linux-gnu/systemd")
    else:
        pytest.skip("cannot fetch the systemd-resolved package (apt-get download failed)")
    tools = ResolvedTools(root / "lib/systemd/systemd-resolved", root / "usr/bin/resolvectl", env)
    if not tools.daemon.exists() or not tools.resolvectl.exists():
        pytest.skip(f"the systemd-resolved package in {root} lacks the daemon or resolvectl")
    return tools


# -- the namespaces --------------------------------------------------------------------

HOLDER = r"""
import os, shutil, subprocess, sys
scratch = sys.argv[1]
def sh(*argv):
    subprocess.run(argv, check=True)
# A private /run: the bus socket, resolved's runtime directory and configuration drop-in.
sh("mount", "-t", "tmpfs", "-o", "mode=755", "kp-run", "/run")
for directory in ("/run/dbus", "/run/systemd/resolved.conf.d"):
    os.makedirs(directory)
shutil.copy(f"{scratch}/resolved.conf", "/run/systemd/resolved.conf.d/kubepresence-test.conf")
for name in ("resolv.conf", "passwd", "group"):
    sh("mount", "--bind", f"{scratch}/etc/{name}", f"/etc/{name}")
sh("umount", "-l", "/sys")   # as `ip netns exec` does: /sys of this network namespace
sh("mount", "-t", "sysfs", "kp-sys", "/sys")
print("ready", flush=True)
sys.stdin.read()   # until the test closes our stdin (or kills us)
"""

UPSTREAM_SERVER = r"""
import socket, sys
from dnslib import A, DNSRecord, QTYPE, RCODE, RR
host, log = sys.argv[1], sys.argv[2]
server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
server.bind((host, 53))
print("ready", flush=True)
while True:
    data, peer = server.recvfrom(4096)
    query = DNSRecord.parse(data)
    name = str(query.q.qname)
    with open(log, "a") as out:
        out.write(name + "\n")
    reply = query.reply()
    if name.lower() == "www.example.test." and query.q.qtype == QTYPE.A:
        reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A("198.18.255.80"), ttl=5))
    elif name.lower() != "www.example.test.":
        reply.header.rcode = RCODE.NXDOMAIN
    server.sendto(reply.pack(), peer)
"""


def _free_id() -> int:
    used = {
        int(line.split(":")[2])
        for path in ("/etc/passwd", "/etc/group")
        for line in Path(path).read_text().splitlines()
        if line.count(":") >= 2 and line.split(":")[2].isdigit()
    }
    return next(n for n in range(989, 500, -1) if n not in used)


class World:
    """The namespaces and the processes in them; every process is ended by its handle."""

    def __init__(self, scratch: Path, tools: ResolvedTools) -> None:
        self.scratch = scratch
        self.tools = tools
        self.netns = f"kp-rsd-{secrets.token_hex(4)}"
        self.processes: list[subprocess.Popen[Any]] = []
        self.holder: subprocess.Popen[str] | None = None
        self.asked = scratch / "upstream-asked.txt"
        self.bus_log = scratch / "bus-monitor.txt"

    def enter(self, *argv: str) -> list[str]:
        assert self.holder is not None
        return ["nsenter", f"--target={self.holder.pid}", "--mount", "--net", "--", *argv]

    def start(self, argv: list[str], log: Path, **options: Any) -> subprocess.Popen[Any]:
        with open(log, "ab") as out:
            process = subprocess.Popen(
                self.enter(*argv), stdin=subprocess.DEVNULL, stdout=out, stderr=out, **options
            )
        self.processes.append(process)
        return process

    def sh(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.enter(*argv),
            check=check,
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, **self.tools.env},
        )

    def up(self) -> None:
        etc = self.scratch / "etc"
        etc.mkdir()
        (etc / "resolv.conf").write_bytes(STUB_RESOLV)
        ident = _free_id()
        passwd = Path("/etc/passwd").read_text()
        group = Path("/etc/group").read_text()
        (etc / "passwd").write_text(
            passwd + f"systemd-resolve:x:{ident}:{ident}:resolver:/:/usr/sbin/nologin\n"
        )
        (etc / "group").write_text(group + f"systemd-resolve:x:{ident}:\n")
        (self.scratch / "resolved.conf").write_text(RESOLVED_CONF)
        (self.scratch / "bus.conf").write_text(BUS_CONF)
        self.asked.touch()

        run("ip", "netns", "add", self.netns)
        run("ip", "-n", self.netns, "link", "set", "lo", "up")
        run("ip", "-n", self.netns, "address", "add", f"{UPSTREAM}/32", "dev", "lo")
        # resolved asks its global servers only while some link has a routable address.
        # A veth pair with both ends in the namespace: a link with carrier, going nowhere.
        run("ip", "-n", self.netns, "link", "add", "kp-up0", "type", "veth", "peer", "kp-up1")
        run("ip", "-n", self.netns, "address", "add", UPLINK, "dev", "kp-up0")
        for end in ("kp-up0", "kp-up1"):
            run("ip", "-n", self.netns, "link", "set", end, "up")
        self.holder = subprocess.Popen(
            [
                "nsenter",
                f"--net=/run/netns/{self.netns}",
                "--",
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                sys.executable,
                "-c",
                HOLDER,
                str(self.scratch),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.holder.stdout is not None
        assert self.holder.stdout.readline().strip() == "ready"

        self.start(
            [
                "dbus-daemon",
                f"--config-file={self.scratch / 'bus.conf'}",
                "--nofork",
                "--nopidfile",
            ],
            self.scratch / "dbus.log",
        )
        wait_for(
            "the private system bus",
            lambda: (
                self.sh("test", "-S", "/run/dbus/system_bus_socket", check=False).returncode == 0
            ),
        )
        upstream = self.start(
            [sys.executable, "-u", "-c", UPSTREAM_SERVER, UPSTREAM, str(self.asked)],
            self.scratch / "upstream.log",
        )
        upstream_log = self.scratch / "upstream.log"
        wait_for(
            "the fake upstream",
            lambda: upstream.poll() is None and "ready" in upstream_log.read_text(),
            failure=upstream_log.read_text,
        )
        self.start(
            [
                "dbus-monitor",
                "--system",
                "type='method_call',interface='org.freedesktop.resolve1.Manager'",
            ],
            self.bus_log,
        )
        self.start(
            [str(self.tools.daemon)],
            self.scratch / "resolved.log",
            env={
                **os.environ,
                **self.tools.env,
                "SYSTEMD_LOG_LEVEL": "debug",
                "SYSTEMD_LOG_TARGET": "console",
            },
        )
        wait_for(
            "systemd-resolved on the bus",
            lambda: self.sh(str(self.tools.resolvectl), "dns", check=False).returncode == 0,
            failure=lambda: (self.scratch / "resolved.log").read_text()[-3000:],
        )

    def down(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.kill()  # by its handle: a process this test started
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
        if self.holder is not None:
            self.holder.kill()
            self.holder.wait(10)
        run("ip", "netns", "delete", self.netns, check=False)

    # -- what resolved shows ------------------------------------------------------------

    def resolvectl(self, *args: str) -> str:
        return self.sh(str(self.tools.resolvectl), *args).stdout

    def state(self) -> dict[str, str]:
        """Every link's DNS, domains and default route, resolved's files, resolv.conf."""
        netif = self.sh(
            "sh",
            "-c",
            "cd /run/systemd/resolve && for f in netif/* *.conf; do "
            '[ -f "$f" ] && echo "== $f" && cat "$f"; done; true',
        ).stdout
        return {
            "dns": self.resolvectl("dns"),
            "domain": self.resolvectl("domain"),
            "default-route": self.resolvectl("default-route"),
            "files": netif,
            "etc/resolv.conf": self.sh("cat", "/etc/resolv.conf").stdout,
        }

    def link(self, name: str) -> dict[str, str]:
        """kp0's DNS, domains and default route as resolvectl shows them."""
        return {
            what: " ".join(self.resolvectl(what, name).split(":", 1)[-1].split())
            for what in ("dns", "domain", "default-route")
        }

    def logs(self) -> str:
        """The tails of resolved's and the upstream's logs, for a failure's message."""
        return "\n".join(
            f"--- {name}\n" + (self.scratch / name).read_text()[-3000:]
            for name in ("resolved.log", "upstream.log")
        )

    def upstream_asked(self) -> list[str]:
        return self.asked.read_text().split()

    def reverts(self) -> list[str]:
        """The link indexes of the RevertLink calls seen on the bus."""
        text = self.bus_log.read_text()
        return re.findall(r"member=RevertLink\n\s+int32 (\d+)", text)


def wait_for(what: str, predicate: Any, seconds: float = STEP_TIMEOUT, failure: Any = None) -> None:
    """Poll `predicate` until it holds, at most `seconds` (blocking: set-up only)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}" + (f":\n{failure()}" if failure else ""))


async def wait_until(
    what: str, predicate: Any, seconds: float = STEP_TIMEOUT, failure: Any = None
) -> None:
    """`wait_for` that keeps the event loop (the fake userd) serving meanwhile."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await asyncio.to_thread(predicate):
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}" + (f":\n{failure()}" if failure else ""))


@pytest.fixture
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="kpr-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def world(scratch: Path, resolved_binaries: ResolvedTools) -> Iterator[World]:
    made = World(scratch, resolved_binaries)
    try:
        made.up()
        yield made
    finally:
        made.down()


@pytest.fixture
async def userd(world: World, scratch: Path) -> AsyncIterator[tuple[Any, Path]]:
    fake = vif.FakeUserd(world.netns)
    path = scratch / "userd.socket"
    server = vif.DroppableServer([fake])
    await server.start(path=str(path))
    try:
        yield fake, path
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await server.wait_closed()


_RootdBase: Any = vif.Rootd


class Rootd(_RootdBase):  # type: ignore[misc]
    """rootd in the private mount namespace (its bus, its resolv.conf)."""

    def __init__(self, world: World, scratch: Path) -> None:
        super().__init__(world.netns, scratch)
        self.world = world

    def launch(self) -> None:
        self.process = subprocess.Popen(
            self.world.enter(*self.argv()), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )


@pytest.fixture
def rootd(world: World, scratch: Path) -> Iterator[Rootd]:
    process = Rootd(world, scratch)
    try:
        yield process
    finally:
        process.stop()


@contextlib.contextmanager
def tun_kept_alive(pid: int) -> Iterator[None]:
    """A copy of rootd's TUN descriptor (pidfd_getfd): kp0 outlives rootd's own close, so
    what rootd (or its guardian) did to resolved's link can be seen while the link exists."""
    libc = ctypes.CDLL(None, use_errno=True)
    target = next(
        int(entry.name)
        for entry in Path(f"/proc/{pid}/fd").iterdir()
        if str(entry.readlink()) == "/dev/net/tun"
    )
    pidfd = libc.syscall(_SYS_PIDFD_OPEN, pid, 0)
    if pidfd < 0:
        pytest.skip(f"pidfd_open: {os.strerror(ctypes.get_errno())}")
    try:
        copy = libc.syscall(_SYS_PIDFD_GETFD, pidfd, target, 0)
        if copy < 0:
            pytest.skip(f"pidfd_getfd: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(pidfd)
    try:
        yield
    finally:
        os.close(copy)


QUERIES = r"""
import json, socket, sys
import dnslib
results = {}
for name in sys.argv[1:]:
    query = dnslib.DNSRecord.question(name, "A")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(10)
    s.sendto(query.pack(), ("127.0.0.53", 53))
    reply = dnslib.DNSRecord.parse(s.recv(4096))
    results[name] = [dnslib.RCODE.get(reply.header.rcode), sorted(str(r.rdata) for r in reply.rr)]
try:  # glibc through /etc/resolv.conf, which names the stub
    found = socket.getaddrinfo("echo.demo", 80, socket.AF_INET, socket.SOCK_STREAM)
    results["getaddrinfo echo.demo"] = sorted({a[4][0] for a in found})
except socket.gaierror as error:
    results["getaddrinfo echo.demo"] = f"gaierror {error.errno}"
print(json.dumps(results))
"""


async def stub_queries(world: World, *names: str) -> dict[str, Any]:
    """A-record answers of resolved's stub, in a thread: rootd asks the fake userd meanwhile."""
    done = await asyncio.to_thread(world.sh, sys.executable, "-c", QUERIES, *names)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def resolvectl_query(world: World, name: str) -> str:
    found = await asyncio.to_thread(
        world.sh, str(world.tools.resolvectl), "query", "-4", "--legend=no", name, check=False
    )
    return found.stdout + found.stderr


async def test_cluster_names_through_resolved_and_everything_reverted(
    world: World, rootd: Rootd, userd: tuple[Any, Path]
) -> None:
    fake, userd_socket = userd
    # Warm up: resolved has used its upstream once, so nothing in the baseline changes later.
    warm = await stub_queries(world, "warmup.example.test.")
    assert warm["warmup.example.test."][0] == "NXDOMAIN", world.logs()
    baseline = world.state()
    assert "kp0" not in baseline["dns"]
    assert baseline["etc/resolv.conf"].encode() == STUB_RESOLV

    # rootd's detection: this resolved serves the scratch namespace, not the host's, whose
    # processes reach the same bus (the mount namespace) but have other link indexes.
    probe = "from kubepresence.rootd.net.resolving import resolved_on_bus as r; print(r())"
    assert world.sh(sys.executable, "-c", probe).stdout.strip() == "True"
    assert world.holder is not None
    elsewhere = run(
        "nsenter", f"--target={world.holder.pid}", "--mount", "--", sys.executable, "-c", probe
    )
    assert elsewhere.stdout.strip() == "False"

    world.asked.write_text("")  # the warm-up's names (echo.demo included) were before connect
    await rootd.start()
    status: daemon.DaemonStatus = await rootd.connect(userd_socket)
    assert status.connected, rootd.logs()
    assert status.resolver == "systemd-resolved"
    assert world.link("kp0") == {
        "dns": DNS_ADDRESS,
        "domain": "~cluster.local ~demo ~shop demo.svc.cluster.local shop.svc.cluster.local",
        "default-route": "no",
    }
    assert world.sh("cat", "/etc/resolv.conf").stdout.encode() == STUB_RESOLV  # untouched

    # (a) Cluster names, long and short, through resolved to rootd to the fake userd.
    for name in ("echo", "echo.demo", "db.shop", "echo.demo.svc.cluster.local"):
        shown = await resolvectl_query(world, name)
        expected = "198.19.0.6" if name.startswith("db") else SERVICE
        assert expected in shown, (name, shown, rootd.logs()[-2000:])
        assert "link: kp0" in shown, shown
    answered = await stub_queries(
        world,
        "echo.demo.",
        "db.shop.",
        "echo.demo.svc.cluster.local.",
        "nothere.demo.",
        "www.example.test.",
        "nothere.example.test.",
    )
    assert answered["echo.demo."] == ["NOERROR", [SERVICE]]
    assert answered["db.shop."] == ["NOERROR", ["198.19.0.6"]]
    assert answered["echo.demo.svc.cluster.local."] == ["NOERROR", [SERVICE]]
    assert answered["nothere.demo."][0] == "NXDOMAIN"  # the cluster says so: never forwarded
    assert answered["getaddrinfo echo.demo"] == [SERVICE]
    assert "echo.demo.svc.cluster.local." in fake.lookups
    assert "db.shop.svc.cluster.local." in fake.lookups
    assert "nothere.demo.svc.cluster.local." in fake.lookups
    # (b) Other names went to the upstream; it never saw a cluster name.
    assert answered["www.example.test."] == ["NOERROR", ["198.18.255.80"]]
    assert answered["nothere.example.test."][0] == "NXDOMAIN"
    asked = world.upstream_asked()
    assert "www.example.test." in asked
    assert "nothere.example.test." in asked
    cluster = [
        n for n in asked if n.lower().rstrip(".").endswith(("cluster.local", "demo", "shop"))
    ]
    assert cluster == [], asked
    assert not any(n.lower().startswith("echo") for n in asked), asked
    assert all(n.lower().endswith(".cluster.local.") for n in fake.lookups), fake.lookups

    # (c1) Disconnect: the link is reverted while it still exists, then all is as before.
    assert rootd.process is not None
    index = socket_index(world, "kp0")
    with tun_kept_alive(rootd.process.pid):
        await rootd.call(lambda stub: stub.disconnect(timeout=STEP_TIMEOUT))
        reverted = world.link("kp0")
        assert (reverted["dns"], reverted["domain"]) == ("", ""), (reverted, rootd.logs()[-2000:])
    assert str(index) in world.reverts()
    await wait_until("kp0 to go", lambda: "kp0" not in world.resolvectl("dns"))
    assert world.state() == baseline
    assert not (await rootd.status()).connected

    # (c2) SIGKILL while connected, kp0 kept alive: the guardian reverts it and deletes it.
    status = await rootd.connect(userd_socket)
    assert status.connected
    index = socket_index(world, "kp0")
    assert world.link("kp0")["dns"] == DNS_ADDRESS
    with tun_kept_alive(rootd.process.pid):
        assert rootd.signal(signal.SIGKILL) == -signal.SIGKILL
        await wait_until(
            "the guardian to revert kp0",
            lambda: str(index) in world.reverts(),
            failure=lambda: world.bus_log.read_text()[-2000:] + rootd.logs()[-2000:],
        )
        await wait_until("the guardian to delete kp0", lambda: "kp0" not in world.resolvectl("dns"))
    assert world.state() == baseline
    assert "reverting its systemd-resolved link" in rootd.logs()

    # A restarted rootd finds nothing left and connects again.
    recoveries = rootd.logs().count("did not clean up")
    await rootd.start()
    assert rootd.logs().count("did not clean up") == recoveries  # the guardian did it all
    assert (await rootd.connect(userd_socket)).connected
    assert world.link("kp0")["dns"] == DNS_ADDRESS

    # (c3) rootd and its guardian both SIGKILLed: nobody reverts until rootd starts again.
    guardian = _guardian_of(rootd.process.pid)
    os.kill(guardian, signal.SIGKILL)  # by pid: the guardian of the rootd this test started
    await wait_until("the guardian to die", lambda: _dead(guardian))
    index = socket_index(world, "kp0")
    with tun_kept_alive(rootd.process.pid):
        assert rootd.signal(signal.SIGKILL) == -signal.SIGKILL
        assert world.link("kp0")["dns"] == DNS_ADDRESS  # left as the dead rootd set it
        assert str(index) not in world.reverts()
        await rootd.start()  # its recovery runs before it serves
        assert str(index) in world.reverts(), rootd.logs()[-2000:]
        await wait_until("the restart to delete kp0", lambda: "kp0" not in world.resolvectl("dns"))
    assert world.state() == baseline

    await rootd.call(lambda stub: stub.quit(timeout=5))
    assert rootd.process.wait(STEP_TIMEOUT) == 0
    assert world.state() == baseline


def _guardian_of(rootd_pid: int) -> int:
    """The pid of the guardian that rootd `rootd_pid` started (its argv names that rootd)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"kubepresence.rootd.guardian" in argv and f"--rootd={rootd_pid}".encode() in argv:
            return int(entry.name)
    pytest.fail(f"no guardian of rootd {rootd_pid}")


def _dead(pid: int) -> bool:
    """Gone, or a zombie its parent has not reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def socket_index(world: World, name: str) -> int:
    return int(world.sh("cat", f"/sys/class/net/{name}/ifindex").stdout)
