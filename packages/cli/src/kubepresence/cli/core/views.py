"""The CLI's views of what the daemons answer, made from messages in protobuf's JSON
mapping (as the JSON calls carry them, `protocol.jsoncalls`; the gRPC calls' replies are
turned into the same form first), ready for rendering.

In that form enums are their .proto value names (`CONNECT_STATE_CONNECTED`), 64-bit
integers are strings, unset messages are None, and every other field is present.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubepresence.protocol.httpfilter import HttpFilter, describe
from kubepresence.protocol.routing import DEFAULT_VIRTUAL_SUBNET, ProxyVia

Message = dict[str, Any]


def enum_word(value: object, prefix: str) -> str:
    """`CONNECT_STATE_CONNECTED` with prefix `CONNECT_STATE_` → `connected`."""
    text = str(value)
    return (text[len(prefix) :] if text.startswith(prefix) else text).lower()


@dataclass(frozen=True)
class InterceptResult:
    name: str
    namespace: str
    workload: str
    port: str
    local: str
    state: str
    message: str
    environment: dict[str, str]
    http_filter: str = ""  # personal intercepts: which requests come here
    preview_url: str = ""
    service: str = ""  # the Service whose port led to the container port ("" none)
    mount_point: str = ""  # where the app's volumes are mounted ("" not mounted)
    mount_error: str = ""  # why they are not, when a mount was asked for


def intercept_result(info: Message) -> InterceptResult:
    """An `InterceptInfo`."""
    spec: Message = info.get("spec") or {}
    return InterceptResult(
        name=spec.get("name", ""),
        namespace=spec.get("namespace", ""),
        workload=spec.get("workload_name", ""),
        port=spec.get("service_port", ""),
        local=f"{spec.get('local_host', '')}:{spec.get('local_port', 0)}",
        state=enum_word(info.get("state", ""), "INTERCEPT_STATE_"),
        message=info.get("message", ""),
        environment=dict(info.get("environment") or {}),
        http_filter=_filter_text(spec.get("http_filter")),
        preview_url=info.get("preview_url", ""),
        service=spec.get("service_name", ""),
        mount_point=info.get("mount_point", ""),
        mount_error=info.get("mount_error", ""),
    )


def _filter_text(message: Message | None) -> str:
    """An `HTTPFilter` described; "" for none (a global intercept)."""
    if not message:
        return ""
    http_filter = HttpFilter(
        headers=tuple((h["name"].lower(), h["value"]) for h in message.get("headers") or []),
        path_prefix=message.get("path_prefix", ""),
        path_equal=message.get("path_equal", ""),
        path_regex=message.get("path_regex", ""),
        method=message.get("method", "").upper(),
    )
    return "" if http_filter == HttpFilter() else describe(http_filter)


def connection(info: Message) -> dict[str, Any]:
    """A `ConnectInfo`: what `status` and `connect` show of the session."""
    data: dict[str, Any] = {"state": enum_word(info.get("state", ""), "CONNECT_STATE_")}
    if data["state"] != "connected":
        return data
    data["context"] = info["context"]
    data["server"] = info["cluster_server"]
    data["namespace"] = info["namespace"]
    data["manager_namespace"] = info["manager_namespace"]
    if info.get("session") is not None:
        data["session"] = info["session"]["session_id"]
    cluster = info.get("cluster")
    if cluster is not None:
        data["cluster"] = {
            "pod_subnets": list(cluster["pod_subnets"]),
            "service_subnets": list(cluster["service_subnets"]),
            "cluster_domain": cluster["cluster_domain"],
            "dns_service_ip": cluster["dns_service_ip"],
            "manager_version": cluster["manager_version"],
        }
    data["vif"] = info["vif_name"]
    if info["network_problem"]:
        data["network_problem"] = info["network_problem"]
    data["open_flows"] = int(info["open_flows"])
    data["resolver"] = info["resolver"]
    fragments: Message = info.get("fragments") or {}
    data["ip_fragments"] = {
        "received": int(fragments.get("received", 0)),
        "reassembled": int(fragments.get("reassembled", 0)),
        "sent": int(fragments.get("sent", 0)),
        "dropped": {k: int(v) for k, v in sorted((fragments.get("dropped") or {}).items())},
    }
    data.update(_routing(info))
    data["intercepts"] = [
        f"{r.name}: {r.namespace}/{r.workload} port {r.port}"
        f"{f' ({r.http_filter})' if r.http_filter else ''} -> {r.local} "
        f"({r.state}{f': {r.message}' if r.message else ''})"
        f"{f', preview {r.preview_url}' if r.preview_url else ''}"
        f"{f', volumes at {r.mount_point}' if r.mount_point else ''}"
        for r in map(intercept_result, info["intercepts"])
    ]
    if info["inbound"]:
        data["inbound"] = info["inbound"]
    data["events"] = list(info["events"])
    return data


def _routing(info: Message) -> dict[str, Any]:
    options: Message = info.get("routing") or {}
    proxy_via = [
        ProxyVia(p["cidr"], p["namespace"], p["workload"]) for p in options.get("proxy_via") or []
    ]
    return {
        "routing": {
            "allow_conflicting": list(options.get("allow_conflicting") or []),
            "vnat": list(options.get("vnat") or []),
            "proxy_via": [f"{p.cidr}={p.workload_ref}" for p in proxy_via],
            "virtual_subnet": (options.get("virtual_subnet") or DEFAULT_VIRTUAL_SUBNET)
            if options.get("vnat") or proxy_via
            else "",
            "virtual_addresses": [
                f"{a['virtual_ip']} -> {a['cluster_ip']}" + (f" via {a['via']}" if a["via"] else "")
                for a in info.get("virtual_addresses") or []
            ],
        },
        "dns": {
            "exclude_suffixes": list(options.get("dns_exclude_suffixes") or []),
            "include_suffixes": list(options.get("dns_include_suffixes") or []),
            "mappings": dict(sorted((options.get("dns_mappings") or {}).items())),
        },
    }


def workloads(found: Message) -> list[dict[str, Any]]:
    """A `WorkloadList`: what `list` shows."""
    return [
        {
            "name": w["name"],
            "namespace": w["namespace"],
            "kind": enum_word(w["kind"], "WORKLOAD_KIND_").capitalize(),
            "agent_installed": w["agent_installed"],
            "intercepts": [vars(intercept_result(i)) for i in w["intercepts"]],
        }
        for w in found.get("workloads") or []
    ]
