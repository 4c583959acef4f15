"""Annotations kubepresence reads and writes on the user's workloads and pods, and the
name of the container it injects.

They are part of the contract between the parts (the manager injects on one, the user
daemon removes agents by clearing it), so they are named once, here.
"""

# On a pod template: the webhook injects the traffic agent into its pods.
INJECT_TRAFFIC_AGENT = "kubepresence.io/inject-traffic-agent"
INJECT_ENABLED = "enabled"
# On a pod template: the namespace of the traffic manager whose webhook injects its pods
# (their agents join that manager). Absent: every manager's webhook may inject. Several
# managers in one cluster would otherwise race for the same pods.
INJECT_MANAGER_NAMESPACE = "kubepresence.io/manager-namespace"
# On a pod template: the container the agent serves (default: the first one).
INJECT_CONTAINER = "kubepresence.io/inject-container"
# On a pod template: comma-separated port numbers that Services target by number; the
# webhook redirects them to the agent (an init container with iptables).
INJECT_NUMERIC_PORTS = "kubepresence.io/inject-numeric-ports"
# The injected container's name: how every part recognises a pod that has the agent.
AGENT_CONTAINER = "kubepresence-agent"
