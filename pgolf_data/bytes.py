"""Canonical byte accounting for BPB: the challenge's SentencePiece byte LUTs, the CaseOps byte sidecar, and the
raw-text totals they must agree with.

The formula (rules.md §B.1, `build_sentencepiece_luts` in the baseline train_gpt.py): for a scored target y whose
previous input token is x,

    bytes(y) = base_bytes[y] + (has_leading_space[y] and not is_boundary[x])

with base_bytes 0 for control/unknown/unused ids, 1 for byte-fallback ids, otherwise the UTF-8 length of the piece
after stripping one leading "▁" (U+2581). For CaseOps data the per-token sidecar REPLACES the LUT (rules.md §B.4):
sidecar[i] is the number of original UTF-8 bytes token i stands for, and target i is charged sidecar[i].

The validation stream is truncated to ((N-1)//seq_len)*seq_len + 1 tokens before scoring (rules.md §B.1); the
canonical denominator is the sum over the N'-1 scored targets (rules.md §B.5).

Everything here is vectorized numpy; sentencepiece is imported only by `load_sentencepiece`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pgolf_data.shards import truncated_length

LEADING_SPACE = "\u2581"  # SentencePiece's "▁"


class SentencePieceLike(Protocol):
    """The part of sentencepiece.SentencePieceProcessor the LUT builder reads (lets tests pass a fake)."""

    def vocab_size(self) -> int: ...
    def is_control(self, i: int) -> bool: ...
    def is_unknown(self, i: int) -> bool: ...
    def is_unused(self, i: int) -> bool: ...
    def is_byte(self, i: int) -> bool: ...
    def id_to_piece(self, i: int) -> str: ...


class ByteAccountingError(ValueError):
    """Inputs that cannot be accounted (ids outside the LUT, a short sidecar, a bad jsonl line)."""


@dataclass(frozen=True)
class ByteLUTs:
    """The challenge's three lookup tables (plus `is_byte`, kept for diagnostics), all of length `table_size`."""

    base_bytes: np.ndarray  # int16
    has_leading_space: np.ndarray  # bool
    is_boundary: np.ndarray  # bool: control / unknown / unused / padding ids past the SP vocab
    is_byte: np.ndarray  # bool: byte-fallback ids (<0xNN>)
    sp_vocab_size: int

    @property
    def table_size(self) -> int:
        return int(self.base_bytes.shape[0])


def load_sentencepiece(model_path: str | os.PathLike[str]) -> Any:
    """A SentencePieceProcessor for a .model file (clear message when the package or the file is missing)."""
    try:
        import sentencepiece as spm
    except ImportError as exc:  # pragma: no cover - environment dependent
        raise ByteAccountingError("the sentencepiece package is needed to read a tokenizer model") from exc
    p = Path(model_path)
    if not p.is_file():
        raise ByteAccountingError(f"{p}: no such tokenizer model")
    try:
        return spm.SentencePieceProcessor(model_file=str(p))
    except Exception as exc:  # sentencepiece raises RuntimeError/OSError on a bad model
        raise ByteAccountingError(f"{p}: not a SentencePiece model ({exc})") from None


def build_luts(sp: SentencePieceLike, vocab_size: int | None = None) -> ByteLUTs:
    """The challenge's LUTs for a SentencePiece model; `vocab_size` pads the table like the model's embedding."""
    sp_vocab = int(sp.vocab_size())
    size = max(sp_vocab, int(vocab_size or 0))
    base = np.zeros(size, dtype=np.int16)
    space = np.zeros(size, dtype=np.bool_)
    boundary = np.ones(size, dtype=np.bool_)  # padding ids beyond the SP vocab count as boundaries
    is_byte = np.zeros(size, dtype=np.bool_)
    for i in range(sp_vocab):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        boundary[i] = False
        if sp.is_byte(i):
            # one source byte, whatever "<0xNN>" or its U+FFFD rendering looks like (rules.md §A.10, Scylla)
            base[i] = 1
            is_byte[i] = True
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith(LEADING_SPACE):
            space[i] = True
            piece = piece[1:]
        base[i] = len(piece.encode("utf-8"))
    for arr in (base, space, boundary, is_byte):
        arr.flags.writeable = False
    return ByteLUTs(base, space, boundary, is_byte, sp_vocab)


def _as_ids(tokens: np.ndarray | Iterable[int], luts: ByteLUTs | None = None) -> np.ndarray:
    arr = np.asarray(tokens)
    if arr.ndim != 1:
        raise ByteAccountingError(f"token stream must be one-dimensional, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ByteAccountingError(f"token ids must be integers, got dtype {arr.dtype}")
    if luts is not None and arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= luts.table_size:
            raise ByteAccountingError(
                f"token id {hi if hi >= luts.table_size else lo} is outside the "
                f"LUT (table size {luts.table_size})"
            )
    return arr


def pair_bytes(prev: np.ndarray, target: np.ndarray, luts: ByteLUTs) -> np.ndarray:
    """bytes(y) for aligned arrays of previous tokens x and targets y (any equal shapes), as int64."""
    x = np.asarray(prev)
    y = np.asarray(target)
    if x.shape != y.shape:
        raise ByteAccountingError(f"prev and target shapes differ: {x.shape} vs {y.shape}")
    _as_ids(y.reshape(-1), luts)
    _as_ids(x.reshape(-1), luts)
    out = luts.base_bytes[y].astype(np.int64)
    out += luts.has_leading_space[y] & ~luts.is_boundary[x]
    return out


def token_bytes(tokens: np.ndarray | Iterable[int], luts: ByteLUTs) -> np.ndarray:
    """Per target position: element i is bytes(tokens[i+1]) given tokens[i] (length N-1, int64)."""
    arr = _as_ids(tokens, luts)
    if arr.size < 2:
        return np.zeros(0, dtype=np.int64)
    return pair_bytes(arr[:-1], arr[1:], luts)


# ---------------------------------------------------------------------------------------------------------------
@dataclass
class DenominatorReport:
    """Σ bytes over the scored targets of a validation stream, from the LUT and/or a sidecar."""

    tokens_total: int  # tokens in the stream as given
    tokens_kept: int  # after the seq_len truncation (= tokens_total without seq_len)
    targets: int  # scored targets = tokens_kept - 1 (what logs print as val_tokens)
    seq_len: int | None
    source: str  # "sidecar" when a sidecar was given (it replaces the LUT), else "lut"
    denominator: int  # the canonical byte count for these targets
    lut_bytes: int | None = None
    sidecar_bytes: int | None = None
    tail_targets_dropped: int = 0
    tail_bytes_dropped: int | None = None  # bytes of the targets the truncation removed (same source)
    boundary_targets: int | None = None  # targets that are BOS/control (0 bytes, CE still counted)
    byte_fallback_targets: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def lut_minus_sidecar(self) -> int | None:
        if self.lut_bytes is None or self.sidecar_bytes is None:
            return None
        return self.lut_bytes - self.sidecar_bytes

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lut_minus_sidecar"] = self.lut_minus_sidecar
        return d


def canonical_denominator(
    tokens: np.ndarray | Iterable[int],
    luts: ByteLUTs | None = None,
    sidecar: np.ndarray | Iterable[int] | None = None,
    seq_len: int | None = None,
) -> DenominatorReport:
    """The byte denominator of a validation stream as the challenge's eval computes it.

    With `seq_len`, the stream is first truncated to ((N-1)//seq_len)*seq_len + 1 tokens. A sidecar (one entry per
    token, aligned with `tokens`) replaces the LUT; when both are given the LUT total is reported alongside so a
    CaseOps piece-bytes denominator can be compared with the sidecar one.
    """
    arr = _as_ids(tokens, luts)
    if luts is None and sidecar is None:
        raise ByteAccountingError("need a tokenizer LUT or a byte sidecar to count bytes")
    n = int(arr.size)
    kept = truncated_length(n, seq_len) if seq_len else n
    targets = max(kept - 1, 0)
    report = DenominatorReport(
        tokens_total=n,
        tokens_kept=kept,
        targets=targets,
        seq_len=seq_len,
        source="sidecar" if sidecar is not None else "lut",
        denominator=0,
        tail_targets_dropped=max(n - 1, 0) - targets,
    )
    tail_lut = tail_side = None
    if luts is not None:
        per = token_bytes(arr, luts)
        report.lut_bytes = int(per[:targets].sum())
        tail_lut = int(per[targets:].sum())
        ys = arr[1:kept]
        report.boundary_targets = int(luts.is_boundary[ys].sum())
        report.byte_fallback_targets = int(luts.is_byte[ys].sum())
    if sidecar is not None:
        side = np.asarray(sidecar)
        if side.ndim != 1:
            raise ByteAccountingError(f"sidecar must be one-dimensional, got shape {side.shape}")
        if side.size < n:
            # the challenge's load_validation_byte_sidecar raises here too (rules.md §B.4)
            raise ByteAccountingError(
                f"sidecar has {side.size} entries for {n} tokens (shorter than the stream)"
            )
        if side.size > n:
            report.notes.append(f"sidecar has {side.size - n} more entries than the token stream; sliced")
        side = side[:n].astype(np.int64)
        report.sidecar_bytes = int(side[1:kept].sum())
        tail_side = int(side[kept:n].sum())
    if sidecar is not None:
        report.denominator, report.tail_bytes_dropped = int(report.sidecar_bytes or 0), tail_side
    else:
        report.denominator, report.tail_bytes_dropped = int(report.lut_bytes or 0), tail_lut
    return report


# ---------------------------------------------------------------------------------------------------------------
@dataclass
class DocsBytes:
    docs: int
    raw_bytes: int  # Σ len(text.encode("utf-8"))
    per_doc: list[int]


def iter_docs(jsonl: str | os.PathLike[str], limit: int | None = None) -> Iterator[str]:
    """The `text` of each `{"text": ...}` line of a docs jsonl (docs_selected.jsonl shape, rules.md §C)."""
    p = Path(jsonl)
    try:
        fh = p.open("r", encoding="utf-8")
    except OSError as exc:
        raise ByteAccountingError(f"{p}: cannot read: {exc.strerror or exc}") from None
    with fh:
        count = 0
        for lineno, line in enumerate(fh, 1):
            if limit is not None and count >= limit:
                return
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ByteAccountingError(f"{p}:{lineno}: not JSON ({exc.msg})") from None
            text = obj.get("text") if isinstance(obj, dict) else None
            if not isinstance(text, str):
                raise ByteAccountingError(f'{p}:{lineno}: no string "text" field')
            count += 1
            yield text


def docs_bytes(jsonl: str | os.PathLike[str], limit: int | None = None) -> DocsBytes:
    per = [len(t.encode("utf-8")) for t in iter_docs(jsonl, limit)]
    return DocsBytes(len(per), sum(per), per)


def encode_docs(texts: Iterable[str], sp: Any, bos_id: int | None = None) -> np.ndarray:
    """The challenge's val stream for these docs: [BOS] + encode(text) per doc, no EOS (rules.md §C)."""
    bos = int(sp.bos_id() if bos_id is None else bos_id)
    parts: list[np.ndarray] = []
    for text in texts:
        ids = sp.encode(text)
        parts.append(np.asarray([bos, *ids], dtype=np.int64))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def split_docs(tokens: np.ndarray, bos_id: int = 1) -> list[np.ndarray]:
    """The stream cut at each BOS (a doc = the tokens after its BOS, up to the next BOS)."""
    arr = np.asarray(tokens)
    starts = np.flatnonzero(arr == bos_id)
    docs = []
    for k, s in enumerate(starts):
        e = starts[k + 1] if k + 1 < len(starts) else arr.size
        docs.append(arr[s + 1 : e])
    return docs


def decoded_bytes(tokens: np.ndarray, sp: Any, bos_id: int | None = None) -> int:
    """Σ over docs of len(decode(doc).encode()): what the tokens actually spell (the lossless-proof quantity)."""
    bos = int(sp.bos_id() if bos_id is None else bos_id)
    return sum(len(sp.decode(d.tolist()).encode("utf-8")) for d in split_docs(tokens, bos))


@dataclass
class TextAgreement:
    """LUT total vs what decoding the tokens gives vs the raw text: the three should agree (rules.md §A.10)."""

    lut_bytes: int
    decoded_bytes: int
    raw_bytes: int | None
    sidecar_bytes: int | None = None

    @property
    def lut_vs_decoded(self) -> int:
        return self.lut_bytes - self.decoded_bytes

    @property
    def decoded_vs_raw(self) -> int | None:
        return None if self.raw_bytes is None else self.decoded_bytes - self.raw_bytes

    @property
    def sidecar_vs_raw(self) -> int | None:
        if self.sidecar_bytes is None or self.raw_bytes is None:
            return None
        return self.sidecar_bytes - self.raw_bytes

    def problems(self) -> list[str]:
        out = []
        if self.lut_vs_decoded:
            out.append(
                f"LUT bytes {self.lut_bytes:,} differ from decoded-text bytes {self.decoded_bytes:,} "
                f"by {self.lut_vs_decoded:+,}"
            )
        if self.sidecar_vs_raw:
            out.append(
                f"sidecar bytes {self.sidecar_bytes:,} differ from raw-text bytes {self.raw_bytes:,} "
                f"by {self.sidecar_vs_raw:+,}"
            )
        return out


def check_against_text(
    tokens: np.ndarray,
    sp: Any,
    luts: ByteLUTs | None = None,
    raw_bytes: int | None = None,
    sidecar: np.ndarray | None = None,
) -> TextAgreement:
    """Compare the LUT total over the whole stream (no truncation) with decoded and raw text bytes."""
    luts = luts or build_luts(sp)
    lut_total = int(token_bytes(tokens, luts).sum())
    side = int(np.asarray(sidecar)[1 : len(tokens)].astype(np.int64).sum()) if sidecar is not None else None
    return TextAgreement(lut_total, decoded_bytes(tokens, sp), raw_bytes, side)


# ---------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """`python -m pgolf_data.bytes --model M (--shards GLOB | --docs JSONL) [--sidecar GLOB]
    [--seq-len N]`: the canonical denominator of real data, as JSON."""
    import argparse
    import sys

    from pgolf_data.shards import ShardError, load_concatenated

    ap = argparse.ArgumentParser(prog="python -m pgolf_data.bytes", description=main.__doc__)
    ap.add_argument("--model", required=True, help="SentencePiece .model")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--shards", help="glob of token shards (e.g. .../fineweb_val_*.bin)")
    src.add_argument("--docs", help='jsonl of {"text": ...} documents, tokenized as [BOS] + encode(doc)')
    ap.add_argument(
        "--sidecar", help="glob of per-token byte sidecar shards (CaseOps fineweb_val_bytes_*.bin)"
    )
    ap.add_argument(
        "--seq-len", type=int, default=None, help="apply the ((N-1)//seq_len)*seq_len+1 truncation"
    )
    ap.add_argument("--vocab-size", type=int, default=None)
    args = ap.parse_args(argv)
    try:
        sp = load_sentencepiece(args.model)
        luts = build_luts(sp, args.vocab_size)
        raw = None
        if args.shards:
            tokens = load_concatenated(args.shards)
        else:
            texts = list(iter_docs(args.docs))
            raw = sum(len(t.encode("utf-8")) for t in texts)
            tokens = encode_docs(texts, sp)
        sidecar = load_concatenated(args.sidecar, exclude_sidecars=False) if args.sidecar else None
        report = canonical_denominator(tokens, luts, sidecar, args.seq_len)
        out = report.to_dict()
        agreement = check_against_text(tokens, sp, luts, raw, sidecar)
        out["decoded_bytes"] = agreement.decoded_bytes
        out["raw_bytes"] = raw
        out["problems"] = agreement.problems()
    except (ByteAccountingError, ShardError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
