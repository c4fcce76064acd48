"""Rescore a quantized artifact in the reference format on the verifier's validation shards.

The artifact is restored with `reference_model.quant.restore_model` (our container holds no pickle, so loading
runs no code), scored with `reference_model.evaluate` (plain | sliding | score-first TTT), and the byte denominator
is recomputed independently with `auditor.evidence.bytes_canonical.canonical_denominator` on the same truncated
stream: the evaluator's accumulated bytes must equal it exactly, else the rescore is refused (rules.md §B.1).

`rescore(...)` never raises on bad input: a `RescoreResult` with `error` set says what went wrong. Its `to_dict()`
is what the harness attaches under ``sub.options["harness"]["rescore"]`` for rule PG801.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from auditor.harness.data import DataReport, validate_data

MODES = ("plain", "sliding", "ttt")
SEED_IN_NAME = re.compile(r"seed[_\-]?(\d{1,9})", re.I)


@dataclass
class RescoreResult:
    artifact: str
    mode: str
    seed: int | None = None
    val_loss: float | None = None
    val_bpb: float | None = None
    tokens: int = 0
    bytes: int = 0
    denominator: int | None = None  # canonical_denominator on the same stream (must equal `bytes`)
    eval_time_ms: float = 0.0
    load_ms: float = 0.0
    device: str = ""
    canonical: bool = False  # the data is the official validation set, scored in full
    data_summary: str = ""
    val_sha256: list[str] | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.val_bpb is not None

    def log_line(self) -> str:
        return f"rescore_{self.mode} val_loss:{self.val_loss:.8f} val_bpb:{self.val_bpb:.8f} tokens:{self.tokens}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def seed_from_name(path: str | Path) -> int | None:
    m = SEED_IN_NAME.search(Path(path).name)
    return int(m[1]) if m else None


def rescore(
    artifact: str | Path,
    val: str,
    tokenizer: str | Path | None = None,
    *,
    sidecar: str | None = None,
    mode: str = "ttt",
    seed: int | None = None,
    seq_len: int = 2048,
    stride: int = 64,
    batch_seqs: int = 32,
    chunk_tokens: int = 32_768,
    ttt_epochs: int = 3,
    max_tokens: int | None = None,
    device: str = "auto",
    data: DataReport | None = None,
) -> RescoreResult:
    """Score `artifact` on `val` with the reference evaluation; see the module docstring."""
    res = RescoreResult(str(artifact), mode, seed if seed is not None else seed_from_name(artifact))
    if mode not in MODES:
        res.error = f"unknown eval mode {mode!r} (one of {', '.join(MODES)})"
        return res
    data = data or validate_data(val, tokenizer, sidecar)
    res.data_summary = data.summary()
    res.val_sha256 = [s.sha256 for s in data.val if s.sha256]
    if not data.ok:
        res.error = "data failed validation: " + "; ".join(data.problems)
        return res
    # A cut-down stream is never the canonical evaluation, whatever the shards are.
    res.canonical = data.canonical and max_tokens is None
    if max_tokens is not None:
        res.data_summary += f"; only the first {max_tokens:,} tokens scored"
    try:
        return _run(
            res,
            artifact,
            val,
            tokenizer,
            sidecar,
            seq_len,
            stride,
            batch_seqs,
            chunk_tokens,
            ttt_epochs,
            max_tokens,
            device,
        )
    except Exception as exc:  # the artifact or eval failed: a result that says so, not a traceback
        res.error = f"{type(exc).__name__}: {exc}"
        return res


def _run(
    res: RescoreResult,
    artifact: str | Path,
    val: str,
    tokenizer: str | Path | None,
    sidecar: str | None,
    seq_len: int,
    stride: int,
    batch_seqs: int,
    chunk_tokens: int,
    ttt_epochs: int,
    max_tokens: int | None,
    device_name: str,
) -> RescoreResult:
    import numpy as np
    import torch

    from pgolf_data.bytes import build_luts, canonical_denominator, load_sentencepiece
    from pgolf_data.shards import load_concatenated
    from reference_model.evaluate import EvalConfig, eval_plain, eval_sliding, eval_ttt, load_val_stream
    from reference_model.quant import ArtifactError, restore_model

    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device_name)
    res.device = str(device)
    cfg = EvalConfig(
        seq_len=seq_len,
        stride=min(stride, seq_len),
        batch_seqs=batch_seqs,
        chunk_tokens=chunk_tokens,
        ttt_epochs=ttt_epochs,
    )
    t0 = time.perf_counter()
    try:
        model, _ = restore_model(artifact)
    except ArtifactError as exc:
        res.error = f"not a reference-format artifact ({exc}); only reference_model artifacts can be rescored"
        return res
    model.to(device)
    if device.type == "cuda":
        model.to_mixed_precision()
    res.load_ms = 1e3 * (time.perf_counter() - t0)
    stream = load_val_stream(
        val, tokenizer, seq_len=seq_len, device=device, sidecar=sidecar, max_tokens=max_tokens
    )

    # The denominator, recomputed on its own from the shards (same truncation) by the canonical byte accounting.
    tokens = np.asarray(load_concatenated(val), dtype=np.int64)
    if max_tokens is not None:
        tokens = tokens[:max_tokens]
    side = np.asarray(load_concatenated(sidecar, exclude_sidecars=False)) if sidecar else None
    luts = build_luts(load_sentencepiece(tokenizer)) if tokenizer is not None and side is None else None
    denom = canonical_denominator(tokens, luts=luts, sidecar=side, seq_len=seq_len)
    res.denominator = int(denom.denominator)

    run = {"plain": eval_plain, "sliding": eval_sliding, "ttt": eval_ttt}[res.mode]
    result = run(model, stream, cfg)
    res.val_loss, res.val_bpb = float(result.val_loss), float(result.val_bpb)
    res.tokens, res.bytes, res.eval_time_ms = (
        int(result.tokens),
        int(result.bytes),
        float(result.eval_time_ms),
    )
    if res.tokens != denom.targets or res.bytes != res.denominator:
        res.error = (
            f"the evaluation scored {res.tokens:,} targets / {res.bytes:,} bytes but the canonical "
            f"accounting of the same stream is {denom.targets:,} / {res.denominator:,}"
        )
    elif not (math.isfinite(res.val_bpb) and res.val_bpb > 0):
        res.error = f"rescored val_bpb is not a positive finite number ({res.val_bpb})"
    return res
