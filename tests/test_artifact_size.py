"""PG621 and the three size conventions (rules.md §F)."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditor.engine import audit
from auditor.evidence.size import WRAPPER_HEAD, WRAPPER_TAIL, compressed_code_size
from auditor.findings import Verdict
from auditor.submission import load_path
from auditor.testing import submission_from_files
from rules import get_rule

FIX = Path(__file__).resolve().parents[1] / "fixtures"


def run(sub):
    report = audit(sub, [get_rule("PG621")])
    return [f for f in report.findings if f.rule_id == "PG621"]


def test_pr1809_shape_fails_on_the_log_total_line() -> None:
    got = run(load_path(FIX / "size_over_cap"))
    fails = [f for f in got if f.verdict is Verdict.FAIL]
    assert len(fails) == 3
    seed42 = next(f for f in fails if f.primary.path == "train_seed42.log")
    assert seed42.primary.line == 9
    assert seed42.primary.snippet == "Total submission size quantized+brotli: 16024793 bytes"
    assert "16,024,793" in seed42.message and "24,793 bytes over" in seed42.message
    assert "shipped convention" in seed42.message and "compressed-code convention" in seed42.message
    acc = seed42.data
    assert acc["shipped"] == 16_024_793 and acc["applied"] == "shipped"
    assert acc["compressed"] is not None and acc["compressed"] < 16_000_000  # would fit, not applied
    assert "(1) shipped" in seed42.evidence and "(3) +aux" in seed42.evidence


def test_compressed_convention_applied_by_the_script() -> None:
    got = run(load_path(FIX / "time_ok_clean_twin"))
    assert [f.verdict for f in got] == [Verdict.PASS]
    acc = got[0].data["accounts"][0]
    assert acc["applied"] == "compressed" and acc["compressed_code"] == 33906  # the log's own figure


def test_shipped_bytes_over_when_only_the_compressed_convention_fits() -> None:
    folder = load_path(FIX / "time_ok_clean_twin")
    folder.files["train_gpt.py"].data = b"x = 1\n" * 30000  # 180,000 shipped bytes
    folder.files["train_gpt.py"].size = 180000
    got = run(folder)
    assert {f.verdict for f in got} == {Verdict.WARN}
    assert all("over counting the shipped train_gpt.py" in f.message for f in got)


def test_estimate_matches_the_wrapper_shape() -> None:
    code = "import os\n\n\ndef main():\n    '''doc'''\n    print(os.getcwd())\n\n\nmain()\n" * 20
    size, how = compressed_code_size(code)
    assert size is not None and size > len(WRAPPER_HEAD) + len(WRAPPER_TAIL) and "pyminify" in how
    assert compressed_code_size("def f(:\n")[0] is None


def test_claims_fallback_when_no_log_states_a_size() -> None:
    sub = submission_from_files(
        {
            "train_gpt.py": "print(1)\n",
            "submission.json": '{"val_bpb": 1.2, "bytes_total": 16100000, "bytes_code": 9}',
        }
    )
    got = run(sub)
    assert [f.verdict for f in got] == [Verdict.FAIL] and got[0].primary.path == "submission.json"


def test_no_size_anywhere_warns() -> None:
    sub = submission_from_files({"train_gpt.py": "print(1)\n", "submission.json": '{"val_bpb": 1.2}'})
    assert [f.verdict for f in run(sub)] == [Verdict.WARN]


MIRROR = Path("/work/.mirror/openai+parameter-golf/repo")


@pytest.mark.skipif(not MIRROR.exists(), reason="needs the openai/parameter-golf mirror")
def test_dev010_pr1809() -> None:
    from auditor.submission import load_git

    sub = load_git(
        MIRROR,
        "54084248c7ea221eadf0de7312c7cb522dc1a9b5",
        "records/track_10min_16mb/2026-04-24_SP8192_GramNS_PolarExpress_3LayerRecur_ParResid_QK525_LegalTTT",
    )
    fails = [f for f in run(sub) if f.verdict is Verdict.FAIL]
    seed42 = next(f for f in fails if f.primary.path == "train_seed42.log")
    assert seed42.primary.snippet == "Total submission size quantized+brotli: 16024793 bytes"
