"""Renderers read a Report and never compute verdicts: render(report, fmt, color) -> str."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from auditor.errors import UsageError
from auditor.findings import Report

if TYPE_CHECKING:
    from auditor.render.text import TextOptions


def render(report: Report, fmt: str, color: bool = False, text_options: TextOptions | None = None) -> str:
    if fmt == "json":
        return report.to_json()
    if fmt == "text":
        from auditor.render.text import render_text

        return render_text(report, color=color, options=text_options)
    if fmt == "sarif":
        from auditor.render.sarif import to_sarif

        return json.dumps(to_sarif(report), indent=2, default=str)
    if fmt == "markdown":
        from auditor.render.markdown import render_markdown

        return render_markdown(report)
    raise UsageError(f"unknown format {fmt!r}")
