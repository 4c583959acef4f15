"""Every program the project runs is installed by the project first (issue 15, item 1).

Scenarios:
- Every literal command line in the tree (kpcluster, the product's daemons, the tests, the
  benchmarks and tools) names a program that kpcluster/programs.py lists with the Debian
  package that installs it, or one the README asks a fresh machine to have.
- `commands.run` refuses a program the list does not know, and a listed one missing from
  PATH fails in one line naming its package, not with a FileNotFoundError traceback.
- A fresh machine, simulated honestly: `cluster.py up` in a private mount namespace (fresh
  tmpfs over the cluster's directories, so nothing of the host's is seen or touched) with a
  PATH that holds none of the listed programs, only an `apt-get` that records its
  arguments and refuses. The install step is reached first, asks for every package, and
  the failure is one line; nothing else ran before it (on the code of the issue, `nft`
  was called first and the run ended in a traceback).
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from kpcluster import commands, programs

REPO = Path(__file__).resolve().parents[3]
SCANNED = [
    REPO / "tests" / "cluster" / "kpcluster",
    REPO / "tests" / "cluster" / "cluster.py",
    REPO / "tests" / "e2e",
    REPO / "tests" / "component",
    REPO / "tests" / "teardown",
    REPO / "benchmarks",
    REPO / "tools",
    *(p / "src" for p in (REPO / "packages").iterdir() if (p / "src").is_dir()),
]
# Calls whose first argument is a command line (argv list or program name).
EXEC_CALLS = {
    "run",
    "Popen",
    "check_output",
    "check_call",
    "call",
    "create_subprocess_exec",
    "execvp",
    "execvpe",
}
# Programs the project builds itself (run by absolute path from its cache or venv) and
# programs of this project's own packages; they are not Debian's to install.
OWN = {"rootd", "userd", "kubepresence", "kubectl", "helm", "crictl", "etcd"}
# Run inside the cluster's images, not on the host (the agent's init container).
IN_IMAGE = {"iptables-restore"}


def _first_word(node: ast.expr, consts: dict[str, ast.expr]) -> str | None:
    if isinstance(node, (ast.List, ast.Tuple)) and node.elts:
        first = node.elts[0]
        return _first_word(first.value if isinstance(first, ast.Starred) else first, consts)
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.strip():
        return node.value.split()[0]
    if isinstance(node, ast.Name) and node.id in consts:
        return _first_word(consts[node.id], consts)
    return None


def invoked_programs() -> dict[str, list[str]]:
    """Program name -> the places (file:line) that run it, from literal command lines."""
    found: dict[str, list[str]] = {}
    files = [p for root in SCANNED for p in ([root] if root.is_file() else root.rglob("*.py"))]
    for path in files:
        if "/gen/" in str(path):
            continue
        tree = ast.parse(path.read_text())
        consts = {
            target.id: node.value
            for node in tree.body
            if isinstance(node, ast.Assign)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for node, in_command in _walk(tree):
            word = None
            if isinstance(node, ast.Call) and node.args and _runs_a_command(node):
                word = _first_word(node.args[0], consts)
            elif (
                in_command
                and isinstance(node, ast.List)
                and node.elts
                and isinstance(node.elts[0], ast.Name)
            ):
                # A command line built from a module constant, e.g. [SSHFS, "-f", ...].
                word = _first_word(node.elts[0], consts)
            if word:
                found.setdefault(Path(word).name, []).append(
                    f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"
                )
    return found


def _walk(tree: ast.AST) -> list[tuple[ast.AST, bool]]:
    """Every node, with whether it sits where command lines are built: a function named
    *command*, or a loop over `command`."""
    out: list[tuple[ast.AST, bool]] = []

    def visit(node: ast.AST, in_command: bool) -> None:
        out.append((node, in_command))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_command = in_command or "command" in node.name
        if isinstance(node, ast.For) and isinstance(node.target, ast.Name):
            in_command = in_command or node.target.id == "command"
        for child in ast.iter_child_nodes(node):
            visit(child, in_command)

    visit(tree, False)
    return out


# Test helpers that take a program and its arguments as separate words: ws.run("curl", ...).
WORD_RUNNERS = {"ws", "workstation"}


def _runs_a_command(call: ast.Call) -> bool:
    """subprocess.run(...), asyncio.create_subprocess_exec(...), os.execvpe(...),
    kpcluster's own run(...), or any X.run([argv...]) of the test helpers; not a method
    that merely shares the name and takes no command line (client.run("latency", ...))."""
    func = call.func
    if isinstance(func, ast.Name):
        return func.id in EXEC_CALLS
    if not (isinstance(func, ast.Attribute) and func.attr in EXEC_CALLS):
        return False
    if isinstance(func.value, ast.Name) and func.value.id in ("subprocess", "asyncio", "os"):
        return True
    if isinstance(func.value, ast.Name) and func.value.id in WORD_RUNNERS:
        return True
    return isinstance(call.args[0], (ast.List, ast.Tuple))


def test_the_scan_sees_the_commands_it_must() -> None:
    found = invoked_programs()
    # The scan works: it finds what the cluster, rootd and userd's mounts are known to run.
    for program in ("nft", "ip", "ctr", "debootstrap", "gcc", "sshfs", "fusermount3", "curl"):
        assert program in found, program


def test_every_program_run_is_in_the_install_list() -> None:
    unlisted = {
        program: places
        for program, places in invoked_programs().items()
        if program not in programs.PROGRAMS
        and program not in programs.BASE_PROGRAMS
        and program not in OWN
        and program not in IN_IMAGE
    }
    assert unlisted == {}, "add these to kpcluster/programs.py with their Debian package"


def test_run_refuses_a_program_nothing_installs() -> None:
    with pytest.raises(commands.ClusterError, match=r"not in kpcluster/programs\.py"):
        commands.run(["cowsay", "moo"])


def test_a_listed_program_missing_from_path_names_its_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(commands.ClusterError) as caught:
        commands.run(["nft", "list", "tables"])
    assert str(caught.value) == (
        "nft not found (Debian package nftables: `cluster.py prepare` installs it)"
    )


def test_missing_packages_are_those_of_absent_programs() -> None:
    present = {"ip", "ss", "apt-get", "dpkg-query"}
    missing = programs.missing_packages(lambda p: f"/usr/bin/{p}" if p in present else None)
    assert "nftables" in missing
    assert "iproute2" not in missing
    assert missing == sorted(set(missing))


NEEDS_ROOT = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare (a private mount namespace that looks like a fresh machine)",
)
FRESH_DIRS = (
    "/run/kubepresence-cluster",
    "/etc/kubepresence-cluster",
    "/var/lib/kubepresence-cluster",
    "/var/cache/kubepresence-cluster",
)


@NEEDS_ROOT
def test_up_on_a_fresh_machine_reaches_the_install_step_first(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "apt-get.calls"
    apt_get = bin_dir / "apt-get"
    apt_get.write_text(
        f'#!/bin/sh\necho "$*" >> {calls}\necho "E: refused by the test" >&2\nexit 100\n'
    )
    apt_get.chmod(0o755)
    # Only the interpreter, the shell the stub needs, and the stub: none of the listed
    # programs (a fresh Debian 12 has python3, sh and apt-get, and none of them either).
    for program in ("sh",):
        found = shutil.which(program)
        assert found
        (bin_dir / program).symlink_to(found)
    mounts = " && ".join(f"/bin/mkdir -p {d} && /bin/mount -t tmpfs tmpfs {d}" for d in FRESH_DIRS)
    script = f"{mounts} && exec {sys.executable} {REPO / 'tests/cluster/cluster.py'} up"
    done = subprocess.run(
        [
            shutil.which("unshare") or "unshare",
            "-m",
            "--propagation",
            "private",
            "/bin/sh",
            "-c",
            script,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    recorded = calls.read_text().splitlines()
    assert recorded[0] == "update", recorded
    assert len(recorded) == 1, "apt-get update failed, so nothing more may be tried"
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, done.stderr
    assert "apt-get update exited 100" in errors[0]
    # Before the install step, nothing that needs an installed program may have run.
    assert "not found" not in done.stderr, done.stderr


def test_install_asks_for_the_package_of_every_missing_program(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from kpcluster import preparing

    asked: list[list[str]] = []

    def fake_run(argv: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        asked.append([str(a) for a in argv])
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(preparing, "run", fake_run)
    monkeypatch.setattr(preparing, "POLICY_RC", tmp_path / "policy-rc.d")
    monkeypatch.setattr(programs, "FILES", {})
    monkeypatch.setenv("PATH", str(tmp_path))
    preparing.install_packages()
    assert asked[0] == ["apt-get", "update"]
    install = asked[1]
    assert install[:4] == ["apt-get", "install", "-y", "--no-install-recommends"]
    assert sorted(install[4:]) == sorted(set(programs.PROGRAMS.values()))
