"""Installing the traffic manager: the Helm chart, and the same objects built in Python.

Scenarios:
- `helm template` of deploy/helm/kubepresence renders exactly the objects that
  `manager_objects` builds, object by object, for the default values, for namespace-scoped
  RBAC, and for the webhook with a custom registry, tag, pull policy, image pull secrets,
  log level, session TTL and resources (Helm's bookkeeping labels aside; the Namespace is Helm's
  `--create-namespace`, the builder makes it itself).
- `helm install` into a fresh namespace, with the default values, with the webhook and with
  namespace-scoped RBAC: the manager Deployment becomes Available (the manager runs as uid
  1000 and discovers the cluster network with only the RBAC the chart grants); with the
  webhook, the configuration is registered and the manager writes its CA into it;
  `helm uninstall` removes every object, the cluster-scoped ones and the Roles in other
  namespaces included.
- From the workstation, the user daemon's `ensure_manager` installs into a namespace that
  does not exist yet: it becomes Available and the manager answers Version through a
  port-forward; running it again writes nothing ("unchanged", every resourceVersion
  kept); a changed log level is applied in place to the same Deployment and the new pod
  answers; a resource limit dropped from the settings is dropped from the Deployment; a
  manager image that is not present fails fast, naming the image; a pod that cannot be
  scheduled fails after the wait with its phase and last event; a new
  version (an image tagged for the test) is upgraded in place and `find_manager` reports
  it; `uninstall_manager` leaves nothing behind, cluster-scoped objects and namespace
  included. With namespace-scoped RBAC and the webhook, the Roles land in the listed
  namespaces and the manager writes its CA into the webhook configuration, and its
  watches (agent pods, workloads per listed namespace; nodes) list without a refusal;
  re-running is
  still "unchanged" and an upgrade keeps the CA; switching to cluster-wide RBAC without
  the webhook removes the Roles and the configuration; uninstall removes the Roles again
  and leaves the listed namespace alone.
- A user who may only read cannot install: the error names the refused verb and resource.
- `ensure_manager` leaves a Helm-installed manager to Helm: same version is "unchanged",
  another version is refused with a hint to upgrade it with helm; `uninstall_manager`
  refuses it too.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kpcluster import kube, layout, lifecycle
from kpcluster.commands import ClusterError, run, wait_for
from kpcluster.harness import Cluster
from workstation_servers import PROGRAMS

from kubepresence.userd.core.manifests import ManagerInstall, Resources, manager_objects
from kubepresence.userd.k8s.installing import Ref

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "kubepresence"
MANAGER = "kubepresence-manager"
SELECTOR = "app.kubernetes.io/name=kubepresence-manager"
TEST_TAG = "0.0.1-e2e"

# --- helpers -------------------------------------------------------------------------------


def helm(*args: str, home: Path, timeout: float = 180) -> str:
    env = {
        **os.environ,
        "KUBECONFIG": str(layout.ADMIN_KUBECONFIG),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    return run([layout.binary("helm"), *args], env=env, timeout=timeout).stdout


def fresh_name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def key(obj: dict[str, Any]) -> tuple[str, str | None, str]:
    meta = obj["metadata"]
    return (obj["kind"], meta.get("namespace"), meta["name"])


def normalised(obj: dict[str, Any]) -> dict[str, Any]:
    """Helm's bookkeeping labels out; who installed it is the one allowed difference."""
    out = copy.deepcopy(obj)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            labels = (node.get("metadata") or {}).get("labels")
            if isinstance(labels, dict):
                labels.pop("helm.sh/chart", None)
                if "app.kubernetes.io/managed-by" in labels:
                    labels["app.kubernetes.io/managed-by"] = "<installer>"
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(out)
    return out


def cluster_scoped_names(ns: str) -> list[str]:
    return [
        f"clusterrole/kubepresence-manager-{ns}",
        f"clusterrolebinding/kubepresence-manager-{ns}",
        f"mutatingwebhookconfiguration/kubepresence-agent-injector-{ns}",
    ]


def existing(cluster: Cluster, *names: str, namespace: str | None = None) -> list[str]:
    where = ["-n", namespace] if namespace else []
    out = cluster.kubectl("get", *names, *where, "--ignore-not-found", "-o", "name")
    return out.split()


def remove_install(cluster: Cluster, ns: str, *role_namespaces: str) -> None:
    """Cleanup whatever a test left: cluster-scoped objects first, then the namespace."""
    cluster.kubectl("delete", *cluster_scoped_names(ns), "--ignore-not-found", "--wait=false")
    for other in role_namespaces:
        cluster.kubectl(
            "delete",
            f"role/kubepresence-manager-{ns}",
            f"rolebinding/kubepresence-manager-{ns}",
            "-n",
            other,
            "--ignore-not-found",
        )
    cluster.kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=false")


@pytest.fixture(scope="module")
def manager_image(cluster: Cluster) -> str:
    """The manager image in the node's containerd (`nox -s e2e` imports this checkout's)."""
    image = f"localhost/{MANAGER}:{ManagerInstall().version}"
    listing = [*lifecycle.CTR, "-n", "k8s.io", "images", "ls", "-q", f"name=={image}"]
    if image not in run(listing).stdout.split():
        run([sys.executable, layout.CLUSTER_DIR / "cluster.py", "images"], timeout=900)
    assert image in run(listing).stdout.split()
    return image


@pytest.fixture
def helm_home(tmp_path: Path) -> Path:
    return tmp_path / "helm"


# --- helm template == manager_objects ------------------------------------------------------

TEMPLATE_CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "default": ({}, {}),
    "namespaced": (
        {"rbac": {"scope": "namespaced", "namespaces": ["apps", "team-b"]}},
        {"rbac_scope": "namespaced", "rbac_namespaces": ("apps", "team-b")},
    ),
    "webhook-and-settings": (
        {
            "image": {
                "registry": "registry.example/kp",
                "tag": "0.2.0",
                "pullPolicy": "Always",
                "pullSecrets": ["regcred", "mirror.pull"],
            },
            "logLevel": "debug",
            "sessionTTL": 30,
            "resources": {
                "requests": {"cpu": "100m", "memory": "128Mi"},
                "limits": {"cpu": "1", "memory": "512Mi"},
            },
            "webhook": {"enabled": True},
            "timeouts": {"dial": 3, "flowIdle": 120},
            "agent": {"resources": {"requests": {"cpu": "5m"}, "limits": {"memory": "96Mi"}}},
        },
        {
            "dial_timeout": 3,
            "flow_idle_timeout": 120,
            # Helm merges values into the defaults: the default request of 32Mi stays.
            "agent_resources": Resources("5m", "32Mi", "", "96Mi"),
            "registry": "registry.example/kp",
            "version": "0.2.0",
            "pull_policy": "Always",
            "image_pull_secrets": ("regcred", "mirror.pull"),
            "log_level": "debug",
            "session_ttl": 30,
            "resources": Resources("100m", "128Mi", "1", "512Mi"),
            "webhook_enabled": True,
        },
    ),
    "namespaced-webhook": (
        {"rbac": {"scope": "namespaced", "namespaces": ["apps"]}, "webhook": {"enabled": True}},
        {"rbac_scope": "namespaced", "rbac_namespaces": ("apps",), "webhook_enabled": True},
    ),
}


@pytest.mark.parametrize("case", list(TEMPLATE_CASES))
def test_helm_template_equals_the_python_builder(
    cluster: Cluster, helm_home: Path, tmp_path: Path, case: str
) -> None:
    values, install_kwargs = TEMPLATE_CASES[case]
    ns = "kp-compare"
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    rendered = helm(
        "template", "kp", str(CHART), "--namespace", ns, "-f", str(values_file), home=helm_home
    )
    from_helm = [doc for doc in yaml.safe_load_all(rendered) if doc]
    built = manager_objects(ManagerInstall(namespace=ns, **install_kwargs))
    assert key(built[0]) == ("Namespace", None, ns)
    from_python = built[1:]

    helm_objects = {key(o): normalised(o) for o in from_helm}
    python_objects = {key(o): normalised(o) for o in from_python}
    assert len(helm_objects) == len(from_helm)
    assert sorted(helm_objects, key=str) == sorted(python_objects, key=str)
    for k, obj in python_objects.items():
        assert helm_objects[k] == obj, f"{k} differs"
    # The comparison really saw Helm's labels (so the normalisation did something).
    labels = from_helm[0]["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "Helm"
    assert "helm.sh/chart" in labels


def test_helm_refuses_bad_values(cluster: Cluster, helm_home: Path) -> None:
    with pytest.raises(ClusterError, match="logLevel") as caught:
        helm("template", "kp", str(CHART), "--set", "logLevel=loud", home=helm_home)
    assert "value must be one of" in str(caught.value)
    with pytest.raises(ClusterError, match=r"only for rbac\.scope=namespaced"):
        helm("template", "kp", str(CHART), "--set", "rbac.namespaces={apps}", home=helm_home)


# --- helm install / uninstall --------------------------------------------------------------


HELM_INSTALLS = {
    "default": [],
    "webhook": ["--set", "webhook.enabled=true"],
    "namespaced": ["--set", "rbac.scope=namespaced", "--set", "rbac.namespaces={NAMESPACE}"],
}


def ca_bundle(cluster: Cluster, ns: str) -> str:
    config = cluster.get("mutatingwebhookconfiguration", f"kubepresence-agent-injector-{ns}")
    return str(config["webhooks"][0]["clientConfig"].get("caBundle", ""))


@pytest.mark.parametrize("case", list(HELM_INSTALLS))
def test_helm_install_and_uninstall(
    cluster: Cluster, manager_image: str, namespace: str, helm_home: Path, case: str
) -> None:
    ns = fresh_name("kp-helm")
    release = fresh_name("kp")
    sets = [arg.replace("NAMESPACE", namespace) for arg in HELM_INSTALLS[case]]
    try:
        helm(
            "install",
            release,
            str(CHART),
            "-n",
            ns,
            "--create-namespace",
            "--wait",
            "--timeout",
            "150s",
            *sets,
            home=helm_home,
            timeout=200,
        )
        assert kube.deployment_available(MANAGER, ns)
        pod = cluster.get("pods", "-n", ns, "-l", SELECTOR)["items"][0]
        assert pod["spec"]["containers"][0]["image"] == manager_image
        uid = cluster.exec_in_pod(
            ns, pod["metadata"]["name"], ["python3", "-c", "import os; print(os.getuid())"]
        ).stdout.strip()
        assert uid == "1000"
        manifest = helm("get", "manifest", release, "-n", ns, home=helm_home)
        objects = [doc for doc in yaml.safe_load_all(manifest) if doc]
        kinds = sorted(o["kind"] for o in objects)
        chart_default = yaml.safe_load((CHART / "values.yaml").read_text())["webhook"]["enabled"]
        if case == "webhook" or (case in ("default", "namespaced") and chart_default):
            # Registered, and the manager wrote its CA into it (helm left caBundle out).
            assert "MutatingWebhookConfiguration" in kinds
            wait_for("the manager's CA bundle", lambda: ca_bundle(cluster, ns), timeout=30)
        else:
            assert "MutatingWebhookConfiguration" not in kinds
        if case == "namespaced":
            # Roles in the manager's namespace and in the listed one.
            assert kinds.count("Role") == kinds.count("RoleBinding") == 2
            role_namespaces = {o["metadata"]["namespace"] for o in objects if o["kind"] == "Role"}
            assert role_namespaces == {ns, namespace}
        else:
            assert "Role" not in kinds
        assert {"ClusterRole", "ClusterRoleBinding", "Deployment", "Service"} <= set(kinds)
        # Every object of the release is in the cluster, the cluster-scoped ones included.
        present = cluster.kubectl(
            "get", "-f", "-", "-o", "name", input_text=yaml.safe_dump_all(objects)
        ).split()
        assert len(present) == len(objects)

        helm("uninstall", release, "-n", ns, "--wait", "--timeout", "120s", home=helm_home)
        left = cluster.kubectl(
            "get",
            "-f",
            "-",
            "-o",
            "name",
            "--ignore-not-found",
            input_text=yaml.safe_dump_all(objects),
        ).split()
        assert left == []
        assert existing(cluster, *cluster_scoped_names(ns)) == []
        wait_for(
            "the manager pods to go",
            lambda: not existing(cluster, "pods", "-l", SELECTOR, namespace=ns),
            timeout=60,
        )
    finally:
        remove_install(cluster, ns, namespace)


# --- the Python install, driven from the workstation ---------------------------------------

DRIVER = PROGRAMS / "install_driver.py"


def workstation(
    cluster: Cluster, action: str, ns: str, timeout: float = 200, **args: Any
) -> dict[str, Any]:
    """Run one installing call with userd's code on the workstation; its JSON answer.

    Installs leave the webhook out unless a test asks for it: these tests are about the
    install's mechanics, and a webhook-less manager is Ready sooner.
    """
    if action == "ensure":
        args.setdefault("webhook_enabled", False)
    proc = cluster.on_workstation(
        [
            sys.executable,
            str(DRIVER),
            action,
            ns,
            json.dumps(args),
            str(layout.WORKSTATION_KUBECONFIG),
        ],
        timeout=timeout,
    )
    return dict(json.loads(proc.stdout))


def ok(answer: dict[str, Any]) -> Any:
    assert "error" not in answer, answer
    return answer["result"]


def install_state(cluster: Cluster, ns: str) -> dict[str, str]:
    """name -> resourceVersion of every object the install made."""
    names = [
        *cluster_scoped_names(ns),
        f"namespace/{ns}",
        f"serviceaccount/{MANAGER}",
        f"service/{MANAGER}",
        f"deployment/{MANAGER}",
    ]
    out = cluster.kubectl(
        "get",
        *names,
        "-n",
        ns,
        "--ignore-not-found",
        "-o",
        "jsonpath={range .items[*]}{.kind}/{.metadata.name}="
        "{.metadata.resourceVersion}{'\\n'}{end}",
    )
    return dict(line.split("=", 1) for line in out.split())


@pytest.fixture
def test_tag(cluster: Cluster, manager_image: str) -> Iterator[str]:
    """The manager image under a second tag: a 'new version' the node really has."""
    ctr = [*lifecycle.CTR, "-n", "k8s.io", "images"]
    tagged = f"localhost/{MANAGER}:{TEST_TAG}"
    run([*ctr, "rm", tagged], check=False)
    run([*ctr, "tag", manager_image, tagged])
    yield TEST_TAG
    run([*ctr, "rm", tagged], check=False)


def test_python_install_upgrade_and_uninstall(
    cluster: Cluster, manager_image: str, test_tag: str
) -> None:
    ns = fresh_name("kp-py")
    version = ManagerInstall().version
    try:
        assert ok(workstation(cluster, "find", ns)) is None
        first = workstation(cluster, "ensure", ns)
        assert ok(first) == "installed"
        assert any("creating ClusterRole" in line for line in first["progress"])
        assert kube.deployment_available(MANAGER, ns)
        ns_labels = cluster.get("namespace", ns)["metadata"]["labels"]
        assert ns_labels["app.kubernetes.io/managed-by"] == "kubepresence"
        # Exactly the builder's objects, the cluster-scoped ones included.
        wanted = manager_objects(ManagerInstall(namespace=ns, webhook_enabled=False))
        cluster_wide = [
            o for o in wanted if "namespace" not in o["metadata"] and o["kind"] != "Namespace"
        ]
        assert len(existing(cluster, *cluster_scoped_names(ns))) == len(cluster_wide) >= 2
        answered, first_pod = ok(workstation(cluster, "version", ns))
        assert answered == version
        assert ok(workstation(cluster, "find", ns)) == version

        # Again: nothing is written.
        before = install_state(cluster, ns)
        assert len(before) == len(wanted)
        assert ok(workstation(cluster, "ensure", ns)) == "unchanged"
        assert install_state(cluster, ns) == before

        # A changed setting is applied in place: same Deployment, new pod, still answers.
        uid = cluster.get("deployment", MANAGER, "-n", ns)["metadata"]["uid"]
        assert ok(workstation(cluster, "ensure", ns, log_level="debug")) == (
            f"upgraded from {version}"
        )
        deployment = cluster.get("deployment", MANAGER, "-n", ns)
        assert deployment["metadata"]["uid"] == uid
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert "--log-level=debug" in args
        answered, second_pod = ok(workstation(cluster, "version", ns))
        assert (answered, second_pod != first_pod) == (version, True)

        # A limit set once and dropped later goes again: the apply owns what it set.
        def limits() -> dict[str, str]:
            live = cluster.get("deployment", MANAGER, "-n", ns)["spec"]["template"]["spec"]
            return dict(live["containers"][0]["resources"]["limits"])

        with_cpu = workstation(
            cluster, "ensure", ns, log_level="debug", resources={"limits_cpu": "1"}
        )
        assert ok(with_cpu) == f"upgraded from {version}"
        assert limits() == {"cpu": "1", "memory": "256Mi"}
        assert (
            ok(workstation(cluster, "ensure", ns, log_level="debug")) == f"upgraded from {version}"
        )
        assert limits() == {"memory": "256Mi"}

        # An image the node does not have: a fast, specific failure (no pull attempted).
        missing = workstation(cluster, "ensure", ns, version="0.0.0-missing", pull_policy="Never")
        category, message = missing["error"]
        assert category == "cluster"
        assert f"localhost/{MANAGER}:0.0.0-missing is not present" in message
        assert "ErrImageNeverPull" in message

        # A pod that cannot be scheduled: after the (short) wait, its phase and last event.
        greedy = workstation(cluster, "ensure", ns, resources={"requests_cpu": "1000"}, wait=8)
        category, message = greedy["error"]
        assert category == "cluster"
        assert f"the traffic manager in {ns} is not available after 8 s: pod " in message
        assert "is Pending; last event: FailedScheduling: " in message
        assert "Insufficient cpu" in message

        # A new version (the test's tag of the image) is upgraded in place.
        assert ok(workstation(cluster, "ensure", ns, version=test_tag)) == (
            f"upgraded from {version}"
        )
        assert ok(workstation(cluster, "find", ns)) == test_tag
        live = cluster.get("deployment", MANAGER, "-n", ns)
        assert live["metadata"]["uid"] == uid
        assert live["spec"]["template"]["spec"]["containers"][0]["image"].endswith(test_tag)
        assert ok(workstation(cluster, "version", ns))[0] == version
        assert ok(workstation(cluster, "ensure", ns)) == f"upgraded from {test_tag}"

        removed = ok(workstation(cluster, "uninstall", ns))
        assert sorted(removed) == sorted(str(Ref.of(o)) for o in wanted)
        assert install_state(cluster, ns) == {}
        assert ok(workstation(cluster, "find", ns)) is None
    finally:
        remove_install(cluster, ns)


def injected_at_once(cluster: Cluster, namespace: str, manager_ns: str) -> bool:
    """Create a pod for the manager's webhook and delete it; whether it came with the agent."""
    name = fresh_name("probe")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {
                "kubepresence.io/inject-traffic-agent": "enabled",
                "kubepresence.io/manager-namespace": manager_ns,
            },
        },
        "spec": {"containers": [{"name": "app", "image": cluster.testapps_image}]},
    }
    try:
        created = json.loads(
            cluster.kubectl("create", "-o", "json", "-f", "-", input_text=json.dumps(pod))
        )
    finally:
        cluster.kubectl(
            "delete", "pod", name, "-n", namespace, "--ignore-not-found", "--wait=false"
        )
    return "kubepresence-agent" in [c["name"] for c in created["spec"]["containers"]]


def test_python_install_with_namespaced_rbac_and_the_webhook(
    cluster: Cluster, manager_image: str, namespace: str
) -> None:
    """Roles land in the listed namespace, go when the scope changes, and at uninstall; the
    webhook configuration gets the manager's CA, which re-running and upgrading keep."""
    ns = fresh_name("kp-pyns")
    version = ManagerInstall().version
    settings: dict[str, Any] = {"rbac_scope": "namespaced", "rbac_namespaces": [namespace]}
    rbac = [f"role/{MANAGER}-{ns}", f"rolebinding/{MANAGER}-{ns}"]
    webhook_config = f"mutatingwebhookconfiguration/kubepresence-agent-injector-{ns}"
    try:
        first = workstation(cluster, "ensure", ns, webhook_enabled=True, **settings)
        assert ok(first) == "installed"
        # Once the install returns, the webhook injects: a pod created at once has its agent.
        assert f"agent injection by the traffic manager in {ns} works" in first["progress"]
        assert injected_at_once(cluster, namespace, ns)
        for where in (ns, namespace):
            assert len(existing(cluster, *rbac, namespace=where)) == 2
        role = cluster.get("clusterrole", f"{MANAGER}-{ns}")
        assert {r["resources"][0] for r in role["rules"]} == {
            "nodes",
            "namespaces",
            "servicecidrs",
            "mutatingwebhookconfigurations",
        }
        # The manager (with only the namespaced RBAC) wrote its CA into the configuration;
        # applying again must neither see a difference nor drop it.
        bundle = wait_for("the manager's CA bundle", lambda: ca_bundle(cluster, ns), timeout=30)
        # Its watches look where its Roles are (nodes through the ClusterRole), and may.
        listed = [f"listed {what} in {where}" for what in ("agent pods", "deployments")
                  for where in (ns, namespace)] + ["listed nodes"]  # fmt: skip

        def watching() -> str | None:
            logs = cluster.kubectl("logs", "-n", ns, f"deployment/{MANAGER}")
            return logs if all(line in logs for line in listed) else None

        logs = wait_for("the manager's watches", watching, timeout=30)
        assert "in all namespaces" not in logs
        assert not re.search(r"watch of .* failed", logs), logs
        again = workstation(cluster, "ensure", ns, webhook_enabled=True, **settings)
        assert ok(again) == "unchanged"
        assert ca_bundle(cluster, ns) == bundle
        changed = workstation(
            cluster, "ensure", ns, webhook_enabled=True, log_level="debug", **settings
        )
        assert ok(changed) == f"upgraded from {version}"
        assert f"agent injection by the traffic manager in {ns} works" in changed["progress"]
        assert injected_at_once(cluster, namespace, ns)
        # The earlier CA is still there (the new manager's CA joins it).
        assert base64.b64decode(bundle) in base64.b64decode(ca_bundle(cluster, ns))
        assert ca_bundle(cluster, ns) != bundle

        # Cluster-wide RBAC, no webhook: the Roles and the configuration are stale and go.
        assert ok(workstation(cluster, "ensure", ns)) == f"upgraded from {version}"
        assert existing(cluster, *rbac, namespace=namespace) == []
        assert existing(cluster, *rbac, namespace=ns) == []
        assert existing(cluster, webhook_config) == []
        assert ok(workstation(cluster, "ensure", ns, **settings)) == f"upgraded from {version}"
        assert len(existing(cluster, *rbac, namespace=namespace)) == 2

        removed = ok(workstation(cluster, "uninstall", ns))
        assert f"Role {namespace}/{MANAGER}-{ns}" in removed
        assert f"RoleBinding {namespace}/{MANAGER}-{ns}" in removed
        assert existing(cluster, *rbac, namespace=namespace) == []
        assert existing(cluster, *cluster_scoped_names(ns)) == []
        assert existing(cluster, f"namespace/{ns}") == []
        # The listed namespace was the user's: it stays.
        assert existing(cluster, f"namespace/{namespace}") == [f"namespace/{namespace}"]
    finally:
        remove_install(cluster, ns, namespace)


def test_read_only_user_cannot_install(cluster: Cluster, namespace: str) -> None:
    user = fresh_name("kp-e2e-viewer")
    binding = f"clusterrolebinding/{user}"
    cluster.kubectl("create", "clusterrolebinding", user, "--clusterrole=view", f"--user={user}")
    try:
        answer = workstation(cluster, "ensure", namespace, impersonate=user)
        category, message = answer["error"]
        assert category == "cluster"
        assert message.startswith(f"not allowed to read ClusterRole {MANAGER}-{namespace}")
        assert 'cannot get resource "clusterroles"' in message
        assert existing(cluster, "deployment", MANAGER, namespace=namespace) == []
    finally:
        cluster.kubectl("delete", binding, "--ignore-not-found")


def test_helm_install_is_left_to_helm(
    cluster: Cluster, manager_image: str, helm_home: Path
) -> None:
    ns = fresh_name("kp-helmpy")
    release = fresh_name("kp")
    try:
        helm(
            "install",
            release,
            str(CHART),
            "-n",
            ns,
            "--create-namespace",
            "--wait",
            "--timeout",
            "150s",
            home=helm_home,
            timeout=200,
        )
        assert ok(workstation(cluster, "ensure", ns)) == "unchanged"
        other = workstation(cluster, "ensure", ns, version=TEST_TAG)
        category, message = other["error"]
        assert category == "cluster"
        assert f"installed by Helm (release {release})" in message
        assert "upgrade it with helm" in message
        refused = workstation(cluster, "uninstall", ns)
        assert f"helm uninstall {release} -n {ns}" in refused["error"][1]
        assert kube.deployment_available(MANAGER, ns)
        helm("uninstall", release, "-n", ns, "--wait", "--timeout", "120s", home=helm_home)
    finally:
        remove_install(cluster, ns)
