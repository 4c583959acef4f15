"""Images built by a real container engine from deploy/images/*.Dockerfile pass the smoke.

Scenarios:
- buildah builds the manager and agent Dockerfiles unchanged but for `--build-arg BASE=`
  (a local base made from the debootstrap layer, no registry) into
  localhost/kp-engine/kubepresence-{manager,agent}:<version>; a second build is a cache hit
  and leaves no buildah container behind;
- a Dockerfile step that fails: the build fails with buildah's message naming the step
  and leaves no working container and no mount behind;
- a registry that is not one (`KUBEPRESENCE_REGISTRY=localhost/kp-engine/`): `connect` says
  so in one line, exit 2, and installs nothing;
- `connect` with KUBEPRESENCE_REGISTRY=localhost/kp-engine installs a manager whose pod
  runs the engine-built manager image (the reference and the image id buildah gave it);
  with KUBEPRESENCE_IMAGE_PULL_SECRETS the manager pod names those Secrets, and so do the
  pods the webhook injects the agent into (the images are present, so nothing is pulled);
- from the workstation, a Service answers by name (`curl http://echo.<ns>/…`);
- a global intercept of that Service injects an agent running the engine-built agent image,
  and a request from a pod in the cluster reaches a server on the workstation; after
  `leave` the cluster's pod answers again.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kpcluster import enginebuild, lifecycle
from kpcluster.commands import ClusterError
from kpcluster.harness import Cluster
from kpcluster.imagebuild import BuiltImage
from workstation_cli import Workstation
from workstation_servers import answering_server, get_from_pod

from kubepresence.protocol.workloads import AGENT_CONTAINER

LOCAL_PORT = 8090
MANAGER_SELECTOR = "app.kubernetes.io/name=kubepresence-manager"
PULL_SECRET = "kp-engine-pull"


def image_id(image: BuiltImage) -> str:
    """The image id (config digest) buildah gave the image, from its exported archive: what
    kubelet reports as a running container's imageID."""
    with tarfile.open(image.tarball) as archive:
        member = archive.extractfile("manifest.json")
        assert member is not None
        (entry,) = json.load(member)
    return "sha256:" + str(entry["Config"]).removesuffix(".json")


@pytest.fixture(scope="module")
def engine_images(cluster: Cluster) -> dict[str, BuiltImage]:
    """The engine-built images, in the node's containerd under their own names."""
    started = time.monotonic()
    built = enginebuild.build_with_engine()
    first = time.monotonic() - started
    started = time.monotonic()
    again = enginebuild.build_with_engine()
    warm = time.monotonic() - started
    print(f"engine build: {first:.1f} s, cached: {warm:.1f} s")
    assert again == built  # same inputs, same tarballs: nothing rebuilt
    assert warm < 30, f"a cached engine build took {warm:.0f} s"
    assert enginebuild.leftovers() == []
    for image in built:
        lifecycle.import_image(image)
    return {image.name.rsplit("/", 1)[-1].split(":")[0]: image for image in built}


@pytest.fixture
def local_server(cluster: Cluster) -> Iterator[subprocess.Popen[str]]:
    with answering_server(cluster, LOCAL_PORT, "workstation says hi to {path}") as process:
        yield process


def pod_containers(cluster: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    """(name, image, imageID) of every running container of the selected pods."""
    pods = cluster.get("pods", "-n", namespace, "-l", selector)["items"]
    out = []
    for pod in pods:
        if pod["metadata"].get("deletionTimestamp"):
            continue
        spec = {c["name"]: c["image"] for c in pod["spec"]["containers"]}
        out += [
            {
                "name": status["name"],
                "spec_image": spec[status["name"]],
                "image": status["image"],
                "image_id": status["imageID"],
                "running": "running" in status.get("state", {}),
            }
            for status in pod.get("status", {}).get("containerStatuses", [])
        ]
    return out


def pull_secrets(cluster: Cluster, namespace: str, selector: str) -> list[list[str]]:
    """The imagePullSecrets of each live selected pod."""
    pods = cluster.get("pods", "-n", namespace, "-l", selector)["items"]
    return [
        [ref["name"] for ref in pod["spec"].get("imagePullSecrets", [])]
        for pod in pods
        if not pod["metadata"].get("deletionTimestamp")
    ]


def test_engine_built_images_pass_the_smoke(
    cluster: Cluster,
    namespace: str,
    workstation: Workstation,
    manager_namespace: str,
    engine_images: dict[str, BuiltImage],
    local_server: subprocess.Popen[str],
) -> None:
    manager_image = engine_images["kubepresence-manager"].name
    agent_image = engine_images["kubepresence-agent"].name
    assert manager_image.startswith(enginebuild.ENGINE_REGISTRY + "/")
    cluster.deploy_echo("http", namespace, named_target_port=True)
    client = cluster.client_pod(namespace)

    workstation.env["KUBEPRESENCE_REGISTRY"] = enginebuild.ENGINE_REGISTRY + "/"
    refused = workstation.kp("connect", "--manager-namespace", manager_namespace)
    assert refused.returncode == 2, refused.stderr
    assert "is not a registry host" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert cluster.kubectl("get", "namespace", manager_namespace, "--ignore-not-found") == ""

    workstation.env["KUBEPRESENCE_REGISTRY"] = enginebuild.ENGINE_REGISTRY
    workstation.env["KUBEPRESENCE_IMAGE_PULL_SECRETS"] = PULL_SECRET
    connected = workstation.kp("connect", "--manager-namespace", manager_namespace)
    assert connected.returncode == 0, connected.stderr + workstation.logs()
    (manager,) = pod_containers(cluster, manager_namespace, MANAGER_SELECTOR)
    assert manager["spec_image"] == manager_image
    assert manager["image"] == manager_image
    assert manager["running"]
    assert manager["image_id"] == image_id(engine_images["kubepresence-manager"]), manager
    assert pull_secrets(cluster, manager_namespace, MANAGER_SELECTOR) == [[PULL_SECRET]]

    by_name = workstation.run(
        "curl", "-sS", "--max-time", "20", f"http://echo.{namespace}/by-name", timeout=60
    )
    assert by_name.returncode == 0, by_name.stderr + workstation.logs()
    assert json.loads(by_name.stdout)["pod"].startswith("echo-")

    intercepted = workstation.kp(
        "intercept", "echo", "--port", f"{LOCAL_PORT}:http", "-n", namespace, timeout=240
    )
    assert intercepted.returncode == 0, intercepted.stderr + workstation.logs()
    agents = [
        c for c in pod_containers(cluster, namespace, "app=echo") if c["name"] == AGENT_CONTAINER
    ]
    assert agents, pod_containers(cluster, namespace, "app=echo")
    for agent in agents:
        assert agent["spec_image"] == agent_image
        assert agent["running"]
        assert agent["image_id"] == image_id(engine_images["kubepresence-agent"]), agent
    assert pull_secrets(cluster, namespace, "app=echo") == [[PULL_SECRET]] * len(agents)
    during = get_from_pod(cluster, namespace, client, f"http://echo.{namespace}/during")
    assert during == {"status": 200, "body": "workstation says hi to /during"}

    left = workstation.kp("leave", "echo")
    assert left.returncode == 0, left.stderr
    after = get_from_pod(cluster, namespace, client, f"http://echo.{namespace}/after")
    assert after.get("status") == 200, after
    assert json.loads(after["body"])["pod"].startswith("echo-")


def test_a_failing_build_leaves_nothing_behind(
    engine_images: dict[str, BuiltImage], tmp_path: Path
) -> None:
    (tmp_path / "Dockerfile").write_text(
        f"FROM {enginebuild.base_image()}\nRUN echo half-done > /tmp/x && false\n"
    )
    with pytest.raises(ClusterError, match=r'building at STEP "RUN echo half-done'):
        enginebuild.buildah(
            "build", "--pull=never", "--network", "none", "-t", "localhost/kp-fails:x", tmp_path
        )
    assert enginebuild.leftovers() == []
    storage = str(enginebuild.ENGINE_HOME)
    assert [m for m in Path("/proc/mounts").read_text().splitlines() if storage in m] == []
