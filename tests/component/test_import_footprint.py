"""What a daemon's start imports: the heavy libraries wait until a feature needs them.

- the agent does not import asyncssh (with cryptography) until a volume mount arrives,
  and then only asyncssh's SFTP server, not its SSH and cryptography;
- the user daemon and the traffic manager import a few dozen kubernetes_asyncio modules,
  not the ~900 its package `__init__` files name (see kubepresence.protocol.lazyimport);
- the workstation daemons' entry points leave out pydantic, which betterproto2 would load.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(30)  # a fresh interpreter per import measured

IMPORTED = """
import json, sys
import {module}
print(json.dumps(sorted(sys.modules)))
"""


def modules_after(code: str) -> list[str]:
    """The modules a fresh interpreter holds after `code` (which prints them as JSON)."""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return list(json.loads(result.stdout))


def modules_after_importing(module: str) -> list[str]:
    return modules_after(IMPORTED.format(module=module))


def test_the_agent_starts_without_asyncssh() -> None:
    modules = modules_after_importing("kubepresence.agent.app")
    assert "kubepresence.agent.volumes.exporting" in modules
    assert not [m for m in modules if m.split(".")[0] in ("asyncssh", "cryptography")]


SFTP_LOADED = """
import json, sys
from kubepresence.agent.volumes import exporting
serve_sftp = exporting._load_sftp_session()
print(json.dumps(sorted(sys.modules)))
"""


def test_the_agent_loads_only_the_sftp_server_of_asyncssh() -> None:
    modules = modules_after(SFTP_LOADED)
    assert "kubepresence.agent.volumes.sftpsession" in modules
    # asyncssh's modules are held by sftpsession, not listed: a later plain import would
    # get the whole package.
    assert not [m for m in modules if m.split(".")[0] in ("asyncssh", "cryptography")]


@pytest.mark.parametrize("module", ["kubepresence.userd.app", "kubepresence.manager.app"])
def test_daemons_import_little_of_kubernetes_asyncio(module: str) -> None:
    kubernetes = [m for m in modules_after_importing(module) if m.startswith("kubernetes_asyncio")]
    assert "kubernetes_asyncio.client.api_client" in kubernetes
    assert len(kubernetes) < 60, kubernetes


STARTED = """
import contextlib, json, sys
from {package}.__main__ import main
with contextlib.redirect_stdout(sys.stderr), contextlib.suppress(SystemExit):
    main(["--version"])  # the entry point's imports, then argparse exits
from kubepresence.protocol.gen.common import TunnelMessage
assert TunnelMessage().parse(bytes(TunnelMessage(data=b"x"))).data == b"x"
print(json.dumps(sorted(m for m in sys.modules if sys.modules[m] is not None)))
"""


@pytest.mark.parametrize("package", ["kubepresence.rootd", "kubepresence.userd"])
def test_workstation_daemons_leave_out_pydantic(package: str) -> None:
    """typer (the CLI's) installs pydantic beside the daemons; betterproto2 would load it."""
    modules = modules_after(STARTED.format(package=package))
    assert f"{package}.app" in modules
    assert not [m for m in modules if m.split(".")[0] in ("pydantic", "pydantic_core")]
