"""Record-family artifacts (auditor/harness/artifact_load.py, record_map.py) reloaded and rescored on CPU.

The artifacts are built here by a serializer written from the records' documented format (artifact_load's
docstring: torch.save({"w": quantized, "m": meta}), "BSHF" byte shuffle with stride 2, then brotli / lzma / zlib /
nothing), for a tiny model with every feature of the 2026-04-09 stack on; the record folder around them holds a log
with the printed Hyperparameters block, or a Hyperparameters class plus a README run command.
"""

from __future__ import annotations

import io
import json
import lzma
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from auditor.cli import main as cli_main
from auditor.harness import artifact_load
from auditor.harness.artifact_load import ArtifactLoadError, load_record_artifact
from auditor.harness.record_map import (
    UnsupportedArchitecture,
    context_from_submission,
    map_record,
)
from auditor.harness.rescore import rescore
from auditor.submission import load_path
from pgolf_data.shards import read_shard, write_shard
from reference_model.config import ModelConfig
from reference_model.evaluate import EvalConfig, eval_sliding, load_val_stream
from reference_model.model import GPT

SEQ, STRIDE = 64, 16
TOKENS = 16 * SEQ + 1
CFG = ModelConfig.tiny(rope_train_seq_len=SEQ)
HPARAMS = {  # the record's names (its Hyperparameters attributes) for ModelConfig.tiny()
    "vocab_size": "8192",
    "num_layers": "5",
    "model_dim": "64",
    "embedding_dim": "64",
    "num_heads": "4",
    "num_kv_heads": "2",
    "mlp_mult": "2.0",
    "rope_dims": "8",
    "xsa_last_n": "5",
    "parallel_residual_start": "3",
    "num_loops": "1",
    "loop_start": "1",
    "loop_end": "2",
    "skip_gates_enabled": "True",
    "tie_embeddings": "True",
    "ln_scale": "True",
    "logit_softcap": "30.0",
    "rope_base": "10000.0",
    "qk_gain_init": "5.25",
    "train_seq_len": str(SEQ),
    "eval_seq_len": str(SEQ),
    "eval_stride": str(STRIDE),
    "ttt_enabled": "True",
    "ttt_chunk_tokens": "256",
    "ttt_epochs": "1",
    "ttt_lr": "0.005",
    "matrix_lr": "0.022",
    "seed": "42",
    "compressor": "brotli",
    "smear_gate_enabled": "False",
}


# ------------------------------------------------------------------------------------------------ serializer
def shuffle(data: bytes, stride: int = 2) -> bytes:
    """b"BSHF" + stride + every stride-th byte, lane 0 first (the documented format)."""
    lanes = b"".join(data[lane::stride] for lane in range(stride))
    return b"BSHF" + bytes([stride]) + lanes


def quantize(
    state: dict[str, torch.Tensor], bits: int = 6, lqer: set[str] = frozenset()
) -> tuple[dict, dict]:
    """Per-row round-to-nearest into the records' {'w','m'} layout (GPTQ's error feedback changes the codes, not
    the format): int codes in `.q`, fp16 row scales in `.scale`, small tensors fp16 passthrough."""
    w: dict[str, torch.Tensor] = {}
    m: dict[str, str] = {}
    for name, t in state.items():
        if t.ndim < 2 or t.numel() <= 1024 or "skip" in name:
            w[name] = t.to(torch.float16)
            m[name] = "passthrough (float16)"
            continue
        b = 8 if "tok_emb" in name else bits
        rng = 2 ** (b - 1) - 1
        s = (t.abs().amax(dim=1) / rng).clamp_min(1e-8).to(torch.float16)
        q = torch.clamp(torch.round(t / s.float()[:, None]), -rng, rng).to(torch.int8)
        w[name + ".q"], w[name + ".scale"] = q, s
        m[name] = f"gptq (int{b})"
        if name in lqer:  # a rank-2 correction with per-row int4 factors
            err = t - q.float() * s.float()[:, None]
            u, sv, vh = torch.linalg.svd(err, full_matrices=False)
            a, bb = u[:, :2] * sv[:2], vh[:2]
            sa = (a.abs().amax(dim=1) / 7).clamp_min(1e-8).to(torch.float16)
            sb = (bb.abs().amax(dim=1) / 7).clamp_min(1e-8).to(torch.float16)
            w[name + ".lqA"] = torch.round(a / sa.float()[:, None]).to(torch.int8)
            w[name + ".lqAs"] = sa
            w[name + ".lqB"] = torch.round(bb / sb.float()[:, None]).to(torch.int8)
            w[name + ".lqBs"] = sb
            m[name] += "+lqer"
    return w, m


def expected_state(w: dict, m: dict) -> dict[str, torch.Tensor]:
    out = {}
    for name, kind in m.items():
        if kind.startswith("passthrough"):
            out[name] = w[name].float()
            continue
        t = w[name + ".q"].float() * w[name + ".scale"].float()[:, None]
        if kind.endswith("+lqer"):
            a = w[name + ".lqA"].float() * w[name + ".lqAs"].float()[:, None]
            b = w[name + ".lqB"].float() * w[name + ".lqBs"].float()[:, None]
            t = t + a @ b
        out[name] = t
    return out


def write_artifact(path: Path, w: dict, m: dict, codec: str = "brotli", extra: object = None) -> Path:
    buf = io.BytesIO()
    obj = {"w": w, "m": m} if extra is None else {"w": w, "m": m, "x": extra}
    torch.save(obj, buf)
    raw = shuffle(buf.getvalue())
    if codec == "brotli":
        import brotli

        blob = brotli.compress(raw, quality=5)
    elif codec == "lzma":
        blob = lzma.compress(raw, preset=1)
    elif codec == "zlib":
        blob = zlib.compress(raw, 6)
    else:
        blob = raw
    path.write_bytes(blob)
    return path


def hparam_log(hp: dict[str, str], lines: str = "") -> str:
    block = "\n".join(f"  {k}: {v}" for k, v in sorted(hp.items()))
    return f"Hyperparameters:\n{block}\n{'=' * 20}\nmodel_params:669332\n{lines}"


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def model_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    model = GPT(CFG)
    with torch.no_grad():  # the record zero-inits output projections: perturb so every weight matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def quantized(model_state):
    return quantize(model_state, lqer={"blocks.0.mlp.fc.weight"})


@pytest.fixture(scope="module")
def val(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("recval")
    tokens = np.asarray(read_shard(shared_dir / "data" / "derived_docs_sample200_sp8192.bin"))[:TOKENS]
    write_shard(tmp / "fineweb_val_000000.bin", tokens)
    return {
        "val": str(tmp / "fineweb_val_*.bin"),
        "tokenizer": str(shared_dir / "data" / "fineweb_8192_bpe.model"),
    }


@pytest.fixture(scope="module")
def direct_sliding(quantized, val) -> float:
    """The expected score: the test's own dequantization, loaded into the reference model, sliding eval."""
    model = GPT(CFG)
    model.load_state_dict(expected_state(*quantized))
    model.set_recurrence(True)
    stream = load_val_stream(val["val"], val["tokenizer"], seq_len=SEQ)
    return eval_sliding(model, stream, EvalConfig(seq_len=SEQ, stride=STRIDE, batch_seqs=8)).val_bpb


def record_folder(tmp: Path, quantized, log_lines: str = "", hp: dict | None = None, **files: str) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "train_gpt.py").write_text("print('train')\n")
    (tmp / "train_seed42.log").write_text(hparam_log(hp or HPARAMS, log_lines))
    for name, text in files.items():
        (tmp / name).write_text(text)
    write_artifact(tmp / "final_model.int6.ptz", *quantized)
    return tmp


# ------------------------------------------------------------------------------------------------ loading
@pytest.mark.parametrize("codec", ["brotli", "lzma", "zlib", "none"])
def test_every_codec_reloads_to_the_documented_dequantization(tmp_path: Path, quantized, codec: str) -> None:
    art = load_record_artifact(write_artifact(tmp_path / f"m.{codec}.ptz", *quantized, codec=codec))
    assert art.codec == codec and art.shuffle_stride == 2 and art.quantized
    want = expected_state(*quantized)
    assert set(art.state) == set(want)
    assert all(torch.equal(art.state[k], want[k]) for k in want)
    assert art.kinds["blocks.0.mlp.fc.weight"] == "gptq (int6)+lqer"
    assert "gptq (int8)" in art.summary() and "byte-shuffled (stride 2)" in art.summary()


def test_banked_state_is_split_into_layers(model_state) -> None:
    n = CFG.num_layers
    banked = {k: v for k, v in model_state.items() if ".attn.c_" not in k and ".attn.proj." not in k}
    banked["qo_bank"] = torch.stack(
        [model_state[f"blocks.{i}.attn.c_q.weight"] for i in range(n)]
        + [model_state[f"blocks.{i}.attn.proj.weight"] for i in range(n)]
    )
    banked["kv_bank"] = torch.stack(
        [model_state[f"blocks.{i}.attn.c_k.weight"] for i in range(n)]
        + [model_state[f"blocks.{i}.attn.c_v.weight"] for i in range(n)]
    )
    out = artifact_load.unbank(banked)
    assert set(out) == set(model_state)
    assert torch.equal(out["blocks.3.attn.proj.weight"], model_state["blocks.3.attn.proj.weight"])
    assert torch.equal(out["blocks.4.attn.c_v.weight"], model_state["blocks.4.attn.c_v.weight"])


class _Planted:
    """Pickled through __reduce__ into a call of os.system: loading it must not run it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_needs_code_is_refused_without_running_it(tmp_path: Path, quantized) -> None:
    marker = tmp_path / "ran"
    path = write_artifact(tmp_path / "evil.ptz", *quantized, extra=_Planted(marker))
    with pytest.raises(ArtifactLoadError, match="refused without executing it") as exc:
        load_record_artifact(path)
    assert "system" in str(exc.value) and not marker.exists()


def test_bad_artifacts_are_one_line_errors(
    tmp_path: Path, quantized, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = write_artifact(tmp_path / "good.ptz", *quantized).read_bytes()
    cases = {
        "truncated": (good[: len(good) // 2], "corrupt or truncated"),
        "garbage": (b"\x13\x37" * 500, "not a brotli, lzma, zlib or uncompressed torch archive"),
        "empty": (b"", "is empty"),
        "no archive": (zlib.compress(b"hello world" * 10), "not a torch.save archive"),
    }
    for name, (blob, message) in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(ArtifactLoadError, match=message) as exc:
            load_record_artifact(tmp_path / name)
        assert "\n" not in str(exc.value)
    monkeypatch.setattr(artifact_load, "MAX_RAW_BYTES", 10_000)
    bomb = tmp_path / "bomb.ptz"
    bomb.write_bytes(zlib.compress(b"\0" * 5_000_000))
    with pytest.raises(ArtifactLoadError, match="limit"):
        load_record_artifact(bomb)
    monkeypatch.setattr(artifact_load, "MAX_ARTIFACT_BYTES", 100)
    with pytest.raises(ArtifactLoadError, match="over the 100-byte loading limit"):
        load_record_artifact(tmp_path / "good.ptz")


def test_unknown_quantization_format_is_named(tmp_path: Path, quantized) -> None:
    w, m = dict(quantized[0]), dict(quantized[1])
    m["blocks.1.mlp.fc.weight"] = "pergroup (int5)"
    with pytest.raises(ArtifactLoadError, match=r"unknown quantization kinds.*pergroup \(int5\)"):
        load_record_artifact(write_artifact(tmp_path / "a.ptz", w, m))
    w2, m2 = dict(quantized[0]), dict(quantized[1])
    w2["blocks.0.attn.c_q.weight.codebook"] = torch.zeros(4)
    with pytest.raises(ArtifactLoadError, match=r"no meta entry explains.*c_q.weight.codebook"):
        load_record_artifact(write_artifact(tmp_path / "b.ptz", w2, m2))


# ------------------------------------------------------------------------------------------------ mapping
def test_logged_hyperparameters_map_onto_the_config(tmp_path: Path, quantized) -> None:
    folder = record_folder(tmp_path / "rec", quantized)
    ctx = context_from_submission(load_path(folder))
    hp, source = ctx.hparams_for(42)
    assert source == "train_seed42.log hyperparameter block"
    mapping = map_record(hp, load_record_artifact(folder / "final_model.int6.ptz").state, source)
    assert mapping.config == CFG.__class__(**{**CFG.__dict__, "rope_bf16_positions": True})
    assert (mapping.eval.seq_len, mapping.eval.stride, mapping.eval.ttt_chunk_tokens) == (SEQ, STRIDE, 256)
    assert mapping.eval.ttt_epochs == 1 and mapping.eval.ttt_enabled


def test_code_defaults_and_readme_run_command_when_no_log_block(tmp_path: Path, quantized) -> None:
    lines = [
        f"    {k} = {'float' if '.' in v else 'int'}(os.environ.get({k.upper()!r}, {v!r}))"
        for k, v in HPARAMS.items()
        if v[0].isdigit()
    ]
    code = (
        "import os\n\nclass Hyperparameters:\n"
        + "\n".join(lines)
        + "\n    skip_gates_enabled = bool(int(os.environ.get('SKIP_GATES_ENABLED', '1')))\n"
    )
    code = code.replace("'num_loops', '1'", "'num_loops', '0'").replace("NUM_LOOPS', '1'", "NUM_LOOPS', '0'")
    folder = tmp_path / "code_only"
    folder.mkdir()
    (folder / "train_gpt.py").write_text(code)
    (folder / "README.md").write_text(
        "Run:\n\n```\nNUM_LOOPS=1 SEED=42 torchrun --standalone --nproc_per_node=8 train_gpt.py\n```\n"
    )
    ctx = context_from_submission(load_path(folder))
    hp, source = ctx.hparams_for(42)
    assert source == "train_gpt.py defaults + README.md:4"
    assert hp["num_loops"] == "1" and hp["num_layers"] == "5"  # the run command overrides the code's default
    mapping = map_record(hp, expected_state(*quantized), source)
    assert mapping.config.num_loops == 1 and mapping.config.model_dim == 64


def test_unsupported_architecture_names_what_does_not_map(quantized) -> None:
    state = expected_state(*quantized)
    state["smear_gate.weight"] = torch.zeros(1, 12)
    state["blocks.0.attn.attn_gate_w"] = torch.zeros(4, 12)
    hp = {**HPARAMS, "smear_gate_enabled": "1", "embedding_dim": "32", "fancy_router_enabled": "1"}
    with pytest.raises(UnsupportedArchitecture) as exc:
        map_record(hp, state, "log")
    msg = str(exc.value)
    for named in (
        "smear_gate_enabled=1",
        "embedding_dim=32",
        "fancy_router_enabled=1",
        "smear_gate.weight",
        "blocks.N.attn.attn_gate_w",
    ):
        assert named in msg
    with pytest.raises(UnsupportedArchitecture, match=r"shape mismatches: blocks.0.mlp.fc.weight"):
        map_record({**HPARAMS, "mlp_mult": "3.0"}, expected_state(*quantized), "log")


# ------------------------------------------------------------------------------------------------ rescore
def test_rescore_reproduces_the_direct_evaluation(tmp_path: Path, quantized, val, direct_sliding) -> None:
    folder = record_folder(tmp_path / "rec", quantized)
    res = rescore(
        folder / "final_model.int6.ptz",
        val["val"],
        val["tokenizer"],
        mode="sliding",
        batch_seqs=8,
        device="cpu",
        record=context_from_submission(load_path(folder)),
    )
    assert res.ok, res.error
    assert res.format == "record" and res.hparams_source == "train_seed42.log hyperparameter block"
    assert (
        res.eval_settings["seq_len"] == SEQ and res.eval_settings["stride"] == STRIDE
    )  # declared, not defaults
    assert res.val_bpb == direct_sliding and res.bytes == res.denominator


def test_rescore_refuses_an_unmappable_model(tmp_path: Path, quantized, val) -> None:
    w, m = dict(quantized[0]), dict(quantized[1])
    w["smear_lambda"] = torch.zeros(1, dtype=torch.float16)
    m["smear_lambda"] = "passthrough (float16)"
    folder = record_folder(tmp_path / "rec", (w, m), hp={**HPARAMS, "smear_gate_enabled": "1"})
    res = rescore(
        folder / "final_model.int6.ptz",
        val["val"],
        val["tokenizer"],
        mode="sliding",
        device="cpu",
        record=context_from_submission(load_path(folder)),
    )
    assert not res.ok and res.val_bpb is None
    assert res.error.startswith("unsupported architecture") and "smear_lambda" in res.error


def _verify(folder: Path, val, capsys, *extra: str) -> tuple[int, dict, str]:
    rc = cli_main(
        [
            "verify",
            str(folder),
            "--val",
            val["val"],
            "--tokenizer",
            val["tokenizer"],
            "--artifact",
            str(folder / "final_model.int6.ptz"),
            "--mode",
            "sliding",
            "--batch-seqs",
            "8",
            "--device",
            "cpu",
            "--seed",
            "42",
            "--rules",
            "PG801",
            "--format",
            "json",
            *extra,
        ]
    )
    out = capsys.readouterr()
    return rc, json.loads(out.out), out.err


def test_verify_compares_with_the_logged_number_of_the_same_mode(
    tmp_path: Path, quantized, val, direct_sliding, capsys: pytest.CaptureFixture[str]
) -> None:
    ttt_claim = (
        direct_sliding - 0.05
    )  # TTT claims better than sliding: that is no failure of the sliding rescore
    log = (
        f"val_tokens: {TOKENS - 1}\nquantized_sliding_window val_loss:1.00000000 val_bpb:{direct_sliding:.8f} "
        f"eval_time:1ms\nquantized_ttt val_loss:1.00000000 val_bpb:{ttt_claim:.8f} eval_time:1ms\n"
    )
    rc, report, err = _verify(record_folder(tmp_path / "ok", quantized, log), val, capsys)
    (f,) = [x for x in report["findings"] if x["rule_id"] == "PG801"]
    assert rc == 0 and f["verdict"] == "PASS", f["message"]
    assert "train_seed42.log:" in f["message"] and "(quantized_sliding_window)" in f["message"]
    (row,) = report["tables"]["harness"]["seed_table"]
    assert row["claim_mode"] == "ttt" and row["logged"] == round(direct_sliding, 8)
    assert abs(row["delta"]) < 1e-8 and row["denominator"] == row["tokens"] * 0 + row["denominator"] > 0
    assert "logged (same mode)" in err and "record format" in err

    better = log.replace(f"val_bpb:{direct_sliding:.8f}", f"val_bpb:{direct_sliding - 0.01:.8f}")
    rc, report, _ = _verify(record_folder(tmp_path / "inflated", quantized, better), val, capsys)
    (f,) = [x for x in report["findings"] if x["rule_id"] == "PG801"]
    assert rc == 1 and f["verdict"] == "FAIL", f["message"]
    assert f["locations"][0]["path"] == "train_seed42.log"


def test_verify_with_a_corrupt_artifact_warns_not_traceback(
    tmp_path: Path, quantized, val, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = record_folder(tmp_path / "bad", quantized)
    blob = (folder / "final_model.int6.ptz").read_bytes()
    (folder / "final_model.int6.ptz").write_bytes(blob[: len(blob) // 3])
    rc, report, err = _verify(folder, val, capsys)
    (f,) = [x for x in report["findings"] if x["rule_id"] == "PG801"]
    assert f["verdict"] == "WARN" and "truncated" in f["message"] and "Traceback" not in err


@pytest.mark.gpu
def test_record_rescore_on_cuda_matches_cpu(tmp_path: Path, quantized, val, direct_sliding) -> None:
    """bf16 autocast, compiled, the record's bf16 RoPE tables: within the frozen-model tolerance of the CPU fp32
    score (the H200 acceptance run in README "Verifying on real data" measured the full-size model)."""
    from auditor.constants import RESCORE_BPB_TOLERANCE

    folder = record_folder(tmp_path / "rec", quantized)
    res = rescore(
        folder / "final_model.int6.ptz",
        val["val"],
        val["tokenizer"],
        mode="sliding",
        device="cuda",
        record=context_from_submission(load_path(folder)),
    )
    assert res.ok, res.error
    assert (
        abs(res.val_bpb - direct_sliding) <= 20 * RESCORE_BPB_TOLERANCE
    )  # bf16 vs fp32 on a random tiny model


def test_caseops_submission_needs_the_byte_sidecar(tmp_path: Path, quantized, val) -> None:
    folder = record_folder(tmp_path / "rec", quantized, hp={**HPARAMS, "caseops_enabled": "1"})
    res = rescore(
        folder / "final_model.int6.ptz",
        val["val"],
        val["tokenizer"],
        mode="sliding",
        device="cpu",
        record=context_from_submission(load_path(folder)),
    )
    assert not res.ok and "--sidecar" in res.error
