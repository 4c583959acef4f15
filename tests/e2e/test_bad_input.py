"""The bad-input suite (issue 14): every command's flags with invalid values and every file
argument missing, unwritable or of the wrong kind, on the real cluster.

Each case asserts exactly one line on stderr (no traceback, nothing on stdout), the exit
code of its category (2 bad input, 3 kubeconfig or machine, 4 cluster), and that nothing
was applied:
- `connect` (from a workstation that is not connected): no traffic manager installed in
  the namespace it names, ws1's resolver, links, routes and rules as they were;
- every other command (from a connected session): no intercept, the workload's pod
  template untouched (no agent asked for), ws1 as it was, and no file or directory made
  where a bad argument pointed.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kpcluster.harness import Cluster
from workstation_cli import MachineState, Session, Workstation, machine_state


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    code: int
    says: str  # a part of the one line
    creates: str = ""  # a path (with {tmp}) that must not exist afterwards

    def args(self, tmp: Path) -> list[str]:
        return [a.replace("{tmp}", str(tmp)) for a in self.argv]


def check_one_line(result: subprocess.CompletedProcess[str], case: Case) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"{case.argv}: {result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout == "", f"{case.argv}: stdout {result.stdout!r}"
    assert result.returncode == case.code, f"{case.argv}: exit {result.returncode}: {lines[0]}"
    assert case.says in lines[0], f"{case.argv}: {lines[0]}"
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Things a bad file argument can point at: a directory, a non-empty directory, a
    file that is not YAML."""
    tmp = tmp_path_factory.mktemp("bad-input")
    (tmp / "a-dir").mkdir()
    (tmp / "full-dir").mkdir()
    (tmp / "full-dir" / "x").write_text("x")
    (tmp / "a-file").write_text("not a directory\n")
    (tmp / "not-yaml").write_text("{ this: is: not yaml\n")
    return tmp


# --- connect, from a workstation that is not connected ------------------------------------

CONNECT_CASES = [
    Case(("--kubeconfig", "/no/such/kubeconfig"), 3, "/no/such/kubeconfig"),
    Case(("--kubeconfig", "{tmp}/a-dir"), 3, "a-dir"),
    Case(("--kubeconfig", "{tmp}/not-yaml"), 3, "not-yaml"),
    Case(("--context", "no-such-context"), 3, "no-such-context"),
    Case(("-n", "no-such-namespace"), 2, "no-such-namespace"),
    Case(("--mapped-namespaces", "no-such-namespace"), 2, "no-such-namespace"),
    Case(("--manager-namespace", "Not_A_Name"), 2, "Not_A_Name"),
    Case(("--also-proxy", "10.1.2"), 2, "10.1.2"),
    Case(("--also-proxy", "10.0.0.0/33"), 2, "10.0.0.0/33"),
    Case(("--never-proxy", "everything"), 2, "everything"),
    Case(("-o", "xml"), 2, "'xml' is not one of"),
    Case(("--no-such-flag",), 2, "No such option"),
]


def test_connect_with_bad_input_applies_nothing(
    cluster: Cluster, workstation: Workstation, files: Path
) -> None:
    manager_namespace = f"kp-mgr-{secrets.token_hex(3)}"
    before = machine_state(cluster)
    failures = []
    for case in CONNECT_CASES:
        argv = case.args(files)
        if "--manager-namespace" not in argv:
            argv += ["--manager-namespace", manager_namespace]
        try:
            check_one_line(workstation.kp("connect", *argv), case)
            assert machine_state(cluster) == before, case.argv
            found = cluster.kubectl("get", "namespace", manager_namespace, "--ignore-not-found")
            assert not found.strip(), f"{case.argv} installed a manager"
        except AssertionError as failure:
            failures.append(str(failure).splitlines()[0][:300])
    assert not failures, "\n".join(failures)


# --- everything else, from a connected session ----------------------------------------------


@pytest.fixture(scope="module")
def workload(cluster: Cluster, session: Session) -> Iterator[str]:
    """A namespace with an echo Deployment that no one has intercepted."""
    with cluster.namespace("bad-input") as namespace:
        cluster.deploy_echo("http", namespace, named_target_port=True)
        yield namespace


PORT = "8097:http"
INTERCEPT = ("intercept", "echo", "--port", PORT, "-n", "{ns}")
SESSION_CASES = [
    Case(("intercept", "nosuch", "--port", PORT, "-n", "{ns}"), 2, "nosuch"),
    Case(("intercept", "echo", "-n", "{ns}"), 2, "Missing option '--port'"),
    Case(("intercept", "echo", "--port", "abc", "-n", "{ns}"), 2, "abc"),
    Case(("intercept", "echo", "--port", "0:http", "-n", "{ns}"), 2, "0"),
    Case(("intercept", "echo", "--port", "70000:http", "-n", "{ns}"), 2, "70000"),
    Case(("intercept", "echo", "--port", "8097:nosuch", "-n", "{ns}"), 2, "nosuch"),
    Case(("intercept", "echo", "--port", "8097:9999", "-n", "{ns}"), 2, "9999"),
    Case(("intercept", "echo", "--port", PORT, "-n", "no-such-namespace"), 2, "no-such-namespace"),
    Case((*INTERCEPT, "--service", "nosuch"), 2, "nosuch"),
    Case((*INTERCEPT, "--name", "Not A Name"), 2, "Not A Name"),
    Case((*INTERCEPT, "--address", "not an address"), 2, "not an address"),
    Case((*INTERCEPT, "--env-file", "/no/such/dir/app.env"), 2, "/no/such/dir", "/no/such/dir"),
    Case((*INTERCEPT, "--env-file", "{tmp}/a-dir"), 2, "a-dir"),
    Case((*INTERCEPT, "--env-file", "/proc/app.env"), 2, "/proc", "/proc/app.env"),
    Case(
        (*INTERCEPT, "--env-file", "{tmp}/app.env", "--env-syntax", "nosuch"),
        2,
        "nosuch",
        "{tmp}/app.env",
    ),
    Case((*INTERCEPT, "--env-json", "/no/such/dir/app.json"), 2, "/no/such/dir"),
    Case((*INTERCEPT, "--env-json", "{tmp}/a-dir"), 2, "a-dir"),
    Case((*INTERCEPT, "--http-header", "no-value"), 2, "no-value"),
    Case((*INTERCEPT, "--http-header", "=x"), 2, "=x"),
    Case((*INTERCEPT, "--http-path-regex", "("), 2, "("),
    Case((*INTERCEPT, "--http-method", "G E T"), 2, "G E T"),
    Case(
        (*INTERCEPT, "--preview-url", "--ingress-host", "web", "--ingress-port", "70000"),
        2,
        "70000",
    ),
    Case((*INTERCEPT, "--ingress-port", "abc"), 2, "'--ingress-port'"),
    Case((*INTERCEPT, "--mount", "{tmp}/a-file"), 2, "a-file"),
    Case((*INTERCEPT, "--mount", "{tmp}/full-dir"), 2, "full-dir"),
    Case((*INTERCEPT, "--mount", "/proc/volumes"), 2, "/proc/volumes", "/proc/volumes"),
    Case((*INTERCEPT, "-o", "xml"), 2, "'xml' is not one of"),
    Case(("leave", "nosuch"), 2, "nosuch"),
    Case(("list", "-n", "no-such-namespace"), 2, "no-such-namespace"),
    Case(("list", "-o", "xml"), 2, "'xml' is not one of"),
    Case(("uninstall", "nosuch", "-n", "{ns}"), 2, "nosuch"),
    Case(("uninstall", "-n", "{ns}"), 2, "--all-agents"),
    Case(("loglevel", "loud"), 2, "loud"),
    Case(("loglevel", "debug", "-d", "-1"), 2, "'--duration'"),
    Case(("loglevel", "debug", "-l", "-r"), 2, "--local-only"),
    Case(("gather-logs", "-f", "/no/such/dir/logs.zip"), 2, "/no/such/dir", "/no/such/dir"),
    Case(("gather-logs", "-f", "{tmp}/a-dir"), 2, "a-dir"),
    Case(("status", "-o", "xml"), 2, "'xml' is not one of"),
    Case(("version", "-o", "xml"), 2, "'xml' is not one of"),
    Case(("config", "view", "--kubeconfig", "/no/such/kubeconfig"), 3, "/no/such/kubeconfig"),
    Case(("helm", "install", "--manager-namespace", "Not_A_Name"), 2, "Not_A_Name"),
    Case(("helm", "upgrade", "--manager-namespace", "no-such-namespace"), 2, "no-such-namespace"),
    Case(("helm", "uninstall", "--manager-namespace", "no-such-namespace"), 2, "no-such-namespace"),
    Case(("nosuch",), 2, "No such command"),
]


def test_every_command_with_bad_input_applies_nothing(
    cluster: Cluster, session: Session, workload: str, files: Path
) -> None:
    ws = session.ws
    template = cluster.get("deployment", "echo", "-n", workload)["spec"]["template"]
    before: MachineState = machine_state(cluster)
    failures = []
    for case in SESSION_CASES:
        try:
            check_applied_nothing(cluster, ws, case, files, workload, template, before)
        except AssertionError as failure:
            failures.append(str(failure).splitlines()[0][:300])
            leave_all(ws, workload)  # so the next case starts clean
    assert not failures, "\n".join(failures)


def leave_all(ws: Workstation, namespace: str) -> None:
    listed = ws.kp("list", "-n", namespace, "-o", "json")
    for found in json.loads(listed.stdout or '{"workloads": []}')["workloads"]:
        for intercept in found["intercepts"]:
            ws.kp("leave", intercept["name"])


def check_applied_nothing(
    cluster: Cluster,
    ws: Workstation,
    case: Case,
    files: Path,
    workload: str,
    template: object,
    before: MachineState,
) -> None:
    argv = [a.replace("{ns}", workload) for a in case.args(files)]
    check_one_line(ws.kp(*argv), case)
    if case.creates:
        created = Path(case.creates.replace("{tmp}", str(files)))
        assert not created.exists(), f"{case.argv} made {created}"
    listed = ws.kp("list", "-n", workload, "-o", "json")
    assert listed.returncode == 0, listed.stderr
    for found in json.loads(listed.stdout)["workloads"]:
        assert not found["intercepts"], f"{case.argv} left {found}"
    now = cluster.get("deployment", "echo", "-n", workload)["spec"]["template"]
    assert now == template, f"{case.argv} changed the pod template: {json.dumps(now)[:200]}"
    assert machine_state(cluster) == before, case.argv
