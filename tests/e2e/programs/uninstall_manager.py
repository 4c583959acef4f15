"""Remove a test's traffic manager (cluster-scoped objects too) with userd's own
uninstall, as the cluster admin; what it reports is dropped.

Usage: uninstall_manager.py KUBECONFIG NAMESPACE.
"""

from __future__ import annotations

import asyncio
import sys

from kubernetes_asyncio import client

from kubepresence.userd.k8s.apiclient import load_configuration
from kubepresence.userd.k8s.installing import uninstall_manager


async def main(kubeconfig: str, namespace: str) -> None:
    conf = await load_configuration(kubeconfig)
    async with client.ApiClient(conf) as api:
        await uninstall_manager(api, namespace, lambda s: None)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
