"""The project's own single-node Kubernetes cluster for the demo and the end-to-end tests.

Hand-started host processes (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
kubelet, kube-proxy) plus containerd; only pause, CoreDNS and the test workloads run as
containers. See /work/shared/notes/local-cluster.md for the recipe and its traps.
"""
