"""Terminal output (rich). Colour only when asked or when stdout is a TTY; plain text otherwise."""

from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table
from rich.text import Text

from auditor.findings import Finding, Report, Verdict

_STYLE = {"PASS": "green", "WARN": "yellow", "FAIL": "bold red", "SKIP": "dim"}


def _finding_lines(f: Finding) -> list[Text]:
    head = Text()
    head.append(f"{f.verdict.value:<4} ", style=_STYLE[f.verdict.value])
    head.append(f"{f.rule_id} {f.rule_name}", style="bold")
    if f.primary:
        head.append(f"  {f.primary}")
    out = [head, Text(f"     {f.message}")]
    out.append(
        Text(
            f"     severity={f.severity.value} confidence={f.confidence.value} evidence={f.evidence_level.value}"
            f" fingerprint={f.fingerprint}",
            style="dim",
        )
    )
    if f.primary and f.primary.snippet:
        out.append(Text(f"     > {f.primary.snippet}", style="cyan"))
    for step in f.flow:
        out.append(Text(f"       -> {step.location}: {step.message}", style="dim"))
    for rel in f.related[:5]:
        out.append(Text(f"       see {rel}" + (f": {rel.snippet}" if rel.snippet else ""), style="dim"))
    if f.evidence:
        for line in f.evidence.splitlines()[:12]:
            out.append(Text(f"     | {line}", style="dim"))
    if f.basis:
        out.append(Text(f"     basis: {f.basis.ref} ({f.basis.date})", style="dim"))
    if f.waived:
        out.append(Text(f"     WAIVED: {f.waiver_reason}", style="magenta"))
    return out


def render_text(report: Report, color: bool = False, width: int = 110) -> str:
    buf = io.StringIO()
    console = Console(
        file=buf,
        force_terminal=color,
        no_color=not color,
        width=width,
        highlight=False,
        emoji=False,
        soft_wrap=True,
    )
    overall = report.overall
    title = Text()
    title.append("pgolf-audit ", style="bold")
    title.append(f"{report.submission.path}", style="bold")
    title.append(f"  [{overall.value}]", style=_STYLE[overall.value])
    console.print(title)
    meta = f"entry: {report.submission.entry or '-'}   tool {report.tool_version}   rules {report.ruleset_version}"
    console.print(Text(meta, style="dim"))
    for layer in report.layers:
        console.print(
            Text(
                f"unpacked {layer.path} -> {layer.name} via {' > '.join(layer.codecs)} "
                f"(exec at line {layer.line}, {layer.decoded_bytes} bytes)",
                style="dim",
            )
        )

    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for col in ("rule", "name", "category", "verdict", "findings"):
        table.add_column(col)
    for rv in report.per_rule():
        table.add_row(
            rv.rule_id,
            rv.rule_name,
            rv.category,
            Text(rv.verdict.value, style=_STYLE[rv.verdict.value]),
            str(rv.findings),
        )
    console.print(table)

    shown = [f for f in report.active if f.verdict in (Verdict.FAIL, Verdict.WARN) and f.gating]
    infos = [f for f in report.active if not f.gating or f.verdict is Verdict.PASS]
    if shown:
        console.print(Text("\nFindings", style="bold"))
        for f in sorted(shown, key=lambda f: (-f.verdict.rank, f.rule_id)):
            for line in _finding_lines(f):
                console.print(line)
    notes = [f for f in infos if f.message]
    if notes:
        console.print(Text("\nNotes (informational, not gating)", style="bold"))
        for f in notes:
            loc = f" {f.primary}" if f.primary else ""
            console.print(Text(f"  {f.rule_id}{loc}: {f.message}", style="dim"))
    if report.waived:
        console.print(Text("\nWaived findings (maintainer waivers)", style="bold magenta"))
        for f in report.waived:
            for line in _finding_lines(f):
                console.print(line)
    if report.unused_waivers:
        console.print(Text("\nUnused waivers: " + ", ".join(report.unused_waivers), style="yellow"))
    if report.errors:
        console.print(Text("\nInternal errors (verdicts above may be incomplete)", style="bold yellow"))
        for err in report.errors:
            console.print(Text(f"  {err}"))
    s = report.summary()
    console.print(
        Text(
            f"\n{s['FAIL']} FAIL, {s['WARN']} WARN, {s['PASS']} PASS, {s['SKIP']} SKIP, "
            f"{s['waived']} waived  ->  {overall.value}",
            style=_STYLE[overall.value],
        )
    )
    return buf.getvalue()
