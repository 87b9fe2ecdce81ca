# The spatialjoin-operator image: one image, two entrypoints.
#
#   spatialjoin operator [--namespace NS ... | -A] ...   (the chart's Deployment)
#   spatialjoin worker                                   (the WorkerPool's Deployment)
#
# BASE_IMAGE is any slim Debian-based image with python3 (3.11) and its venv
# module: the official slim Python image, or the debootstrap'd Debian bookworm
# base that scripts/build-image.sh makes and passes in (no image registry needed).
#
# Dependencies are pinned by requirements/image.txt (regenerate it with
# `scripts/build-image.sh lock`) and installed without resolution (--no-deps)
# followed by `pip check`. pip's own configuration (index, certificates) is
# not written here: it arrives at build time as the optional build secret
# "pipconf" (a pip.conf), so the image history records no index and no
# credentials; without it pip uses its defaults.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# --- builder: a virtualenv with the pinned dependencies and the project ------------------
FROM ${BASE_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_NO_INPUT=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src

# The dependency layer changes only with the lock: source edits rebuild from the next step.
COPY requirements/image.txt requirements/image.txt
RUN --mount=type=secret,id=pipconf \
    set -eu; \
    if [ -s /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi; \
    python3 -m venv /opt/spatialjoin; \
    /opt/spatialjoin/bin/pip install --no-deps --only-binary=:all: -r requirements/image.txt

# One layer for the sources (.dockerignore admits only the packaging metadata and the
# five packages): with vfs storage every layer is a full copy of the tree.
COPY . .
# The build backend (setuptools, wheel) is pinned in the lock and already in the venv,
# so the project builds without fetching anything; the entry points' modules must import
# (a package missing from the wheel fails here). Then the installers leave the venv,
# and the runtime tree (venv, the non-root user, a PATH entry) is staged under /rootfs
# so that the final stage takes it in one layer.
RUN set -eu; \
    /opt/spatialjoin/bin/pip install --no-deps --no-build-isolation --no-index . ; \
    /opt/spatialjoin/bin/pip check; \
    /opt/spatialjoin/bin/python -c \
        "import spatialjoin_cli.main, spatialjoin_operator.main, spatialjoin_worker.app"; \
    /opt/spatialjoin/bin/pip uninstall -y -q setuptools wheel pip; \
    find /opt/spatialjoin/lib -depth -type d -name tests -path '*/site-packages/*' \
        -exec rm -rf {} +; \
    groupadd --gid 10001 spatialjoin; \
    useradd --uid 10001 --gid 10001 --no-create-home --no-log-init --home-dir /tmp \
        --shell /usr/sbin/nologin spatialjoin; \
    mkdir -p /rootfs/opt /rootfs/etc /rootfs/usr/local/bin; \
    cp -a /opt/spatialjoin /rootfs/opt/; \
    cp -a /etc/passwd /etc/group /rootfs/etc/; \
    ln -s /opt/spatialjoin/bin/spatialjoin /rootfs/usr/local/bin/spatialjoin

# --- runtime: the base, the venv and a non-root user; no compiler, no pip ----------------
FROM ${BASE_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="spatialjoin-operator" \
      org.opencontainers.image.description="kopf operator and worker for partitioned PostGIS spatial joins" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /rootfs/ /
ENV PATH=/opt/spatialjoin/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /tmp
USER 10001:10001
ENTRYPOINT ["spatialjoin"]
CMD ["operator"]
