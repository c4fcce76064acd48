"""Implied byte denominators (log evidence), validation coverage, CaseOps overlap and the byte-LUT code rules."""

from __future__ import annotations

import io
import math
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from auditor.engine import audit, select_rules
from auditor.evidence.byte_lut_files import check_lut_files, tokenmonster_single_bytes
from auditor.evidence.bytes_implied import (
    TokenizerFacts,
    check_denominator,
    family_of,
    implied_bytes,
    implied_uncertainty,
)
from auditor.evidence.logs import parse_log
from auditor.findings import Verdict
from auditor.submission import load_git, load_path
from auditor.testing import submission_from_files

BYTE_RULES = ["PG701", "PG702", "PG703", "PG711", "PG712", "PG713", "PG714"]
MIRROR = Path(os.environ.get("PGOLF_REPO", "/work/.mirror/openai+parameter-golf/repo"))


def _bpb(tokens: int, loss: float, denom: int) -> float:
    return round(tokens * loss / (denom * math.log(2)), 8)


# -- the arithmetic --------------------------------------------------------------------------------------------
def test_implied_bytes_recovers_a_denominator_from_8_decimal_lines() -> None:
    # PR #2130 seed 0 (CaseOps, sidecar): 2.31287992 nats/token, 1.05689587 bpb over 47,851,520 targets
    assert round(implied_bytes(47_851_520, 2.31287992, 1.05689587)) == 151_074_499
    assert implied_uncertainty(47_851_520, 2.31287992, 1.05689587, 8) < 2
    assert implied_uncertainty(47_851_520, 2.3129, 1.0569, 4) > 10_000  # 4 decimals: ~±14 KB
    with pytest.raises(ValueError):
        implied_bytes(0, 1.0, 1.0)


@pytest.mark.parametrize(
    "family, tokens, denom, status",
    [
        ("sp8192", 40_540_160, 151_078_222, "match"),
        ("sp8192", 40_540_160, 151_076_460, "match"),  # within the 8 KB tail tolerance (a real HEAD record)
        ("sp1024", 62_021_632, 151_080_363, "match"),
        ("sp1024", 61_997_056, 151_024_099, "match"),  # 24,576 targets lost to a 32k-window truncation
        ("caseops_sp8192", 47_851_520, 164_594_398, "mismatch"),  # piece bytes instead of the sidecar
        ("sp1024", 62_021_632, 153_693_958, "mismatch"),  # byte-fallback counted as 3 bytes
        ("caseops_sp8192", 9_662_464, 32_756_252, "truncated"),
        (None, 62_363_648, 182_811_139, "mismatch"),  # Scylla (custom tokenizer) against the val text size
        (None, 62_363_648, 151_074_000, "match"),
        ("sp8192", 40_546_304, 151_074_634, "match"),  # another sp8192 export: compared with the text size
    ],
)
def test_check_denominator_statuses(family: str | None, tokens: int, denom: int, status: str) -> None:
    loss = 2.1
    check = check_denominator(loss, _bpb(tokens, loss, denom), 8, family, tokens)
    assert check is not None and check.status == status
    if status == "mismatch":
        assert check.corrected_bpb is not None and check.corrected_bpb > check.val_bpb


def test_corrected_bpb_for_caseops_piece_bytes_is_the_sidecar_score() -> None:
    check = check_denominator(2.31287992, 0.97008170, 8, "caseops_sp8192", 47_851_520)
    assert check is not None and check.status == "mismatch"
    assert check.corrected_bpb == pytest.approx(1.05689587, abs=2e-8)
    assert check.ratio == pytest.approx(164_594_398 / 151_074_499, rel=1e-8)


def test_without_tokens_or_family_there_is_nothing_to_compute() -> None:
    assert check_denominator(2.0, 1.0, 8, None, None) is None
    assumed = check_denominator(2.0, _bpb(40_540_160, 2.0, 151_078_222), 8, "sp8192", None)
    assert assumed is not None and assumed.tokens_assumed and assumed.status == "match"


@pytest.mark.parametrize(
    "facts, family",
    [
        (TokenizerFacts(sidecar_enabled=True), "caseops_sp8192"),
        (
            TokenizerFacts(tokenizer_path="./t/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model"),
            "caseops_sp8192",
        ),
        (TokenizerFacts(tokenizer_path="./data/tokenizers/fineweb_4096_bpe.model"), "sp4096"),
        (TokenizerFacts(tokenizer_kind="tokenmonster", vocab_size=998), None),
        (TokenizerFacts(tokenizer_path="./candidate.vocab", vocab_size=1024), None),
        (TokenizerFacts(data_paths=["./data/datasets/fineweb10B_sp1024/fineweb_val_*.bin"]), "sp1024"),
        (TokenizerFacts(val_tokens=40_540_160), "sp8192"),
        (TokenizerFacts(), None),
    ],
)
def test_family_detection(facts: TokenizerFacts, family: str | None) -> None:
    assert family_of(facts).family == family


def test_tokenizer_facts_ignore_embedded_source() -> None:
    text = (
        "\n".join(
            [
                "import os",
                'print(f"val_bpb:byte_sidecar:enabled")',
                "=" * 20,
                "val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path=./data/tokenizers/fineweb_1024_bpe.model",
                "val_loader:shards pattern=./data/datasets/fineweb10B_sp1024/fineweb_val_*.bin tokens:62021632",
                "final_int8_zlib_roundtrip_exact val_loss:2.05000000 val_bpb:1.21412869",
            ]
        )
        + "\n"
    )
    from auditor.evidence.bytes_implied import tokenizer_facts

    facts = tokenizer_facts(parse_log(text, "train.log"))
    assert (
        facts.tokenizer_path == "./data/tokenizers/fineweb_1024_bpe.model" and facts.val_tokens == 62_021_632
    )
    assert family_of(facts).family == "sp1024"


# -- fixtures: whole audits -----------------------------------------------------------------------------------
def _verdicts(path: Path) -> dict[str, Verdict]:
    report = audit(load_path(path), select_rules(BYTE_RULES))
    return {rv.rule_id: rv.gating_verdict for rv in report.per_rule()}


def _finding(path: Path, rule: str):
    report = audit(load_path(path), select_rules([rule]))
    return next(f for f in report.findings if f.rule_id == rule and f.verdict in (Verdict.FAIL, Verdict.WARN))


def test_caseops_piece_bytes_fixture(fixtures_dir: Path) -> None:
    d = fixtures_dir / "bytes_caseops_piece_bytes"
    v = _verdicts(d)
    assert v["PG701"] is Verdict.FAIL and v["PG713"] is Verdict.FAIL
    assert v["PG702"] is Verdict.PASS and v["PG703"] is Verdict.PASS and v["PG711"] is Verdict.PASS
    f = _finding(d, "PG701")
    assert (
        f.primary.path == "train_seed0.log" and f.primary.line == 8
    )  # the score line, not the diagnostic one
    assert "164,594,398" in f.message and "1.0568958" in f.message and "CaseOps piece-bytes" in f.message
    g = _finding(d, "PG713")
    assert g.primary.path == "train_gpt.py" and "len(piece.encode" in g.primary.snippet


def test_sidecar_fixture_is_clean(fixtures_dir: Path) -> None:
    v = _verdicts(fixtures_dir / "bytes_sidecar_legal")
    assert v["PG701"] is Verdict.PASS and v["PG713"] is Verdict.PASS and v["PG703"] is Verdict.PASS
    assert Verdict.FAIL not in v.values() and Verdict.WARN not in v.values()


def test_byte_fallback_fixture(fixtures_dir: Path) -> None:
    d = fixtures_dir / "bytes_byte_fallback_3"
    v = _verdicts(d)
    assert v["PG701"] is Verdict.FAIL and v["PG711"] is Verdict.FAIL
    assert v["PG712"] is Verdict.SKIP  # decode() text carries no "▁": the space is not double-counted
    f = _finding(d, "PG701")
    assert f.primary.line == 6 and "153,693,958" in f.message  # the _exact line, not the 4-decimal twin
    g = _finding(d, "PG711")
    assert g.primary.path == "train_gpt.py" and "text.encode" in g.primary.snippet


def test_double_space_fixture(fixtures_dir: Path) -> None:
    d = fixtures_dir / "bytes_double_space"
    v = _verdicts(d)
    assert v["PG712"] is Verdict.FAIL and v["PG701"] is Verdict.FAIL and v["PG711"] is Verdict.PASS
    assert "off by ×1.4882" in _finding(d, "PG701").message  # +48.83%, as measured on the 200 docs


def test_truncated_val_fixture(fixtures_dir: Path) -> None:
    d = fixtures_dir / "truncated_val"
    v = _verdicts(d)
    assert v["PG702"] is Verdict.FAIL and v["PG703"] is Verdict.FAIL
    assert v["PG701"] is Verdict.SKIP  # a denominator over a foreign val set means nothing
    f = _finding(d, "PG703")
    assert f.primary.line == 7 and "9,662,464" in f.message and "1499" in f.message


def test_non_record_slice_is_a_warning_not_a_failure() -> None:
    files = {
        "train_gpt.py": "print(1)\n",
        "train.log": "val_loader:shards pattern=./data/datasets/fineweb10B_sp1024/fineweb_val_*.bin tokens:65536\n"
        "final_int8_zlib_roundtrip_exact val_loss:2.29290000 val_bpb:1.35568780\n",
    }
    report = audit(submission_from_files(files), select_rules(["PG702"]))
    assert report.per_rule()[0].gating_verdict is Verdict.FAIL
    files["submission.json"] = '{"track": "non_record_16mb"}'
    report = audit(submission_from_files(files), select_rules(["PG702"]))
    assert report.per_rule()[0].gating_verdict is Verdict.WARN


# -- side-file LUTs ----------------------------------------------------------------------------------------------
def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _tokenmonster_vocab(tokens: list[bytes]) -> bytes:
    """A vocab in the TokenMonster binary layout the reader expects (header, then one record per token)."""
    out = bytearray(b"\x02\x01\x01\x01" + bytes(20))
    for i, tok in enumerate(tokens):
        out += (
            bytes([len(tok)])
            + tok
            + b"\x80\x00"
            + b"\xff" * 6
            + i.to_bytes(3, "little")
            + struct.pack("<f", 0.1)
        )
    return bytes(out)


_LOADER = """
import numpy as np
def load_luts(path):
    with np.load(path, allow_pickle=False) as meta:
        return meta["base_bytes"], meta["has_leading_space"], meta["is_boundary_token"]
"""


def test_side_file_lut_with_byte_fallback_at_3_bytes_fails() -> None:
    tokens = [bytes([b]) for b in range(256)] + [b" the", b"ing"]
    wrong = np.array([3 if i >= 0x80 and i < 256 else len(t) for i, t in enumerate(tokens)], dtype=np.int16)
    assert tokenmonster_single_bytes(_tokenmonster_vocab(tokens)) == {i: i for i in range(256)}
    files = {
        "train_gpt.py": _LOADER.lstrip(),
        "cand.vocab": _tokenmonster_vocab(tokens),
        "cand.meta.npz": _npz(base_bytes=wrong),
    }
    report = audit(submission_from_files(files), select_rules(["PG714"]))
    f = next(f for f in report.findings if f.rule_id == "PG714")
    assert f.verdict is Verdict.FAIL and f.primary.line == 3
    assert "128 of the 128 single-byte tokens" in f.message and "base_bytes 3 instead of 1" in f.message
    right = wrong.copy()
    right[0x80:256] = 1
    files["cand.meta.npz"] = _npz(base_bytes=right)
    report = audit(submission_from_files(files), select_rules(["PG714"]))
    assert report.per_rule()[0].gating_verdict is Verdict.PASS


def test_side_file_lut_against_a_shipped_sentencepiece_model(shared_dir: Path) -> None:
    from pgolf_data.bytes import build_luts, load_sentencepiece

    model = (shared_dir / "data" / "fineweb_1024_bpe.model").read_bytes()
    luts = build_luts(load_sentencepiece(shared_dir / "data" / "fineweb_1024_bpe.model"))
    sub = submission_from_files({"t.model": model, "t.meta.npz": _npz(base_bytes=luts.base_bytes)})
    assert [c.status for c in check_lut_files(sub)] == ["agrees"]
    bad = luts.base_bytes.copy()
    bad[luts.is_byte] = 3
    sub = submission_from_files({"t.model": model, "t.meta.npz": _npz(base_bytes=bad)})
    (check,) = check_lut_files(sub)
    assert check.status == "wrong" and "at 256 ids" in check.message


def test_side_file_without_tokenizer_is_a_warning_and_pickles_are_not_loaded() -> None:
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    files = {"train_gpt.py": _LOADER, "x.npz": b"not a zip", "y.npy": pickled.getvalue()}
    report = audit(submission_from_files(files), select_rules(["PG714"]))
    f = next(f for f in report.findings if f.rule_id == "PG714")
    assert f.verdict is Verdict.WARN and "cannot be verified statically" in f.message


# -- the real DEV-009 row (Scylla, PR #1184) -------------------------------------------------------------------------
@pytest.mark.corpus
def test_dev_009_scylla_fails_on_both_evidence_paths() -> None:
    if not MIRROR.exists():
        pytest.skip("no local mirror of openai/parameter-golf (set PGOLF_REPO)")
    sub = load_git(
        MIRROR,
        "4cbc43f290f4cf4efde795163b3e8db9f86dfaf8",
        "records/track_10min_16mb/2026-03-31_Scylla_FullGPTQ_XSA11_FA3_0.9485",
    )
    report = audit(sub, select_rules(BYTE_RULES))
    v = {rv.rule_id: rv.gating_verdict for rv in report.per_rule()}
    assert v["PG701"] is Verdict.FAIL and v["PG714"] is Verdict.FAIL
    pg714 = next(f for f in report.findings if f.rule_id == "PG714")
    assert "27 of the 27" in pg714.message and pg714.data["bad_ids"][0] == 75


def test_a_wrong_non_score_line_is_a_warning_when_the_score_is_right() -> None:
    good = _bpb(40_540_160, 2.8, 151_078_222)
    partial = _bpb(40_540_160, 2.9, 150_000_000)
    log = (
        "val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path=./data/tokenizers/fineweb_8192_bpe.model\n"
        "val_tokens: 40540160\n"
        f"quantized val_loss:2.90000000 val_bpb:{partial:.8f} eval_time:9000ms\n"
        f"quantized_sliding_window val_loss:2.80000000 val_bpb:{good:.8f} eval_time:90000ms\n"
    )
    report = audit(
        submission_from_files({"train_gpt.py": "print(1)\n", "train.log": log}), select_rules(["PG701"])
    )
    (finding,) = report.findings
    assert finding.verdict is Verdict.WARN and finding.primary.line == 3
    assert "`quantized_sliding_window` has the canonical denominator" in finding.message
