"""Causal grouped-query attention kernels: FlashAttention 3 when importable, else PyTorch SDPA.

Both take the layout the model produces, q [B, T, H, D] and k, v [B, T, Hkv, D] with H a multiple of Hkv, and
return [B, T, H, D]. The record calls FA3's `flash_attn_func(q, k, v, causal=True)` on exactly this layout; the
SDPA path transposes to [B, H, T, D] as views (no copy) and lets SDPA broadcast the K/V heads (`enable_gqa`).
`tests/test_reference_model.py` checks the two agree within bf16 tolerance where FA3 is installed.

Which SDPA kernel runs is PyTorch's choice among the enabled backends; `sdpa_backend` below can pin the order
(on an H100 the cuDNN kernel is faster than PyTorch's FlashAttention-2 kernel at head_dim 64: see bench_train).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

try:  # FlashAttention 3 (Hopper); absent on CPU machines and on the stock GPU image.
    from flash_attn_interface import flash_attn_func as _fa3_func  # type: ignore[import-not-found]
except Exception:  # ImportError, or a wheel built for another torch/CUDA
    _fa3_func = None

BACKENDS = ("auto", "fa3", "sdpa")


def fa3_available() -> bool:
    return _fa3_func is not None


def resolve_backend(name: str, device: torch.device | str | None = None) -> str:
    """'auto' picks FA3 when it is importable and the tensors live on CUDA, else SDPA."""
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; expected one of {BACKENDS}")
    if name == "fa3" and not fa3_available():
        raise RuntimeError("attention backend 'fa3' requested but flash_attn_interface is not importable")
    if name == "auto":
        on_cuda = device is not None and torch.device(device).type == "cuda"
        return "fa3" if (fa3_available() and on_cuda) else "sdpa"
    return name


def fa3_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    assert _fa3_func is not None
    out = _fa3_func(q, k, v, causal=True)
    return out[0] if isinstance(out, tuple) else out  # some FA3 builds return (out, softmax_lse)


def sdpa_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    gqa = k.size(2) != q.size(2)
    y = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, enable_gqa=gqa
    )
    return y.transpose(1, 2)


def attention_fn(backend: str) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    return fa3_attention if backend == "fa3" else sdpa_attention


def causal_attention(q: Tensor, k: Tensor, v: Tensor, backend: str = "auto") -> Tensor:
    return attention_fn(resolve_backend(backend, q.device))(q, k, v)


_SDPA_NAMES = {
    "cudnn": "CUDNN_ATTENTION",
    "flash": "FLASH_ATTENTION",
    "efficient": "EFFICIENT_ATTENTION",
    "math": "MATH",
}


@contextlib.contextmanager
def sdpa_backend(order: str) -> Iterator[None]:
    """Enable exactly these SDPA kernels, in this priority order: 'flash' (the record's setting), 'cudnn',
    'cudnn,flash' (cuDNN where it supports the inputs, else flash), or 'default' (PyTorch's own choice).

    PyTorch's default priority is flash > efficient > math > cudnn, so merely enabling cuDNN never selects it;
    the priority must be set. The setting is read when a graph is traced, so it also governs compiled models.
    """
    if order == "default":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    names = [n.strip() for n in order.split(",") if n.strip()]
    unknown = [n for n in names if n not in _SDPA_NAMES]
    if unknown or not names:
        raise ValueError(f"unknown SDPA backends {unknown}; use a comma list of {sorted(_SDPA_NAMES)}")
    with sdpa_kernel([getattr(SDPBackend, _SDPA_NAMES[n]) for n in names], set_priority=True):
        yield


def set_sdpa_backend(order: str) -> None:
    """Non-scoped form of `sdpa_backend` for training scripts."""
    cm = sdpa_backend(order)
    cm.__enter__()  # deliberately never exited: the setting lasts for the process
