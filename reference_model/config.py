"""Architecture of the reference model, as one dataclass.

Every architectural feature of the merged record
`records/track_10min_16mb/2026-04-09_SP8192_3LayerRecur_ParResid_QK525_LegalTTT` (1.0810 BPB) is a field, so an
ablation or a small test model is one `dataclasses.replace` away. The defaults ARE the record's configuration
(its logged hyperparameters, seed-42 run: QK_GAIN_INIT=5.25, NUM_LOOPS=2, LOOP_START=3, LOOP_END=5,
PARALLEL_RESIDUAL_START=7, XSA_LAST_N=11, ROPE_DIMS=16, ...), which has exactly 35,944,536 parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

RECORD_PARAM_COUNT = 35_944_536  # `model_params:35944536` in the record's train_seed42.log


@dataclass(frozen=True)
class ModelConfig:
    # --- sizes -------------------------------------------------------------------------------------------
    vocab_size: int = 8192
    num_layers: int = 11
    model_dim: int = 512
    num_heads: int = 8
    num_kv_heads: int = 4  # grouped-query attention: 2 query heads share each K/V head
    mlp_mult: float = 4.0  # hidden = mlp_mult * model_dim
    # --- MLP ---------------------------------------------------------------------------------------------
    mlp_leaky_slope: float = 0.5  # activation = leaky_relu(x, slope) ** 2
    # --- embeddings / head -------------------------------------------------------------------------------
    tie_embeddings: bool = True  # the output head is the token embedding transposed
    tied_embed_init_std: float = 0.005
    logit_softcap: float = 30.0  # logits = cap * tanh(z / cap)
    # --- attention ---------------------------------------------------------------------------------------
    rope_base: float = 10_000.0
    rope_dims: int = 16  # partial RoPE: only the first 16 of the 64 head dims rotate (0 = all)
    rope_train_seq_len: int = 2048  # longer sequences get NTK-scaled frequencies
    # The record's RoPE tables as its GPU runs compute them: its inv_freq buffer is cast to bf16 by GPT(h).bfloat16()
    # and positions come from arange in that dtype, so positions above 256 are rounded (to multiples of 2, 4, 8 up
    # to 2048). Off by default (our own training uses exact fp32 tables); on when rescoring a record's artifact,
    # whose weights were trained and scored that way (auditor/harness/record_map.py). Only in mixed precision
    # (GPT.to_mixed_precision); an fp32 model keeps fp32 tables, as the record's would.
    rope_bf16_positions: bool = False
    qk_norm: bool = True  # RMS-normalise q and k per head (no weight) before RoPE
    qk_gain_init: float = 5.25  # learnable per-head gain on q (replaces the 1/sqrt(d) temperature's role)
    xsa_last_n: int = 11  # exclusive self-attention on the last N layers (11 = all)
    # --- residual stream ---------------------------------------------------------------------------------
    resid_mix: bool = True  # each block mixes its input with the embedding x0 (learned per channel)
    ln_scale: bool = True  # block i scales its normalised inputs by 1/sqrt(i+1)
    parallel_residual_start: int = 7  # blocks >= this read attention and MLP from the same input (-1 = none)
    unet_skips: bool = True  # decoder blocks receive the encoder outputs, last-in first-out
    skip_gates: bool = True  # skip merged as lerp(w*skip, x, sigmoid(gate)) instead of x + w*skip
    # --- depth recurrence --------------------------------------------------------------------------------
    num_loops: int = 2  # the segment [loop_start, loop_end] runs 1 + num_loops times once enabled (0 = off)
    loop_start: int = 3
    loop_end: int = 5  # inclusive
    loop_enable_frac: float = 0.35  # training switches recurrence on at this fraction of its budget
    # --- init --------------------------------------------------------------------------------------------
    orthogonal_init: bool = True  # matrices with both sides >= 64 get orthogonal init; output projections 0

    def __post_init__(self) -> None:
        if self.model_dim % self.num_heads:
            raise ValueError(f"model_dim {self.model_dim} is not divisible by num_heads {self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads {self.num_heads} is not divisible by num_kv_heads {self.num_kv_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even for RoPE")
        if self.rope_dims < 0 or self.rope_dims > self.head_dim or self.rope_dims % 2:
            raise ValueError(f"rope_dims {self.rope_dims} must be even and within 0..{self.head_dim}")
        if self.logit_softcap <= 0:
            raise ValueError(f"logit_softcap must be positive, got {self.logit_softcap}")
        if self.num_loops < 0:
            raise ValueError("num_loops must be >= 0")
        if self.num_loops and not 0 <= self.loop_start <= self.loop_end < self.num_layers:
            raise ValueError(
                f"loop segment [{self.loop_start}, {self.loop_end}] is outside 0..{self.num_layers - 1}"
            )

    # --- derived -----------------------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.model_dim // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.mlp_mult * self.model_dim)

    def layer_schedule(self, recurrence: bool) -> tuple[list[int], list[int]]:
        """(encoder, decoder) physical block indices in execution order.

        Without recurrence the first num_layers//2 blocks are the encoder. With it, the loop segment is repeated
        1 + num_loops times in place and the virtual sequence is split in half: for the record,
        [0,1,2,3,4,5,3,4] | [5,3,4,5,6,7,8,9,10] (17 virtual layers from 11 blocks).
        """
        if recurrence and self.num_loops > 0:
            segment = list(range(self.loop_start, self.loop_end + 1))
            order = list(range(self.loop_start)) + segment * (self.num_loops + 1)
            order += list(range(self.loop_end + 1, self.num_layers))
            half = len(order) // 2
            return order[:half], order[half:]
        half = self.num_layers // 2
        return list(range(half)), list(range(half, self.num_layers))

    @property
    def num_skip_weights(self) -> int:
        """Skip parameters are sized for the longest schedule (recurrence on), as in the record."""
        if not self.unet_skips:
            return 0
        enc, dec = self.layer_schedule(recurrence=self.num_loops > 0)
        return min(len(enc), len(dec))

    def expected_param_count(self) -> int:
        """Closed-form parameter count (checked against the built module in the tests)."""
        d, kv = self.model_dim, self.num_kv_heads * self.head_dim
        attn = d * d * 2 + d * kv * 2 + self.num_heads
        mlp = 2 * d * self.mlp_hidden
        per_block = attn + mlp + 2 * d + (2 * d if self.resid_mix else 0)
        emb = self.vocab_size * d * (1 if self.tie_embeddings else 2)
        skips = self.num_skip_weights * d * (2 if self.skip_gates else 1)
        return self.num_layers * per_block + emb + skips

    # --- presets -----------------------------------------------------------------------------------------
    @classmethod
    def record(cls) -> ModelConfig:
        return cls()

    @classmethod
    def tiny(cls, **overrides: object) -> ModelConfig:
        """A CPU-test model that keeps every feature switched on (recurrence, XSA, parallel residuals, gates)."""
        base = cls(
            vocab_size=8192,
            num_layers=5,
            model_dim=64,
            num_heads=4,
            num_kv_heads=2,
            mlp_mult=2.0,
            rope_dims=8,
            rope_train_seq_len=64,
            xsa_last_n=5,
            parallel_residual_start=3,
            num_loops=1,
            loop_start=1,
            loop_end=2,
        )
        return replace(base, **overrides)  # type: ignore[arg-type]
