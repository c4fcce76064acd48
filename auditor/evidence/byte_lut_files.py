"""Byte LUTs shipped as data files (`*.npz`), checked against the tokenizer shipped next to them.

A record that loads its byte LUT from a side file (Scylla: `candidate.meta.npz`, rules.md §A.10) cannot be verified
from code. When the folder also ships the tokenizer, the LUT can be checked directly:

- a SentencePiece `.model`: the challenge's LUT is rebuilt (`build_luts`) and compared entry by entry;
- a TokenMonster `.vocab` (binary): its single-byte tokens 0x80..0xFF are byte-fallback tokens (one source byte
  each, never valid UTF-8 on their own) and must have base_bytes 1, not 3 (= len(U+FFFD)).

`.npz` files are read with `np.load(..., allow_pickle=False)` from memory: no code is ever executed.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field

import numpy as np

from auditor.submission import Submission

BASE_KEYS = ("base_bytes", "base_bytes_lut", "bytes", "token_bytes")


@dataclass
class LutFileCheck:
    path: str
    keys: list[str]
    base_key: str | None
    status: str  # "wrong" | "agrees" | "unverifiable" | "unreadable"
    message: str
    tokenizer: str | None = None
    bad_ids: list[int] = field(default_factory=list)
    bad_values: list[int] = field(default_factory=list)


def _load_npz(data: bytes) -> dict[str, np.ndarray] | str:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        return f"{type(exc).__name__}: {exc}"


def tokenmonster_single_bytes(data: bytes) -> dict[int, int] | None:
    """id -> byte value for a TokenMonster binary vocab's single-byte tokens, or None when it does not parse.

    Layout seen in TokenMonster vocab files: a 24-byte header, then per token `len:u8, bytes[len], flags:u8×2,
    alternative ids:u24×2, id:u24, score:f32`. The parse is only trusted while ids run 0, 1, 2, ... — any
    drift means the layout is not what we think, and the caller must treat the LUT as unverifiable.
    """
    off, expected, out = 24, 0, {}
    while off < len(data):
        n = data[off]
        end = off + 1 + n + 2 + 6 + 3 + 4
        if n == 0 or end > len(data):
            break
        token = data[off + 1 : off + 1 + n]
        p = off + 1 + n + 8
        tid = int.from_bytes(data[p : p + 3], "little")
        if tid != expected:
            break
        if n == 1:
            out[tid] = token[0]
        expected += 1
        off = end
    return out if expected >= 256 else None


def _sp_luts(model: bytes, table: int) -> np.ndarray | None:
    try:
        import sentencepiece as spm
    except ImportError:  # pragma: no cover - environment dependent
        return None
    try:
        sp = spm.SentencePieceProcessor(model_proto=model)
    except Exception:  # a broken model is just "not verifiable"
        return None
    from pgolf_data.bytes import build_luts

    return build_luts(sp, vocab_size=table).base_bytes


def check_lut_files(sub: Submission) -> list[LutFileCheck]:
    out: list[LutFileCheck] = []
    models = {p: f.data for p, f in sub.files.items() if p.endswith(".model") and f.data}
    vocabs = {p: f.data for p, f in sub.files.items() if p.endswith(".vocab") and f.data}
    for path, f in sorted(sub.files.items()):
        if not path.endswith(".npz") or f.data is None:
            continue
        arrays = _load_npz(f.data)
        if isinstance(arrays, str):
            out.append(LutFileCheck(path, [], None, "unreadable", f"{path}: not a plain .npz ({arrays})"))
            continue
        keys = sorted(arrays)
        base_key = next((k for k in BASE_KEYS if k in arrays), None)
        if (
            base_key is None
            or arrays[base_key].ndim != 1
            or not np.issubdtype(arrays[base_key].dtype, np.integer)
        ):
            continue  # not a byte LUT
        base = arrays[base_key].astype(np.int64)
        out.append(_judge(path, keys, base_key, base, models, vocabs))
    return out


def _judge(
    path: str,
    keys: list[str],
    base_key: str,
    base: np.ndarray,
    models: dict[str, bytes],
    vocabs: dict[str, bytes],
) -> LutFileCheck:
    for mpath, model in models.items():
        ref = _sp_luts(model, len(base))
        if ref is None or len(ref) < len(base):
            continue
        diff = np.flatnonzero(ref[: len(base)] != base)
        if diff.size:
            return LutFileCheck(
                path,
                keys,
                base_key,
                "wrong",
                f"{path}[{base_key}] differs from the LUT rebuilt from {mpath} at {diff.size} ids "
                f"(e.g. id {int(diff[0])}: {int(base[diff[0]])} vs {int(ref[diff[0]])})",
                mpath,
                diff[:50].tolist(),
                base[diff[:50]].tolist(),
            )
        return LutFileCheck(
            path, keys, base_key, "agrees", f"{path}[{base_key}] equals the LUT rebuilt from {mpath}", mpath
        )
    for vpath, vocab in vocabs.items():
        singles = tokenmonster_single_bytes(vocab)
        if singles is None:
            continue
        fallback = {tid: b for tid, b in singles.items() if b >= 0x80 and tid < len(base)}
        if not fallback:
            continue
        bad = sorted(tid for tid in fallback if base[tid] != 1)
        if bad:
            values = sorted({int(base[t]) for t in bad})
            return LutFileCheck(
                path,
                keys,
                base_key,
                "wrong",
                f"{path}[{base_key}]: {len(bad)} of the {len(fallback)} single-byte tokens 0x80..0xFF "
                f"of {vpath} (byte-fallback: one source byte each) have base_bytes "
                f"{'/'.join(map(str, values))} instead of 1",
                vpath,
                bad[:50],
                [int(base[t]) for t in bad[:50]],
            )
        return LutFileCheck(
            path,
            keys,
            base_key,
            "agrees",
            f"{path}[{base_key}]: the {len(fallback)} byte-fallback tokens of {vpath} count 1 byte",
            vpath,
        )
    return LutFileCheck(
        path,
        keys,
        base_key,
        "unverifiable",
        f"{path} holds a byte LUT ({base_key}, {len(base)} entries) but no tokenizer in the folder "
        "lets it be checked",
    )
