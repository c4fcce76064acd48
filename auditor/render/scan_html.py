"""The `scan --html` dashboard: one static HTML file from the scan's JSON lines.

No network resources: the charts are inline SVG drawn here, the filters a few lines of inline JavaScript in the
template. Table rows are rendered server-side (the page reads without JavaScript; the script only hides rows).
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter, defaultdict
from html import escape
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

VERDICTS = ("FAIL", "WARN", "PASS", "SKIP", "ERROR")
COLORS = {"FAIL": "#d73a49", "WARN": "#e3a008", "PASS": "#2da44e", "SKIP": "#8c959f", "ERROR": "#6f42c1"}
AUDITED = ("PASS", "WARN", "FAIL")
# Audit-time histogram bins (seconds): log-spaced because most audits take well under a second and a few take many.
TIME_EDGES = (0.0, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 60.0, math.inf)


def _week(date: str) -> dt.date | None:
    """Monday of the ISO week of an ISO-8601 date-time (the PR head's committer date)."""
    try:
        d = dt.date.fromisoformat(date[:10])
    except (ValueError, TypeError):
        return None
    return d - dt.timedelta(days=d.weekday())


def _rule_names() -> dict[str, str]:
    try:
        from auditor.engine import all_rules

        return {r.id: r.name for r in all_rules()}
    except Exception:  # the dashboard must render even if the rule registry cannot load
        return {}


def verdict_chart(lines: list[dict[str, Any]]) -> str:
    counts = Counter(x.get("overall", "ERROR") for x in lines)
    width, bar_h, gap, label_w = 560, 26, 8, 70
    height = len(VERDICTS) * (bar_h + gap) + 10
    peak = max(counts.values(), default=0) or 1
    parts = [
        f'<svg id="chart-verdicts" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">'
    ]
    parts.append("<title>Verdict distribution</title>")
    for i, v in enumerate(VERDICTS):
        y = 5 + i * (bar_h + gap)
        n = counts.get(v, 0)
        w = (width - label_w - 70) * n / peak
        parts.append(f'<text x="0" y="{y + bar_h * 0.7:.0f}" class="lbl">{v}</text>')
        parts.append(
            f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{COLORS[v]}">'
            f"<title>{v}: {n}</title></rect>"
        )
        parts.append(f'<text x="{label_w + w + 6:.1f}" y="{y + bar_h * 0.7:.0f}" class="num">{n}</text>')
    parts.append("</svg>")
    return "".join(parts)


def time_chart(lines: list[dict[str, Any]]) -> tuple[str, dict[str, float]]:
    """Histogram of the seconds of the audits actually run (reused copies are not audits)."""
    secs = sorted(
        float(x.get("seconds") or 0.0)
        for x in lines
        if x.get("overall") in (*AUDITED, "ERROR") and not x.get("reused")
    )
    counts = [0] * (len(TIME_EDGES) - 1)
    for s in secs:
        for i in range(len(counts)):
            if TIME_EDGES[i] <= s < TIME_EDGES[i + 1]:
                counts[i] += 1
                break
    width, height, pad_b, pad_l = 560, 220, 40, 40
    peak = max(counts, default=0) or 1
    bw = (width - pad_l - 10) / len(counts)
    parts = [
        f'<svg id="chart-times" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">'
    ]
    parts.append("<title>Audit time distribution</title>")
    parts.append(
        f'<line x1="{pad_l}" y1="{height - pad_b}" x2="{width - 10}" y2="{height - pad_b}" stroke="#444"/>'
    )
    for i, n in enumerate(counts):
        h = (height - pad_b - 20) * n / peak
        x = pad_l + i * bw
        hi = TIME_EDGES[i + 1]
        label = f"<{TIME_EDGES[i + 1]:g}s" if hi != math.inf else f"≥{TIME_EDGES[i]:g}s"
        parts.append(
            f'<rect x="{x + 2:.1f}" y="{height - pad_b - h:.1f}" width="{bw - 4:.1f}" height="{h:.1f}" '
            f'fill="#0969da"><title>{escape(label)}: {n} audits</title></rect>'
        )
        if n:
            parts.append(
                f'<text x="{x + bw / 2:.1f}" y="{height - pad_b - h - 4:.1f}" class="num" text-anchor="middle">{n}</text>'
            )
        parts.append(
            f'<text x="{x + bw / 2:.1f}" y="{height - pad_b + 16}" class="tick" text-anchor="middle">{escape(label)}</text>'
        )
    parts.append("</svg>")
    stats: dict[str, float] = {}
    if secs:
        stats = {
            "n": len(secs),
            "median": secs[len(secs) // 2],
            "p95": secs[min(len(secs) - 1, int(len(secs) * 0.95))],
            "max": secs[-1],
            "total": sum(secs),
        }
    return "".join(parts), stats


def fail_rate_chart(lines: list[dict[str, Any]], names: dict[str, str]) -> str:
    """Heatmap: one row per rule that ever FAILs, one column per week of PR head dates, shade = share of the
    week's audited folders that FAIL the rule. Every rule stays legible, which 30 overlaid lines would not be."""
    audited = [x for x in lines if x.get("overall") in AUDITED and _week(x.get("date", ""))]
    weeks = sorted({_week(x["date"]) for x in audited})
    per_week = Counter(_week(x["date"]) for x in audited)
    fails: dict[str, Counter] = defaultdict(Counter)
    for x in audited:
        for rid in x.get("fail_rules", []):
            fails[rid][_week(x["date"])] += 1
    rules = sorted(fails, key=lambda r: (-sum(fails[r].values()), r))
    if not weeks or not rules:
        return '<svg id="chart-failrate" width="560" height="40"><text x="0" y="25" class="lbl">no FAIL yet</text></svg>'
    label_w, cell_w, cell_h, top = 230, max(12, min(40, 700 // len(weeks))), 18, 20
    width = max(560, label_w + cell_w * len(weeks) + 60)
    height = top + cell_h * len(rules) + 50
    parts = [
        f'<svg id="chart-failrate" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">'
    ]
    parts.append("<title>FAIL rate per rule over PR date (weeks)</title>")
    for r_i, rid in enumerate(rules):
        y = top + r_i * cell_h
        label = f"{rid} {names.get(rid, '')}"[:34]
        parts.append(f'<text x="0" y="{y + cell_h * 0.75:.0f}" class="tick">{escape(label)}</text>')
        for w_i, wk in enumerate(weeks):
            n, d = fails[rid][wk], per_week[wk]
            rate = n / d if d else 0.0
            # white -> red; a tiny floor so a single FAIL in a busy week is still visible
            shade = 0.0 if n == 0 else 0.15 + 0.85 * rate
            r_, g_, b_ = 255, int(255 - 215 * shade), int(255 - 200 * shade)
            parts.append(
                f'<rect x="{label_w + w_i * cell_w}" y="{y}" width="{cell_w - 1}" height="{cell_h - 1}" '
                f'fill="rgb({r_},{g_},{b_})" stroke="#eee"><title>{escape(rid)} week of {wk}: {n}/{d} FAIL '
                f"({rate:.0%})</title></rect>"
            )
    step = max(1, len(weeks) // 8)
    for w_i, wk in enumerate(weeks):
        if w_i % step == 0:
            x = label_w + w_i * cell_w
            parts.append(f'<text x="{x}" y="{height - 30}" class="tick">{wk.strftime("%b %d")}</text>')
    parts.append(
        f'<text x="0" y="{height - 10}" class="tick">columns: weeks of PR head date; darker = a larger share '
        f"of the week's folders FAIL</text>"
    )
    parts.append("</svg>")
    return "".join(parts)


def render_scan_html(lines: list[dict[str, Any]]) -> str:
    names = _rule_names()
    env = Environment(
        loader=FileSystemLoader(str(Path(__file__).resolve().parent.parent / "templates")),
        autoescape=select_autoescape(["html", "j2"]),
    )
    tpl = env.get_template("scan.html.j2")
    rows = sorted(lines, key=lambda x: (-int(x.get("pr", 0)), str(x.get("folder", ""))))
    rules_seen = sorted({r for x in lines for r in (*x.get("fail_rules", []), *x.get("warn_rules", []))})
    dates = sorted(x["date"][:10] for x in lines if x.get("date"))
    times_svg, time_stats = time_chart(lines)
    counts = Counter(x.get("overall", "ERROR") for x in lines)
    return tpl.render(
        rows=rows,
        verdicts=VERDICTS,
        colors=COLORS,
        counts=counts,
        prs=len({x.get("pr") for x in lines}),
        rules=[(r, names.get(r, "")) for r in rules_seen],
        date_min=dates[0] if dates else "",
        date_max=dates[-1] if dates else "",
        chart_verdicts=verdict_chart(lines),
        chart_times=times_svg,
        time_stats=time_stats,
        chart_failrate=fail_rate_chart(lines, names),
        names=names,
    )


def write_scan_html(lines: list[dict[str, Any]], path: str | Path) -> None:
    Path(path).write_text(render_scan_html(lines), encoding="utf-8")
