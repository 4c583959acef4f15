"""Named network namespaces on a machine where /run/netns has never been a mount point.

Scenarios (issue 21), each in a private mount namespace with a tmpfs on /run, so it starts
as a fresh machine does and touches nothing of the host's:
- The trap itself: a pod namespace mounted on the plain directory, then the first
  `ip netns add` (the workstation's), and containerd's teardown cannot remove the pod's
  namespace ("Device or resource busy"), the state `cluster down` used to end in.
- With /run/netns made a shared mount point first (what bring-up now does before
  containerd starts), the same sequence tears down cleanly.
- Teardown of such a shadowed earlier run removes it: no nsfs mount, no file, and
  `ip netns list` answers without error.
- A shadowed namespace beside another tool's namespace is left alone with a warning (the
  other tool's namespace keeps working).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CLUSTER_DIR = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None,
    reason="needs root, unshare and ip (private mount and network namespaces)",
)

# Runs inside `unshare -m`: /run is a fresh tmpfs, /run/netns a plain directory (whether or
# not the host's cluster is up).
PRELUDE = """
import json, subprocess, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from kpcluster import layout, mounts, network

def sh(*argv):
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    return done.returncode, done.stderr.strip()

def pod_namespace(name):  # what containerd's CNI setup does: nsfs bound on a file
    path = layout.NETNS_DIR / name
    path.touch()
    assert sh("unshare", f"--net={path}", "true")[0] == 0

def pod_teardown(name):  # what containerd's teardown does: unmount, then remove the file
    return sh("ip", "netns", "del", name)

def state():
    listing = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=30, check=False
    )
    return {
        "nsfs": [p for p in mounts.mount_points() if p.startswith(str(layout.NETNS_DIR) + "/")],
        "files": sorted(p.name for p in layout.NETNS_DIR.iterdir()),
        "list_error": listing.stderr.strip(),
    }

# The host's own /run/netns (a running cluster's namespaces) detached in this namespace
# only, so its mounts do not show in our mountinfo; then a fresh /run over the rest.
for _ in range(5):
    if subprocess.run(["umount", "-l", "/run/netns"], capture_output=True, timeout=30).returncode:
        break
subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run"], check=True, timeout=30)
layout.NETNS_DIR.mkdir()
"""


def _in_private_mount_namespace(body: str) -> dict[str, object]:
    script = PRELUDE + body
    done = subprocess.run(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            sys.executable,
            "-c",
            script,
            str(CLUSTER_DIR),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_trap_a_pod_namespace_shadowed_by_the_first_ip_netns_add() -> None:
    result = _in_private_mount_namespace("""
pod_namespace("cni-a")
assert sh("ip", "netns", "add", "ws1")[0] == 0
rc, err = pod_teardown("cni-a")
print(json.dumps({"rc": rc, "err": err, **state()}))
""")
    assert result["rc"] != 0
    assert "busy" in str(result["err"]).lower()
    assert "/run/netns/cni-a" in result["nsfs"]  # type: ignore[operator]


def test_netns_dir_prepared_before_the_first_pod_tears_down_cleanly() -> None:
    result = _in_private_mount_namespace("""
network.prepare_netns_dir()
before = mounts.is_mount_point(layout.NETNS_DIR)
pod_namespace("cni-a")
assert sh("ip", "netns", "add", "ws1")[0] == 0
rc, err = pod_teardown("cni-a")
network.remove_namespaces({"ws1"})
print(json.dumps({"mount_point": before, "rc": rc, "err": err, **state()}))
""")
    assert result["mount_point"] is True
    assert (result["rc"], result["err"]) == (0, "")
    assert result["nsfs"] == []
    assert result["files"] == []
    assert result["list_error"] == ""


def test_teardown_removes_a_shadowed_earlier_run() -> None:
    result = _in_private_mount_namespace("""
pod_namespace("cni-a")
pod_namespace("cni-b")
assert sh("ip", "netns", "add", "ws1")[0] == 0
assert pod_teardown("cni-a")[0] != 0  # the trap: what an earlier run left
before = state()
network.remove_namespaces({"ws1", "cni-a", "cni-b"})
print(json.dumps({"before": before, **state()}))
""")
    before = result["before"]
    assert isinstance(before, dict)
    assert before["files"] == ["cni-a", "cni-b", "ws1"]
    assert "Peer netns reference is invalid" in before["list_error"]
    assert result["nsfs"] == []
    assert result["files"] == []
    assert result["list_error"] == ""


def test_a_shadowed_namespace_beside_another_tools_is_left_alone() -> None:
    result = _in_private_mount_namespace("""
pod_namespace("cni-a")
assert sh("ip", "netns", "add", "other-tool")[0] == 0
network.remove_namespaces({"cni-a"})
works = sh("ip", "netns", "exec", "other-tool", "true")[0] == 0
print(json.dumps({"other_works": works, **state()}))
""")
    assert result["other_works"] is True
    assert "other-tool" in result["files"]  # type: ignore[operator]
    assert "/run/netns/other-tool" in result["nsfs"]  # type: ignore[operator]
