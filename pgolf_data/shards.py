"""The challenge's token shard format: read (memory-mapped, strictly validated) and write.

Layout (rules.md §C; data/download_hf_docs_and_tokenize.py, `load_data_shard` in the baseline train_gpt.py):
a header of 256 little-endian int32 — [0] = magic 20240520, [1] = version 1, [2] = number of tokens, the rest 0 —
then that many little-endian uint16 tokens. The challenge's reader refuses a file whose size is not exactly
1024 + 2·num_tokens or whose magic/version differ; `read_shard` is as strict, and says what is wrong instead of
raising a bare assertion. CaseOps byte sidecars (`fineweb_val_bytes_*.bin`, rules.md §B.4) use the same format.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# The challenge's shard format (data/download_hf_docs_and_tokenize.py; shared/docs/rules.md §C).
SHARD_MAGIC = 20240520  # header[0]
SHARD_VERSION = 1  # header[1]
SHARD_HEADER_INTS = 256

HEADER_BYTES = SHARD_HEADER_INTS * 4
TOKEN_DTYPE = np.dtype("<u2")
HEADER_DTYPE = np.dtype("<i4")


class ShardError(ValueError):
    """A file that is not a valid challenge shard (the message says which check failed)."""


@dataclass(frozen=True)
class ShardHeader:
    magic: int
    version: int
    num_tokens: int
    extra_nonzero: int  # header slots 3..255 that are not 0 (the exporter writes zeros)


def read_header(path: str | os.PathLike[str]) -> ShardHeader:
    p = Path(path)
    try:
        with p.open("rb") as fh:
            raw = fh.read(HEADER_BYTES)
    except OSError as exc:
        raise ShardError(f"{p}: cannot read: {exc.strerror or exc}") from None
    if len(raw) < HEADER_BYTES:
        raise ShardError(f"{p}: {len(raw)} bytes is shorter than the {HEADER_BYTES}-byte shard header")
    header = np.frombuffer(raw, dtype=HEADER_DTYPE, count=SHARD_HEADER_INTS)
    return ShardHeader(int(header[0]), int(header[1]), int(header[2]), int(np.count_nonzero(header[3:])))


def validate_header(path: str | os.PathLike[str], header: ShardHeader, file_size: int) -> None:
    """The checks of the challenge's `load_data_shard`, one message per failure."""
    p = Path(path)
    if header.magic != SHARD_MAGIC:
        raise ShardError(f"{p}: magic {header.magic} is not {SHARD_MAGIC} (not a challenge shard)")
    if header.version != SHARD_VERSION:
        raise ShardError(f"{p}: version {header.version} is not {SHARD_VERSION}")
    if header.num_tokens < 0:
        raise ShardError(f"{p}: negative token count {header.num_tokens} in the header")
    expected = HEADER_BYTES + TOKEN_DTYPE.itemsize * header.num_tokens
    if file_size != expected:
        raise ShardError(
            f"{p}: size {file_size} bytes does not match the header ({header.num_tokens} tokens -> "
            f"{expected} bytes)"
        )


def read_shard(path: str | os.PathLike[str], *, mmap: bool = True) -> np.ndarray:
    """The shard's tokens as a read-only uint16 array (memory-mapped unless `mmap=False`)."""
    p = Path(path)
    header = read_header(p)
    validate_header(p, header, p.stat().st_size)
    if header.num_tokens == 0:
        return np.zeros(0, dtype=TOKEN_DTYPE)
    if mmap:
        return np.memmap(p, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(header.num_tokens,))
    with p.open("rb") as fh:
        fh.seek(HEADER_BYTES)
        data = np.frombuffer(fh.read(), dtype=TOKEN_DTYPE)
    data.flags.writeable = False
    return data


def write_shard(path: str | os.PathLike[str], tokens: np.ndarray | list[int]) -> int:
    """Write tokens in the challenge format; returns the file size. Ids must fit uint16 (rules.md §C)."""
    arr = np.asarray(tokens)
    if arr.ndim != 1:
        raise ShardError(f"tokens must be one-dimensional, got shape {arr.shape}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= 1 << 16):
        raise ShardError("token ids must lie in [0, 65535] to fit the uint16 payload")
    if arr.size >= 1 << 31:
        raise ShardError("a shard holds fewer than 2^31 tokens")
    header = np.zeros(SHARD_HEADER_INTS, dtype=HEADER_DTYPE)
    header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, arr.size
    p = Path(path)
    with p.open("wb") as fh:
        fh.write(header.tobytes())
        fh.write(arr.astype(TOKEN_DTYPE, copy=False).tobytes())
    return HEADER_BYTES + TOKEN_DTYPE.itemsize * arr.size


def shard_files(pattern: str, *, exclude_sidecars: bool = True) -> list[Path]:
    """Sorted glob like the challenge's loader; byte sidecars (`_bytes_` in the name) are left out unless asked."""
    files = sorted(Path(f) for f in glob.glob(pattern))
    if exclude_sidecars:
        files = [f for f in files if "_bytes_" not in f.name]
    return files


def load_concatenated(
    pattern_or_paths: str | list[str | os.PathLike[str]], *, exclude_sidecars: bool = True
) -> np.ndarray:
    """All shards of a glob (or list), concatenated in sorted order, as the challenge's val loader does."""
    if isinstance(pattern_or_paths, str):
        paths = shard_files(pattern_or_paths, exclude_sidecars=exclude_sidecars)
        if not paths:
            raise ShardError(f"no shard matches {pattern_or_paths}")
    else:
        paths = [Path(p) for p in pattern_or_paths]
    parts = [read_shard(p) for p in paths]
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts)


def truncated_length(num_tokens: int, seq_len: int) -> int:
    """Tokens kept by `load_validation_tokens`: ((N-1)//seq_len)*seq_len + 1 (rules.md §B.1)."""
    if seq_len <= 0:
        raise ValueError("seq_len must be positive")
    if num_tokens < 1:
        return 0
    return ((num_tokens - 1) // seq_len) * seq_len + 1
