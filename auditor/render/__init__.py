"""Renderers read a Report and never compute verdicts: render(report, fmt, color) -> str."""

from __future__ import annotations

import json

from auditor.errors import UsageError
from auditor.findings import Report


def render(report: Report, fmt: str, color: bool = False) -> str:
    if fmt == "json":
        return report.to_json()
    if fmt == "text":
        from auditor.render.text import render_text

        return render_text(report, color=color)
    if fmt == "sarif":
        from auditor.render.sarif import to_sarif

        return json.dumps(to_sarif(report), indent=2, default=str)
    if fmt == "markdown":
        from auditor.render.markdown import render_markdown

        return render_markdown(report)
    raise UsageError(f"unknown format {fmt!r}")
