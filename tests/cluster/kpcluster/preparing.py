"""Making a machine able to run the cluster: Debian packages, binaries, image tarballs.

Everything is skipped when already present, so `up` can call this on every run.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

from . import imagebuild, layout
from .commands import ClusterError, run

log = logging.getLogger(__name__)

APT_PACKAGES = (
    "containerd",
    "runc",
    "containernetworking-plugins",
    "iptables",
    "nftables",
    "conntrack",
    "debootstrap",
    "iproute2",
    "curl",
    "gcc",
    "libc6-dev",
    "binutils",
    # `intercept --mount` on the workstation: sshfs (+ fuse3's fusermount3)
    "sshfs",
)
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


def missing_packages() -> list[str]:
    missing = []
    for pkg in APT_PACKAGES:
        proc = run(["dpkg-query", "-W", "-f=${Status}", pkg], check=False)
        if "install ok installed" not in proc.stdout:
            missing.append(pkg)
    return missing


def install_packages() -> None:
    missing = missing_packages()
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
