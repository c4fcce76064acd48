"""Reload the quantized artifact a record-family submission writes, without executing anything.

The records since 2026-03 write ``final_model.int6.ptz`` (or ``.int8.ptz``) as

    blob = compress(byte_shuffle(torch.save({"w": quantized, "m": meta})))

* ``compress``: brotli (quality 11), lzma, zlib, or nothing. Brotli streams carry no magic number, so the codec is
  recognised by the others' magic (xz ``FD 37 7A 58 5A 00``, zlib's CMF/FLG check, a zip's ``PK\\x03\\x04``) and
  brotli is tried last.
* ``byte_shuffle``: ``b"BSHF" + bytes([stride]) + payload`` where the payload holds every stride-th byte of the
  input, byte lane 0 first (so the high and low bytes of int16/fp16 values compress separately). Data without the
  ``BSHF`` prefix is not shuffled.
* ``quantized``: per tensor name either ``name`` (passthrough, fp16 or integer), or ``name.q`` (int8 codes) and
  ``name.scale`` (fp16, one per row, or a scalar) for GPTQ (``meta[name] == "gptq (intN)"``), optionally with a
  low-rank LQER correction ``name.lqA/.lqAs/.lqB/.lqBs`` (``+lqer``: per-row scales) or
  ``name.lqA_a/.lqAs_a/.lqB_a/.lqBs_a`` (``+lqer_asym``: a scalar scale for A, group scales for B), or ``.gq/.gs``
  (``gate_int8_row``). Some stacks store the block matrices as banks (``qo_bank``, ``kv_bank``, ``mlp_up_bank``,
  ``mlp_down_bank``); they are split back into per-layer names.

Safety: the pickle inside ``torch.save`` is read with ``torch.load(weights_only=True)``, whose unpickler only builds
tensors, storages and plain containers; anything else (a class, a function, ``__reduce__`` tricks) is refused with
a message, never run. Decompression is bounded (``MAX_RAW_BYTES``) with the static unpacker's incremental
decoders, and the file itself is capped (``MAX_ARTIFACT_BYTES``) before it is read.
"""

from __future__ import annotations

import io
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MAX_ARTIFACT_BYTES = (
    64 * 1024 * 1024
)  # the cap is 16,000,000 bytes of code + model; 4x leaves room for non-records
MAX_RAW_BYTES = 512 * 1024 * 1024  # a 36M-parameter int8 state is ~40 MB; 512 MB is a bomb, not a model
DECODE_SECONDS = 120.0
CHUNK = 4 * 1024 * 1024  # decompressor output granularity: the cap is checked between chunks
SHUFFLE_MAGIC = b"BSHF"
XZ_MAGIC = b"\xfd7zXZ\x00"
ZIP_MAGIC = b"PK\x03\x04"
BANKS = ("qo_bank", "kv_bank", "mlp_up_bank", "mlp_down_bank")
GPTQ_KIND = re.compile(r"^gptq \(int(\d+)\)(\+lqer_asym|\+lqer)?$")


class ArtifactLoadError(ValueError):
    """The artifact cannot be loaded; the message says why in one line."""


@dataclass
class LoadedArtifact:
    path: str
    codec: str  # brotli | lzma | zlib | none
    shuffle_stride: int  # 0 = not shuffled
    raw_bytes: int  # size of the torch.save archive
    state: dict[str, Any]  # dequantized float32 tensors (or integer passthrough), per-layer names
    kinds: dict[str, str] = field(
        default_factory=dict
    )  # name -> meta string ("gptq (int6)", "passthrough ...")
    quantized: bool = True  # False: a plain state dict (torch.save(model.state_dict()))

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for kind in self.kinds.values():
            counts[kind] = counts.get(kind, 0) + 1
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        shuffle = f", byte-shuffled (stride {self.shuffle_stride})" if self.shuffle_stride else ""
        return f"{Path(self.path).name}: {self.codec}{shuffle}, {self.raw_bytes:,} raw bytes; {kinds}"


# --------------------------------------------------------------------------------------------------- container
def byte_unshuffle(data: bytes) -> tuple[bytes, int]:
    """Undo the records' ``_byte_shuffle`` (see the module docstring); returns (data, stride or 0)."""
    if len(data) < 5 or data[:4] != SHUFFLE_MAGIC:
        return data, 0
    stride = data[4]
    if stride < 2:
        return data[5:], stride
    payload = np.frombuffer(data, dtype=np.uint8, offset=5)
    n = payload.size
    out = np.empty(n, dtype=np.uint8)
    offset = 0
    for lane in range(stride):
        count = n // stride + (1 if lane < n % stride else 0)
        out[lane::stride] = payload[offset : offset + count]
        offset += count
    return out.tobytes(), stride


def _looks_zlib(blob: bytes) -> bool:
    return (
        len(blob) >= 2 and blob[0] & 0x0F == 8 and blob[0] >> 4 <= 7 and ((blob[0] << 8) | blob[1]) % 31 == 0
    )


def _brotli(blob: bytes, limit: int) -> bytes:
    """Incremental brotli with an output cap. (`can_accept_more_data()` is True while output is still pending in
    brotli 1.2, so a stream is truncated only when a call with no new input yields nothing and is not finished.)"""
    try:
        import brotli
    except ImportError:
        raise ArtifactLoadError(
            "brotli-compressed artifact, but the brotli package is not installed"
        ) from None
    dec = brotli.Decompressor()
    try:
        out = bytearray(dec.process(blob, output_buffer_limit=CHUNK))
        while not dec.is_finished():
            if len(out) > limit:
                break
            chunk = dec.process(b"", output_buffer_limit=CHUNK)
            if not chunk and not dec.is_finished():
                raise ArtifactLoadError(
                    "brotli: compressed data is corrupt or truncated (end of stream not reached)"
                )
            out += chunk
    except brotli.error as exc:
        raise ArtifactLoadError(f"brotli: compressed data is corrupt ({exc})") from None
    if len(out) > limit:
        raise ArtifactLoadError(
            f"brotli: decompresses to more than {limit:,} bytes (limit); a decompression bomb"
        )
    return bytes(out)


def _bounded(codec: str, blob: bytes, limit: int) -> bytes:
    if codec == "brotli":
        return _brotli(blob, limit)
    from auditor.unpack import Undecodable, _Budget, decompress_bounded

    try:
        return decompress_bounded(codec, blob, {}, limit, _Budget(DECODE_SECONDS, limit))
    except Undecodable as exc:
        raise ArtifactLoadError(f"{codec}: {exc}") from None


def decompress_artifact(blob: bytes, limit: int | None = None) -> tuple[str, bytes]:
    """(codec, decompressed bytes, still shuffled). Raises ArtifactLoadError when no codec yields an archive."""
    limit = MAX_RAW_BYTES if limit is None else limit
    if blob[:4] in (ZIP_MAGIC, SHUFFLE_MAGIC):
        return "none", blob
    if blob.startswith(XZ_MAGIC):
        return "lzma", _bounded("lzma", blob, limit)
    if _looks_zlib(blob):
        try:
            return "zlib", _bounded("zlib", blob, limit)
        except ArtifactLoadError as exc:
            if "limit" in str(exc):  # a bomb, not a wrong guess
                raise
            # two bytes can pass zlib's header check by chance: fall through to brotli
    try:
        return "brotli", _bounded("brotli", blob, limit)
    except ArtifactLoadError as exc:
        raise ArtifactLoadError(
            f"not a brotli, lzma, zlib or uncompressed torch archive ({exc})"
            if "corrupt" in str(exc)
            else str(exc)
        ) from None


# --------------------------------------------------------------------------------------------------- pickle
def load_torch_archive(raw: bytes) -> Any:
    """``torch.load(weights_only=True)`` on an in-memory ``torch.save`` archive; refuses anything beyond tensors."""
    import torch

    if not raw.startswith(ZIP_MAGIC):
        raise ArtifactLoadError(
            "the decompressed payload is not a torch.save archive (no zip header); "
            "legacy (non-zip) torch pickles are not loaded"
        )
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            total = sum(info.file_size for info in zf.infolist())
    except zipfile.BadZipFile as exc:
        raise ArtifactLoadError(f"the torch.save archive is corrupt: {exc}") from None
    if total > MAX_RAW_BYTES:
        raise ArtifactLoadError(f"the torch.save archive declares {total:,} bytes (over {MAX_RAW_BYTES:,})")
    try:
        return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()
        detail = next(
            (ln for ln in first if "GLOBAL" in ln or "Unsupported" in ln), first[0] if first else ""
        )
        raise ArtifactLoadError(
            f"the artifact's pickle needs more than tensors and plain containers ({detail.strip()[:200]}); "
            "refused without executing it"
        ) from None
    except Exception as exc:  # a truncated or corrupt archive: torch raises RuntimeError and friends
        raise ArtifactLoadError(
            f"the torch.save archive cannot be read: {type(exc).__name__}: {str(exc)[:200]}"
        ) from None


# --------------------------------------------------------------------------------------------------- dequantize
def _tensor(w: dict[str, Any], key: str, used: set[str]) -> Any:
    import torch

    t = w.get(key)
    if not isinstance(t, torch.Tensor):
        raise ArtifactLoadError(f"quantized tensor {key!r} is missing (needed by its meta entry)")
    used.add(key)
    return t


def _row_scaled(q: Any, s: Any) -> Any:
    if s.ndim > 0:
        if s.numel() != q.shape[0]:
            raise ArtifactLoadError(f"{s.numel()} row scales for a {tuple(q.shape)} matrix")
        return q.float() * s.float().view(q.shape[0], *[1] * (q.ndim - 1))
    return q.float() * float(s.item())


def dequantize(w: dict[str, Any], meta: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Float tensors from the quantized dict, per the meta strings (module docstring). Every stored tensor must
    be consumed by some meta entry: a leftover means a format this loader does not know, and is named."""
    import torch

    out: dict[str, Any] = {}
    kinds: dict[str, str] = {}
    used: set[str] = set()
    unknown: list[str] = []
    for name, kind in meta.items():
        if not isinstance(name, str) or not isinstance(kind, str):
            raise ArtifactLoadError("meta must map tensor names to strings")
        if "passthrough" in kind:
            t = _tensor(w, name, used)
            out[name] = t.float() if t.is_floating_point() else t
        elif kind == "gate_int8_row":
            out[name] = _row_scaled(_tensor(w, name + ".gq", used), _tensor(w, name + ".gs", used))
        elif m := GPTQ_KIND.match(kind):
            q = _tensor(w, name + ".q", used)
            W = _row_scaled(q, _tensor(w, name + ".scale", used))
            bits = int(m[1])
            if q.is_floating_point() or int(q.abs().max()) > 2 ** (bits - 1):
                raise ArtifactLoadError(f"{name}: codes outside the int{bits} range")
            if m[2] == "+lqer_asym":
                qa, sa = _tensor(w, name + ".lqA_a", used), _tensor(w, name + ".lqAs_a", used)
                qb, sb = _tensor(w, name + ".lqB_a", used), _tensor(w, name + ".lqBs_a", used)
                group = qb.numel() // max(sb.numel(), 1)
                b = (qb.reshape(-1, group).float() * sb.float().view(-1, 1)).reshape(qb.shape)
                W = W + (qa.float() * float(sa)) @ b
            elif m[2] == "+lqer":
                a = _row_scaled(_tensor(w, name + ".lqA", used), _tensor(w, name + ".lqAs", used))
                b = _row_scaled(_tensor(w, name + ".lqB", used), _tensor(w, name + ".lqBs", used))
                W = W + a @ b
            out[name] = W
        else:
            unknown.append(f"{name}: {kind!r}")
            continue
        kinds[name] = kind
    if unknown:
        raise ArtifactLoadError(
            f"unknown quantization kinds in the artifact's meta: {'; '.join(unknown[:5])}"
            + (f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else "")
        )
    left = sorted(k for k in w if k not in used)
    if left:
        raise ArtifactLoadError(
            f"stored tensors that no meta entry explains (an unknown format): {', '.join(left[:6])}"
            + (f" (+{len(left) - 6} more)" if len(left) > 6 else "")
        )
    bad = [k for k, v in out.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ArtifactLoadError(f"non-finite weights after dequantization: {', '.join(bad[:5])}")
    return unbank(out), kinds


def unbank(state: dict[str, Any]) -> dict[str, Any]:
    """Split banked block matrices (``qo_bank[2n]``: c_q then proj; ``kv_bank[2n]``: c_k then c_v; MLP banks) into
    the per-layer names the reference model uses."""
    if not any(k in state for k in BANKS):
        return state
    out = {k: v for k, v in state.items() if k not in BANKS}
    pairs = {"qo_bank": ("attn.c_q", "attn.proj"), "kv_bank": ("attn.c_k", "attn.c_v")}
    for bank, (first, second) in pairs.items():
        if bank in state:
            t = state[bank]
            n = t.shape[0] // 2
            for i in range(n):
                out[f"blocks.{i}.{first}.weight"] = t[i]
                out[f"blocks.{i}.{second}.weight"] = t[n + i]
    for bank, part in (("mlp_up_bank", "mlp.fc"), ("mlp_down_bank", "mlp.proj")):
        if bank in state:
            for i in range(state[bank].shape[0]):
                out[f"blocks.{i}.{part}.weight"] = state[bank][i]
    return out


# --------------------------------------------------------------------------------------------------- entry
def load_record_artifact(path: str | Path) -> LoadedArtifact:
    """Read, decompress, unshuffle, unpickle (tensors only) and dequantize a record-family artifact."""
    import torch

    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise ArtifactLoadError(f"{p}: {exc.strerror or exc}") from None
    if size > MAX_ARTIFACT_BYTES:
        raise ArtifactLoadError(
            f"{p.name} is {size:,} bytes, over the {MAX_ARTIFACT_BYTES:,}-byte loading limit"
        )
    if size == 0:
        raise ArtifactLoadError(f"{p.name} is empty")
    blob = p.read_bytes()
    codec, raw = decompress_artifact(blob)
    raw, stride = byte_unshuffle(raw)
    obj = load_torch_archive(raw)
    art = LoadedArtifact(str(p), codec, stride, len(raw), {})
    if isinstance(obj, dict) and set(obj) == {"w", "m"}:
        w, m = obj["w"], obj["m"]
        if not isinstance(w, dict) or not isinstance(m, dict):
            raise ArtifactLoadError("the artifact's 'w' and 'm' entries must be dicts")
        art.state, art.kinds = dequantize(w, m)
        return art
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        # a plain float state dict (final_model.pt): no quantization to undo
        art.quantized = False
        art.state = unbank({k: (v.float() if v.is_floating_point() else v) for k, v in obj.items()})
        art.kinds = {k: "float" for k in art.state}
        return art
    keys = sorted(map(str, obj))[:6] if isinstance(obj, dict) else []
    raise ArtifactLoadError(
        f"unrecognised artifact layout ({type(obj).__name__}"
        + (f" with keys {', '.join(keys)}" if keys else "")
        + "); expected {'w': quantized, 'm': meta} or a state dict"
    )
