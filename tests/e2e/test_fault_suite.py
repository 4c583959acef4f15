"""The fault suite (issue 14): every part killed or frozen in every state of a session.

Faults: SIGKILL, or SIGSTOP held for a while and then SIGCONT, of the user daemon and the
root daemon in each state of a session, and of the traffic manager's and the agent's
processes during an intercept; the port-forward cut (its TCP connections to the API
server reset); the agent-injection webhook made unreachable.

States: connecting (a `connect` in flight, installing its traffic manager), connected,
intercepting (a global intercept the cluster's traffic follows), mounting (the same, with
the app's volumes mounted by sshfs).

What every scenario checks:
- while a local daemon is dead or frozen, `status` ends within its bound, in one line
  when it fails, with a non-zero exit;
- afterwards the session recovers or ends cleanly, as the scenario's contract says: a
  `connect` gives a working session (a Service answers by name); an intercept either takes
  the cluster's traffic again or is gone so the app answers, never a black hole;
- after `quit`, nothing is half-applied: ws1's resolv.conf is byte-identical, its links,
  routes and rules are as before, no process the session started (userd, rootd, its
  guardian, sshfs) is left; the workload's pod template is as it was and the app answers
  its own traffic; no daemon log holds a traceback.

The traffic manager of the module has a short session TTL (12 s), so a frozen client is
forgotten within the test. The ws1 lock is held for the module: one session at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kpcluster import layout
from kpcluster.commands import wait_for
from kpcluster.harness import Cluster
from kubernetes_asyncio import client
from workstation_cli import (
    WS_RESOLV_CONF,
    MachineState,
    Workstation,
    agent_pid,
    command_lines,
    machine_state,
    manager_pid,
    uninstall_manager,
    ws1_vif_lock,
)
from workstation_servers import answering_server, get_from_pod

from kubepresence.userd.core.manifests import ManagerInstall, webhook_config_name
from kubepresence.userd.k8s.apiclient import load_configuration
from kubepresence.userd.k8s.installing import ensure_manager

log = logging.getLogger(__name__)

SESSION_TTL = 12
LOCAL_PORT = 8096
# How long a frozen part stays frozen: past rootd's 15 s of userd silence, past the
# manager's session TTL, past userd's deadline for rootd.
STOP_SECONDS = {"userd": 18.0, "rootd": 8.0, "manager": 16.0, "agent": 16.0}
STATUS_BOUND = 10.0  # `status` answers, or says who does not, within this
RECOVERY = 90.0  # bound on every "comes back" wait


# --- the rig: one manager, one workload, one workstation server for the module -------------


@dataclass
class Rig:
    cluster: Cluster
    namespace: str
    manager_namespace: str
    client: str
    template: str = ""  # the echo Deployment's pod template once its agent is injected

    def ask(self, workload: str = "echo") -> str:
        """What answers a cluster pod's GET: "workstation", "app", or why nothing did."""
        url = f"http://{workload}.{self.namespace}/"
        answer = get_from_pod(self.cluster, self.namespace, self.client, url, timeout=5)
        body = str(answer.get("body", ""))
        if body == "workstation":
            return "workstation"
        if body.startswith("{") and json.loads(body).get("pod", "").startswith(workload):
            return "app"
        return f"no answer: {answer}"

    def pod_template(self, workload: str = "echo") -> str:
        deployment = self.cluster.get("deployment", workload, "-n", self.namespace)
        return json.dumps(deployment["spec"]["template"], sort_keys=True)

    def intercept_argv(self, *extra: str) -> list[str]:
        return ["intercept", "echo", "--port", f"{LOCAL_PORT}:http", "-n", self.namespace, *extra]


def _install_manager(namespace: str) -> None:
    async def main() -> None:
        conf = await load_configuration(layout.ADMIN_KUBECONFIG)
        async with client.ApiClient(conf) as api:
            install = ManagerInstall(namespace=namespace, session_ttl=SESSION_TTL)
            await ensure_manager(api, install, log.info, wait_seconds=150)

    asyncio.run(main())


@pytest.fixture(scope="module")
def rig(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    manager_namespace = f"kp-mgr-{secrets.token_hex(3)}"
    with ws1_vif_lock(), cluster.namespace("faults") as namespace:
        try:
            _install_manager(manager_namespace)
            cluster.deploy_echo("http", namespace, named_target_port=True)
            rig = Rig(cluster, namespace, manager_namespace, cluster.client_pod(namespace))
            with answering_server(cluster, LOCAL_PORT, "workstation"):
                # Inject the agent once (the first intercept rolls the pods out), so every
                # scenario starts from the same pod template.
                ws = Workstation(cluster, tmp_path_factory.mktemp("warmup"))
                try:
                    ok(ws.kp("connect", "--manager-namespace", manager_namespace), ws)
                    ok(ws.kp(*rig.intercept_argv("--mount", "false")), ws)
                    ok(ws.kp("leave", "echo"), ws)
                finally:
                    ws.kp("quit", timeout=60)
                rig.template = rig.pod_template()
                wait_for("the app to answer", lambda: rig.ask() == "app", timeout=30)
                yield rig
        finally:
            uninstall_manager(cluster, manager_namespace)


def ok(result: subprocess.CompletedProcess[str], ws: Workstation) -> str:
    assert result.returncode == 0, result.stdout + result.stderr + ws.logs()
    return result.stdout


def one_line_failure(result: subprocess.CompletedProcess[str]) -> str:
    """A failed command: non-zero exit and exactly one line on stderr, no traceback."""
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return lines[0]


# --- the workstation before and after ----------------------------------------------------


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass
class Tracked:
    """Every process the session started, as seen along the way (all must end)."""

    ws: Workstation
    pids: dict[int, str] = field(default_factory=dict)

    def look(self) -> None:
        home = str(self.ws.home).encode()
        for pid, argv in command_lines():
            joined = b" ".join(argv)
            if home in joined and (
                b"kubepresence-userd" in joined or b"kubepresence-rootd" in joined
            ):
                self.pids.setdefault(pid, "userd" if b"userd" in joined else "rootd")
        for pid in [p for p, name in self.pids.items() if name == "rootd"]:
            for guardian, argv in command_lines():
                if (
                    b"kubepresence.rootd.guardian" in b" ".join(argv)
                    and f"--rootd={pid}".encode() in argv
                ):
                    self.pids.setdefault(guardian, "guardian")
        for pid in re.findall(r"\(sshfs pid (\d+)\)", self.ws.log("userd")):
            self.pids.setdefault(int(pid), "sshfs")

    def left(self) -> list[str]:
        return [f"{name} {pid}" for pid, name in self.pids.items() if alive(pid)]

    def left_named(self, name: str) -> list[int]:
        return [pid for pid, named in self.pids.items() if named == name and alive(pid)]


@pytest.fixture
def before(rig: Rig) -> MachineState:
    return machine_state(rig.cluster)


def settle_and_check_clean(
    rig: Rig, ws: Workstation, tracked: Tracked, before: MachineState
) -> None:
    """`quit`, then nothing half-applied, on the workstation or in the cluster."""
    tracked.look()
    ok(ws.kp("quit", timeout=60), ws)
    wait_for(
        "ws1 as it was before the session",
        lambda: machine_state(rig.cluster) == before,
        timeout=15,
    )
    wait_for("every process of the session to end", lambda: not tracked.left(), timeout=15)
    assert rig.pod_template() == rig.template
    wait_for("the app to answer its own traffic", lambda: rig.ask() == "app", timeout=RECOVERY)
    for name in ("userd", "rootd"):
        logged = ws.log(name)
        assert "Traceback" not in logged, f"{name}.log:\n{logged[-6000:]}"


# --- bringing a session to a state ---------------------------------------------------------


def connect(rig: Rig, ws: Workstation) -> None:
    ok(ws.kp("connect", "--manager-namespace", rig.manager_namespace, "-n", rig.namespace), ws)


def service_answers(rig: Rig, ws: Workstation) -> bool:
    """The echo Service answers the workstation by name: the app, or (intercepted) the
    workstation's own server."""
    answer = ws.run("curl", "-sS", "--max-time", "5", f"http://echo.{rig.namespace}/x")
    if answer.returncode != 0:
        return False
    if answer.stdout == "workstation":
        return True
    try:
        return str(json.loads(answer.stdout).get("pod", "")).startswith("echo-")
    except ValueError:
        return False


def intercept(rig: Rig, ws: Workstation, *, mount: bool) -> str:
    """A global intercept of echo (its volumes mounted when asked); the mount point or ""."""
    made = json.loads(
        ok(ws.kp(*rig.intercept_argv("--mount", "true" if mount else "false", "-o", "json")), ws)
    )
    wait_for("the intercept to take the traffic", lambda: rig.ask() == "workstation", timeout=30)
    point = str(made.get("mount_point", ""))
    if mount:
        assert point, made
        wait_for("the volumes to be mounted", lambda: mounted(ws, point), timeout=30)
    return point


def mounted(ws: Workstation, point: str) -> bool:
    pid = ws.userd_pid()
    if pid is None:
        return False
    mountinfo = Path(f"/proc/{pid}/mountinfo").read_text()
    return any(line.split(" ")[4] == point for line in mountinfo.splitlines())


def volumes_read(ws: Workstation, point: str) -> bool:
    """The app's ConfigMap-free volume list reads through the mount (in userd's mounts)."""
    pid = ws.userd_pid()
    if pid is None:
        return False
    listed = subprocess.run(
        ["nsenter", "-t", str(pid), "-m", "--", "timeout", "5", "ls", point],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    return listed.returncode == 0 and bool(listed.stdout.split())


def network_problem(ws: Workstation) -> str:
    result = ws.kp("status", "-o", "json")
    if result.returncode not in (0, 3):
        return f"status failed: {result.stderr.strip()}"
    connection = json.loads(result.stdout).get("connection") or {}
    return str(connection.get("network_problem", ""))


@contextlib.contextmanager
def frozen(pid: int, seconds: float) -> Iterator[None]:
    """SIGSTOP now; SIGCONT once `seconds` have passed since (or at once on a failure)."""
    os.kill(pid, signal.SIGSTOP)
    thawed_at = time.monotonic() + seconds
    try:
        yield
        remaining = thawed_at - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)  # the fault lasts this long; nothing is asserted after it
    finally:
        os.kill(pid, signal.SIGCONT)


def timed_status(ws: Workstation) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = ws.kp("status", timeout=60)
    took = time.monotonic() - started
    assert took < STATUS_BOUND, f"status took {took:.1f} s"
    return result, took


# --- the local daemons: SIGKILL or SIGSTOP in every state ---------------------------------


STATES = ("connecting", "connected", "intercepting", "mounting")


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("how", ["kill", "stop"])
@pytest.mark.parametrize("daemon", ["userd", "rootd"])
def test_a_local_daemon_killed_or_frozen(
    rig: Rig,
    cluster: Cluster,
    workstation: Workstation,
    request: pytest.FixtureRequest,
    before: MachineState,
    daemon: str,
    how: str,
    state: str,
) -> None:
    ws = workstation
    tracked = Tracked(ws)
    try:
        point = ""
        connecting: subprocess.Popen[str] | None = None
        if state == "connecting":
            # A manager of its own, so the connect spends seconds installing it.
            manager_namespace = str(request.getfixturevalue("manager_namespace"))
            connecting = subprocess.Popen(
                cluster.workstation_argv(
                    ws.kp_argv("connect", "--manager-namespace", manager_namespace)
                ),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )

            def installing() -> bool:
                found = cluster.kubectl(
                    "get", "deployment", "-n", manager_namespace, "--ignore-not-found", "-o", "name"
                )
                return (
                    bool(found.strip())
                    and ws.rootd_pid() is not None
                    and ws.userd_pid() is not None
                )

            wait_for("connect to be installing its manager", installing, timeout=60, interval=0.2)
        else:
            connect(rig, ws)
            if state in ("intercepting", "mounting"):
                point = intercept(rig, ws, mount=state == "mounting")
        tracked.look()
        pid = ws.userd_pid() if daemon == "userd" else ws.rootd_pid()
        assert pid is not None

        if how == "kill":
            os.kill(pid, signal.SIGKILL)  # this test's own daemon, by pid
            during, _ = timed_status(ws)
            if daemon == "rootd" and state != "connecting":
                # The guardian puts ws1 back at once; an intercept does not cross rootd.
                wait_for(
                    "ws1's resolv.conf restored",
                    lambda: WS_RESOLV_CONF.read_bytes() == before.resolv_conf,
                    timeout=5,
                    interval=0.1,
                )
                wait_for(
                    "the guardian to exit",
                    lambda: not tracked.left_named("guardian"),
                    timeout=5,
                    interval=0.1,
                )
                links = rig.cluster.on_workstation(["ip", "-o", "link"]).stdout
                assert "kp0" not in links
                problem = wait_for(
                    "userd to notice", lambda: network_problem(ws) or None, timeout=10
                )
                assert problem.startswith("the root daemon stopped"), problem
                if state != "connected":
                    assert rig.ask() == "workstation"
            if daemon == "userd":
                # rootd sees userd's socket refuse and ends the cluster network.
                wait_for(
                    "ws1's resolv.conf restored",
                    lambda: WS_RESOLV_CONF.read_bytes() == before.resolv_conf,
                    timeout=10,
                    interval=0.2,
                )
                # A killed daemon's socket refuses: status says it does not run.
                assert "User daemon:\n  Running: False" in during.stdout, during
                if point:
                    wait_for(
                        "sshfs to end with its userd",
                        lambda: not tracked.left_named("sshfs"),
                        timeout=10,
                    )
        else:
            with frozen(pid, STOP_SECONDS[daemon]):
                during, _ = timed_status(ws)
                if daemon == "userd":
                    assert "the user daemon does not answer" in one_line_failure(during)
                elif state != "connecting":
                    wait_for(
                        "userd to report the frozen root daemon",
                        lambda: network_problem(ws) != "",
                        timeout=15,
                    )

        if connecting is not None:
            out, err = connecting.communicate(timeout=240)
            print(f"the connect in flight: exit {connecting.returncode}: {err.strip()}")
            if connecting.returncode != 0:
                one_line_failure(subprocess.CompletedProcess([], connecting.returncode, out, err))

        if daemon == "rootd" and how == "stop" and state != "connecting":
            # Thawed with its network still up: userd sees it answer and needs nothing.
            wait_for(
                "the problem to clear by itself", lambda: network_problem(ws) == "", timeout=15
            )
        # Recovery: a connect gives a working session.
        if state == "connecting":
            ok(ws.kp("connect", "--manager-namespace", manager_namespace), ws)
        else:
            connect(rig, ws)
        wait_for("a Service to answer by name", lambda: service_answers(rig, ws), timeout=RECOVERY)
        wait_for("the session to be healthy", lambda: network_problem(ws) == "", timeout=30)
        if state in ("intercepting", "mounting"):
            if daemon == "userd" and how == "kill":
                # A new userd is a new session: the old one's intercept expired with it.
                wait_for("the app to answer", lambda: rig.ask() == "app", timeout=RECOVERY)
            else:
                wait_for(
                    "the intercept to take the traffic again",
                    lambda: rig.ask() == "workstation",
                    timeout=RECOVERY,
                )
        if point and not (daemon == "userd" and how == "kill"):
            wait_for("the volumes to read again", lambda: volumes_read(ws, point), timeout=RECOVERY)
        tracked.look()
        settle_and_check_clean(rig, ws, tracked, before)
    finally:
        for pid in tracked.pids:  # nothing stays frozen when a check failed
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        ws.kp("quit", timeout=60)


# --- the cluster's parts, during an intercept ----------------------------------------------


def echo_pod(rig: Rig) -> str:
    pods = rig.cluster.get("pods", "-n", rig.namespace, "-l", "app=echo")["items"]
    running = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert len(running) == 1, [p["metadata"]["name"] for p in running]
    return str(running[0]["metadata"]["name"])


@pytest.mark.parametrize("how", ["kill", "stop"])
@pytest.mark.parametrize("part", ["manager", "agent"])
def test_a_cluster_part_killed_or_frozen_during_an_intercept(
    rig: Rig, workstation: Workstation, before: MachineState, part: str, how: str
) -> None:
    """The killed process's container restarts in place; a frozen one is forgotten by its
    peers (past the session TTL) and arrives again once thawed. Either way the intercept
    takes the traffic again by itself, with no command from the user."""
    ws = workstation
    tracked = Tracked(ws)
    connect(rig, ws)
    intercept(rig, ws, mount=False)
    tracked.look()
    pid = manager_pid(rig.manager_namespace) if part == "manager" else agent_pid(echo_pod(rig))
    if how == "kill":
        os.kill(pid, signal.SIGKILL)  # the container's own process, found by its pod
    else:
        with frozen(pid, STOP_SECONDS[part]):
            during, _ = timed_status(ws)  # the local daemons answer all along
            assert during.returncode == 0, during.stderr
    started = time.monotonic()
    wait_for(
        "the intercept to take the traffic again",
        lambda: rig.ask() == "workstation",
        timeout=RECOVERY,
        interval=1,
    )
    took = time.monotonic() - started
    print(f"{part} {how}: the intercept took the traffic again after {took:.1f} s")
    wait_for("a Service to answer by name", lambda: service_answers(rig, ws), timeout=RECOVERY)
    settle_and_check_clean(rig, ws, tracked, before)


def test_loglevel_reaches_the_manager_and_its_agents(rig: Rig, workstation: Workstation) -> None:
    """`loglevel` sets every part's level (-r: the cluster's only), for a while."""
    ws = workstation
    connect(rig, ws)
    pod = echo_pod(rig)
    result = ws.kp("loglevel", "debug", "-r", "-d", "30")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Traffic manager and agents log level: debug for 30 s"

    def logged(namespace: str, target: str, text: str, *container: str) -> bool:
        logs = rig.cluster.kubectl("logs", "-n", namespace, target, *container, "--tail=200")
        return text in logs

    wait_for(
        "the manager's own change",
        lambda: logged(
            rig.manager_namespace,
            "deployment/kubepresence-manager",
            "log level debug for 30 s, for the manager and its agents",
        ),
        timeout=20,
    )
    wait_for(
        "the agent's change",
        lambda: logged(
            rig.namespace, f"pod/{pod}", "as the manager says", "-c", "kubepresence-agent"
        ),
        timeout=20,
    )
    assert "log level set to debug" not in ws.log("userd")  # -r: the cluster's only
    everything = ws.kp("loglevel", "info")
    assert everything.returncode == 0, everything.stderr
    assert everything.stdout.splitlines() == [
        "User daemon log level: info",
        "Root daemon log level: info",
        "Traffic manager and agents log level: info",
    ]


def test_a_cut_port_forward_is_made_again(
    rig: Rig, workstation: Workstation, before: MachineState
) -> None:
    """Every TCP connection from the workstation to the API server reset (what a flaky
    network or an API server restart does to the port-forward): userd opens it again and
    the session, its network and its intercept go on."""
    ws = workstation
    tracked = Tracked(ws)
    connect(rig, ws)
    intercept(rig, ws, mount=False)
    tracked.look()
    server = json.loads(ws.kp("config", "view", "-o", "json").stdout)["server"]
    host, port = server.removeprefix("https://").rsplit(":", 1)
    cut = rig.cluster.on_workstation(["ss", "-K", "-t", "dst", host, "dport", "=", f":{port}"])
    assert "ESTAB" in cut.stdout, cut.stdout  # something was cut
    wait_for(
        "the intercept to take the traffic again",
        lambda: rig.ask() == "workstation",
        timeout=RECOVERY,
        interval=1,
    )
    wait_for("a Service to answer by name", lambda: service_answers(rig, ws), timeout=RECOVERY)
    assert network_problem(ws) == ""
    assert any("port-forward" in e for e in ws.status()["connection"]["events"])  # type: ignore[index]
    settle_and_check_clean(rig, ws, tracked, before)


@contextlib.contextmanager
def webhook_unreachable(rig: Rig) -> Iterator[None]:
    """The API server sends the manager's webhook calls to a Service port nobody serves
    (they fail, and the webhook fails open); put back afterwards."""
    name = [f"mutatingwebhookconfiguration/{webhook_config_name(rig.manager_namespace)}"]
    port = rig.cluster.get(name[0])["webhooks"][0]["clientConfig"]["service"].get("port", 443)
    patch = [{"op": "replace", "path": "/webhooks/0/clientConfig/service/port", "value": 1}]
    rig.cluster.kubectl("patch", name[0], "--type=json", "-p", json.dumps(patch))
    try:
        yield
    finally:
        patch[0]["value"] = port
        rig.cluster.kubectl("patch", name[0], "--type=json", "-p", json.dumps(patch))


def test_an_unreachable_webhook_fails_the_intercept_and_puts_the_template_back(
    rig: Rig, workstation: Workstation, before: MachineState
) -> None:
    ws = workstation
    tracked = Tracked(ws)
    rig.cluster.deploy_echo("http", rig.namespace, name="plain", named_target_port=True)
    template = rig.pod_template("plain")
    connect(rig, ws)
    with webhook_unreachable(rig):
        started = time.monotonic()
        failed = ws.kp(
            "intercept", "plain", "--port", f"{LOCAL_PORT}:http", "-n", rig.namespace,
            "--mount", "false",
        )  # fmt: skip
        took = time.monotonic() - started
        line = one_line_failure(failed)
        assert failed.returncode == 4, line
        assert "webhook did not inject the agent" in line, line
        assert took < 60, f"the intercept failed only after {took:.0f} s"
        print(f"refused after {took:.1f} s: {line}")
    assert rig.pod_template("plain") == template
    assert ws.kp("list", "-n", rig.namespace, "-i", "-o", "json").stdout.count('"name"') == 0
    wait_for("plain to answer itself", lambda: rig.ask("plain") == "app", timeout=RECOVERY)
    rig.cluster.kubectl("delete", "deployment,service", "plain", "-n", rig.namespace)
    settle_and_check_clean(rig, ws, tracked, before)
