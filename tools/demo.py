"""The main job (`./run demo`): kubepresence on the project's local cluster.

Runs after `cluster up` and `cluster images` (the nox session does both). On the
"workstation" — a network namespace that reaches only the API server — it connects,
reaches a cluster service by name, intercepts it so that a request made inside the
cluster is answered by a server on the workstation, leaves, intercepts it again for the
requests with one header only (a personal intercept), and quits.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "cluster"))

from kpcluster import kube, layout, manifests
from kpcluster.harness import Cluster

NAMESPACE = "kubepresence-demo"
LOCAL_PORT = 8080
LOCAL_SERVER = textwrap.dedent(
    f"""
    import http.server
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"Hello from the workstation! You asked for " + self.path.encode() + b"\\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    http.server.ThreadingHTTPServer(("127.0.0.1", {LOCAL_PORT}), Handler).serve_forever()
    """
)


def step(title: str) -> None:
    print(f"\n\033[1m==> {title}\033[0m", flush=True)


class Demo:
    def __init__(self, cluster: Cluster, home: Path) -> None:
        self.cluster = cluster
        bindir = Path(sys.executable).parent
        self.env = [
            f"XDG_RUNTIME_DIR={home / 'run'}",
            f"XDG_STATE_HOME={home / 'state'}",
            f"HOME={home}",
            f"KUBECONFIG={layout.WORKSTATION_KUBECONFIG}",
            f"PATH={bindir}:{kube.kubectl_env(layout.WORKSTATION_KUBECONFIG)['PATH']}",
        ]

    def workstation(
        self, *argv: str, expect_failure: bool = False, timeout: float = 240, check: bool = True
    ) -> str:
        print("workstation$ " + " ".join(argv), flush=True)
        result = self.cluster.on_workstation(
            ["env", *self.env, *argv], check=False, timeout=timeout
        )
        text = (result.stdout + result.stderr).rstrip()
        print(text)
        if check and (result.returncode == 0) == expect_failure:
            sys.exit(f"demo: unexpected exit {result.returncode} from {' '.join(argv)}")
        return text

    def in_cluster(self, pod: str, url: str, headers: dict[str, str] | None = None) -> None:
        shown = f", headers={headers!r}" if headers else ""
        print(f"pod {pod}$ python3 -c 'urlopen({url!r}{shown})'", flush=True)
        code = (
            "import urllib.request; "
            f"request = urllib.request.Request({url!r}, headers={headers or {}!r}); "
            "print(urllib.request.urlopen(request, timeout=20).read().decode())"
        )
        result = self.cluster.exec_in_pod(NAMESPACE, pod, ["python3", "-c", code], timeout=60)
        print(result.stdout.rstrip())


def main() -> int:
    cluster = Cluster()
    with tempfile.TemporaryDirectory(prefix="kubepresence-demo-") as tmp:
        demo = Demo(cluster, Path(tmp))
        step("The cluster, seen from the workstation (it reaches only the API server)")
        demo.workstation("kubectl", "get", "nodes")

        step(f"An echo service in namespace {NAMESPACE}, and a client pod next to it")
        cluster.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}])
        cluster.apply(
            manifests.echo(
                "http", "echo", NAMESPACE, cluster.testapps_image, named_target_port=True
            )
        )
        kube.wait_rollout("echo", NAMESPACE, timeout=120)
        client = cluster.client_pod(NAMESPACE)
        demo.workstation("kubectl", "get", "svc,pods", "-n", NAMESPACE)

        step("Without kubepresence the workstation cannot reach it")
        demo.workstation(
            "curl", "-sS", "--max-time", "3", f"http://echo.{NAMESPACE}/", expect_failure=True
        )

        step("kubepresence connect: the workstation joins the cluster network")
        try:
            demo.workstation("kubepresence", "connect", "-n", NAMESPACE)
            demo.workstation("kubepresence", "status")
            demo.workstation("curl", "-sS", "--max-time", "10", f"http://echo.{NAMESPACE}/hello")
            demo.workstation("curl", "-sS", "--max-time", "10", "http://echo/short-name")

            step("kubepresence intercept: the cluster's requests to echo reach the workstation")
            server = cluster.start_on_workstation([sys.executable, "-c", LOCAL_SERVER])
            try:
                time.sleep(0.5)
                demo.workstation(
                    "kubepresence", "intercept", "echo", "--port", f"{LOCAL_PORT}:http"
                )
                demo.workstation("kubepresence", "list")
                demo.in_cluster(client, f"http://echo.{NAMESPACE}/from-inside-the-cluster")

                step("kubepresence leave: the cluster answers again")
                demo.workstation("kubepresence", "leave", "echo")
                demo.in_cluster(client, f"http://echo.{NAMESPACE}/after-leave")

                step("A personal intercept: only requests with your header come to you")
                demo.workstation(
                    "kubepresence", "intercept", "echo", "--port", f"{LOCAL_PORT}:http",
                    "--http-header", "x-dev=me", "--mount=false",
                )  # fmt: skip
                demo.in_cluster(client, f"http://echo.{NAMESPACE}/mine", {"x-dev": "me"})
                demo.in_cluster(client, f"http://echo.{NAMESPACE}/everyone-else")
                demo.workstation("kubepresence", "leave", "echo")
            finally:
                server.terminate()
                server.wait(10)
        finally:
            step("kubepresence quit: the workstation is as it was")
            demo.workstation("kubepresence", "uninstall", "--all-agents", check=False)
            demo.workstation("kubepresence", "helm", "uninstall", check=False)
            demo.workstation("kubepresence", "quit", check=False)

    step("Next")
    print(
        "The cluster stays up. Explore from the workstation with\n"
        "  python3 tests/cluster/cluster.py ws -- bash\n"
        "and tear it down with:  nox -s cluster -- down"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as error:
        sys.exit(f"demo: {error}")
