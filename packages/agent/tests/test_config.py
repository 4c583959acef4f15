"""The agent's configuration from the webhook's variables, and its redirects."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kubepresence.agent.core.config import (
    AgentConfig,
    app_environment,
    load,
    parse_environ_block,
)
from kubepresence.agent.core.redirects import BadRedirectError, Redirect, parse
from kubepresence.protocol.agents import Agent, PortTakeover
from kubepresence.protocol.errors import ConfigError

CONFIG = {
    "workload_kind": "Deployment",
    "workload_name": "echo",
    "container": "echo",
    "ports": [
        {"name": "http", "app_port": 8080, "agent_port": 9900, "redirected": False},
        {"name": "", "app_port": 9000, "agent_port": 9901, "redirected": True},
    ],
    "app_mounts_root": "/kubepresence/app-mounts",
}


def environ(**extra: str) -> dict[str, str]:
    return {
        "KP_AGENT_CONFIG": json.dumps(CONFIG),
        "KP_AGENT_POD_NAME": "echo-abc",
        "KP_AGENT_POD_NAMESPACE": "shop",
        "KP_AGENT_POD_IP": "10.244.0.5",
        "GREETING": "hello",
        "POD_NAME": "echo-abc",
        "PATH": "/usr/bin",
        "PYTHONPATH": "/opt/kubepresence/site-packages",
        **extra,
    }


def test_load() -> None:
    assert load(environ()) == AgentConfig(
        pod_name="echo-abc",
        namespace="shop",
        pod_ip="10.244.0.5",
        workload_kind="Deployment",
        workload_name="echo",
        container="echo",
        ports=(PortTakeover("http", 8080, 9900), PortTakeover("", 9000, 9901, redirected=True)),
        app_mounts_root="/kubepresence/app-mounts",
        environment={"GREETING": "hello", "POD_NAME": "echo-abc"},
    )


def test_description_is_what_the_agent_reports() -> None:
    config = load(environ(KP_AGENT_CONFIG=json.dumps({**CONFIG, "sftp_port": 8022})))
    assert config.description("1.2.3") == Agent(
        pod_name="echo-abc",
        namespace="shop",
        pod_ip="10.244.0.5",
        workload_name="echo",
        workload_kind="Deployment",
        container="echo",
        ports=config.ports,
        environment={"GREETING": "hello", "POD_NAME": "echo-abc"},
        version="1.2.3",
        sftp_port=8022,
    )


def test_app_environment_drops_the_agents_own_variables() -> None:
    assert app_environment(environ(KP_AGENT_X="1", HOME="/root", HOSTNAME="echo-abc")) == {
        "GREETING": "hello",
        "HOSTNAME": "echo-abc",
        "POD_NAME": "echo-abc",
    }


def test_app_environment_keeps_what_the_apps_env_lists() -> None:
    """An app whose env sets HOME or PATH itself sees its own values: so does the user."""
    config = {**CONFIG, "app_env_names": ["HOME", "GREETING"]}
    loaded = load(environ(KP_AGENT_CONFIG=json.dumps(config), HOME="/home/app"))
    assert loaded.environment == {"GREETING": "hello", "HOME": "/home/app", "POD_NAME": "echo-abc"}
    with pytest.raises(ConfigError, match="app_env_names is not a list of names"):
        load(environ(KP_AGENT_CONFIG=json.dumps({**CONFIG, "app_env_names": "HOME"})))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"KP_AGENT_CONFIG": ""}, "KP_AGENT_CONFIG not set: the agent runs injected"),
        ({"KP_AGENT_POD_NAME": ""}, "KP_AGENT_POD_NAME not set"),
        ({"KP_AGENT_CONFIG": "{"}, "is not JSON"),
        ({"KP_AGENT_CONFIG": "[]"}, "not a JSON object"),
        ({"KP_AGENT_CONFIG": json.dumps({"ports": [3]})}, "a port is not an object"),
        (
            {"KP_AGENT_CONFIG": json.dumps({"ports": [{"app_port": 0, "agent_port": 9900}]})},
            "0 is not a port number",
        ),
        (
            {"KP_AGENT_CONFIG": json.dumps({"ports": [{"app_port": "80", "agent_port": 9900}]})},
            "'80' is not a port number",
        ),
        (
            {
                "KP_AGENT_CONFIG": json.dumps(
                    {
                        "ports": [
                            {"app_port": 80, "agent_port": 9900},
                            {"app_port": 81, "agent_port": 9900},
                        ]
                    }
                )
            },
            "taken twice",
        ),
    ],
)
def test_bad_configuration_is_one_clear_line(change: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load(environ(**change))
    assert "\n" not in str(caught.value)


def test_redirects() -> None:
    redirect = parse("9000:9901")
    assert redirect == Redirect(9000, 9901)
    assert redirect.append_argv() == [
        "iptables", "-w", "5", "-t", "nat", "-A", "PREROUTING", "-p", "tcp",
        "--dport", "9000", "-j", "REDIRECT", "--to-ports", "9901",
    ]  # fmt: skip
    assert redirect.check_argv()[5] == "-C"
    assert redirect.check_argv()[6:] == redirect.append_argv()[6:]
    for bad in ("9000", "9000:", ":9901", "a:b", "0:9901", "9000:70000", "9000:9000", "1:2:3"):
        with pytest.raises(BadRedirectError):
            parse(bad)


def test_the_environment_block_is_what_the_process_started_with() -> None:
    """A Python started without a locale adds LC_CTYPE=C.UTF-8 to os.environ (PEP 538); the
    block of /proc/self/environ holds only what it was given, as the app was given it."""
    code = (
        "import json, os, sys\n"
        "from kubepresence.agent.core.config import parse_environ_block\n"
        "block = parse_environ_block(open('/proc/self/environ', 'rb').read())\n"
        "print(json.dumps([block, dict(os.environ)]))\n"
    )
    given = {"A": "x=y", "B": "", "C": "ünï\nline", "PYTHONPATH": ":".join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=given, capture_output=True, text=True, check=True
    )
    block, environ_seen = json.loads(done.stdout)
    assert block == given
    assert environ_seen.get("LC_CTYPE") == "C.UTF-8"  # what the block leaves out


def test_environment_blocks() -> None:
    assert parse_environ_block(b"A=1\0B==2\0\0NOEQUALS\0=x\0A=dup\0") == {"A": "1", "B": "=2"}
