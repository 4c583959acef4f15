"""In the traffic manager's pod: how many flows of each kind it carried (GetFlowCounts).

Run with `python3 -c` of this file's text in the manager container, whose Python has the
kubepresence protocol package; the manager serves gRPC on its pod's port 8081.
Prints one JSON object: {"client_flows", "egress_flows", "hand_overs"}.
"""

from __future__ import annotations

import asyncio
import json

from grpclib.client import Channel

from kubepresence.protocol.gen import manager
from kubepresence.protocol.gen.google import protobuf


async def main() -> None:
    channel = Channel("127.0.0.1", 8081)
    try:
        counts = await manager.ManagerStub(channel, timeout=10).get_flow_counts(protobuf.Empty())
    finally:
        channel.close()
    print(
        json.dumps(
            {
                "client_flows": counts.client_flows,
                "egress_flows": counts.egress_flows,
                "hand_overs": counts.hand_overs,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
