"""Data helpers for the verifier's GPU acceptance run and throughput benchmark (not used by the audit itself).

    python -m auditor.harness.bench split SHARD --out DIR --val-tokens N     # train/val shards at a BOS boundary
    python -m auditor.harness.bench tile SHARD --tokens 40540803 --out FILE  # a val-sized shard by repetition

`split` cuts a tokenized sample into ``fineweb_train_000000.bin`` and ``fineweb_val_000000.bin`` (the validation part
starts at a document's BOS, so no document straddles the two); `tile` repeats a shard's tokens until the official
validation size (sp8192: 40,540,803 tokens) to time a full-size rescore. Tiled data is never canonical: its sha256
is not the official one, and `verify` says so.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pgolf_data.shards import read_shard, write_shard

BOS = 1
OFFICIAL_SP8192_VAL_TOKENS = 40_540_803


def split(src: Path, out: Path, val_tokens: int) -> tuple[int, int]:
    tokens = np.asarray(read_shard(src))
    if val_tokens >= tokens.size:
        raise SystemExit(f"{src} has only {tokens.size:,} tokens")
    bos = np.flatnonzero(tokens[: tokens.size - val_tokens + 1] == BOS)
    cut = int(bos[-1]) if bos.size else tokens.size - val_tokens
    out.mkdir(parents=True, exist_ok=True)
    write_shard(out / "fineweb_train_000000.bin", tokens[:cut])
    write_shard(out / "fineweb_val_000000.bin", tokens[cut:])
    return cut, int(tokens.size - cut)


def tile(src: Path, tokens: int, out: Path) -> int:
    base = np.asarray(read_shard(src))
    reps = -(-tokens // base.size)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_shard(out, np.tile(base, reps)[:tokens])
    return tokens


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m auditor.harness.bench", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("split")
    s.add_argument("src", type=Path)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--val-tokens", type=int, required=True)
    t = sub.add_parser("tile")
    t.add_argument("src", type=Path)
    t.add_argument("--tokens", type=int, default=OFFICIAL_SP8192_VAL_TOKENS)
    t.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.cmd == "split":
        train, val = split(args.src, args.out, args.val_tokens)
        print(f"train {train:,} tokens, val {val:,} tokens in {args.out}")
    else:
        print(f"{tile(args.src, args.tokens, args.out):,} tokens in {args.out}")


if __name__ == "__main__":
    main()
