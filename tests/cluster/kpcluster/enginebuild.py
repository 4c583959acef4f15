"""Building deploy/images/*.Dockerfile with a real container engine (buildah), no registry.

The harness writes its images without an engine (imagebuild.py). Users build the
Dockerfiles; this module builds exactly those files, so the end-to-end smoke can prove that
what users build works. There is no registry here (no docker.io), so the base is made
locally: the debootstrap bookworm layer imagebuild.py already makes (python3 is 3.11 there),
plus pip, shaped like python:3.11-slim-bookworm by tests/cluster/base.Dockerfile and
committed into buildah's storage as localhost/kubepresence-base:<key>. The Dockerfiles get
only `--build-arg BASE=` that image; `pip` reaches PyPI and the agent's `apt-get` the
machine's Debian mirror through `--network host`.

buildah's storage (overlay) lives under the cluster's cache (`layout.CACHE/engine`), so the
machine's own container storage is never touched and `cluster.py down` has nothing to
remove. Results are cached as docker-archive tarballs whose names carry a hash of every
input (Dockerfile, base, constraints, the packages' sources, buildah's version): a warm run
builds nothing. The images carry their own registry path, ENGINE_REGISTRY, so the cluster
holds them next to the harness's images under distinct names.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from . import imagebuild, layout
from .commands import ClusterError, run
from .imagebuild import BuiltImage

log = logging.getLogger(__name__)

ENGINE_HOME = layout.CACHE / "engine"
# Passed as the on-demand install's registry: images are <ENGINE_REGISTRY>/kubepresence-*.
ENGINE_REGISTRY = "localhost/kp-engine"
BASE_IMAGE = "localhost/kubepresence-base"
BASE_DOCKERFILE = layout.CLUSTER_DIR / "base.Dockerfile"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Debian's pip for the wheel step (the slim image has pip too); the agent stage installs
# iptables itself, as in the slim image.
BASE_PACKAGES = ("python3", "python3-pip")
PARTS = ("manager", "agent")
# Kept in step with the repository's .dockerignore: what the build context leaves out does
# not count towards the cache key either.
IGNORED_DIRS = frozenset({"__pycache__", ".venv", "dist", "build", ".mypy_cache"})
BUILD_TIMEOUT = 900


def _buildah_argv(*args: str | Path) -> list[str | Path]:
    """buildah on the project's own storage (never the machine's /var/lib/containers)."""
    return [
        "buildah",
        "--root",
        ENGINE_HOME / "storage",
        "--runroot",
        ENGINE_HOME / "run",
        "--storage-driver",
        "overlay",
        *args,
    ]


def buildah(*args: str | Path, timeout: float = 120) -> str:
    """Run buildah on the project's storage. `build` runs without --layers, so buildah removes
    its working containers (and their mounts) whether the build succeeds or fails."""
    return run(_buildah_argv(*args), timeout=timeout).stdout


def engine_version() -> str:
    return run(["buildah", "--version"]).stdout.strip()


def _source_files(directory: Path) -> list[Path]:
    return sorted(
        p
        for p in directory.rglob("*")
        if p.is_file()
        and not IGNORED_DIRS.intersection(p.relative_to(directory).parts)
        and p.suffix != ".pyc"
        and not any(part.endswith(".egg-info") for part in p.parts)
    )


def _tree_digest(directories: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for directory in directories:
        for path in _source_files(directory):
            h.update(str(path.relative_to(layout.REPO)).encode() + b"\0")
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def _image_exists(name: str) -> bool:
    return run(_buildah_argv("inspect", "--type", "image", name), check=False).returncode == 0


def base_image() -> str:
    """localhost/kubepresence-base:<key>, committed into buildah's storage once per input."""
    layer = imagebuild.base_layer(packages=BASE_PACKAGES)
    if not HOST_CA_BUNDLE.exists():
        raise ClusterError(f"{HOST_CA_BUNDLE} missing (Debian package ca-certificates)")
    bundle = HOST_CA_BUNDLE.read_bytes()
    key = imagebuild._digest(layer.diff_id, BASE_DOCKERFILE.read_bytes(), bundle, engine_version())
    name = f"{BASE_IMAGE}:{key[:12]}"
    if _image_exists(name):
        return name
    log.info("committing the local base image %s", name)
    (layer.path.parent / HOST_CA_BUNDLE.name).write_bytes(bundle)  # the build context
    started = time.monotonic()
    buildah(
        "build",
        "--pull=never",
        "--network",
        "none",
        "-f",
        BASE_DOCKERFILE,
        "-t",
        name,
        layer.path.parent,
        timeout=BUILD_TIMEOUT,
    )
    log.info("base image %s built in %.0f s", name, time.monotonic() - started)
    # Bases of earlier inputs: ~180 MB each, and nothing builds on them any more.
    listed = buildah("images", "--format", "{{.Name}}:{{.Tag}}")
    for old in listed.split():
        if old.startswith(BASE_IMAGE + ":") and old != name:
            buildah("rmi", old)
    return name


def build_with_engine(
    version: str | None = None, cache: Path = layout.IMAGE_CACHE
) -> list[BuiltImage]:
    """<ENGINE_REGISTRY>/kubepresence-manager:<version> and -agent, built by buildah from
    deploy/images/<part>.Dockerfile on the local base, exported as docker-archive tarballs."""
    version = version or imagebuild.project_version()
    base = base_image()
    constraints = layout.REPO / "constraints.txt"
    packages = layout.REPO / "packages"
    built = []
    for part in PARTS:
        dockerfile = layout.IMAGES_SRC / f"{part}.Dockerfile"
        name = f"{ENGINE_REGISTRY}/kubepresence-{part}:{version}"
        key = imagebuild._digest(
            name,
            base,
            engine_version(),
            dockerfile.read_bytes(),
            constraints.read_bytes(),
            (layout.REPO / ".dockerignore").read_bytes(),
            _tree_digest([packages / "protocol", packages / part]),
        )
        tarball = cache / f"engine-{part}-{key}.tar"
        if not tarball.exists():
            cache.mkdir(parents=True, exist_ok=True)
            log.info("buildah: building %s from %s", name, dockerfile.name)
            started = time.monotonic()
            buildah(
                "build",
                "--pull=never",
                "--network",
                "host",
                "--build-arg",
                f"BASE={base}",
                "-f",
                dockerfile,
                "-t",
                name,
                layout.REPO,
                timeout=BUILD_TIMEOUT,
            )
            partial = tarball.with_suffix(".partial")
            partial.unlink(missing_ok=True)
            buildah("push", name, f"docker-archive:{partial}:{name}", timeout=300)
            partial.rename(tarball)
            log.info("%s built and exported in %.0f s", name, time.monotonic() - started)
            # The image just replaced under the same name is dangling now: drop it.
            buildah("rmi", "--prune", timeout=300)
        imagebuild._prune(cache, f"engine-{part}", tarball)
        built.append(BuiltImage(name, tarball))
    return built


def leftovers() -> list[str]:
    """buildah working containers in the project's storage (a build must leave none)."""
    if not (ENGINE_HOME / "storage").exists():
        return []
    out = buildah("containers", "--all", "--format", "{{.ContainerName}}")
    return [line for line in out.splitlines() if line.strip()]
