"""Claims vs logs (PG611-PG615) on fixture folders, and the claim readers."""

from __future__ import annotations

from pathlib import Path

from auditor.engine import audit
from auditor.evidence.claims import Number, parse_claims, readme_bpb_numbers, submission_date
from auditor.findings import Verdict
from auditor.submission import load_path
from rules import get_rule

FIX = Path(__file__).resolve().parents[1] / "fixtures"


def findings(folder: str, rule_id: str):
    report = audit(load_path(FIX / folder), [get_rule(rule_id)])
    return [f for f in report.findings if f.rule_id == rule_id]


def test_inflated_seed_claim_fails_on_the_log_line() -> None:
    fails = [f for f in findings("claims_mismatch", "PG611") if f.verdict is Verdict.FAIL]
    seed = next(f for f in fails if f.data.get("seed") == 314)
    assert (seed.primary.path, seed.primary.line) == ("train_seed314.log", 12)
    assert "1.07791105" in seed.message and "1.07991105" in seed.message
    assert seed.related and seed.related[0].path == "submission.json"
    headline = next(f for f in fails if "headline" in f.message)
    assert "better than every logged run" in headline.message


def test_clean_twin_passes_claims() -> None:
    got = findings("time_ok_clean_twin", "PG611")
    assert [f.verdict for f in got] == [Verdict.PASS]


def test_readme_headline_and_row() -> None:
    warns = findings("claims_mismatch", "PG612")
    assert sorted(f.primary.line for f in warns) == [1, 6]
    assert all(f.verdict is Verdict.WARN for f in warns)


def test_undisclosed_seed() -> None:
    warns = [f for f in findings("claims_mismatch", "PG615") if f.verdict is Verdict.WARN]
    assert [f.primary.path for f in warns] == ["train_seed7.log"] and warns[0].primary.line == 1


def test_incomplete_log_fails_at_the_eval_start() -> None:
    got = [f for f in findings("incomplete_log", "PG614") if f.verdict is Verdict.FAIL]
    assert len(got) == 1 and (got[0].primary.path, got[0].primary.line) == ("train_seed1234.log", 33)
    assert "311/782" in got[0].message


def test_claim_shapes() -> None:
    data = {
        "val_bpb": 1.0614,
        "date": "2026-04-29T00:00:00Z",
        "seeds": [42, 314],
        "seed_results": {"42": {"val_bpb": 1.06128183, "artifact_bytes": 15952086, "eval_time_ms": 519546}},
        "compliance_rerun": {"seed_results": {"42": {"val_bpb": 1.06083288}}},
        "seed_results_all_runs_disclosure": {"all_val_bpb": {"7": 1.0654}},
    }
    c = parse_claims(data, "submission.json")
    assert [b.source for b in c.seeds[42]] == ["seed_results.42", "compliance_rerun.seed_results.42"]
    assert c.seeds[7][0].val_bpb == Number(1.0654, 4)
    assert c.main_seed(42).artifact_bytes == 15952086 and c.main_seed(42).eval_time_s == 519.546
    assert sorted(c.seed_list) == [7, 42, 314]
    assert c.val_bpb == Number(1.0614, 4) and c.val_bpb_key == "val_bpb"
    dict_form = parse_claims({"seeds": {"1337": {"val_bpb": 1.1, "bytes_total": 15_000_000}}})
    assert dict_form.main_seed(1337).artifact_bytes == 15_000_000


def test_number_rounding() -> None:
    n = Number(1.0614, 4)
    assert n.agrees(1.06141, 5) and n.agrees(1.06144999, 8)
    assert not Number(1.06145, 5).agrees(1.0614094, 7)


def test_readme_numbers_and_date(tmp_path: Path) -> None:
    nums = readme_bpb_numbers("# Record: X — val_bpb 1.08279 (3-seed mean)\nno number here\n**1.0912 BPB**")
    assert [(line, n.value) for line, n in nums] == [(1, 1.08279), (3, 1.0912)]
    sub = load_path(FIX / "time_ok_clean_twin")
    assert submission_date(sub, parse_claims({"date": "2026-04-30T12:00:00Z"})) == "2026-04-30"
    folder = tmp_path / "2026-03-25_Some_Record"
    folder.mkdir()
    (folder / "train_gpt.py").write_text("print(1)\n")
    assert submission_date(load_path(folder), parse_claims({})) == "2026-03-25"


def test_split_train_and_eval_logs_are_complete_together() -> None:
    from auditor.testing import submission_from_files

    train = (
        "seed:1337\nstopping_early: wallclock_cap train_time: 599478ms step: 6371/20000\n"
        "Total submission size quantized+brotli: 15919227 bytes\n"
    )
    evaluation = "quantized val_loss:2.81379763 val_bpb:1.08949971 eval_time:101404ms\n"
    sub = submission_from_files({"train_seed1337.log": train, "eval_seed1337.log": evaluation})
    report = audit(sub, [get_rule("PG614")])
    got = [f for f in report.findings if f.rule_id == "PG614"]
    assert got and all(not f.gating for f in got) and "eval_seed1337.log" in got[0].message
    alone = audit(submission_from_files({"train_seed1337.log": train}), [get_rule("PG614")])
    assert [f.verdict for f in alone.findings] == [Verdict.FAIL]


def test_logged_code_differing_only_in_comments_is_the_same_program() -> None:
    from auditor.testing import submission_from_files

    code = "import os\n\n\ndef main():\n    # comment A\n    print(os.sep)\n\n\nmain()\n"
    logged = code.replace("# comment A", "# a different comment")
    log = logged + "=" * 100 + "\nseed:1\nquantized val_loss:2.0 val_bpb:1.2 eval_time:10ms\n"
    report = audit(submission_from_files({"train_gpt.py": code, "train.log": log}), [get_rule("PG613")])
    got = [f for f in report.findings if f.rule_id == "PG613"]
    assert [f.verdict for f in got] == [Verdict.PASS] and "comments or formatting" in got[0].message
    changed = log.replace("# a different comment", "# comment A").replace(
        "print(os.sep)", "print(os.getcwd())"
    )
    report = audit(submission_from_files({"train_gpt.py": code, "train.log": changed}), [get_rule("PG613")])
    warn = [f for f in report.findings if f.rule_id == "PG613"]
    assert [f.verdict for f in warn] == [Verdict.WARN] and warn[0].primary.line == 6
    assert "+    print(os.getcwd())" in warn[0].evidence
