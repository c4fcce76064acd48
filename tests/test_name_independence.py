"""Cross-cutting guarantee for every bundled fixture: renaming every identifier the submission defines (lines kept)
or minifying the code leaves every static rule's verdict unchanged; renaming also keeps every FAIL's line."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditor.engine import audit
from auditor.findings import EvidenceLevel, Verdict
from auditor.rename import minify, rename_identifiers
from auditor.submission import load_path
from auditor.testing import submission_from_files
from rules import all_rules

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
STATIC_RULES = [r for r in all_rules() if r.evidence_level is EvidenceLevel.STATIC]
CASES = sorted(
    p.name
    for p in FIXTURES.iterdir()
    if (p / "train_gpt.py").is_file() and not p.name.startswith("packed_") and p.name != "rerun_tiny"
)


def _files(folder: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in folder.iterdir() if f.is_file()}


def _verdicts(files: dict[str, bytes]) -> tuple[dict[str, Verdict], set[tuple[str, int]]]:
    report = audit(submission_from_files(files), STATIC_RULES)
    fails = {
        (f.rule_id, f.primary.line)
        for f in report.active
        if f.gating and f.verdict is Verdict.FAIL and f.primary
    }
    return {rv.rule_id: rv.gating_verdict for rv in report.per_rule()}, fails


def _transform(files: dict[str, bytes], fn) -> dict[str, bytes]:  # noqa: ANN001
    return {n: (fn(d.decode("utf-8")).encode("utf-8") if n.endswith(".py") else d) for n, d in files.items()}


@pytest.mark.parametrize("name", CASES)
def test_fixture_verdicts_survive_renaming_and_minifying(name: str) -> None:
    files = _files(FIXTURES / name)
    assert load_path(FIXTURES / name).entry == "train_gpt.py"
    base, base_fails = _verdicts(files)
    renamed, renamed_fails = _verdicts(_transform(files, rename_identifiers))
    assert renamed == base, f"{name}: renaming changed verdicts"
    assert renamed_fails == base_fails, f"{name}: renaming moved a FAIL"
    minified, _ = _verdicts(_transform(files, minify))
    assert minified == base, f"{name}: minifying changed verdicts"
