"""The reference GPT: a readable reimplementation of the 2026-04-09 SP8192 record's architecture.

    tokens -> embedding -> RMSNorm = x0
      encoder blocks (outputs pushed on a stack)
      decoder blocks (each first merges the last pushed encoder output: U-Net skip with a sigmoid gate)
    -> RMSNorm -> tied head (x @ E^T) -> softcap 30 * tanh(z / 30)

Block i (physical index i, shared by every repetition under depth recurrence):
    h   = mix[0] * x + mix[1] * x0                                 (resid_mix)
    a   = Attn(rms(h) / sqrt(i+1))                                 (ln_scale)
    sequential (i < 7):  x' = h + s_a * a;  x' = x' + s_m * MLP(rms(x') / sqrt(i+1))
    parallel  (i >= 7):  x' = h + s_a * a + s_m * MLP(rms(h) / sqrt(i+1))
Attention: q, k RMS-normalised per head, partial RoPE on the first 16 of 64 dims, q scaled by a learnable
per-head gain (init 5.25), causal GQA (8 query / 4 KV heads), then XSA: each head's output loses its component
along its own token's (unit) value vector. MLP: leaky_relu(x, 0.5)^2.

Precision: the record keeps the token embedding in bf16 (so the residual stream is bf16 under autocast) and
every other weight in fp32 with bf16 autocast compute; `GPT.to_mixed_precision()` reproduces that on GPU. CPU
tests run the whole model in fp32.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reference_model.attention import attention_fn, resolve_backend
from reference_model.config import ModelConfig

# Parameter names the optimizer treats as scalars/control tensors even when 2-D (the record's
# CONTROL_TENSOR_NAME_PATTERNS): they go to AdamW, never to Muon, and stay fp16 passthrough in the artifact.
CONTROL_PARAM_NAMES = ("attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weights", "skip_gates")


def rms_norm(x: Tensor) -> Tensor:
    return F.rms_norm(x, (x.size(-1),))


class Rotary(nn.Module):
    """Partial rotary embedding: rotates dims [0, rope_dims) of each head as two halves, leaves the rest.

    Beyond the training length the base is NTK-scaled: base * (T / T_train) ** (d / (d - 2)).
    """

    def __init__(self, rope_dims: int, base: float, train_seq_len: int, bf16_positions: bool = False):
        super().__init__()
        self.rope_dims = rope_dims
        self.base = base
        self.train_seq_len = train_seq_len
        self.register_buffer("inv_freq", None, persistent=False)
        if bf16_positions:
            # The records keep inv_freq as a (non-persistent) buffer computed on the CPU; their GPT(h).bfloat16()
            # rounds it to bf16 and their restore_fp32_params() never restores buffers. GPT.to_mixed_precision()
            # does the same to this buffer (see ModelConfig.rope_bf16_positions).
            inv = 1.0 / base ** (torch.arange(0, rope_dims, 2, dtype=torch.float32) / rope_dims)
            self.register_buffer("inv_freq", inv, persistent=False)

    def cos_sin(self, seq_len: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """[1, T, 1, rope_dims/2] tables; recomputed per call (cheap, and keeps torch.compile graphs pure)."""
        d = self.rope_dims
        base = self.base
        if self.inv_freq is not None and seq_len <= self.train_seq_len:
            # the records' cached path, op for op: positions by arange in the buffer's dtype (bf16 on GPU, where
            # positions above 256 round to multiples of 2..8), outer product and cos/sin in that dtype
            inv_freq = self.inv_freq.to(device)
            t = torch.arange(seq_len, device=device, dtype=inv_freq.dtype)
            freqs = torch.outer(t, inv_freq)
            return freqs.cos()[None, :, None, :], freqs.sin()[None, :, None, :]
        if seq_len > self.train_seq_len:
            base = base * (seq_len / self.train_seq_len) ** (d / (d - 2))
        inv_freq = 1.0 / base ** (torch.arange(0, d, 2, dtype=torch.float32, device=device) / d)
        angles = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), inv_freq)
        return angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, T, H, D]."""
        if self.rope_dims == 0:
            return x
        cos, sin = self.cos_sin(x.size(1), x.device)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        half = self.rope_dims // 2
        x1, x2 = x[..., :half], x[..., half : self.rope_dims]
        rotated = torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)
        if self.rope_dims == x.size(-1):
            return rotated
        return torch.cat((rotated, x[..., self.rope_dims :]), dim=-1)


def exclusive_self_attention(y: Tensor, v: Tensor) -> Tensor:
    """XSA: remove from each head's output its projection on the (normalised) value of its own token.

    y: [B, T, H, D]; v: [B, T, Hkv, D]; query head h uses KV head h // (H / Hkv), as GQA does.
    """
    b, t, h, d = y.shape
    hkv = v.size(2)
    yg = y.reshape(b, t, hkv, h // hkv, d)
    vn = F.normalize(v, dim=-1).unsqueeze(3)  # [B, T, Hkv, 1, D]
    yg = yg - (yg * vn).sum(dim=-1, keepdim=True) * vn
    return yg.reshape(b, t, h, d)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, use_xsa: bool):
        super().__init__()
        d, hd = cfg.model_dim, cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, hd
        self.c_q = nn.Linear(d, cfg.num_heads * hd, bias=False)
        self.c_k = nn.Linear(d, cfg.num_kv_heads * hd, bias=False)
        self.c_v = nn.Linear(d, cfg.num_kv_heads * hd, bias=False)
        self.proj = nn.Linear(cfg.num_heads * hd, d, bias=False)
        self.proj.zero_init = True  # type: ignore[assignment]
        self.q_gain = nn.Parameter(torch.full((cfg.num_heads,), cfg.qk_gain_init, dtype=torch.float32))
        self.qk_norm = cfg.qk_norm
        self.use_xsa = use_xsa
        self.rotary = Rotary(
            cfg.rope_dims if cfg.rope_dims else hd,
            cfg.rope_base,
            cfg.rope_train_seq_len,
            cfg.rope_bf16_positions,
        )
        self.backend = "sdpa"  # set by GPT.set_attention_backend
        self.fused_qkv = False  # a speed switch (GPT.set_fused_qkv), not architecture

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        if self.fused_qkv:  # one GEMM over the concatenated weights; same parameters, same result
            w = torch.cat((self.c_q.weight, self.c_k.weight, self.c_v.weight))
            q, k, v = F.linear(x, w).split(
                (self.c_q.out_features, self.c_k.out_features, self.c_v.out_features), -1
            )
        else:
            q, k, v = self.c_q(x), self.c_k(x), self.c_v(x)
        q = q.view(b, t, self.num_heads, self.head_dim)
        k = k.view(b, t, self.num_kv_heads, self.head_dim)
        v = v.view(b, t, self.num_kv_heads, self.head_dim)
        if self.qk_norm:
            q, k = rms_norm(q), rms_norm(k)
        q, k = self.rotary(q), self.rotary(k)
        q = q * self.q_gain.to(q.dtype)[:, None]
        y = attention_fn(self.backend)(q, k, v)
        if self.use_xsa:
            y = exclusive_self_attention(y, v)
        return self.proj(y.reshape(b, t, self.num_heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.model_dim, cfg.mlp_hidden, bias=False)
        self.proj = nn.Linear(cfg.mlp_hidden, cfg.model_dim, bias=False)
        self.proj.zero_init = True  # type: ignore[assignment]
        self.slope = cfg.mlp_leaky_slope

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.leaky_relu(self.fc(x), negative_slope=self.slope).square())


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        d = cfg.model_dim
        self.attn = CausalSelfAttention(cfg, use_xsa=layer_idx >= cfg.num_layers - cfg.xsa_last_n)
        self.mlp = MLP(cfg)
        self.attn_scale = nn.Parameter(torch.ones(d))
        self.mlp_scale = nn.Parameter(torch.ones(d))
        # Row 0 weighs the running stream, row 1 the embedding x0; init = identity on the stream.
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(d), torch.zeros(d)))) if cfg.resid_mix else None
        self.norm_scale = 1.0 / math.sqrt(layer_idx + 1) if cfg.ln_scale else 1.0
        self.parallel = 0 <= cfg.parallel_residual_start <= layer_idx

    def forward(
        self,
        x: Tensor,
        x0: Tensor,
        skip: Tensor | None = None,
        skip_weight: Tensor | None = None,
        skip_gate: Tensor | None = None,
    ) -> Tensor:
        # U-Net skip merge (decoder blocks), done here so that a compiled block region fuses it.
        if skip is not None:
            assert skip_weight is not None
            scaled = skip_weight.to(x.dtype) * skip
            if skip_gate is not None:
                x = torch.lerp(scaled, x, torch.sigmoid(skip_gate.to(x.dtype)))  # gate*x + (1-gate)*skip
            else:
                x = x + scaled
        if self.resid_mix is not None:
            mix = self.resid_mix.to(x.dtype)
            x = mix[0] * x + mix[1] * x0
        a = self.attn(rms_norm(x) * self.norm_scale)
        if self.parallel:
            m = self.mlp(rms_norm(x) * self.norm_scale)
            return x + self.attn_scale.to(x.dtype) * a + self.mlp_scale.to(x.dtype) * m
        x = x + self.attn_scale.to(x.dtype) * a
        return x + self.mlp_scale.to(x.dtype) * self.mlp(rms_norm(x) * self.norm_scale)


class TiedHead(nn.Module):
    """logits = softcap(x @ W^T). Holds no parameter: W (the token embedding) is passed in, so that a forward
    hook on this module sees the activation that multiplies the embedding (GPTQ's Hessian for `tok_emb`)."""

    def __init__(self, softcap: float):
        super().__init__()
        self.softcap = softcap

    def forward(self, x: Tensor, weight: Tensor) -> Tensor:
        # Softcap in the compute dtype, then float32 (the record's order: its forward_logits returns the
        # capped bf16 logits and its loss casts them), so bf16 runs round exactly where the record does.
        z = F.linear(x, weight.to(x.dtype))
        return (self.softcap * torch.tanh(z / self.softcap)).float()


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig | None = None):
        super().__init__()
        cfg = cfg or ModelConfig()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.model_dim)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.num_layers))
        self.lm_head = TiedHead(cfg.logit_softcap)
        self.out_proj = None if cfg.tie_embeddings else nn.Linear(cfg.model_dim, cfg.vocab_size, bias=False)
        n_skip = cfg.num_skip_weights
        self.skip_weights = nn.Parameter(torch.ones(n_skip, cfg.model_dim)) if n_skip else None
        self.skip_gates = (
            nn.Parameter(torch.zeros(n_skip, cfg.model_dim)) if n_skip and cfg.skip_gates else None
        )
        self.recurrence = False
        self.attention_backend = "sdpa"
        self.reset_parameters()

    # --- construction ------------------------------------------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self) -> None:
        if self.tok_emb.weight.is_meta:
            return
        nn.init.normal_(self.tok_emb.weight, mean=0.0, std=self.cfg.tied_embed_init_std)
        for module in self.modules():
            if not isinstance(module, nn.Linear):
                continue
            if getattr(module, "zero_init", False):
                nn.init.zeros_(module.weight)
            elif self.cfg.orthogonal_init and min(module.weight.shape) >= 64:
                nn.init.orthogonal_(module.weight, gain=1.0)
            # else: keep nn.Linear's default (kaiming-uniform), as the record does for small matrices
        if self.out_proj is not None:
            nn.init.zeros_(self.out_proj.weight)

    def to_mixed_precision(self, dtype: torch.dtype = torch.bfloat16) -> GPT:
        """The record's GPU precision policy: token embedding stored in `dtype`, everything else fp32."""
        self.float()
        self.tok_emb.to(dtype)
        if self.cfg.rope_bf16_positions:  # the records' .bfloat16() reaches the RoPE buffer too (config.py)
            for block in self.blocks:
                rot = block.attn.rotary
                if rot.inv_freq is not None:
                    rot.inv_freq = rot.inv_freq.to(dtype)
        return self

    def set_recurrence(self, enabled: bool) -> None:
        """Depth recurrence on/off (the record switches it on at 35% of training and keeps it for eval)."""
        self.recurrence = bool(enabled) and self.cfg.num_loops > 0

    def set_attention_backend(self, backend: str = "auto") -> str:
        """'auto' | 'fa3' | 'sdpa'; returns the backend in use."""
        resolved = resolve_backend(backend, self.tok_emb.weight.device)
        self.attention_backend = resolved
        for block in self.blocks:
            block.attn.backend = resolved
        return resolved

    def set_fused_qkv(self, enabled: bool) -> None:
        """Compute q, k, v with one matmul (training speed); `capture_inputs` turns it off while hooking."""
        for block in self.blocks:
            block.attn.fused_qkv = bool(enabled)

    def layer_schedule(self) -> tuple[list[int], list[int]]:
        return self.cfg.layer_schedule(self.recurrence)

    # --- forward -----------------------------------------------------------------------------------------
    def embed(self, input_ids: Tensor) -> Tensor:
        """x0 = RMSNorm(embedding): the stream's start, fed to every block (resid_mix)."""
        return rms_norm(self.tok_emb(input_ids))

    def trunk(self, x0: Tensor) -> Tensor:
        """All (virtual) blocks; returns the residual stream before the final norm."""
        x = x0
        encoder, decoder = self.layer_schedule()
        skips: list[Tensor] = []
        for i in encoder:
            x = self.blocks[i](x, x0)
            skips.append(x)
        for j, i in enumerate(decoder):
            if self.skip_weights is not None and j < self.skip_weights.size(0) and skips:
                gate = self.skip_gates[j] if self.skip_gates is not None else None
                x = self.blocks[i](x, x0, skips.pop(), self.skip_weights[j], gate)
            else:
                x = self.blocks[i](x, x0)
        return x

    def head_loss(self, x: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
        """Final norm -> tied head -> softcap -> cross-entropy (one compiled region under compile_regions)."""
        logits = self.lm_head(rms_norm(x), self._head_weight())
        nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction=reduction)
        return nll if reduction != "none" else nll.view_as(targets)

    def _head_weight(self) -> Tensor:
        return self.tok_emb.weight if self.out_proj is None else self.out_proj.weight

    def hidden(self, input_ids: Tensor) -> Tensor:
        """Final-normed hidden states [B, T, d] (the input of the output head)."""
        return rms_norm(self.trunk(self.embed(input_ids)))

    def logits(self, input_ids: Tensor) -> Tensor:
        return self.lm_head(self.hidden(input_ids), self._head_weight())

    def forward(self, input_ids: Tensor, targets: Tensor | None = None, reduction: str = "mean") -> Tensor:
        """Softcapped float32 logits [B, T, V]; with `targets`, the cross-entropy instead (see `loss`).

        Taking targets here lets DDP and torch.compile wrap one call that returns the loss."""
        if targets is None:
            return self.logits(input_ids)
        return self.head_loss(self.trunk(self.embed(input_ids)), targets, reduction)

    def loss(self, input_ids: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
        """Mean next-token cross-entropy in nats, or per-token [B, T] with reduction='none'."""
        return self(input_ids, targets, reduction)

    def compile_regions(self, **compile_kwargs: object) -> GPT:
        """torch.compile each block, the embedding stem and the head+loss separately ("regional" compile).

        Same function as compiling the whole model (tested with dynamo; bf16 step losses agree within 0.002).
        Why: compiled whole, inductor fuses the gradient of x0 (read by every block through resid_mix) across all
        blocks into a few once-per-micro-batch kernels (1.2-7.8 ms each on an H100, 185 ms of a recurrent step);
        per-block regions leave that sum to autograd. Net, measured on one H100: 2.0% faster with recurrence on,
        1.8% slower with it off (lost cross-block fusion); train.py's compile_mode="auto" picks accordingly.
        Recompiles once per distinct block (their constants differ), so dynamo's recompile limit is raised.
        """
        cfg = torch._dynamo.config
        for name in ("recompile_limit", "cache_size_limit"):
            if hasattr(cfg, name):
                setattr(cfg, name, max(int(getattr(cfg, name)), 64))
        for block in self.blocks:
            block.compile(**compile_kwargs)  # type: ignore[arg-type]
        # Instance attributes shadow the methods; the state dict and the eager methods are unaffected.
        self.embed = torch.compile(self.embed, **compile_kwargs)  # type: ignore[method-assign]
        self.head_loss = torch.compile(self.head_loss, **compile_kwargs)  # type: ignore[method-assign]
        return self

    # --- parameter groups --------------------------------------------------------------------------------
    def matrix_params(self) -> dict[str, nn.Parameter]:
        """The 2-D block weights (Muon's params): c_q, c_k, c_v, attn proj, fc, mlp proj of every block."""
        return {
            f"blocks.{n}": p
            for n, p in self.blocks.named_parameters()
            if p.ndim == 2 and not any(c in n for c in CONTROL_PARAM_NAMES)
        }

    def embedding_params(self) -> dict[str, nn.Parameter]:
        out = {"tok_emb.weight": self.tok_emb.weight}
        if self.out_proj is not None:
            out["out_proj.weight"] = self.out_proj.weight
        return out

    def scalar_params(self) -> dict[str, nn.Parameter]:
        """Gains, scales, mixes and skip parameters (AdamW at the scalar LR)."""
        out = {
            f"blocks.{n}": p
            for n, p in self.blocks.named_parameters()
            if p.ndim < 2 or any(c in n for c in CONTROL_PARAM_NAMES)
        }
        for name in ("skip_weights", "skip_gates"):
            p = getattr(self, name)
            if p is not None:
                out[name] = p
        return out

    # --- GPTQ support ------------------------------------------------------------------------------------
    def gptq_layers(self) -> dict[str, nn.Module]:
        """Weight name -> module whose forward input[0] is the activation X that the weight multiplies.

        GPTQ's Hessian for the weight is sum(X^T X) over calibration tokens. The nn.Linear matrices map to
        themselves; the tied embedding maps to the head (input = final-normed hidden state). Under depth
        recurrence a looped block's hooks fire once per repetition, as in the record's Hessian collection.
        """
        layers: dict[str, nn.Module] = {
            f"{n}.weight": m for n, m in self.named_modules() if isinstance(m, nn.Linear)
        }
        if self.out_proj is None:
            layers["tok_emb.weight"] = self.lm_head
        else:
            layers.pop("out_proj.weight", None)
            layers["out_proj.weight"] = self.lm_head
        return layers

    @contextlib.contextmanager
    def capture_inputs(self, callback: Callable[[str, Tensor], None]) -> Iterator[None]:
        """While active, every forward calls callback(weight_name, X) with X = the layer input as [N, in]."""

        def make_hook(name: str) -> Callable[..., None]:
            def hook(_module: nn.Module, inputs: tuple[Tensor, ...], _output: Tensor) -> None:
                x = inputs[0].detach()
                callback(name, x.reshape(-1, x.size(-1)))

            return hook

        fused = [block.attn.fused_qkv for block in self.blocks]
        self.set_fused_qkv(False)  # the c_q / c_k / c_v modules must run for their hooks to fire
        handles = [m.register_forward_hook(make_hook(n)) for n, m in self.gptq_layers().items()]
        try:
            yield
        finally:
            for h in handles:
                h.remove()
            for block, was in zip(self.blocks, fused):
                block.attn.fused_qkv = was


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_on_meta(cfg: ModelConfig | None = None) -> GPT:
    """The model's structure without allocating its weights (for parameter counting)."""
    with torch.device("meta"):
        return GPT(cfg)
