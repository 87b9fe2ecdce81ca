#!/usr/bin/env bash
# Build kube-apiserver and kube-controller-manager from Debian's kubernetes
# source package (no prebuilt apiserver is published in the registries we
# reach) and cache them outside the checkout.  Idempotent: a cached build
# is reused.  See DESIGN.md "Real components" for why reflect2 is replaced.
set -euo pipefail

K8S_VERSION=1.20.2
CACHE_ROOT="${SPATIALJOIN_CACHE:-$HOME/.cache/spatialjoin}"
OUT="$CACHE_ROOT/k8s-$K8S_VERSION"

if [[ -x "$OUT/kube-apiserver" && -x "$OUT/kube-controller-manager" ]]; then
  echo "k8s $K8S_VERSION: cached in $OUT"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
SRC_LIST=/etc/apt/sources.list.d/spatialjoin-deb-src.sources
if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ && ! grep -qs '^deb-src' /etc/apt/sources.list; then
  # Derive deb-src entries from the machine's own Debian entries: no host is
  # written by us, only copied from what apt already uses.
  sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > "$SRC_LIST"
  SRC_ADDED=1
fi
# install-system.sh normally installed these already; update apt only when
# the deb-src entries are new or a package is missing.
BUILD_DEPS=(golang-go golang-github-modern-go-reflect2-dev dpkg-dev rsync make)
missing=()
for pkg in "${BUILD_DEPS[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [[ -n "${SRC_ADDED:-}" || ${#missing[@]} -gt 0 ]]; then
  apt-get update -qq
fi
if ((${#missing[@]})); then
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

BUILD="$CACHE_ROOT/build"
mkdir -p "$BUILD"
cd "$BUILD"
if ! ls -d kubernetes-*/ >/dev/null 2>&1; then
  apt-get source --download-only kubernetes
  dpkg-source -x kubernetes_*.dsc
fi
SRC_DIR=$(ls -d "$BUILD"/kubernetes-*/ | head -1)
cd "$SRC_DIR"

# The vendored reflect2 crashes the apiserver under Go >= 1.18 on the first
# custom-resource create; Debian's packaged copy is fixed.
REFLECT2=vendor/github.com/modern-go/reflect2
rm -rf "$REFLECT2"
mkdir -p "$REFLECT2"
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2/. "$REFLECT2/"

export GOPROXY=off GOFLAGS=-mod=vendor GO111MODULE=on
export KUBE_BUILD_PLATFORMS=linux/$(go env GOARCH)
export GOMAXPROCS=$(nproc)
make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" KUBE_VERBOSE=0

mkdir -p "$OUT"
for bin in kube-apiserver kube-controller-manager; do
  cp "$(find _output -type f -name "$bin" -perm -u+x | head -1)" "$OUT/$bin"
done
echo "k8s $K8S_VERSION: built into $OUT"
