"""The per-seed table (`pgolf-audit rescore`) and its copy in the audit report."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from auditor.engine import audit
from auditor.evidence.table import seed_table
from auditor.submission import load_path
from auditor.testing import submission_from_files
from rules import get_rule

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "fixtures"


def test_csv_has_one_row_per_seed_with_the_scored_line() -> None:
    table = seed_table(load_path(FIX / "time_ok_clean_twin"))
    rows = list(csv.DictReader(io.StringIO(table.to_csv())))
    header = "seed,label,val_loss,val_bpb,tokens,train_ms,eval_ms,artifact_bytes"
    assert table.to_csv().startswith(header)
    assert [r["seed"] for r in rows] == ["0", "42", "1234"]
    seed42 = rows[1]
    assert seed42["label"] == "quantized_ttt_phased" and seed42["val_bpb"] == "1.05867499"
    assert seed42["train_ms"] == "596102" and seed42["eval_ms"] == "524497"
    assert seed42["artifact_bytes"] == "15981148" and seed42["tokens"] == "47851520"
    assert seed42["log"] == "train_seed42.log" and seed42["line"] == "35" and seed42["claim_agrees"] == "true"


def test_dict_and_text_forms() -> None:
    table = seed_table(load_path(FIX / "claims_mismatch"))
    d = table.to_dict()
    assert json.loads(json.dumps(d))["columns"][:4] == ["seed", "label", "val_loss", "val_bpb"]
    by_seed = {r["seed"]: r for r in d["rows"]}
    assert by_seed[314]["claim_agrees"] is False and by_seed[314]["claimed_val_bpb"] == 1.07791105
    assert by_seed[7]["claim_agrees"] is None  # an undisclosed run: nothing claimed
    text = table.to_text()
    assert "!= 1.07791105" in text and "mean val_bpb" in text


def test_several_logs_of_one_seed_pick_the_claimed_one() -> None:
    log = (FIX / "logs" / "sliding_window_int6.log").read_text()
    rerun = log.replace("1.14430897", "1.14500000").replace("1.1443 ", "1.1450 ")
    sub = submission_from_files(
        {
            "train_seed42_original.log": log,
            "train_seed42_rerun.log": rerun,
            "submission.json": '{"val_bpb": 1.14430897, "seed_results": {"42": {"val_bpb": 1.14430897}}}',
        }
    )
    table = seed_table(sub)
    assert len(table.rows) == 1 and table.rows[0].log == "train_seed42_original.log"
    assert [r.log for r in table.other_runs] == ["train_seed42_rerun.log"]


def test_logs_named_for_different_seeds_that_logged_the_same_seed_stay_separate() -> None:
    log = (FIX / "logs" / "sliding_window_int6.log").read_text()
    sub = submission_from_files({"train_seed_1.txt": log, "train_seed_2.txt": log})
    assert [r.log for r in seed_table(sub).rows] == ["train_seed_1.txt", "train_seed_2.txt"]


def test_audit_report_carries_the_table() -> None:
    report = audit(load_path(FIX / "time_ok_clean_twin"), [get_rule("PG611")])
    table = report.tables["log_table"]
    assert [r["seed"] for r in table["rows"]] == [0, 42, 1234]
    assert json.loads(report.to_json())["tables"]["log_table"]["rows"][1]["val_bpb"] == 1.05867499


def test_rescore_command(tmp_path: Path) -> None:
    out = tmp_path / "t.csv"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "auditor.cli",
            "rescore",
            str(FIX / "size_over_cap"),
            "--format",
            "csv",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(out.open()))
    assert {r["seed"]: r["artifact_bytes"] for r in rows}["42"] == "16024793"


MIRROR = Path("/work/.mirror/openai+parameter-golf/repo")


def test_merged_records_scored_line_matches_claimed_seeds() -> None:
    """On every merged record (both tracks) the chosen scored line equals submission.json's per-seed value
    within rounding for >= 95% of the seeds that have a log (measured: 71 of 73)."""
    import pytest

    if not MIRROR.exists():
        pytest.skip("needs the openai/parameter-golf mirror")
    from auditor.submission import load_git

    ls = subprocess.run(
        ["git", f"--git-dir={MIRROR}", "ls-tree", "-d", "--name-only", "HEAD", "records/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    dirs = []
    for track in filter(None, ls):
        sub_ls = subprocess.run(
            ["git", f"--git-dir={MIRROR}", "ls-tree", "-d", "--name-only", "HEAD", track + "/"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
        dirs += [d for d in sub_ls if d]
    assert len(dirs) >= 60
    agree = total = 0
    for d in dirs:
        for row in seed_table(load_git(MIRROR, "HEAD", d)).rows:
            if row.claim_agrees is not None:
                total += 1
                agree += row.claim_agrees
    assert total >= 70 and agree / total >= 0.95, (agree, total)


def test_rescore_command_prints_csv_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    from auditor.cli import main

    folder = str(Path(__file__).resolve().parents[1] / "fixtures" / "clean_baseline")
    assert main(["rescore", folder, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 1
    assert {"seed", "label", "val_loss", "val_bpb", "tokens", "train_ms", "eval_ms", "artifact_bytes"} <= set(
        rows[0]
    )
    assert rows[0]["label"] == "final_int8_zlib_roundtrip_exact" and rows[0]["tokens"] == "62021632"
    assert main(["rescore", folder, "--format", "json"]) == 0
    assert "final_int8_zlib_roundtrip_exact" in capsys.readouterr().out
