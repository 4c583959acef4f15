"""The traffic manager's objects built in Python (the Helm chart's twin), without a cluster."""

from __future__ import annotations

from typing import Any

import pytest

from kubepresence.protocol import version_of
from kubepresence.protocol.errors import UserError
from kubepresence.userd.core.manifests import (
    ManagerInstall,
    Resources,
    applied,
    has_agent,
    injection_probe,
    install_from_environment,
    manager_args,
    manager_objects,
)

COMMON = {
    "app.kubernetes.io/name": "kubepresence-manager",
    "app.kubernetes.io/part-of": "kubepresence",
    "app.kubernetes.io/managed-by": "kubepresence",
}
NAMESPACED_RULES = [
    {
        "apiGroups": [""],
        "resources": ["pods", "services", "endpoints"],
        "verbs": ["get", "list", "watch"],
    },
    {"apiGroups": [""], "resources": ["services"], "verbs": ["create"]},
    {
        "apiGroups": ["discovery.k8s.io"],
        "resources": ["endpointslices"],
        "verbs": ["get", "list", "watch"],
    },
    {
        "apiGroups": ["apps"],
        "resources": ["deployments", "replicasets", "statefulsets"],
        "verbs": ["get", "list", "watch", "patch"],
    },
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
]


def by_key(objects: list[dict[str, Any]]) -> dict[tuple[str, str | None, str], dict[str, Any]]:
    keyed = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objects}
    assert len(keyed) == len(objects), "two objects share kind, namespace and name"
    return keyed


def container(objects: list[dict[str, Any]], namespace: str) -> dict[str, Any]:
    deployment = by_key(objects)[("Deployment", namespace, "kubepresence-manager")]
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


def test_defaults() -> None:
    install = ManagerInstall()
    assert (install.namespace, install.registry, install.log_level) == (
        "kubepresence",
        "localhost",
        "info",
    )
    assert (install.session_ttl, install.rbac_scope, install.webhook_enabled) == (
        60,
        "cluster",
        True,
    )


def test_install_objects_in_apply_order() -> None:
    objects = manager_objects(ManagerInstall(webhook_enabled=False))
    keys = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert keys == [
        ("Namespace", None, "kubepresence"),
        ("ServiceAccount", "kubepresence", "kubepresence-manager"),
        ("ClusterRole", None, "kubepresence-manager-kubepresence"),
        ("ClusterRoleBinding", None, "kubepresence-manager-kubepresence"),
        ("Service", "kubepresence", "kubepresence-manager"),
        ("Deployment", "kubepresence", "kubepresence-manager"),
    ]


def test_every_object_carries_the_install_labels() -> None:
    install = ManagerInstall(namespace="kp", version="1.2.3", webhook_enabled=True)
    for obj in manager_objects(install):
        assert obj["metadata"]["labels"] == {**COMMON, "app.kubernetes.io/version": "1.2.3"}


def test_default_version_is_the_user_daemons() -> None:
    assert ManagerInstall().version == version_of("kubepresence-userd")
    labels = manager_objects(ManagerInstall())[0]["metadata"]["labels"]
    assert labels["app.kubernetes.io/version"] == version_of("kubepresence-userd")


def test_manager_container_per_contract() -> None:
    install = ManagerInstall(
        namespace="kp", version="0.3.0", log_level="debug", session_ttl=30, webhook_enabled=False
    )
    c = container(manager_objects(install), "kp")
    assert c["image"] == "localhost/kubepresence-manager:0.3.0"
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["command"] == ["python3", "-m", "kubepresence.manager"]
    assert c["args"] == [
        "--grpc-address=0.0.0.0:8081",
        "--preview-port=8082",
        "--log-level=debug",
        "--session-ttl=30",
        "--dial-timeout=10",
        "--flow-idle-timeout=600",
        '--agent-resources={"limits":{"memory":"128Mi"},"requests":{"cpu":"10m","memory":"32Mi"}}',
    ]
    assert c["env"] == [
        {
            "name": "MANAGER_NAMESPACE",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        },
        {"name": "AGENT_IMAGE", "value": "localhost/kubepresence-agent:0.3.0"},
    ]
    assert [(p["name"], p["containerPort"]) for p in c["ports"]] == [
        ("grpc", 8081),
        ("https-webhook", 8443),
        ("http-preview", 8082),
    ]
    assert c["readinessProbe"]["tcpSocket"] == {"port": 8081}
    assert c["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["runAsUser"] == 1000
    assert c["resources"] == {
        "requests": {"cpu": "50m", "memory": "64Mi"},
        "limits": {"memory": "256Mi"},
    }


def test_registry_pull_policy_and_resources_follow_the_install() -> None:
    install = ManagerInstall(
        namespace="kp",
        version="2.0.0",
        registry="ghcr.io/example",
        pull_policy="Always",
        resources=Resources(
            requests_cpu="", requests_memory="32Mi", limits_cpu="1", limits_memory=""
        ),
    )
    c = container(manager_objects(install), "kp")
    assert c["image"] == "ghcr.io/example/kubepresence-manager:2.0.0"
    assert c["env"][1]["value"] == "ghcr.io/example/kubepresence-agent:2.0.0"
    assert c["imagePullPolicy"] == "Always"
    assert c["resources"] == {"requests": {"memory": "32Mi"}, "limits": {"cpu": "1"}}


def pod_spec(objects: list[dict[str, Any]], namespace: str) -> dict[str, Any]:
    deployment = by_key(objects)[("Deployment", namespace, "kubepresence-manager")]
    return dict(deployment["spec"]["template"]["spec"])


def test_image_pull_secrets_go_to_the_manager_pod_only_when_given() -> None:
    assert "imagePullSecrets" not in pod_spec(manager_objects(ManagerInstall(namespace="kp")), "kp")
    # A list (as YAML or JSON give it) is taken too, and kept as a tuple: hashable, as the rest.
    listed: Any = ["regcred", "mirror.pull"]
    install = ManagerInstall(namespace="kp", image_pull_secrets=listed)
    assert install.image_pull_secrets == ("regcred", "mirror.pull")
    assert pod_spec(manager_objects(install), "kp")["imagePullSecrets"] == [
        {"name": "regcred"},
        {"name": "mirror.pull"},
    ]


def test_install_from_the_callers_environment() -> None:
    plain = install_from_environment("kp", {})
    assert plain == ManagerInstall(namespace="kp")
    install = install_from_environment(
        "kp",
        {
            "KUBEPRESENCE_REGISTRY": " registry.example.com/team ",
            "KUBEPRESENCE_IMAGE_PULL_SECRETS": "regcred, other ,",
        },
    )
    assert install.registry == "registry.example.com/team"
    assert install.image_pull_secrets == ("regcred", "other")
    assert c_image(install) == "registry.example.com/team/kubepresence-manager:" + install.version
    with pytest.raises(UserError, match="image pull secret 'Reg_Cred' is not a valid Secret"):
        install_from_environment("kp", {"KUBEPRESENCE_IMAGE_PULL_SECRETS": "Reg_Cred"})
    with pytest.raises(UserError, match="is not a registry host"):
        install_from_environment("kp", {"KUBEPRESENCE_REGISTRY": "registry.example.com/"})


def c_image(install: ManagerInstall) -> str:
    return str(container(manager_objects(install), install.namespace)["image"])


def test_deployment_and_service_select_the_manager_pods() -> None:
    objects = by_key(manager_objects(ManagerInstall(namespace="kp")))
    deployment = objects[("Deployment", "kp", "kubepresence-manager")]
    service = objects[("Service", "kp", "kubepresence-manager")]
    match = {"app.kubernetes.io/name": "kubepresence-manager"}
    assert deployment["spec"]["selector"] == {"matchLabels": match}
    assert service["spec"]["selector"] == match
    template_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert match.items() <= template_labels.items()
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "kubepresence-manager"
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        ("grpc", 8081, 8081),
        ("https-webhook", 443, 8443),
        ("http-preview", 8082, 8082),
    ]


def test_cluster_rbac_grants_the_contract_and_binds_the_service_account() -> None:
    objects = by_key(manager_objects(ManagerInstall(namespace="kp")))
    role = objects[("ClusterRole", None, "kubepresence-manager-kp")]
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
        *NAMESPACED_RULES,
        {
            "apiGroups": ["networking.k8s.io"],
            "resources": ["servicecidrs"],
            "verbs": ["get", "list", "watch"],
        },
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["mutatingwebhookconfigurations"],
            "resourceNames": ["kubepresence-agent-injector-kp"],
            "verbs": ["get", "list", "patch"],
        },
    ]
    binding = objects[("ClusterRoleBinding", None, "kubepresence-manager-kp")]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "kubepresence-manager-kp",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "kubepresence-manager", "namespace": "kp"}
    ]
    assert not [k for k in objects if k[0] in ("Role", "RoleBinding")]


def test_two_installs_share_no_cluster_scoped_name() -> None:
    def cluster_scoped(ns: str) -> set[tuple[str, str]]:
        install = ManagerInstall(namespace=ns, webhook_enabled=True)
        return {
            (o["kind"], o["metadata"]["name"])
            for o in manager_objects(install)
            if "namespace" not in o["metadata"]
        }

    a, b = cluster_scoped("team-a"), cluster_scoped("team-b")
    assert not a & b
    assert all(name.endswith("-team-a") or name == "team-a" for _, name in a)


def test_namespaced_rbac_roles_in_listed_namespaces_and_a_small_cluster_role() -> None:
    install = ManagerInstall(
        namespace="kp", rbac_scope="namespaced", rbac_namespaces=("apps", "kp", "web")
    )
    objects = manager_objects(install)
    keyed = by_key(objects)
    roles = [k for k in keyed if k[0] == "Role"]
    assert roles == [("Role", ns, "kubepresence-manager-kp") for ns in ("kp", "apps", "web")]
    for _, ns, name in roles:
        assert keyed[("Role", ns, name)]["rules"] == NAMESPACED_RULES
        binding = keyed[("RoleBinding", ns, name)]
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"][0]["namespace"] == "kp"
    cluster_rules = keyed[("ClusterRole", None, "kubepresence-manager-kp")]["rules"]
    granted = {tuple(r["resources"]) for r in cluster_rules}
    assert granted == {
        ("nodes",),
        ("namespaces",),
        ("servicecidrs",),
        ("mutatingwebhookconfigurations",),
    }
    namespaces_rule = next(r for r in cluster_rules if r["resources"] == ["namespaces"])
    assert namespaces_rule == {
        "apiGroups": [""],
        "resources": ["namespaces"],
        "resourceNames": ["kp", "apps", "web"],
        "verbs": ["get"],
    }
    assert all(r["verbs"] != ["create"] for r in cluster_rules)
    # Roles come after the ClusterRole binding and before the workload.
    kinds = [o["kind"] for o in objects]
    assert kinds.index("RoleBinding") < kinds.index("Service")


def test_webhook_config_only_when_enabled() -> None:
    without = manager_objects(ManagerInstall(webhook_enabled=False))
    assert not [o for o in without if o["kind"] == "MutatingWebhookConfiguration"]
    objects = manager_objects(ManagerInstall(namespace="kp", webhook_enabled=True))
    assert objects[-1]["kind"] == "MutatingWebhookConfiguration"
    config = objects[-1]
    assert config["metadata"]["name"] == "kubepresence-agent-injector-kp"
    (hook,) = config["webhooks"]
    assert hook["failurePolicy"] == "Ignore"
    assert hook["sideEffects"] == "None"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["timeoutSeconds"] == 5
    assert hook["clientConfig"] == {
        "service": {
            "namespace": "kp",
            "name": "kubepresence-manager",
            "path": "/mutate-pods",
            "port": 443,
        }
    }
    assert "caBundle" not in hook["clientConfig"]
    assert hook["rules"] == [
        {"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}
    ]
    assert hook["namespaceSelector"] == {
        "matchExpressions": [
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": ["kube-system", "kp"],
            }
        ]
    }
    args = container(objects, "kp")["args"]
    assert "--webhook-address=0.0.0.0:8443" in args


def test_namespaced_webhook_injects_only_into_listed_namespaces() -> None:
    install = ManagerInstall(
        namespace="kp", rbac_scope="namespaced", rbac_namespaces=("apps",), webhook_enabled=True
    )
    (hook,) = manager_objects(install)[-1]["webhooks"]
    assert hook["namespaceSelector"]["matchExpressions"] == [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["apps"]}
    ]


def test_no_webhook_address_without_the_webhook() -> None:
    install = ManagerInstall(namespace="kp", webhook_enabled=False)
    args = container(manager_objects(install), "kp")["args"]
    assert not [a for a in args if a.startswith("--webhook-address")]


def test_builder_is_pure_and_returns_fresh_objects() -> None:
    install = ManagerInstall(namespace="kp")
    first = manager_objects(install)
    first[0]["metadata"]["labels"]["tampered"] = "yes"
    assert manager_objects(install) != first
    assert manager_objects(install) == manager_objects(install)


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"namespace": "Bad_NS"}, "'Bad_NS' is not a valid namespace name"),
        ({"namespace": "x" * 64}, "is not a valid namespace name"),
        ({"version": "0.0.0+unknown"}, "cannot be an image tag"),
        ({"registry": "ghcr.io/org/"}, "is not a registry host"),
        ({"pull_policy": "Sometimes"}, "pull policy 'Sometimes'"),
        ({"image_pull_secrets": ("ok", "-bad")}, "image pull secret '-bad' is not a valid"),
        ({"image_pull_secrets": ("x" * 254,)}, "is not a valid Secret name"),
        ({"log_level": "loud"}, "log level 'loud'"),
        ({"session_ttl": 0}, "session TTL 0"),
        ({"rbac_scope": "global"}, "RBAC scope 'global'"),
        ({"rbac_namespaces": ("apps",)}, "only for the namespaced RBAC scope"),
        ({"rbac_scope": "namespaced", "rbac_namespaces": ("Apps",)}, "'Apps' is not a valid"),
        (
            {"rbac_scope": "namespaced", "webhook_enabled": True},
            "needs namespaces to inject into",
        ),
        ({"resources": Resources(limits_memory="lots")}, "'lots' is not a resource quantity"),
    ],
)
def test_bad_input_is_one_clear_line(kwargs: dict[str, Any], says: str) -> None:
    with pytest.raises(UserError) as caught:
        ManagerInstall(**kwargs)
    message = caught.value.message
    assert says in message
    assert message.startswith("cannot install the traffic manager: ")
    assert "\n" not in message


def test_applied_ignores_server_additions_but_not_changes() -> None:
    desired = manager_objects(ManagerInstall(namespace="kp", webhook_enabled=False))[-1]
    live = {
        **desired,
        "metadata": {**desired["metadata"], "uid": "u", "generation": 3},
        "status": {"replicas": 1},
    }
    live["spec"] = {**desired["spec"], "strategy": {"type": "RollingUpdate"}}
    assert applied(live, desired)
    changed = manager_objects(ManagerInstall(namespace="kp", log_level="debug"))[-1]
    assert not applied(live, changed)
    newer = manager_objects(ManagerInstall(namespace="kp", version="9.9.9"))[-1]
    assert not applied(live, newer)


def test_applied_compares_lists_by_length_and_position() -> None:
    assert applied({"a": [1, 2]}, {"a": [1, 2]})
    assert not applied({"a": [1, 2, 3]}, {"a": [1, 2]})
    assert not applied({"a": [2, 1]}, {"a": [1, 2]})
    assert not applied({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}})
    assert not applied({"a": "1"}, {"a": 1})


def test_the_manager_is_told_its_namespaces_in_the_namespaced_scope() -> None:
    namespaced = ManagerInstall(namespace="kp", rbac_scope="namespaced", rbac_namespaces=("apps",))
    assert manager_args(namespaced)[-1] == "--managed-namespaces=kp,apps"
    assert not any(a.startswith("--managed-namespaces") for a in manager_args(ManagerInstall()))


def _selects(selector: dict[str, Any], namespace: str) -> bool:
    """Evaluate a namespaceSelector of the webhook on a namespace's automatic name label."""
    for expression in selector["matchExpressions"]:
        assert expression["key"] == "kubernetes.io/metadata.name"
        inside = namespace in expression["values"]
        if inside != (expression["operator"] == "In"):
            return False
    return True


@pytest.mark.parametrize(
    ("install", "namespace"),
    [
        (ManagerInstall(namespace="kp"), "default"),
        (ManagerInstall(namespace="default"), "kube-public"),
        (
            ManagerInstall(namespace="kp", rbac_scope="namespaced", rbac_namespaces=("kp", "team")),
            "team",
        ),
        (ManagerInstall(namespace="kp", rbac_scope="namespaced", rbac_namespaces=("a", "b")), "a"),
    ],
)
def test_injection_probe_goes_where_the_webhook_injects(
    install: ManagerInstall, namespace: str
) -> None:
    probe = injection_probe(install)
    assert probe is not None
    assert probe["metadata"]["namespace"] == namespace
    (hook,) = manager_objects(install)[-1]["webhooks"]
    assert _selects(hook["namespaceSelector"], namespace)
    annotations = probe["metadata"]["annotations"]
    assert annotations["kubepresence.io/inject-traffic-agent"] == "enabled"
    # Only this install's manager may inject it.
    assert annotations["kubepresence.io/manager-namespace"] == install.namespace
    assert not has_agent(probe)


def test_no_injection_probe_without_a_webhook() -> None:
    assert injection_probe(ManagerInstall(webhook_enabled=False)) is None


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        ({"spec": {"containers": [{"name": "app"}, {"name": "kubepresence-agent"}]}}, True),
        ({"spec": {"containers": [{"name": "app"}]}}, False),
        ({"spec": {"initContainers": [{"name": "kubepresence-agent"}]}}, False),
        ({"spec": {"containers": None}}, False),
        ({"spec": None}, False),
        ({}, False),
        ({"spec": {"containers": ["kubepresence-agent"]}}, False),
        ("not a pod", False),
    ],
)
def test_has_agent(pod: Any, expected: bool) -> None:
    assert has_agent(pod) is expected
