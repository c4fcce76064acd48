"""Eval throughput of our sliding-window and score-first TTT eval, next to the record's own eval code.

    python -m reference_model.bench_eval prepare-record PACKED_TRAIN_GPT.py --out .bench/record_train_gpt.py
    python -m reference_model.bench_eval run --val 'shards*.bin' --tokenizer sp8192.model \
        [--record .bench/record_train_gpt.py] [--max-tokens N] [--json out.json]

Both sides run on the same GPU, in one process, on the same tokens and the same weights (the full-size record
configuration, seeded random weights; our state-dict keys are the record's, so they load into its GPT with
strict=True), with PyTorch SDPA standing in for FlashAttention 3 on both (`prepare-record` decodes the record's
lzma/base85 script into a LOCAL file and swaps its FA3 import for an SDPA shim; that file is never committed).

The record times each eval including its torch.compile (its `timed_eval` wraps the whole function); ours reports
the challenge's clock (compile warmup excluded) and the warmup separately, so both "incl. compile" figures are
comparable and ours "excl. compile" is what the challenge would count.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import lzma
import math
import re
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np

SDPA_SHIM = '''
import torch.nn.functional as _F_shim
def flash_attn_3_func(q, k, v, causal=True):
    """bench shim: PyTorch SDPA in FA3's [B, T, H, D] layout (GQA by broadcasting K/V heads)."""
    y = _F_shim.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             is_causal=causal, enable_gqa=k.size(2) != q.size(2))
    return y.transpose(1, 2)
'''
FA3_IMPORT = re.compile(r"^from flash_attn_interface import flash_attn_func as flash_attn_3_func\s*$", re.M)


def decode_packed(source: str) -> str:
    """The source inside `exec(L.decompress(B.b85decode("..."), format=..., filters=...))` (or the text itself)."""
    m = re.search(r'b85decode\("([^"]*)"\)', source)
    if not m:
        return source
    raw = base64.b85decode(m.group(1))
    try:
        return lzma.decompress(raw).decode("utf-8")
    except lzma.LZMAError:  # the records pack raw LZMA2 streams
        return lzma.decompress(raw, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}]).decode(
            "utf-8"
        )


def prepare_record(packed: Path, out: Path) -> Path:
    code = decode_packed(packed.read_text(encoding="utf-8"))
    code, n = FA3_IMPORT.subn(SDPA_SHIM, code)
    if n != 1:
        raise SystemExit(f"{packed}: expected one FA3 import line to replace, found {n}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(code, encoding="utf-8")
    return out


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("record_train_gpt", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------------------- weights
def bench_state(seed: int) -> dict[str, Any]:
    """Full-size record config, record init, then seeded noise so no block is the identity (zero projections)."""
    import torch

    from reference_model.config import ModelConfig
    from reference_model.model import GPT

    torch.manual_seed(seed)
    model = GPT(ModelConfig())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2 and "tok_emb" not in name:
                p.add_(torch.randn_like(p) * 0.02)
    model.to_mixed_precision()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def ours_model(state: dict[str, Any], device: Any) -> Any:
    from reference_model.config import ModelConfig
    from reference_model.model import GPT

    model = GPT(ModelConfig()).to(device)
    model.to_mixed_precision()
    model.load_state_dict(state, strict=True)
    model.set_recurrence(True)
    model.set_attention_backend("sdpa")
    return model


def record_model(R: ModuleType, h: Any, state: dict[str, Any], device: Any) -> Any:
    model = R.GPT(h).to(device).bfloat16()
    R.restore_fp32_params(model)
    model.load_state_dict(state, strict=True)
    model.looping_active = True
    return model


# --------------------------------------------------------------------------------------------------- run
def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from pgolf_data.shards import load_concatenated, write_shard
    from reference_model.attention import set_sdpa_backend
    from reference_model.evaluate import EvalConfig, ScoreFirstTTT, eval_sliding, load_val_stream

    device = torch.device("cuda", 0)
    torch.cuda.set_device(device)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    set_sdpa_backend(args.sdpa_order)  # process-wide: both sides get the same SDPA kernels

    tokens = np.asarray(load_concatenated(args.val), dtype=np.int64)
    if args.max_tokens:
        tokens = tokens[: args.max_tokens]
    tmp = Path(tempfile.mkdtemp())
    write_shard(tmp / "fineweb_val_000000.bin", tokens)  # one file both sides read the same way
    val_glob = str(tmp / "fineweb_val_*.bin")
    (tmp / "warm").mkdir()
    write_shard(tmp / "warm" / "fineweb_val_000000.bin", tokens[: args.record_warmup_tokens])
    args.record_warmup_glob = str(tmp / "warm" / "fineweb_val_*.bin")
    cfg = EvalConfig(seq_len=2048, stride=64, batch_seqs=args.batch_seqs)
    stream = load_val_stream(val_glob, args.tokenizer, seq_len=cfg.seq_len, device=device)
    state = {k: v.to(device) for k, v in bench_state(args.seed).items()}
    out: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "val_tokens": stream.num_targets,
        "sdpa_order": args.sdpa_order,
        "batch_seqs": args.batch_seqs,
        "modes": {},
    }
    print(f"val_tokens: {stream.num_targets} on {out['gpu']}", flush=True)

    for mode in args.modes.split(","):
        entry: dict[str, Any] = {}
        torch._dynamo.reset()
        model = ours_model(state, device)
        torch.cuda.synchronize()
        if mode == "sliding":
            r = eval_sliding(model, stream, cfg)
        else:
            r = ScoreFirstTTT(model, stream, cfg).run()
        incl = r.eval_time_ms + r.warmup_ms
        entry["ours"] = {
            "val_loss": r.val_loss,
            "val_bpb": r.val_bpb,
            "tokens": r.tokens,
            "bytes": r.bytes,
            "eval_ms": r.eval_time_ms,
            "warmup_ms": r.warmup_ms,
            "tok_s_excl_compile": r.tokens / (r.eval_time_ms / 1e3),
            "tok_s_incl_compile": r.tokens / (incl / 1e3),
        }
        print(f"ours   {r.log_line()} warmup:{r.warmup_ms:.0f}ms", flush=True)
        del model
        torch.cuda.empty_cache()
        if args.record:
            entry["record"] = run_record(args, mode, state, val_glob, device)
            rec, ours = entry["record"], entry["ours"]
            entry["speedup_incl_compile"] = ours["tok_s_incl_compile"] / rec["tok_s_incl_compile"]
            entry["speedup_excl_compile"] = ours["tok_s_excl_compile"] / rec["tok_s_excl_compile"]
            entry["bpb_diff"] = ours["val_bpb"] - rec["val_bpb"]
            entry["tokens_equal"] = rec["tokens"] == ours["tokens"]
        out["modes"][mode] = entry
    out["peak_mem_mib"] = torch.cuda.max_memory_allocated() // (1 << 20)
    return out


def run_record(
    args: argparse.Namespace, mode: str, state: dict[str, Any], val_glob: str, device: Any
) -> dict[str, Any]:
    import sentencepiece as spm
    import torch

    R = load_module(Path(args.record))
    h = R.Hyperparameters()
    for k, v in {
        "rank": 0,
        "world_size": 1,
        "local_rank": 0,
        "is_main_process": True,
        "distributed": False,
        "eval_seq_len": 2048,
        "eval_stride": 64,
        "ttt_chunk_tokens": 32768,
        "ttt_lr": 0.005,
        "ttt_epochs": 3,
        "ttt_momentum": 0.9,
        "vocab_size": 8192,
        "qk_gain_init": 5.25,
    }.items():
        setattr(h, k, v)
    sp = spm.SentencePieceProcessor(model_file=str(args.tokenizer))
    luts = R.build_sentencepiece_luts(sp, h.vocab_size, device)

    def val_data(pattern: str) -> SimpleNamespace:
        return SimpleNamespace(
            sp=sp,
            val_tokens=R.load_validation_tokens(pattern, h.eval_seq_len),
            base_bytes_lut=luts[0],
            has_leading_space_lut=luts[1],
            is_boundary_token_lut=luts[2],
        )

    fn = R.eval_val_sliding if mode == "sliding" else R.eval_val_ttt

    def timed(val: SimpleNamespace) -> tuple[float, float, float]:
        # The record's own timing (its timed_eval): synchronize, run the whole eval function, synchronize.
        torch._dynamo.reset()
        model = record_model(R, h, state, device)  # TTT trains it: a fresh copy per call
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss, bpb = fn(h, device, val, model)
        torch.cuda.synchronize()
        ms = 1e3 * (time.perf_counter() - t0)
        del model
        torch.cuda.empty_cache()
        return loss, bpb, ms

    # 1) first call on a short prefix: pays the compile (the record compiles inside its eval functions);
    # 2) the whole stream: compiled code reused (dynamo's code cache and inductor's caches survive the reset).
    _, _, cold_ms = timed(val_data(args.record_warmup_glob))
    val_loss, val_bpb, ms = timed(val_data(val_glob))
    tokens = int(R.load_validation_tokens(val_glob, h.eval_seq_len).numel()) - 1
    print(
        f"record {mode} val_loss:{val_loss:.8f} val_bpb:{val_bpb:.8f} eval_time:{ms:.0f}ms "
        f"(first call on {args.record_warmup_tokens} tokens incl. compile: {cold_ms:.0f}ms)",
        flush=True,
    )
    return {
        "val_loss": val_loss,
        "val_bpb": val_bpb,
        "tokens": tokens,
        "eval_ms_warm": ms,
        "first_call_ms_incl_compile": cold_ms,
        "tok_s_excl_compile": tokens / (ms / 1e3),
        # compile cost ~ the first call minus the share of warm time its prefix accounts for
        "tok_s_incl_compile": tokens / ((ms + cold_ms - ms * args.record_warmup_tokens / tokens) / 1e3),
    }


def format_table(result: dict[str, Any]) -> str:
    rows = [
        f"GPU: {result['gpu']}  torch {result['torch']}  val tokens {result['val_tokens']:,}",
        f"{'mode':8} {'side':7} {'val_bpb':>12} {'tok/s excl':>11} {'tok/s incl':>11}",
    ]
    for mode, e in result["modes"].items():
        o = e["ours"]
        rows.append(
            f"{mode:8} {'ours':7} {o['val_bpb']:12.8f} {o['tok_s_excl_compile']:11.0f} "
            f"{o['tok_s_incl_compile']:11.0f}"
        )
        if "record" in e:
            r = e["record"]
            rows.append(
                f"{mode:8} {'record':7} {r['val_bpb']:12.8f} {r['tok_s_excl_compile']:11.0f} "
                f"{r['tok_s_incl_compile']:11.0f}"
            )
            rows.append(
                f"{'':8} speedup incl {e['speedup_incl_compile']:.2f}x, excl {e['speedup_excl_compile']:.2f}x,"
                f" bpb diff {e['bpb_diff']:+.2e}"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m reference_model.bench_eval", description=__doc__.split("\n")[0]
    )
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare-record", help="decode a packed record train_gpt.py and add the SDPA shim")
    p.add_argument("packed")
    p.add_argument("--out", default=".bench/record_train_gpt.py")
    r = sub.add_parser("run", help="measure (needs CUDA)")
    r.add_argument("--val", required=True)
    r.add_argument("--tokenizer", required=True)
    r.add_argument("--record", help="prepared record script (prepare-record); omit to bench ours alone")
    r.add_argument("--max-tokens", type=int)
    r.add_argument(
        "--record-warmup-tokens",
        type=int,
        default=2 * 32_768 + 1,
        help="prefix the record's first (compiling) call runs on",
    )
    r.add_argument("--modes", default="sliding,ttt")
    r.add_argument("--batch-seqs", type=int, default=32)
    r.add_argument("--sdpa-order", default="cudnn,flash")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--json")
    args = ap.parse_args(argv)
    if args.command == "prepare-record":
        print(prepare_record(Path(args.packed), Path(args.out)))
        return 0
    import torch

    if not torch.cuda.is_available():
        print("bench_eval run: needs a CUDA device", file=sys.stderr)
        return 2
    result = run(args)
    print(format_table(result))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0 if all(math.isfinite(e["ours"]["val_bpb"]) for e in result["modes"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
