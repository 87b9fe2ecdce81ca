"""Diagnosis of one traceId: trace correlation, plan inspection, heap and bloat checks.

gather.py and kube.py read (never write) the database and the apiserver;
plan.py parses EXPLAIN; findings.py holds the pure rules; report.py renders
text and JSON; service.py runs one diagnosis; background.py is the
operator's non-blocking run on an SLA breach and record.py the pure rules of
what it leaves on the job. Nothing is imported here, so that importing the
pure modules does not load the API client or start the thread pool.
"""
