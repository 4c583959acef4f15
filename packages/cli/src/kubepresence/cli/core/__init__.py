"""Sans-IO logic of the CLI: exit codes, rendering, kubeconfig reading rules."""
