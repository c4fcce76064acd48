"""`pgolf-audit sweep --git-dir D [--rev R] [--root records]`: audit every record folder under a tree in one go and
print one line per folder (overall verdict, the FAIL and WARN rules, decoded layers) — for maintainers triaging a
whole leaderboard or a batch of PR heads. Exit 1 when any folder FAILs."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from auditor.engine import audit, select_rules
from auditor.errors import InputError
from auditor.findings import Verdict
from auditor.submission import git_command, load_git


@dataclass
class FolderResult:
    path: str
    overall: str
    fails: list[str] = field(default_factory=list)
    warns: list[str] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    error: str = ""


def record_folders(git_dir: str, rev: str, root: str) -> list[str]:
    """Folders two levels below `root` (records/<track>/<dir>); names may contain spaces."""
    base = git_command(git_dir)
    proc = subprocess.run(
        [*base, "ls-tree", "-d", "-z", "--name-only", f"{rev}:{root}"],
        capture_output=True,
        check=False,
        timeout=60,
    )
    if proc.returncode != 0:
        raise InputError(f"git ls-tree {rev}:{root} failed: {proc.stderr.decode(errors='replace').strip()}")
    out: list[str] = []
    for track in filter(None, proc.stdout.decode("utf-8", errors="replace").split("\x00")):
        sub = subprocess.run(
            [*base, "ls-tree", "-d", "-z", "--name-only", f"{rev}:{root}/{track}"],
            capture_output=True,
            check=False,
            timeout=60,
        )
        out += [
            f"{root}/{track}/{d}"
            for d in filter(None, sub.stdout.decode("utf-8", errors="replace").split("\x00"))
        ]
    return out


def sweep(git_dir: str, rev: str, root: str, rules: list[str] | None = None) -> list[FolderResult]:
    selected = select_rules(rules)
    results = []
    for folder in record_folders(git_dir, rev, root):
        try:
            report = audit(load_git(git_dir, rev, folder), selected)
        except InputError as exc:
            results.append(FolderResult(folder, "ERROR", error=str(exc)))
            continue
        res = FolderResult(folder, report.overall.value, layers=[la.name for la in report.layers])
        for rv in report.per_rule():
            if rv.gating_verdict is Verdict.FAIL:
                res.fails.append(rv.rule_id)
            elif rv.gating_verdict is Verdict.WARN:
                res.warns.append(rv.rule_id)
        results.append(res)
    return results


def run_sweep(
    git_dir: str, rev: str, root: str, rules: list[str] | None, fmt: str, output: str | None
) -> int:
    results = sweep(git_dir, rev, root, rules)
    if fmt == "json":
        text = json.dumps([r.__dict__ for r in results], indent=2) + "\n"
    else:
        lines = []
        for r in results:
            detail = r.error or " ".join(
                x
                for x in (
                    ("FAIL " + ",".join(r.fails)) if r.fails else "",
                    ("WARN " + ",".join(r.warns)) if r.warns else "",
                    ("unpacked " + ",".join(r.layers)) if r.layers else "",
                )
                if x
            )
            lines.append(f"{r.overall:<5} {r.path}  {detail}")
        counts = {v: sum(r.overall == v for r in results) for v in ("PASS", "WARN", "FAIL", "SKIP", "ERROR")}
        lines.append(f"{len(results)} folders: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n))
        text = "\n".join(lines) + "\n"
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        print(text, end="")
    return 1 if any(r.overall == "FAIL" for r in results) else 0
