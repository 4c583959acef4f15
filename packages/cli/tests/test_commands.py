"""The command line as a user meets it, without daemons or a cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kubepresence.cli.app import app
from kubepresence.cli.core.exits import ExitCode

runner = CliRunner()


@pytest.fixture(autouse=True)
def private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def test_help_lists_the_planned_command_groups() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in (
        "connect",
        "status",
        "list",
        "intercept",
        "leave",
        "quit",
        "version",
        "config",
        "loglevel",
        "gather-logs",
        "helm",
        "uninstall",
    ):
        assert f" {name} " in result.output, name


@pytest.mark.parametrize(
    "argv",
    [
        ["list"],
        ["intercept", "orders", "--port", "8080:http"],
        ["leave", "orders"],
        ["uninstall", "orders"],
    ],
    ids=lambda a: a[0],
)
def test_intercept_commands_need_a_connection(argv: list[str]) -> None:
    result = runner.invoke(app, argv)
    assert result.exit_code == ExitCode.CONFIG
    assert result.output.strip() == "kubepresence: not connected: run 'kubepresence connect' first"


def test_bad_port_spec_is_a_user_error() -> None:
    result = runner.invoke(app, ["intercept", "orders", "--port", "http"])
    assert result.exit_code == ExitCode.USER
    assert "the local port must be a number" in result.output


def test_status_without_daemons_as_json() -> None:
    result = runner.invoke(app, ["status", "-o", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "user_daemon": {"running": False},
        "root_daemon": {"running": False},
    }


def test_version_reports_the_client() -> None:
    result = runner.invoke(app, ["version", "-o", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["client"].count(".") >= 2
    assert data["user_daemon"] == "not running"


def test_quit_with_nothing_running() -> None:
    result = runner.invoke(app, ["quit"])
    assert (result.exit_code, result.output.strip()) == (0, "Nothing was running.")


def test_loglevel_without_daemon_is_a_config_error() -> None:
    result = runner.invoke(app, ["loglevel", "debug"])
    assert result.exit_code == ExitCode.CONFIG
    assert "not running" in result.output


def test_bad_loglevel_is_a_user_error() -> None:
    result = runner.invoke(app, ["loglevel", "loud"])
    assert result.exit_code == ExitCode.USER
    assert "unknown log level 'loud'" in result.output


def test_bad_output_format_is_a_usage_error() -> None:
    result = runner.invoke(app, ["status", "-o", "xml"])
    assert result.exit_code == ExitCode.USER


def test_config_view_reads_the_kubeconfig(tmp_path: Path) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: lab\n"
        "contexts: [{name: lab, context: {cluster: c1, user: u, namespace: shop}}]\n"
        "clusters: [{name: c1, cluster: {server: 'https://10.77.0.1:6443'}}]\n"
        "users: [{name: u, user: {}}]\n"
    )
    result = runner.invoke(app, ["config", "view", "--kubeconfig", str(config), "-o", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert (data["context"], data["server"], data["namespace"]) == (
        "lab",
        "https://10.77.0.1:6443",
        "shop",
    )


def test_config_view_without_kubeconfig(tmp_path: Path) -> None:
    result = runner.invoke(app, ["config", "view", "--kubeconfig", str(tmp_path / "none")])
    assert result.exit_code == ExitCode.CONFIG
    assert "no kubeconfig found" in result.output


def test_error_text_in_brackets_is_printed_verbatim(tmp_path: Path) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text("current-context: '[x]'\ncontexts: []\n")
    result = runner.invoke(app, ["config", "view", "--kubeconfig", str(config)])
    assert result.exit_code == ExitCode.CONFIG
    assert "context '[x]' is not in the kubeconfig" in result.output


def test_shell_completion_script() -> None:
    result = runner.invoke(app, ["--show-completion", "bash"], prog_name="kubepresence")
    assert result.exit_code == 0
    assert "_KUBEPRESENCE_COMPLETE" in result.output


@pytest.mark.parametrize(
    ("words", "cword", "expected"),
    [
        ("kubepresence con", "1", {"connect", "config"}),
        ("kubepresence helm un", "2", {"uninstall"}),
    ],
)
def test_completion_completes(words: str, cword: str, expected: set[str]) -> None:
    script = Path(sys.executable).parent / "kubepresence"
    result = subprocess.run(
        [str(script)],
        env={
            **os.environ,
            "_KUBEPRESENCE_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": cword,
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert set(result.stdout.split()) == expected


@pytest.mark.timeout(60)  # the CLI in a subprocess per command
def test_piped_help_shows_every_option_whole() -> None:
    """`kubepresence CMD --help | less`: rich took 80 columns off a pipe and cut option
    names (`--manager-namesp…`); now every option of every command is there whole."""
    import re

    import typer

    from kubepresence.cli.app import app as cli

    group = typer.main.get_command(cli)
    assert isinstance(group, typer.core.TyperGroup)
    checked = 0
    for name, command in group.commands.items():
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TERMINAL_WIDTH")}
        shown = subprocess.run(
            [sys.executable, "-m", "kubepresence.cli", name, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=True,
        ).stdout
        assert not re.search(r"(?<!`)--[\w-]+…(?!`)", shown), (
            f"{name} --help cuts an option:\n{shown}"
        )
        for param in command.params:
            for option in param.opts:
                if option.startswith("--"):
                    assert option in shown, f"{name} --help lacks {option}"
                    checked += 1
    assert checked > 20


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nosuch"], "No such command 'nosuch'. (see 'kubepresence --help')"),
        (["intercept"], "Missing argument 'workload'. (see 'kubepresence intercept --help')"),
        (["intercept", "web", "--port", "80", "--ingress-port", "abc"], "'--ingress-port'"),
        (["loglevel", "debug", "--duration", "-4"], "'--duration' / '-d'"),
        (["status", "-o", "xml"], "'xml' is not one of"),
        (["connect", "--no-such-flag"], "No such option: --no-such-flag"),
    ],
    ids=lambda a: a[0] if isinstance(a, list) else "",
)
def test_a_usage_error_is_one_line_with_exit_2(argv: list[str], message: str) -> None:
    """What click would draw as a usage line, a hint and a box is one line, as every
    other failure is (the real console script: the CliRunner bypasses __main__)."""
    result = subprocess.run(
        [sys.executable, "-m", "kubepresence.cli", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == ExitCode.USER
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kubepresence: ")
    assert message in lines[0]


def test_a_killed_daemons_socket_is_not_a_running_daemon(tmp_path: Path) -> None:
    """A socket file whose daemon is gone refuses connections: status says not running,
    and the file is removed (quit then has nothing to stop)."""
    import socket

    from kubepresence.protocol import paths

    left = [
        path
        for grpc in (paths.userd_socket(), paths.rootd_socket())
        for path in (grpc, paths.json_calls_socket(grpc))
    ]
    for path in left:
        path.parent.mkdir(parents=True, exist_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.close()  # bound, never listening: what a SIGKILLed daemon leaves
        assert path.is_socket()
    result = runner.invoke(app, ["status", "-o", "json"])
    assert result.exit_code == 0, result.output
    state = json.loads(result.output)
    assert state["user_daemon"] == {"running": False}
    assert state["root_daemon"] == {"running": False}
    assert [path for path in left if path.exists()] == []
    quitted = runner.invoke(app, ["quit"])
    assert quitted.exit_code == 0
    assert "Nothing was running." in quitted.output


def test_a_daemon_without_json_calls_is_named_older(tmp_path: Path) -> None:
    """A userd of an older kubepresence answers gRPC only: status says what to do."""
    import socket

    from kubepresence.protocol import paths

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(paths.userd_socket()))
    listener.listen()
    try:
        result = runner.invoke(app, ["status"])
    finally:
        listener.close()
    assert result.exit_code == ExitCode.CONFIG
    assert result.output.strip() == (
        "kubepresence: the user daemon is older than this command (it has no "
        "userd-json.socket): run 'kubepresence quit', then connect again"
    )


def test_a_daemon_coming_up_keeps_its_socket(tmp_path: Path) -> None:
    """Between a starting daemon's bind and its listen the socket refuses as a dead one's
    does: the wait for a daemon we started must not remove it (a rootd once failed its
    start with FileNotFoundError in its chmod)."""
    import socket

    from kubepresence.cli.sockets import socket_is_live

    path = tmp_path / "starting.socket"
    binding = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        binding.bind(str(path))  # bound, not yet listening
        assert not socket_is_live(path, remove_stale=False)
        assert path.is_socket()
        binding.listen()
        assert socket_is_live(path, remove_stale=False)
    finally:
        binding.close()
    assert not socket_is_live(path)  # nobody there any more: removed
    assert not path.exists()


def test_connect_with_a_command_that_cannot_run_starts_nothing(tmp_path: Path) -> None:
    from kubepresence.protocol import paths

    result = runner.invoke(app, ["connect", "--", "no-such-program-kp", "--flag"])
    assert result.exit_code == ExitCode.USER
    assert result.output.strip() == (
        "kubepresence: cannot run no-such-program-kp: no such program on PATH, or not executable"
    )
    assert list(paths.runtime_dir().glob("*.socket")) == []  # no daemon was started
