"""The main job (`./run demo`): the local cluster, used from the workstation.

Runs after `cluster up` (the nox session does that). It deploys the echo workload, shows
what a workstation sees of the cluster before kubepresence joins it, and what the
kubepresence CLI reports. As the connect and intercept issues land, this walk grows into
`kubepresence connect` + `curl http://echo.kubepresence-demo` + `kubepresence intercept`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "cluster"))

from kpcluster import kube, manifests
from kpcluster.harness import Cluster

NAMESPACE = "kubepresence-demo"


def step(title: str) -> None:
    print(f"\n\033[1m==> {title}\033[0m", flush=True)


def show(cluster: Cluster, argv: list[str], *, expect_failure: bool = False) -> None:
    print("workstation$ " + " ".join(argv), flush=True)
    result = cluster.on_workstation(argv, check=False, timeout=60)
    print((result.stdout + result.stderr).rstrip())
    if (result.returncode == 0) == expect_failure:
        sys.exit(f"demo: unexpected exit {result.returncode} from {' '.join(argv)}")


def main() -> int:
    cluster = Cluster()
    step("The cluster, seen from the workstation (a netns that reaches only the API server)")
    show(cluster, ["kubectl", "get", "nodes", "-o", "wide"])
    show(cluster, ["kubectl", "get", "pods", "-A"])

    step(f"An echo service in namespace {NAMESPACE}")
    cluster.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}])
    cluster.apply(manifests.echo("http", "echo", NAMESPACE, cluster.testapps_image))
    kube.wait_rollout("echo", NAMESPACE, timeout=120)
    echo = cluster.describe_echo("http", "echo", NAMESPACE)
    show(cluster, ["kubectl", "get", "svc,pods", "-n", NAMESPACE, "-o", "wide"])

    step("Without kubepresence the workstation cannot reach the service")
    url = f"http://{echo.service_ip}:{echo.service_port}/"
    show(cluster, ["curl", "-sS", "--max-time", "3", url], expect_failure=True)

    step("kubepresence on the workstation")
    cli = shutil.which("kubepresence")
    if cli is None:
        sys.exit("demo: the kubepresence CLI is not installed in this environment")
    show(cluster, [cli, "version"])
    show(cluster, [cli, "status"])
    show(cluster, [cli, "connect"], expect_failure=True)

    step("Next")
    print(
        f"The cluster stays up. Explore from the workstation with:\n"
        f"  python3 tests/cluster/cluster.py ws -- kubectl get all -n {NAMESPACE}\n"
        f"Tear it down with:  nox -s cluster -- down"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as error:
        sys.exit(f"demo: {error}")
