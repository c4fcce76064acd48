"""Shared helpers for the PG301-PG303 tests: audit a fixture (optionally transformed) and read verdicts."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from auditor.engine import audit, select_rules
from auditor.findings import Finding, Verdict
from auditor.submission import Submission, load_git, load_path
from auditor.testing import submission_from_files

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
MIRROR = Path("/work/.mirror/openai+parameter-golf/repo")


def fixture_files(name: str) -> dict[str, str]:
    folder = FIXTURES / name
    return {p.name: p.read_text() for p in folder.iterdir() if p.is_file()}


def run(sub: Submission, rule_id: str) -> tuple[Verdict, list[Finding]]:
    report = audit(sub, select_rules([rule_id]))
    verdict = next(rv.gating_verdict for rv in report.per_rule() if rv.rule_id == rule_id)
    return verdict, [f for f in report.findings if f.rule_id == rule_id]


def run_fixture(
    name: str,
    rule_id: str,
    transform: Callable[[str], str] | None = None,
    extra: dict[str, str] | None = None,
) -> tuple[Verdict, list[Finding]]:
    if transform is None and not extra:
        return run(load_path(FIXTURES / name), rule_id)
    files = fixture_files(name)
    if transform is not None:
        files["train_gpt.py"] = transform(files["train_gpt.py"])
    files.update(extra or {})
    return run(submission_from_files(files, root=name), rule_id)


def gating(findings: list[Finding], verdict: Verdict) -> list[Finding]:
    return [f for f in findings if f.verdict is verdict and f.gating]


def mirror_has(rev: str) -> bool:
    if not MIRROR.exists():
        return False
    r = subprocess.run(
        ["git", "--git-dir", str(MIRROR), "cat-file", "-e", f"{rev}^{{commit}}"], capture_output=True
    )
    return r.returncode == 0


def run_mirror(rev: str, path: str, rule_id: str) -> tuple[Verdict, list[Finding]]:
    return run(load_git(MIRROR, rev, path), rule_id)


def as_sibling_module(name: str, module: str = "ngram_cache") -> dict[str, str]:
    """The fixture with its first class moved into an imported sibling module `module.py` (the entry script
    imports it by name): the same code, analysed across files."""
    files = fixture_files(name)
    src = files["train_gpt.py"]
    start = src.index("\nclass ") + 1
    end = src.index("\nclass ", start) + 1
    files[f"{module}.py"] = "import numpy as np\n\n\n" + src[start:end]
    cls = src[start:end].split("(", 1)[0].split(":", 1)[0].split()[1]
    head = src[:start].rstrip("\n") + f"\n\nfrom {module} import {cls}\n\n\n"
    files["train_gpt.py"] = head + src[end:]
    return files
