"""Every program the project runs on the host, and the Debian package that brings it.

This is the one list. `preparing.install_packages()` installs the package of every program
(or file) missing here before anything else runs, and `commands.run` refuses a bare program
name that is not listed, so a new command cannot slip in without its install step. A unit
test (tests/cluster/tests/test_cluster_programs.py) also checks every literal command line
in the tree, product and tests alike, against this table: a fresh Debian 12 machine has
none of these (notes §1), and a prepared machine hides the gap.

Programs are found on PATH (`shutil.which`), so a PATH without them is an honest fresh
machine for the tests. Binaries the project builds itself (kubectl, crictl, helm ...) are
run by absolute path from the cache and are not listed.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

# program name -> Debian package. Sorted by package.
PROGRAMS: dict[str, str] = {
    "apt-get": "apt",
    "strip": "binutils",
    "buildah": "buildah",
    "containerd": "containerd",
    "containerd-shim-runc-v2": "containerd",
    "ctr": "containerd",
    "conntrack": "conntrack",
    "curl": "curl",
    "debootstrap": "debootstrap",
    "dpkg-query": "dpkg",
    "fusermount3": "fuse3",
    "gcc": "gcc",
    "getent": "libc-bin",
    "git": "git",
    "ip": "iproute2",
    "ss": "iproute2",
    "iptables": "iptables",
    "iptables-save": "iptables",
    "ip6tables": "iptables",
    "ip6tables-save": "iptables",
    "nft": "nftables",
    "runc": "runc",
    "sshfs": "sshfs",
    "mount": "mount",
    "umount": "mount",
    "nsenter": "util-linux",
    "setpriv": "util-linux",
    "unshare": "util-linux",
}
# Packages used through a file rather than a program on PATH.
FILES: dict[Path, str] = {
    Path("/usr/lib/cni/bridge"): "containernetworking-plugins",  # containerd's CNI plugins
    Path("/usr/include/stdio.h"): "libc6-dev",  # gcc -static of the pause binary
}
# Always there where this code runs at all (the interpreter and Go are what the README asks
# a fresh machine to have; `bash` runs build-binaries.sh; `go` is checked where it is used).
BASE_PROGRAMS = frozenset({"bash", "sh", "env", "go", "python", "python3", "sudo"})


def package_of(program: str) -> str | None:
    """The Debian package that installs a program, or None if the list does not know it."""
    return PROGRAMS.get(Path(program).name)


def is_known(program: str) -> bool:
    """Whether `commands.run` may start this program (a bare name must be in the list)."""
    name = Path(program).name
    return name in PROGRAMS or name in BASE_PROGRAMS or Path(program).is_absolute()


def missing_packages(which: Callable[[str], str | None] = shutil.which) -> list[str]:
    """Packages to install: those of every listed program not on PATH or file not present."""
    missing = {pkg for prog, pkg in PROGRAMS.items() if which(prog) is None}
    missing |= {pkg for path, pkg in FILES.items() if not path.exists()}
    return sorted(missing)
