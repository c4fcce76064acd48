"""The artifact: full-Hessian GPTQ with SDClip, int6 matrices, int8 embeddings, byte shuffle, brotli-11.

What the record does (records/track_10min_16mb/2026-04-09_SP8192_3LayerRecur_ParResid_QK525_LegalTTT, README
"Quantization"), written here as separate steps:

1. Hessians. For every large weight matrix W (more than 65,536 entries) the calibration pass accumulates
   H = Σ xᵀx over the activations x that W multiplies (the input of a Linear; for the tied embedding, the final
   hidden state that the output head multiplies). `collect_hessians` does this with forward hooks.
2. SDClip scales. Each row gets one scale s = k·std(row) / r (r = 2^(bits-1) - 1; k = 12.85 for int6 matrices,
   20 for the int8 embedding), stored as float16. Values beyond ±k·std are clipped.
3. GPTQ. Columns are quantized one at a time in decreasing order of H's diagonal ("act order"); the rounding
   error of each column is spread over the columns not yet quantized through the Cholesky factor of H⁻¹
   (blocks of 128 columns, 1 % damping, columns never activated set to zero).
4. Everything else (norm gains, gates, small tensors) is kept as float16 ("passthrough").
5. Serialization. Our own container (a JSON header naming each tensor, then raw bytes; no pickle, so loading an
   artifact runs no code), byte-shuffled with stride 2 (all first bytes, then all second bytes: float16 high bytes
   compress far better together), then brotli at quality 11.

`dequantize` is the single definition of the weights the artifact stands for: the in-memory quantized model and a
model restored from the file both go through it, which is what makes the round trip bit-exact.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import lzma
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ARTIFACT_MAGIC = b"PGREF-ARTIFACT-1\n"
SIZE_CAP_BYTES = 16_000_000  # decimal, rules.md §0
SHUFFLE_STRIDE = 2


@dataclass(frozen=True)
class QuantConfig:
    matrix_bits: int = 6
    embed_bits: int = 8
    matrix_clip_sigmas: float = 12.85
    embed_clip_sigmas: float = 20.0
    min_numel: int = 65_536  # tensors with at most this many entries stay float16
    block_size: int = 128
    damping: float = 0.01  # fraction of mean(diag H) added to the diagonal
    brotli_quality: int = 11
    calibration_batches: int = 64


class ArtifactError(ValueError):
    """A file that is not one of our artifacts, or one that does not match the model it is loaded into."""


# --------------------------------------------------------------------------------------------------- Hessians
def default_activation_sites(model: nn.Module, min_numel: int) -> dict[str, tuple[nn.Module, str]]:
    """Where each quantized weight's input activations can be observed: {weight name: (module, "input"|"output")}.

    The reference GPT names them itself (`gptq_layers()`: weight -> module whose input[0] the weight multiplies;
    the tied embedding maps to the output head). For another model, every nn.Linear is observed at its input and
    a tied embedding at the output of a module named `final_norm`. Only weights that will be GPTQ-quantized
    (2-D, more than `min_numel` entries) are observed.
    """
    params = dict(model.named_parameters())

    def large(name: str) -> bool:
        p = params.get(name)
        return p is not None and p.ndim == 2 and p.numel() > min_numel

    own = getattr(model, "gptq_layers", None)
    if callable(own):
        return {name: (module, "input") for name, module in own().items() if large(name)}
    sites: dict[str, tuple[nn.Module, str]] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and large(f"{name}.weight"):
            sites[f"{name}.weight"] = (module, "input")
    final_norm = getattr(model, "final_norm", None)
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding) and large(f"{name}.weight") and final_norm is not None:
            sites[f"{name}.weight"] = (final_norm, "output")
    return sites


@torch.no_grad()
def collect_hessians(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    sites: Mapping[str, tuple[nn.Module, str]],
    forward: Callable[[torch.Tensor], Any] | None = None,
) -> dict[str, torch.Tensor]:
    """H[name] = mean over batches of Σ xᵀx of the activations feeding each weight (float32, on CPU).

    A model with `capture_inputs(callback)` (the reference GPT) is observed through it, so that speed paths that
    bypass the hooked modules (its fused QKV) are switched off while calibrating; otherwise forward hooks are
    placed at `sites`.
    """
    hessians: dict[str, torch.Tensor] = {}

    def accumulate(name: str, x: torch.Tensor) -> None:
        if name not in sites:
            return
        x = x.detach().reshape(-1, x.shape[-1]).float()
        if name not in hessians:
            hessians[name] = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float32, device=x.device)
        hessians[name].addmm_(x.T, x)

    def hook_for(name: str, where: str) -> Callable[..., None]:
        def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            accumulate(name, inputs[0] if where == "input" else output)

        return hook

    capture = getattr(model, "capture_inputs", None)
    handles = []
    if callable(capture):
        context: Any = capture(accumulate)
    else:
        context = contextlib.nullcontext()
        handles = [
            module.register_forward_hook(hook_for(name, where)) for name, (module, where) in sites.items()
        ]
    was_training = model.training
    model.eval()
    run = forward or model
    n = 0
    try:
        with context:
            for x in batches:
                run(x)
                n += 1
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {name: (h / max(n, 1)).cpu() for name, h in hessians.items()}


# --------------------------------------------------------------------------------------------------- GPTQ
def sdclip_scales(w: torch.Tensor, clip_sigmas: float, clip_range: int) -> torch.Tensor:
    """One float16 scale per row: k·std(row)/r, so that ±r steps reach ±k standard deviations."""
    row_std = w.float().std(dim=1)
    return (clip_sigmas * row_std / clip_range).clamp_min(1e-10).to(torch.float16)


def gptq_quantize(
    w: torch.Tensor,
    hessian: torch.Tensor | None,
    clip_sigmas: float,
    clip_range: int,
    block_size: int = 128,
    damping: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize a 2-D weight to integers in [-r, r] (int8 storage) and float16 row scales.

    Without a Hessian (a weight no calibration activation reached) this is plain rounding with the same scales.
    """
    w_orig = w.detach().float().cpu()
    rows, cols = w_orig.shape
    scale = sdclip_scales(w_orig, clip_sigmas, clip_range)
    s = scale.float()
    if hessian is None:
        q = torch.clamp(torch.round(w_orig / s[:, None]), -clip_range, clip_range)
        return q.to(torch.int8), scale

    h = hessian.detach().float().cpu().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    h.diagonal().add_(damping * h.diagonal().mean())
    order = torch.argsort(h.diagonal(), descending=True)  # act order: most active inputs first
    inverse_order = torch.argsort(order)
    work = w_orig[:, order].clone()
    work[:, dead[order]] = 0.0
    h = h[order][:, order]
    # Upper Cholesky factor of H⁻¹: row j holds how column j's error propagates to the later columns.
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)

    q = torch.zeros(rows, cols, dtype=torch.int8)
    for start in range(0, cols, block_size):
        end = min(start + block_size, cols)
        block = work[:, start:end].clone()
        hblock = hinv[start:end, start:end]
        errors = torch.zeros(rows, end - start)
        for j in range(end - start):
            column = block[:, j]
            qcol = torch.clamp(torch.round(column / s), -clip_range, clip_range)
            q[:, start + j] = qcol.to(torch.int8)
            err = (column - qcol * s) / hblock[j, j]
            errors[:, j] = err
            block[:, j:] -= err[:, None] * hblock[j, j:][None, :]
        if end < cols:
            work[:, end:] -= errors @ hinv[start:end, end:]
    return q[:, inverse_order].contiguous(), scale


# --------------------------------------------------------------------------------------------------- state
@dataclass
class QuantizedTensor:
    """One entry of the artifact: a GPTQ matrix (int codes + row scales) or a float16 passthrough tensor."""

    kind: str  # "gptq" | "passthrough" | "raw" (non-float tensors, stored as they are)
    shape: tuple[int, ...]
    orig_dtype: str  # the dtype the model holds it in, restored by `dequantize`
    data: torch.Tensor  # int8 codes, float16 values, or the raw tensor
    scale: torch.Tensor | None = None  # float16 per row, for "gptq"
    bits: int = 16
    note: str = ""


@dataclass
class QuantizedState:
    tensors: dict[str, QuantizedTensor]
    config: dict[str, Any] = field(default_factory=dict)  # the model config, so the file restores alone
    meta: dict[str, Any] = field(default_factory=dict)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ArtifactError(f"unknown dtype {name!r} in artifact")
    return dtype


def is_embedding_name(name: str) -> bool:
    """Fallback when the caller names no embeddings: the record's `tok_emb` convention."""
    return "tok_emb" in name


def quantize_state_dict(
    state: Mapping[str, torch.Tensor],
    hessians: Mapping[str, torch.Tensor],
    qcfg: QuantConfig = QuantConfig(),
    embedding_names: Iterable[str] = (),
) -> QuantizedState:
    embeddings = set(embedding_names)
    out: dict[str, QuantizedTensor] = {}
    for name, tensor in state.items():
        t = tensor.detach().cpu()
        if not t.is_floating_point():
            out[name] = QuantizedTensor("raw", tuple(t.shape), _dtype_name(t.dtype), t.contiguous())
            continue
        if t.ndim != 2 or t.numel() <= qcfg.min_numel:
            out[name] = QuantizedTensor(
                "passthrough", tuple(t.shape), _dtype_name(t.dtype), t.to(torch.float16).contiguous()
            )
            continue
        is_embed = name in embeddings or (not embeddings and is_embedding_name(name))
        bits = qcfg.embed_bits if is_embed else qcfg.matrix_bits
        sigmas = qcfg.embed_clip_sigmas if is_embed else qcfg.matrix_clip_sigmas
        h = hessians.get(name)
        q, scale = gptq_quantize(t, h, sigmas, 2 ** (bits - 1) - 1, qcfg.block_size, qcfg.damping)
        out[name] = QuantizedTensor(
            "gptq",
            tuple(t.shape),
            _dtype_name(t.dtype),
            q,
            scale,
            bits,
            note="" if h is not None else "no calibration activations: plain rounding",
        )
    return QuantizedState(out)


def dequantize(qstate: QuantizedState) -> dict[str, torch.Tensor]:
    """The weights the artifact stands for (the one definition both the in-memory and the reloaded model use)."""
    out: dict[str, torch.Tensor] = {}
    for name, qt in qstate.tensors.items():
        dtype = _dtype(qt.orig_dtype)
        if qt.kind == "gptq":
            assert qt.scale is not None
            out[name] = (qt.data.float() * qt.scale.float()[:, None]).to(dtype)
        elif qt.kind == "passthrough":
            out[name] = qt.data.to(dtype)
        else:
            out[name] = qt.data.clone()
    return out


# --------------------------------------------------------------------------------------------------- bytes
def byte_shuffle(data: bytes, stride: int = SHUFFLE_STRIDE) -> bytes:
    """Regroup bytes by their position modulo `stride` (byte 0, stride, 2·stride, ..., then byte 1, ...)."""
    arr = np.frombuffer(data, dtype=np.uint8)
    return b"".join(arr[i::stride].tobytes() for i in range(stride))


def byte_unshuffle(data: bytes, stride: int = SHUFFLE_STRIDE) -> bytes:
    arr = np.frombuffer(data, dtype=np.uint8)
    n = arr.size
    out = np.empty(n, dtype=np.uint8)
    offset = 0
    for i in range(stride):
        count = (n - i + stride - 1) // stride if n > i else 0
        out[i::stride] = arr[offset : offset + count]
        offset += count
    return out.tobytes()


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.contiguous().cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def _tensor_from(
    buf: memoryview, offset: int, nbytes: int, dtype: torch.dtype, shape: tuple[int, ...]
) -> torch.Tensor:
    raw = bytearray(buf[offset : offset + nbytes])
    if len(raw) != nbytes:
        raise ArtifactError("artifact payload is truncated")
    if dtype == torch.bfloat16:
        return torch.frombuffer(raw, dtype=torch.int16).view(torch.bfloat16).reshape(shape).clone()
    if not raw:
        return torch.zeros(shape, dtype=dtype)
    return torch.frombuffer(raw, dtype=dtype).reshape(shape).clone()


def pack(qstate: QuantizedState) -> bytes:
    """The uncompressed container: magic, header length, JSON header, then every tensor's bytes."""
    entries = []
    blobs: list[bytes] = []
    offset = 0
    for name in sorted(qstate.tensors):
        qt = qstate.tensors[name]
        parts = [("data", qt.data)] + ([("scale", qt.scale)] if qt.scale is not None else [])
        entry: dict[str, Any] = {
            "name": name,
            "kind": qt.kind,
            "shape": list(qt.shape),
            "orig_dtype": qt.orig_dtype,
            "bits": qt.bits,
        }
        for key, t in parts:
            b = _tensor_bytes(t)
            entry[key] = {
                "offset": offset,
                "nbytes": len(b),
                "dtype": _dtype_name(t.dtype),
                "shape": list(t.shape),
            }
            blobs.append(b)
            offset += len(b)
        entries.append(entry)
    header = json.dumps(
        {"format": 1, "config": qstate.config, "meta": qstate.meta, "tensors": entries},
        sort_keys=True,
        separators=(",", ":"),
    ).encode("utf-8")
    return ARTIFACT_MAGIC + len(header).to_bytes(8, "little") + header + b"".join(blobs)


def unpack(raw: bytes) -> QuantizedState:
    if not raw.startswith(ARTIFACT_MAGIC):
        raise ArtifactError("not a reference_model artifact (bad magic)")
    pos = len(ARTIFACT_MAGIC)
    hlen = int.from_bytes(raw[pos : pos + 8], "little")
    pos += 8
    try:
        header = json.loads(raw[pos : pos + hlen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"artifact header is not valid JSON ({exc})") from None
    body = memoryview(raw)[pos + hlen :]
    tensors: dict[str, QuantizedTensor] = {}
    for e in header["tensors"]:
        d = e["data"]
        data = _tensor_from(body, d["offset"], d["nbytes"], _dtype(d["dtype"]), tuple(d["shape"]))
        scale = None
        if "scale" in e:
            s = e["scale"]
            scale = _tensor_from(body, s["offset"], s["nbytes"], _dtype(s["dtype"]), tuple(s["shape"]))
        tensors[e["name"]] = QuantizedTensor(
            e["kind"], tuple(e["shape"]), e["orig_dtype"], data, scale, e["bits"]
        )
    return QuantizedState(tensors, header.get("config", {}), header.get("meta", {}))


def compress(raw: bytes, quality: int = 11) -> bytes:
    import brotli

    return brotli.compress(byte_shuffle(raw), quality=quality)


def decompress(blob: bytes) -> bytes:
    import brotli

    try:
        return byte_unshuffle(brotli.decompress(blob))
    except brotli.error as exc:
        raise ArtifactError(f"artifact is not brotli data ({exc})") from None


def save_artifact(path: str | Path, qstate: QuantizedState, quality: int = 11) -> int:
    blob = compress(pack(qstate), quality)
    Path(path).write_bytes(blob)
    return len(blob)


def load_artifact(path: str | Path) -> QuantizedState:
    p = Path(path)
    try:
        blob = p.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{p}: cannot read: {exc.strerror or exc}") from None
    return unpack(decompress(blob))


# --------------------------------------------------------------------------------------------------- sizes
def reference_code_files() -> list[Path]:
    """The code a training + evaluation run needs: this package's modules, without the data-prep tokenizer
    (data-prep scripts are not counted in practice, rules.md §F) and the benchmarks."""
    here = Path(__file__).resolve().parent
    return sorted(p for p in here.glob("*.py") if not p.name.startswith(("bench", "test", "tokenize")))


def _minify(source: str) -> tuple[str, bool]:
    """The maintainers' minifier settings (pyminify --no-rename-locals --no-hoist-literals
    --remove-literal-statements, rules.md §F), when python-minifier is installed."""
    try:
        import python_minifier
    except ImportError:
        return source, False
    return python_minifier.minify(
        source, rename_locals=False, hoist_literals=False, remove_literal_statements=True
    ), True


def code_sizes(files: Iterable[Path] | None = None) -> dict[str, int]:
    """Raw UTF-8 bytes of the code, and the size of the minified lzma+base85 self-extracting wrapper the
    maintainers accepted as the counted code size (rules.md §F, "Newer computation")."""
    paths = list(files) if files is not None else reference_code_files()
    sources = [p.read_text(encoding="utf-8") for p in paths]
    minified = [_minify(src) for src in sources]
    packed_source = "\n".join(m for m, _ in minified)
    packed = base64.b85encode(lzma.compress(packed_source.encode("utf-8"), preset=9 | lzma.PRESET_EXTREME))
    wrapper = b'import lzma as L,base64 as B\nexec(L.decompress(B.b85decode("' + packed + b'")))\n'
    return {
        "code_bytes_raw": sum(len(src.encode("utf-8")) for src in sources),
        "code_bytes_wrapped": len(wrapper),
        "code_files": len(paths),
        "code_minified": int(all(ok for _, ok in minified)),
    }


# --------------------------------------------------------------------------------------------------- model-level
@dataclass
class ArtifactReport:
    path: str
    model_bytes: int
    code_bytes: int
    code_bytes_raw: int
    total_bytes: int
    cap: int
    under_cap: bool
    hessians: int
    quantized: dict[str, int]  # kind -> count
    hessian_seconds: float
    quantize_seconds: float
    compress_seconds: float

    def log_lines(self) -> list[str]:
        return [
            f"GPTQ:collected {self.hessians} Hessians in {self.hessian_seconds:.1f}s",
            f"Code size (uncompressed): {self.code_bytes_raw} bytes",
            f"Code size (compressed): {self.code_bytes} bytes",
            f"Serialized model quantized+brotli: {self.model_bytes} bytes",
            f"Total submission size quantized+brotli: {self.total_bytes} bytes",
        ]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return json.loads(json.dumps(dataclasses.asdict(cfg)))
    if isinstance(cfg, Mapping):
        return dict(cfg)
    raise TypeError(f"cannot serialize model config of type {type(cfg).__name__}")


def quantize_model(
    model: nn.Module,
    calibration: Iterable[torch.Tensor],
    path: str | Path,
    *,
    config: Any,
    qcfg: QuantConfig = QuantConfig(),
    forward: Callable[[torch.Tensor], Any] | None = None,
    code_files: Iterable[Path] | None = None,
) -> tuple[QuantizedState, ArtifactReport]:
    """Collect Hessians, quantize, write the artifact, and load the dequantized weights into `model` in place.

    After this call `model` holds exactly the weights a model restored from `path` holds.
    """
    t0 = time.perf_counter()
    sites = default_activation_sites(model, qcfg.min_numel)
    hessians = collect_hessians(model, calibration, sites, forward)
    t1 = time.perf_counter()
    embeddings = [n for n, m in model.named_modules() if isinstance(m, nn.Embedding)]
    qstate = quantize_state_dict(model.state_dict(), hessians, qcfg, [f"{n}.weight" for n in embeddings])
    qstate.config = config_to_dict(config)
    # The eval runs the model as training left it (the record evaluates with depth recurrence on).
    qstate.meta = {"quant": dataclasses.asdict(qcfg), "recurrence": bool(getattr(model, "recurrence", False))}
    t2 = time.perf_counter()
    model_bytes = save_artifact(path, qstate, qcfg.brotli_quality)
    t3 = time.perf_counter()
    load_quantized_weights(model, qstate)
    sizes = code_sizes(code_files)
    kinds: dict[str, int] = {}
    for qt in qstate.tensors.values():
        key = f"int{qt.bits}" if qt.kind == "gptq" else qt.kind
        kinds[key] = kinds.get(key, 0) + 1
    total = model_bytes + sizes["code_bytes_wrapped"]
    report = ArtifactReport(
        str(path),
        model_bytes,
        sizes["code_bytes_wrapped"],
        sizes["code_bytes_raw"],
        total,
        SIZE_CAP_BYTES,
        total <= SIZE_CAP_BYTES,
        len(hessians),
        kinds,
        t1 - t0,
        t2 - t1,
        t3 - t2,
    )
    return qstate, report


def load_quantized_weights(model: nn.Module, qstate: QuantizedState) -> None:
    state = dequantize(qstate)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise ArtifactError(
            f"artifact does not match the model: missing {missing[:5]}, unexpected {extra[:5]}"
        )
    for name, t in state.items():
        if tuple(own[name].shape) != tuple(t.shape):
            raise ArtifactError(
                f"{name}: artifact shape {tuple(t.shape)} != model shape {tuple(own[name].shape)}"
            )
    with torch.no_grad():
        for name, t in state.items():
            own[name].copy_(t.to(own[name].dtype))


def restore_model(
    path: str | Path,
    device: str | torch.device = "cpu",
    build: Callable[[dict[str, Any]], nn.Module] | None = None,
) -> tuple[nn.Module, QuantizedState]:
    """A model rebuilt from the artifact alone: its config comes from the file, its weights from `dequantize`."""
    qstate = load_artifact(path)
    model = (build or build_reference_model)(qstate.config)
    load_quantized_weights(model, qstate)
    set_recurrence = getattr(model, "set_recurrence", None)
    if callable(set_recurrence):
        set_recurrence(bool(qstate.meta.get("recurrence", False)))
    return model.to(device), qstate


def build_reference_model(config: Mapping[str, Any]) -> nn.Module:
    from reference_model.config import ModelConfig
    from reference_model.model import GPT

    known = {f.name for f in dataclasses.fields(ModelConfig)}
    return GPT(ModelConfig(**{k: v for k, v in config.items() if k in known}))


def state_checksum(state: Mapping[str, torch.Tensor]) -> str:
    """A content hash of a state dict (names, dtypes, shapes, bytes) for bit-exactness checks."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()
