#!/usr/bin/env bash
# Debian packages the local stack needs, then the cached Kubernetes build and
# kubectl/helm.  Idempotent: does nothing but checks when all is in place.
set -euo pipefail

PACKAGES=(postgresql-15 postgresql-15-postgis-3 etcd-server openssl unzip
          golang-go golang-github-modern-go-reflect2-dev dpkg-dev rsync make)
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The server package starts a default cluster on 5432; we run our own.
  if command -v pg_ctlcluster >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q online; then
    pg_lsclusters -h | awk '$4=="online"{print $1, $2}' | while read -r ver name; do
      pg_ctlcluster "$ver" "$name" stop || true
    done
  fi
fi
here="$(cd "$(dirname "$0")" && pwd)"
bash "$here/install-k8s.sh"
bash "$here/install-kube-tools.sh"
