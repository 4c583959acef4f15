"""kubepresence-manager: the traffic manager (a Deployment in the cluster)."""

from __future__ import annotations

import os
import sys

from kubepresence.manager.app import TrafficManager, WebhookOptions
from kubepresence.manager.core.addresses import parse_listen_address
from kubepresence.manager.core.injection import parse_agent_resources
from kubepresence.protocol.lifecycle import daemon_parser, start_daemon


def main(argv: list[str] | None = None) -> int:
    parser = daemon_parser("manager", "kubepresence-manager", __doc__ or "")
    parser.add_argument(
        "--grpc-address", default="0.0.0.0:8081", help="HOST:PORT of the gRPC server"
    )
    parser.add_argument(
        "--namespace",
        default=os.environ.get("MANAGER_NAMESPACE", "kubepresence"),
        help="the manager's own namespace (default: $MANAGER_NAMESPACE or kubepresence)",
    )
    parser.add_argument(
        "--managed-namespaces",
        default="",
        help="comma-separated namespaces the manager watches (namespaced RBAC); "
        "empty: all namespaces",
    )
    parser.add_argument(
        "--session-ttl", type=float, default=60.0, help="seconds a silent session lives"
    )
    parser.add_argument(
        "--dial-timeout", type=float, default=10.0, help="seconds to dial a cluster destination"
    )
    parser.add_argument(
        "--flow-idle-timeout", type=float, default=600.0, help="seconds before an idle flow ends"
    )
    parser.add_argument(
        "--webhook-address",
        default=None,
        help="HOST:PORT of the agent-injection webhook (HTTPS); absent: no webhook",
    )
    parser.add_argument(
        "--agent-image",
        default=os.environ.get("AGENT_IMAGE", ""),
        help="the traffic agent image the webhook injects (default: $AGENT_IMAGE)",
    )
    parser.add_argument(
        "--preview-port",
        type=int,
        default=0,
        help="port of the preview gateway for `intercept --preview-url` (0: no previews)",
    )
    parser.add_argument(
        "--agent-resources",
        default="",
        help="JSON requests/limits of injected agents (default: 10m CPU, 32Mi-128Mi memory)",
    )
    parser.add_argument(
        "--agent-image-pull-secrets",
        default=os.environ.get("AGENT_IMAGE_PULL_SECRETS", ""),
        help="comma-separated Secrets injected pods pull the agent image with "
        "(default: $AGENT_IMAGE_PULL_SECRETS)",
    )
    parser.add_argument(
        "--agent-pull-policy",
        default="IfNotPresent",
        choices=("Always", "IfNotPresent", "Never"),
        help="imagePullPolicy of injected agents",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.preview_port < 65536:
        parser.error(f"--preview-port {args.preview_port} is out of range")
    try:
        host, port = parse_listen_address(args.grpc_address)
    except ValueError as error:
        parser.error(str(error))
    webhook = None
    if args.webhook_address is not None:
        try:
            webhook_host, webhook_port = parse_listen_address(args.webhook_address)
        except ValueError as error:
            parser.error(f"--webhook-address: {error}")
        if not args.agent_image:
            parser.error("the webhook needs the agent image: set AGENT_IMAGE or --agent-image")
        try:
            agent_resources = (
                parse_agent_resources(args.agent_resources) if args.agent_resources else None
            )
        except ValueError as error:
            parser.error(str(error))
        webhook = WebhookOptions(
            webhook_host,
            webhook_port,
            agent_image=args.agent_image,
            pull_policy=args.agent_pull_policy,
            image_pull_secrets=tuple(
                s.strip() for s in args.agent_image_pull_secrets.split(",") if s.strip()
            ),
            agent_log_level=args.log_level,
            agent_resources=agent_resources,
        )
    manager = TrafficManager(
        host,
        port,
        namespace=args.namespace,
        session_ttl=args.session_ttl,
        dial_timeout=args.dial_timeout,
        idle_timeout=args.flow_idle_timeout,
        webhook=webhook,
        preview_port=args.preview_port,
        managed_namespaces=tuple(n for n in args.managed_namespaces.split(",") if n),
    )
    return start_daemon("manager", "kubepresence-manager", args, manager.run)


if __name__ == "__main__":
    sys.exit(main())
