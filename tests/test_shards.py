"""The challenge shard format: round trip, the strict checks of load_data_shard, real derived shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pgolf_data.shards import (
    HEADER_BYTES,
    SHARD_MAGIC,
    ShardError,
    load_concatenated,
    read_header,
    read_shard,
    truncated_length,
    write_shard,
)


def test_round_trip_is_byte_exact(tmp_path: Path) -> None:
    tokens = np.array([1, 896, 65535, 0, 7], dtype=np.int64)
    path = tmp_path / "fineweb_val_000000.bin"
    size = write_shard(path, tokens)
    assert size == path.stat().st_size == HEADER_BYTES + 2 * len(tokens)
    raw = path.read_bytes()
    header = np.frombuffer(raw[:HEADER_BYTES], dtype="<i4")
    assert header[:3].tolist() == [SHARD_MAGIC, 1, 5] and not header[3:].any()
    assert np.frombuffer(raw[HEADER_BYTES:], dtype="<u2").tolist() == tokens.tolist()
    for mmap in (True, False):
        back = read_shard(path, mmap=mmap)
        assert back.dtype == np.dtype("<u2") and back.tolist() == tokens.tolist()
        assert not back.flags.writeable


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b[:100], "shorter than"),
        (lambda b: (20240521).to_bytes(4, "little") + b[4:], "magic 20240521"),
        (lambda b: b[:4] + (2).to_bytes(4, "little") + b[8:], "version 2"),
        (lambda b: b + b"\x00\x00", "does not match the header"),
        (lambda b: b[:-2], "does not match the header"),
        (lambda b: b[:8] + (-3).to_bytes(4, "little", signed=True) + b[12:], "negative token count"),
    ],
)
def test_strict_validation_names_the_failed_check(tmp_path: Path, mutate, message: str) -> None:
    good = tmp_path / "good.bin"
    write_shard(good, [1, 2, 3])
    bad = tmp_path / "bad.bin"
    bad.write_bytes(mutate(good.read_bytes()))
    with pytest.raises(ShardError, match=message):
        read_shard(bad)


def test_write_refuses_ids_outside_uint16(tmp_path: Path) -> None:
    with pytest.raises(ShardError, match="65535"):
        write_shard(tmp_path / "x.bin", [1, 70000])
    with pytest.raises(ShardError, match="one-dimensional"):
        write_shard(tmp_path / "x.bin", np.zeros((2, 2), dtype=np.int64))


def test_glob_concatenates_sorted_and_skips_byte_sidecars(tmp_path: Path) -> None:
    write_shard(tmp_path / "fineweb_val_000001.bin", [5, 6])
    write_shard(tmp_path / "fineweb_val_000000.bin", [1, 2, 3])
    write_shard(tmp_path / "fineweb_val_bytes_000000.bin", [0, 9, 9])
    assert load_concatenated(str(tmp_path / "fineweb_val_*.bin")).tolist() == [1, 2, 3, 5, 6]
    side = load_concatenated(str(tmp_path / "fineweb_val_bytes_*.bin"), exclude_sidecars=False)
    assert side.tolist() == [0, 9, 9]
    with pytest.raises(ShardError, match="no shard matches"):
        load_concatenated(str(tmp_path / "nothing_*.bin"))


def test_truncation_rule_matches_load_validation_tokens() -> None:
    # ((N-1)//seq_len)*seq_len + 1: the canonical sp8192 stream keeps 40,540,160 targets at 2048 (rules.md §0)
    assert truncated_length(40_540_803, 2048) == 40_540_161
    assert truncated_length(2049, 2048) == 2049
    assert truncated_length(2048, 2048) == 1
    assert truncated_length(0, 2048) == 0


def test_real_derived_shards(shared_dir: Path) -> None:
    data = shared_dir / "data"
    for name, count in (
        ("derived_docs_sample200_sp1024.bin", 628_457),
        ("derived_docs_sample200_sp8192.bin", 420_548),
    ):
        header = read_header(data / name)
        assert header.num_tokens == count and header.extra_nonzero == 0
        tokens = read_shard(data / name)
        assert len(tokens) == count and int(tokens[0]) == 1 and int((tokens == 1).sum()) == 200
