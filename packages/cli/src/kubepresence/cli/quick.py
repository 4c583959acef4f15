"""The quick commands: `version`, `status` and `list`, with no event loop and no gRPC.

They ask the daemons through their JSON calls (`protocol.jsoncalls`) with the standard
library, so that a prompt, a script or a person running them many times a minute does
not pay for importing the gRPC stack. `__main__` runs them without typer when their
command line is one `core.quickargs` understands; typer's commands call the same
functions, so both ways answer alike.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubepresence.cli.core import views
from kubepresence.cli.core.exits import ExitCode, exit_code
from kubepresence.cli.core.quickargs import QuickCommand
from kubepresence.cli.core.rendering import OutputFormat, render
from kubepresence.cli.sockets import socket_is_live
from kubepresence.cli.terminal import fail, say
from kubepresence.cli.unexpected import report_unexpected
from kubepresence.protocol import jsoncalls, paths, version_of
from kubepresence.protocol.errors import ConfigError, KubepresenceError

LOCAL_TIMEOUT = 5.0  # local daemons answer at once or not at all
STATUS_TIMEOUT = 2.0  # whether the root daemon answers: `status` must stay quick
LIST_TIMEOUT = 15.0  # `list` asks the API server


def run_version(output: OutputFormat) -> int:
    """Show the versions of the client, the daemons and the traffic manager."""
    return _reported(lambda: _version(output))


def run_status(output: OutputFormat) -> int:
    """Show whether the daemons run and what they are connected to."""
    return _reported(lambda: _status(output))


def run_list(namespace: str, intercepts_only: bool, output: OutputFormat) -> int:
    """List the workloads that can be intercepted, with agent and intercept state."""
    return _reported(lambda: _list(namespace, intercepts_only, output))


def run(command: QuickCommand) -> int:
    """Run a quick command read by `quickargs`; its exit code."""
    if command.name == "version":
        return run_version(command.output)
    if command.name == "status":
        return run_status(command.output)
    return run_list(command.namespace, command.intercepts_only, command.output)


def client_version() -> str:
    return version_of("kubepresence-cli")


def _reported(body: Callable[[], int]) -> int:
    """The exit code of `body`; its failure as one line on stderr."""
    try:
        return body()
    except KubepresenceError as error:
        fail(error.message)
        return exit_code(error.category)
    except Exception as error:  # noqa: BLE001 - the command's outermost boundary
        return report_unexpected(error)


def _userd(path: str, message: dict[str, Any], timeout: float = LOCAL_TIMEOUT) -> dict[str, Any]:
    return _call(paths.userd_socket(), path, message, timeout, "the user daemon")


def _rootd_version(timeout: float) -> str:
    reply = _call(paths.rootd_socket(), jsoncalls.ROOTD_VERSION, {}, timeout, "the root daemon")
    return str(reply["version"])


def _call(
    grpc_socket: Path, path: str, message: dict[str, Any], timeout: float, what: str
) -> dict[str, Any]:
    """A JSON call to the daemon whose gRPC socket is live."""
    socket = paths.json_calls_socket(grpc_socket)
    if not socket.is_socket():
        # It answers gRPC but has no JSON calls: a daemon of an older kubepresence.
        raise ConfigError(
            f"{what} is older than this command (it has no {socket.name}): "
            "run 'kubepresence quit', then connect again"
        )
    return jsoncalls.call(socket, path, message, timeout=timeout, what=what)


def _version(output: OutputFormat) -> int:
    state: dict[str, Any] = {"client": client_version()}
    if socket_is_live(paths.userd_socket()):
        state["user_daemon"] = _userd(jsoncalls.USERD_VERSION, {})["version"]
        cluster = _userd(jsoncalls.USERD_STATUS, {}).get("cluster")
        manager = str(cluster["manager_version"]) if cluster else "not connected"
    else:
        state["user_daemon"] = "not running"
        manager = "not connected"
    live = socket_is_live(paths.rootd_socket())
    state["root_daemon"] = _rootd_version(LOCAL_TIMEOUT) if live else "not running"
    state["traffic_manager"] = manager
    say(render(state, output))
    return ExitCode.OK


def _status(output: OutputFormat) -> int:
    state: dict[str, Any] = {}
    if socket_is_live(paths.userd_socket()):
        version = _userd(jsoncalls.USERD_VERSION, {})["version"]
        state["user_daemon"] = {"running": True, "version": version}
        state["connection"] = views.connection(_userd(jsoncalls.USERD_STATUS, {}))
    else:
        state["user_daemon"] = {"running": False}
    # A socket file outlives a killed daemon, and a frozen one accepts: running means it
    # answers.
    state["root_daemon"] = {"running": _rootd_answers()}
    say(render(state, output))
    connection = state.get("connection") or {}
    if connection.get("state") == "connected" and (
        connection.get("network_problem") or not state["root_daemon"]["running"]
    ):
        # Connected, but not to the cluster's network: scripts must see that.
        return ExitCode.CONFIG
    return ExitCode.OK


def _rootd_answers() -> bool:
    if not socket_is_live(paths.rootd_socket()):
        return False
    try:
        _rootd_version(STATUS_TIMEOUT)
    except KubepresenceError:
        return False
    return True


def connected_socket() -> Path:
    """userd's socket when it runs; ConfigError when it does not."""
    socket = paths.userd_socket()
    if not socket_is_live(socket):
        raise ConfigError("not connected: run 'kubepresence connect' first")
    return socket


def _list(namespace: str, intercepts_only: bool, output: OutputFormat) -> int:
    connected_socket()
    request = {"namespace": namespace, "only_intercepted": intercepts_only}
    found = views.workloads(_userd(jsoncalls.USERD_LIST, request, LIST_TIMEOUT))
    if output is not OutputFormat.TEXT:
        say(render({"workloads": found}, output))
        return ExitCode.OK
    if not found:
        say("No workloads.")
    for w in found:
        state = "; ".join(
            f"intercepted{_filtered(i)} → {i['local']} ({i['state']})"
            + (f", volumes at {i['mount_point']}" if i["mount_point"] else "")
            + (f": {i['message']}" if i["message"] else "")
            for i in w["intercepts"]
        ) or ("agent installed" if w["agent_installed"] else "ready to intercept")
        say(f"{w['name']:30} {w['kind']:12} {state}")
    return ExitCode.OK


def _filtered(intercept: dict[str, Any]) -> str:
    return f" ({intercept['http_filter']})" if intercept.get("http_filter") else ""
