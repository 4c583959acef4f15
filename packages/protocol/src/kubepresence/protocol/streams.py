"""The raw gRPC streams: each path defined once, one way to open or serve each kind.

Most RPCs go through the generated stubs and servicer bases. A few are served and called
on grpclib's raw stream instead, because both directions run at once (a tunnel) or
progress is streamed while the work runs; their paths and message types live here so
that a client and its server cannot disagree.

The words (flow, tunnel, dial, hand-over) are defined once, in the package docstring
(`kubepresence.protocol`), and in the .proto comments.

The tunnel streams, by who opens them and what they carry:

- Manager `DialCluster`: a client's flow to a destination in the cluster (userd's own,
  and rootd's, over a connection that userd splices to the manager without decoding).
- Manager `HandOver`: an agent's intercepted connection, for the intercept's client.
- Manager `AnswerDial`: a client's or an agent's answer to a dial the manager posted.
- Agent `AnswerDial`: a client's answer to a dial an agent posted on the client's Agent
  `WatchDials` (the client port-forwards to the agent's pod: the manager is not in the path).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import grpclib.const
from grpclib.client import Channel, Stream
from grpclib.const import Cardinality

from kubepresence.protocol.gen.common import TunnelMessage
from kubepresence.protocol.gen.connector import (
    ConnectProgress,
    ConnectRequest,
    Progress,
    TrafficManagerRequest,
)

MANAGER = "kubepresence.manager.Manager"
AGENT = "kubepresence.agent.Agent"
CONNECTOR = "kubepresence.connector.Connector"


def path(service: str, method: str) -> str:
    """The gRPC path of `method` of `service` (a test checks each against the stubs)."""
    return f"/{service}/{method}"


DIAL_CLUSTER_PATH = path(MANAGER, "DialCluster")
HAND_OVER_PATH = path(MANAGER, "HandOver")
ANSWER_DIAL_PATH = path(MANAGER, "AnswerDial")
AGENT_ANSWER_DIAL_PATH = path(AGENT, "AnswerDial")
CONNECT_PATH = path(CONNECTOR, "Connect")
MANAGE_TRAFFIC_MANAGER_PATH = path(CONNECTOR, "ManageTrafficManager")

TUNNEL_PATHS = (DIAL_CLUSTER_PATH, HAND_OVER_PATH, ANSWER_DIAL_PATH, AGENT_ANSWER_DIAL_PATH)

Handler = Callable[[Any], Coroutine[Any, Any, None]]


def _open_tunnel(channel: Channel, tunnel_path: str) -> Any:
    # A flow lives as long as it moves: the relays' idle timeouts bound it, not a deadline.
    stream: Stream[Any, Any] = channel.request(
        tunnel_path, Cardinality.STREAM_STREAM, TunnelMessage, TunnelMessage, timeout=None
    )
    return stream


def dial_cluster(channel: Channel) -> Any:
    """Open a Manager DialCluster tunnel (an async context manager giving the stream)."""
    return _open_tunnel(channel, DIAL_CLUSTER_PATH)


def hand_over(channel: Channel) -> Any:
    """Open a Manager HandOver tunnel (an agent's intercepted connection)."""
    return _open_tunnel(channel, HAND_OVER_PATH)


def answer_dial(channel: Channel) -> Any:
    """Open a Manager AnswerDial tunnel (the answer to a posted dial)."""
    return _open_tunnel(channel, ANSWER_DIAL_PATH)


def agent_answer_dial(channel: Channel) -> Any:
    """Open an Agent AnswerDial tunnel (the answer to a dial an agent posted directly)."""
    return _open_tunnel(channel, AGENT_ANSWER_DIAL_PATH)


def tunnel_handler(handler: Handler) -> grpclib.const.Handler:
    """Serve a tunnel path on the raw stream: a tunnel needs both directions at once,
    which the generated async-generator methods cannot do."""
    return grpclib.const.Handler(handler, Cardinality.STREAM_STREAM, TunnelMessage, TunnelMessage)


def connect_handler(handler: Handler) -> grpclib.const.Handler:
    """Serve Connector Connect on the raw stream: progress is sent while the work runs."""
    return grpclib.const.Handler(handler, Cardinality.UNARY_STREAM, ConnectRequest, ConnectProgress)


def manage_traffic_manager_handler(handler: Handler) -> grpclib.const.Handler:
    """Serve Connector ManageTrafficManager on the raw stream (its steps as they run)."""
    return grpclib.const.Handler(handler, Cardinality.UNARY_STREAM, TrafficManagerRequest, Progress)
