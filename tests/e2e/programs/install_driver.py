"""userd's install code driven from the workstation by test_install: one call, its
progress lines and its result (or the KubepresenceError's category and message).

Usage: install_driver.py ACTION NS ARGS_JSON KUBECONFIG. ACTION is `ensure`
(ManagerInstall(namespace=NS, **ARGS); "wait", "impersonate" and "resources" are taken
out of ARGS first), `find`, `uninstall`, or `version` (the manager's version over a
port-forward, and the pod asked). Prints {"progress", "result" | "error"}.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from kubepresence.protocol.errors import KubepresenceError
from kubepresence.protocol.transport import CONFIGURATION
from kubepresence.userd.core.manifests import ManagerInstall, Resources
from kubepresence.userd.k8s import installing
from kubepresence.userd.k8s.apiclient import load_configuration, websocket_client
from kubepresence.userd.k8s.portforward import PortForwarder
from kubepresence.userd.k8s.portforward_grpc import PortForwardChannel
from kubepresence.userd.rpc.manager import ManagerClient


async def version(conf: client.Configuration, ns: str) -> list[str]:
    async with client.ApiClient(conf) as api:
        pods = await client.CoreV1Api(api).list_namespaced_pod(
            ns, label_selector="app.kubernetes.io/name=kubepresence-manager"
        )
    ready = [
        p.metadata.name
        for p in pods.items
        if p.status.phase == "Running" and not p.metadata.deletion_timestamp
    ]
    async with websocket_client(conf) as ws:
        forwarder = PortForwarder(ws, ns, ready[0], 8081)
        channel = PortForwardChannel(forwarder, CONFIGURATION)
        listening = asyncio.Event()
        serving = asyncio.create_task(channel.run(listening))
        await asyncio.wait_for(listening.wait(), 10)
        try:
            return [await ManagerClient(channel).version(), ready[0]]
        finally:
            channel.close()
            serving.cancel()


async def main(action: str, ns: str, args: dict[str, Any], kubeconfig: str) -> None:
    conf = await load_configuration(Path(kubeconfig))
    said: list[str] = []
    out: dict[str, Any] = {"progress": said}
    try:
        if action == "version":
            out["result"] = await version(conf, ns)
        else:
            async with client.ApiClient(conf) as api:
                if "impersonate" in args:
                    api.set_default_header("Impersonate-User", args.pop("impersonate"))
                wait = args.pop("wait", 120)
                if "resources" in args:
                    args["resources"] = Resources(**args["resources"])
                if action == "ensure":
                    install = ManagerInstall(namespace=ns, **args)
                    out["result"] = await installing.ensure_manager(
                        api, install, said.append, wait_seconds=wait
                    )
                elif action == "find":
                    out["result"] = await installing.find_manager(api, ns)
                elif action == "uninstall":
                    out["result"] = await installing.uninstall_manager(api, ns, said.append)
    except KubepresenceError as error:
        out["error"] = [error.category.value, error.message]
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]))
