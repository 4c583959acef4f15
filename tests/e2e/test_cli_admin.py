"""The CLI's administrative commands on the real cluster, run from the workstation.

Scenarios:
- `helm install` installs the traffic manager into a namespace, `helm install` again is a
  no-op, `helm upgrade` of a namespace without a manager is refused in one line, and
  `helm uninstall` removes it (its namespace and cluster-scoped objects go too);
- after `connect`, `version` names the manager's version and `list` shows the namespace's
  workloads with their agent state;
- `gather-logs` writes one archive with the workstation daemons' logs and the traffic
  manager's pod log.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from kpcluster.harness import Cluster
from workstation_cli import Workstation


def test_helm_install_upgrade_uninstall(
    cluster: Cluster, workstation: Workstation, manager_namespace: str
) -> None:
    installed = workstation.kp("helm", "install", "--manager-namespace", manager_namespace)
    assert installed.returncode == 0, installed.stderr + workstation.log("userd")
    assert f"in {manager_namespace}: installed" in installed.stdout
    again = workstation.kp("helm", "install", "--manager-namespace", manager_namespace)
    assert again.returncode == 0, again.stderr
    assert "unchanged" in again.stdout
    missing = workstation.kp("helm", "upgrade", "--manager-namespace", "kp-nothing-here")
    assert missing.returncode == 2
    assert missing.stderr.strip().endswith("use 'kubepresence helm install'")
    removed = workstation.kp("helm", "uninstall", "--manager-namespace", manager_namespace)
    assert removed.returncode == 0, removed.stderr
    assert f"removed from {manager_namespace}" in removed.stdout
    leftovers = cluster.kubectl(
        "get", "clusterroles,clusterrolebindings,mutatingwebhookconfigurations", "-o", "name"
    )
    assert manager_namespace not in leftovers


def test_version_list_and_gather_logs(
    cluster: Cluster,
    namespace: str,
    workstation: Workstation,
    manager_namespace: str,
    tmp_path: Path,
) -> None:
    cluster.deploy_echo("http", namespace, named_target_port=True)
    connected = workstation.kp("connect", "--manager-namespace", manager_namespace, "-n", namespace)
    assert connected.returncode == 0, connected.stderr
    # Deployed after connect installed the manager, so its webhook injects the agent.
    cluster.deploy_echo(
        "tcp",
        namespace,
        pod_annotations={
            "kubepresence.io/inject-traffic-agent": "enabled",
            "kubepresence.io/inject-numeric-ports": "9000",
        },
    )

    version = json.loads(workstation.kp("version", "-o", "json").stdout)
    assert version["traffic_manager"] == version["client"]

    listed = workstation.kp("list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    workloads = {w["name"]: w for w in json.loads(listed.stdout)["workloads"]}
    assert workloads["echo"]["agent_installed"] is False
    assert workloads["echo"]["kind"] == "Deployment"
    assert workloads["tcp-echo"]["agent_installed"] is True
    assert workloads["echo"]["intercepts"] == []

    archive = tmp_path / "logs.zip"
    gathered = workstation.kp("gather-logs", "--output-file", str(archive))
    assert gathered.returncode == 0, gathered.stderr
    with zipfile.ZipFile(archive) as zipped:
        names = zipped.namelist()
        assert "workstation/userd.log" in names
        manager_logs = [n for n in names if n.startswith(f"cluster/{manager_namespace}/")]
        assert manager_logs, names
        assert b"client" in zipped.read(manager_logs[0])
        assert any(n.endswith("/kubepresence-agent.log") for n in names), names
