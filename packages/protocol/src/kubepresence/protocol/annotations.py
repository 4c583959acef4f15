"""Annotations kubepresence reads and writes on the user's workloads and pods.

They are part of the contract between the parts (the manager injects on one, the user
daemon removes agents by clearing it), so they are named once, here.
"""

# On a pod template: the webhook injects the traffic agent into its pods.
INJECT_TRAFFIC_AGENT = "kubepresence.io/inject-traffic-agent"
INJECT_ENABLED = "enabled"
