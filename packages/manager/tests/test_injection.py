"""Agent injection: the decision table, the patch for named and numeric ports, fail-open.

The patches are applied with a small RFC 6902 implementation below (add, replace, test),
so the tests check the pod the API server would store, not the patch's wording.
"""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubepresence.manager.core.injection import (
    AGENT_COMMAND,
    AGENT_SITE,
    APP_MOUNTS_ROOT,
    INIT_CONTAINER,
    INJECTED_ANNOTATION,
    InjectionSettings,
    NotInjectedError,
    decode_patch,
    parse_agent_resources,
    parse_numeric_ports,
    renamed,
    review,
    workload_of,
)
from kubepresence.protocol.agents import CONFIG_ENV, AgentSettings, PortTakeover, decode
from kubepresence.protocol.workloads import AGENT_CONTAINER

SETTINGS = InjectionSettings(
    agent_image="localhost/kubepresence-agent:0.1.0", manager_namespace="kp-system"
)


# --- a minimal RFC 6902 ---------------------------------------------------------------------


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def apply_patch(document: Any, patch: list[dict[str, Any]]) -> Any:
    doc = copy.deepcopy(document)
    for op in patch:
        tokens = [_unescape(t) for t in op["path"].split("/")[1:]]
        parent = doc
        for token in tokens[:-1]:
            parent = parent[int(token)] if isinstance(parent, list) else parent[token]
        last = tokens[-1]
        if op["op"] == "test":
            current = parent[int(last)] if isinstance(parent, list) else parent[last]
            assert current == op["value"], op
        elif op["op"] == "add":
            if isinstance(parent, list):
                parent.insert(len(parent) if last == "-" else int(last), op["value"])
            else:
                parent[last] = op["value"]
        elif op["op"] == "replace":
            if isinstance(parent, list):
                assert 0 <= int(last) < len(parent), op
                parent[int(last)] = op["value"]
            else:
                assert last in parent, op  # replace needs an existing member
                parent[last] = op["value"]
        else:
            raise AssertionError(f"unexpected op {op}")
    return doc


# --- builders -------------------------------------------------------------------------------


def app_container(**extra: Any) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "echo",
        "image": "localhost/kubepresence-testapps:abc",
        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
        "env": [
            {"name": "GREETING", "value": "hello"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        "envFrom": [{"configMapRef": {"name": "settings"}}],
        "volumeMounts": [
            {"name": "data", "mountPath": "/var/data", "readOnly": True},
            {
                "name": "kube-api-access-x",
                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                "readOnly": True,
            },
        ],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1},
    }
    container.update(extra)
    return container


def pod(
    annotations: dict[str, str] | None = None,
    containers: list[dict[str, Any]] | None = None,
    init_containers: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "generateName": "echo-5d8f7c9b4-",
        "labels": {"app": "echo", "pod-template-hash": "5d8f7c9b4"},
        "annotations": {"kubepresence.io/inject-traffic-agent": "enabled"}
        if annotations is None
        else annotations,
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "echo-5d8f7c9b4",
                "controller": True,
            }
        ],
    }
    spec: dict[str, Any] = {"containers": [app_container()] if containers is None else containers}
    if init_containers is not None:
        spec["initContainers"] = init_containers
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def admission(obj: Any, operation: str = "CREATE", kind: str = "Pod", ns: str = "shop") -> bytes:
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "0d5e-uid",
                "kind": {"group": "", "version": "v1", "kind": kind},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": ns,
                "operation": operation,
                "object": obj,
            },
        }
    ).encode()


def injected(obj: dict[str, Any]) -> dict[str, Any]:
    verdict = review(admission(obj), SETTINGS)
    assert verdict.patch is not None, verdict.reason
    return dict(apply_patch(obj, verdict.patch))


def container(obj: dict[str, Any], name: str) -> dict[str, Any]:
    found = [c for c in obj["spec"]["containers"] if c["name"] == name]
    assert len(found) == 1
    return dict(found[0])


def agent_config(obj: dict[str, Any]) -> dict[str, Any]:
    env = {e["name"]: e for e in container(obj, AGENT_CONTAINER)["env"]}
    return dict(json.loads(env[CONFIG_ENV]["value"]))


# --- the decision table ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (admission(pod(annotations={})), "not enabled"),
        (
            admission(pod(annotations={"kubepresence.io/inject-traffic-agent": "disabled"})),
            "not enabled",
        ),
        (
            admission(pod(annotations={"kubepresence.io/inject-traffic-agent": "Enabled"})),
            "not enabled",
        ),
        (
            admission(
                pod(
                    annotations={
                        "kubepresence.io/inject-traffic-agent": "enabled",
                        "kubepresence.io/manager-namespace": "someone-elses",
                    }
                )
            ),
            "for the traffic manager in namespace someone-elses",
        ),
        (admission(pod(), operation="UPDATE"), "not a pod creation"),
        (admission(pod(), kind="Deployment"), "not a pod creation"),
        (admission(pod(), ns="kp-system"), "manager's own namespace"),
        (
            admission(pod(containers=[app_container(), {"name": AGENT_CONTAINER, "image": "x"}])),
            "already has the agent",
        ),
        (
            admission(pod(init_containers=[{"name": INIT_CONTAINER, "image": "x"}])),
            "already has the agent",
        ),
        (
            admission(
                pod(
                    annotations={
                        "kubepresence.io/inject-traffic-agent": "enabled",
                        "kubepresence.io/inject-container": "sidecar",
                    }
                )
            ),
            "no container 'sidecar'",
        ),
        (
            admission(
                pod(
                    annotations={
                        "kubepresence.io/inject-traffic-agent": "enabled",
                        "kubepresence.io/inject-numeric-ports": "8080,http",
                    }
                )
            ),
            "'http' is not a port number",
        ),
        (
            admission(
                {
                    "kind": "Pod",
                    "metadata": {
                        "annotations": {"kubepresence.io/inject-traffic-agent": "enabled"}
                    },
                }
            ),
            "malformed pod",
        ),
        (admission(pod(containers=[])), "no containers"),
        (admission("not a pod"), "no pod object"),
    ],
)
def test_pods_that_pass_untouched(body: bytes, why: str) -> None:
    verdict = review(body, SETTINGS)
    assert verdict.patch is None
    assert why in verdict.reason
    # Only pods that asked for the agent and cannot have it are worth a warning.
    routine = (
        "not enabled",
        "not a pod creation",
        "manager's own namespace",
        "already has",
        "for the traffic manager in",
    )
    assert verdict.problem == (not why.startswith(routine))
    response = verdict.response()
    assert response["response"] == {"uid": "0d5e-uid", "allowed": True}
    assert response["apiVersion"] == "admission.k8s.io/v1"
    assert response["kind"] == "AdmissionReview"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"[]",
        b"null",
        b'{"request": 3}',
        b'{"request": {}}',
        b'{"request": {"uid": 7}}',
        b"\xff\xfe",
    ],
)
def test_malformed_reviews_are_allowed_without_patch(body: bytes) -> None:
    verdict = review(body, SETTINGS)
    assert verdict.patch is None
    assert verdict.problem
    assert "malformed" in verdict.reason
    assert verdict.response()["response"] == {"uid": "", "allowed": True}


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "metadata",
                        "spec",
                        "containers",
                        "ports",
                        "name",
                        "annotations",
                        "containerPort",
                        "env",
                        "protocol",
                        "kubepresence.io/inject-traffic-agent",
                    ]
                ),
                children,
                max_size=4,
            )
        ),
        max_leaves=30,
    )
)
def test_arbitrary_pod_objects_never_raise(obj: Any) -> None:
    """Whatever the object looks like, the webhook answers, allowing the pod."""
    verdict = review(admission(obj), SETTINGS)
    assert verdict.response()["response"]["allowed"] is True


# --- the patch ------------------------------------------------------------------------------


def test_named_port_is_renamed_and_taken_by_the_agent() -> None:
    original = pod()
    result = injected(original)
    app = container(result, "echo")
    assert app["ports"] == [{"name": "kp-http", "containerPort": 8080, "protocol": "TCP"}]
    # The probe that named the port follows the rename: it still reaches the app itself.
    assert app["readinessProbe"]["httpGet"]["port"] == "kp-http"
    agent = container(result, AGENT_CONTAINER)
    assert agent["image"] == SETTINGS.agent_image
    assert agent["ports"] == [{"name": "http", "containerPort": 9900, "protocol": "TCP"}]
    # Ready once the agent listens; its probe has a port of its own (a probe on 9900 would
    # be intercepted: a connection to the workstation every two seconds).
    assert agent["readinessProbe"]["tcpSocket"]["port"] == 9901
    assert "--manager-address=kubepresence-manager.kp-system:8081" in agent["args"]
    # No init container: nothing numeric to redirect.
    assert "initContainers" not in result["spec"]
    assert agent_config(result) == {
        "workload_kind": "Deployment",
        "workload_name": "echo",
        "container": "echo",
        "ports": [{"name": "http", "app_port": 8080, "agent_port": 9900, "redirected": False}],
        "app_mounts_root": APP_MOUNTS_ROOT,
        "sftp_port": 8022,
        "health_port": 9901,
        "direct_port": 9902,
        "app_env_names": ["GREETING", "POD_NAME"],
    }
    # What the agent makes of it (the same contract reads it: protocol.agents).
    env = {e["name"]: e for e in agent["env"]}
    assert decode(env[CONFIG_ENV]["value"]) == AgentSettings(
        workload_kind="Deployment",
        workload_name="echo",
        container="echo",
        ports=(PortTakeover("http", 8080, 9900),),
        app_mounts_root=APP_MOUNTS_ROOT,
        sftp_port=8022,
        health_port=9901,
        direct_port=9902,
        app_env_names=("GREETING", "POD_NAME"),
    )
    assert result["metadata"]["annotations"][INJECTED_ANNOTATION] == "http=9900>8080"
    # Only the app container's port name, its probe, the agent and the annotation changed.
    assert result["spec"]["containers"][0] | {"ports": None, "readinessProbe": None} == (
        original["spec"]["containers"][0] | {"ports": None, "readinessProbe": None}
    )


def test_agent_carries_the_apps_environment_identity_and_mounts() -> None:
    agent = container(injected(pod()), AGENT_CONTAINER)
    env = agent["env"]
    # The app's variables first, in order (later ones may refer to earlier ones).
    assert env[:2] == app_container()["env"]
    names = [e["name"] for e in env]
    assert names[2:] == [
        "KP_AGENT_POD_NAME",
        "KP_AGENT_POD_NAMESPACE",
        "KP_AGENT_POD_IP",
        CONFIG_ENV,
    ]
    fields = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in env if "valueFrom" in e}
    assert fields["KP_AGENT_POD_NAME"] == "metadata.name"
    assert fields["KP_AGENT_POD_NAMESPACE"] == "metadata.namespace"
    assert fields["KP_AGENT_POD_IP"] == "status.podIP"
    assert agent["envFrom"] == [{"configMapRef": {"name": "settings"}}]
    # Every mount, the service account token too, under the export root; read-only stays so.
    assert agent["volumeMounts"] == [
        {"name": "data", "mountPath": f"{APP_MOUNTS_ROOT}/var/data", "readOnly": True},
        {
            "name": "kube-api-access-x",
            "mountPath": f"{APP_MOUNTS_ROOT}/var/run/secrets/kubernetes.io/serviceaccount",
            "readOnly": True,
        },
    ]
    assert agent["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_agent_runs_as_the_apps_user() -> None:
    obj = pod(containers=[app_container(securityContext={"runAsUser": 4242})])
    obj["spec"]["securityContext"] = {"runAsUser": 1, "runAsGroup": 77}
    security = container(injected(obj), AGENT_CONTAINER)["securityContext"]
    assert (security["runAsUser"], security["runAsGroup"]) == (4242, 77)
    # An app that runs as root explicitly: so does its agent (it must read the app's files).
    root = pod(containers=[app_container(securityContext={"runAsUser": 0})])
    security = container(injected(root), AGENT_CONTAINER)["securityContext"]
    assert security["runAsUser"] == 0
    assert "runAsNonRoot" not in security


def test_numeric_port_gets_the_redirecting_init_container() -> None:
    obj = pod(
        annotations={
            "kubepresence.io/inject-traffic-agent": "enabled",
            "kubepresence.io/inject-numeric-ports": " 9000 , 8080",
        },
        containers=[
            app_container(
                ports=[
                    {"name": "http", "containerPort": 8080},
                    {"containerPort": 9000, "protocol": "TCP"},
                ]
            )
        ],
    )
    result = injected(obj)
    config = agent_config(result)
    assert config["ports"] == [
        # 8080 is named and numeric: one agent port serves both.
        {"name": "http", "app_port": 8080, "agent_port": 9900, "redirected": True},
        {"name": "", "app_port": 9000, "agent_port": 9901, "redirected": True},
    ]
    agent = container(result, AGENT_CONTAINER)
    assert agent["ports"] == [
        {"name": "http", "containerPort": 9900, "protocol": "TCP"},
        {"containerPort": 9901, "protocol": "TCP"},
    ]
    [init] = result["spec"]["initContainers"]
    assert init["name"] == INIT_CONTAINER
    assert init["image"] == SETTINGS.agent_image
    assert init["command"] == [
        "python3",
        "-m",
        "kubepresence.agent.net.redirecting",
        "8080:9900",
        "9000:9901",
        "9902:8080",  # the readiness probe's own port, straight to the app
    ]
    assert container(result, "echo")["readinessProbe"]["httpGet"]["port"] == 9902
    assert init["securityContext"]["capabilities"]["add"] == ["NET_ADMIN", "NET_RAW"]
    assert init["securityContext"]["runAsUser"] == 0
    # The unnamed numeric port is left as it is in the app container.
    assert container(result, "echo")["ports"][1] == {"containerPort": 9000, "protocol": "TCP"}


def test_handlers_of_a_redirected_port_keep_reaching_the_app() -> None:
    """The kubelet's probes and hooks of a redirected port move to a probe port the init
    container sends to the app itself, not to the agent (and the workstation)."""
    app = app_container(
        ports=[{"name": "http", "containerPort": 8080}, {"name": "admin", "containerPort": 7000}],
        readinessProbe={"httpGet": {"path": "/ready", "port": 8080}},
        livenessProbe={"tcpSocket": {"port": "http"}},
        startupProbe={"httpGet": {"path": "/up", "port": "admin"}},
        lifecycle={"preStop": {"httpGet": {"path": "/drain", "port": "8080"}}},
    )
    obj = pod(
        annotations={
            "kubepresence.io/inject-traffic-agent": "enabled",
            "kubepresence.io/inject-numeric-ports": "8080",
        },
        containers=[app],
    )
    result = injected(obj)
    patched = container(result, "echo")
    # One probe port for 8080, past the agent ports (9900 http, 9901 admin).
    assert patched["readinessProbe"]["httpGet"]["port"] == 9902
    assert patched["livenessProbe"]["tcpSocket"]["port"] == 9902
    assert patched["lifecycle"]["preStop"]["httpGet"]["port"] == 9902
    # A named port that is not redirected only follows its rename.
    assert patched["startupProbe"]["httpGet"]["port"] == "kp-admin"
    [init] = result["spec"]["initContainers"]
    assert init["command"][3:] == ["8080:9900", "9902:8080"]
    annotation = result["metadata"]["annotations"][INJECTED_ANNOTATION]
    assert annotation.endswith(",probes=9902>8080"), annotation


def test_probe_ports_skip_what_the_pod_declares() -> None:
    app = app_container(
        ports=[{"containerPort": 8080}, {"containerPort": 9901}],
        readinessProbe={"httpGet": {"path": "/ready", "port": 8080}},
    )
    obj = pod(
        annotations={
            "kubepresence.io/inject-traffic-agent": "enabled",
            "kubepresence.io/inject-numeric-ports": "8080,9902",
        },
        containers=[app],
    )
    [init] = injected(obj)["spec"]["initContainers"]
    # Agent ports 9900 (8080) and 9903 (9902: 9901 is declared, 9902 redirected); probes 9904.
    assert init["command"][3:] == ["8080:9900", "9902:9903", "9904:8080"]


def test_handlers_of_ports_not_redirected_are_left_alone() -> None:
    app = app_container(readinessProbe={"httpGet": {"path": "/ready", "port": 8181}})
    result = injected(pod(containers=[app]))
    assert container(result, "echo")["readinessProbe"]["httpGet"]["port"] == 8181
    assert "initContainers" not in result["spec"]


def test_init_container_goes_first_among_existing_ones() -> None:
    obj = pod(
        annotations={
            "kubepresence.io/inject-traffic-agent": "enabled",
            "kubepresence.io/inject-numeric-ports": "8080",
        },
        init_containers=[{"name": "migrate", "image": "m"}],
    )
    names = [c["name"] for c in injected(obj)["spec"]["initContainers"]]
    assert names == [INIT_CONTAINER, "migrate"]


def test_agent_ports_skip_ports_the_pod_declares() -> None:
    obj = pod(
        containers=[
            app_container(
                ports=[
                    {"name": "http", "containerPort": 9900},
                    {"name": "admin", "containerPort": 9902},
                ]
            ),
            {
                "name": "metrics",
                "image": "m",
                "ports": [{"name": "metrics", "containerPort": 9901}],
            },
        ]
    )
    config = agent_config(injected(obj))
    assert [(p["name"], p["agent_port"]) for p in config["ports"]] == [
        ("http", 9903),
        ("admin", 9904),
    ]


def test_udp_and_unnamed_ports_are_not_renamed() -> None:
    obj = pod(
        containers=[
            app_container(
                ports=[
                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                    {"containerPort": 8080},
                    {"name": "grpc", "containerPort": 9090},
                ],
                readinessProbe=None,
            )
        ]
    )
    result = injected(obj)
    assert [p.get("name") for p in container(result, "echo")["ports"]] == ["dns", None, "kp-grpc"]
    assert [p["name"] for p in agent_config(result)["ports"]] == ["grpc"]


def test_long_port_names_stay_within_15_characters() -> None:
    obj = pod(
        containers=[
            app_container(
                ports=[
                    {"name": "very-long-name1", "containerPort": 8080},
                    {"name": "kp-http", "containerPort": 8081},
                    {"name": "http", "containerPort": 8082},
                ],
                readinessProbe={"tcpSocket": {"port": "very-long-name1"}},
                livenessProbe={"grpc": {"port": 8081}},
                lifecycle={"preStop": {"httpGet": {"path": "/", "port": "http"}}},
            )
        ]
    )
    result = injected(obj)
    app = container(result, "echo")
    names = [p["name"] for p in app["ports"]]
    assert all(len(n) <= 15 for n in names)
    assert len(set(names)) == 3
    assert names[0] == "kp-port-0"
    assert names[1] == "kp-kp-http"
    # "kp-http" was taken by the app itself: the rename of "http" avoids it.
    assert names[2] == "kp-port-2"
    assert app["readinessProbe"]["tcpSocket"]["port"] == "kp-port-0"
    assert app["livenessProbe"]["grpc"]["port"] == 8081
    assert app["lifecycle"]["preStop"]["httpGet"]["port"] == "kp-port-2"
    agent_names = [p["name"] for p in container(result, AGENT_CONTAINER)["ports"]]
    assert agent_names == ["very-long-name1", "kp-http", "http"]


def test_named_app_container() -> None:
    obj = pod(
        annotations={
            "kubepresence.io/inject-traffic-agent": "enabled",
            "kubepresence.io/inject-container": "api",
        },
        containers=[
            {"name": "proxy", "image": "p", "ports": [{"name": "web", "containerPort": 80}]},
            app_container(name="api"),
        ],
    )
    result = injected(obj)
    assert result["spec"]["containers"][0]["ports"][0]["name"] == "web"  # untouched
    assert container(result, "api")["ports"][0]["name"] == "kp-http"
    assert agent_config(result)["container"] == "api"


def test_injection_is_idempotent() -> None:
    """A pod that went through the webhook once passes untouched the second time."""
    once = injected(pod())
    verdict = review(admission(once), SETTINGS)
    assert verdict.patch is None
    assert verdict.reason == "already has the agent"


def test_patch_travels_as_base64_json_patch() -> None:
    verdict = review(admission(pod()), SETTINGS)
    response = verdict.response()
    assert response["response"]["patchType"] == "JSONPatch"
    assert decode_patch(response) == verdict.patch
    assert json.loads(base64.b64decode(response["response"]["patch"])) == verdict.patch


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({}, ("", "")),
        (
            {"ownerReferences": [{"kind": "StatefulSet", "name": "db", "controller": True}]},
            ("StatefulSet", "db"),
        ),
        (
            {
                "ownerReferences": [{"kind": "ReplicaSet", "name": "plain-rs", "controller": True}],
                "labels": {},
            },
            ("ReplicaSet", "plain-rs"),
        ),
        (
            {
                "ownerReferences": [
                    {"kind": "ReplicaSet", "name": "web-abc12", "controller": True}
                ],
                "labels": {"pod-template-hash": "abc12"},
            },
            ("Deployment", "web"),
        ),
        ({"ownerReferences": [{"kind": "Job", "name": "j"}]}, ("", "")),  # not a controller
    ],
)
def test_workload_of(meta: dict[str, Any], expected: tuple[str, str]) -> None:
    assert workload_of({"metadata": meta}) == expected


def test_numeric_ports_annotation() -> None:
    assert parse_numeric_ports("8080, 9000,,8080") == [8080, 9000]
    assert parse_numeric_ports("") == []
    for bad in ("0", "65536", "-1", "80a", "http"):
        with pytest.raises(NotInjectedError, match="not a port number"):
            parse_numeric_ports(bad)


@given(st.from_regex(r"[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?", fullmatch=True), st.integers(0, 40))
def test_renamed_is_a_valid_new_port_name(name: str, index: int) -> None:
    taken = {name, "kp-" + name}
    new = renamed(name, index, taken)
    assert len(new) <= 15
    assert new not in taken
    assert new.startswith("kp-")
    assert "--" not in new
    assert not new.endswith("-")


def test_writable_mounts_stay_writable_and_sub_paths_follow() -> None:
    mounts = [
        {"name": "cache", "mountPath": "/cache/"},
        {"name": "conf", "mountPath": "/etc/app.conf", "subPath": "app.conf", "readOnly": False},
    ]
    agent = container(
        injected(pod(containers=[app_container(volumeMounts=mounts)])), AGENT_CONTAINER
    )
    assert agent["volumeMounts"] == [
        {"name": "cache", "mountPath": f"{APP_MOUNTS_ROOT}/cache/"},
        {"name": "conf", "mountPath": f"{APP_MOUNTS_ROOT}/etc/app.conf", "subPath": "app.conf"},
    ]


def test_sftp_port_skips_ports_the_pod_declares_and_is_0_without_volumes() -> None:
    ports = [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
        {"name": "ssh", "containerPort": 8022, "protocol": "TCP"},
    ]
    sidecar = {"name": "side", "image": "x", "ports": [{"containerPort": 8023}]}
    result = injected(pod(containers=[app_container(ports=ports), sidecar]))
    assert agent_config(result)["sftp_port"] == 8024
    bare = injected(pod(containers=[app_container(volumeMounts=[])]))
    assert agent_config(bare)["sftp_port"] == 0
    assert "volumeMounts" not in container(bare, AGENT_CONTAINER)


def test_a_pod_for_this_manager_is_injected() -> None:
    obj = pod(
        annotations={
            "kubepresence.io/inject-traffic-agent": "enabled",
            "kubepresence.io/manager-namespace": SETTINGS.manager_namespace,
        }
    )
    verdict = review(admission(obj), SETTINGS)
    assert verdict.patch is not None, verdict.reason


def test_agent_resources_from_the_command_line() -> None:
    text = '{"limits":{"memory":"128Mi"},"requests":{"cpu":"10m","memory":"32Mi"}}'
    assert parse_agent_resources(text) == {
        "limits": {"memory": "128Mi"},
        "requests": {"cpu": "10m", "memory": "32Mi"},
    }
    assert parse_agent_resources("{}") == {}
    for bad, reason in (
        ("nope", "not JSON"),
        ('{"limit": {}}', "'requests' and/or 'limits'"),
        ('{"limits": ["64Mi"]}', "maps resource names"),
    ):
        with pytest.raises(ValueError, match=reason):
            parse_agent_resources(bad)


def test_injected_agent_gets_the_configured_resources() -> None:
    settings = InjectionSettings(
        agent_image=SETTINGS.agent_image,
        manager_namespace=SETTINGS.manager_namespace,
        agent_resources={"limits": {"memory": "300Mi"}},
    )
    obj = pod(annotations={"kubepresence.io/inject-traffic-agent": "enabled"})
    verdict = review(admission(obj), settings)
    assert verdict.patch is not None
    patched = apply_patch(obj, verdict.patch)
    assert container(patched, AGENT_CONTAINER)["resources"] == {"limits": {"memory": "300Mi"}}


# --- image pull secrets ---------------------------------------------------------------------


def test_no_pull_secrets_leaves_the_pods_own_alone() -> None:
    plain = pod()
    assert "imagePullSecrets" not in injected(plain)["spec"]
    own = pod()
    own["spec"]["imagePullSecrets"] = [{"name": "app-registry"}]
    assert injected(own)["spec"]["imagePullSecrets"] == [{"name": "app-registry"}]


def test_the_agents_pull_secrets_are_added_where_the_pod_lacks_them() -> None:
    settings = InjectionSettings(
        agent_image="registry.example/kp/kubepresence-agent:0.1.0",
        manager_namespace="kp-system",
        image_pull_secrets=("regcred", "mirror", "regcred"),
    )

    def inject(obj: dict[str, Any]) -> dict[str, Any]:
        verdict = review(admission(obj), settings)
        assert verdict.patch is not None, verdict.reason
        return dict(apply_patch(obj, verdict.patch))

    assert inject(pod())["spec"]["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]
    own = pod()
    own["spec"]["imagePullSecrets"] = [{"name": "mirror"}, {"name": "app-registry"}]
    assert inject(own)["spec"]["imagePullSecrets"] == [
        {"name": "mirror"},
        {"name": "app-registry"},
        {"name": "regcred"},
    ]


def test_resource_field_refs_name_the_app_container() -> None:
    """Without containerName the kubelet would give the agent's own limits (its 128Mi)."""
    memory = {"resource": "limits.memory", "divisor": "1Mi"}
    cpu = {"containerName": "other", "resource": "requests.cpu"}
    env = [
        {"name": "MEM", "valueFrom": {"resourceFieldRef": memory}},
        {"name": "CPU", "valueFrom": {"resourceFieldRef": cpu}},
        {"name": "LATER", "value": "$(MEM)-$$"},
    ]
    original = pod(containers=[app_container(env=env)])
    kept = copy.deepcopy(original)
    agent = container(injected(original), AGENT_CONTAINER)
    assert agent["env"][:3] == [
        {"name": "MEM", "valueFrom": {"resourceFieldRef": {**memory, "containerName": "echo"}}},
        env[1],  # a reference that names a container already reads that one
        env[2],  # expansion is the kubelet's, from the same entries in the same order
    ]
    assert original == kept  # the review's pod is not changed in place


def test_the_agents_interpreter_ignores_the_apps_python_variables(tmp_path: Path) -> None:
    """The agent container carries the app's env: with the app's PYTHONPATH the agent's
    interpreter found the app's packages, not its own (it crashed at import). Run for real,
    with a decoy `kubepresence.agent` on PYTHONPATH and the real one in the agent's site."""
    agent = container(injected(pod()), AGENT_CONTAINER)
    assert agent["command"] == list(AGENT_COMMAND)
    for root, says in ((tmp_path / "site", "agent"), (tmp_path / "app", "decoy")):
        package = root / "kubepresence" / "agent"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "__main__.py").write_text(f"import sys\nprint({says!r}, sys.argv[1:])\n")
    python, *flags, code = AGENT_COMMAND
    assert python == "python3"
    done = subprocess.run(
        [sys.executable, *flags, code.replace(AGENT_SITE, str(tmp_path / "site")), "--x=1"],
        env={"PYTHONPATH": str(tmp_path / "app"), "PYTHONHOME": str(tmp_path / "nowhere")},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert done.stdout == "agent ['--x=1']\n"
