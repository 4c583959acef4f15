"""The intercepted environment is the app container's, byte for byte, in every file syntax.

Scenarios (one `kubepresence connect` for the module, its own traffic manager, ws1 held
through workstation_cli's ws1 lock; a Deployment whose app container has resources and an
environment that uses every source the kubelet resolves):
- `intercept --env-json --env-file` (dotenv): every variable equals what
  `kubectl exec POD -c echo -- env -0` prints in the app container: resourceFieldRef with
  divisors (limits.memory/1Mi, requests.cpu/1m, requests.memory/1Gi rounded up, limits.cpu
  1500m → 2) and a default (limits.ephemeral-storage, unset: the node's allocatable),
  fieldRef (metadata.name/uid/labels, status.podIP/hostIP, spec.nodeName and
  serviceAccountName), `$(VAR)` expansion from earlier entries, envFrom and the Service
  variables, `$$` escapes, undefined and later references kept literal, envFrom with
  prefixes (a later source overrides an earlier one, an env entry overrides both), a Secret,
  values with quotes, `$`, backslashes, newlines, CR and unicode, and a HOME the app's env
  sets itself, and a PYTHONPATH (before, the agent's own interpreter used it and crashed).
  The only variables the app has and the file lacks are its image's ENV
  (PATH, PYTHONUNBUFFERED: another container's image config, which the agent cannot see);
  python-dotenv reads the dotenv file back equal to the JSON;
- `--env-syntax sh`: `. FILE` in /bin/sh exports the same variables;
- `--env-syntax docker`: the app has values with newlines, which docker's --env-file
  cannot carry: one line naming one, exit 2, the intercept removed (nothing applied left).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from kpcluster import layout, manifests
from kpcluster.commands import wait_for
from kpcluster.harness import Cluster
from workstation_cli import Session, Workstation

LOCAL_PORT = 8197
APP = "echo"
# The testapps image's ENV (kpcluster/imagebuild.py): set by the image config, not the pod.
APP_IMAGE_ENV = {"PATH", "PYTHONUNBUFFERED"}


def resource(name: str, ref: str, divisor: str = "") -> dict[str, Any]:
    field: dict[str, Any] = {"resource": ref}
    if divisor:
        field["divisor"] = divisor
    return {"name": name, "valueFrom": {"resourceFieldRef": field}}


def field(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


ENV = [
    resource("MEM_LIMIT_MI", "limits.memory", "1Mi"),
    resource("MEM_LIMIT", "limits.memory"),
    resource("MEM_REQUEST_GI", "requests.memory", "1Gi"),
    resource("CPU_REQUEST_M", "requests.cpu", "1m"),
    resource("CPU_LIMIT", "limits.cpu"),
    resource("STORAGE_LIMIT", "limits.ephemeral-storage"),
    field("MY_POD_IP", "status.podIP"),
    field("MY_HOST_IP", "status.hostIP"),
    field("MY_NODE", "spec.nodeName"),
    field("MY_SA", "spec.serviceAccountName"),
    field("MY_UID", "metadata.uid"),
    field("MY_APP_LABEL", "metadata.labels['app']"),
    {"name": "HOME", "value": "/home/app"},
    {"name": "PYTHONPATH", "value": "/app/lib"},  # the agent's interpreter must not use it
    {
        "name": "EXPANDED",
        "value": "mem=$(MEM_LIMIT_MI)Mi pod=$(POD_NAME) escaped=$$(POD_NAME) missing=$(NOPE) "
        "later=$(LATER) svc=$(KUBERNETES_SERVICE_HOST) cfg=$(CFG_GREETING)",
    },
    {"name": "LATER", "value": "x"},
    {"name": "DOLLARS", "value": "a$$b $ c$d ${e} $(  ) '\"\\ end\\"},
    {"name": "MULTI", "value": "line1\nline2\r\nline3"},
    {"name": "UNICODE", "value": "ünï ☃ 日本"},
    {"name": "CFG_OVERRIDDEN", "value": "from env"},
]
CONFIG = {
    "GREETING": "hello ${HOME} $USER",
    "MULTI": "a\nb",
    "OVERRIDDEN": "from configmap",
    "SHARED": "first",
}
RESOURCES = {
    "requests": {"cpu": "100m", "memory": "48Mi"},
    "limits": {"cpu": "1500m", "memory": "200Mi"},
}


def deploy(cluster: Cluster, namespace: str) -> None:
    extra = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings", "namespace": namespace},
            "data": CONFIG,
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings2", "namespace": namespace},
            "data": {"SHARED": "second"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "token", "namespace": namespace},
            "stringData": {"TOKEN": "s3cr=t 'q' \"qq\" $x \\n"},
        },
    ]
    objects = manifests.echo_workload(
        "Deployment",
        APP,
        namespace,
        cluster.testapps_image,
        named_target_port=True,
        env=ENV,
        env_from=[
            {"configMapRef": {"name": "settings"}, "prefix": "CFG_"},
            {"configMapRef": {"name": "settings2"}, "prefix": "CFG_"},
            {"secretRef": {"name": "token"}},
        ],
    )
    objects[0]["spec"]["template"]["spec"]["containers"][0]["resources"] = RESOURCES
    cluster.apply([*extra, *objects])
    cluster.wait_pods_ready(namespace, f"app={APP}", 1)


def intercepted_pod(cluster: Cluster, namespace: str) -> str:
    """The workload's pod with the agent, once the one without it is gone (bounded)."""

    def one() -> str | None:
        pods = [
            p
            for p in cluster.get("pods", "-n", namespace, "-l", f"app={APP}")["items"]
            if not p["metadata"].get("deletionTimestamp")
        ]
        if len(pods) != 1 or len(pods[0]["spec"]["containers"]) != 2:
            return None
        return str(pods[0]["metadata"]["name"])

    return wait_for(f"one pod of {namespace}/{APP} with the agent", one, timeout=60)


def app_env(namespace: str, pod: str) -> dict[str, str]:
    """`kubectl exec POD -c echo -- env -0`: the app container's environment, exactly
    (bytes: a text-mode pipe would turn the CR of a value into a newline)."""
    kubeconfig = str(layout.ADMIN_KUBECONFIG)
    argv = [str(layout.kubectl()), "--kubeconfig", kubeconfig, "exec", "-n", namespace]
    done = subprocess.run(
        [*argv, pod, "-c", APP, "--", "env", "-0"], capture_output=True, timeout=60, check=True
    )
    pairs = (item.split(b"=", 1) for item in done.stdout.split(b"\0") if item)
    return {k.decode(): v.decode() for k, v in pairs}


def sh_reads(path: Path) -> dict[str, str]:
    done = subprocess.run(
        ["/bin/sh", "-c", '. "$1" && exec /usr/bin/env -0', "sh", str(path)],
        env={},
        capture_output=True,
        timeout=10,
        check=True,
    )
    pairs = (item.split(b"=", 1) for item in done.stdout.split(b"\0") if item)
    return {k.decode(): v.decode() for k, v in pairs if k not in (b"PWD", b"OLDPWD", b"_")}


def intercept(ws: Workstation, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    return ws.kp("intercept", APP, "-n", namespace, "--port", f"{LOCAL_PORT}:http", *args)


def intercepts(ws: Workstation) -> list[str]:
    connection = ws.status()["connection"]
    assert isinstance(connection, dict)
    return [str(line) for line in connection.get("intercepts", [])]


def test_the_environment_is_the_app_containers(
    cluster: Cluster, namespace: str, session: Session
) -> None:
    ws = session.ws
    deploy(cluster, namespace)
    env_file, env_json, env_sh = ws.home / "app.env", ws.home / "app.json", ws.home / "app.sh"
    done = intercept(ws, namespace, "--env-file", str(env_file), "--env-json", str(env_json))
    assert done.returncode == 0, done.stderr + ws.logs()
    try:
        pod = intercepted_pod(cluster, namespace)
        expected = app_env(namespace, pod)
        got = json.loads(env_json.read_text(encoding="utf-8"))
        # The kubelet's values, as the app sees them (before the fix: the agent's limits).
        assert expected["MEM_LIMIT_MI"] == "200"
        assert expected["MEM_LIMIT"] == str(200 << 20)
        assert expected["MEM_REQUEST_GI"] == "1"
        assert expected["CPU_REQUEST_M"] == "100"
        assert expected["CPU_LIMIT"] == "2"
        assert int(expected["STORAGE_LIMIT"]) > 0
        assert expected["EXPANDED"] == (
            f"mem=200Mi pod={pod} escaped=$(POD_NAME) missing=$(NOPE) later=$(LATER) "
            f"svc={expected['KUBERNETES_SERVICE_HOST']} cfg=hello ${{HOME}} $USER"
        )
        assert expected["DOLLARS"] == "a$b $ c$d ${e} $(  ) '\"\\ end\\"
        assert expected["CFG_SHARED"] == "second"
        assert expected["CFG_OVERRIDDEN"] == "from env"
        assert expected["HOME"] == "/home/app"
        assert expected["MY_POD_IP"]
        assert expected["MY_UID"]

        assert {k: v for k, v in expected.items() if k not in APP_IMAGE_ENV} == got
        assert set(expected) - set(got) == APP_IMAGE_ENV
        assert dotenv_values(env_file) == got

        left = ws.kp("leave", APP)
        assert left.returncode == 0, left.stderr
        done = intercept(ws, namespace, "--env-file", str(env_sh), "--env-syntax", "sh")
        assert done.returncode == 0, done.stderr + ws.logs()
        assert sh_reads(env_sh) == got
    finally:
        if intercepts(ws):
            ws.kp("leave", APP)


def test_docker_syntax_refuses_a_newline_and_leaves_nothing(
    cluster: Cluster, namespace: str, session: Session
) -> None:
    ws = session.ws
    deploy(cluster, namespace)
    env_file = ws.home / "app.docker.env"
    done = intercept(ws, namespace, "--env-file", str(env_file), "--env-syntax", "docker")
    try:
        assert done.returncode == 2, done.stdout + done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert "has a newline, which docker's --env-file cannot carry" in lines[0], lines
        assert "the intercept was removed" in lines[0], lines
        assert not env_file.exists()
        assert intercepts(ws) == []
    finally:
        if intercepts(ws):
            ws.kp("leave", APP)


def test_an_unknown_syntax_is_refused_before_anything(
    cluster: Cluster, namespace: str, session: Session
) -> None:
    deploy(cluster, namespace)
    done = intercept(session.ws, namespace, "--env-file", "x.env", "--env-syntax", "yaml")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "unknown env syntax 'yaml' (choose from dotenv, sh, docker)" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert intercepts(session.ws) == []
    annotations = cluster.get("deployment", APP, "-n", namespace)["spec"]["template"]["metadata"]
    assert "annotations" not in annotations or not any(
        k.startswith("kubepresence.io/") for k in annotations["annotations"]
    ), annotations
