"""What the user daemon knows about its connection to a cluster.

The daemon is either disconnected, connecting, or connected to exactly one cluster
context; the CLI's `status` reports this state. Transitions are checked here so that the
I/O shells cannot, say, connect twice.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from kubepresence.protocol.errors import UserError


class Phase(enum.Enum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"


@dataclass
class SessionState:
    phase: Phase = Phase.DISCONNECTED
    context: str = ""
    namespace: str = ""
    session_id: str = ""
    steps: list[str] = field(default_factory=list)

    def begin_connect(self, context: str, namespace: str) -> None:
        if self.phase is not Phase.DISCONNECTED:
            if self.context == context:
                raise UserError(f"already {self.phase.value} to context {context!r}")
            raise UserError(
                f"already {self.phase.value} to context {self.context!r}: "
                "run 'kubepresence quit' first"
            )
        self.phase = Phase.CONNECTING
        self.context = context
        self.namespace = namespace
        self.steps = []

    def connected(self, session_id: str) -> None:
        if self.phase is not Phase.CONNECTING:
            raise RuntimeError(f"connected() in phase {self.phase.value}")
        self.phase = Phase.CONNECTED
        self.session_id = session_id

    def disconnected(self) -> None:
        self.phase = Phase.DISCONNECTED
        self.context = self.namespace = self.session_id = ""
        self.steps = []
