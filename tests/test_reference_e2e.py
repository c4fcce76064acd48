"""End to end on CPU: real tokens -> a few training steps -> GPTQ artifact -> reload -> score-first TTT eval.

The reloaded model must hold exactly the in-memory quantized weights and give exactly the same BPB.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re

import numpy as np
import pytest
import torch

from auditor.evidence.logs import parse_log
from pgolf_data.bytes import build_luts, load_sentencepiece
from pgolf_data.shards import read_shard, write_shard
from reference_model.cli import main as cli_main
from reference_model.config import ModelConfig
from reference_model.evaluate import EvalConfig, ValStream, eval_sliding, eval_ttt, target_bytes
from reference_model.loader import TokenLoader
from reference_model.quant import QuantConfig, quantize_model, restore_model, state_checksum
from reference_model.train import TrainConfig, train

SEQ = 64
VAL_TOKENS = 4 * 512 + 1
EVAL = EvalConfig(seq_len=SEQ, stride=16, batch_seqs=16, chunk_tokens=512, ttt_epochs=2, ttt_batch_seqs=8)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: OpenMP's second thread only adds contention on a shared 2-core machine (40x slower ops)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def run(one_thread, shared_dir, tmp_path_factory):
    torch.manual_seed(0)
    data = shared_dir / "data"
    tokens = np.asarray(read_shard(data / "derived_docs_sample200_sp8192.bin"), dtype=np.int64)
    tmp = tmp_path_factory.mktemp("e2e")
    write_shard(tmp / "fineweb_train_000000.bin", tokens[:-VAL_TOKENS])  # train and val are disjoint
    val = tokens[-VAL_TOKENS:]
    write_shard(tmp / "fineweb_val_000000.bin", val)
    model_cfg = ModelConfig.tiny()
    tcfg = TrainConfig(
        train_files=str(tmp / "fineweb_train_*.bin"),
        train_batch_tokens=4 * SEQ,
        train_seq_len=SEQ,
        iterations=3,
        warmup_steps=0,
        max_wallclock_seconds=0,
        val_loss_every=0,
        train_log_every=1,
        grad_accum_steps=1,
        compile=False,
    )
    loader = TokenLoader(tcfg.train_files, SEQ, seed=1)
    result = train(model_cfg, tcfg, device="cpu", loader=loader)
    model = result.model
    model.set_recurrence(True)

    calib = TokenLoader(tcfg.train_files, SEQ, seed=2)
    batches = [calib.next_step(4 * SEQ, 1)[0][0] for _ in range(2)]
    qcfg = QuantConfig(min_numel=1024)  # small enough that the tiny model's block matrices get int6 GPTQ
    qstate, report = quantize_model(
        model, batches, tmp / "model.ptz", config=model_cfg, qcfg=qcfg, forward=model.logits
    )
    restored, _ = restore_model(tmp / "model.ptz")
    luts = build_luts(load_sentencepiece(data / "fineweb_8192_bpe.model"))
    stream = ValStream.build(val, target_bytes(val, luts))
    return {
        "train": result,
        "model": model,
        "restored": restored,
        "qstate": qstate,
        "report": report,
        "stream": stream,
        "cfg": model_cfg,
        "tmp": tmp,
        "data": data,
        "ttt_in_memory": eval_ttt(_copy(model), stream, EVAL, coverage=True),
        "ttt_reloaded": eval_ttt(_copy(restored), stream, EVAL, coverage=True),
        "sliding_reloaded": eval_sliding(_copy(restored), stream, EVAL, coverage=True),
    }


def test_training_ran_and_loss_is_finite(run):
    losses = [v for _, v in run["train"].train_losses]
    assert run["train"].steps == 3 and all(math.isfinite(v) for v in losses)


def test_artifact_quantizes_matrices_int6_and_embedding_int8(run):
    kinds = run["report"].quantized
    assert kinds.get("int6", 0) == len(run["model"].matrix_params())
    assert kinds.get("int8", 0) == 1
    assert run["report"].hessians == kinds["int6"] + kinds["int8"]


def test_reload_is_bit_exact(run):
    a, b = run["model"].state_dict(), run["restored"].state_dict()
    assert state_checksum(a) == state_checksum(b)
    assert run["restored"].recurrence is True
    assert run["restored"].cfg == run["cfg"]


def test_size_lines_in_challenge_format(run):
    lines = run["report"].log_lines()
    model_bytes = run["report"].path and run["report"].model_bytes
    assert f"Serialized model quantized+brotli: {model_bytes} bytes" in lines
    total = model_bytes + run["report"].code_bytes
    assert f"Total submission size quantized+brotli: {total} bytes" in lines
    json.dumps(run["report"].to_dict())


def test_ttt_bpb_equal_between_in_memory_and_reloaded(run):
    stream = run["stream"]
    in_memory, reloaded = run["ttt_in_memory"], run["ttt_reloaded"]
    assert math.isfinite(in_memory.val_bpb) and 0 < in_memory.val_bpb < 20
    assert in_memory.val_bpb == reloaded.val_bpb
    assert in_memory.tokens == reloaded.tokens == stream.num_targets
    assert np.all(in_memory.extra["coverage"] == 1)
    assert in_memory.extra["chunks"] == 4


def test_ttt_differs_from_plain_sliding_but_both_finite(run):
    stream = run["stream"]
    sliding, ttt = run["sliding_reloaded"], run["ttt_reloaded"]
    assert sliding.tokens == ttt.tokens == stream.num_targets
    assert np.all(sliding.extra["coverage"] == 1)
    assert sliding.val_bpb != ttt.val_bpb  # TTT changed the weights between chunks


def _copy(model):
    clone = type(model)(model.cfg)
    clone.load_state_dict(model.state_dict())
    clone.set_recurrence(model.recurrence)
    return clone


def test_dataclass_config_round_trips(run):
    assert dataclasses.asdict(run["restored"].cfg) == run["qstate"].config


def test_cli_quantize_then_eval(run, capsys):
    """The command line does the same from a `train --out` checkpoint: artifact, then all three evals."""
    tmp, data = run["tmp"], run["data"]
    ckpt = tmp / "final_model.pt"
    torch.save(
        {"model_config": dataclasses.asdict(run["cfg"]), "state_dict": run["train"].model.state_dict()}, ckpt
    )
    rc = cli_main(
        [
            "quantize",
            str(ckpt),
            "--calibration-files",
            str(tmp / "fineweb_train_*.bin"),
            "--out",
            str(tmp / "cli.ptz"),
            "--calibration-batches",
            "2",
            "--calibration-tokens",
            "256",
            "--seq-len",
            str(SEQ),
            "--device",
            "cpu",
            "--no-progress",
            "--log",
            str(tmp / "cli.log"),
        ]
    )
    assert rc == 0
    quant = json.loads(capsys.readouterr().out)
    assert quant["model_bytes"] == (tmp / "cli.ptz").stat().st_size
    rc = cli_main(
        [
            "eval",
            str(tmp / "cli.ptz"),
            "--val",
            str(tmp / "fineweb_val_*.bin"),
            "--tokenizer",
            str(data / "fineweb_8192_bpe.model"),
            "--modes",
            "plain,sliding,ttt",
            "--seq-len",
            str(SEQ),
            "--stride",
            "16",
            "--batch-seqs",
            "16",
            "--chunk-tokens",
            "512",
            "--ttt-epochs",
            "1",
            "--device",
            "cpu",
            "--no-progress",
            "--log",
            str(tmp / "cli.log"),
        ]
    )
    assert rc == 0
    out = capsys.readouterr()
    summary = json.loads(out.out)
    labels = [r["label"] for r in summary["results"]]
    assert labels == ["quantized", "quantized_sliding_window", "quantized_ttt"]
    assert all(r["tokens"] == VAL_TOKENS - 1 for r in summary["results"])
    for label in labels:
        assert re.search(
            rf"^{label} val_loss:\d+\.\d{{8}} val_bpb:\d+\.\d{{8}} eval_time:\d+ms$", out.err, re.M
        )
    assert "ttt:start chunks=4 ttt_lr=0.005 ttt_epochs=1" in out.err

    # the auditor's own log parser reads what we wrote, and picks the TTT line as the score
    parsed = parse_log((tmp / "cli.log").read_text(), "cli.log")
    assert parsed.final_score is not None and parsed.final_score.label == "quantized_ttt"
    assert parsed.final_score.val_bpb == pytest.approx(summary["results"][2]["val_bpb"], abs=1e-8)
    assert parsed.val_tokens == VAL_TOKENS - 1
    artifact = [z for z in parsed.sizes if z.is_artifact]
    assert artifact and artifact[0].bytes == quant["total_bytes"]


def test_cli_eval_bad_artifact_is_a_message_not_a_traceback(run, capsys):
    tmp, data = run["tmp"], run["data"]
    (tmp / "junk.ptz").write_bytes(b"junk")
    rc = cli_main(
        [
            "eval",
            str(tmp / "junk.ptz"),
            "--val",
            str(tmp / "fineweb_val_*.bin"),
            "--tokenizer",
            str(data / "fineweb_8192_bpe.model"),
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    assert rc == 2
    assert "not brotli data" in capsys.readouterr().err
