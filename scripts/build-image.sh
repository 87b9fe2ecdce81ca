#!/usr/bin/env bash
# Build the spatialjoin-operator image with Debian's buildah (vfs storage,
# chroot isolation) from a Debian bookworm base made with debootstrap: no
# image registry and no container runtime are needed.
#
#   scripts/build-image.sh          base (cached) + image + checks   (`make image`)
#   scripts/build-image.sh base     only the debootstrap'd base, imported into buildah
#   scripts/build-image.sh lock     regenerate requirements/image.txt (see below)
#   scripts/build-image.sh prune    drop superseded images and cached steps (vfs is big)
#
# 1. The base: `debootstrap --variant=minbase` of bookworm with python3,
#    python3-venv and ca-certificates, upgraded from the machine's own Debian
#    sources (security updates), trimmed, and cached as a root-owned tarball
#    under $SPATIALJOIN_CACHE/image-base (default ~/.cache/spatialjoin). The
#    mirror is the one this machine's apt already uses. A recipe change (suite,
#    packages) makes a new tarball; otherwise it is reused.
# 2. The tarball becomes the buildah image localhost/spatialjoin-base:<recipe>.
# 3. `buildah bud --isolation chroot --layers` builds the Dockerfile with
#    BASE_IMAGE set to that image. pip inside the build uses this machine's pip
#    configuration: `pip config list` (files and PIP_* variables) is written to
#    a temporary pip.conf passed as the build secret "pipconf", and every local
#    path it names (find-links, file:// indexes, certificate, constraints) is
#    bind-mounted read-only into the RUN steps. No index is written anywhere.
# 4. The built image is checked: `buildah run` of `spatialjoin --version` when
#    the sandbox allows it, else the mounted root filesystem is inspected and
#    `chroot`ed into as uid 10001; either way the final root must hold no
#    compiler, no make and no pip.
#
# The lock: requirements/image.txt pins the runtime closure of the project's
# dependencies plus the build backend, preferring the versions of the
# development virtualenv (the ones the tests ran with):
#     scripts/build-image.sh lock     (PYTHON=.venv/bin/python by default)
#
# Environment: IMAGE (default localhost/spatialjoin-operator:<version>),
# SPATIALJOIN_CACHE, PYTHON (for `lock`), SKIP_APT=1 (never apt-get install).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
CACHE_ROOT="${SPATIALJOIN_CACHE:-$HOME/.cache/spatialjoin}"
BASE_DIR="$CACHE_ROOT/image-base"
SUITE=bookworm
BASE_PACKAGES=python3,python3-venv,ca-certificates
RUN_AS=10001
BUILDAH=(buildah --storage-driver vfs)
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)"
IMAGE="${IMAGE:-localhost/spatialjoin-operator:$VERSION}"
export BUILDAH_ISOLATION=chroot STORAGE_DRIVER=vfs

log() { printf 'build-image: %s\n' "$*" >&2; }
now() { date +%s; }

# Whatever a step leaves behind goes at exit, also when a check fails.
PIPCONF=""
CHECK_CTR=""
LOCK_TMP=""
cleanup() {
  if [[ -n "$CHECK_CTR" ]]; then
    "${BUILDAH[@]}" umount "$CHECK_CTR" > /dev/null 2>&1 || true
    "${BUILDAH[@]}" rm "$CHECK_CTR" > /dev/null 2>&1 || true
  fi
  [[ -n "$PIPCONF" ]] && rm -f "$PIPCONF"
  [[ -n "$LOCK_TMP" ]] && rm -rf "$LOCK_TMP"
  return 0
}
trap cleanup EXIT

need_tools() {
  local missing=()
  command -v buildah > /dev/null || missing+=(buildah)
  command -v debootstrap > /dev/null || missing+=(debootstrap)
  [[ ${#missing[@]} -eq 0 ]] && return 0
  if [[ "${SKIP_APT:-0}" == 1 ]]; then
    log "missing ${missing[*]} and SKIP_APT=1"; exit 1
  fi
  log "installing Debian's ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" > /dev/null
}

# The first Debian mirror this machine's apt uses for $SUITE (deb822 or one-line format).
debian_mirror() {
  local uri
  uri="$(awk -v suite="$SUITE" '
      /^Types:/ { deb = ($0 ~ /(^|[ \t])deb([ \t]|$)/) }
      /^URIs:/ { uris = $2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite && deb && uris != "") { print uris; exit } }
      /^$/ { deb = 0; uris = "" }
    ' /etc/apt/sources.list.d/*.sources 2> /dev/null | head -1)"
  if [[ -z "$uri" && -f /etc/apt/sources.list ]]; then
    uri="$(awk -v suite="$SUITE" '$1 == "deb" {
        for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i ~ /:\/\//) { if ($(i + 1) == suite) print $i; break }
      }' /etc/apt/sources.list | head -1)"
  fi
  [[ -n "$uri" ]] || { log "no Debian $SUITE entry in this machine's apt sources"; exit 1; }
  printf '%s\n' "$uri"
}

recipe_id() {
  printf '%s\n' "$SUITE" "$BASE_PACKAGES" "minbase" "upgrade+trim v1" | sha256sum | cut -c1-12
}

# --- 1. the debootstrap'd base, cached as a tarball -------------------------------------
make_base_tarball() {
  local id tarball work mirror started
  id="$(recipe_id)"
  tarball="$BASE_DIR/$SUITE-python3-$id.tar"
  if [[ -s "$tarball" ]]; then
    log "base: cached $tarball"
    BASE_TARBALL="$tarball"; return
  fi
  started=$(now)
  mkdir -p "$BASE_DIR"
  work="$(mktemp -d "$BASE_DIR/rootfs.XXXXXX")"
  mirror="$(debian_mirror)"
  log "base: debootstrap $SUITE ($BASE_PACKAGES) into $work"
  debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$work" "$mirror" \
    > "$BASE_DIR/debootstrap.log" 2>&1 || {
      tail -20 "$BASE_DIR/debootstrap.log" >&2; rm -rf "$work"; exit 1; }
  # Security and point-release updates, from the same sources this machine uses.
  if compgen -G "/etc/apt/sources.list.d/*.sources" > /dev/null || [[ -s /etc/apt/sources.list ]]; then
    rm -f "$work/etc/apt/sources.list"
    mkdir -p "$work/etc/apt/sources.list.d"
    for f in /etc/apt/sources.list.d/*.sources; do
      [[ -f "$f" ]] && grep -q "$SUITE" "$f" && cp "$f" "$work/etc/apt/sources.list.d/"
    done
    [[ -s /etc/apt/sources.list ]] && grep -q "^deb .*$SUITE" /etc/apt/sources.list \
      && grep "^deb .*$SUITE" /etc/apt/sources.list > "$work/etc/apt/sources.list"
    # Only binary entries: the image has no use for deb-src.
    sed -i 's/^Types:.*deb-src.*$/Types: deb/' "$work"/etc/apt/sources.list.d/*.sources 2> /dev/null || true
    chroot "$work" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
      sh -c 'apt-get update -qq && apt-get -y -qq upgrade > /dev/null && apt-get clean' \
      >> "$BASE_DIR/debootstrap.log" 2>&1 || log "base: upgrade skipped (see $BASE_DIR/debootstrap.log)"
  fi
  # Trim what a runtime never reads.
  rm -rf "$work"/var/lib/apt/lists/* "$work"/var/cache/apt/*.bin "$work"/var/cache/apt/archives/*.deb \
         "$work"/var/cache/debconf/*-old "$work"/var/log/* "$work"/usr/share/doc/* \
         "$work"/usr/share/man/* "$work"/usr/share/info/* "$work"/usr/share/locale/* \
         "$work"/var/lib/dpkg/*-old "$work"/tmp/* "$work"/root/.cache
  find "$work/usr/lib/python3.11" -depth -type d -name __pycache__ -exec rm -rf {} + 2> /dev/null || true
  tar --numeric-owner --xattrs -C "$work" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf "$work"
  chmod 0600 "$tarball"
  log "base: $tarball ($(du -h "$tarball" | cut -f1)) in $(( $(now) - started ))s"
  BASE_TARBALL="$tarball"
}

# --- 2. the tarball as a buildah image --------------------------------------------------
import_base() {
  local id ctr
  id="$(recipe_id)"
  BASE_IMAGE="localhost/spatialjoin-base:$SUITE-$id"
  if "${BUILDAH[@]}" inspect --type image "$BASE_IMAGE" > /dev/null 2>&1; then
    log "base: $BASE_IMAGE already in buildah's storage"; return
  fi
  ctr="$("${BUILDAH[@]}" from --quiet scratch)"
  "${BUILDAH[@]}" add --quiet "$ctr" "$BASE_TARBALL" / > /dev/null
  "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd /bin/bash \
    --label "org.opencontainers.image.description=Debian $SUITE minbase with python3 (debootstrap)" \
    "$ctr"
  "${BUILDAH[@]}" commit --quiet --rm "$ctr" "$BASE_IMAGE" > /dev/null
  log "base: imported as $BASE_IMAGE"
}

# --- 3. the host's pip configuration, for the build ------------------------------------
VOLUMES=()
pip_config_for_build() {
  local py="${PYTHON:-python3}" line key value section name token path
  PIPCONF="$(mktemp)"
  declare -A seen=()
  declare -A merged=()
  # `pip config list` prints section.key='value' for the files and :env:.key='value' for
  # PIP_* variables (which win), one per line.
  while IFS= read -r line; do
    key="${line%%=*}"; value="${line#*=}"
    value="${value#\'}"; value="${value%\'}"
    section="${key%%.*}"; name="${key#*.}"
    [[ "$section" == ":env:" ]] && section=global
    merged["$section.$name"]="$value"
  done < <("$py" -m pip config list 2> /dev/null || true)
  {
    local current=""
    for k in $(printf '%s\n' "${!merged[@]}" | sort); do
      section="${k%%.*}"; name="${k#*.}"
      if [[ "$section" != "$current" ]]; then printf '[%s]\n' "$section"; current="$section"; fi
      printf '%s = %s\n' "$name" "${merged[$k]}"
    done
  } > "$PIPCONF"
  # Local paths the configuration names must exist inside the RUN steps too. A local
  # index (file://.../simple) links to its files relatively, so its parent goes in whole.
  for value in "${merged[@]}"; do
    for token in $value; do
      path="${token#file://}"
      path="${path%/}"
      [[ "$token" == file://* && "$(basename "$path")" == simple ]] && path="$(dirname "$path")"
      [[ "$path" == /* && -e "$path" && -z "${seen[$path]:-}" ]] || continue
      seen["$path"]=1
      VOLUMES+=(--volume "$path:$path:ro")
    done
  done
}

# --- 4. check the built image ----------------------------------------------------------
# What must work inside the image, as uid 10001: the version, every module the operator
# and the worker import (so the lock is complete), and what the chart's commands use.
IMAGE_PROBE='spatialjoin --version
  && python -c "import spatialjoin_operator.main, spatialjoin_worker.app, spatialjoin_cli.main"
  && kopf --version > /dev/null && test -n "$(/bin/bash -c "echo \$RANDOM")"'

check_image() {
  local ctr mnt out bad=() probe
  probe="$(tr '\n' ' ' <<< "$IMAGE_PROBE")"
  ctr="$("${BUILDAH[@]}" from --quiet "$IMAGE")"
  CHECK_CTR="$ctr"
  if ! out="$("${BUILDAH[@]}" run --isolation chroot "$ctr" -- /bin/true 2>&1)"; then
    log "check: this sandbox does not allow buildah run: ${out##*$'\n'}"
    RUN_CHECK="buildah run not allowed"
  elif out="$("${BUILDAH[@]}" run --isolation chroot --user "$RUN_AS:$RUN_AS" "$ctr" -- \
                /bin/sh -c "$probe" 2>&1)"; then
    log "check: buildah run (chroot isolation, uid $RUN_AS): $out; the operator, worker" \
        "and CLI modules import; kopf and bash are there"
    RUN_CHECK="buildah run: $out"
  else
    log "check: the image fails inside buildah run:"; printf '%s\n' "$out" >&2; exit 1
  fi
  mnt="$("${BUILDAH[@]}" mount "$ctr")"
  [[ -x "$mnt/opt/spatialjoin/bin/spatialjoin" && -L "$mnt/usr/local/bin/spatialjoin" ]] \
    || { log "check: the spatialjoin entry point is missing"; exit 1; }
  grep -q "^spatialjoin:x:$RUN_AS:$RUN_AS:" "$mnt/etc/passwd" \
    || { log "check: user $RUN_AS is missing"; exit 1; }
  if [[ "$RUN_CHECK" == "buildah run not allowed" ]]; then
    if out="$(chroot --userspec "$RUN_AS:$RUN_AS" "$mnt" /usr/bin/env -i HOME=/tmp \
                PATH=/opt/spatialjoin/bin:/usr/bin:/bin /bin/sh -c "$probe" 2>&1)"; then
      log "check: chroot into the built root as uid $RUN_AS: $out"
      RUN_CHECK="chroot: $out"
    else
      log "check: chroot into the built root as uid $RUN_AS failed:"; printf '%s\n' "$out" >&2
      exit 1
    fi
  fi
  for tool in gcc cc c++ g++ cpp make ld as; do
    [[ -e "$mnt/usr/bin/$tool" ]] && bad+=("/usr/bin/$tool")
  done
  compgen -G "$mnt/opt/spatialjoin/bin/pip*" > /dev/null && bad+=(/opt/spatialjoin/bin/pip)
  compgen -G "$mnt/opt/spatialjoin/lib/python3*/site-packages/setuptools" > /dev/null \
    && bad+=(setuptools)
  if [[ ${#bad[@]} -gt 0 ]]; then
    log "check: the final stage holds build tools: ${bad[*]}"; exit 1
  fi
  log "check: no compiler, make, pip or setuptools in the final root"
}

build_image() {
  local started
  started=$(now)
  pip_config_for_build
  log "build: $IMAGE from $BASE_IMAGE (buildah bud, vfs, chroot isolation, cached layers)"
  "${BUILDAH[@]}" bud --isolation chroot --layers --force-rm --pull-never \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "VERSION=$VERSION" \
    --secret "id=pipconf,src=$PIPCONF" "${VOLUMES[@]}" \
    -t "$IMAGE" -f Dockerfile . >&2
  BUILD_SECONDS=$(( $(now) - started ))
  log "build: $IMAGE in ${BUILD_SECONDS}s"
}

lock() {
  local py="${PYTHON:-$ROOT/.venv/bin/python}"
  [[ -x "$py" ]] || py=python3
  LOCK_TMP="$(mktemp -d)"
  tmp="$LOCK_TMP"
  # Prefer the development virtualenv's versions: they are what the tests ran with.
  "$py" -m pip freeze --exclude-editable | grep -v ' @ ' > "$tmp/prefer.txt" || true
  "$py" -m pip install --dry-run --ignore-installed --quiet --report "$tmp/report.json" \
    -c "$tmp/prefer.txt" "$ROOT" "setuptools>=69" wheel > /dev/null
  "$py" - "$tmp/report.json" "$ROOT/requirements/image.txt" <<'PY'
import json
import sys
from pathlib import Path

report = json.loads(Path(sys.argv[1]).read_text())
pins = sorted(
    (item["metadata"]["name"].lower().replace("_", "-"), item["metadata"]["version"])
    for item in report["install"]
    if item["metadata"]["name"].lower().replace("_", "-") != "spatialjoin-operator"
)
header = [
    "# The image's pinned dependencies: the runtime closure of pyproject.toml's",
    "# [project.dependencies] plus the build backend, for CPython 3.11 on Linux x86_64.",
    "# Generated by `scripts/build-image.sh lock`; do not edit by hand.",
]
out = Path(sys.argv[2])
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text("\n".join(header + [f"{name}=={version}" for name, version in pins]) + "\n")
print(f"wrote {out} ({len(pins)} pins)")
PY
}

# Dangling images (superseded builds and the cached steps of the Dockerfile): vfs
# storage keeps a full copy of the tree per layer, so reclaim it now and then. The
# next build then starts from the cached base again.
prune() {
  "${BUILDAH[@]}" rmi --prune > /dev/null || true
  log "prune: $("${BUILDAH[@]}" images --noheading | wc -l) image(s) left"
}

case "${1:-all}" in
  lock)
    lock ;;
  prune)
    prune ;;
  base)
    need_tools; make_base_tarball; import_base ;;
  all|"")
    total_started=$(now)
    need_tools
    make_base_tarball
    import_base
    build_image
    RUN_CHECK=""
    check_image
    size="$("${BUILDAH[@]}" images --format '{{.Size}}' "$IMAGE" | head -1)"
    log "done: $IMAGE ($size) in $(( $(now) - total_started ))s total, build ${BUILD_SECONDS}s; $RUN_CHECK"
    ;;
  *)
    echo "usage: $0 [all|base|lock|prune]" >&2; exit 2 ;;
esac
