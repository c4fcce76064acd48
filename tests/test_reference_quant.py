"""GPTQ + SDClip quantization, the artifact container, brotli round trip and size accounting."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from reference_model.quant import (
    ArtifactError,
    QuantConfig,
    byte_shuffle,
    byte_unshuffle,
    code_sizes,
    collect_hessians,
    default_activation_sites,
    dequantize,
    gptq_quantize,
    load_artifact,
    pack,
    quantize_model,
    quantize_state_dict,
    restore_model,
    save_artifact,
    sdclip_scales,
    state_checksum,
    unpack,
)


@pytest.fixture(autouse=True)
def one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _correlated_inputs(n: int, dim: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(dim, dim, generator=g) / dim**0.5
    scales = torch.logspace(0, -2, dim)
    return (torch.randn(n, dim, generator=g) * scales) @ mix + 0.1 * torch.randn(n, dim, generator=g)


def _output_error(w: torch.Tensor, wq: torch.Tensor, x: torch.Tensor) -> float:
    return float(((x @ (w - wq).T) ** 2).mean())


@pytest.mark.parametrize("byte_len", [0, 1, 2, 7, 1000, 1001])
def test_byte_shuffle_round_trip(byte_len):
    data = bytes((i * 37 + 11) % 256 for i in range(byte_len))
    shuffled = byte_shuffle(data)
    assert len(shuffled) == len(data)
    assert byte_unshuffle(shuffled) == data


def test_byte_shuffle_groups_even_then_odd_bytes():
    assert byte_shuffle(bytes([1, 2, 3, 4, 5])) == bytes([1, 3, 5, 2, 4])


def test_sdclip_scale_is_k_sigma_over_range():
    w = torch.randn(8, 300, generator=torch.Generator().manual_seed(1))
    s = sdclip_scales(w, 12.85, 31)
    assert s.dtype == torch.float16
    expected = (12.85 * w.std(dim=1) / 31).to(torch.float16)
    assert torch.equal(s, expected)


def test_gptq_codes_stay_in_range_and_beat_round_to_nearest():
    torch.manual_seed(0)
    x = _correlated_inputs(4096, 96)
    w = torch.randn(48, 96) * 0.05
    h = x.T @ x
    q, s = gptq_quantize(w, h, clip_sigmas=3.0, clip_range=7)  # 4-bit so the rounding error is visible
    assert q.dtype == torch.int8 and int(q.abs().max()) <= 7
    wq = q.float() * s.float()[:, None]
    q_rtn, s_rtn = gptq_quantize(w, None, clip_sigmas=3.0, clip_range=7)
    assert torch.equal(s, s_rtn)  # same SDClip scales, only the rounding decisions differ
    w_rtn = q_rtn.float() * s_rtn.float()[:, None]
    assert _output_error(w, wq, x) < 0.8 * _output_error(w, w_rtn, x)


def test_gptq_dead_inputs_are_zeroed_and_ignored():
    x = _correlated_inputs(512, 32)
    x[:, 5] = 0.0  # an input channel never activated
    w = torch.randn(16, 32) * 0.1
    q, _ = gptq_quantize(w, x.T @ x, clip_sigmas=12.85, clip_range=31)
    assert torch.all(q[:, 5] == 0)


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok_emb = nn.Embedding(300, 32)
        self.fc = nn.Linear(32, 64, bias=False)
        self.out = nn.Linear(64, 32, bias=False)
        self.final_norm = nn.LayerNorm(32, elementwise_affine=False)
        self.gain = nn.Parameter(torch.ones(32))
        self.register_buffer("steps", torch.tensor([3], dtype=torch.int64))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.final_norm(self.out(torch.relu(self.fc(self.tok_emb(ids)))) * self.gain)
        return h @ self.tok_emb.weight.T


def test_activation_sites_follow_linear_inputs_and_tied_head():
    toy = _Toy()
    sites = default_activation_sites(toy, min_numel=1000)
    assert set(sites) == {"tok_emb.weight", "fc.weight", "out.weight"}
    assert sites["fc.weight"] == (toy.fc, "input")
    assert sites["tok_emb.weight"] == (toy.final_norm, "output")
    hs = collect_hessians(toy, [torch.randint(0, 300, (2, 16)) for _ in range(3)], sites)
    assert hs["fc.weight"].shape == (32, 32) and hs["out.weight"].shape == (64, 64)
    assert torch.allclose(hs["fc.weight"], hs["fc.weight"].T)


def test_container_round_trip_all_dtypes():
    toy = _Toy()
    qstate = quantize_state_dict(toy.state_dict(), {}, QuantConfig(min_numel=1000), ["tok_emb.weight"])
    qstate.config = {"dim": 32}
    back = unpack(pack(qstate))
    assert back.config == {"dim": 32}
    for name, qt in qstate.tensors.items():
        other = back.tensors[name]
        assert (other.kind, other.shape, other.orig_dtype, other.bits) == (
            qt.kind,
            qt.shape,
            qt.orig_dtype,
            qt.bits,
        )
        assert torch.equal(other.data, qt.data)
    kinds = {n: qt.kind for n, qt in qstate.tensors.items()}
    assert kinds == {
        "tok_emb.weight": "gptq",
        "fc.weight": "gptq",
        "out.weight": "gptq",
        "gain": "passthrough",
        "steps": "raw",
    }
    assert qstate.tensors["tok_emb.weight"].bits == 8 and qstate.tensors["fc.weight"].bits == 6
    assert state_checksum(dequantize(back)) == state_checksum(dequantize(qstate))


def test_bfloat16_tensors_survive_the_container():
    t = torch.randn(4, 5).to(torch.bfloat16)
    qstate = quantize_state_dict({"w": t}, {}, QuantConfig())
    out = dequantize(unpack(pack(qstate)))["w"]
    assert out.dtype == torch.bfloat16 and torch.equal(out, t.to(torch.float16).to(torch.bfloat16))


def test_artifact_file_round_trip_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    toy = _Toy()
    calib = [torch.randint(0, 300, (4, 32)) for _ in range(4)]
    qstate, report = quantize_model(
        toy, calib, tmp_path / "a.ptz", config={"kind": "toy"}, qcfg=QuantConfig(min_numel=1000)
    )
    assert report.hessians == 3 and report.quantized == {"int8": 1, "int6": 2, "passthrough": 1, "raw": 1}
    assert report.model_bytes == (tmp_path / "a.ptz").stat().st_size

    fresh = _Toy()
    restored, loaded = restore_model(
        tmp_path / "a.ptz", build=lambda cfg: fresh if cfg == {"kind": "toy"} else None
    )
    assert state_checksum(restored.state_dict()) == state_checksum(toy.state_dict())
    assert loaded.meta["quant"]["matrix_bits"] == 6


def test_size_report_lines_and_code_sizes(tmp_path):
    toy = _Toy()
    _, report = quantize_model(
        toy, [torch.randint(0, 300, (2, 8))], tmp_path / "a.ptz", config={}, qcfg=QuantConfig(min_numel=1000)
    )
    sizes = code_sizes()
    assert sizes["code_files"] >= 5 and 0 < sizes["code_bytes_wrapped"] < sizes["code_bytes_raw"]
    lines = report.log_lines()
    total = re.compile(r"^Total submission size quantized\+brotli: (\d+) bytes$")
    match = [m for m in map(total.match, lines) if m]
    assert match and int(match[0].group(1)) == report.model_bytes + report.code_bytes
    assert report.cap == 16_000_000 and report.under_cap


def test_corrupt_artifacts_raise_a_clear_error(tmp_path):
    bad = tmp_path / "bad.ptz"
    bad.write_bytes(b"not brotli at all")
    with pytest.raises(ArtifactError, match="brotli"):
        load_artifact(bad)
    qstate = quantize_state_dict({"w": torch.ones(3)}, {}, QuantConfig())
    save_artifact(bad, qstate)
    raw = pack(qstate)
    with pytest.raises(ArtifactError, match="magic"):
        unpack(b"X" + raw[1:])
    with pytest.raises(ArtifactError, match="cannot read"):
        load_artifact(tmp_path / "missing.ptz")


def test_artifact_must_match_the_model(tmp_path):
    qstate = quantize_state_dict({"w": torch.ones(3)}, {}, QuantConfig())
    save_artifact(tmp_path / "a.ptz", qstate)
    with pytest.raises(ArtifactError, match="does not match"):
        restore_model(tmp_path / "a.ptz", build=lambda _cfg: _Toy())
