#!/usr/bin/env bash
# Builds the local cluster's binaries from the Go modules under tests/cluster/go.
# Output and caches live outside the repository, keyed by the module's go.sum, so a warm
# machine skips every step; a cold one compiles everything (tens of minutes on 2 cores).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${KUBEPRESENCE_CLUSTER_CACHE:-/var/cache/kubepresence-cluster}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"
export GOMODCACHE=$cache/gomod GOCACHE=$cache/gocache
mkdir -p "$GOMODCACHE" "$GOCACHE" "$cache/bin"

module_version() { # module path -> its version in go.mod
  awk -v m="$2" '$1==m && $2 ~ /^v/ {print $2; exit}' "$here/go/$1/go.mod"
}

build() { # name, ldflags, binary=package ...
  local name=$1 ldflags=$2; shift 2
  local key; key=$(sha256sum "$here/go/$name/go.sum" "$here/go/$name/go.mod" $(ls "$here/go/$name"/*.go 2>/dev/null) | sha256sum | cut -c1-16)
  local out=$cache/bin/$name-$key
  if [ -f "$out/.complete" ]; then
    echo "build: $name up to date ($out)"
  else
    echo "build: $name -> $out"
    rm -rf "$out"; mkdir -p "$out.tmp"
    local start=$SECONDS
    (cd "$here/go/$name" && go mod download)
    for spec in "$@"; do
      (cd "$here/go/$name" && go build -trimpath -tags selinux,notest,grpcnotrace -ldflags "$ldflags" -o "$out.tmp/${spec%%=*}" "${spec#*=}")
    done
    mv "$out.tmp" "$out"; touch "$out/.complete"
    echo "build: $name took $((SECONDS - start)) s"
  fi
  ln -sfn "$out" "$cache/bin/$name"
}

k8s_version=$(module_version kubernetes k8s.io/kubernetes)
k8s_minor=$(echo "$k8s_version" | cut -d. -f2)
ld="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ld="$ld -X $p.gitVersion=$k8s_version -X $p.gitMajor=1 -X $p.gitMinor=$k8s_minor -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done
k8s_cmds=()
for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
  k8s_cmds+=("$c=k8s.io/kubernetes/cmd/$c")
done

etcd_version=$(module_version etcd go.etcd.io/etcd/server/v3)
helm_version=$(module_version helm helm.sh/helm/v3)
build etcd "-s -w" etcd=go.etcd.io/etcd/server/v3 etcdctl=go.etcd.io/etcd/etcdctl/v3
build crictl "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$(module_version crictl sigs.k8s.io/cri-tools)" crictl=sigs.k8s.io/cri-tools/cmd/crictl
build coredns "-s -w" coredns=.
build helm "-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version" helm=helm.sh/helm/v3/cmd/helm
# One go build for all Kubernetes commands shares the compile of their common packages.
build kubernetes "$ld" "${k8s_cmds[@]}"
echo "build: done (kubernetes $k8s_version, etcd $etcd_version, helm $helm_version)"
