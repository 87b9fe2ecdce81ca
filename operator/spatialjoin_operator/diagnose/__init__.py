"""Diagnosis of one traceId: trace correlation, plan inspection, heap and bloat checks.

gather.py and kube.py read (never write) the database and the apiserver;
plan.py parses EXPLAIN; findings.py holds the pure rules; report.py renders
text and JSON; service.py runs one diagnosis; background.py is the
operator's non-blocking run on an SLA breach.
"""

from __future__ import annotations

from .background import DIAGNOSIS_ANNOTATION, diagnose_in_background, needs_diagnosis
from .findings import Finding, Severity
from .report import Report, to_json, to_text
from .service import DiagnosisError, Options, diagnose, run

__all__ = [
    "DIAGNOSIS_ANNOTATION",
    "DiagnosisError",
    "Finding",
    "Options",
    "Report",
    "Severity",
    "diagnose",
    "diagnose_in_background",
    "needs_diagnosis",
    "run",
    "to_json",
    "to_text",
]
