"""Rescore a quantized artifact on the verifier's validation shards with our own evaluation.

Two artifact formats are understood, neither by executing anything:
- the reference container (`reference_model.quant`; it holds no pickle and carries its own config);
- the record family's ``torch.save({"w": quantized, "m": meta})``, byte-shuffled and brotli/lzma/zlib-compressed
  (`auditor.harness.artifact_load`, tensors-only unpickling), rebuilt in the reference model from the
  submission's hyperparameters (`auditor.harness.record_map`: the log's printed block, else the code's defaults
  plus the README run command); an architecture that does not map is refused with the features named.

The model is scored with `reference_model.evaluate` (plain | sliding | score-first TTT, with the submission's
declared eval length, stride, TTT chunk, epochs, learning rate and momentum unless the verifier overrides them),
and the byte denominator is recomputed independently with `pgolf_data.bytes.canonical_denominator`
on the same truncated stream: the evaluator's accumulated bytes must equal it exactly, else the rescore is refused
(rules.md §B.1).

`rescore(...)` never raises on bad input: a `RescoreResult` with `error` set says what went wrong. Its `to_dict()`
is what the harness attaches under ``sub.options.harness["rescore"]`` for rule PG801.
"""

from __future__ import annotations

import math
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auditor.harness.data import DataReport, validate_data

if TYPE_CHECKING:
    from auditor.harness.record_map import RecordContext

MODES = ("plain", "sliding", "ttt")
SEED_IN_NAME = re.compile(r"seed[_\-]?(\d{1,9})", re.I)
REFERENCE_DEFAULTS = {"seq_len": 2048, "stride": 64, "chunk_tokens": 32_768, "ttt_epochs": 3}


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
    warmup_ms: float = 0.0  # compile warmup, outside the eval clock
    load_ms: float = 0.0
    device: str = ""
    canonical: bool = False  # the data is the official validation set, scored in full
    data_summary: str = ""
    val_sha256: list[str] | None = None
    format: str = ""  # "reference" | "record"
    artifact_summary: str = ""  # codec, shuffle, quantization kinds (record format)
    hparams_source: str = ""  # where the architecture and eval settings came from (record format)
    eval_settings: dict[str, Any] = field(
        default_factory=dict
    )  # seq_len, stride, chunk, epochs, lr, momentum
    compiled: bool | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.val_bpb is not None

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / max(self.eval_time_ms / 1e3, 1e-9)

    def log_line(self) -> str:
        return (
            f"rescore_{self.mode} val_loss:{self.val_loss:.8f} val_bpb:{self.val_bpb:.8f} tokens:{self.tokens} "
            f"eval_time:{self.eval_time_ms:.0f}ms"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def seed_from_name(path: str | Path) -> int | None:
    m = SEED_IN_NAME.search(Path(path).name)
    return int(m[1]) if m else None


class ProgressBar:
    """A one-line progress bar on stderr (windows scored, tokens/s, ETA), redrawn at most twice a second."""

    def __init__(
        self, label: str, total: int, stream: Any = None, width: int = 30, targets_per_window: int = 1
    ):
        self.label, self.total, self.width = label, max(total, 1), width
        self.stream = stream or sys.stderr
        self.per = targets_per_window
        self.done = 0
        self.t0: float | None = None  # set by the first batch, so compile warmup is not counted
        self.last = 0.0
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def __call__(self, n: int) -> None:
        now = time.perf_counter()
        if self.t0 is None:
            self.t0 = self.last = now
        self.done += n
        # on a terminal: redraw twice a second; in a log file: one line every 15 s
        step = 0.5 if self.tty else 15.0
        if now - self.last >= step or self.done >= self.total:
            self.last = now
            self.draw(now)

    def draw(self, now: float) -> None:
        t0 = self.t0 if self.t0 is not None else now
        frac = min(self.done / self.total, 1.0)
        # the first batch starts the clock, so a rate needs some elapsed time to mean anything
        rate = self.done / (now - t0) if now - t0 > 0.5 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        bar = "#" * int(frac * self.width)
        line = (
            f"{self.label} [{bar:<{self.width}}] {frac:6.1%} {self.done:,}/{self.total:,} windows, "
            f"~{rate * self.per:,.0f} tokens/s, {now - t0:5.0f}s elapsed, ETA {eta:5.0f}s"
        )
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        if self.tty and self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


def rescore(
    artifact: str | Path,
    val: str,
    tokenizer: str | Path | None = None,
    *,
    sidecar: str | None = None,
    mode: str = "ttt",
    seed: int | None = None,
    seq_len: int | None = None,
    stride: int | None = None,
    batch_seqs: int = 32,
    chunk_tokens: int | None = None,
    ttt_epochs: int | None = None,
    ttt_lr: float | None = None,
    ttt_momentum: float | None = None,
    max_tokens: int | None = None,
    device: str = "auto",
    data: DataReport | None = None,
    record: RecordContext | None = None,
    compile: bool | None = None,
    progress: bool = False,
    sdpa_order: str = "cudnn,flash",
) -> RescoreResult:
    """Score `artifact` on `val` with the reference evaluation; see the module docstring.

    Eval settings left at None come from the submission (record format) or the reference defaults."""
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
    overrides = {
        "seq_len": seq_len,
        "stride": stride,
        "chunk_tokens": chunk_tokens,
        "ttt_epochs": ttt_epochs,
        "ttt_lr": ttt_lr,
        "ttt_momentum": ttt_momentum,
    }
    try:
        return _run(
            res,
            artifact,
            val,
            tokenizer,
            sidecar,
            overrides,
            batch_seqs,
            max_tokens,
            device,
            record,
            compile,
            progress,
            sdpa_order,
        )
    except Exception as exc:  # the artifact or eval failed: a result that says so, not a traceback
        res.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
        return res


def load_for_rescore(
    res: RescoreResult, artifact: str | Path, record: RecordContext | None, sidecar: str | None = None
) -> tuple[Any, dict[str, Any]] | None:
    """(model, declared eval settings) from either format; None with `res.error` set when neither loads."""
    from auditor.harness.artifact_load import ArtifactLoadError, load_record_artifact
    from auditor.harness.record_map import RecordContext, UnsupportedArchitecture, map_record
    from reference_model.quant import ArtifactError, restore_model

    try:
        model, _ = restore_model(artifact)
        res.format = "reference"
        return model, {}
    except ArtifactError as exc:
        reference_problem = str(exc)
    if sidecar is None and record is not None:
        hp_seen, _ = record.hparams_for(res.seed)
        if str(hp_seen.get("caseops_enabled", "")).lower() in ("1", "true"):
            res.error = (
                "the submission evaluates CaseOps text (caseops_enabled): its bytes come from the byte sidecar, "
                "so pass --sidecar 'fineweb_val_bytes_*.bin'"
            )
            return None
    try:
        loaded = load_record_artifact(artifact)
    except ArtifactLoadError as exc:
        res.error = f"not a reference-format artifact ({reference_problem}) nor a record-format one ({exc})"
        return None
    res.format = "record"
    res.artifact_summary = loaded.summary()
    hp, source = (record or RecordContext()).hparams_for(res.seed)
    res.hparams_source = source
    if not hp:
        res.error = (
            "record-format artifact, but the submission gives no hyperparameters (no logged Hyperparameters block, "
            "no readable Hyperparameters class): the architecture cannot be rebuilt"
        )
        return None
    try:
        ctx = record or RecordContext()
        bf16_rope = ctx.rope_bf16_positions if ctx.rope_bf16_positions is not None else True
        mapping = map_record(hp, loaded.state, source, rope_bf16_positions=bf16_rope)
    except UnsupportedArchitecture as exc:
        res.error = f"unsupported architecture ({source}): {exc}"
        return None
    from reference_model.model import GPT

    model = GPT(mapping.config)
    model.load_state_dict(mapping.state, strict=True)
    # the records evaluate with depth recurrence on (their deserialize sets looping_active when num_loops > 0)
    model.set_recurrence(mapping.config.num_loops > 0)
    ev = mapping.eval
    declared = {
        "seq_len": ev.seq_len,
        "stride": ev.stride,
        "chunk_tokens": ev.ttt_chunk_tokens,
        "ttt_epochs": ev.ttt_epochs,
        "ttt_lr": ev.ttt_lr,
        "ttt_momentum": ev.ttt_momentum,
    }
    return model, declared


def _run(
    res: RescoreResult,
    artifact: str | Path,
    val: str,
    tokenizer: str | Path | None,
    sidecar: str | None,
    overrides: dict[str, Any],
    batch_seqs: int,
    max_tokens: int | None,
    device_name: str,
    record: RecordContext | None,
    compile: bool | None,
    progress: bool,
    sdpa_order: str,
) -> RescoreResult:
    import numpy as np
    import torch

    from pgolf_data.bytes import build_luts, canonical_denominator, load_sentencepiece
    from pgolf_data.shards import load_concatenated
    from reference_model.attention import sdpa_backend
    from reference_model.evaluate import (
        EvalConfig,
        ScoreFirstTTT,
        eval_plain,
        eval_sliding,
        load_val_stream,
        sliding_window_starts,
    )

    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device_name)
    res.device = str(device)
    t0 = time.perf_counter()
    loaded = load_for_rescore(res, artifact, record, sidecar)
    if loaded is None:
        return res
    model, declared = loaded
    settings = {**REFERENCE_DEFAULTS, **declared}
    settings.update({k: v for k, v in overrides.items() if v is not None})
    seq_len = int(settings["seq_len"])
    cfg_kwargs: dict[str, Any] = {
        "seq_len": seq_len,
        "stride": min(int(settings["stride"]), seq_len),
        "batch_seqs": batch_seqs,
        "chunk_tokens": int(settings["chunk_tokens"]),
        "ttt_epochs": int(settings["ttt_epochs"]),
        "compile": compile,
    }
    for key in ("ttt_lr", "ttt_momentum"):
        if key in settings:
            cfg_kwargs[key] = float(settings[key])
    cfg = EvalConfig(**cfg_kwargs)
    res.eval_settings = {k: v for k, v in cfg_kwargs.items() if k != "compile"}
    res.compiled = compile if compile is not None else device.type == "cuda"
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

    n = stream.num_targets
    total = (
        len(range(0, n, seq_len))
        if res.mode == "plain"
        else len(sliding_window_starts(n, seq_len, cfg.stride))
    )
    per = seq_len if res.mode == "plain" else cfg.stride
    bar = ProgressBar(f"rescore {res.mode}", total, targets_per_window=per) if progress else None
    # cuDNN attention where it takes the inputs, else flash: the faster pair on Hopper at head_dim 64 (API.md)
    with sdpa_backend(sdpa_order if device.type == "cuda" else "default"):
        if res.mode == "plain":
            result = eval_plain(model, stream, cfg, progress=bar)
        elif res.mode == "sliding":
            result = eval_sliding(model, stream, cfg, progress=bar)
        else:
            result = ScoreFirstTTT(model, stream, cfg, progress=bar).run()
    res.val_loss, res.val_bpb = float(result.val_loss), float(result.val_bpb)
    res.tokens, res.bytes, res.eval_time_ms = (
        int(result.tokens),
        int(result.bytes),
        float(result.eval_time_ms),
    )
    res.warmup_ms = float(result.warmup_ms)
    if res.tokens != denom.targets or res.bytes != res.denominator:
        res.error = (
            f"the evaluation scored {res.tokens:,} targets / {res.bytes:,} bytes but the canonical "
            f"accounting of the same stream is {denom.targets:,} / {res.denominator:,}"
        )
    elif not (math.isfinite(res.val_bpb) and res.val_bpb > 0):
        res.error = f"rescored val_bpb is not a positive finite number ({res.val_bpb})"
    return res
