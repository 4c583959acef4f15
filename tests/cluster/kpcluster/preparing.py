"""Making a machine able to run the cluster: Debian packages, binaries, image tarballs.

Everything is skipped when already present, so `up` can call this on every run.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

from . import imagebuild, layout, programs
from .commands import ClusterError, run

log = logging.getLogger(__name__)

POLICY_RC = Path("/usr/sbin/policy-rc.d")
BINARIES = (
    ("kubernetes", "kube-apiserver"),
    ("kubernetes", "kube-controller-manager"),
    ("kubernetes", "kube-scheduler"),
    ("kubernetes", "kubelet"),
    ("kubernetes", "kube-proxy"),
    ("kubernetes", "kubectl"),
    ("etcd", "etcd"),
    ("coredns", "coredns"),
    ("crictl", "crictl"),
)


def install_packages() -> None:
    """Install the package of every program the project runs that is not on PATH yet.

    The first step of every command that changes the machine: nothing may call a program
    before this (a fresh Debian 12 has no nft, iptables, containerd ...; see programs.py)."""
    missing = programs.missing_packages()
    if not missing:
        return
    log.info("installing Debian packages: %s", " ".join(missing))
    # A policy-rc.d that exits 101 stops postinst scripts from starting containerd & co.
    created_policy = not POLICY_RC.exists()
    if created_policy:
        POLICY_RC.write_text("#!/bin/sh\nexit 101\n")
        POLICY_RC.chmod(0o755)
    try:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "update"], timeout=600, env=env)
        run(["apt-get", "install", "-y", "--no-install-recommends", *missing], timeout=900, env=env)
    finally:
        if created_policy:
            POLICY_RC.unlink()


def missing_binaries() -> list[Path]:
    return [p for c, n in BINARIES if not (p := layout.binary(c, n)).exists()]


def build_binaries() -> None:
    """Run build-binaries.sh (a no-op when warm; tens of minutes when cold), output streamed."""
    if shutil.which("go") is None:
        raise ClusterError("Go toolchain not found: needed to build Kubernetes from Go modules")
    script = layout.CLUSTER_DIR / "build-binaries.sh"
    log.info("building binaries with %s", script)
    proc = subprocess.run(["bash", str(script)], timeout=3 * 3600, check=False)
    if proc.returncode != 0:
        raise ClusterError(f"{script} failed with exit code {proc.returncode}")


def prepare(*, build: bool = True) -> list[imagebuild.BuiltImage]:
    """Install packages, build binaries if missing, build image tarballs; return the images."""
    install_packages()
    if missing_binaries():
        if not build:
            raise ClusterError("binaries missing: " + ", ".join(map(str, missing_binaries())))
        build_binaries()
    still = missing_binaries()
    if still:
        raise ClusterError("build-binaries.sh did not produce: " + ", ".join(map(str, still)))
    return imagebuild.cluster_images()
