"""Rule-level review tables: `pgolf-audit corpus REVIEWS.tsv --git-dir D`.

A review row judges one rule on one folder at a pinned commit, made by reading the code:
`id, pr, commit, folder, rule, reviewed (illegal|legal), evidence, ...`. Scoring follows the review's contract:
a row `illegal` needs a FAIL in that rule's *category* (a sibling rule catching the construct counts); a row `legal`
needs no FAIL on that very rule. Precision and recall are reported per rule and over the legality rules (PG1xx to
PG4xx), which is what the static engine is judged on.

Each folder is audited once, in a pool of worker processes: the audit is pure (no submission code runs), so the
workers share nothing but the read-only git directory.
"""

from __future__ import annotations

import csv
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.errors import InputError

REVIEW_COLUMNS = ("id", "commit", "folder", "rule", "reviewed")


def is_review_table(header: list[str]) -> bool:
    return all(c in header for c in REVIEW_COLUMNS)


@dataclass
class FolderAudit:
    failed: dict[str, str] = field(default_factory=dict)  # rule id -> category
    warned: dict[str, str] = field(default_factory=dict)
    fail_lines: dict[str, list[str]] = field(default_factory=dict)
    error: str = ""


@dataclass
class ReviewResult:
    id: str
    pr: str
    folder: str
    rule: str
    category: str
    reviewed: str
    verdict: str  # what we say now: FAIL (rule or category), WARN, PASS, ERROR
    agrees: bool
    where: list[str] = field(default_factory=list)


def is_legality(rule_id: str) -> bool:
    return rule_id[:3] in {"PG1", "PG2", "PG3", "PG4"}


def _audit_folder(args: tuple[str, str, str]) -> tuple[tuple[str, str], FolderAudit]:
    from auditor.engine import audit
    from auditor.findings import Verdict
    from auditor.submission import load_git
    from rules import all_rules

    git_dir, commit, folder = args
    out = FolderAudit()
    try:
        report = audit(load_git(Path(git_dir), commit, folder), all_rules())
    except InputError as exc:
        out.error = str(exc)
        return (commit, folder), out
    except Exception as exc:  # an internal error is a measurement, not a crash of the whole table
        out.error = f"internal error: {type(exc).__name__}: {exc}"
        return (commit, folder), out
    for rv in report.per_rule():
        if rv.gating_verdict is Verdict.FAIL:
            out.failed[rv.rule_id] = rv.category
        elif rv.gating_verdict is Verdict.WARN:
            out.warned[rv.rule_id] = rv.category
    for f in report.active:
        if f.verdict is Verdict.FAIL and f.gating:
            out.fail_lines.setdefault(f.rule_id, []).append(str(f.primary or ""))
    return (commit, folder), out


def read_reviews(path: Path) -> list[dict[str, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read reviews {path}: {exc}") from exc
    rows = list(csv.DictReader(text.splitlines(), delimiter="\t"))
    if not rows:
        raise InputError(f"{path}: no rows")
    missing = [c for c in REVIEW_COLUMNS if c not in rows[0]]
    if missing:
        raise InputError(f"{path}: missing columns {', '.join(missing)}")
    bad = [r["id"] for r in rows if (r.get("reviewed") or "").strip().lower() not in {"illegal", "legal"}]
    if bad:
        raise InputError(f"{path}: 'reviewed' must be illegal or legal (rows {', '.join(bad[:5])})")
    return rows


def evaluate_reviews(rows: list[dict[str, str]], git_dir: Path, jobs: int = 0) -> list[ReviewResult]:
    from rules import all_rules

    category = {r.id: r.category for r in all_rules()}
    folders = sorted({(r["commit"].strip(), r["folder"].strip().rstrip("/")) for r in rows})
    jobs = jobs or min(len(folders), os.cpu_count() or 1)
    work = [(str(git_dir), c, f) for c, f in folders]
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            audits = dict(pool.map(_audit_folder, work))
    else:
        audits = dict(map(_audit_folder, work))
    results = []
    for row in rows:
        rule = row["rule"].strip()
        cat = category.get(rule, "")
        fa = audits[(row["commit"].strip(), row["folder"].strip().rstrip("/"))]
        reviewed = row["reviewed"].strip().lower()
        if fa.error:
            verdict, agrees = "ERROR", False
        elif reviewed == "illegal":
            hit = [rid for rid, c in fa.failed.items() if c == cat]
            verdict = "FAIL" if hit else ("WARN" if rule in fa.warned else "PASS")
            agrees = bool(hit)
        else:
            verdict = "FAIL" if rule in fa.failed else ("WARN" if rule in fa.warned else "PASS")
            agrees = rule not in fa.failed
        where = [loc for rid, locs in fa.fail_lines.items() if category.get(rid) == cat for loc in locs]
        results.append(
            ReviewResult(row["id"], row.get("pr", ""), row["folder"], rule, cat, reviewed, verdict, agrees, where)
        )
    return results


def scores(results: list[ReviewResult], only_legality: bool = True) -> dict[str, Any]:
    rows = [r for r in results if not only_legality or is_legality(r.rule)]
    tp = sum(r.reviewed == "illegal" and r.agrees for r in rows)
    fn = sum(r.reviewed == "illegal" and not r.agrees for r in rows)
    fp = sum(r.reviewed == "legal" and not r.agrees for r in rows)
    tn = sum(r.reviewed == "legal" and r.agrees for r in rows)
    prec = tp / (tp + fp) if tp + fp else None
    rec = tp / (tp + fn) if tp + fn else None
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "precision": prec, "recall": rec}


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def render_reviews_text(results: list[ReviewResult]) -> str:
    out = [f"{'id':<8}{'pr':<7}{'rule':<7}{'reviewed':<9}{'we say':<8}ok  folder"]
    for r in results:
        mark = "yes" if r.agrees else "NO"
        out.append(f"{r.id:<8}{r.pr:<7}{r.rule:<7}{r.reviewed:<9}{r.verdict:<8}{mark:<4}{r.folder}")
    out += ["", f"{'rule':<7}{'TP':>4}{'FP':>4}{'FN':>4}{'TN':>4}  precision recall"]
    for rule in sorted({r.rule for r in results}):
        s = scores([r for r in results if r.rule == rule], only_legality=False)
        out.append(
            f"{rule:<7}{s['tp']:>4}{s['fp']:>4}{s['fn']:>4}{s['tn']:>4}  {_fmt(s['precision']):>9} {_fmt(s['recall']):>6}"
        )
    s = scores(results)
    out += [
        "",
        f"legality rules: TP {s['tp']} FP {s['fp']} FN {s['fn']} TN {s['tn']}  "
        f"precision {_fmt(s['precision'])} recall {_fmt(s['recall'])}",
        f"{sum(r.agrees for r in results)}/{len(results)} judgements agree",
    ]
    return "\n".join(out) + "\n"


def run_reviews(path: Path, git_dir: Path, fmt: str, output: str | None, jobs: int = 0) -> int:
    if not git_dir.exists():
        raise InputError(f"--git-dir {git_dir} does not exist")
    results = evaluate_reviews(read_reviews(path), git_dir, jobs)
    if fmt == "json":
        text = json.dumps(
            {
                "rows": [r.__dict__ for r in results],
                "legality": scores(results),
                "per_rule": {
                    rule: scores([r for r in results if r.rule == rule], only_legality=False)
                    for rule in sorted({r.rule for r in results})
                },
            },
            indent=2,
        )
    else:
        text = render_reviews_text(results)
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        print(text, end="")
    return 0 if all(r.agrees for r in results) else 1
