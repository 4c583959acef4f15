"""Building the cluster's container images from source, cached by their inputs.

Images: pause (static C), CoreDNS (the binary from build-binaries.sh), the test workloads
(stdlib Python on a debootstrap base) and the kubepresence manager and agent (the project's
own wheels on the same base). Every tarball's file name carries a hash of its inputs, so a
warm machine rebuilds nothing and a changed input never reuses a stale image.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import layout, mounts
from .commands import ClusterError, run
from .images import (
    FileSpec,
    ImageConfig,
    Layer,
    write_docker_archive,
    write_layer_from_dir,
    write_layer_from_files,
)

log = logging.getLogger(__name__)

PAUSE_IMAGE = "localhost/pause:3.10.1"
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3",)
# The agent image doubles as the init container that redirects numeric ports (iptables).
AGENT_PACKAGES = (*BASE_PACKAGES, "iptables")
# Bump when the base recipe changes in a way the other inputs do not capture.
BASE_RECIPE = "1"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TESTAPPS_DIR = layout.IMAGES_SRC / "testapps"
TESTAPPS_IN_IMAGE = "/opt/testapps"
KUBEPRESENCE_SITE = "/opt/kubepresence/site-packages"


@dataclass(frozen=True)
class BuiltImage:
    """An image tarball ready for `ctr images import`, and the name it carries."""

    name: str
    tarball: Path


def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def _files_digest(paths: Sequence[Path]) -> str:
    return _digest(
        *[p.name + ":" + hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(paths)]
    )


def _prune(cache: Path, prefix: str, keep: Path) -> None:
    """Drop tarballs of earlier inputs: each holds a full copy of its layers (~150 MB)."""
    for old in cache.glob(f"{prefix}-*.tar"):
        if old != keep:
            old.unlink()


def debian_mirror(
    sources: Path = Path("/etc/apt/sources.list.d/debian.sources"),
    legacy: Path = Path("/etc/apt/sources.list"),
) -> str:
    """The machine's Debian mirror for the base suite, read at run time (never hardcoded)."""
    if sources.exists():
        for stanza in re.split(r"\n\s*\n", sources.read_text()):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if ":" in line and not line.lstrip().startswith("#"):
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.strip()
            suites = fields.get("suites", "").split()
            if (
                BASE_SUITE in suites
                and "deb" in fields.get("types", "").split()
                and fields.get("uris")
            ):
                return fields["uris"].split()[0]
    if legacy.exists():
        for line in legacy.read_text().splitlines():
            # "deb [options] URI suite components"; options are bracketed words, skip them.
            words = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == BASE_SUITE:
                return words[1]
    raise ClusterError(f"no Debian mirror for {BASE_SUITE} in {sources} or {legacy}")


# --- pause -------------------------------------------------------------------------------


def build_pause(cache: Path = layout.IMAGE_CACHE) -> BuiltImage:
    source = layout.IMAGES_SRC / "pause" / "pause.c"
    key = _digest(source.read_bytes(), PAUSE_IMAGE)
    tarball = cache / f"pause-{key}.tar"
    if not tarball.exists():
        with tempfile.TemporaryDirectory(prefix="kp-pause-") as tmp:
            binary = Path(tmp) / "pause"
            run(["gcc", "-Os", "-static", "-o", binary, source])
            run(["strip", binary])
            layer = write_layer_from_files(
                [FileSpec(binary, "/pause", 0o755)], Path(tmp) / "layer.tar"
            )
            write_docker_archive(
                PAUSE_IMAGE,
                [layer],
                ImageConfig(entrypoint=["/pause"], user="65535:65535"),
                tarball,
            )
    _prune(cache, "pause", tarball)
    return BuiltImage(PAUSE_IMAGE, tarball)


# --- CoreDNS -----------------------------------------------------------------------------


def coredns_version() -> str:
    gomod = (layout.CLUSTER_DIR / "go" / "coredns" / "go.mod").read_text()
    match = re.search(r"github\.com/coredns/coredns (v[0-9.]+)", gomod)
    if not match:
        raise ClusterError("cannot find the CoreDNS version in tests/cluster/go/coredns/go.mod")
    return match.group(1)


def build_coredns(cache: Path = layout.IMAGE_CACHE) -> BuiltImage:
    name = f"localhost/coredns:{coredns_version()}"
    binary = layout.binary("coredns").resolve()
    if not binary.exists():
        raise ClusterError(f"{binary} missing: run `cluster.py prepare` (build-binaries.sh)")
    key = _digest(name, hashlib.sha256(binary.read_bytes()).hexdigest())
    tarball = cache / f"coredns-{key}.tar"
    if not tarball.exists():
        with tempfile.TemporaryDirectory(prefix="kp-coredns-") as tmp:
            layer = write_layer_from_files(
                [FileSpec(binary, "/coredns", 0o755)], Path(tmp) / "layer.tar"
            )
            write_docker_archive(name, [layer], ImageConfig(entrypoint=["/coredns"]), tarball)
    _prune(cache, "coredns", tarball)
    return BuiltImage(name, tarball)


# --- Python base -------------------------------------------------------------------------


def base_layer(cache: Path = layout.CACHE, packages: Sequence[str] = BASE_PACKAGES) -> Layer:
    """The debootstrap minbase + python3 layer, built once per (mirror, packages, debootstrap)."""
    mirror = debian_mirror()
    debootstrap_version = run(["dpkg-query", "-W", "-f=${Version}", "debootstrap"]).stdout
    key = _digest(BASE_RECIPE, BASE_SUITE, mirror, ",".join(packages), debootstrap_version)
    home = cache / "base" / key
    layer_path, diff_file = home / "layer.tar", home / "diff_id"
    if layer_path.exists() and diff_file.exists():
        return Layer(layer_path, diff_file.read_text().strip())
    rootfs = home / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    home.mkdir(parents=True, exist_ok=True)
    log.info(
        "debootstrap %s (%s) from %s; takes about a minute",
        BASE_SUITE,
        ",".join(packages),
        mirror,
    )
    try:
        run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=" + ",".join(packages),
                BASE_SUITE,
                rootfs,
                mirror,
            ],
            timeout=900,
        )
    finally:
        # debootstrap mounts proc/sys inside the target; a failed run can leave them behind.
        mounts.unmount_under(rootfs)
    for junk in (
        "var/cache/apt/archives",
        "var/lib/apt/lists",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
    ):
        target = rootfs / junk
        if target.is_dir():
            for child in target.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    layer = write_layer_from_dir(rootfs, layer_path)
    diff_file.write_text(layer.diff_id + "\n")
    shutil.rmtree(rootfs)
    return layer


# --- test workloads ----------------------------------------------------------------------


def build_testapps(cache: Path = layout.IMAGE_CACHE) -> BuiltImage:
    """HTTP, TCP and UDP echo servers (stdlib Python) in one image, tagged by content."""
    base = base_layer()
    sources = sorted(TESTAPPS_DIR.glob("*.py"))
    key = _digest(base.diff_id, _files_digest(sources))
    name = f"localhost/kubepresence-testapps:{key[:12]}"
    tarball = cache / f"testapps-{key}.tar"
    if not tarball.exists():
        with tempfile.TemporaryDirectory(prefix="kp-testapps-") as tmp:
            specs = [FileSpec(p, f"{TESTAPPS_IN_IMAGE}/{p.name}", 0o644) for p in sources]
            app = write_layer_from_files(specs, Path(tmp) / "app.tar")
            write_docker_archive(
                name,
                [base, app],
                ImageConfig(
                    cmd=["python3", f"{TESTAPPS_IN_IMAGE}/http_echo.py"],
                    env=[PATH_ENV, "PYTHONUNBUFFERED=1"],
                ),
                tarball,
            )
    _prune(cache, "testapps", tarball)
    return BuiltImage(name, tarball)


# --- kubepresence manager and agent ------------------------------------------------------


def pip_command(cache: Path = layout.CACHE) -> list[str]:
    """A pip to build wheels with: this interpreter's, or (uv-made venvs have none) one in a
    private venv under the cache, made once from the standard library's ensurepip."""
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    venv_python = cache / "pip-venv" / "bin" / "python"
    if not venv_python.exists():
        run([sys.executable, "-m", "venv", cache / "pip-venv"], timeout=300)
    return [str(venv_python), "-m", "pip"]


def build_python_app_image(
    *,
    name: str,
    project_dirs: Sequence[Path],
    requirement: str,
    module: str,
    out: Path,
    constraints: Path | None = None,
    base: Layer | None = None,
) -> BuiltImage:
    """Wheels of project_dirs (+ dependencies) installed with --target into a layer on the base.

    Resolution happens on the host (Python 3.11, glibc 2.36 like the bookworm base), the
    install with --no-index from those wheels only, so the image holds exactly what was
    resolved. The entrypoint is `python3 -m module` with PYTHONPATH, since console scripts
    land in a bin/ directory the base's python3 does not know.
    """
    base = base or base_layer()
    with tempfile.TemporaryDirectory(prefix="kp-app-") as tmp_str:
        tmp = Path(tmp_str)
        wheels = tmp / "wheels"
        pip = pip_command()
        cmd: list[str | Path] = [*pip, "wheel", "--wheel-dir", wheels]
        if constraints is not None:
            cmd += ["-c", constraints]
        run([*cmd, *project_dirs], timeout=900)
        staging = tmp / "root"
        site = staging / KUBEPRESENCE_SITE.strip("/")
        # The wheelhouse is exactly the closure pip resolved for project_dirs; install it as
        # is. (Resolving again would follow the parts' `name @ file://` references back to
        # the source trees and need their build backend, offline.)
        run(
            [
                *pip,
                "install",
                "--no-deps",
                "--no-index",
                "--no-compile",
                "--target",
                site,
                *sorted(wheels.glob("*.whl")),
            ],
            timeout=600,
        )
        if not (site / module.replace(".", "/")).exists():
            raise ClusterError(f"{requirement} did not install module {module}")
        # Bytecode compiled once here, as an image build does, not by every container start
        # (kubernetes_asyncio alone: ~1.3 s and a peak of ~40 MiB). Unchecked hashes, since
        # the layer's timestamps are not the sources' (the host's 3.11 matches the base's).
        run(
            [sys.executable, "-m", "compileall", "-q", "-j0",
             "--invalidation-mode", "unchecked-hash", site],
            timeout=600,
        )  # fmt: skip
        # Console-script shims point at the build host's interpreter; the image runs `-m`.
        shutil.rmtree(site / "bin", ignore_errors=True)
        app = write_layer_from_dir(staging, tmp / "app.tar")
        write_docker_archive(
            name,
            [base, app],
            ImageConfig(
                entrypoint=["python3", "-m", module],
                env=[PATH_ENV, f"PYTHONPATH={KUBEPRESENCE_SITE}", "PYTHONUNBUFFERED=1"],
            ),
            out,
        )
    return BuiltImage(name, out)


def project_version() -> str:
    """The version in packages/manager/pyproject.toml: the default tag of both images."""
    text = (layout.REPO / "packages" / "manager" / "pyproject.toml").read_text()
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
    if not match:
        raise ClusterError("no version in packages/manager/pyproject.toml")
    return match.group(1)


def build_kubepresence_images(version: str, cache: Path = layout.IMAGE_CACHE) -> list[BuiltImage]:
    """localhost/kubepresence-manager:<version> and localhost/kubepresence-agent:<version>."""
    packages = layout.REPO / "packages"
    parts = {
        "manager": [packages / "protocol", packages / "manager"],
        "agent": [packages / "protocol", packages / "agent"],
    }
    missing = [d for dirs in parts.values() for d in dirs if not (d / "pyproject.toml").exists()]
    if missing:
        raise ClusterError("kubepresence packages not found: " + ", ".join(map(str, missing)))
    constraints = layout.REPO / "constraints.txt"
    built = []
    for part, dirs in parts.items():
        built.append(
            build_python_app_image(
                name=f"localhost/kubepresence-{part}:{version}",
                project_dirs=dirs,
                requirement=f"kubepresence-{part}",
                module=f"kubepresence.{part}",
                out=cache / f"kubepresence-{part}-{version}.tar",
                constraints=constraints if constraints.exists() else None,
                base=base_layer(packages=AGENT_PACKAGES) if part == "agent" else None,
            )
        )
    return built


def cluster_images() -> list[BuiltImage]:
    """The images every cluster start imports."""
    return [build_pause(), build_coredns(), build_testapps()]


def write_catalogue(images: Sequence[BuiltImage], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({i.name.split("/")[-1].split(":")[0]: i.name for i in images}, indent=1)
    )
