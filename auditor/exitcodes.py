"""The single place that turns a Report into a process exit code (documented in README.md)."""

from __future__ import annotations

from auditor.findings import Report, Verdict

OK = 0  # no gating FAIL
FAILED = 1  # at least one gating FAIL
ERROR = 2  # usage, input or tool error
STRICT_WARN = 3  # --strict and at least one gating WARN (and no FAIL)


def exit_code(report: Report, strict: bool = False) -> int:
    overall = report.overall
    if overall is Verdict.FAIL:
        return FAILED
    if strict and overall is Verdict.WARN:
        return STRICT_WARN
    return OK
