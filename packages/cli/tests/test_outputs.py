"""core.arguments (output paths) and the intercept command's checks before anything is applied.

Scenarios: every reason an output path cannot be written is one line naming the option;
`intercept ns/web` says how to name a workload and its namespace; both are refused before
the CLI even looks for a daemon (exit 2, nothing applied)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from kubepresence.cli.app import app
from kubepresence.cli.core.arguments import PathFacts, unwritable, workload_hint

OK = PathFacts(
    is_dir=False,
    parent_exists=True,
    parent_is_dir=True,
    parent_writable=True,
    writable_if_exists=True,
)


@pytest.mark.parametrize(
    ("facts", "why"),
    [
        (OK, None),
        (PathFacts(True, True, True, True, True), "--env-file x: is a directory"),
        (PathFacts(False, False, False, False, True), "--env-file x: its directory does not exist"),
        (PathFacts(False, True, False, False, True), "--env-file x: its parent is not a directory"),
        (PathFacts(False, True, True, False, True), "--env-file x: not writable"),
        (PathFacts(False, True, True, True, False), "--env-file x: not writable"),
    ],
)
def test_unwritable(facts: PathFacts, why: str | None) -> None:
    assert unwritable("--env-file", "x", facts) == why


def test_workload_hint() -> None:
    assert workload_hint("web") is None
    assert workload_hint("shop/web") == (
        "'shop/web' is not a workload name: name it alone and give its namespace with -n,"
        " e.g. `intercept web -n shop`"
    )


def _run(tmp_path: Path, *args: str) -> tuple[int, str]:
    env = {"XDG_RUNTIME_DIR": str(tmp_path / "run"), "XDG_STATE_HOME": str(tmp_path / "state")}
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["web", "--port", "8080", "--env-file", "/no/such/dir/app.env"],
            "--env-file /no/such/dir/app.env: its directory does not exist",
        ),
        (["web", "--port", "8080", "--env-json", "/"], "--env-json /: is a directory"),
        (["shop/web", "--port", "8080"], "is not a workload name"),
    ],
)
def test_intercept_refuses_before_looking_for_a_daemon(
    tmp_path: Path, args: list[str], message: str
) -> None:
    code, output = _run(tmp_path, "intercept", *args)
    assert code == 2, output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert message in lines[0]
    assert "not connected" not in output
