"""`pgolf-audit verify PATH --val GLOB --tokenizer M [--artifact F --mode ttt] [--rerun --train GLOB --gpus N --seed S]`.

Validates the mounted data, rescores the given artifact(s) and/or reruns the submission's script, attaches the
results to the Submission (``options.harness``) and runs the normal audit, so the report holds the static and
log findings plus PG801 (rescore) and PG802 (rerun), in any output format, with the audit's exit codes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from auditor.errors import InputError, UsageError

FORMATS = ("text", "json", "sarif", "markdown")


def add_verify_parser(sub: Any) -> argparse.ArgumentParser:
    v = sub.add_parser(
        "verify", help="rescore an artifact and/or rerun the submission on real data (executes it)"
    )
    v.add_argument("path", help="record folder")
    v.add_argument("--val", required=True, help="glob of validation shards (fineweb_val_*.bin)")
    v.add_argument("--tokenizer", help="SentencePiece .model of the submission's tokenizer (byte LUTs)")
    v.add_argument(
        "--sidecar", help="glob of CaseOps byte sidecars (fineweb_val_bytes_*.bin); replaces the LUTs"
    )
    v.add_argument(
        "--artifact",
        action="append",
        help="artifact to rescore: reference format or a record's final_model.int6.ptz (repeatable)",
    )
    v.add_argument(
        "--mode",
        default="ttt",
        help="eval(s) of the rescore, comma-separated: ttt, sliding, plain (default ttt)",
    )
    v.add_argument(
        "--seq-len", type=int, help="eval window (default: the submission's eval_seq_len, else 2048)"
    )
    v.add_argument(
        "--stride", type=int, help="sliding stride (default: the submission's eval_stride, else 64)"
    )
    v.add_argument(
        "--chunk-tokens", type=int, help="score-first TTT chunk (default: the submission's, else 32768)"
    )
    v.add_argument("--ttt-epochs", type=int, help="TTT epochs per chunk (default: the submission's, else 3)")
    v.add_argument("--ttt-lr", type=float, help="TTT learning rate (default: the submission's, else 0.005)")
    v.add_argument("--batch-seqs", type=int, default=32, help="windows per forward")
    v.add_argument(
        "--sdpa",
        default="cudnn,flash",
        help="SDPA kernels on CUDA, in priority order: cudnn,flash (fastest) | flash (the records' setting) | default",
    )
    v.add_argument("--no-compile", action="store_true", help="run the rescore eagerly (no torch.compile)")
    v.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    v.add_argument(
        "--max-tokens", type=int, help="score only the first N tokens (smoke tests; never canonical)"
    )
    v.add_argument("--device", default="auto", help="auto | cuda | cpu")
    v.add_argument(
        "--rerun", action="store_true", help="run the submission's train_gpt.py (executes its code)"
    )
    v.add_argument("--train", help="glob of training shards for --rerun")
    v.add_argument("--gpus", type=int, default=1, help="processes for --rerun (torchrun --nproc_per_node)")
    v.add_argument(
        "--seed", action="append", type=int, help="seed (repeatable); names the artifact's seed too"
    )
    v.add_argument("--timeout", type=float, help="hard limit per rerun in seconds (default 600+600+600)")
    v.add_argument("--env", action="append", default=[], help="extra KEY=VALUE for the rerun (repeatable)")
    v.add_argument("--scratch", help="directory for the rerun copies and logs (default: a new temp dir)")
    v.add_argument("--format", "-f", choices=FORMATS, default="text")
    v.add_argument("--output", "-o")
    v.add_argument("--strict", action="store_true")
    v.add_argument("--rules", help="comma-separated rule ids, names or categories (default: all)")
    v.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    v.add_argument("--debug", action="store_true")
    return v


def _progress(msg: str) -> None:
    print(f"pgolf-audit verify: {msg}", file=sys.stderr, flush=True)


def _parse_env(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"--env expects KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def run_verify(args: argparse.Namespace) -> int:
    from auditor.commands import _emit
    from auditor.engine import audit, select_rules
    from auditor.exitcodes import exit_code
    from auditor.harness.data import validate_data
    from auditor.harness.rerun import attach_reruns, mark_rerun_evidence, rerun
    from auditor.harness.rescore import rescore
    from auditor.render import render
    from auditor.submission import load_path

    if not args.artifact and not args.rerun:
        raise UsageError("verify: nothing to do; give --artifact FILE and/or --rerun")
    if args.rerun and not args.train:
        raise UsageError("verify --rerun needs --train GLOB (training shards)")
    if args.gpus < 1:
        raise UsageError("--gpus must be at least 1")
    if not (args.tokenizer or args.sidecar):
        raise UsageError("verify needs --tokenizer (or --sidecar) to count validation bytes")
    if args.rerun and not Path(args.path).is_dir():
        raise InputError(f"{args.path}: --rerun needs a record folder")
    extra_env = _parse_env(args.env)
    rules = select_rules(args.rules.split(",") if args.rules else None)
    if not rules:
        raise UsageError(f"--rules {args.rules!r} matches no rule")
    sub = load_path(args.path)
    data = validate_data(args.val, args.tokenizer, args.sidecar, args.train if args.rerun else None)
    _progress(data.summary())
    if not data.ok:
        raise InputError("data failed validation: " + "; ".join(data.problems))
    harness: dict[str, Any] = sub.options.harness
    harness["data"] = data.to_dict()

    seeds = args.seed or []
    modes = [m.strip() for m in str(args.mode).split(",") if m.strip()]
    bad = [m for m in modes if m not in ("ttt", "sliding", "plain")]
    if bad or not modes:
        raise UsageError(f"--mode expects ttt, sliding and/or plain, got {args.mode!r}")
    record = None
    if args.artifact:
        from auditor.harness.record_map import context_from_submission

        record = context_from_submission(sub)
    for i, artifact in enumerate(args.artifact or []):
        if not Path(artifact).is_file():
            raise InputError(f"no such artifact: {artifact}")
        seed = seeds[i] if len(seeds) == len(args.artifact) else None
        for mode in modes:
            _progress(f"rescoring {artifact} ({mode})")
            res = rescore(
                artifact,
                args.val,
                args.tokenizer,
                sidecar=args.sidecar,
                mode=mode,
                seed=seed,
                seq_len=args.seq_len,
                stride=args.stride,
                batch_seqs=args.batch_seqs,
                chunk_tokens=args.chunk_tokens,
                ttt_epochs=args.ttt_epochs,
                ttt_lr=args.ttt_lr,
                max_tokens=args.max_tokens,
                device=args.device,
                data=data,
                record=record,
                compile=False if args.no_compile else None,
                progress=not args.no_progress,
                sdpa_order=args.sdpa,
            )
            if res.ok:
                _progress(
                    f"{res.log_line()} ({res.format} format, {res.tokens_per_second:,.0f} tokens/s, "
                    f"warmup {res.warmup_ms / 1e3:.1f}s; {res.hparams_source or 'config from the artifact'})"
                )
            else:
                _progress(f"rescore failed: {res.error}")
            harness.setdefault("rescore", []).append(res.to_dict())
    if harness.get("rescore"):
        from auditor.harness.table import seed_table, table_text

        rows = seed_table(sub, harness["rescore"])
        harness["seed_table"] = rows
        for line in table_text(rows).splitlines():
            _progress(line)

    if args.rerun:
        results = []
        for seed in seeds or [1337]:
            _progress(f"rerunning {sub.entry or 'train_gpt.py'} with SEED={seed} on {args.gpus} process(es)")
            res = rerun(
                args.path,
                val=args.val,
                tokenizer=args.tokenizer,
                seed=seed,
                train=args.train,
                sidecar=args.sidecar,
                gpus=args.gpus,
                timeout_s=args.timeout,
                scratch=args.scratch,
                extra_env=extra_env,
                canonical=data.canonical,
                data_summary=data.summary(),
                vocab_size=data.tokenizer.vocab_size if data.tokenizer else None,
            )
            state = (
                "finished"
                if res.finished
                else ("killed at the limit" if res.timed_out else res.error or f"exit {res.returncode}")
            )
            _progress(f"seed {seed}: {state} in {res.wall_s:.0f}s; log {res.log_path}")
            _progress(f"seed {seed} sandbox: {res.isolation}")
            if res.dropped_env:
                _progress(f"seed {seed}: refused --env credentials {', '.join(res.dropped_env)}")
            ph = res.phases
            if ph.get("launch_to_train_end_s") is not None:
                _progress(
                    f"seed {seed} measured outside: launch to end of training {ph['launch_to_train_end_s']:.0f}s, "
                    + (f"evaluation {ph['eval_s']:.0f}s, " if ph.get("eval_s") is not None else "")
                    + f"total {ph['total_s']:.0f}s"
                )
            results.append(res)
        attach_reruns(sub, results)

    report = audit(sub, rules, debug=args.debug)
    mark_rerun_evidence(report, sub)
    report.tables["harness"] = {k: v for k, v in harness.items()}
    color = args.color == "always" or (args.color == "auto" and not args.output and sys.stdout.isatty())
    from auditor.render.plots import plots_section, write_verify_plots

    plots = write_verify_plots(report, sub, args.output)  # PNGs next to --output (the `plots` extra)
    _emit(render(report, args.format, color=color) + plots_section(plots, args.format), args.output)
    return exit_code(report, strict=args.strict)
