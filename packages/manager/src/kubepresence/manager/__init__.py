"""kubepresence traffic manager: runs in the cluster, serves clients and agents."""

from kubepresence.protocol.lazyimport import KUBERNETES_ASYNCIO, lazy_reexports

# Before any of our modules imports kubernetes_asyncio (1.2 s and ~30 MiB less: see there).
lazy_reexports(*KUBERNETES_ASYNCIO)
