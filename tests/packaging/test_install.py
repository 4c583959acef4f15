"""Packaging: each part installs alone, with the protocol package and its own deps only.

Scenarios (real `pip install` of a part's directory into an empty venv, from PyPI):
- the manager installs with kubepresence-protocol and runs `kubepresence-manager --version`,
  without the CLI's dependencies (typer, rich);
- the CLI installs and runs `kubepresence --help`, without the manager's Kubernetes client
  (kubernetes-asyncio, aiohttp).
"""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def install_part(part: str, target: Path) -> tuple[Path, set[str]]:
    venv.EnvBuilder(with_pip=True, clear=True).create(target)
    python = target / "bin" / "python"
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-c",
            str(ROOT / "constraints.txt"),
            str(ROOT / "packages" / part),
        ],
        check=True,
        timeout=600,
    )
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    names = {line.split("==")[0].lower().replace("_", "-") for line in listed.splitlines() if line}
    return target / "bin", names


@pytest.mark.timeout(180)  # builds and installs wheels into a fresh venv
@pytest.mark.timeout(900)
def test_manager_installs_alone(tmp_path: Path) -> None:
    bindir, names = install_part("manager", tmp_path / "venv")
    assert {"kubepresence-manager", "kubepresence-protocol", "kubernetes-asyncio"} <= names
    assert not names & {"kubepresence-cli", "kubepresence-userd", "typer", "rich"}
    out = subprocess.run(
        [str(bindir / "kubepresence-manager"), "--version"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert out.startswith("kubepresence-manager 0.")


@pytest.mark.timeout(180)  # builds and installs wheels into a fresh venv
@pytest.mark.timeout(900)
def test_cli_installs_alone(tmp_path: Path) -> None:
    bindir, names = install_part("cli", tmp_path / "venv")
    assert {"kubepresence-cli", "kubepresence-protocol", "typer", "rich"} <= names
    assert not names & {"kubepresence-manager", "kubernetes-asyncio", "aiohttp", "dnslib"}
    out = subprocess.run(
        [str(bindir / "kubepresence"), "--help"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "intercept" in out
