"""A diagnosis as a readable text report and as JSON (camelCase keys, RFC 3339 times)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from pydantic.alias_generators import to_camel

from .facts import Facts, PlanFacts, TableFacts
from .findings import Finding, primary
from .plan import describe


@dataclass(frozen=True)
class Report:
    """What was observed and what it means."""

    facts: Facts
    findings: tuple[Finding, ...]

    @property
    def primary(self) -> Finding | None:
        return primary(self.findings)


def to_json(report: Report, *, include_plans: bool = True) -> dict[str, Any]:
    """The report as JSON-ready data; ``include_plans=False`` drops the raw plan trees."""
    facts = _jsonable(report.facts)
    if not include_plans:
        for plan in facts.get("plans", []):
            plan.pop("plan", None)
    top = report.primary
    return {
        "traceId": report.facts.trace_id,
        "generatedAt": _time(report.facts.now),
        "summary": _summary(report),
        "primary": _jsonable(top) if top else None,
        "findings": [_jsonable(f) for f in report.findings],
        **{k: v for k, v in facts.items() if k not in ("traceId", "now")},
    }


def _summary(report: Report) -> str:
    top = report.primary
    if top is None:
        return "no problem found"
    return f"{top.code}: {top.cause}"


def to_text(report: Report) -> str:
    """The report for a terminal or a ticket."""
    facts = report.facts
    lines = [f"Diagnosis of traceId {facts.trace_id} at {_time(facts.now)}"]
    lines += _job(facts)
    lines.append("")
    lines += _findings(report.findings)
    lines += _partitions(facts)
    lines += _results(facts)
    lines += _plans(facts.plans)
    lines += _tables(facts.tables, facts.pgstattuple)
    if facts.events:
        lines += ["", f"Events ({len(facts.events)}):"]
        lines += [f"  {_time(e.last_time) or '-':20} {e.type:7} {e.reason}: {e.message}"
                  + (f" (x{e.count})" if e.count > 1 else "") for e in facts.events]
    if facts.notes:
        lines += ["", "Not gathered:"] + [f"  - {note}" for note in facts.notes]
    return "\n".join(lines) + "\n"


def _job(facts: Facts) -> list[str]:
    job = facts.job
    if job is None:
        return ["Job: no SpatialJoinJob found for this traceId"]
    parts = [f"Job: {job.namespace}/{job.name} (uid {job.uid})"]
    if job.phase:
        parts.append(f"phase {job.phase}")
    if job.sla_state:
        parts.append(f"SLA {job.sla_state} (deadline {job.deadline_seconds}s)")
    if job.pool:
        parts.append(f"pool {job.pool}")
    return [", ".join(parts)]


def _findings(findings: Sequence[Finding]) -> list[str]:
    if not findings:
        return ["Findings: none"]
    lines = [f"Findings ({len(findings)}):"]
    for finding in findings:
        lines.append(f"  [{finding.severity.value.upper()}] {finding.code}: {finding.subject}")
        lines.append(f"      cause: {finding.cause}")
        lines.append(f"      fix:   {finding.fix}")
        lines += [f"      - {item}" for item in finding.evidence]
    return lines


def _partitions(facts: Facts) -> list[str]:
    if not facts.partitions:
        return ["", "Partitions: no spatial_async_jobs rows"]
    rows = [("partition", "status", "try", "worker", "started", "took", "rows", "failure")]
    for p in facts.partitions:
        took = f"{p.duration_ms / 1000:.1f}s" if p.duration_ms is not None else "-"
        rows.append((p.partition, p.status, str(p.attempt), p.worker or "-",
                     _time(p.started_at) or "-", took, _int(p.rows), p.failure_kind or "-"))
    lines = ["", f"Partitions ({len(facts.partitions)}):", *_table(rows)]
    errors = [p for p in facts.partitions if p.error_log]
    lines += [f"  error {p.partition}: {' '.join(p.error_log.split())[:300]}"
              for p in errors if p.error_log]
    return lines


def _results(facts: Facts) -> list[str]:
    if not facts.results:
        return ["", "Results: no spatial_join_results rows"]
    rows = [("partition", "rows", "bytes", "contract", "sha256", "uri")]
    rows += [(r.partition, str(r.rows), str(r.bytes), r.contract, r.sha256[:12], r.uri or "-")
             for r in facts.results]
    return ["", f"Results ({len(facts.results)}):", *_table(rows)]


def _plans(plans: Sequence[PlanFacts]) -> list[str]:
    lines: list[str] = []
    for plan in plans:
        head = f"Plan of partition {plan.partition} ({plan.reason}): "
        if plan.analyzed:
            head += (f"planning {plan.planning_ms or 0:.1f} ms, execution "
                     f"{plan.execution_ms or 0:.1f} ms, buffers hit {plan.shared_hit_blocks} "
                     f"read {plan.shared_read_blocks}")
        elif plan.timed_out:
            head += (f"EXPLAIN ANALYZE timed out after {plan.statement_timeout_s:g}s; "
                     "estimated plan below")
        elif plan.error:
            head += f"failed: {plan.error}"
        else:
            head += "estimated plan (not analyzed)"
        lines += ["", head] + [f"  {describe(scan)}" for scan in plan.scans]
    return lines


def _tables(tables: Sequence[TableFacts], pgstattuple: bool) -> list[str]:
    if not tables:
        return []
    lines = ["", "Tables" + ("" if pgstattuple else " (pgstattuple not installed)") + ":"]
    for t in tables:
        if not t.exists:
            lines.append(f"  {t.table} ({t.role.value}): not found")
            continue
        ratio = t.index_ratio
        text = (f"  {t.qualified} ({t.role.value}): table {_size(t.table_bytes)}, indexes "
                f"{_size(t.indexes_bytes)}" + (f" ({ratio:.0%})" if ratio is not None else "")
                + f", total {_size(t.total_bytes)}, ~{max(t.reltuples, 0):.0f} rows, "
                f"last analyzed {_time(t.last_analyzed) or 'never'}")
        if t.heap_free_percent is not None:
            text += (f", heap free {t.heap_free_percent:.1f}% dead "
                     f"{t.heap_dead_tuple_percent or 0:.1f}%")
        lines.append(text)
        for ix in t.indexes:
            extra = "" if ix.valid else " INVALID"
            if ix.free_percent is not None:
                extra += f", free {ix.free_percent:.1f}% dead {ix.dead_tuple_percent or 0:.1f}%"
            lines.append(f"      {ix.name} {ix.method} ({', '.join(ix.columns) or 'expr'}) "
                         f"{_size(ix.bytes)}{extra}")
    return lines


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {to_camel(f.name): _jsonable(getattr(value, f.name))
               for f in dataclasses.fields(value)}
        for name in _properties(type(value)):
            out[to_camel(name)] = _jsonable(getattr(value, name))
        return out
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return _time(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def _properties(kind: type) -> Iterable[str]:
    """Derived figures worth having in JSON (exists, indexRatio, actionable)."""
    return [name for name in ("exists", "index_ratio", "last_analyzed", "actionable")
            if isinstance(getattr(kind, name, None), property)]


def _time(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _int(value: int | None) -> str:
    return "-" if value is None else str(value)


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
