"""EXPLAIN (FORMAT JSON) output → the facts the rules need: times, buffers, scan nodes.

Pure: takes the JSON PostgreSQL returned (already decoded) and walks the plan
tree. A plain EXPLAIN (no ANALYZE, after a timeout) has no actual figures;
they stay None.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from .facts import ScanNode

SEQ_SCAN: Final = "Seq Scan"
# Nodes that read a relation's heap, named by "Relation Name".
_RELATION_SCANS: Final = frozenset({
    SEQ_SCAN, "Index Scan", "Index Only Scan", "Bitmap Heap Scan", "Tid Scan", "Tid Range Scan",
    "Sample Scan",
})
# Nodes that read only an index, named by "Index Name" (the relation is the index's table).
_INDEX_SCANS: Final = frozenset({"Bitmap Index Scan"})


@dataclass(frozen=True)
class ParsedPlan:
    planning_ms: float | None
    execution_ms: float | None
    scans: tuple[ScanNode, ...]
    shared_hit_blocks: int
    shared_read_blocks: int
    temp_blocks: int


class PlanFormatError(ValueError):
    """The text is not EXPLAIN's JSON format."""


def parse_plan(explained: object) -> ParsedPlan:
    """The times, buffer totals and scan nodes of one EXPLAIN (FORMAT JSON) result."""
    document = _document(explained)
    root = document.get("Plan")
    if not isinstance(root, Mapping):
        raise PlanFormatError("EXPLAIN output has no Plan")
    return ParsedPlan(
        planning_ms=_float(document.get("Planning Time")),
        execution_ms=_float(document.get("Execution Time")),
        scans=tuple(_scan(node) for node in walk(root) if _is_scan(node)),
        shared_hit_blocks=int(root.get("Shared Hit Blocks", 0) or 0),
        shared_read_blocks=int(root.get("Shared Read Blocks", 0) or 0),
        temp_blocks=int(root.get("Temp Read Blocks", 0) or 0)
        + int(root.get("Temp Written Blocks", 0) or 0),
    )


def walk(node: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every node of the tree, depth first, parents before children."""
    yield node
    for child in node.get("Plans") or []:
        if isinstance(child, Mapping):
            yield from walk(child)


def scans_of(scans: Sequence[ScanNode], relation: str,
             index_names: Sequence[str] = ()) -> list[ScanNode]:
    """The scans that read ``relation`` (by name) or one of its indexes."""
    bare = relation.rsplit(".", 1)[-1]
    return [s for s in scans
            if (s.relation is not None and s.relation in (relation, bare))
            or (s.index is not None and s.index in index_names)]


def describe(scan: ScanNode) -> str:
    """``Seq Scan on domain_a_polygons (52 rows x 1 loop, 1.6 ms)``."""
    target = scan.relation or "?"
    if scan.index:
        target = f"{scan.index}" if scan.relation is None else f"{target} using {scan.index}"
    text = f"{scan.node_type} on {target}"
    figures = []
    if scan.actual_rows is not None:
        loops = scan.loops or 1
        figures.append(f"{scan.actual_rows:g} rows x {loops} loop{'s' if loops != 1 else ''}")
    elif scan.plan_rows is not None:
        figures.append(f"estimated {scan.plan_rows:g} rows")
    if scan.total_ms is not None:
        figures.append(f"{scan.total_ms:.1f} ms")
    if scan.rows_removed_by_filter:
        figures.append(f"{scan.rows_removed_by_filter:g} rows removed by filter")
    return f"{text} ({', '.join(figures)})" if figures else text


def _document(explained: object) -> Mapping[str, Any]:
    if isinstance(explained, str):
        import json

        try:
            explained = json.loads(explained)
        except ValueError as exc:
            raise PlanFormatError(f"EXPLAIN output is not JSON: {exc}") from exc
    if isinstance(explained, Sequence) and not isinstance(explained, str) and explained:
        explained = explained[0]
    if not isinstance(explained, Mapping):
        raise PlanFormatError("EXPLAIN output is not a JSON object or a one-element list")
    return explained


def _is_scan(node: Mapping[str, Any]) -> bool:
    kind = node.get("Node Type")
    return kind in _RELATION_SCANS or kind in _INDEX_SCANS


def _scan(node: Mapping[str, Any]) -> ScanNode:
    loops = node.get("Actual Loops")
    total = _float(node.get("Actual Total Time"))
    return ScanNode(
        node_type=str(node.get("Node Type")),
        relation=_str(node.get("Relation Name")),
        index=_str(node.get("Index Name")),
        alias=_str(node.get("Alias")),
        plan_rows=_float(node.get("Plan Rows")),
        actual_rows=_float(node.get("Actual Rows")),
        loops=int(loops) if loops is not None else None,
        total_ms=None if total is None else total * int(loops or 1),
        filter=_str(node.get("Filter") or node.get("Recheck Cond") or node.get("Index Cond")),
        rows_removed_by_filter=_float(node.get("Rows Removed by Filter")),
    )


def _float(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _str(value: object) -> str | None:
    return None if value is None else str(value)
