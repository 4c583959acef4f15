"""kubepresence.protocol: what every kubepresence process shares.

- `gen/`: the betterproto2/grpclib code generated from `packages/protocol/proto`
  (regenerate with `nox -s proto`). Parts use it only in their `rpc/` modules.
- `errors`: the error categories and their mapping to and from gRPC status codes.
- `lifecycle`: one uvloop event loop, one supervised task group, bounded shutdown on signals.
- `logs`: logging setup (file or stdout, text or JSON lines) and runtime level changes.
- `transport`: gRPC over unix sockets (mode, stale sockets, peer uid check, errors) and TCP.
- `paths`: where sockets and logs live.
- `agents`, `agentconfig`, `agentwire`: the port takeover and the agent's description;
  the manager→agent configuration (KP_AGENT_* variables, the KP_AGENT_CONFIG document);
  the description to and from the generated `AgentInfo`.
- `workloads`: the workload kinds kubepresence intercepts and their Kubernetes API names.
- `backoff`: the one capped exponential backoff (sans-IO) every retry loop waits by.
"""

from importlib.metadata import PackageNotFoundError, version


def version_of(distribution: str) -> str:
    """The installed version of a kubepresence distribution, e.g. ``kubepresence-cli``."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "0.0.0+unknown"


__version__ = version_of("kubepresence-protocol")
