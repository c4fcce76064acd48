"""MuonEq-R for the block matrices + AdamW for the embedding and the control tensors (the record's split).

MuonEq-R ("row-normalised Muon", record README §Training): per matrix
    buf = momentum * buf + grad                      (heavy ball)
    g   = grad + momentum * buf                      (Nesterov)
    g   = g / ||g_row||                              (row normalisation, the "-R")
    u   = NewtonSchulz5(g) * sqrt(max(1, rows/cols)) (approximate orthogonalisation, bf16)
    p   = p * (1 - lr * wd) - lr * u                 (decoupled weight decay)
Matrices of one shape are orthogonalised together as a batch (one batched matmul chain per shape instead of
one per matrix: 4 shapes for the 66 matrices of the record). Under torch.distributed each rank computes the
updates of its share of the matrices and one all-reduce sums them, as the record does.

Hyperparameters (`OptimConfig` defaults) are the record's: matrix_lr 0.022, scalar_lr 0.02, tied_embed_lr 0.03,
betas (0.9, 0.95), eps 1e-8, wd muon 0.095 / embed 0.085 / scalars 0.02, momentum 0.92 -> 0.99 over 1500 steps,
5 Newton-Schulz steps, grad-norm clip 0.3.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

NS_COEFFS = (3.4445, -4.7750, 2.0315)  # quintic Newton-Schulz iteration of Muon


@dataclass(frozen=True)
class OptimConfig:
    matrix_lr: float = 0.022
    scalar_lr: float = 0.02
    tied_embed_lr: float = 0.03
    embed_lr: float = 0.6  # untied input embedding (unused by the record)
    head_lr: float = 0.008  # untied output head, Adam without weight decay (unused by the record)
    beta1: float = 0.9
    beta2: float = 0.95
    adam_eps: float = 1e-8
    adam_wd: float = 0.02
    embed_wd: float = 0.085
    muon_wd: float = 0.095
    muon_momentum: float = 0.99
    muon_momentum_warmup_start: float = 0.92
    muon_momentum_warmup_steps: int = 1500
    muon_backend_steps: int = 5
    muon_row_normalize: bool = True
    grad_clip_norm: float = 0.3

    def muon_momentum_at(self, step: int) -> float:
        if self.muon_momentum_warmup_steps <= 0:
            return self.muon_momentum
        frac = min(step / self.muon_momentum_warmup_steps, 1.0)
        return (1 - frac) * self.muon_momentum_warmup_start + frac * self.muon_momentum


def newton_schulz5(g: Tensor, steps: int = 5, eps: float = 1e-7) -> Tensor:
    """Approximately orthogonalise each matrix of g ([..., rows, cols]) in bf16."""
    a, b, c = NS_COEFFS
    x = g.bfloat16()
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + eps)
    transposed = g.size(-2) > g.size(-1)
    if transposed:
        x = x.mT
    for _ in range(steps):
        gram = x @ x.mT
        poly = b * gram + c * gram @ gram
        x = a * x + poly @ x
    return x.mT if transposed else x


_compiled_ns: Any = None


def _ns_fn(use_compile: bool) -> Any:
    global _compiled_ns
    if not use_compile:
        return newton_schulz5
    if _compiled_ns is None:
        _compiled_ns = torch.compile(newton_schulz5)
    return _compiled_ns


class MuonEqR(torch.optim.Optimizer):
    def __init__(
        self,
        params: list[Tensor],
        lr: float,
        momentum: float,
        backend_steps: int = 5,
        weight_decay: float = 0.0,
        row_normalize: bool = True,
        nesterov: bool = True,
        compile_ns: bool | None = None,
    ):
        defaults = dict(
            lr=lr,
            momentum=momentum,
            backend_steps=backend_steps,
            weight_decay=weight_decay,
            row_normalize=row_normalize,
            nesterov=nesterov,
        )
        super().__init__(params, defaults)
        self.compile_ns = compile_ns

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        distributed = dist.is_available() and dist.is_initialized()
        world, rank = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            use_compile = self.compile_ns if self.compile_ns is not None else params[0].is_cuda
            ns = _ns_fn(use_compile)
            lr, mom, wd = group["lr"], group["momentum"], group["weight_decay"]
            mine = [p for i, p in enumerate(params) if i % world == rank]
            updates = {p: torch.zeros_like(p, dtype=torch.bfloat16) for p in params} if world > 1 else {}
            if mine:
                grads = [p.grad for p in mine]
                bufs = []
                for p in mine:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(p.grad)
                    bufs.append(state["momentum_buffer"])
                torch._foreach_mul_(bufs, mom)
                torch._foreach_add_(bufs, grads)
                dirs = torch._foreach_add(grads, bufs, alpha=mom) if group["nesterov"] else bufs
                by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
                for i, p in enumerate(mine):
                    by_shape[tuple(p.shape)].append(i)
                for shape, idx in by_shape.items():
                    g = torch.stack([dirs[i] for i in idx])
                    if group["row_normalize"]:
                        g = g / g.float().norm(dim=-1, keepdim=True).clamp_min(1e-7).to(g.dtype)
                    u = ns(g, steps=group["backend_steps"])
                    u = u * max(1.0, shape[0] / shape[1]) ** 0.5
                    for j, i in enumerate(idx):
                        if world > 1:
                            updates[mine[i]].copy_(u[j])
                        else:
                            updates[mine[i]] = u[j]
            if world > 1:
                flat = torch.cat([updates[p].reshape(-1) for p in params])
                dist.all_reduce(flat, op=dist.ReduceOp.SUM)
                offset = 0
                for p in params:
                    updates[p] = flat[offset : offset + p.numel()].view_as(p)
                    offset += p.numel()
            if wd > 0:
                torch._foreach_mul_(params, 1.0 - lr * wd)
            torch._foreach_add_(params, [updates[p].to(p.dtype) for p in params], alpha=-lr)
        return loss


class ReferenceOptimizer:
    """The record's three optimizers behind one step/zero_grad/state_dict, with a shared LR scale."""

    def __init__(self, model: torch.nn.Module, cfg: OptimConfig | None = None, *, fused: bool | None = None):
        cfg = cfg or OptimConfig()
        self.cfg = cfg
        matrices = list(model.matrix_params().values())  # type: ignore[operator]
        scalars = list(model.scalar_params().values())  # type: ignore[operator]
        embeds = model.embedding_params()  # type: ignore[operator]
        fused = fused if fused is not None else next(model.parameters()).is_cuda
        adam_kw = dict(betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps, fused=fused)
        tied = "out_proj.weight" not in embeds
        emb_lr = cfg.tied_embed_lr if tied else cfg.embed_lr
        self.embed = torch.optim.AdamW(
            [{"params": [embeds["tok_emb.weight"]], "lr": emb_lr, "base_lr": emb_lr}],
            weight_decay=cfg.embed_wd,
            **adam_kw,  # type: ignore[arg-type]
        )
        self.muon = MuonEqR(
            matrices,
            lr=cfg.matrix_lr,
            momentum=cfg.muon_momentum,
            backend_steps=cfg.muon_backend_steps,
            weight_decay=cfg.muon_wd,
            row_normalize=cfg.muon_row_normalize,
        )
        for g in self.muon.param_groups:
            g["base_lr"] = cfg.matrix_lr
        self.scalar = torch.optim.AdamW(
            [{"params": scalars, "lr": cfg.scalar_lr, "base_lr": cfg.scalar_lr}],
            weight_decay=cfg.adam_wd,
            **adam_kw,  # type: ignore[arg-type]
        )
        self.optimizers: list[torch.optim.Optimizer] = [self.embed, self.muon, self.scalar]
        if not tied:
            self.head = torch.optim.Adam(
                [{"params": [embeds["out_proj.weight"]], "lr": cfg.head_lr, "base_lr": cfg.head_lr}],
                **adam_kw,  # type: ignore[arg-type]
            )
            self.optimizers.insert(1, self.head)
        self.params = [p for opt in self.optimizers for g in opt.param_groups for p in g["params"]]

    def set_schedule(self, step: int, lr_scale: float) -> None:
        for g in self.muon.param_groups:
            g["momentum"] = self.cfg.muon_momentum_at(step)
        for opt in self.optimizers:
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * lr_scale

    def clip_grads(self) -> None:
        if self.cfg.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip_norm)

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()
        self.zero_grad()

    def zero_grad(self) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)

    def state_dict(self) -> list[dict[str, Any]]:
        return [opt.state_dict() for opt in self.optimizers]

    def load_state_dict(self, states: list[dict[str, Any]]) -> None:
        for opt, st in zip(self.optimizers, states, strict=True):
            opt.load_state_dict(st)
