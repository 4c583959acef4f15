"""Routing on a real laptop (issue 20): a local network that collides with the cluster.

ws1 gets a "home LAN" that overlaps the cluster's service subnet: a veth pair whose far end
lives in a namespace of this test (10.96.0.50, an HTTP server that answers "lan"), so ws1
has `10.96.0.0/24 dev kplan0` beside the cluster's 10.96.0.0/16. Everything stays inside
namespaces this test creates; the cluster's ranges never reach the host's own routes.

Scenarios (one traffic manager for the module):
- a plain connect is refused in one line naming the cluster subnet, the local route, its
  device and the ways out; nothing is applied;
- `--allow-conflicting-subnets 10.96.0.0/24`: Services answer by name (the policy rule and
  rootd's table are there while connected); after quit the LAN route is intact and reaches
  the LAN again, and ws1's routes, rules and resolv.conf are as before;
- the same with rootd SIGKILLed: its guardian removes the policy rule;
- `--vnat` of both cluster ranges: DNS answers virtual addresses for a Service and for a
  pod (a headless Service), both answer through them, while 10.96.0.50 still reaches the
  LAN; `status` lists the virtual addresses;
- `--proxy-via 10.96.0.0/16=relay`: the echo pod sees the connection come from the relay
  workload's pod, where with `--vnat` it comes from the traffic manager's pod;
- DNS controls: `--dns-map` to an address and to a cluster name, `--dns-exclude-suffix`
  of the namespace (its short names stop resolving), all shown in `status`;
- bad input: a proxy-via of an unknown workload, a workload without an agent, and a virtual
  subnet that collides with a local route: one line, exit 2, nothing applied.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kpcluster.commands import wait_for
from kpcluster.harness import Cluster, EchoWorkload
from workstation_cli import (
    MachineState,
    Workstation,
    command_lines,
    machine_state,
    uninstall_manager,
    ws1_vif_lock,
)
from workstation_servers import PROGRAMS

LAN_DEVICE = "kplan0"
LAN_WS_ADDRESS = "10.96.0.49/24"
LAN_ADDRESS = "10.96.0.50"
LAN_PORT = 8099
POLICY_TABLE = "27504"


def headless(namespace: str, port: int) -> dict[str, Any]:
    """A headless Service: DNS answers the echo pod's own address."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "echo-pods", "namespace": namespace},
        "spec": {
            "clusterIP": "None",
            "selector": {"app": "echo"},
            "ports": [{"port": port, "targetPort": port}],
        },
    }


# One DNS question, exactly as given (no search list), to the resolver ws1 uses now.
DNS_QUESTION = (PROGRAMS / "dns_question.py").read_text()


@dataclass
class Rig:
    cluster: Cluster
    ws: Workstation
    manager: str
    namespace: str
    echo: EchoWorkload
    relay_pod_ip: str
    manager_pod_ip: str
    baseline: MachineState

    def connect(self, *flags: str) -> subprocess.CompletedProcess[str]:
        return self.ws.kp(
            "connect", "--manager-namespace", self.manager, "-n", self.namespace, *flags
        )

    def quit_and_check(self) -> None:
        quit_ = self.ws.kp("quit", timeout=60)
        assert quit_.returncode == 0, quit_.stderr
        assert machine_state(self.cluster) == self.baseline
        assert self.lan_answers()

    def curl(self, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.ws.run("curl", "-sS", "--max-time", "10", *extra, url, timeout=30)

    def echo_says(self, host: str) -> dict[str, Any]:
        answer = self.curl(f"http://{host}:{self.echo.service_port}/")
        assert answer.returncode == 0, answer.stderr + self.ws.logs()
        return dict(json.loads(answer.stdout))

    def lan_answers(self) -> bool:
        answer = self.curl(f"http://{LAN_ADDRESS}:{LAN_PORT}/")
        return answer.returncode == 0 and answer.stdout == "lan"

    def ask(self, name: str) -> dict[str, Any]:
        return dict(self.ws.python(DNS_QUESTION, name, timeout=30))

    def resolve(self, name: str) -> list[str]:
        found = self.ws.run("getent", "ahostsv4", name, timeout=30)
        return sorted({line.split()[0] for line in found.stdout.splitlines() if line.strip()})


def _lan(cluster: Cluster) -> Iterator[None]:
    """The colliding LAN: a veth from ws1 into a namespace of ours, a server at its end."""
    netns = f"kplan-{secrets.token_hex(3)}"
    server: subprocess.Popen[bytes] | None = None
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        ws = ["ip", "-n", "ws1"]
        peer = ["peer", "name", "lan0", "netns", netns]
        subprocess.run([*ws, "link", "add", LAN_DEVICE, "type", "veth", *peer], check=True)
        subprocess.run([*ws, "address", "add", LAN_WS_ADDRESS, "dev", LAN_DEVICE], check=True)
        subprocess.run([*ws, "link", "set", LAN_DEVICE, "up"], check=True)
        lan = ["ip", "-n", netns]
        subprocess.run([*lan, "address", "add", f"{LAN_ADDRESS}/24", "dev", "lan0"], check=True)
        subprocess.run([*lan, "link", "set", "lan0", "up"], check=True)
        subprocess.run([*lan, "link", "set", "lo", "up"], check=True)
        serve = [
            sys.executable,
            str(PROGRAMS / "answering_server.py"),
            str(LAN_PORT),
            "lan",
            LAN_ADDRESS,
        ]
        server = subprocess.Popen(["ip", "netns", "exec", netns, *serve], stdout=subprocess.DEVNULL)
        wait_for(
            "the LAN server to answer from ws1",
            lambda: (
                cluster.on_workstation(
                    ["curl", "-sS", "--max-time", "2", f"http://{LAN_ADDRESS}:{LAN_PORT}/"],
                    check=False,
                ).stdout
                == "lan"
            ),
            timeout=30,
            interval=0.3,
        )
        yield
    finally:
        if server is not None:
            server.kill()
            server.wait(timeout=10)
        subprocess.run(["ip", "-n", "ws1", "link", "delete", LAN_DEVICE], check=False)
        subprocess.run(["ip", "netns", "delete", netns], check=False)


@pytest.fixture(scope="module")
def rig(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with ws1_vif_lock(), cluster.namespace("routing") as namespace:
        manager = f"kp-mgr-{secrets.token_hex(3)}"
        ws = Workstation(cluster, tmp_path_factory.mktemp("ws"))
        echo = cluster.deploy_echo("http", namespace)
        cluster.apply([headless(namespace, echo.pod_port)])
        lan = _lan(cluster)
        next(lan)
        try:
            # A first connect installs the manager (its webhook injects the relay's agent);
            # the LAN's /24 is left to the LAN.
            first = ws.kp(
                "connect", "--manager-namespace", manager, "-n", namespace,
                "--never-proxy", "10.96.0.0/24",
            )  # fmt: skip
            assert first.returncode == 0, first.stderr + ws.logs()
            ws.kp("quit", timeout=60)
            cluster.deploy_echo(
                "http",
                namespace,
                name="relay",
                pod_annotations={"kubepresence.io/inject-traffic-agent": "enabled"},
            )
            relay = cluster.wait_pods_ready(namespace, "app=relay", 1)
            managers = cluster.wait_pods_ready(
                manager, "app.kubernetes.io/name=kubepresence-manager", 1
            )
            baseline = machine_state(cluster)
            yield Rig(
                cluster,
                ws,
                manager,
                namespace,
                echo,
                relay[0]["status"]["podIP"],
                managers[0]["status"]["podIP"],
                baseline,
            )
        finally:
            ws.kp("quit", timeout=60)
            uninstall_manager(cluster, manager)
            next(lan, None)


@pytest.fixture(autouse=True)
def _quit_after(rig: Rig) -> Iterator[None]:
    """A failed test must not leave the next one connected."""
    yield
    rig.ws.kp("quit", timeout=60)


def test_a_conflicting_local_route_is_refused_in_one_line(rig: Rig) -> None:
    refused = rig.connect()
    assert refused.returncode != 0
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, refused.stderr
    for part in (
        "10.96.0.0/16",
        f"10.96.0.0/24 via {LAN_DEVICE}",
        "--never-proxy",
        "--allow-conflicting-subnets 10.96.0.0/24",
        "--vnat",
        "--proxy-via",
    ):
        assert part in lines[0]
    assert "Traceback" not in refused.stderr
    rig.quit_and_check()


def test_allowed_conflicting_subnets_route_through_a_policy_table(rig: Rig) -> None:
    connected = rig.connect("--allow-conflicting-subnets", "10.96.0.0/24")
    assert connected.returncode == 0, connected.stderr + rig.ws.logs()
    rules = rig.ws.run("ip", "rule").stdout
    assert f"to 10.96.0.0/16 lookup {POLICY_TABLE}" in rules
    table = rig.ws.run("ip", "route", "show", "table", POLICY_TABLE).stdout
    assert "10.96.0.0/16 dev kp0" in table
    assert f"10.96.0.0/24 dev {LAN_DEVICE}" in rig.ws.run("ip", "route").stdout
    answer = rig.echo_says(f"echo.{rig.namespace}")
    assert answer["pod"] == rig.echo.pod_name
    status = rig.ws.status()["connection"]
    assert status["routing"]["allow_conflicting"] == ["10.96.0.0/24"]  # type: ignore[index]
    assert status["resolver"] == "resolv.conf"  # type: ignore[index]
    rig.quit_and_check()


def _guardian_of(rootd: int) -> int:
    marker = f"--rootd={rootd}".encode()
    found = [
        pid
        for pid, argv in command_lines()
        if b"kubepresence.rootd.guardian" in argv and marker in argv
    ]
    assert len(found) == 1, found
    return found[0]


def _policy_rules(rig: Rig) -> list[str]:
    return [line for line in rig.ws.run("ip", "rule").stdout.splitlines() if POLICY_TABLE in line]


def test_a_killed_rootd_leaves_no_policy_rule(rig: Rig) -> None:
    connected = rig.connect("--allow-conflicting-subnets", "10.96.0.0/24")
    assert connected.returncode == 0, connected.stderr + rig.ws.logs()
    pid = rig.ws.rootd_pid()
    assert pid is not None
    assert _policy_rules(rig)
    os.kill(pid, signal.SIGKILL)
    wait_for(
        "the guardian to undo the killed rootd's rules, routes and resolv.conf",
        lambda: machine_state(rig.cluster) == rig.baseline,
        timeout=30,
        interval=0.5,
    )
    assert rig.lan_answers()
    rig.quit_and_check()


def test_rules_left_by_a_killed_rootd_and_guardian_go_at_the_next_start(rig: Rig) -> None:
    connected = rig.connect("--allow-conflicting-subnets", "10.96.0.0/24")
    assert connected.returncode == 0, connected.stderr + rig.ws.logs()
    pid = rig.ws.rootd_pid()
    assert pid is not None
    guardian = _guardian_of(pid)
    os.kill(guardian, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    wait_for("rootd to be gone", lambda: rig.ws.rootd_pid() is None, timeout=15, interval=0.2)
    rig.ws.kp("quit", timeout=60)  # the user daemon too: the next connect starts afresh
    left = _policy_rules(rig)
    assert left, "nothing was left to recover: the test proves nothing"
    # The next connect starts a new rootd, which removes them before it routes anything.
    again = rig.connect("--never-proxy", "10.96.0.0/24")
    assert again.returncode == 0, again.stderr + rig.ws.logs()
    assert _policy_rules(rig) == []
    assert "left policy rules" in rig.ws.log("rootd")
    rig.quit_and_check()


def test_vnat_reaches_services_and_pods_through_virtual_addresses(rig: Rig) -> None:
    connected = rig.connect("--vnat", "10.96.0.0/16", "--vnat", "10.244.0.0/16")
    assert connected.returncode == 0, connected.stderr + rig.ws.logs()
    service = rig.resolve(f"echo.{rig.namespace}")
    assert service, service
    assert all(a.startswith("198.18.") for a in service), service
    pods = rig.resolve(f"echo-pods.{rig.namespace}")
    assert pods, pods
    assert all(a.startswith("198.18.") for a in pods), pods
    assert rig.echo_says(f"echo.{rig.namespace}")["pod"] == rig.echo.pod_name
    direct = rig.curl(f"http://{pods[0]}:{rig.echo.pod_port}/")
    assert direct.returncode == 0, direct.stderr + rig.ws.logs()
    assert json.loads(direct.stdout)["pod"] == rig.echo.pod_name
    # The conflicting local route still reaches its own device.
    assert rig.lan_answers()
    assert f"10.96.0.0/24 dev {LAN_DEVICE}" in rig.ws.run("ip", "route").stdout

    def mapped() -> list[str] | None:
        shown = rig.ws.status()["connection"]["routing"]["virtual_addresses"]  # type: ignore[index]
        return list(shown) if any(service[0] in a for a in shown) else None

    shown = wait_for("status to list the virtual addresses", mapped, timeout=10, interval=0.5)
    assert any(a.startswith(f"{service[0]} -> 10.96.") for a in shown), shown
    assert rig.echo_says(f"echo.{rig.namespace}")["peer"] == rig.manager_pod_ip
    rig.quit_and_check()


def test_proxy_via_leaves_from_the_named_workload(rig: Rig) -> None:
    connected = rig.connect("--proxy-via", "10.96.0.0/16=relay")
    assert connected.returncode == 0, connected.stderr + rig.ws.logs()
    service = rig.resolve(f"echo.{rig.namespace}")
    assert service, service
    assert all(a.startswith("198.18.") for a in service), service
    answer = rig.echo_says(f"echo.{rig.namespace}")
    assert answer["pod"] == rig.echo.pod_name
    assert answer["peer"] == rig.relay_pod_ip, (answer, rig.relay_pod_ip, rig.manager_pod_ip)
    status = rig.ws.status()["connection"]
    assert status["routing"]["proxy_via"] == [f"10.96.0.0/16={rig.namespace}/relay"]  # type: ignore[index]
    rig.quit_and_check()


def test_dns_controls(rig: Rig) -> None:
    short = f"echo.{rig.namespace}."
    outside = "thing.example.internal."
    connected = rig.connect(
        "--never-proxy", "10.96.0.0/24",
        "--dns-map", "fixed.example=10.96.7.7",
        "--dns-map", f"api.example=echo.{rig.namespace}",
        "--dns-include-suffix", "example.internal",
    )  # fmt: skip
    assert connected.returncode == 0, connected.stderr + rig.ws.logs()
    assert rig.resolve("fixed.example") == ["10.96.7.7"]
    assert rig.resolve("api.example") == [rig.echo.service_ip]
    assert rig.echo_says("api.example")["pod"] == rig.echo.pod_name
    assert rig.ask(short) == {"rcode": 0, "aa": 1, "answers": [rig.echo.service_ip]}
    # Included: the cluster's answer (its CoreDNS knows no such zone), which rootd marks
    # authoritative; ws1's own resolver would not be asked at all.
    included = rig.ask(outside)
    assert included["aa"] == 1, included
    assert included["rcode"] != 0, included
    assert included["answers"] == [], included
    dns = rig.ws.status()["connection"]["dns"]  # type: ignore[index]
    assert dns["mappings"] == {
        "api.example": f"echo.{rig.namespace}",
        "fixed.example": "10.96.7.7",
    }
    assert dns["include_suffixes"] == ["example.internal"]
    rig.quit_and_check()

    excluded = rig.connect("--never-proxy", "10.96.0.0/24", "--dns-exclude-suffix", rig.namespace)
    assert excluded.returncode == 0, excluded.stderr + rig.ws.logs()
    # The short name under the excluded suffix goes to ws1's own resolver, not the cluster;
    # so does a name no rule sends there.
    for name in (short, outside):
        asked = rig.ask(name)
        assert asked["aa"] == 0, asked
        assert rig.echo.service_ip not in asked["answers"], asked
    assert rig.resolve(f"echo.{rig.namespace}.svc.cluster.local") == [rig.echo.service_ip]
    assert rig.ws.status()["connection"]["dns"]["exclude_suffixes"] == [rig.namespace]  # type: ignore[index]
    rig.quit_and_check()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--proxy-via", "10.96.0.0/16=nothing-here"], "no Deployment, StatefulSet or ReplicaSet"),
        (["--proxy-via", "10.96.0.0/16=echo"], "has no traffic agent"),
        (
            ["--vnat", "10.96.0.0/16", "--virtual-subnet", "10.77.0.0/24"],
            "the virtual subnet 10.77.0.0/24 overlaps the local route",
        ),
        (["--allow-conflicting-subnets", "172.31.0.0/16"], "is in no routed subnet"),
        (["--vnat", "everything"], "--vnat 'everything' is not a CIDR"),
        (["--proxy-via", "10.96.0.0/16"], "is not CIDR=WORKLOAD"),
    ],
)
def test_bad_routing_input_is_one_line(rig: Rig, flags: list[str], message: str) -> None:
    refused = rig.connect(*flags)
    assert refused.returncode == 2, refused.stderr + rig.ws.logs()
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, refused.stderr
    assert message in lines[0], refused.stderr
    rig.quit_and_check()
