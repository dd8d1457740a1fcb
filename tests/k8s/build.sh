#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager and kube-scheduler of the release pinned in
# tests/k8s/VERSION into a per-machine cache, once: no registry ships these binaries.
#
# k8s.io/kubernetes replaces its k8s.io/* staging modules with local paths, which a dependent
# module cannot use, so we build from a scratch module that requires k8s.io/kubernetes and pins
# every staging module it requires to the matching v0.x release.
#
#   MAHAVISHNU_K8S_CACHE   cache root (default ~/.cache/mahavishnu/k8s)
#   MAHAVISHNU_K8S_JOBS    parallel compile jobs, go build -p (default: number of CPUs)
# Prints the directory that holds the binaries.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version="$(tr -d '[:space:]' <"$here/VERSION")"
root="${MAHAVISHNU_K8S_CACHE:-$HOME/.cache/mahavishnu/k8s}"
out="$root/$version"
binaries=(kube-apiserver kube-controller-manager kube-scheduler)

complete() { [ -f "$out/.complete" ] && for b in "${binaries[@]}"; do [ -x "$out/$b" ] || return 1; done; }

mkdir -p "$root"
if complete; then echo "$out"; exit 0; fi
exec 9>"$root/.build.lock"
flock 9                                 # a second run waits here, then finds the build done
if complete; then echo "$out"; exit 0; fi

command -v go >/dev/null || { echo "build.sh: needs a Go toolchain (go.mod of $version asks for go 1.26)" >&2; exit 1; }
staging_minor="v0.${version#v1.}"       # v1.37.2 -> v0.37.2
work="$(mktemp -d "$root/.build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cd "$work"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0 GOWORK=off

go mod init mahavishnu.invalid/k8s-build >/dev/null 2>&1
go mod download -json "k8s.io/kubernetes@$version" >download.json
kmod="$(sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p' download.json)"
# Every k8s.io/* module k8s.io/kubernetes requires at v0.0.0 is a staging module.
staging=$(sed -n 's/^\t\(k8s\.io\/[a-z0-9-]*\) v0\.0\.0$/\1/p' "$kmod")
{
  echo "module mahavishnu.invalid/k8s-build"
  echo "go $(sed -n 's/^go \(.*\)$/\1/p' "$kmod")"
  echo "require k8s.io/kubernetes $version"
  echo "replace ("
  for m in $staging; do echo "	$m => $m $staging_minor"; done
  echo ")"
} >go.mod
pkgs=(); for b in "${binaries[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
go get "${pkgs[@]}" >/dev/null 2>&1 || go get "${pkgs[@]}"

# The version the binaries report (kubectl version, /version) is stamped at link time.
major="${version#v}"; major="${major%%.*}"; minor="${version#v*.}"; minor="${minor%%.*}"
ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $p.gitVersion=$version -X $p.gitMajor=$major -X $p.gitMinor=$minor"
  ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done
mkdir bin
start=$SECONDS
nice -n 10 go build -p "${MAHAVISHNU_K8S_JOBS:-$(nproc)}" -trimpath -ldflags="$ldflags" -o bin/ "${pkgs[@]}"
echo "build.sh: built ${binaries[*]} $version in $((SECONDS - start)) s" >&2

rm -rf "$out"; mkdir -p "$out"
mv bin/* "$out/"
touch "$out/.complete"
echo "$out"
