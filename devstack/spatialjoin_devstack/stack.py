"""Bring the whole local stack up, report on it, and take it down again."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .components.base import Component, StackContext
from .paths import cache_dir, state_dir
from .procs import read_pid, stop_process


def all_components() -> list[Component]:
    """The stack in start order; imported lazily so `stack env` stays light."""
    from .components.kafka import KafkaMockComponent
    from .components.kubernetes import KubernetesComponent
    from .components.postgis import PostgisComponent
    from .components.runner import RunnerComponent
    from .components.seaweedfs import SeaweedComponent

    return [KubernetesComponent(), KafkaMockComponent(), PostgisComponent(),
            SeaweedComponent(), RunnerComponent()]


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    running: bool
    healthy: bool
    detail: str


def context() -> StackContext:
    ctx = StackContext(state_dir=state_dir(), cache_dir=cache_dir())
    ctx.load()
    return ctx


def install(report: Callable[[str], None] = print) -> None:
    """Install every component (idempotent; quick when caches exist)."""
    ctx = context()
    for component in all_components():
        started = time.monotonic()
        component.install(ctx)
        report(f"installed {component.name} in {time.monotonic() - started:.1f}s")


def up(report: Callable[[str], None] = print) -> StackContext:
    """Start each component that is not already healthy; record its settings."""
    ctx = context()
    ctx.state_dir.mkdir(parents=True, exist_ok=True)
    ctx.state_dir.chmod(0o755)
    for component in all_components():
        started = time.monotonic()
        settings = ctx.settings.get(component.name)
        if settings and _is_healthy(component, ctx, settings):
            report(f"{component.name}: already running")
            continue
        component.install(ctx)
        with _stop_on_failure(component, ctx):
            ctx.settings[component.name] = component.start(ctx)
        ctx.save()
        report(f"{component.name}: started in {time.monotonic() - started:.1f}s")
    ctx.settings_file.chmod(0o600)
    return ctx


def down(report: Callable[[str], None] = print) -> None:
    """Stop every process the stack started, in reverse order, by pid."""
    ctx = context()
    for component in reversed(all_components()):
        component.stop(ctx)
        ctx.settings.pop(component.name, None)
        report(f"{component.name}: stopped")
    for leftover in sorted(ctx.run_dir.glob("*.pid")) if ctx.run_dir.exists() else []:
        if stop_process(ctx.run_dir, leftover.stem):
            report(f"{leftover.stem}: stopped (left over)")
    ctx.settings_file.unlink(missing_ok=True)


def status() -> list[ComponentStatus]:
    ctx = context()
    rows = []
    for component in all_components():
        settings = ctx.settings.get(component.name)
        running = settings is not None and _any_pid(ctx, component.name)
        healthy = bool(settings) and _is_healthy(component, ctx, settings or {})
        detail = ""
        if settings:
            detail = ", ".join(f"{k}={v}" for k, v in component.env(settings).items())
        rows.append(ComponentStatus(component.name, running, healthy, detail))
    return rows


def env() -> dict[str, str]:
    """The connection settings of a running stack, under the names every process reads."""
    ctx = context()
    merged: dict[str, str] = {"SPATIALJOIN_STATE_DIR": str(ctx.state_dir)}
    for component in all_components():
        settings = ctx.settings.get(component.name)
        if settings:
            merged.update(component.env(settings))
    return merged


def _any_pid(ctx: StackContext, name: str) -> bool:
    if not ctx.run_dir.exists():
        return False
    return any(read_pid(ctx.run_dir, p.stem) for p in ctx.run_dir.glob("*.pid")
               if p.stem == name or (p.stem.startswith(("etcd", "kube-")) and name == "kubernetes"))


def _is_healthy(component: Component, ctx: StackContext, settings: dict[str, object]) -> bool:
    try:
        return component.healthy(ctx, settings)
    except Exception:  # an unreachable server is simply unhealthy here
        return False


@contextlib.contextmanager
def _stop_on_failure(component: Component, ctx: StackContext) -> Iterator[None]:
    """A component that fails to start must not leave its processes behind."""
    try:
        yield
    except BaseException:
        component.stop(ctx)
        raise
