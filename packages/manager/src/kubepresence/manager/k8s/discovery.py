"""Discovering the cluster's network from inside it (see core.clusterinfo for the rules)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from kubernetes_asyncio import client

from kubepresence.manager.core.clusterinfo import (
    collapse,
    parse_resolv_conf,
    service_range_from_error,
)
from kubepresence.manager.k8s.errors import KubernetesError, api_errors
from kubepresence.protocol.errors import ClusterError, NotFoundError

log = logging.getLogger(__name__)

RESOLV_CONF = Path("/etc/resolv.conf")


@dataclass(frozen=True)
class ClusterNetwork:
    pod_subnets: list[str]
    service_subnets: list[str]
    cluster_domain: str
    dns_service_ip: str
    cluster_id: str


async def discover(
    api: client.ApiClient, namespace: str, resolv_conf: Path = RESOLV_CONF
) -> ClusterNetwork:
    core = client.CoreV1Api(api)
    with api_errors("cannot list the nodes (for their pod CIDRs)"):
        nodes = await core.list_node()
    with api_errors(f"cannot read namespace {namespace}"):
        ns = await core.read_namespace(namespace)
    pod_cidrs = [c for n in nodes.items for c in (n.spec.pod_cidrs or [n.spec.pod_cidr]) if c]
    resolver = parse_resolv_conf(await asyncio.to_thread(resolv_conf.read_text))
    if not resolver.nameservers:
        raise ClusterError(f"{resolv_conf} names no nameserver: is dnsPolicy ClusterFirst?")
    network = ClusterNetwork(
        pod_subnets=collapse(pod_cidrs),
        service_subnets=await _service_subnets(api, core, namespace),
        cluster_domain=resolver.cluster_domain,
        dns_service_ip=resolver.nameservers[0],
        cluster_id=str(ns.metadata.uid),
    )
    log.info("cluster network: %s", network)
    return network


async def _service_subnets(
    api: client.ApiClient, core: client.CoreV1Api, namespace: str
) -> list[str]:
    try:
        with api_errors("cannot list ServiceCIDRs"):
            cidrs = await client.NetworkingV1Api(api).list_service_cidr()
        found = [c for item in cidrs.items for c in (item.spec.cidrs or [])]
        if found:
            return collapse(found)
    except KubernetesError as error:
        if not isinstance(error, NotFoundError):  # older clusters lack the API: probe below
            raise
    # Older clusters: ask the API server to allocate an impossible ClusterIP (dry run);
    # its refusal names the valid range.
    probe = client.V1Service(
        metadata=client.V1ObjectMeta(name="kubepresence-cidr-probe"),
        spec=client.V1ServiceSpec(cluster_ip="1.1.1.1", ports=[client.V1ServicePort(port=1)]),
    )
    try:
        with api_errors("cannot find the service CIDR"):
            await core.create_namespaced_service(namespace, probe, dry_run="All")
    except KubernetesError as error:
        found = service_range_from_error(error.message)
        if found:
            return found
        raise
    raise ClusterError("cannot find the service CIDR: the probe ClusterIP was accepted")
