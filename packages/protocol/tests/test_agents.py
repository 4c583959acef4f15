"""The manager→agent configuration: every field survives encode/decode; bad input is one
clear ConfigError line."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubepresence.protocol import agents
from kubepresence.protocol.agents import AgentSettings, PortTakeover, decode, encode
from kubepresence.protocol.errors import ConfigError

FULL = AgentSettings(
    workload_kind="StatefulSet",
    workload_name="db",
    container="postgres",
    ports=(PortTakeover("sql", 5432, 9900), PortTakeover("", 8080, 9901, redirected=True)),
    app_mounts_root="/kubepresence/app-mounts",
    sftp_port=8022,
    health_port=9902,
    direct_port=9903,
    app_env_names=("PGDATA", "HOME"),
)


def test_every_field_round_trips() -> None:
    assert decode(encode(FULL)) == FULL
    # No field keeps its default: the round trip would not notice a field left out.
    assert all(getattr(FULL, name) != value for name, value in vars(AgentSettings()).items())


def test_the_document_the_agent_reads() -> None:
    assert json.loads(encode(FULL)) == {
        "workload_kind": "StatefulSet",
        "workload_name": "db",
        "container": "postgres",
        "ports": [
            {"name": "sql", "app_port": 5432, "agent_port": 9900, "redirected": False},
            {"name": "", "app_port": 8080, "agent_port": 9901, "redirected": True},
        ],
        "app_mounts_root": "/kubepresence/app-mounts",
        "sftp_port": 8022,
        "health_port": 9902,
        "direct_port": 9903,
        "app_env_names": ["PGDATA", "HOME"],
    }
    assert " " not in encode(FULL)  # compact: it is one env value


def test_absent_fields_are_defaults() -> None:
    assert decode("{}") == AgentSettings()
    assert decode('{"sftp_port": 0, "health_port": null, "ports": null}') == AgentSettings()


def test_names_share_the_prefix_the_agent_strips() -> None:
    names = [agents.CONFIG_ENV, *agents.POD_FIELDS]
    assert all(name.startswith(agents.PREFIX) for name in names)
    assert set(agents.REQUIRED_ENV) <= set(names)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("{", "KP_AGENT_CONFIG is not JSON"),
        ("[]", "KP_AGENT_CONFIG is not a JSON object"),
        ({"ports": [3]}, "a port is not an object"),
        ({"ports": 5}, "ports is not a list: 5"),
        ({"ports": {"app_port": 80}}, "ports is not a list"),
        ({"ports": [{"app_port": 0, "agent_port": 9900}]}, "0 is not a port number"),
        ({"ports": [{"app_port": "80", "agent_port": 9900}]}, "'80' is not a port number"),
        ({"ports": [{"app_port": True, "agent_port": 9900}]}, "True is not a port number"),
        ({"ports": [{"app_port": 80}]}, "None is not a port number"),
        ({"ports": [{"app_port": 80, "agent_port": 65536}]}, "65536 is not a port number"),
        (
            {"ports": [{"app_port": 80, "agent_port": 9900}, {"app_port": 81, "agent_port": 9900}]},
            "an agent port is taken twice",
        ),
        ({"sftp_port": 70000}, "70000 is not a port number"),
        ({"health_port": "9902"}, "'9902' is not a port number"),
        ({"app_env_names": "HOME"}, "app_env_names is not a list of names"),
        ({"app_env_names": ["HOME", 1]}, "app_env_names is not a list of names"),
    ],
)
def test_bad_input_is_one_clear_line(document: Any, message: str) -> None:
    text = document if isinstance(document, str) else json.dumps(document)
    with pytest.raises(ConfigError, match=message) as caught:
        decode(text)
    assert "\n" not in str(caught.value)


ports = st.integers(min_value=1, max_value=65535)
names = st.text(st.characters(codec="utf-8"), max_size=20)


@st.composite
def any_settings(draw: st.DrawFn) -> AgentSettings:
    agent_ports = draw(st.lists(ports, unique=True, max_size=5))
    takeovers = tuple(
        PortTakeover(draw(names), draw(ports), agent_port, draw(st.booleans()))
        for agent_port in agent_ports
    )
    return AgentSettings(
        workload_kind=draw(names),
        workload_name=draw(names),
        container=draw(names),
        ports=takeovers,
        app_mounts_root=draw(names),
        sftp_port=draw(st.one_of(st.just(0), ports)),
        health_port=draw(st.one_of(st.just(0), ports)),
        app_env_names=tuple(draw(st.lists(names, max_size=5))),
    )


@given(any_settings())
def test_any_settings_round_trip(value: AgentSettings) -> None:
    assert decode(encode(value)) == value


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)
fields = st.sampled_from([*vars(AgentSettings()), "name", "app_port", "agent_port"])


@settings(max_examples=500)
@given(st.text(max_size=200) | st.builds(json.dumps, st.dictionaries(fields, json_values)))
def test_any_document_decodes_or_is_one_config_error(text: str) -> None:
    """Whatever the variable holds, the agent says what is wrong in one line (no crash)."""
    message = ""
    try:
        decode(text)
    except ConfigError as error:
        message = str(error)
    assert "\n" not in message
