"""`pgolf-audit corpus LABELS.tsv --git-dir D`: audit every labelled submission at its pinned commit and print a
confusion table per rule, so maintainers can recalibrate after new rulings.

A row is `id, pr, verdict (illegal|clean), rules (comma-separated categories), repo, commit, path, ...`. The folder
containing `path` is audited at `commit`. A rule's FAIL on a row counts as a true positive when the row is labelled
with the rule's category, otherwise as a false positive; a labelled category with no FAILing rule of that category is
a false negative for each rule of the category.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from auditor.engine import audit
from auditor.errors import InputError
from auditor.findings import Verdict
from auditor.submission import load_git
from rules import all_rules

REQUIRED_COLUMNS = ("id", "verdict", "rules", "commit", "path")


@dataclass
class RowResult:
    id: str
    pr: str
    label: str
    expected: set[str]
    failed_rules: dict[str, str] = field(default_factory=dict)  # rule id -> category
    warned_rules: dict[str, str] = field(default_factory=dict)
    error: str = ""
    fail_lines: list[str] = field(default_factory=list)

    @property
    def failed_categories(self) -> set[str]:
        return set(self.failed_rules.values())

    @property
    def ok(self) -> bool:
        if self.error:
            return False
        if self.label == "clean":
            return not self.failed_rules
        return self.expected <= self.failed_categories


@dataclass
class Confusion:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def as_dict(self) -> dict[str, Any]:
        prec = self.tp / (self.tp + self.fp) if self.tp + self.fp else None
        rec = self.tp / (self.tp + self.fn) if self.tp + self.fn else None
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn, "precision": prec, "recall": rec}


def read_labels(path: Path) -> list[dict[str, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read labels {path}: {exc}") from exc
    rows = list(csv.DictReader(text.splitlines(), delimiter="\t"))
    if not rows:
        raise InputError(f"{path}: no rows")
    missing = [c for c in REQUIRED_COLUMNS if c not in rows[0]]
    if missing:
        raise InputError(f"{path}: missing columns {', '.join(missing)}")
    return rows


def evaluate(rows: list[dict[str, str]], git_dir: Path) -> tuple[list[RowResult], dict[str, Confusion]]:
    rules = all_rules()
    results: list[RowResult] = []
    for row in rows:
        expected = {c.strip() for c in (row.get("rules") or "").split(",") if c.strip()}
        res = RowResult(row["id"], row.get("pr", ""), row["verdict"].strip().lower(), expected)
        folder = str(PurePosixPath(row["path"]).parent)
        try:
            sub = load_git(git_dir, row["commit"], folder)
            report = audit(sub, rules)
        except InputError as exc:
            res.error = str(exc)
            results.append(res)
            continue
        for rv in report.per_rule():
            if rv.gating_verdict is Verdict.FAIL:
                res.failed_rules[rv.rule_id] = rv.category
            elif rv.gating_verdict is Verdict.WARN:
                res.warned_rules[rv.rule_id] = rv.category
        for f in report.active:
            if f.verdict is Verdict.FAIL and f.gating:
                res.fail_lines.append(f"{f.rule_id} {f.primary or ''}")
        results.append(res)

    confusion: dict[str, Confusion] = {}
    for rule in rules:
        c = Confusion()
        for res in results:
            if res.error:
                continue
            fired = rule.id in res.failed_rules
            labelled = rule.category in res.expected
            if fired and labelled:
                c.tp += 1
            elif fired:
                c.fp += 1
            elif labelled and rule.category not in res.failed_categories:
                c.fn += 1
            elif not labelled:
                c.tn += 1
        confusion[rule.id] = c
    return results, confusion


def render_text(results: list[RowResult], confusion: dict[str, Confusion]) -> str:
    names = {r.id: (r.name, r.category) for r in all_rules()}
    nw = max(len(n) for n, _ in names.values()) + 2
    out = ["Per submission", f"{'id':<9}{'pr':<7}{'label':<8}{'expected':<30}{'FAIL rules':<34}ok"]
    for r in results:
        fails = ",".join(sorted(r.failed_rules)) or "-"
        exp = ",".join(sorted(r.expected)) or "-"
        mark = "yes" if r.ok else ("ERROR " + r.error if r.error else "NO")
        out.append(f"{r.id:<9}{r.pr:<7}{r.label:<8}{exp:<30}{fails:<34}{mark}")
    out += [
        "",
        "Confusion per rule (FAIL vs label category)",
        f"{'rule':<7}{'name':<{nw}}{'category':<22}{'TP':>4}{'FP':>4}{'FN':>4}{'TN':>4}  precision recall",
    ]
    for rid, c in confusion.items():
        name, cat = names[rid]
        d = c.as_dict()
        p = f"{d['precision']:.2f}" if d["precision"] is not None else "-"
        rc = f"{d['recall']:.2f}" if d["recall"] is not None else "-"
        out.append(f"{rid:<7}{name:<{nw}}{cat:<22}{c.tp:>4}{c.fp:>4}{c.fn:>4}{c.tn:>4}  {p:>9} {rc:>6}")
    ok = sum(r.ok for r in results)
    out += ["", f"{ok}/{len(results)} rows as labelled"]
    return "\n".join(out) + "\n"


def run_corpus(labels: Path, git_dir: Path, fmt: str = "text", output: str | None = None) -> int:
    if not git_dir.exists():
        raise InputError(f"--git-dir {git_dir} does not exist")
    results, confusion = evaluate(read_labels(labels), git_dir)
    if fmt == "json":
        text = json.dumps(
            {
                "rows": [
                    {
                        "id": r.id,
                        "pr": r.pr,
                        "label": r.label,
                        "expected": sorted(r.expected),
                        "failed_rules": r.failed_rules,
                        "warned_rules": r.warned_rules,
                        "fail_locations": r.fail_lines,
                        "ok": r.ok,
                        "error": r.error,
                    }
                    for r in results
                ],
                "confusion": {rid: c.as_dict() for rid, c in confusion.items()},
            },
            indent=2,
        )
    else:
        text = render_text(results, confusion)
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        print(text, end="" if text.endswith("\n") else "\n")
    return 0 if all(r.ok for r in results) else 1
