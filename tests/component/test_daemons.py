"""Component test: the real daemons, started as processes, driven by the real CLI.

Scenarios:
- `kubepresence status` / `version` see a running user daemon and root daemon over their
  unix sockets (mode 0600);
- `status`, `version` and `list` ask the daemons' JSON calls, loading neither typer nor
  the gRPC stack, and `curl` can ask them too; a bad call gets a Connect error;
- `kubepresence loglevel debug` changes the running userd's level (its log shows it);
- `kubepresence quit` stops both daemons: they exit 0 and remove their sockets;
- SIGTERM stops a daemon gracefully, with exit code 0 and a log line saying why;
- rootd refuses a caller whose uid is not the one it serves;
- every daemon answers `--version`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(30)  # starts the real daemons as processes

BIN = Path(sys.executable).parent


def wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s")


class Daemons:
    def __init__(self, tmp: Path) -> None:
        self.env = dict(
            os.environ, XDG_RUNTIME_DIR=str(tmp / "run"), XDG_STATE_HOME=str(tmp / "state")
        )
        self.run_dir = tmp / "run" / "kubepresence"
        self.logs = tmp / "state"
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = self.logs / f"{name}.log"
        self.logs.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            [str(BIN / f"kubepresence-{name}"), "--log-file", str(log), *args], env=self.env
        )
        self.procs.append(proc)
        socket = self.run_dir / f"{name}.socket"
        wait_for(lambda: socket.is_socket() or proc.poll() is not None)
        assert proc.poll() is None, log.read_text()
        return proc

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "kubepresence"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def stop_all(self) -> None:
        for proc in self.procs:  # only the processes this test started, by PID
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    d = Daemons(tmp_path)
    yield d
    d.stop_all()


NEEDS_ROOT = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: rootd refuses to run without it"
)


@NEEDS_ROOT
def test_status_version_loglevel_and_quit(daemons: Daemons) -> None:
    userd = daemons.start("userd")
    rootd = daemons.start("rootd")
    for name in ("userd", "rootd", "userd-json", "rootd-json"):
        assert (daemons.run_dir / f"{name}.socket").stat().st_mode & 0o777 == 0o600

    status = daemons.cli("status", "-o", "json")
    assert status.returncode == 0, status.stderr
    state = json.loads(status.stdout)
    assert state["user_daemon"]["running"] is True
    assert state["connection"] == {"state": "disconnected"}
    assert state["root_daemon"] == {"running": True}

    version = json.loads(daemons.cli("version", "-o", "json").stdout)
    assert version["user_daemon"] == version["root_daemon"] == version["client"]

    level = daemons.cli("loglevel", "debug")
    assert level.returncode == 0, level.stderr
    assert "log level set to debug" in (daemons.logs / "userd.log").read_text()

    quit_ = daemons.cli("quit")
    assert quit_.returncode == 0, quit_.stderr
    assert "Stopped the root daemon and the user daemon." in quit_.stdout
    assert userd.wait(10) == 0
    assert rootd.wait(10) == 0
    for name in ("userd", "rootd", "userd-json", "rootd-json"):
        assert not (daemons.run_dir / f"{name}.socket").exists()
    assert json.loads(daemons.cli("status", "-o", "json").stdout)["user_daemon"] == {
        "running": False
    }


# What a quick command must not load (each takes milliseconds to tens of them to import;
# grpclib's status codes alone, which the error categories use, are cheap).
HEAVY = (
    "asyncio",
    "grpclib.client",
    "grpclib.protocol",
    "h2",
    "betterproto2",
    "kubepresence.protocol.gen",
    "typer",
    "pydantic",
)
PROBE = """
import json, sys
sys.argv = ["kubepresence", *{argv!r}]
from kubepresence.cli.__main__ import main
try:
    main()
except SystemExit as ended:
    code = ended.code
heavy = sorted({{h for h in {heavy!r} for n in sys.modules if n == h or n.startswith(h + ".")}})
print(json.dumps({{"code": code, "heavy": heavy}}), file=sys.__stderr__)
"""


def probed(daemons: Daemons, *argv: str) -> tuple[str, dict[str, object]]:
    """Run the CLI's entry point in a fresh interpreter: its stdout, and its exit code
    and the heavy modules it loaded."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=list(argv), heavy=HEAVY)],
        env=daemons.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.stdout, json.loads(done.stderr.strip().splitlines()[-1])


@NEEDS_ROOT
def test_quick_commands_use_the_json_calls(daemons: Daemons) -> None:
    daemons.start("userd")
    daemons.start("rootd")
    out, probe = probed(daemons, "status", "-o", "json")
    assert probe == {"code": 0, "heavy": []}
    state = json.loads(out)
    assert state["user_daemon"]["running"] is True
    assert state["root_daemon"] == {"running": True}
    out, probe = probed(daemons, "version", "-o", "json")
    assert probe == {"code": 0, "heavy": []}
    assert json.loads(out)["root_daemon"] == json.loads(out)["client"]
    # Not connected: list says so, still without the heavy modules.
    out, probe = probed(daemons, "list")
    assert probe == {"code": 3, "heavy": []}
    # typer's way (a line the quick parser leaves to it) answers the same.
    slow = daemons.cli("status", "--output=json", "-o", "json", "--output", "json")
    assert slow.returncode == 0, slow.stderr
    assert json.loads(slow.stdout) == state


@NEEDS_ROOT
@pytest.mark.skipif(
    shutil.which("curl") is None,
    reason="needs curl: the unit session runs before the cluster session installs it",
)
def test_curl_asks_the_json_calls(daemons: Daemons) -> None:
    daemons.start("userd")

    def curl(path: str, *args: str) -> tuple[int, dict[str, object]]:
        done = subprocess.run(
            [
                "curl",
                "-sS",
                "--unix-socket",
                str(daemons.run_dir / "userd-json.socket"),
                "-w",
                "\n%{http_code}",
                *args,
                f"http://localhost{path}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        body, _, code = done.stdout.rpartition("\n")
        return int(code), json.loads(body)

    json_post = ("-H", "Content-Type: application/json", "-d", "{}")
    code, info = curl("/kubepresence.connector.Connector/Status", *json_post)
    assert (code, info["state"], info["open_flows"]) == (200, "CONNECT_STATE_DISCONNECTED", "0")
    # Only the quick, read-only methods: not Quit.
    assert curl("/kubepresence.connector.Connector/Quit", *json_post) == (
        501,
        {
            "code": "unimplemented",
            "message": "/kubepresence.connector.Connector/Quit is not served in JSON here",
        },
    )
    assert curl("/kubepresence.connector.Connector/Status")[0] == 405  # a GET
    code, error = curl(
        "/kubepresence.connector.Connector/List",
        "-H",
        "Content-Type: application/json",
        "-d",
        '{"namespace": 7}',
    )
    assert (code, error["code"]) == (400, "invalid_argument")
    code, error = curl("/kubepresence.connector.Connector/List", *json_post)
    assert (code, error) == (
        400,
        {"code": "failed_precondition", "message": "not connected: run 'kubepresence connect'"},
    )


@NEEDS_ROOT
def test_rootds_guardian_waits_in_a_shell_and_goes_with_rootd(daemons: Daemons) -> None:
    """The guardian costs the session a shell, not an idle Python (the e2e fault suite
    shows it restoring what a SIGKILLed rootd left)."""
    rootd = daemons.start("rootd")
    children = Path(f"/proc/{rootd.pid}/task/{rootd.pid}/children")
    wait_for(lambda: children.read_text().split())
    [guardian] = [int(pid) for pid in children.read_text().split()]
    argv = Path(f"/proc/{guardian}/cmdline").read_bytes().split(b"\0")
    assert argv[0] == b"/bin/sh"
    assert b"kubepresence.rootd.guardian" in argv
    rss_kib = next(
        int(line.split()[1])
        for line in Path(f"/proc/{guardian}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    assert rss_kib < 4096
    rootd.kill()
    rootd.wait(10)
    wait_for(lambda: not Path(f"/proc/{guardian}").exists() or _is_zombie(guardian))


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_sigterm_is_a_graceful_stop(daemons: Daemons) -> None:
    userd = daemons.start("userd")
    userd.send_signal(signal.SIGTERM)
    assert userd.wait(10) == 0
    log = (daemons.logs / "userd.log").read_text()
    assert "stopping: received SIGTERM" in log
    assert "kubepresence-userd stopped (exit 0)" in log


@NEEDS_ROOT
def test_rootd_refuses_another_uid(daemons: Daemons) -> None:
    other_uid = os.getuid() + 4242
    daemons.start("rootd", "--user", str(other_uid))
    result = daemons.cli("version")
    assert result.returncode != 0
    assert "this socket serves another user" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name", ["userd", "rootd", "manager", "agent"])
def test_daemon_version_flag(name: str) -> None:
    result = subprocess.run(
        [str(BIN / f"kubepresence-{name}"), "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert result.stdout.startswith(f"kubepresence-{name} 0.")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start rootd as another user")
def test_rootd_without_root_says_so_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            str(BIN / "kubepresence-rootd"),
            "--socket",
            str(tmp_path / "rootd.socket"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 3
    assert result.stderr.strip().splitlines() == [
        "kubepresence-rootd: must run as root (it creates a TUN device, routes and the "
        "resolver settings): start it with sudo, or let 'kubepresence connect' do it"
    ]
    assert not (tmp_path / "rootd.socket").exists()
