"""PG601/PG602: the record folder's files, its name, and submission.json."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from auditor.engine import audit
from auditor.findings import Verdict
from auditor.submission import load_path
from rules import get_rule

FIX = Path(__file__).resolve().parents[1] / "fixtures"


def verdicts(path: Path, rule_id: str) -> list[tuple[Verdict, str]]:
    report = audit(load_path(path), [get_rule(rule_id)])
    return [(f.verdict, f.message) for f in report.findings if f.rule_id == rule_id]


def copy_as(tmp_path: Path, name: str) -> Path:
    dest = tmp_path / "records" / "track_10min_16mb" / name
    shutil.copytree(FIX / "time_ok_clean_twin", dest)
    return dest


def test_complete_well_named_record_passes(tmp_path: Path) -> None:
    assert [v for v, _ in verdicts(copy_as(tmp_path, "2026-04-30_Fixture Record"), "PG601")] == [Verdict.PASS]


@pytest.mark.parametrize("name", ["Fixture_Record", "2026-13-40_Fixture", "2026-04-30"])
def test_misnamed_record_folder_warns(tmp_path: Path, name: str) -> None:
    got = verdicts(copy_as(tmp_path, name), "PG601")
    assert got and got[0][0] is Verdict.WARN and "YYYY-MM-DD" in got[0][1] or "calendar" in got[0][1]


def test_folder_outside_records_is_not_held_to_the_naming(tmp_path: Path) -> None:
    dest = tmp_path / "my_run"
    shutil.copytree(FIX / "time_ok_clean_twin", dest)
    assert [v for v, _ in verdicts(dest, "PG601")] == [Verdict.PASS]


def test_single_script_skips(tmp_path: Path) -> None:
    script = tmp_path / "train_gpt.py"
    script.write_text("print(1)\n")
    assert [v for v, _ in verdicts(script, "PG601")] == [Verdict.SKIP]
    assert [v for v, _ in verdicts(script, "PG602")] == [Verdict.SKIP]


def test_missing_log_and_json_fail(tmp_path: Path) -> None:
    dest = copy_as(tmp_path, "2026-04-30_Fixture")
    for p in dest.glob("*.log"):
        p.unlink()
    (dest / "submission.json").unlink()
    got = verdicts(dest, "PG601")
    assert sorted(v.value for v, _ in got) == ["FAIL", "FAIL"]


def test_fixture_json_is_well_formed() -> None:
    assert [v for v, _ in verdicts(FIX / "time_overrun", "PG602")] == [Verdict.PASS]


def test_bare_working_folder_is_audited_as_code_only(tmp_path: Path) -> None:
    (tmp_path / "train_gpt.py").write_text("print(1)\n")
    assert [v for v, _ in verdicts(tmp_path, "PG601")] == [Verdict.SKIP]
