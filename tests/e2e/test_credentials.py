"""The kubeconfig user forms real clusters hand out, on the real cluster (issue 15, item 2).

Scenarios, each a whole session from the workstation (connect, a Service by name, a global
intercept answered by a workstation server, quit):
- a client certificate and key in files next to the kubeconfig (relative paths), with the
  cluster's CA as a file: the form `kubeadm` and many installers write;
- a `tokenFile` holding a ServiceAccount token minted by the TokenRequest API;
- an `exec` credential plugin (client.authentication.k8s.io/v1) that mints a short-lived
  token per call, each bound to its own Secret, and revokes the previous token by deleting
  that Secret, declaring an `expirationTimestamp` of a few seconds: the plugin is called
  again for each lifetime (its calls are counted), the session, the intercept and API calls
  keep working across several expiries, and after the traffic manager's pod is deleted the
  port-forward reconnects with a fresh token (the old one is revoked by then);
- a plugin that is not installed: `connect` prints its installHint in one line, exit 3;
- a kubeconfig that is not YAML: one line naming the file, exit 3, no daemon left serving a
  half-made session.
"""

from __future__ import annotations

import base64
import json
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kpcluster import layout
from kpcluster.commands import wait_for
from kpcluster.harness import Cluster
from workstation_cli import Workstation, delete_manager_pods, uninstall_manager
from workstation_servers import PROGRAMS, answering_server, get_from_pod

LOCAL_PORT = 8091
PLUGIN_LIFETIME = 8  # seconds the plugin says each token lives


@pytest.fixture(scope="module")
def shared_manager(cluster: Cluster) -> Iterator[str]:
    """One traffic manager for the module's sessions (installed by the first connect)."""
    name = f"kp-mgr-{secrets.token_hex(3)}"
    yield name
    uninstall_manager(cluster, name)


@pytest.fixture(scope="module")
def app(cluster: Cluster) -> Iterator[tuple[str, str]]:
    """The echo workload to intercept and a client pod that calls it: (namespace, pod)."""
    with cluster.namespace("creds") as namespace:
        cluster.deploy_echo("http", namespace, named_target_port=True)
        yield namespace, cluster.client_pod(namespace)


@pytest.fixture(scope="module")
def service_account(cluster: Cluster, app: tuple[str, str]) -> Iterator[str]:
    """A ServiceAccount with cluster-admin, as a CI robot or an SSO role would have."""
    namespace, _ = app
    name = "kp-e2e-robot"
    binding = f"kp-e2e-robot-{namespace}"
    cluster.kubectl("create", "serviceaccount", name, "-n", namespace)
    cluster.kubectl(
        "create",
        "clusterrolebinding",
        binding,
        "--clusterrole=cluster-admin",
        f"--serviceaccount={namespace}:{name}",
    )
    yield name
    cluster.kubectl("delete", "clusterrolebinding", binding, "--ignore-not-found")


@pytest.fixture
def local_server(cluster: Cluster) -> Iterator[None]:
    with answering_server(cluster, LOCAL_PORT, "workstation answers {path}"):
        yield


def admin_kubeconfig() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(layout.WORKSTATION_KUBECONFIG.read_text())
    return loaded


def kubeconfig_with_user(path: Path, user: dict[str, Any]) -> Path:
    config = admin_kubeconfig()
    config["users"] = [{"name": "robot", "user": user}]
    config["contexts"][0]["context"]["user"] = "robot"
    path.write_text(yaml.safe_dump(config))
    return path


def use_kubeconfig(ws: Workstation, path: Path) -> None:
    ws.env["KUBECONFIG"] = str(path)


def mint_token(cluster: Cluster, namespace: str, account: str) -> str:
    return cluster.kubectl("create", "token", account, "-n", namespace, "--duration=1h").strip()


def call_echo(cluster: Cluster, namespace: str, pod: str, path: str) -> str:
    answer = get_from_pod(cluster, namespace, pod, f"http://echo.{namespace}{path}")
    return str(answer["body"]) if "body" in answer else f"no answer: {answer}"


def whole_session(cluster: Cluster, ws: Workstation, manager: str, app: tuple[str, str]) -> None:
    """connect, a Service by name from the workstation, a global intercept, leave."""
    namespace, pod = app
    connected = ws.kp("connect", "--manager-namespace", manager)
    assert connected.returncode == 0, connected.stderr + ws.logs()
    outbound = ws.run("curl", "-sS", "--max-time", "20", f"http://echo.{namespace}/out")
    assert outbound.returncode == 0, outbound.stderr + ws.logs()
    assert json.loads(outbound.stdout)["pod"].startswith("echo-")
    intercepted = ws.kp("intercept", "echo", "--port", f"{LOCAL_PORT}:http", "-n", namespace)
    assert intercepted.returncode == 0, intercepted.stderr + ws.logs()
    assert call_echo(cluster, namespace, pod, "/in") == "workstation answers /in"
    left = ws.kp("leave", "echo")
    assert left.returncode == 0, left.stderr


def test_client_certificate_files(
    cluster: Cluster,
    workstation: Workstation,
    shared_manager: str,
    app: tuple[str, str],
    local_server: None,
    tmp_path: Path,
) -> None:
    config = admin_kubeconfig()
    user = config["users"][0]["user"]
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "dev.crt").write_bytes(base64.b64decode(user["client-certificate-data"]))
    (tmp_path / "creds" / "dev.key").write_bytes(base64.b64decode(user["client-key-data"]))
    (tmp_path / "creds" / "ca.crt").write_bytes(
        base64.b64decode(config["clusters"][0]["cluster"].pop("certificate-authority-data"))
    )
    config["clusters"][0]["cluster"]["certificate-authority"] = "creds/ca.crt"
    config["users"][0]["user"] = {
        "client-certificate": "creds/dev.crt",
        "client-key": "creds/dev.key",
    }
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(config))
    use_kubeconfig(workstation, path)
    whole_session(cluster, workstation, shared_manager, app)


def test_token_file_from_the_token_request_api(
    cluster: Cluster,
    workstation: Workstation,
    shared_manager: str,
    app: tuple[str, str],
    service_account: str,
    local_server: None,
    tmp_path: Path,
) -> None:
    namespace, _ = app
    (tmp_path / "token").write_text(mint_token(cluster, namespace, service_account) + "\n")
    use_kubeconfig(workstation, kubeconfig_with_user(tmp_path / "config", {"tokenFile": "token"}))
    whole_session(cluster, workstation, shared_manager, app)


PLUGIN = (PROGRAMS / "credential_plugin.py").read_text()


def plugin_calls(path: Path) -> list[float]:
    """The expiry each plugin call declared, in call order."""
    if not path.exists():
        return []
    return [float(line.split()[1]) for line in path.read_text().splitlines()]


def wait_until_expired(calls: Path) -> None:
    """Until the plugin's last token has expired (real time must pass for that)."""
    wait_for(
        "the plugin's last token to expire",
        lambda: time.time() > plugin_calls(calls)[-1],
        timeout=PLUGIN_LIFETIME + 5,
        interval=0.5,
    )


def test_exec_plugin_with_short_lived_revoked_tokens(
    cluster: Cluster,
    workstation: Workstation,
    shared_manager: str,
    app: tuple[str, str],
    service_account: str,
    local_server: None,
    tmp_path: Path,
) -> None:
    namespace, pod = app
    plugin = tmp_path / "mint-token"
    plugin.write_text(f"#!{sys.executable}\n{PLUGIN}")
    plugin.chmod(0o755)
    calls = tmp_path / "calls"
    env = {
        "KUBECTL": str(layout.kubectl()),
        "ADMIN": str(layout.ADMIN_KUBECONFIG),
        "NS": namespace,
        "ACCOUNT": service_account,
        "CALLS": str(calls),
        "LIFETIME": str(PLUGIN_LIFETIME),
    }
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": str(plugin),
            "env": [{"name": k, "value": v} for k, v in env.items()],
            "interactiveMode": "Never",
        }
    }
    use_kubeconfig(workstation, kubeconfig_with_user(tmp_path / "config", user))
    whole_session(cluster, workstation, shared_manager, app)
    intercepted = workstation.kp(
        "intercept", "echo", "--port", f"{LOCAL_PORT}:http", "-n", namespace
    )
    assert intercepted.returncode == 0, intercepted.stderr + workstation.logs()

    # Several lifetimes: each time the last token has expired, API calls (list) still work,
    # with a new token, and the intercept still brings cluster traffic to the workstation.
    for round_ in range(3):
        expiries = plugin_calls(calls)
        wait_until_expired(calls)
        listed = workstation.kp("list", "-n", namespace, "-o", "json")
        assert listed.returncode == 0, listed.stderr + workstation.logs()
        workloads = {w["name"]: w for w in json.loads(listed.stdout)["workloads"]}
        assert [i["state"] for i in workloads["echo"]["intercepts"]] == ["active"]
        assert len(plugin_calls(calls)) > len(expiries), f"round {round_}: no new token"
        answer = call_echo(cluster, namespace, pod, f"/round-{round_}")
        assert answer == f"workstation answers /round-{round_}"

    # The port-forward to a replaced manager pod opens with a fresh token (the old revoked).
    wait_until_expired(calls)
    before_restart = len(plugin_calls(calls))
    delete_manager_pods(cluster, shared_manager)

    def outbound_works() -> bool:
        result = workstation.run("curl", "-sS", "--max-time", "5", f"http://echo.{namespace}/x")
        return result.returncode == 0 and "echo-" in result.stdout

    wait_for("outbound traffic after the manager's restart", outbound_works, timeout=90)
    assert len(plugin_calls(calls)) > before_restart
    assert len(plugin_calls(calls)) >= 5
    connection = workstation.status()["connection"]
    assert connection["state"] == "connected", connection  # type: ignore[index]


def test_missing_plugin_shows_its_install_hint(workstation: Workstation, tmp_path: Path) -> None:
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "kubepresence-e2e-no-such-plugin",
            "installHint": "get it from your cluster admin:\n  sudo apt-get install such-plugin",
        }
    }
    use_kubeconfig(workstation, kubeconfig_with_user(tmp_path / "config", user))
    result = workstation.kp("connect")
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        "kubepresence: the exec plugin 'kubepresence-e2e-no-such-plugin' of user 'robot'"
        " cannot be run (No such file or directory): get it from your cluster admin:"
        " sudo apt-get install such-plugin"
    ]


def test_kubeconfig_that_is_not_yaml(workstation: Workstation, tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("apiVersion: v1\nclusters: [\n  - {name: x\n")
    use_kubeconfig(workstation, path)
    result = workstation.kp("connect")
    assert result.returncode == 3, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"kubepresence: the kubeconfig {path} is not valid YAML: ")
    assert "line " in lines[0]
    assert workstation.status()["connection"] == {"state": "disconnected"}
