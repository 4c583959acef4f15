"""kubepresence.protocol: what every kubepresence process shares.

- `gen/`: the betterproto2/grpclib code generated from `packages/protocol/proto`
  (regenerate with `nox -s proto`). Parts use it only in their `rpc/` modules.
- `errors`: the error categories and their mapping to and from gRPC status codes.
- `lifecycle`: one uvloop event loop, one supervised task group, bounded shutdown on signals.
- `logs`: logging setup (file or stdout, text or JSON lines) and runtime level changes.
- `transport`: gRPC over unix sockets (mode, stale sockets, peer uid check, errors) and TCP.
- `paths`: where sockets and logs live.
- `agents`: the port takeover, the agent's description, and the manager→agent
  configuration (KP_AGENT_* variables, the KP_AGENT_CONFIG document).
- `workloads`: the workload kinds kubepresence intercepts, their Kubernetes API names, and
  the annotations on their pod templates.
- `wire`: the shared plain types (HTTP filter, agent) to and from generated messages.
- `backoff`: the one capped exponential backoff (sans-IO) every retry loop waits by.
- `streams`: the raw gRPC streams (tunnels, progress): each path once, one way to open it.
- `tunnel`, `dialing`, `datagrams`: relaying a flow over a tunnel; dialling its far end.

The words for traffic, used the same way in every part, in the .proto comments and here:

- *flow*: one TCP connection or one UDP exchange between a caller and a destination.
- *tunnel*: one gRPC stream carrying one flow (`TunnelMessage`: a `TunnelOpen`, then
  `data` and `TunnelControl` both ways). The tunnel RPCs say what their flow is: the
  Manager's DialCluster (a client's flow to the cluster), HandOver (an agent's
  intercepted connection) and AnswerDial (the answer to a dial), and the Connector's
  DialCluster (rootd's flow, which userd carries on to the manager's).
- *dial*: the manager's request that a peer connect a flow's far end: a `DialRequest` to
  a client (WatchDials: a hand-over to take) or an `EgressDial` to an agent
  (WatchEgressDials: a client's flow to dial from its pod). The peer answers with an
  AnswerDial tunnel naming the dial, and the manager splices it with the waiting one.
- *hand-over*: an agent giving an intercepted connection to the client that owns the
  intercept (a HandOver tunnel, which waits for the client's AnswerDial).
"""


def version_of(distribution: str) -> str:
    """The installed version of a kubepresence distribution, e.g. ``kubepresence-cli``."""
    # Imported here: importlib.metadata costs every CLI command ~25 ms it rarely needs.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "0.0.0+unknown"
