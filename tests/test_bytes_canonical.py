"""Canonical byte accounting: the challenge's LUT formula, sidecars, truncation, and the real 200-doc totals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from auditor.constants import CASEOPS_SENTINELS
from pgolf_data.bytes import (
    ByteAccountingError,
    build_luts,
    canonical_denominator,
    check_against_text,
    decoded_bytes,
    docs_bytes,
    encode_docs,
    iter_docs,
    load_sentencepiece,
    pair_bytes,
    token_bytes,
)
from pgolf_data.shards import read_shard


class FakeSP:
    """A tiny SentencePiece stand-in: 0 pad, 1 BOS (control), 2 unk, 3 unused, 4 <0xC3>, 5 "▁a", 6 "é", 7 "▁"."""

    pieces = ["<pad>", "<s>", "<unk>", "<unused>", "<0xC3>", "\u2581a", "\u00e9", "\u2581"]

    def vocab_size(self) -> int:
        return len(self.pieces)

    def is_control(self, i: int) -> bool:
        return i in (0, 1)

    def is_unknown(self, i: int) -> bool:
        return i == 2

    def is_unused(self, i: int) -> bool:
        return i == 3

    def is_byte(self, i: int) -> bool:
        return i == 4

    def id_to_piece(self, i: int) -> str:
        return self.pieces[i]


def test_lut_values_follow_the_challenge_formula() -> None:
    luts = build_luts(FakeSP(), vocab_size=10)
    assert luts.table_size == 10 and luts.sp_vocab_size == 8
    # control/unknown/unused: 0 bytes, boundaries; byte-fallback: 1 byte (not len("<0xC3>") nor U+FFFD's 3)
    assert luts.base_bytes.tolist() == [0, 0, 0, 0, 1, 1, 2, 0, 0, 0]
    assert luts.has_leading_space.tolist() == [False] * 5 + [True, False, True, False, False]
    assert luts.is_boundary.tolist() == [True, True, True, True, False, False, False, False, True, True]
    assert luts.is_byte.tolist() == [False] * 4 + [True] + [False] * 5


def test_leading_space_is_charged_unless_previous_token_is_a_boundary() -> None:
    luts = build_luts(FakeSP())
    # BOS "▁a" "▁a" é BOS "▁" <0xC3>
    stream = np.array([1, 5, 5, 6, 1, 7, 4])
    per = token_bytes(stream, luts)
    assert per.tolist() == [
        1,
        2,
        2,
        0,
        0,
        1,
    ]  # "▁a" after BOS: 1; after "▁a": 2; BOS target: 0; "▁" after BOS: 0
    assert (
        pair_bytes(stream[:-1].reshape(2, 3), stream[1:].reshape(2, 3), luts).ravel().tolist() == per.tolist()
    )


def test_ids_outside_the_table_are_an_error_not_a_zero() -> None:
    with pytest.raises(ByteAccountingError, match="outside the LUT"):
        token_bytes(np.array([1, 5, 99]), build_luts(FakeSP()))


def test_truncation_and_sidecar_replace_the_lut() -> None:
    luts = build_luts(FakeSP())
    stream = np.array([1, 5, 5, 6, 1, 5, 5])  # 7 tokens; seq_len 4 keeps ((7-1)//4)*4+1 = 5 tokens, 4 targets
    full = canonical_denominator(stream, luts)
    assert (full.targets, full.denominator) == (6, 1 + 2 + 2 + 0 + 1 + 2)
    cut = canonical_denominator(stream, luts, seq_len=4)
    assert (cut.tokens_kept, cut.targets, cut.denominator, cut.tail_bytes_dropped) == (5, 4, 5, 3)
    sidecar = np.array([0, 1, 2, 2, 0, 1, 2])
    side = canonical_denominator(stream, luts, sidecar=sidecar, seq_len=4)
    assert (side.source, side.denominator, side.lut_bytes, side.lut_minus_sidecar) == ("sidecar", 5, 5, 0)
    with pytest.raises(ByteAccountingError, match="shorter than the stream"):
        canonical_denominator(stream, luts, sidecar=sidecar[:5])
    with pytest.raises(ByteAccountingError, match="need a tokenizer LUT or a byte sidecar"):
        canonical_denominator(stream)


@pytest.fixture(scope="module")
def data(shared_dir: Path) -> Path:
    return shared_dir / "data"


@pytest.mark.parametrize("vocab, tokens", [("1024", 628_457), ("8192", 420_548)])
def test_real_totals_on_the_200_docs(data: Path, vocab: str, tokens: int) -> None:
    sp = load_sentencepiece(data / f"fineweb_{vocab}_bpe.model")
    luts = build_luts(sp)
    stream = read_shard(data / f"derived_docs_sample200_sp{vocab}.bin")
    assert len(stream) == tokens
    # the derived shard is exactly the challenge's val stream for these docs
    assert np.array_equal(encode_docs(iter_docs(data / "fineweb_docs_sample200.jsonl"), sp), stream)
    report = canonical_denominator(stream, luts)
    assert report.denominator == 1_489_418 and report.boundary_targets == 199
    raw = docs_bytes(data / "fineweb_docs_sample200.jsonl")
    assert (raw.docs, raw.raw_bytes) == (200, 1_489_515)
    agreement = check_against_text(stream, sp, luts, raw.raw_bytes)
    assert agreement.decoded_bytes == 1_489_418 and agreement.lut_vs_decoded == 0
    assert agreement.decoded_vs_raw == -97 and agreement.problems() == []


def test_counting_byte_fallback_pieces_by_their_text_inflates_the_total(data: Path) -> None:
    sp = load_sentencepiece(data / "fineweb_1024_bpe.model")
    luts = build_luts(sp)
    stream = read_shard(data / "derived_docs_sample200_sp1024.bin")
    # the Scylla bug class: a byte-fallback id counted as len('\ufffd'.encode()) = 3 instead of 1
    wrong = luts.base_bytes.copy()
    wrong[luts.is_byte] = 3
    ys = np.asarray(stream[1:])
    inflated = int(token_bytes(stream, luts).sum()) + 2 * int(luts.is_byte[ys].sum())
    assert inflated > 1_489_418
    per_wrong = wrong[ys].astype(np.int64) + (
        luts.has_leading_space[ys] & ~luts.is_boundary[np.asarray(stream[:-1])]
    )
    assert int(per_wrong.sum()) == inflated


def test_caseops_piece_bytes_overcount_and_sidecar_is_exact(data: Path) -> None:
    sp = load_sentencepiece(data / "fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model")
    luts = build_luts(sp)
    title, allcaps = CASEOPS_SENTINELS[0], CASEOPS_SENTINELS[1]
    original = "The BBC said John went home."
    # our own minimal case transform (markers before a lowercased word), enough for ASCII text
    transformed = f"{title}the {allcaps}bbc said {title}john went home."
    stream = encode_docs([transformed], sp)
    marker_ids = {sp.piece_to_id(s) for s in CASEOPS_SENTINELS}
    per = token_bytes(stream, luts)
    sidecar = np.concatenate([[0], np.where(np.isin(stream[1:], list(marker_ids)), 0, per)])
    report = canonical_denominator(stream, luts, sidecar=sidecar)
    assert report.sidecar_bytes == len(original.encode("utf-8"))
    assert report.lut_bytes == report.sidecar_bytes + 3 * 3  # three 3-byte private-use sentinels
    assert decoded_bytes(stream, sp) == len(transformed.encode("utf-8")) == report.lut_bytes


def test_bad_jsonl_is_a_message(tmp_path: Path) -> None:
    bad = tmp_path / "docs.jsonl"
    bad.write_text('{"text": "ok"}\n{"txt": 1}\n', encoding="utf-8")
    with pytest.raises(ByteAccountingError, match=r"docs.jsonl:2: no string \"text\""):
        docs_bytes(bad)
    with pytest.raises(ByteAccountingError, match="no such tokenizer model"):
        load_sentencepiece(tmp_path / "missing.model")


def test_command_line_reports_the_denominator(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from pgolf_data.bytes import main

    args = [
        "--model",
        str(data / "fineweb_1024_bpe.model"),
        "--shards",
        str(data / "derived_docs_sample200_sp1024.bin"),
    ]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["denominator"] == out["decoded_bytes"] == 1_489_418 and out["problems"] == []
    assert main(["--model", str(tmp_path / "none.model"), "--shards", "x"]) == 2
    assert "no such tokenizer model" in capsys.readouterr().err
