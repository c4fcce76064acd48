"""jsonl -> challenge shards: the 200 real documents reproduce the derived shards byte for byte."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pgolf_data.bytes import build_luts, load_sentencepiece, token_bytes
from pgolf_data.shards import HEADER_BYTES, load_concatenated, read_header, read_shard, write_shard
from reference_model.cli import main as cli_main
from reference_model.tokenize import tokenize_jsonl

EXPECTED = {"1024": 628_457, "8192": 420_548}  # shared/data/README.md
CANONICAL_BYTES = 1_489_418


@pytest.mark.parametrize("vocab", ["1024", "8192"])
def test_tokenize_reproduces_the_derived_shards(shared_dir, tmp_path, vocab):
    data = shared_dir / "data"
    report = tokenize_jsonl(
        data / "fineweb_docs_sample200.jsonl", data / f"fineweb_{vocab}_bpe.model", tmp_path, sidecar=True
    )
    assert report.docs == 200 and report.tokens == EXPECTED[vocab] and len(report.shards) == 1
    ours = (tmp_path / "fineweb_val_000000.bin").read_bytes()
    assert ours == (data / f"derived_docs_sample200_sp{vocab}.bin").read_bytes()
    assert report.lut_bytes == CANONICAL_BYTES
    sidecar = np.asarray(load_concatenated(report.sidecars, exclude_sidecars=False))
    assert sidecar.size == report.tokens and int(sidecar.sum()) == CANONICAL_BYTES and sidecar[0] == 0


def test_every_document_starts_with_bos_and_has_no_eos(shared_dir, tmp_path):
    data = shared_dir / "data"
    sp = load_sentencepiece(data / "fineweb_8192_bpe.model")
    report = tokenize_jsonl(
        data / "fineweb_docs_sample200.jsonl", data / "fineweb_8192_bpe.model", tmp_path, limit=3
    )
    toks = np.asarray(read_shard(report.shards[0]))
    assert report.docs == 3 and int((toks == sp.bos_id()).sum()) == 3 and toks[0] == sp.bos_id()
    assert sp.eos_id() < 0 or int((toks == sp.eos_id()).sum()) == 0


def test_small_shards_split_the_same_stream_and_sidecars_cross_shard_edges(shared_dir, tmp_path):
    data = shared_dir / "data"
    model = data / "fineweb_8192_bpe.model"
    report = tokenize_jsonl(
        data / "fineweb_docs_sample200.jsonl", model, tmp_path, shard_tokens=100_000, sidecar=True
    )
    assert [read_header(p).num_tokens for p in report.shards] == [100_000] * 4 + [20_548]
    stream = np.asarray(load_concatenated(str(tmp_path / "fineweb_val_*.bin")))  # sidecars excluded by name
    assert np.array_equal(stream, np.asarray(read_shard(data / "derived_docs_sample200_sp8192.bin")))
    sidecar = np.asarray(load_concatenated(report.sidecars, exclude_sidecars=False))
    luts = build_luts(load_sentencepiece(model))
    assert np.array_equal(
        sidecar[1:], token_bytes(stream, luts)
    )  # token i's bytes given token i-1, any shard


def test_shard_round_trip(tmp_path):
    tokens = np.array([1, 0, 65535, 42, 8191], dtype=np.int64)
    size = write_shard(tmp_path / "s.bin", tokens)
    assert size == HEADER_BYTES + 2 * tokens.size == (tmp_path / "s.bin").stat().st_size
    header = read_header(tmp_path / "s.bin")
    assert (header.magic, header.version, header.num_tokens) == (20240520, 1, 5)
    assert np.array_equal(read_shard(tmp_path / "s.bin"), tokens)


def test_cli_tokenize_prints_a_json_summary(shared_dir, tmp_path, capsys):
    data = shared_dir / "data"
    rc = cli_main(
        [
            "tokenize",
            str(data / "fineweb_docs_sample200.jsonl"),
            "--tokenizer",
            str(data / "fineweb_1024_bpe.model"),
            "--out",
            str(tmp_path),
            "--limit",
            "5",
            "--no-progress",
        ]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["command"] == "tokenize" and summary["docs"] == 5 and summary["vocab_size"] == 1024


def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"text": "hello"}\n')
    rc = cli_main(
        [
            "tokenize",
            str(jsonl),
            "--tokenizer",
            str(tmp_path / "missing.model"),
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
        ]
    )
    assert rc == 2
    assert "missing.model" in capsys.readouterr().err
