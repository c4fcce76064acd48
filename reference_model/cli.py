"""`pgolf-audit reference ...` / `python -m reference_model ...`: train | quantize | eval | tokenize | bench.

Each subcommand prints the challenge-format log lines as it goes (progress bars on stderr) and ends with one JSON
summary on stdout. Multi-GPU: start any of them under `torchrun --nproc_per_node=N -m reference_model ...`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

PROG = "pgolf-audit reference"


# --------------------------------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def progress_bar(
    description: str, total: int | None, enabled: bool = True
) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr; yields `advance(n)`. Silent when disabled or rich is missing."""
    if not enabled:
        yield lambda _n: None
        return
    try:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    except ImportError:  # pragma: no cover - rich is a dependency
        yield lambda _n: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as prog:
        task = prog.add_task(description, total=total)
        yield lambda n: prog.advance(task, n)


def _emit(summary: dict[str, Any], json_path: str | None) -> None:
    text = json.dumps(summary, indent=2, sort_keys=True, default=str)
    print(text, flush=True)
    if json_path:
        Path(json_path).write_text(text + "\n", encoding="utf-8")


class _Log:
    """Prints challenge-format lines (rank 0 only) and appends them to a log file."""

    def __init__(self, path: str | None, main: bool):
        self.path, self.main = path, main
        self.lines: list[str] = []

    def __call__(self, msg: str) -> None:
        if not self.main:
            return
        self.lines.append(msg)
        print(msg, file=sys.stderr, flush=True)
        if self.path:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(msg + "\n")


def _device(name: str) -> Any:
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available (use --device cpu)")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device(name)


def _init_distributed(device: Any) -> Any:
    """torchrun's environment -> a process group; returns evaluate.Ranks."""
    import torch.distributed as dist

    from reference_model.evaluate import Ranks

    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and not dist.is_initialized():
        if device.type == "cuda":
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    return Ranks.current()


# --------------------------------------------------------------------------------------------------- tokenize
def cmd_tokenize(args: argparse.Namespace) -> int:
    from reference_model.tokenize import tokenize_jsonl

    t0 = time.perf_counter()
    with progress_bar("tokenizing documents", args.limit, not args.no_progress) as advance:
        report = tokenize_jsonl(
            args.jsonl,
            args.tokenizer,
            args.out,
            prefix=args.prefix,
            shard_tokens=args.shard_tokens,
            limit=args.limit,
            sidecar=args.sidecar,
            progress=advance,
        )
    summary = {"command": "tokenize", **report.to_dict(), "seconds": round(time.perf_counter() - t0, 3)}
    _emit(summary, args.json)
    return 0


# --------------------------------------------------------------------------------------------------- quantize
def cmd_quantize(args: argparse.Namespace) -> int:
    import torch

    from reference_model.config import ModelConfig
    from reference_model.loader import TokenLoader
    from reference_model.model import GPT
    from reference_model.quant import QuantConfig, quantize_model

    device = _device(args.device)
    ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    cfg = ModelConfig(**ckpt["model_config"])
    model = GPT(cfg)
    model.load_state_dict(ckpt["state_dict"])
    model.to(device)
    if device.type == "cuda":
        model.to_mixed_precision()
    model.set_recurrence(True)  # the record quantizes and evaluates with depth recurrence on
    qcfg = QuantConfig(calibration_batches=args.calibration_batches)
    loader = TokenLoader(args.calibration_files, args.seq_len, seed=args.seed, device=device)
    log = _Log(args.log, True)

    def batches() -> Iterator[Any]:
        with progress_bar("GPTQ calibration", qcfg.calibration_batches, not args.no_progress) as advance:
            for _ in range(qcfg.calibration_batches):
                ((x, _y),) = loader.next_step(args.calibration_tokens, 1)
                advance(1)
                yield x

    log("GPTQ:collecting Hessians from calibration data...")
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    )
    with autocast:
        _qstate, report = quantize_model(
            model, batches(), args.out, config=cfg, qcfg=qcfg, forward=model.logits
        )
    for line in report.log_lines():
        log(line)
    _emit({"command": "quantize", **report.to_dict()}, args.json)
    return 0


# --------------------------------------------------------------------------------------------------- eval
def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from reference_model.evaluate import (
        EvalConfig,
        ScoreFirstTTT,
        eval_plain,
        eval_sliding,
        load_val_stream,
        sliding_window_starts,
    )
    from reference_model.quant import restore_model

    device = _device(args.device)
    ranks = _init_distributed(device)
    log = _Log(args.log, ranks.rank == 0)
    cfg = EvalConfig(
        seq_len=args.seq_len,
        stride=args.stride,
        batch_seqs=args.batch_seqs,
        chunk_tokens=args.chunk_tokens,
        ttt_epochs=args.ttt_epochs,
        ttt_lr=args.ttt_lr,
        ttt_momentum=args.ttt_momentum,
        compile=False if args.no_compile else None,
    )
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    t0 = time.perf_counter()
    stream = load_val_stream(
        args.val,
        args.tokenizer,
        seq_len=cfg.seq_len,
        device=device,
        sidecar=args.sidecar,
        max_tokens=args.max_tokens,
    )
    if args.sidecar:
        log("val_bpb:byte_sidecar:enabled")
    log(f"val_tokens: {stream.num_targets}")

    def fresh_model() -> Any:
        model, _ = restore_model(args.artifact)
        model.to(device)
        if device.type == "cuda":
            model.to_mixed_precision()
        model.set_attention_backend(args.attention)
        return model

    model = fresh_model()
    load_ms = 1e3 * (time.perf_counter() - t0)
    log(f"artifact:loaded {args.artifact} in {load_ms:.0f}ms (decompression, not on the eval clock)")
    results = []
    main = ranks.rank == 0 and not args.no_progress
    per_rank_windows = -(
        -len(sliding_window_starts(stream.num_targets, cfg.seq_len, cfg.stride)) // ranks.world
    )
    for mode in args.modes.split(","):
        if mode == "plain":
            n = -(-stream.num_targets // cfg.seq_len)
            with progress_bar("plain eval", n, main) as advance:
                r = eval_plain(model, stream, cfg, ranks=ranks, progress=advance)
        elif mode == "sliding":
            with progress_bar("sliding-window eval", per_rank_windows, main) as advance:
                r = eval_sliding(model, stream, cfg, ranks=ranks, progress=advance)
        elif mode == "ttt":
            ttt_model = fresh_model()  # TTT trains its model: never reuse the scored one
            runner = ScoreFirstTTT(ttt_model, stream, cfg, ranks=ranks, log=log)
            with progress_bar("score-first TTT", per_rank_windows, main) as advance:
                runner.progress = advance
                r = runner.run()
            del ttt_model
        else:
            raise SystemExit(f"{PROG} eval: unknown mode {mode!r} (plain, sliding, ttt)")
        log(r.log_line())
        log(f"{r.label}:compile_warmup {r.warmup_ms:.0f}ms (not on the eval clock)")
        results.append(r)
    total_ms = sum(r.eval_time_ms for r in results)
    log(f"total_eval_time:{total_ms / 1e3:.1f}s")
    summary = {
        "command": "eval",
        "artifact": args.artifact,
        "val_tokens": stream.num_targets,
        "world_size": ranks.world,
        "device": str(device),
        "artifact_load_ms": round(load_ms),
        "results": [
            {k: v for k, v in r.to_dict().items() if k != "extra"} | _jsonable(r.extra) for r in results
        ],
        "total_eval_time_ms": round(total_ms),
    }
    if ranks.rank == 0:
        _emit(summary, args.json)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    return 0


def _jsonable(extra: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in extra.items() if isinstance(v, (int, float, str, bool))}


# --------------------------------------------------------------------------------------------------- train/bench
def cmd_train(argv: list[str]) -> int:
    from reference_model.train import main as train_main

    return int(train_main(argv) or 0)


def cmd_bench(argv: list[str]) -> int:
    what = argv[0] if argv else "eval"
    rest = argv[1:]
    if what == "eval":
        from reference_model.bench_eval import main as bench_main

        return int(bench_main(rest) or 0)
    if what == "train":
        try:
            from reference_model.bench_train import main as bench_train_main  # type: ignore[import-not-found]
        except ImportError:
            print(f"{PROG} bench train: reference_model.bench_train is not available", file=sys.stderr)
            return 2
        return int(bench_train_main(rest) or 0)
    print(f"{PROG} bench: expected 'eval' or 'train', got {what!r}", file=sys.stderr)
    return 2


# --------------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("train", help="train the reference model (options: `train --help`)", add_help=False)
    sub.add_parser("bench", help="benchmarks: `bench eval ...` | `bench train ...`", add_help=False)

    t = sub.add_parser("tokenize", help='jsonl {"text":...} -> challenge shards ([BOS]+encode(doc), no EOS)')
    t.add_argument("jsonl")
    t.add_argument("--tokenizer", required=True, help="SentencePiece .model")
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument("--prefix", default="fineweb_val", help="shard name prefix (default fineweb_val)")
    t.add_argument("--shard-tokens", type=int, default=100_000_000)
    t.add_argument("--limit", type=int, help="first N documents only")
    t.add_argument("--sidecar", action="store_true", help="also write per-token byte sidecars")
    t.add_argument("--json", help="also write the summary here")
    t.add_argument("--no-progress", action="store_true")

    q = sub.add_parser("quantize", help="checkpoint (train --out) -> GPTQ int6/int8 + brotli artifact")
    q.add_argument("checkpoint")
    q.add_argument("--calibration-files", required=True, help="glob of TRAINING shards (never validation)")
    q.add_argument("--out", required=True)
    q.add_argument("--calibration-batches", type=int, default=64)
    q.add_argument("--calibration-tokens", type=int, default=98_304, help="tokens per calibration batch")
    q.add_argument("--seq-len", type=int, default=2048)
    q.add_argument("--seed", type=int, default=1337)
    q.add_argument("--device", default="auto")
    q.add_argument("--log")
    q.add_argument("--json")
    q.add_argument("--no-progress", action="store_true")

    e = sub.add_parser("eval", help="score an artifact on validation shards: plain, sliding, score-first TTT")
    e.add_argument("artifact")
    e.add_argument("--val", required=True, help="glob of validation shards (fineweb_val_*.bin)")
    e.add_argument("--tokenizer", help="SentencePiece .model for the byte LUTs")
    e.add_argument("--sidecar", help="glob of per-token byte sidecars (replaces the LUTs)")
    e.add_argument("--modes", default="sliding,ttt", help="comma list of plain, sliding, ttt")
    e.add_argument("--seq-len", type=int, default=2048)
    e.add_argument("--stride", type=int, default=64)
    e.add_argument("--batch-seqs", type=int, default=32)
    e.add_argument("--chunk-tokens", type=int, default=32_768)
    e.add_argument("--ttt-epochs", type=int, default=3)
    e.add_argument("--ttt-lr", type=float, default=0.005)
    e.add_argument("--ttt-momentum", type=float, default=0.9)
    e.add_argument("--max-tokens", type=int, help="only the first N tokens of the stream (benchmarks)")
    e.add_argument("--attention", default="auto", choices=("auto", "fa3", "sdpa"))
    e.add_argument("--device", default="auto")
    e.add_argument("--no-compile", action="store_true")
    e.add_argument("--log", help="append the log lines to this file")
    e.add_argument("--json", help="also write the summary here")
    e.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "train":
        return cmd_train(args_list[1:])
    if args_list and args_list[0] == "bench":
        return cmd_bench(args_list[1:])
    parser = build_parser()
    if not args_list:
        parser.print_help(sys.stderr)
        return 2
    args = parser.parse_args(args_list)
    try:
        if args.command == "tokenize":
            return cmd_tokenize(args)
        if args.command == "quantize":
            return cmd_quantize(args)
        if args.command == "eval":
            return cmd_eval(args)
    except (FileNotFoundError, ValueError) as exc:  # bad input: a message, not a traceback
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    parser.print_help(sys.stderr)
    return 2
