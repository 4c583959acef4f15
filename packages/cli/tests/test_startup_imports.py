"""What the CLI loads to start: `--help`, completion and `version` without daemons must
not pay for the gRPC stack, rich or YAML (the bench measures the time; this says why it
stays short). Each case runs in a fresh interpreter: the test process has them all."""

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
    assert loaded_after("import kubepresence.cli.app", tmp_path) == []


@pytest.mark.timeout(60)
def test_version_without_daemons_loads_only_the_loop(tmp_path: Path) -> None:
    run = (
        "import sys\n"
        "sys.argv = ['kubepresence', 'version']\n"
        "from kubepresence.cli.__main__ import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass"
    )
    # The event loop runs the command; the version is read from the installed metadata.
    assert loaded_after(run, tmp_path) == ["asyncio", "importlib.metadata"]
