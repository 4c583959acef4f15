"""The kubepresence images build from the project's wheels and run on the local cluster.

Scenarios:
- `localhost/kubepresence-manager:<version>` and `localhost/kubepresence-agent:<version>` are
  built without a registry or engine, imported into the cluster's containerd, and each
  part's application module (and the shared protocol package) imports inside a pod.
"""

from __future__ import annotations

import pytest
from kpcluster import imagebuild, lifecycle
from kpcluster.harness import Cluster


@pytest.fixture(scope="module")
def kubepresence_images(cluster: Cluster) -> dict[str, str]:
    built = imagebuild.build_kubepresence_images(imagebuild.project_version())
    for image in built:
        lifecycle.import_image(image)
    return {image.name.split("/")[-1].split(":")[0]: image.name for image in built}


@pytest.mark.parametrize("part", ["manager", "agent"])
def test_part_image_runs_in_a_pod(
    cluster: Cluster, namespace: str, kubepresence_images: dict[str, str], part: str
) -> None:
    image = kubepresence_images[f"kubepresence-{part}"]
    code = f"import kubepresence.{part}.app, kubepresence.protocol; print('loaded', '{part}')"
    phase, log = cluster.run_pod(namespace, f"{part}-smoke", image, ["python3", "-c", code])
    assert (phase, log.strip()) == ("Succeeded", f"loaded {part}")
