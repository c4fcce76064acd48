"""reference_model training: loader, schedule, EMA, wallclock cap, warmup restore, logs, DDP path (CPU)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from reference_model.config import ModelConfig  # noqa: E402
from reference_model.loader import TokenLoader  # noqa: E402
from reference_model.train import (  # noqa: E402
    EMA,
    DistInfo,
    Logger,
    TrainConfig,
    lr_multiplier,
    main,
    train,
    training_fraction,
)

SHARD = "derived_docs_sample200_sp8192.bin"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny CPU models run ~10x faster on one thread than on two contended ones (OpenMP spin-waits)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def shard(shared_dir: Path) -> str:
    path = shared_dir / "data" / SHARD
    if not path.exists():
        pytest.skip(f"{path} missing")
    return str(path)


# Loop-mechanics tests use a micro model (3 layers x 32, every feature on) on 2 x 32-token micro-batches.
MICRO = ModelConfig.tiny(
    num_layers=3,
    model_dim=32,
    num_heads=2,
    num_kv_heads=1,
    loop_start=1,
    loop_end=1,
    parallel_residual_start=2,
)


def small_cfg(shard: str, **kw: object) -> TrainConfig:
    base = dict(
        train_files=shard,
        train_batch_tokens=4 * 32,
        train_seq_len=32,
        iterations=20,
        warmup_steps=0,
        max_wallclock_seconds=0.0,
        train_log_every=1,
        compile=False,
        grad_accum_steps=2,
        seed=7,
    )
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def quiet() -> Logger:
    return Logger(is_main=True, echo=False)


# --- loader ------------------------------------------------------------------------------------------------
def test_loader_windows_are_shifted_slices_of_the_shard(shard: str) -> None:
    tokens = np.fromfile(shard, dtype="<u2", offset=1024).astype(np.int64)
    loader = TokenLoader(shard, 32, seed=3)
    ((x, y),) = loader.next_step(4 * 32, 1)
    assert x.shape == y.shape == (4, 32) and x.dtype == torch.int64
    starts = loader._order[:4, 1]
    assert len(set(starts % 32)) == 1  # one random phase per shard per epoch
    for row_x, row_y, start in zip(x, y, starts):
        assert np.array_equal(row_x.numpy(), tokens[start : start + 32])
        assert np.array_equal(row_y.numpy(), tokens[start + 1 : start + 33])


def test_global_batch_is_independent_of_world_size_and_accumulation(shard: str) -> None:
    single = TokenLoader(shard, 16, seed=5)
    ranks = [TokenLoader(shard, 16, seed=5, rank=r, world_size=2) for r in range(2)]
    for _ in range(3):
        whole = torch.cat([x for x, _ in single.next_step(8 * 16, 1)])
        parts = torch.cat([x for r in ranks for x, _ in r.next_step(8 * 16, 2)])
        assert torch.equal(whole, parts)
    other_seed = TokenLoader(shard, 16, seed=6)
    assert not torch.equal(
        other_seed.next_step(8 * 16, 1)[0][0], TokenLoader(shard, 16, seed=5).next_step(8 * 16, 1)[0][0]
    )


def test_loader_visits_every_window_once_per_epoch(shard: str) -> None:
    loader = TokenLoader(shard, 2048, seed=1)
    first = loader._take(1)
    n = len(loader._order)
    rows = np.concatenate([first, loader._take(n - 1)])
    assert (
        loader.epoch == 0 and len({tuple(r) for r in rows}) == n == (420_548 - 1 - rows[0, 1] % 2048) // 2048
    )
    loader._take(1)
    assert loader.epoch == 1
    with pytest.raises(ValueError, match="equal micro-batches"):
        loader.next_step(3 * 2048, 2)


# --- schedule, EMA -----------------------------------------------------------------------------------------
def test_lr_schedule_is_time_based_with_linear_warmdown() -> None:
    assert lr_multiplier(0.0, 0.72) == 1.0
    assert lr_multiplier(0.279, 0.72) == 1.0
    assert lr_multiplier(0.28, 0.72) == pytest.approx(1.0)
    assert lr_multiplier(0.64, 0.72) == pytest.approx(0.5)
    assert lr_multiplier(1.0, 0.72) == 0.0
    assert lr_multiplier(0.99, 0.72, min_lr=0.1) == 0.1
    assert training_fraction(10, 294_000.0, 588_000.0, 20_000) == pytest.approx(0.5)
    assert training_fraction(10, 1e9, None, 20) == pytest.approx(0.5)
    assert TrainConfig().cap_ms == 588_000.0


def test_ema_is_an_exponential_average() -> None:
    p = torch.nn.Parameter(torch.zeros(3))
    model = torch.nn.Module()
    model.p = p
    ema = EMA(model, decay=0.5)
    for value in (1.0, 2.0, 4.0):
        with torch.no_grad():
            p.fill_(value)
        ema.update()
    ema.apply()
    assert torch.allclose(p, torch.full((3,), ((0 * 0.5 + 0.5) * 0.5 + 1.0) * 0.5 + 2.0))


# --- the loop ----------------------------------------------------------------------------------------------
def test_tiny_model_learns_real_tokens(shard: str) -> None:
    torch.manual_seed(0)
    cfg = small_cfg(shard, iterations=20, train_batch_tokens=8 * 64, train_seq_len=64)
    result = train(ModelConfig.tiny(), cfg, log=quiet())
    losses = [loss for _, loss in result.train_losses]
    assert len(losses) == 20 and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.5, losses
    assert result.recurrence_step == 7  # first step with step / iterations >= 0.35
    assert result.model.recurrence


class _TickingLoader(TokenLoader):
    """Every training step 'takes' 100 ms on a fake clock (integer ticks: no float drift)."""

    ticks = 0

    def next_step(self, batch_tokens: int, grad_accum_steps: int = 1):  # type: ignore[override]
        _TickingLoader.ticks += 1
        return super().next_step(batch_tokens, grad_accum_steps)


def test_wallclock_cap_reserve_and_recurrence_follow_the_clock(shard: str) -> None:
    cfg = small_cfg(
        shard, iterations=1000, max_wallclock_seconds=2.0, gptq_reserve_seconds=1.0, train_log_every=0
    )
    loader = _TickingLoader(shard, cfg.train_seq_len, seed=cfg.seed)
    _TickingLoader.ticks = 0
    log = quiet()
    result = train(MICRO, cfg, loader=loader, log=log, clock=lambda: _TickingLoader.ticks * 0.1)
    assert result.stopped_early and result.steps == 10  # 10 x 100 ms = the 1000 ms left after the reserve
    assert result.recurrence_step == 4  # first step that starts at >= 35% of the 1000 ms
    assert "gptq:reserving 1s, effective=1000ms" in log.lines
    stop = [ln for ln in log.lines if ln.startswith("stopping_early")]
    assert stop == ["stopping_early: wallclock_cap train_time:1000ms step:10/1000"]


def test_compile_warmup_restores_the_initial_state(shard: str) -> None:
    results = []
    for warmup in (0, 2):
        torch.manual_seed(0)
        cfg = small_cfg(shard, iterations=2, warmup_steps=warmup)
        results.append(train(MICRO, cfg, log=quiet()))
    assert results[0].train_losses == results[1].train_losses
    for a, b in zip(results[0].model.parameters(), results[1].model.parameters()):
        assert torch.equal(a, b)


LINE_SHAPES = {
    "code": r"^code_sha256:[0-9a-f]{64}$",
    "params": r"^model_params:\d+$",
    "world": r"^world_size:\d+ grad_accum_steps:\d+$",
    "batch": r"^train_batch_tokens:\d+ train_seq_len:\d+ iterations:\d+ warmup_steps:\d+ max_wallclock_seconds:[\d.]+$",
    "train": r"^step:\d+/\d+ train_loss:[\d.]+ train_time:\d+ms step_avg:[\d.]+ms$",
    "val": r"^step:\d+/\d+ val_loss:[\d.]+ val_bpb:[\d.]+ train_time:\d+ms step_avg:[\d.]+ms$",
    "loop": r"^layer_loop:enabled step:\d+ frac:[\d.]+ ",
    "ema": r"^ema:applying EMA weights$",
}


def test_logs_use_the_challenge_line_shapes_and_validation_is_untimed(shard: str) -> None:
    calls = []

    def fake_eval(model: torch.nn.Module) -> tuple[float, float]:
        calls.append(model.recurrence)
        return 5.0, 2.0

    log = quiet()
    cfg = small_cfg(shard, iterations=4, val_loss_every=2)
    result = train(MICRO, cfg, log=log, eval_fn=fake_eval)
    assert log.lines[0].startswith("code_sha256:")
    for name, pattern in LINE_SHAPES.items():
        assert any(re.match(pattern, ln) for ln in log.lines), name
    assert [s for s, _, _ in result.val] == [0, 2, 4]
    assert len(calls) == 3


def test_ddp_code_path_with_gloo_world_size_one(shard: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.distributed as dist

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(29500 + np.random.randint(0, 2000)))
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        result = train(MICRO, small_cfg(shard, iterations=2), log=quiet(), dist_info=DistInfo(0, 1, 0))
    finally:
        dist.destroy_process_group()
    assert result.steps == 2 and all(np.isfinite([v for _, v in result.train_losses]))


def test_command_line_trains_and_saves(
    shard: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model.pt"
    rc = main(
        [
            "--preset",
            "tiny",
            "--train-files",
            shard,
            "--out",
            str(out),
            "--set",
            "iterations=2",
            "--set",
            "warmup_steps=0",
            "--set",
            "max_wallclock_seconds=0",
            "--set",
            "train_seq_len=32",
            "--set",
            "train_batch_tokens=64",
            "--set",
            "grad_accum_steps=1",
            "--set",
            "num_layers=3",
            "--set",
            "model_dim=32",
            "--set",
            "num_heads=2",
            "--set",
            "num_kv_heads=1",
            "--set",
            "loop_end=1",
            "--set",
            "matrix_lr=0.01",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    summary = json.loads(text[text.rindex("{\n") :])
    assert summary["steps"] == 2 and summary["model_params"] > 0
    saved = torch.load(out)
    assert saved["model_config"]["num_layers"] == 3
    with pytest.raises(SystemExit):
        main(["--set", "no_such_field=1"])


def test_compile_mode_auto_is_regional_only_with_recurrence() -> None:
    from reference_model.train import resolve_compile_mode

    assert resolve_compile_mode("auto", ModelConfig()) == "regional"
    assert resolve_compile_mode("auto", ModelConfig(num_loops=0)) == "model"
    assert resolve_compile_mode("model", ModelConfig()) == "model"
    with pytest.raises(ValueError):
        resolve_compile_mode("blocks", ModelConfig())


def test_bench_helpers_compare_curves_and_report(tmp_path: Path) -> None:
    from reference_model.bench_train import compare_curves, report

    a, b = tmp_path / "a.log", tmp_path / "b.log"
    a.write_text(
        "model_params:1\nstep:1/3 train_loss:9.0000 train_time:5ms step_avg:5.00ms\n"
        "step:2/3 train_loss:8.0000 train_time:9ms step_avg:4.50ms\n"
    )
    b.write_text(
        "step:1/3 train_loss:9.0010 train_time:5ms step_avg:5.00ms\n"
        "step:2/3 train_loss:7.9000 train_time:9ms step_avg:4.50ms\n"
        "step:3/3 train_loss:7.0000 train_time:9ms step_avg:3.00ms\n"
    )
    cmp = compare_curves(str(a), str(b))
    assert cmp["steps_compared"] == 2 and cmp["max_abs_diff"] == pytest.approx(0.1)
    rows = tmp_path / "bench.jsonl"
    common = {"compile_warmup_s": 1.0, "peak_mem_mib": 10, "gpu": "X"}
    rows.write_text(
        json.dumps(
            {
                "impl": "record",
                "attention": "flash",
                "tokens_per_s_plain": 100.0,
                "ms_per_step_plain": 10.0,
                "tokens_per_s_loop": 50.0,
                "ms_per_step_loop": 20.0,
                **common,
            }
        )
        + "\n"
        + json.dumps(
            {
                "impl": "ours",
                "attention": "cudnn",
                "tokens_per_s_plain": 120.0,
                "ms_per_step_plain": 8.0,
                **common,
            }
        )
        + "\n"
    )
    text = report(str(rows))
    assert "speedup ours/record (plain): 1.200x" in text and "(loop)" not in text
