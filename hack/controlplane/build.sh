#!/usr/bin/env bash
# Build the real control plane for tests and the demo: kube-apiserver, kube-controller-manager and etcd
# from the pinned Kubernetes module (go.mod here), helm from its module. Everything lands in a cache
# outside the work tree, keyed by the pins; a second call finds it and returns at once.
# Prints the directory holding the binaries as its last line.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
helm_version=v3.22.0
# The cache key covers what goes into the binaries, not this script's wording.
key=$( (cat "$here/go.mod" "$here/go.sum" "$here"/cmd/*/main.go; echo "$helm_version") | sha256sum | cut -c1-12)
k8s_version=$(awk '$1 == "k8s.io/kubernetes" {print $2}' "$here/go.mod" | head -n1)
bin="${AGENTGROUP_CACHE:-$HOME/.cache/agentgroup}/bin/${k8s_version}-${key}"
wanted=(kube-apiserver kube-controller-manager etcd helm)

missing=()
for b in "${wanted[@]}"; do [ -x "$bin/$b" ] || missing+=("$b"); done
if [ ${#missing[@]} -eq 0 ]; then
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { echo "controlplane: 'go' is not on PATH; install Go >= 1.26 to build the test control plane" >&2; exit 2; }
mkdir -p "$bin"
tmp=$(mktemp -d "$bin/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export GOFLAGS="${GOFLAGS:-} -trimpath"
start=$SECONDS
for b in "${missing[@]}"; do
  case $b in
    helm) what="helm $helm_version" ;;
    etcd) what="etcd $(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2}' "$here/go.mod" | head -n1)" ;;
    *) what="$b $k8s_version" ;;
  esac
  echo "controlplane: building $what; a cold build takes minutes on 2 cores..." >&2
  t=$SECONDS
  if [ "$b" = helm ]; then
    GOBIN="$tmp" go install -ldflags='-s -w' "helm.sh/helm/v3/cmd/helm@$helm_version" >&2
  else
    (cd "$here" && go build -ldflags='-s -w' -o "$tmp/$b" "./cmd/$b") >&2
  fi
  mv "$tmp/$b" "$bin/$b"
  echo "controlplane: $b ready in $((SECONDS - t)) s" >&2
done
echo "controlplane: built ${missing[*]} in $((SECONDS - start)) s into $bin" >&2
echo "$bin"
