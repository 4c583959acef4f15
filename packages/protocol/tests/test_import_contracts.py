"""The import contract "Generated protocol types stay in rpc/ modules" covers every part.

Scenarios:
- every module and subpackage of every part (cli, userd, rootd, manager, agent) outside
  that part's rpc/ package is a source module of the contract, so a new module cannot
  import `kubepresence.protocol.gen` unseen;
- the contract names no module that does not exist, and no rpc/ package.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PARTS = ("cli", "userd", "rootd", "manager", "agent")
CONTRACT = "Generated protocol types stay in rpc/ modules"


def contract_sources() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for contract in config["tool"]["importlinter"]["contracts"]:
        if contract["name"] == CONTRACT:
            assert contract["forbidden_modules"] == ["kubepresence.protocol.gen"]
            return set(contract["source_modules"])
    raise AssertionError(f"no contract named {CONTRACT!r} in pyproject.toml")


def modules_outside_rpc(src: Path) -> set[str]:
    """The top-level modules and subpackages of each part under `src`, but rpc/."""
    found = set()
    for part in PARTS:
        package = src / part / "src" / "kubepresence" / part
        assert package.is_dir(), package
        for entry in package.iterdir():
            if entry.name in ("rpc", "__init__.py", "__pycache__"):
                continue
            if entry.is_dir() and any(entry.glob("*.py")):
                found.add(f"kubepresence.{part}.{entry.name}")
            elif entry.suffix == ".py":
                found.add(f"kubepresence.{part}.{entry.stem}")
    return found


def test_every_module_outside_rpc_is_covered() -> None:
    missing = modules_outside_rpc(ROOT / "packages") - contract_sources()
    assert not missing, f"add to the contract {CONTRACT!r}: {sorted(missing)}"


def test_the_contract_names_only_existing_modules_and_no_rpc() -> None:
    sources = contract_sources()
    assert not {s for s in sources if s.split(".")[2:3] == ["rpc"]}
    stale = sources - modules_outside_rpc(ROOT / "packages")
    assert not stale, f"no such module: {sorted(stale)}"


def test_a_new_module_is_found(tmp_path: Path) -> None:
    # The walk itself: a module or subpackage added to a part shows up, rpc/ does not.
    for part in PARTS:
        package = tmp_path / part / "src" / "kubepresence" / part
        (package / "rpc").mkdir(parents=True)
        (package / "rpc" / "__init__.py").write_text("")
        (package / "__init__.py").write_text("")
    (tmp_path / "agent/src/kubepresence/agent/newshell.py").write_text("")
    (tmp_path / "userd/src/kubepresence/userd/tunnels").mkdir()
    (tmp_path / "userd/src/kubepresence/userd/tunnels/__init__.py").write_text("")
    assert modules_outside_rpc(tmp_path) == {
        "kubepresence.agent.newshell",
        "kubepresence.userd.tunnels",
    }
