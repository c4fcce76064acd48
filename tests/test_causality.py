"""PG304 non-causal-model: sequence mixing in the scored model that lets the token at t or later reach position t."""

from __future__ import annotations

import pytest

from auditor.findings import Verdict
from auditor.testing import submission_from_files
from tests._targets_helpers import fixture_files, gating, run, run_fixture

RULE = "PG304"
CONV_LINE = "        self.depthwise = nn.Conv1d(dim, dim, kernel_size=kernel, padding=reach, dilation=dilation, groups=dim)\n"
MASK_LINE = "    mask[:num_mem, num_mem:] = True\n"


def _replace(old: str, new: str):
    def tr(src: str) -> str:
        assert old in src, old
        return src.replace(old, new)

    return tr


# -- convolutions ---------------------------------------------------------------------------------------------------
def test_same_padded_conv_over_the_sequence_fails_at_its_construction() -> None:
    verdict, findings = run_fixture("noncausal_conv_same_padding", RULE)
    assert verdict is Verdict.FAIL
    first = gating(findings, Verdict.FAIL)[0]
    assert first.primary is not None and first.primary.line == 28
    assert "sequence axis" in first.message
    assert any(loc.line == 33 for loc in first.related)  # where the conv runs: self.depthwise(y)


def test_causal_convs_pass() -> None:
    verdict, findings = run_fixture("causal_conv_left_pad_legal", RULE)
    assert verdict is Verdict.PASS, [f.message for f in findings]
    assert not findings


@pytest.mark.parametrize(
    "padding",
    ["padding='same'", "padding=kernel // 2", "padding=2"],
    ids=["same", "k//2", "literal"],
)
def test_other_centred_paddings_fail(padding: str) -> None:
    new = CONV_LINE.replace("padding=reach", padding).replace("kernel_size=kernel", "kernel_size=5")
    verdict, findings = run_fixture("noncausal_conv_same_padding", RULE, _replace(CONV_LINE, new))
    assert verdict is Verdict.FAIL, [f.message for f in findings]


def test_kernel_one_is_pointwise_and_passes() -> None:
    new = CONV_LINE.replace("kernel_size=kernel", "kernel_size=1")
    verdict, _ = run_fixture("noncausal_conv_same_padding", RULE, _replace(CONV_LINE, new))
    assert verdict is Verdict.PASS


def test_symmetric_input_pad_fails_and_left_trim_of_full_padding_fails() -> None:
    sym = _replace("(self.reach, 0)", "(self.reach // 2, self.reach // 2)")
    verdict, findings = run_fixture("causal_conv_left_pad_legal", RULE, sym)
    assert (
        verdict is Verdict.FAIL
        and "symmetric padding of its input" in gating(findings, Verdict.FAIL)[0].message
    )
    left = _replace("[..., :t]", "[..., -t:]")
    verdict, findings = run_fixture("causal_conv_left_pad_legal", RULE, left)
    assert verdict is Verdict.FAIL and "first outputs cut off" in gating(findings, Verdict.FAIL)[0].message


def test_full_padding_without_any_trim_is_warn() -> None:
    verdict, findings = run_fixture("causal_conv_left_pad_legal", RULE, _replace("[..., :t]", ""))
    assert verdict is Verdict.WARN, [f.message for f in findings]


def test_conv_whose_axis_cannot_be_told_is_warn() -> None:
    verdict, findings = run_fixture(
        "noncausal_conv_same_padding",
        RULE,
        _replace("        y = h.transpose(1, 2)\n", "        y = h.float()\n"),
    )
    assert verdict is Verdict.WARN
    assert "axis" in gating(findings, Verdict.WARN)[0].message


# -- attention ------------------------------------------------------------------------------------------------------
def test_memory_rows_opened_to_the_sequence_fail_at_the_store() -> None:
    verdict, findings = run_fixture("noncausal_memory_tokens", RULE)
    assert verdict is Verdict.FAIL
    first = gating(findings, Verdict.FAIL)[0]
    assert first.primary is not None and first.primary.line == 25
    assert any(loc.line == 44 for loc in first.related)  # the attention call that uses the mask


def test_memory_rows_reading_only_memory_pass() -> None:
    tr = _replace(MASK_LINE, "    mask[:num_mem, :num_mem] = True\n")
    verdict, findings = run_fixture("noncausal_memory_tokens", RULE, tr)
    assert verdict is Verdict.PASS, [f.message for f in findings]


def test_additive_memory_mask_fails() -> None:
    tr = _replace(
        "    mask = torch.tril(torch.ones(n, n, dtype=torch.bool, device=device))\n" + MASK_LINE,
        "    mask = torch.triu(torch.full((n, n), float('-inf'), device=device), diagonal=1)\n"
        "    mask[:num_mem, num_mem:] = 0.0\n",
    )
    verdict, findings = run_fixture("noncausal_memory_tokens", RULE, tr)
    assert verdict is Verdict.FAIL
    assert gating(findings, Verdict.FAIL)[0].primary.line == 25


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        ("F.scaled_dot_product_attention(q, k, v, is_causal=True)", Verdict.PASS),
        ("F.scaled_dot_product_attention(q, k, v, is_causal=False)", Verdict.FAIL),
        ("F.scaled_dot_product_attention(q, k, v)", Verdict.FAIL),
        ("F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)", Verdict.PASS),
        ("F.scaled_dot_product_attention(q, k, v, is_causal=not self.causal)", Verdict.FAIL),
        ("F.scaled_dot_product_attention(q, k, v, **self.sdpa_opts)", Verdict.WARN),
    ],
    ids=["causal", "is_causal-false", "default", "flag-from-env-on", "flag-from-env-off", "opaque-kwargs"],
)
def test_sdpa_flags(call: str, expected: Verdict) -> None:
    def tr(src: str) -> str:
        src = src.replace("F.scaled_dot_product_attention(q, k, v, is_causal=True)", call)
        return src.replace(
            "        self.heads = h.num_heads\n",
            "        self.heads = h.num_heads\n        self.causal = bool(int(os.environ.get('CAUSAL', '1')))\n",
            1,
        )

    verdict, findings = run_fixture("noncausal_conv_same_padding", RULE, _conv_fixed(tr))
    assert verdict is expected, [f.message for f in findings]
    if expected is Verdict.FAIL:  # line 49 of the fixture, +1 for the causal pad, +1 for the flag attribute
        assert gating(findings, Verdict.FAIL)[0].primary.line == 51


def _conv_fixed(tr):  # noqa: ANN001, ANN202 - the attention tests run on the fixture with its conv made causal
    def both(src: str) -> str:
        src = src.replace("padding=reach, ", "")
        src = src.replace(
            "        y = h.transpose(1, 2)\n", "        y = F.pad(h.transpose(1, 2), (reach_left, 0))\n"
        )
        src = src.replace(
            "    def forward(self, h: torch.Tensor) -> torch.Tensor:\n",
            "    def forward(self, h: torch.Tensor) -> torch.Tensor:\n        reach_left = 4\n",
            1,
        )
        return tr(src)

    return both


def test_flash_attention_causal_flag() -> None:
    def flash(flag: str):  # noqa: ANN202
        def tr(src: str) -> str:
            src = src.replace(
                "from torch import nn\n",
                "from torch import nn\nfrom flash_attn_interface import flash_attn_func as fa3\n",
            )
            return src.replace(
                "F.scaled_dot_product_attention(q, k, v, is_causal=True)",
                f"fa3(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2){flag}).transpose(1, 2)",
            )

        return _conv_fixed(tr)

    # line 49 of the fixture, +1 for the causal pad, +1 for the import
    assert run_fixture("noncausal_conv_same_padding", RULE, flash(", causal=True"))[0] is Verdict.PASS
    verdict, findings = run_fixture("noncausal_conv_same_padding", RULE, flash(", causal=False"))
    assert verdict is Verdict.FAIL and gating(findings, Verdict.FAIL)[0].primary.line == 51
    verdict, findings = run_fixture("noncausal_conv_same_padding", RULE, flash(""))
    assert verdict is Verdict.FAIL and "default is causal=False" in gating(findings, Verdict.FAIL)[0].message


def test_mask_passed_through_a_parameter_is_followed() -> None:
    """The mask is built by the caller and passed down through the block's forward (a submodule call)."""
    files = fixture_files("noncausal_memory_tokens")
    src = files["train_gpt.py"]
    src = src.replace(
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:\n        b, t, d = x.shape\n",
        "    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:\n        b, t, d = x.shape\n",
    )
    src = src.replace("        mask = memory_mask(self.num_mem, t, x.device)\n", "")
    src = src.replace(
        "            x = block(x)\n", "            x = block(x, memory_mask(8, x.size(1), x.device))\n"
    )
    files["train_gpt.py"] = src
    verdict, findings = run(submission_from_files(files, root="param_mask"), RULE)
    assert verdict is Verdict.FAIL, [f.message for f in findings]


def test_learned_memory_keys_without_mask_pass() -> None:
    """Attending to learned key/value slots (no token in them) with is_causal=False is causal."""
    tr = _replace(
        "        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)\n",
        "        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)\n"
        "        mk = self.mem_k.expand(b, -1, -1, -1)\n"
        "        y = y + F.scaled_dot_product_attention(q, mk, mk, is_causal=False)\n",
    )

    def add_param(src: str) -> str:
        return tr(src).replace(
            "        self.heads = h.num_heads\n",
            "        self.heads = h.num_heads\n        self.mem_k = nn.Parameter(torch.zeros(1, h.num_heads, 4, h.model_dim // h.num_heads))\n",
            1,
        )

    verdict, findings = run_fixture("noncausal_conv_same_padding", RULE, _conv_fixed(add_param))
    assert verdict is Verdict.PASS, [f.message for f in findings]


def test_default_off_flag_is_information_only() -> None:
    tr = _replace(
        "        x = self.local(x)\n",
        "        if int(os.environ.get('LOCAL_CONV', '0')):\n            x = self.local(x)\n",
    )
    verdict, findings = run_fixture("noncausal_conv_same_padding", RULE, tr)
    assert verdict is Verdict.PASS
    assert findings and "Not run by default" in findings[0].message


# -- scoring context ------------------------------------------------------------------------------------------------
_DIFFUSION = """
import os
import torch
import torch.nn.functional as F
from torch import nn

MASK_ID = 1024


class Denoiser(nn.Module):
    def __init__(self, vocab, dim, heads):
        super().__init__()
        self.heads = heads
        self.emb = nn.Embedding(vocab + 1, dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, ids):
        x = self.emb(ids)
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=False)
        return self.head(y.transpose(1, 2).reshape(b, t, d))


@torch.no_grad()
def elbo_bits(model, x0, steps):
    total = 0.0
    for s in range(1, steps + 1):
        keep = 1.0 - s / steps
        xt = torch.where(torch.rand_like(x0.float()) > keep, MASK_ID, x0)
        lp = torch.log_softmax(model(xt), dim=-1)
        nll = -torch.gather(lp, -1, x0[..., None]).squeeze(-1)
        total += (nll * (xt == MASK_ID)).sum().item() / steps
    return total


if __name__ == "__main__":
    print(elbo_bits(Denoiser(1024, 64, 4), torch.load(os.path.join("data", "fineweb_val_000000.pt")), 32))
"""


def test_masked_denoising_eval_is_warn_not_fail() -> None:
    verdict, findings = run(submission_from_files({"train_gpt.py": _DIFFUSION}, root="mdlm"), RULE)
    assert verdict is Verdict.WARN, [f.message for f in findings]
    warn = gating(findings, Verdict.WARN)[0]
    assert (
        warn.primary.line == _line(_DIFFUSION, "scaled_dot_product_attention")
        and "masked denoising" in warn.message
    )
    assert any(
        loc.line == _line(_DIFFUSION, "MASK_ID, x0)") for loc in warn.related
    )  # where the tokens are masked


def test_unmasked_bidirectional_eval_fails() -> None:
    """The same bidirectional model scored on the raw tokens (no masking) sees the scored token: FAIL."""
    src = _DIFFUSION.replace(
        "        xt = torch.where(torch.rand_like(x0.float()) > keep, MASK_ID, x0)\n", "        xt = x0\n"
    )
    verdict, findings = run(submission_from_files({"train_gpt.py": src}, root="bidir"), RULE)
    assert verdict is Verdict.FAIL, [f.message for f in findings]


_DUAL = """
import os
import torch
import torch.nn.functional as F
from torch import nn


class Attn(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)

    def forward(self, x, causal=True):
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return y.transpose(1, 2).reshape(b, t, d)


class LM(nn.Module):
    def __init__(self, vocab, dim):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.attn = Attn(dim, 4)
        self.head = nn.Linear(dim, vocab)

    def forward(self, ids, causal=True):
        return self.head(self.attn(self.emb(ids), causal=causal))


def train(model, tokens, steps):
    opt = torch.optim.AdamW(model.parameters())
    for step in range(steps):
        chunk = tokens[step * 256 : step * 256 + 257]
        ar = F.cross_entropy(model(chunk[None, :-1])[0], chunk[1:])
        aux = F.cross_entropy(model(chunk[None, :-1], causal=False)[0], chunk[:-1])
        (ar + 0.1 * aux).backward()
        opt.step()


@torch.no_grad()
def evaluate(model, tokens):
    return F.cross_entropy(model(tokens[None, :-1]{EVAL})[0], tokens[1:]).item()


if __name__ == "__main__":
    m = LM(1024, 64)
    train(m, torch.load(os.path.join("data", "fineweb_train_000000.pt")), 100)
    print(evaluate(m, torch.load(os.path.join("data", "fineweb_val_000000.pt"))))
"""


def test_bidirectional_training_objective_passes_and_bidirectional_scoring_fails() -> None:
    verdict, findings = run(
        submission_from_files({"train_gpt.py": _DUAL.replace("{EVAL}", "")}, root="dual"), RULE
    )
    assert verdict is Verdict.PASS, [f.message for f in findings]
    src = _DUAL.replace("{EVAL}", ", causal=False")
    verdict, findings = run(submission_from_files({"train_gpt.py": src}, root="dual_bad"), RULE)
    assert verdict is Verdict.FAIL, [f.message for f in findings]
    fail = gating(findings, Verdict.FAIL)[0]
    assert (
        fail.primary.line == _line(src, "scaled_dot_product_attention") and "passes `False`" in fail.message
    )


def _line(src: str, text: str) -> int:
    """1-based line of the first line containing `text` (sources here start with a newline, as written)."""
    return next(i for i, line in enumerate(src.splitlines(), 1) if text in line)


@pytest.mark.parametrize(("flag", "expected"), [("True", Verdict.PASS), ("False", Verdict.FAIL)])
def test_sdpa_options_dict_is_read(flag: str, expected: Verdict) -> None:
    """`opts = {"attn_mask": None, "is_causal": True}; sdpa(q, k, v, **opts)` (a shape seen in submissions)."""
    call = "        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)\n"
    new = (
        f'        opts = {{"attn_mask": None, "is_causal": {flag}}}\n'
        "        opts['scale'] = 0.125\n"
        "        y = F.scaled_dot_product_attention(q, k, v, **opts)\n"
    )
    verdict, findings = run_fixture("noncausal_conv_same_padding", RULE, _conv_fixed(_replace(call, new)))
    assert verdict is expected, [f.message for f in findings]


# -- whole-sequence summaries broadcast back to every position ---------------------------------------------------------
SUMMARY_USE = "        x = x + self.prior(self.summary(x)).unsqueeze(1)\n"


def test_scan_whose_final_state_is_broadcast_fails_at_the_loop() -> None:
    verdict, findings = run_fixture("noncausal_scan_final_state_broadcast", RULE)
    assert verdict is Verdict.FAIL
    first = gating(findings, Verdict.FAIL)[0]
    assert first.primary is not None and first.primary.line == 33
    assert "FINAL state" in first.message


def test_scan_with_per_step_states_passes() -> None:
    verdict, findings = run_fixture("causal_scan_per_step_legal", RULE)
    assert verdict is Verdict.PASS, [f.message for f in findings]
    assert not findings


def test_final_state_broadcast_in_the_same_function_fails() -> None:
    # the scan's module keeps the final state and broadcasts it itself: FAIL at the loop, the broadcast related
    tr = _replace(
        "        return state\n", "        return h + state.unsqueeze(1).expand(b, n, self.state_dim)\n"
    )
    verdict, findings = run_fixture(
        "noncausal_scan_final_state_broadcast",
        RULE,
        lambda s: (
            tr(s)
            .replace("self.state_dim = state_dim", "self.state_dim = dim")
            .replace("self.mix = nn.Linear(2 * state_dim, state_dim)", "self.mix = nn.Linear(2 * dim, dim)")
        ),
    )
    assert verdict is Verdict.FAIL, [f.message for f in findings]
    first = gating(findings, Verdict.FAIL)[0]
    assert first.primary is not None and first.primary.line == 33
    assert any(loc.line == 35 for loc in first.related)


def test_mean_over_the_sequence_axis_broadcast_back_fails() -> None:
    use = "        b, n, d = x.shape\n        pooled = x.mean(dim=1)\n        x = x + pooled.unsqueeze(1)\n"
    verdict, findings = run_fixture(
        "causal_scan_per_step_legal", RULE, _replace("        x = x + self.prior(self.summary(x))\n", use)
    )
    assert verdict is Verdict.FAIL, [f.message for f in findings]
    first = gating(findings, Verdict.FAIL)[0]
    assert first.primary is not None and first.primary.line == 68
    assert "whole-sequence reduction" in first.message


def test_mean_over_features_and_prefix_means_pass() -> None:
    use = (
        "        b, n, d = x.shape\n"
        "        x = x - x.mean(dim=-1, keepdim=True)\n"
        "        x = x + x[:, :1].mean(dim=1).unsqueeze(1)\n"
    )
    verdict, findings = run_fixture(
        "causal_scan_per_step_legal", RULE, _replace("        x = x + self.prior(self.summary(x))\n", use)
    )
    assert verdict is Verdict.PASS, [f.message for f in findings]


def test_reduction_over_an_unknown_axis_of_an_activation_warns() -> None:
    # no shape unpack: axis 1 of x may be the sequence or not -> WARN, never PASS
    use = "        x = x + x.mean(dim=1).unsqueeze(1)\n"
    verdict, findings = run_fixture(
        "causal_scan_per_step_legal", RULE, _replace("        x = x + self.prior(self.summary(x))\n", use)
    )
    assert verdict is Verdict.WARN, [f.message for f in findings]
    assert "could not be established" in findings[0].message
