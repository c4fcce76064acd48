"""reference_model: architecture, attention kernels, optimizer split (CPU; FA3 agreement on GPU)."""

from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")

from reference_model.attention import fa3_attention, fa3_available, sdpa_attention, sdpa_backend  # noqa: E402
from reference_model.config import RECORD_PARAM_COUNT, ModelConfig  # noqa: E402
from reference_model.model import GPT, Rotary, build_on_meta, count_params, exclusive_self_attention  # noqa: E402
from reference_model.optim import MuonEqR, ReferenceOptimizer, newton_schulz5  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny CPU models run ~10x faster on one thread than on two contended ones (OpenMP spin-waits)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def perturbed_tiny(seed: int = 0, **overrides: object) -> GPT:
    """A tiny model whose zero-initialised projections are made non-zero, so every block matters."""
    torch.manual_seed(seed)
    model = GPT(ModelConfig.tiny(**overrides))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_record_config_has_the_record_parameter_count() -> None:
    model = build_on_meta(ModelConfig())
    assert count_params(model) == RECORD_PARAM_COUNT == 35_944_536
    assert ModelConfig().expected_param_count() == RECORD_PARAM_COUNT
    assert all(p.is_meta for p in model.parameters())


def test_closed_form_count_matches_built_module_for_ablations() -> None:
    for overrides in (
        {},
        {"num_loops": 0},
        {"skip_gates": False},
        {"tie_embeddings": False},
        {"unet_skips": False},
    ):
        cfg = ModelConfig.tiny(**overrides)
        assert count_params(build_on_meta(cfg)) == cfg.expected_param_count(), overrides


def test_record_layer_schedule() -> None:
    cfg = ModelConfig()
    assert cfg.layer_schedule(recurrence=True) == ([0, 1, 2, 3, 4, 5, 3, 4], [5, 3, 4, 5, 6, 7, 8, 9, 10])
    assert cfg.layer_schedule(recurrence=False) == ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10])
    assert cfg.num_skip_weights == 8


def test_record_features_are_wired_from_the_config() -> None:
    model = build_on_meta(ModelConfig())
    assert [b.parallel for b in model.blocks] == [False] * 7 + [True] * 4
    assert all(b.attn.use_xsa for b in model.blocks)
    assert model.blocks[0].attn.rotary.rope_dims == 16 and model.blocks[0].attn.head_dim == 64
    assert model.blocks[3].norm_scale == pytest.approx(0.5)
    assert model.blocks[0].attn.c_k.weight.shape == (256, 512)  # 4 KV heads x 64
    assert model.blocks[0].mlp.fc.weight.shape == (2048, 512)
    ablated = build_on_meta(ModelConfig(parallel_residual_start=-1, xsa_last_n=3))
    assert not any(b.parallel for b in ablated.blocks)
    assert [b.attn.use_xsa for b in ablated.blocks] == [False] * 8 + [True] * 3


def test_forward_shapes_softcap_and_losses() -> None:
    model = perturbed_tiny()
    x = torch.randint(0, 8192, (2, 16))
    y = torch.randint(0, 8192, (2, 16))
    logits = model(x)
    assert logits.shape == (2, 16, 8192) and logits.dtype == torch.float32
    assert logits.abs().max() <= model.cfg.logit_softcap
    per_token = model.loss(x, y, reduction="none")
    assert per_token.shape == (2, 16)
    assert torch.allclose(per_token.mean(), model.loss(x, y))
    manual = torch.nn.functional.cross_entropy(logits.reshape(-1, 8192), y.reshape(-1))
    assert torch.allclose(manual, model.loss(x, y))


def test_forward_is_causal() -> None:
    model = perturbed_tiny()
    x = torch.randint(0, 8192, (1, 12))
    x2 = x.clone()
    x2[0, 8:] = torch.randint(0, 8192, (4,))
    for recurrence in (False, True):
        model.set_recurrence(recurrence)
        a, b = model(x), model(x2)
        assert torch.allclose(a[:, :8], b[:, :8], atol=1e-5)
        assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_recurrence_switch_changes_the_forward() -> None:
    model = perturbed_tiny()
    x = torch.randint(0, 8192, (1, 16))
    plain = model(x)
    model.set_recurrence(True)
    assert model.layer_schedule() == ([0, 1, 2], [1, 2, 3, 4])
    looped = model(x)
    assert not torch.allclose(plain, looped)
    model.set_recurrence(False)
    assert torch.equal(model(x), plain)
    no_loop = GPT(ModelConfig.tiny(num_loops=0))
    no_loop.set_recurrence(True)
    assert no_loop.recurrence is False


def test_fused_qkv_is_the_same_function() -> None:
    model = perturbed_tiny()
    x = torch.randint(0, 8192, (2, 12))
    plain = model(x)
    model.set_fused_qkv(True)
    assert torch.allclose(model(x), plain, atol=1e-5)
    seen = []
    with model.capture_inputs(lambda name, act: seen.append(name)):
        model(x)
    assert "blocks.0.attn.c_k.weight" in seen and model.blocks[0].attn.fused_qkv


def _hidden_with_skips_merged_outside(model: GPT, x: torch.Tensor) -> torch.Tensor:
    """The forward as written before the skip merge moved into Block (and as the record writes it)."""
    from reference_model.model import rms_norm

    h = rms_norm(model.tok_emb(x))
    h0, skips = h, []
    encoder, decoder = model.layer_schedule()
    for i in encoder:
        h = model.blocks[i](h, h0)
        skips.append(h)
    for j, i in enumerate(decoder):
        if j < model.skip_weights.size(0) and skips:
            skip = model.skip_weights[j].to(h.dtype) * skips.pop()
            h = torch.lerp(skip, h, torch.sigmoid(model.skip_gates[j].to(h.dtype)))
        h = model.blocks[i](h, h0)
    return rms_norm(h)


def test_decoder_blocks_merge_the_skip_exactly_as_before() -> None:
    model = perturbed_tiny()
    x = torch.randint(0, 8192, (2, 16))
    for recurrent in (False, True):
        model.set_recurrence(recurrent)
        assert torch.equal(model.hidden(x), _hidden_with_skips_merged_outside(model, x)), recurrent


def test_regional_compile_is_the_same_function() -> None:
    """compile_regions traces each block, the stem and the head+loss with fullgraph (dynamo only here: the
    'eager' backend); loss and every gradient match the uncompiled model in both recurrence modes."""
    ref = perturbed_tiny(seed=3)
    model = GPT(ref.cfg)
    model.load_state_dict(ref.state_dict())
    model.compile_regions(backend="eager", fullgraph=True, dynamic=False)
    assert all(b._compiled_call_impl is not None for b in model.blocks)
    x, y = torch.randint(0, 8192, (2, 16)), torch.randint(0, 8192, (2, 16))
    for recurrent in (False, True):
        ref.set_recurrence(recurrent)
        model.set_recurrence(recurrent)
        a, b = model(x, y), ref(x, y)
        a.backward()
        b.backward()
        assert torch.allclose(a, b, atol=1e-6), recurrent
        for (name, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
            assert torch.allclose(p.grad, q.grad, atol=1e-6), (recurrent, name)
        model.zero_grad()
        ref.zero_grad()
    assert model.state_dict().keys() == ref.state_dict().keys()


def test_xsa_removes_each_heads_own_value_direction() -> None:
    y = torch.randn(2, 5, 8, 16)
    v = torch.randn(2, 5, 4, 16)
    out = exclusive_self_attention(y, v)
    vn = torch.nn.functional.normalize(v, dim=-1).repeat_interleave(2, dim=2)
    assert (out * vn).sum(-1).abs().max() < 1e-5
    assert torch.allclose(out + (y * vn).sum(-1, keepdim=True) * vn, y, atol=1e-5)


def test_partial_rotary_leaves_the_tail_and_position_zero() -> None:
    rot = Rotary(rope_dims=8, base=10_000.0, train_seq_len=64)
    x = torch.randn(1, 10, 2, 32)
    out = rot(x)
    assert torch.equal(out[..., 8:], x[..., 8:])
    assert torch.allclose(out[:, 0], x[:, 0])
    assert torch.allclose(out[..., :8].norm(dim=-1), x[..., :8].norm(dim=-1), atol=1e-5)
    # relative: <R_m q, R_n k> depends on m - n only
    q, k = torch.randn(32), torch.randn(32)
    seq = torch.stack([q] * 10)[None, :, None, :]
    kseq = torch.stack([k] * 10)[None, :, None, :]
    rq, rk = rot(seq)[0, :, 0], rot(kseq)[0, :, 0]
    assert torch.allclose(rq[5] @ rk[3], rq[7] @ rk[5], atol=1e-4)


def _naive_attention(q, k, v):  # noqa: ANN001, ANN202
    rep = q.size(2) // k.size(2)
    k, v = k.repeat_interleave(rep, dim=2), v.repeat_interleave(rep, dim=2)
    scores = torch.einsum("bthd,bshd->bhts", q, k) / q.size(-1) ** 0.5
    t = q.size(1)
    scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    return torch.einsum("bhts,bshd->bthd", scores.softmax(-1), v)


def test_sdpa_priority_is_set_and_restored() -> None:
    before = torch._C._get_sdp_priority_order()
    with sdpa_backend("cudnn,flash"):
        order = torch._C._get_sdp_priority_order()
        assert order[:2] == [3, 1]  # SDPBackend.CUDNN_ATTENTION, FLASH_ATTENTION
        assert not torch.backends.cuda.mem_efficient_sdp_enabled()
    assert torch._C._get_sdp_priority_order() == before
    with pytest.raises(ValueError):
        with sdpa_backend("warp-drive"):
            pass


def test_sdpa_attention_is_causal_gqa() -> None:
    q, k, v = torch.randn(2, 9, 4, 8), torch.randn(2, 9, 2, 8), torch.randn(2, 9, 2, 8)
    assert torch.allclose(sdpa_attention(q, k, v), _naive_attention(q, k, v), atol=1e-5)


@pytest.mark.gpu
def test_fa3_and_sdpa_agree_on_gpu() -> None:
    if not fa3_available():
        pytest.skip("flash_attn_interface (FA3) is not installed")
    gen = torch.Generator(device="cuda").manual_seed(0)
    shape_q, shape_kv = (2, 256, 8, 64), (2, 256, 4, 64)
    q = torch.randn(shape_q, device="cuda", dtype=torch.bfloat16, generator=gen)
    k = torch.randn(shape_kv, device="cuda", dtype=torch.bfloat16, generator=gen)
    v = torch.randn(shape_kv, device="cuda", dtype=torch.bfloat16, generator=gen)
    a, b = fa3_attention(q, k, v).float(), sdpa_attention(q, k, v).float()
    assert (a - b).norm() / b.norm() < 1e-2


@pytest.mark.gpu
def test_full_model_forward_backward_on_gpu() -> None:
    model = GPT(ModelConfig()).cuda().to_mixed_precision()
    model.set_attention_backend("auto")
    x = torch.randint(0, 8192, (2, 256), device="cuda")
    y = torch.randint(0, 8192, (2, 256), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model.loss(x, y)
    loss.backward()
    assert torch.isfinite(loss) and abs(loss.item() - 9.0) < 0.5  # ~ln(8192) at init


def test_parameter_groups_partition_the_model() -> None:
    model = build_on_meta(ModelConfig())
    groups = [model.matrix_params(), model.embedding_params(), model.scalar_params()]
    ids = [id(p) for g in groups for p in g.values()]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert set(ids) == {id(p) for p in model.parameters()}
    assert (len(groups[0]), len(groups[1]), len(groups[2])) == (66, 1, 46)
    assert "blocks.0.resid_mix" in groups[2] and "skip_gates" in groups[2]  # 2-D but control tensors


def test_reference_optimizer_covers_every_parameter_once() -> None:
    for overrides in ({}, {"tie_embeddings": False}):
        model = GPT(ModelConfig.tiny(**overrides))
        opt = ReferenceOptimizer(model)
        assert sorted(map(id, opt.params)) == sorted(map(id, model.parameters()))
        assert len(opt.params) == len(set(map(id, opt.params)))


def test_newton_schulz_orthogonalises_a_batch() -> None:
    g = torch.randn(3, 32, 64)
    u = newton_schulz5(g).float()
    s = torch.linalg.svdvals(u)
    assert s.min() > 0.5 and s.max() < 1.3  # quintic NS: singular values pushed into ~[0.7, 1.2]
    assert torch.allclose(newton_schulz5(g[1:2]).float(), u[1:2], atol=1e-2)


def test_muon_eq_r_step_matches_its_definition() -> None:
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(16, 8))
    start = p.detach().clone()
    grad = torch.randn(16, 8)
    p.grad = grad.clone()
    opt = MuonEqR([p], lr=0.1, momentum=0.9, weight_decay=0.5, compile_ns=False)
    opt.step()
    buf = grad
    g = grad + 0.9 * buf
    g = g / g.norm(dim=-1, keepdim=True)
    u = newton_schulz5(g[None])[0].float() * (16 / 8) ** 0.5
    expected = start * (1 - 0.1 * 0.5) - 0.1 * u
    assert torch.allclose(p.detach(), expected, atol=1e-3)


def test_momentum_warmup_and_lr_scale() -> None:
    model = GPT(ModelConfig.tiny())
    opt = ReferenceOptimizer(model)
    opt.set_schedule(0, 1.0)
    assert opt.muon.param_groups[0]["momentum"] == pytest.approx(0.92)
    opt.set_schedule(750, 0.5)
    assert opt.muon.param_groups[0]["momentum"] == pytest.approx(0.955)
    assert opt.muon.param_groups[0]["lr"] == pytest.approx(0.011)
    assert opt.embed.param_groups[0]["lr"] == pytest.approx(0.015)
    assert opt.scalar.param_groups[0]["lr"] == pytest.approx(0.01)
    opt.set_schedule(5000, 1.0)
    assert opt.muon.param_groups[0]["momentum"] == pytest.approx(0.99)


def test_gptq_layers_and_input_capture() -> None:
    model = perturbed_tiny()
    layers = model.gptq_layers()
    assert set(model.matrix_params()) | {"tok_emb.weight"} == set(layers)
    seen: dict[str, list[tuple[int, ...]]] = {}
    x = torch.randint(0, 8192, (2, 8))
    with model.capture_inputs(lambda name, act: seen.setdefault(name, []).append(tuple(act.shape))):
        model.set_recurrence(True)
        model.logits(x)
    assert seen["blocks.1.attn.c_q.weight"] == [(16, 64)] * 2  # looped block: once per repetition
    assert seen["blocks.0.attn.c_q.weight"] == [(16, 64)]
    assert seen["blocks.0.mlp.proj.weight"] == [(16, 128)]
    assert seen["tok_emb.weight"] == [(16, 64)]
    n_before = len(seen["tok_emb.weight"])
    model.logits(x)  # hooks removed on exit
    assert len(seen["tok_emb.weight"]) == n_before


def test_head_hook_sees_the_final_normed_hidden_state() -> None:
    model = perturbed_tiny()
    x = torch.randint(0, 8192, (1, 8))
    got = []
    with model.capture_inputs(lambda name, act: got.append(act) if name == "tok_emb.weight" else None):
        model.logits(x)
    assert torch.allclose(got[0], model.hidden(x).reshape(-1, 64))


def test_state_dict_uses_the_record_names() -> None:
    keys = set(build_on_meta(ModelConfig()).state_dict())
    for key in (
        "tok_emb.weight",
        "blocks.0.attn.c_q.weight",
        "blocks.0.attn.c_k.weight",
        "blocks.0.attn.c_v.weight",
        "blocks.0.attn.proj.weight",
        "blocks.0.attn.q_gain",
        "blocks.0.mlp.fc.weight",
        "blocks.0.mlp.proj.weight",
        "blocks.10.resid_mix",
        "blocks.10.attn_scale",
        "blocks.10.mlp_scale",
        "skip_weights",
        "skip_gates",
    ):
        assert key in keys
    assert len(keys) == 11 * 10 + 3


def test_init_follows_the_record() -> None:
    torch.manual_seed(0)
    model = GPT(ModelConfig.tiny())
    blk = model.blocks[0]
    assert torch.count_nonzero(blk.attn.proj.weight) == 0 and torch.count_nonzero(blk.mlp.proj.weight) == 0
    w = blk.mlp.fc.weight  # 128 x 64: orthogonal columns
    assert torch.allclose(w.T @ w, torch.eye(64), atol=1e-4)
    assert torch.allclose(blk.attn.q_gain, torch.full((4,), 5.25))
    assert model.tok_emb.weight.std().item() == pytest.approx(0.005, rel=0.05)
    assert torch.all(torch.sigmoid(model.skip_gates) == 0.5)
    plain = GPT(dataclasses.replace(ModelConfig.tiny(), orthogonal_init=False))
    fc = plain.blocks[0].mlp.fc.weight
    assert not torch.allclose(fc.T @ fc, torch.eye(64), atol=1e-2)
