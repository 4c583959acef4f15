"""What the CLI loads to start: `--help` and completion must not pay for the gRPC stack,
rich or YAML, and the quick commands (`version`, `status`, `list`) not for typer either
(the bench measures the time; this says why it stays short). Each case runs in a fresh
interpreter: the test process has them all. (With daemons running: the component test
test_quick_commands.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = (
    "asyncio",
    "grpclib.client",
    "betterproto2",
    "kubepresence.protocol.gen.common",
    "rich.console",
    "yaml",
    "importlib.metadata",
    "typer",
    "pydantic",
)

PROBE = """
import json, sys, types
{run}
loaded = [
    name for name in {heavy!r}
    if isinstance(sys.modules.get(name), types.ModuleType)
    and type(sys.modules[name]).__name__ != "_LazyModule"
]
print(json.dumps(loaded), file=sys.__stderr__)
"""


def loaded_after(run: str, tmp_path: Path) -> list[str]:
    code = PROBE.format(run=run, heavy=HEAVY)
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        env={"XDG_RUNTIME_DIR": str(tmp_path), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    last = done.stderr.strip().splitlines()[-1]
    loaded: list[str] = json.loads(last)
    return loaded


@pytest.mark.timeout(60)
def test_importing_the_cli_loads_none_of_them(tmp_path: Path) -> None:
    assert loaded_after("import kubepresence.cli.app", tmp_path) == ["typer"]


@pytest.mark.timeout(60)
def running(*argv: str) -> str:
    return (
        "import sys\n"
        f"sys.argv = ['kubepresence', *{list(argv)!r}]\n"
        "from kubepresence.cli.__main__ import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass"
    )


def test_version_without_daemons_loads_only_the_metadata(tmp_path: Path) -> None:
    # The client's version is read from the installed metadata.
    assert loaded_after(running("version"), tmp_path) == ["importlib.metadata"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("argv", [("status",), ("status", "-o", "json")])
def test_status_without_daemons_loads_none(tmp_path: Path, argv: tuple[str, ...]) -> None:
    assert loaded_after(running(*argv), tmp_path) == []


@pytest.mark.timeout(60)
def test_list_without_daemons_loads_only_rich_for_its_error(tmp_path: Path) -> None:
    """Not connected is a failure line: rich draws it in red."""
    assert loaded_after(running("list", "-n", "shop", "--intercepts"), tmp_path) == ["rich.console"]


@pytest.mark.timeout(60)
def test_a_line_typer_must_read_loads_it(tmp_path: Path) -> None:
    """`status --help` is not a quick line: typer draws the help."""
    assert "typer" in loaded_after(running("status", "--help"), tmp_path)
