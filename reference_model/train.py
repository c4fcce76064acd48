"""Training loop of the reference model: the record's schedule, EMA, wallclock cap and logs.

    python -m reference_model.train --train-files 'data/fineweb_train_*.bin' --out final_model.pt
    torchrun --standalone --nproc_per_node=2 -m reference_model.train --train-files ... --out ...

Semantics (the 2026-04-09 record's `train_model`):
- LR: time-based. frac = elapsed / (wallclock cap - GPTQ reserve) (or step / iterations without a cap);
  multiplier 1 until frac = 1 - warmdown_frac, then linear to min_lr at frac = 1. No LR warmup.
- Depth recurrence switches on the first step with frac >= loop_enable_frac (0.35) and stays on.
- Compile warmup: `warmup_steps` steps without and then with recurrence run BEFORE the clock starts, then the
  model and optimizer states are restored and the loader rewound, so the timed run starts from the same state.
- EMA of every parameter (decay 0.9965) updated after each step and loaded into the model at the end.
- Wallclock: the cap is max_wallclock_seconds - gptq_reserve_seconds (the reserve is the time the artifact's
  GPTQ Hessian collection gets inside the 600 s); after the step that crosses it (all ranks agree via MAX
  all-reduce) the loop stops. Validation time is excluded from train_time.
- Logs use the challenge's line shapes (shared/docs/rules.md §E) and start with the code hash.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from reference_model.config import ModelConfig
from reference_model.loader import TokenLoader
from reference_model.model import GPT, count_params
from reference_model.optim import OptimConfig, ReferenceOptimizer

EvalFn = Callable[[nn.Module], tuple[float, float]]


@dataclass(frozen=True)
class TrainConfig:
    train_files: str = "./data/datasets/fineweb10B_sp8192/fineweb_train_*.bin"
    train_batch_tokens: int = 786_432
    train_seq_len: int = 2048
    iterations: int = 20_000
    warmdown_frac: float = 0.72
    min_lr: float = 0.0
    warmup_steps: int = 20  # compile-warmup steps per recurrence mode (not an LR warmup)
    max_wallclock_seconds: float = 600.0  # 0 = no cap (schedule by step / iterations)
    gptq_reserve_seconds: float = 12.0
    ema_decay: float = 0.9965
    train_log_every: int = 500
    val_loss_every: int = 4000
    seed: int = 1337
    grad_accum_steps: int = 0  # 0 = 8 // world_size, as the record
    compile: bool = True
    # "model": torch.compile(whole model); "regional": each block + stem + head compiled separately
    # (GPT.compile_regions: same function); "auto": regional when the model has depth recurrence, else model.
    # Measured on one H100 (bench_train, 2026-11-22): regional is 2.0% faster with recurrence on (1214 vs 1239
    # ms/step) and 1.8% slower with it off (803 vs 789); with recurrence on for 65% of the budget, regional wins.
    compile_mode: str = "auto"
    attention: str = "auto"  # auto | fa3 | sdpa
    fused_qkv: bool = (
        False  # one GEMM for q, k, v: measured 10% SLOWER on H100 (split views defeat cuDNN SDPA)
    )
    sdpa_order: str = (
        "cudnn,flash"  # which SDPA kernels CUDA may use when FA3 is absent (attention.sdpa_backend)
    )
    log_file: str = ""

    def accum_steps(self, world_size: int) -> int:
        if self.grad_accum_steps > 0:
            return self.grad_accum_steps
        if 8 % world_size:
            raise ValueError(f"world_size {world_size} must divide 8 (grad_accum_steps = 8 // world_size)")
        return 8 // world_size

    @property
    def cap_ms(self) -> float | None:
        if self.max_wallclock_seconds <= 0:
            return None
        return 1000.0 * (self.max_wallclock_seconds - self.gptq_reserve_seconds)


# --- schedule ----------------------------------------------------------------------------------------------
def training_fraction(step: int, elapsed_ms: float, cap_ms: float | None, iterations: int) -> float:
    if cap_ms is None:
        return step / max(iterations, 1)
    return elapsed_ms / max(cap_ms, 1e-9)


def lr_multiplier(frac: float, warmdown_frac: float, min_lr: float = 0.0) -> float:
    if warmdown_frac <= 0 or frac < 1.0 - warmdown_frac:
        return 1.0
    return max((1.0 - frac) / warmdown_frac, min_lr)


class EMA:
    """Exponential moving average of the parameters, kept in fp32."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.params = [p for p in model.parameters()]
        self.shadow = [p.detach().float().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        current = [p.detach().float() if p.dtype != torch.float32 else p.detach() for p in self.params]
        torch._foreach_lerp_(self.shadow, current, 1.0 - self.decay)  # s = d*s + (1-d)*p

    @torch.no_grad()
    def apply(self) -> None:
        for p, s in zip(self.params, self.shadow, strict=True):
            p.copy_(s.to(p.dtype))


# --- infrastructure ----------------------------------------------------------------------------------------
def code_hash() -> str:
    """sha256 over this package's Python sources (name + bytes, sorted): identifies the code that ran."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).resolve().parent.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or dist.is_initialized()

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """torchrun's env (RANK, WORLD_SIZE, LOCAL_RANK) -> process group (NCCL on CUDA, gloo on CPU)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo()
    info = DistInfo(
        int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    )
    if not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
            dist.init_process_group("nccl", device_id=torch.device("cuda", info.local_rank))
        else:
            dist.init_process_group("gloo")
    return info


class Logger:
    def __init__(self, is_main: bool, path: str = "", echo: bool = True):
        self.is_main, self.path, self.echo = is_main, path, echo
        self.lines: list[str] = []

    def __call__(self, msg: str) -> None:
        if not self.is_main:
            return
        self.lines.append(msg)
        if self.echo:
            print(msg, flush=True)
        if self.path:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(msg + "\n")


@dataclass
class TrainResult:
    model: GPT
    steps: int
    train_time_ms: float
    stopped_early: bool
    recurrence_step: int | None
    train_losses: list[tuple[int, float]] = field(default_factory=list)
    val: list[tuple[int, float, float]] = field(default_factory=list)
    log_lines: list[str] = field(default_factory=list)


def build_model(cfg: ModelConfig, train_cfg: TrainConfig, device: torch.device) -> GPT:
    model = GPT(cfg).to(device)
    if device.type == "cuda":
        model.to_mixed_precision(torch.bfloat16)
    model.set_attention_backend(train_cfg.attention)
    model.set_fused_qkv(train_cfg.fused_qkv)
    return model


def make_step_fn(
    model: nn.Module,
    opt: ReferenceOptimizer,
    loader: TokenLoader,
    batch_tokens: int,
    accum: int,
    device: torch.device,
    distributed: bool,
) -> Callable[[int, float], torch.Tensor]:
    """One optimizer step over `accum` micro-batches; returns the mean loss as a device tensor (no sync)."""
    cuda = device.type == "cuda"

    def step_fn(step: int, lr_scale: float) -> torch.Tensor:
        total = torch.zeros((), device=device)
        for m, (x, y) in enumerate(loader.next_step(batch_tokens, accum)):
            skip_sync = distributed and m < accum - 1  # DDP all-reduces on the last micro-batch only
            ctx = model.no_sync() if skip_sync else contextlib.nullcontext()  # type: ignore[operator]
            with ctx, torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                loss = model(x, y)
                (loss / accum).backward()
            total += loss.detach()
        opt.set_schedule(step, lr_scale)
        opt.clip_grads()
        opt.step()
        return total / accum

    return step_fn


def resolve_compile_mode(mode: str, model_cfg: ModelConfig) -> str:
    """'auto' -> 'regional' for a model with depth recurrence (it trains 65% of its budget looped), else 'model'."""
    if mode not in ("auto", "model", "regional"):
        raise ValueError(f"compile_mode must be 'auto', 'model' or 'regional', got {mode!r}")
    if mode == "auto":
        return "regional" if model_cfg.num_loops > 0 else "model"
    return mode


def compile_model(
    base: GPT, info: DistInfo, device: torch.device, use_compile: bool, mode: str = "auto"
) -> nn.Module:
    mode = resolve_compile_mode(mode, base.cfg)
    model: nn.Module = base
    if use_compile and mode == "regional":
        base.compile_regions(dynamic=False, fullgraph=True)
    elif use_compile:
        model = torch.compile(base, dynamic=False, fullgraph=True)
    if info.distributed:
        torch._dynamo.config.optimize_ddp = False  # one graph per rank; DDP buckets the grads (as the record)
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[info.local_rank] if device.type == "cuda" else None
        )
    return model


# --- the loop ----------------------------------------------------------------------------------------------
def train(
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    optim_cfg: OptimConfig | None = None,
    *,
    device: torch.device | str = "cpu",
    loader: TokenLoader | None = None,
    eval_fn: EvalFn | None = None,
    log: Logger | None = None,
    clock: Callable[[], float] = time.perf_counter,
    dist_info: DistInfo | None = None,
) -> TrainResult:
    device = torch.device(device)
    info = dist_info or DistInfo()
    log = log or Logger(info.is_main, cfg.log_file)
    optim_cfg = optim_cfg or OptimConfig()
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    accum = cfg.accum_steps(info.world_size)

    torch.manual_seed(cfg.seed)
    if cuda:
        from reference_model.attention import set_sdpa_backend

        set_sdpa_backend(cfg.sdpa_order)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    base = build_model(model_cfg, cfg, device)
    if loader is None:
        loader = TokenLoader(
            cfg.train_files,
            cfg.train_seq_len,
            rank=info.rank,
            world_size=info.world_size,
            seed=cfg.seed,
            device=device,
        )

    log(f"code_sha256:{code_hash()}")
    log(f"Running PyTorch {torch.__version__}")
    log("Hyperparameters:")
    for k, v in sorted(
        {**dataclasses.asdict(model_cfg), **dataclasses.asdict(optim_cfg), **dataclasses.asdict(cfg)}.items()
    ):
        log(f"  {k}: {v}")
    log(f"seed:{cfg.seed}")
    log(f"world_size:{info.world_size} grad_accum_steps:{accum}")
    log(
        f"train_batch_tokens:{cfg.train_batch_tokens} train_seq_len:{cfg.train_seq_len} iterations:{cfg.iterations} "
        f"warmup_steps:{cfg.warmup_steps} max_wallclock_seconds:{cfg.max_wallclock_seconds:.3f}"
    )
    log(f"train_loader:dataset:{Path(loader.paths[0]).parent.name} train_shards:{len(loader.paths)}")
    log(f"attention_backend:{base.attention_backend}" + (f" sdpa:{cfg.sdpa_order}" if cuda else ""))
    if cfg.compile:
        log(f"compile_mode:{resolve_compile_mode(cfg.compile_mode, model_cfg)}")
    log(f"model_params:{count_params(base)}")

    model = compile_model(base, info, device, cfg.compile, cfg.compile_mode)
    opt = ReferenceOptimizer(base, optim_cfg)
    cap_ms = cfg.cap_ms
    if cap_ms is not None:
        log(f"gptq:reserving {cfg.gptq_reserve_seconds:.0f}s, effective={cap_ms:.0f}ms")

    step_fn = make_step_fn(model, opt, loader, cfg.train_batch_tokens, accum, device, info.distributed)

    # Compile warmup outside the timed region, then restore the initial state.
    if cfg.warmup_steps > 0:
        initial_model = {k: v.detach().cpu().clone() for k, v in base.state_dict().items()}
        initial_opt = copy.deepcopy(opt.state_dict())
        modes = [False, True] if model_cfg.num_loops > 0 else [False]
        for recurrent in modes:
            base.set_recurrence(recurrent)
            prefix = "loop_warmup_step" if recurrent else "warmup_step"
            for i in range(cfg.warmup_steps):
                step_fn(i, 1.0)
                if i < 5 or (i + 1) % 10 == 0 or i + 1 == cfg.warmup_steps:
                    log(f"{prefix}:{i + 1}/{cfg.warmup_steps}")
        base.set_recurrence(False)
        base.load_state_dict(initial_model, strict=True)
        opt.load_state_dict(initial_opt)
        opt.zero_grad()
        loader.reset()

    ema = EMA(base, cfg.ema_decay)
    result = TrainResult(model=base, steps=0, train_time_ms=0.0, stopped_early=False, recurrence_step=None)
    train_ms = 0.0
    stop_after: int | None = None
    sync()
    t0 = clock()
    step = 0
    while True:
        last = step == cfg.iterations or (stop_after is not None and step >= stop_after)
        if last or (eval_fn is not None and cfg.val_loss_every > 0 and step % cfg.val_loss_every == 0):
            sync()
            train_ms += 1000.0 * (clock() - t0)  # bank the timed region; validation is not training time
            t0 = clock()
        if eval_fn is not None and (last or (cfg.val_loss_every > 0 and step % cfg.val_loss_every == 0)):
            val_loss, val_bpb = eval_fn(base)
            result.val.append((step, val_loss, val_bpb))
            log(
                f"step:{step}/{cfg.iterations} val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f} "
                f"train_time:{train_ms:.0f}ms step_avg:{train_ms / max(step, 1):.2f}ms"
            )
            sync()
            t0 = clock()
        if last:
            if stop_after is not None and step < cfg.iterations:
                result.stopped_early = True
                log(f"stopping_early: wallclock_cap train_time:{train_ms:.0f}ms step:{step}/{cfg.iterations}")
            break
        elapsed = train_ms + 1000.0 * (clock() - t0)
        frac = training_fraction(step, elapsed, cap_ms, cfg.iterations)
        if model_cfg.num_loops > 0 and not base.recurrence and frac >= model_cfg.loop_enable_frac:
            base.set_recurrence(True)
            result.recurrence_step = step
            enc, dec = base.layer_schedule()
            log(f"layer_loop:enabled step:{step} frac:{frac:.3f} encoder:{enc} decoder:{dec}")
        loss = step_fn(step, lr_multiplier(frac, cfg.warmdown_frac, cfg.min_lr))
        ema.update()
        step += 1
        elapsed = train_ms + 1000.0 * (clock() - t0)
        if cfg.train_log_every > 0 and (
            step <= 5 or step % cfg.train_log_every == 0 or stop_after is not None
        ):
            if info.distributed:  # log the global batch's loss, not rank 0's share (the record logs rank 0's)
                dist.all_reduce(loss, op=dist.ReduceOp.SUM)
                loss = loss / info.world_size
            value = float(loss.item())
            result.train_losses.append((step, value))
            log(
                f"step:{step}/{cfg.iterations} train_loss:{value:.4f} train_time:{elapsed:.0f}ms "
                f"step_avg:{elapsed / step:.2f}ms"
            )
        reached = cap_ms is not None and elapsed >= cap_ms
        if info.distributed and cap_ms is not None:
            flag = torch.tensor(int(reached), device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            reached = bool(flag.item())
        if stop_after is None and reached:
            stop_after = step
    if cuda:
        mib = 1024 * 1024
        log(
            f"peak memory allocated: {torch.cuda.max_memory_allocated() // mib} MiB "
            f"reserved: {torch.cuda.max_memory_reserved() // mib} MiB"
        )
    log("ema:applying EMA weights")
    ema.apply()
    result.steps = step
    result.train_time_ms = train_ms
    result.log_lines = list(log.lines)
    return result


# --- command line ------------------------------------------------------------------------------------------
def _coerce(value: str, like: Any) -> Any:
    if isinstance(like, bool):
        return value.lower() in ("1", "true", "yes", "on")
    return type(like)(value)


def apply_overrides(obj: Any, pairs: list[str]) -> Any:
    """`key=value` strings -> dataclasses.replace(obj, ...) for the keys obj has; unknown keys raise."""
    names = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    changes = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in names:
            raise KeyError(key)
        changes[key] = _coerce(value, names[key])
    return dataclasses.replace(obj, **changes)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m reference_model.train", description=__doc__.split("\n")[0])
    ap.add_argument("--train-files", default=TrainConfig.train_files, help="glob of training shards")
    ap.add_argument("--preset", choices=("record", "tiny"), default="record", help="model configuration")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any ModelConfig / TrainConfig / OptimConfig field (repeatable)",
    )
    ap.add_argument("--out", default="", help="save the EMA weights (state_dict + config) here")
    ap.add_argument("--summary", default="", help="write the JSON summary here as well as printing it")
    return ap.parse_args(argv)


def split_overrides(pairs: list[str]) -> tuple[list[str], list[str], list[str]]:
    m = {f.name for f in dataclasses.fields(ModelConfig)}
    o = {f.name for f in dataclasses.fields(OptimConfig)}
    t = {f.name for f in dataclasses.fields(TrainConfig)}
    out: tuple[list[str], list[str], list[str]] = ([], [], [])
    for pair in pairs:
        key = pair.partition("=")[0]
        if key in m:
            out[0].append(pair)
        elif key in o:
            out[1].append(pair)
        elif key in t:
            out[2].append(pair)
        else:
            raise SystemExit(f"--set {pair}: no config field named {key!r}")
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    m_pairs, o_pairs, t_pairs = split_overrides(args.set)
    model_cfg = apply_overrides(ModelConfig.tiny() if args.preset == "tiny" else ModelConfig(), m_pairs)
    optim_cfg = apply_overrides(OptimConfig(), o_pairs)
    cfg = apply_overrides(TrainConfig(train_files=args.train_files), t_pairs)
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    info = init_distributed(device_type)
    device = torch.device("cuda", info.local_rank) if device_type == "cuda" else torch.device("cpu")
    if device_type == "cpu" and cfg.compile:
        cfg = dataclasses.replace(cfg, compile=False)
    result = train(model_cfg, cfg, optim_cfg, device=device, dist_info=info)
    summary = {
        "steps": result.steps,
        "train_time_ms": round(result.train_time_ms),
        "stopped_early": result.stopped_early,
        "recurrence_step": result.recurrence_step,
        "final_train_loss": result.train_losses[-1][1] if result.train_losses else None,
        "world_size": info.world_size,
        "code_sha256": code_hash(),
        "model_params": count_params(result.model),
    }
    if info.is_main:
        if args.out:
            torch.save(
                {"model_config": dataclasses.asdict(model_cfg), "state_dict": result.model.state_dict()},
                args.out,
            )
            summary["out"] = args.out
        text = json.dumps(summary, indent=2)
        print(text)
        if args.summary:
            Path(args.summary).write_text(text + "\n")
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
