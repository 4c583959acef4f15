"""The raw streams' paths and types (`protocol.streams`) match the generated services.

Scenarios:
- every path streams defines is an RPC of the generated Manager, Connector or Agent service,
  with the cardinality and message types its opener or handler uses;
- the old Manager/Connector Tunnel and PrepareIntercept RPCs are gone.
"""

from __future__ import annotations

from typing import Any

import grpclib.const
import pytest
from grpclib.const import Cardinality

from kubepresence.protocol import streams
from kubepresence.protocol.gen import agent, common, connector, manager


def generated() -> dict[str, grpclib.const.Handler]:
    # The servicer bases build their mapping from bound methods; no RPC is called.
    mapping: dict[str, grpclib.const.Handler] = {}
    mapping.update(manager.ManagerBase().__mapping__())
    mapping.update(connector.ConnectorBase().__mapping__())
    mapping.update(agent.AgentBase().__mapping__())
    return mapping


async def _nothing(stream: Any) -> None:
    del stream


@pytest.mark.parametrize("path", streams.TUNNEL_PATHS)
def test_tunnel_paths_are_generated_bidi_tunnels(path: str) -> None:
    handler = generated()[path]
    ours = streams.tunnel_handler(_nothing)
    assert handler.cardinality is Cardinality.STREAM_STREAM
    assert handler.request_type is common.TunnelMessage is ours.request_type
    assert handler.reply_type is common.TunnelMessage is ours.reply_type


@pytest.mark.parametrize(
    ("path", "ours"),
    [
        (streams.CONNECT_PATH, streams.connect_handler(_nothing)),
        (streams.MANAGE_TRAFFIC_MANAGER_PATH, streams.manage_traffic_manager_handler(_nothing)),
    ],
)
def test_progress_paths_match_the_generated_types(path: str, ours: grpclib.const.Handler) -> None:
    handler = generated()[path]
    assert (handler.cardinality, handler.request_type, handler.reply_type) == (
        ours.cardinality,
        ours.request_type,
        ours.reply_type,
    )


def test_the_split_tunnel_rpcs_are_gone() -> None:
    paths = generated()
    assert streams.path(streams.MANAGER, "Tunnel") not in paths
    assert streams.path(streams.CONNECTOR, "Tunnel") not in paths
    assert streams.path(streams.MANAGER, "PrepareIntercept") not in paths
    assert not hasattr(manager, "PreparedIntercept")
