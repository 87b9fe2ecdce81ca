"""What every stack component provides, and the context it runs in."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

Settings = dict[str, Any]


@dataclass
class StackContext:
    """Where a component keeps its files and what the other components published."""

    state_dir: Path
    cache_dir: Path
    settings: dict[str, Settings] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        """Pid files and logs."""
        return self.state_dir / "run"

    def data_dir(self, component: str) -> Path:
        """A component's private data directory, created on demand."""
        path = self.state_dir / "data" / component
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def settings_file(self) -> Path:
        return self.state_dir / "stack.json"

    def load(self) -> None:
        """Read what a previous ``stack up`` recorded."""
        if self.settings_file.exists():
            self.settings = json.loads(self.settings_file.read_text())

    def save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.settings_file.write_text(json.dumps(self.settings, indent=2, sort_keys=True))


class Component(Protocol):
    """One real server of the local stack."""

    name: str

    def install(self, ctx: StackContext) -> None:
        """Install what the server needs; idempotent and quick when cached."""

    def start(self, ctx: StackContext) -> Settings:
        """Start on 127.0.0.1, wait until healthy (with a deadline), return its settings."""

    def healthy(self, ctx: StackContext, settings: Settings) -> bool:
        """True when the running server answers a real request."""

    def env(self, settings: Settings) -> dict[str, str]:
        """The connection settings it contributes to ``stack env``."""

    def stop(self, ctx: StackContext) -> None:
        """Stop every process it started, by pid."""
