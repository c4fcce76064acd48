"""Turn a `{"text": ...}` jsonl into challenge shards with a SentencePiece model.

The stream is what the challenge's exporter writes (rules.md §C, data/download_hf_docs_and_tokenize.py):
`[BOS] + sp.encode(text)` per document, no EOS, concatenated and cut into shards of the challenge format
(256 x int32 header [20240520, 1, n, 0...] + uint16 tokens). An optional per-token byte sidecar (rules.md §B.4)
stores, for each token, the canonical bytes it contributes when it is a scored target (0 for BOS), so an
evaluation can use the sidecar in place of the tokenizer LUT and get the same denominator.

Shard reading/writing and the byte LUTs are the auditor's own (`auditor.shards`, `auditor.evidence.bytes_canonical`);
this module only drives them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pgolf_data.bytes import build_luts, iter_docs, load_sentencepiece, token_bytes
from pgolf_data.shards import write_shard

DEFAULT_SHARD_TOKENS = 100_000_000  # the challenge exports 100M-token shards


@dataclass
class TokenizeReport:
    docs: int = 0
    tokens: int = 0
    shards: list[str] = field(default_factory=list)
    sidecars: list[str] = field(default_factory=list)
    lut_bytes: int = (
        0  # Σ canonical bytes of every target in the stream (what an eval of all of it divides by)
    )
    vocab_size: int = 0
    bos_id: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def encode_document(sp: Any, text: str, bos_id: int) -> np.ndarray:
    """One document as the challenge streams it: BOS, then the pieces, no EOS."""
    ids = sp.encode(text)
    out = np.empty(len(ids) + 1, dtype=np.int64)
    out[0] = bos_id
    out[1:] = ids
    return out


def _iter_encoded(sp: Any, jsonl: Path, limit: int | None, bos_id: int) -> Iterator[np.ndarray]:
    for text in iter_docs(jsonl, limit):
        yield encode_document(sp, text, bos_id)


def tokenize_jsonl(
    jsonl: str | os.PathLike[str],
    tokenizer: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    prefix: str = "fineweb_val",
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    limit: int | None = None,
    sidecar: bool = False,
    progress: Callable[[int], None] | None = None,
) -> TokenizeReport:
    """Tokenize every document and write `<prefix>_000000.bin`, ... (and `<prefix>_bytes_000000.bin` sidecars).

    Shards are cut at exactly `shard_tokens` tokens (documents may straddle shards, as in the challenge export),
    so the concatenation of the shards is the whole stream whatever the shard size.
    """
    if shard_tokens <= 0:
        raise ValueError("shard_tokens must be positive")
    sp = load_sentencepiece(tokenizer)
    bos_id = int(sp.bos_id())
    if bos_id < 0:
        raise ValueError(f"{tokenizer}: the tokenizer has no BOS id; the challenge stream needs one")
    vocab = int(sp.vocab_size())
    if vocab > 1 << 16:
        raise ValueError(f"vocab size {vocab} does not fit the uint16 shard payload")
    luts = build_luts(sp) if sidecar else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = TokenizeReport(vocab_size=vocab, bos_id=bos_id)

    pending: list[np.ndarray] = []
    pending_len = 0
    prev_tail: int | None = (
        None  # last token of the previous shard: the `prev` of the next shard's first token
    )

    def flush(final: bool) -> None:
        nonlocal pending, pending_len, prev_tail
        while pending_len >= shard_tokens or (final and pending_len > 0):
            stream = np.concatenate(pending)
            take = stream[: min(shard_tokens, stream.size)]
            rest = stream[take.size :]
            index = len(report.shards)
            path = out / f"{prefix}_{index:06d}.bin"
            write_shard(path, take)
            report.shards.append(str(path))
            if luts is not None:
                report.sidecars.append(str(_write_sidecar(out, prefix, index, take, prev_tail, luts)))
            prev_tail = int(take[-1])
            pending = [rest] if rest.size else []
            pending_len = int(rest.size)

    for doc in _iter_encoded(sp, Path(jsonl), limit, bos_id):
        pending.append(doc)
        pending_len += doc.size
        report.docs += 1
        report.tokens += doc.size
        if progress is not None:
            progress(1)
        if pending_len >= shard_tokens:
            flush(final=False)
    flush(final=True)
    if report.shards:
        report.lut_bytes = _stream_lut_bytes(report.shards, sp)
    return report


def _write_sidecar(
    out: Path, prefix: str, index: int, tokens: np.ndarray, prev_tail: int | None, luts: Any
) -> Path:
    """bytes[i] = canonical bytes of token i as a target (given the token before it, across shard edges)."""
    if prev_tail is None:
        per = np.concatenate([[0], token_bytes(tokens, luts)])  # the stream's first token is never a target
    else:
        per = token_bytes(np.concatenate([[prev_tail], tokens]), luts)
    path = out / f"{prefix}_bytes_{index:06d}.bin"
    write_shard(path, per.astype(np.int64))
    return path


def _stream_lut_bytes(shards: list[str], sp: Any) -> int:
    from pgolf_data.shards import load_concatenated

    stream = load_concatenated(shards)
    return int(token_bytes(np.asarray(stream, dtype=np.int64), build_luts(sp)).sum())
