"""Evaluation semantics: canonical bytes, exactly-once scoring, sliding == naive, score-first ordering, ranks."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pgolf_data.bytes import build_luts, load_sentencepiece
from pgolf_data.shards import read_shard
from reference_model.config import ModelConfig
from reference_model.evaluate import (
    EvalConfig,
    Ranks,
    ScoreFirstCheck,
    ScoreFirstTTT,
    ValStream,
    eval_plain,
    eval_sliding,
    eval_ttt,
    sliding_window_starts,
    target_bytes,
)
from reference_model.model import GPT

CANONICAL_BYTES_200_DOCS = 1_489_418  # shared/data/README.md: LUT bytes of the 200 documents, both tokenizers
CFG = EvalConfig(seq_len=64, stride=16, batch_seqs=8, chunk_tokens=256, ttt_epochs=2, ttt_batch_seqs=4)


@pytest.fixture(autouse=True)
def one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def luts8192(shared_dir):
    return build_luts(load_sentencepiece(shared_dir / "data" / "fineweb_8192_bpe.model"))


@pytest.fixture(scope="module")
def tokens8192(shared_dir):
    return np.asarray(read_shard(shared_dir / "data" / "derived_docs_sample200_sp8192.bin"), dtype=np.int64)


@pytest.fixture(scope="module")
def stream(tokens8192, luts8192):
    toks = tokens8192[: 1000 + 1]  # 1000 targets: not a multiple of seq_len, stride or chunk
    return ValStream.build(toks, target_bytes(toks, luts8192))


def tiny_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(ModelConfig.tiny())
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.add_(torch.randn_like(p) * 0.05)  # no zero-initialised (identity) blocks
    model.set_recurrence(True)
    return model


# --------------------------------------------------------------------------------------------------- bytes
@pytest.mark.parametrize("vocab", ["1024", "8192"])
def test_target_bytes_total_is_canonical(shared_dir, vocab):
    data = shared_dir / "data"
    toks = np.asarray(read_shard(data / f"derived_docs_sample200_sp{vocab}.bin"))
    luts = build_luts(load_sentencepiece(data / f"fineweb_{vocab}_bpe.model"))
    per = target_bytes(toks, luts)
    assert per.shape == (toks.size - 1,)
    assert int(per.sum()) == CANONICAL_BYTES_200_DOCS
    sidecar = np.concatenate([[0], per])  # a sidecar holding the same counts gives the same denominator
    assert np.array_equal(target_bytes(toks, sidecar=sidecar), per)


def test_target_bytes_needs_luts_or_sidecar():
    with pytest.raises(ValueError):
        target_bytes(np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="sidecar"):
        target_bytes(np.array([1, 2, 3]), sidecar=np.array([0, 1]))


# --------------------------------------------------------------------------------------------------- coverage
@pytest.mark.parametrize("targets", [1, 47, 48, 63, 64, 65, 100, 1000, 4097])
@pytest.mark.parametrize("seq_len,stride", [(64, 16), (64, 64), (32, 8)])
def test_sliding_windows_score_every_target_once(targets, seq_len, stride):
    counts = np.zeros(targets, dtype=int)
    for ws in sliding_window_starts(targets, seq_len, stride):
        first = ws if ws == 0 else ws + seq_len - stride
        counts[first : min(ws + seq_len, targets)] += 1
    assert np.all(counts == 1)


def test_sliding_equals_naive_per_window_reference(stream):
    model = tiny_model()
    result = eval_sliding(model, stream, CFG, coverage=True)
    tokens = stream.tokens
    total, loss_sum, count, nbytes = stream.num_targets, 0.0, 0, 0.0
    with torch.no_grad():
        for ws in sliding_window_starts(total, CFG.seq_len, CFG.stride):
            we = min(ws + CFG.seq_len, total)
            logits = model(tokens[ws:we][None])[0]
            nll = F.cross_entropy(logits, tokens[ws + 1 : we + 1], reduction="none")
            s = 0 if ws == 0 else CFG.seq_len - CFG.stride
            loss_sum += float(nll[s:].double().sum())
            count += we - ws - s
            nbytes += float(stream.bytes_per_target[ws + s : we].sum())
    assert result.tokens == count == total
    assert np.all(result.extra["coverage"] == 1)
    assert result.bytes == nbytes
    assert result.val_loss == pytest.approx(loss_sum / count, abs=1e-6)
    assert result.val_bpb == pytest.approx(loss_sum / count / math.log(2) * count / nbytes, abs=1e-6)


def test_plain_scores_every_target_once(stream):
    result = eval_plain(tiny_model(), stream, CFG, coverage=True)
    assert result.tokens == stream.num_targets and np.all(result.extra["coverage"] == 1)
    assert result.label == "quantized"


def test_log_line_matches_the_challenge_shape(stream):
    line = eval_sliding(tiny_model(), stream, CFG).log_line()
    shape = r"^quantized_sliding_window val_loss:\d+\.\d{8} val_bpb:\d+\.\d{8} eval_time:\d+ms$"
    assert re.match(shape, line), line


# --------------------------------------------------------------------------------------------------- TTT
def test_ttt_scores_every_target_once_and_skips_training_on_the_last_chunk(stream):
    model = tiny_model()
    check = ScoreFirstCheck(model)
    result = ScoreFirstTTT(model, stream, CFG, coverage=True, observer=check).run()
    assert result.tokens == stream.num_targets
    assert np.all(result.extra["coverage"] == 1)
    n_chunks = math.ceil(stream.num_targets / CFG.chunk_tokens)
    assert result.extra["chunks"] == n_chunks
    assert sorted(check.before) == list(range(n_chunks))
    assert sorted(check.trained) == list(range(n_chunks - 1))  # the last chunk is never trained on
    assert check.violations() == []
    assert len(set(check.trained.values())) == n_chunks - 1  # every update really changed the weights


def test_ttt_without_epochs_is_the_sliding_eval(stream):
    no_train = EvalConfig(**{**CFG.__dict__, "ttt_epochs": 0})
    ttt = eval_ttt(tiny_model(), stream, no_train)
    sliding = eval_sliding(tiny_model(), stream, no_train)
    assert (ttt.val_loss, ttt.val_bpb, ttt.tokens, ttt.bytes) == (
        sliding.val_loss,
        sliding.val_bpb,
        sliding.tokens,
        sliding.bytes,
    )


def test_ttt_learning_changes_the_score(stream):
    assert eval_ttt(tiny_model(), stream, CFG).val_bpb != eval_sliding(tiny_model(), stream, CFG).val_bpb


def test_ttt_lr_decays_to_zero_over_chunks(stream):
    runner = ScoreFirstTTT(tiny_model(), stream, CFG)
    lrs = [runner.chunk_lr(c) for c in range(runner.num_chunks)]
    assert lrs[0] == CFG.ttt_lr and lrs[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))


class TrainThenScore(ScoreFirstTTT):
    """An ILLEGAL variant: it adapts on each chunk before scoring it (the check must catch it)."""

    def run(self, warmup: bool = False):
        for chunk in range(self.num_chunks):
            if chunk < self.num_chunks - 1:
                self.train_chunk(chunk)
                self.observer.after_train(chunk, self.model)
            self.observer.before_score(chunk, self.model)
            self.score_chunk(chunk)
            self.observer.after_score(chunk, self.model)
        return self.scorer.result(self.label, self.ranks, 0.0, 0.0)


def test_score_first_check_catches_train_then_score(stream):
    model = tiny_model()
    check = ScoreFirstCheck(model)
    TrainThenScore(model, stream, CFG, observer=check).run()
    problems = check.violations()
    assert problems and "chunk 0 was scored with parameters that differ from the initial ones" in problems[0]
    assert len([p for p in problems if "differ" in p]) == len(
        check.trained
    )  # each chunk trained before scored


def test_score_first_check_catches_an_update_during_scoring(stream):
    model = tiny_model()
    check = ScoreFirstCheck(model)
    runner = ScoreFirstTTT(model, stream, CFG, observer=check)
    original = runner.score_chunk

    def score_then_peek(chunk: int) -> None:
        original(chunk)
        if chunk == 1:
            runner.train_chunk(chunk)  # an update slipped inside the scoring step

    runner.score_chunk = score_then_peek  # type: ignore[method-assign]
    runner.run(warmup=False)
    assert "parameters changed while chunk 1 was being scored" in check.violations()


# --------------------------------------------------------------------------------------------------- ranks
def _ranked_worker(rank: int, world: int, port: int, toks: np.ndarray, per: np.ndarray, out: dict) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        stream = ValStream.build(toks, per)
        ranks = Ranks(rank, world)
        sliding = eval_sliding(tiny_model(), stream, CFG, ranks=ranks, coverage=True)
        ttt = eval_ttt(tiny_model(), stream, CFG, ranks=ranks, coverage=True)
        if rank == 0:
            out["sliding"] = (
                sliding.val_loss,
                sliding.tokens,
                sliding.bytes,
                bool(np.all(sliding.extra["coverage"] == 1)),
            )
            out["ttt"] = (ttt.val_loss, ttt.tokens, ttt.bytes, bool(np.all(ttt.extra["coverage"] == 1)))
    finally:
        dist.destroy_process_group()


def test_three_ranks_compute_the_same_eval(stream):
    """Uneven shares on purpose: 3 ranks split 4 training sequences per chunk 1/1/2 and the windows unevenly."""
    import socket

    import torch.multiprocessing as mp

    toks = stream.tokens.numpy()
    per = stream.bytes_per_target.numpy()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_ranked_worker, args=(3, port, toks, per, out), nprocs=3, join=True)
    one_sliding = eval_sliding(tiny_model(), stream, CFG)
    one_ttt = eval_ttt(tiny_model(), stream, CFG)
    loss, tokens, nbytes, covered = out["sliding"]
    assert (tokens, nbytes, covered) == (one_sliding.tokens, one_sliding.bytes, True)
    assert loss == pytest.approx(one_sliding.val_loss, abs=1e-6)
    loss, tokens, nbytes, covered = out["ttt"]
    assert (tokens, nbytes, covered) == (one_ttt.tokens, one_ttt.bytes, True)
    assert loss == pytest.approx(one_ttt.val_loss, abs=1e-5)  # share-weighted gradients: same updates


@pytest.mark.gpu
def test_gpu_compiled_bf16_eval_matches_eager_fp32(stream):
    """On CUDA the default path is torch.compile + bf16 autocast; it must agree with plain fp32 eager scoring."""
    device = torch.device("cuda")
    gpu_stream = ValStream(stream.tokens.to(device), stream.bytes_per_target.to(device))
    fast = eval_sliding(tiny_model().to(device), gpu_stream, CFG, coverage=True)
    exact = eval_sliding(
        tiny_model().to(device),
        gpu_stream,
        EvalConfig(**{**CFG.__dict__, "compile": False, "autocast": False}),
    )
    assert fast.tokens == exact.tokens == stream.num_targets and np.all(fast.extra["coverage"] == 1)
    assert fast.val_bpb == pytest.approx(exact.val_bpb, abs=2e-3)  # bf16 matmuls vs fp32
    ttt = eval_ttt(tiny_model().to(device), gpu_stream, CFG, coverage=True)
    assert ttt.tokens == stream.num_targets and np.all(ttt.extra["coverage"] == 1)
