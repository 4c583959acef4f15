"""`--port LOCAL[:PORT]`: where intercepted traffic goes, and which workload port it is.

PORT is the name or number of a port of the Service that selects the workload (userd
resolves it to the container port the agent takes over), or of the container port when no
Service selects it. Without it ("" here) userd takes the Service's only port.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubepresence.protocol.errors import UserError

MAX_PORT = 65535
MAX_PORT_NAME = 15  # Kubernetes IANA_SVC_NAME


@dataclass(frozen=True)
class PortSpec:
    local: int
    remote: str


def parse_port_spec(text: str) -> PortSpec:
    local_text, _, remote = text.partition(":")
    if not local_text.isdigit() or not 0 < int(local_text) <= MAX_PORT:
        raise UserError(f"--port {text}: the local port must be a number from 1 to {MAX_PORT}")
    if not remote and text.endswith(":"):
        raise UserError(f"--port {text}: name the port after ':' or leave ':' out")
    if not remote:
        return PortSpec(int(local_text), "")
    if remote.isdigit():
        if not 0 < int(remote) <= MAX_PORT:
            raise UserError(f"--port {text}: port {remote} is out of range")
    elif not (0 < len(remote) <= MAX_PORT_NAME and remote.replace("-", "").isalnum()):
        raise UserError(f"--port {text}: {remote!r} is not a port name or number")
    return PortSpec(int(local_text), remote)
