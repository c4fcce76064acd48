"""Terminal output in the ruff / Semgrep shape: findings first, one summary line last.

Default: every gating FAIL, then every gating WARN, each as `path:line:col: ID name [VERDICT]`, its one-line message
and the code excerpt; then `2 FAIL, 1 WARN in 32 rules -> FAIL`. `verbose` adds the source->sink path, the ruling,
the per-rule table and the informational notes; `statistics` prints counts per rule; `quiet` prints the summary
line alone (CI). Colour only when asked or when stdout is a TTY.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table
from rich.text import Text

from auditor.findings import Finding, Report, Verdict

_STYLE = {"PASS": "green", "WARN": "yellow", "FAIL": "bold red", "SKIP": "dim"}


@dataclass(frozen=True)
class TextOptions:
    verbose: bool = False  # per-rule table, notes, flow paths, rulings
    statistics: bool = False  # counts per rule after the findings
    quiet: bool = False  # the summary line alone
    show_passing: bool = False  # the per-rule table without the rest of verbose


def _location(f: Finding) -> str:
    return str(f.primary) if f.primary else "(submission)"


def _finding_lines(f: Finding, verbose: bool) -> list[Text]:
    head = Text()
    head.append(_location(f), style="bold")
    head.append(": ")
    head.append(f"{f.rule_id} ", style="bold")
    head.append(f.rule_name)
    head.append(f" [{f.verdict.value}]", style=_STYLE[f.verdict.value])
    out = [head, Text(f"  {f.message}")]
    if f.primary and f.primary.snippet:
        line = f"{f.primary.line:>5} | " if f.primary.line else "      | "
        out.append(Text(line + f.primary.snippet.strip(), style="cyan"))
    if verbose:
        out.append(
            Text(
                f"  severity={f.severity.value} confidence={f.confidence.value} "
                f"evidence={f.evidence_level.value} fingerprint={f.fingerprint}",
                style="dim",
            )
        )
        for step in f.flow:
            out.append(Text(f"    -> {step.location}: {step.message}", style="dim"))
        for rel in f.related[:5]:
            out.append(Text(f"    see {rel}" + (f": {rel.snippet}" if rel.snippet else ""), style="dim"))
        for line in (f.evidence or "").splitlines()[:12]:
            out.append(Text(f"    | {line}", style="dim"))
        if f.basis:
            out.append(Text(f"  ruling: {f.basis.ref} ({f.basis.date})", style="dim"))
    elif f.flow:
        out.append(Text(f"  (path of {len(f.flow)} steps: -v shows it)", style="dim"))
    if f.waived:
        out.append(Text(f"  WAIVED: {f.waiver_reason}", style="magenta"))
    return out


def summary_line(report: Report) -> str:
    s = report.summary()
    parts = [f"{s['FAIL']} FAIL", f"{s['WARN']} WARN"]
    if s["waived"]:
        parts.append(f"{s['waived']} waived")
    n_rules = len(report.rules_run) or len(report.per_rule())
    return f"{', '.join(parts)} in {n_rules} rules -> {report.overall.value}"


def gating_findings(report: Report) -> list[Finding]:
    """FAIL first, then WARN; within a verdict by rule id and location (stable across runs)."""
    shown = [f for f in report.active if f.gating and f.verdict in (Verdict.FAIL, Verdict.WARN)]
    return sorted(shown, key=lambda f: (-f.verdict.rank, f.rule_id, _location(f)))


def statistics_rows(report: Report) -> list[tuple[int, str, str, str]]:
    """(count, rule id, rule name, verdict) per rule with gating FAIL/WARN findings, most frequent first."""
    counts = Counter((f.rule_id, f.rule_name, f.verdict.value) for f in gating_findings(report))
    return sorted(((n, rid, name, v) for (rid, name, v), n in counts.items()), key=lambda r: (-r[0], r[1]))


def render_text(
    report: Report, color: bool = False, width: int = 110, options: TextOptions | None = None
) -> str:
    opts = options or TextOptions()
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
    if opts.quiet:
        console.print(Text(summary_line(report), style=_STYLE[overall.value]))
        return buf.getvalue()

    if opts.verbose:
        meta = (
            f"{report.submission.path}  entry: {report.submission.entry or '-'}  tool {report.tool_version}"
        )
        console.print(Text(meta + f"  rules {report.ruleset_version}", style="dim"))
        for layer in report.layers:
            console.print(
                Text(
                    f"unpacked {layer.path} -> {layer.name} via {' > '.join(layer.codecs)} "
                    f"(exec at line {layer.line}, {layer.decoded_bytes} bytes)",
                    style="dim",
                )
            )
    for f in gating_findings(report):
        for line in _finding_lines(f, opts.verbose):
            console.print(line)
        console.print()

    if opts.verbose or opts.show_passing:
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
    if opts.verbose:
        notes = [f for f in report.active if (not f.gating or f.verdict is Verdict.PASS) and f.message]
        if notes:
            console.print(Text("\nNotes (informational, not gating)", style="bold"))
            for f in notes:
                loc = f" {f.primary}" if f.primary else ""
                console.print(Text(f"  {f.rule_id}{loc}: {f.message}", style="dim"))
    if report.waived:
        console.print(Text("Waived findings (maintainer waivers)", style="bold magenta"))
        for f in report.waived:
            for line in _finding_lines(f, opts.verbose):
                console.print(line)
    if report.unused_waivers:
        console.print(Text("Unused waivers: " + ", ".join(report.unused_waivers), style="yellow"))
    if report.errors:
        console.print(Text("Internal errors (verdicts above may be incomplete)", style="bold yellow"))
        for err in report.errors:
            console.print(Text(f"  {err}"))
    if opts.statistics:
        rows = statistics_rows(report)
        for n, rid, name, verdict in rows:
            console.print(Text(f"{n:>5}  {rid}  {name:<38} {verdict}"))
        if rows:
            console.print()
    console.print(Text(summary_line(report), style=_STYLE[overall.value]))
    return buf.getvalue()
