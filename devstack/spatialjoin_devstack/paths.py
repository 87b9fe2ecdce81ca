"""Where the local stack keeps its state and where install caches live."""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    """The stack's state directory (pids, logs, data, env.json).

    Outside the checkout and readable by the ``postgres`` system user, which
    cannot traverse root's home.
    """
    return Path(os.environ.get("SPATIALJOIN_STATE_DIR", "/tmp/spatialjoin-stack"))


def cache_dir() -> Path:
    """Install caches reused across runs and clones (the Kubernetes build, binaries)."""
    default = Path.home() / ".cache" / "spatialjoin"
    return Path(os.environ.get("SPATIALJOIN_CACHE", str(default)))


def repo_root() -> Path:
    """The checkout this package was installed from (editable install)."""
    return Path(__file__).resolve().parents[2]
