"""`make bench` / `python -m auditor.bench`: audit time next to libcst's bare parse time on real-size scripts.

For every file: the best of N wall times of a full static audit (load -> unpack -> parse -> every rule) and the
best of N times libcst needs only to parse the same code (the shipped file and every layer decoded out of it),
measured in the same run on the same machine, and their ratio. Then the slowest rules, summed over all files.

Files: the Python code of every merged record folder that has a train_gpt.py, read from a git mirror of
openai/parameter-golf with git plumbing (PGOLF_REPO=/path/to/git-dir; default: the local mirror when present);
without a mirror, the packed fixtures and a generated ~1,800-line training script.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from auditor.submission import Submission, SubmissionFile, load_git, load_path

MIN_LINES_FOR_RATIO = 50
REAL_SIZE_LINES = 1000  # what the issue calls a real-size training script
DEFAULT_MIRROR = Path("/work/.mirror/openai+parameter-golf/repo")
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class BenchItem:
    name: str
    submission: Submission


@dataclass
class BenchRow:
    name: str
    lines: int
    kbytes: float
    layers: int
    audit_s: float
    libcst_s: float
    rule_timings: dict[str, float] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.audit_s / self.libcst_s if self.libcst_s else float("inf")


def best_of(n: int, fn: Callable[[], object]) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(max(1, n)):
        t0 = time.perf_counter()
        out = fn()
        elapsed = time.perf_counter() - t0
        if elapsed < best:
            best, result = elapsed, out
    return best, result


# --- inputs -----------------------------------------------------------------------------------------------------
def mirror_dir() -> Path | None:
    env = os.environ.get("PGOLF_REPO")
    candidate = Path(env) if env else DEFAULT_MIRROR
    if (candidate / "HEAD").exists() or (candidate / ".git").exists():
        return candidate
    return None


def record_folders(git_dir: Path, rev: str = "HEAD") -> list[str]:
    base = ["git", f"--git-dir={git_dir}"] if (git_dir / "HEAD").exists() else ["git", "-C", str(git_dir)]
    listing = subprocess.run(
        [*base, "ls-tree", "-r", "--name-only", rev, "--", "records"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return sorted({str(PurePosixPath(p).parent) for p in listing if PurePosixPath(p).name == "train_gpt.py"})


def code_only(sub: Submission) -> Submission:
    """The Python files of a submission: the bench compares code analysis with code parsing."""
    files = {p: f for p, f in sub.files.items() if f.suffix == ".py"}
    return Submission(root=sub.root, files=files, git_rev=sub.git_rev, git_path=sub.git_path)


def mirror_items(git_dir: Path, limit: int) -> list[BenchItem]:
    folders = record_folders(git_dir)
    if limit:
        folders = folders[:limit]
    return [BenchItem(PurePosixPath(f).name, code_only(load_git(git_dir, "HEAD", f))) for f in folders]


def synthetic_training_script(seed: int = 0, blocks: int = 32) -> str:
    """A deterministic ~1,800-line training script: many model/optimizer/eval functions of realistic shape."""
    rng = random.Random(seed)
    out = [
        '"""Synthetic training script for the benchmark (generated, deterministic)."""',
        "import math",
        "import os",
        "import time",
        "",
        "import numpy as np",
        "import torch",
        "import torch.nn as nn",
        "import torch.nn.functional as F",
        "",
        "class Hyperparameters:",
    ]
    for i in range(40):
        out.append(f'    knob_{i} = float(os.environ.get("KNOB_{i}", {rng.random():.4f}))')
    out.append("")
    for b in range(blocks):
        dim = rng.choice([256, 384, 512])
        out += [
            f"class Block{b}(nn.Module):",
            "    def __init__(self, dim, heads):",
            "        super().__init__()",
            f"        self.qkv = nn.Linear(dim, 3 * dim, bias={rng.choice(['True', 'False'])})",
            "        self.proj = nn.Linear(dim, dim)",
            f"        self.mlp = nn.Sequential(nn.Linear(dim, {rng.randint(2, 4)} * dim), nn.GELU(),",
            f"                                 nn.Linear({rng.randint(2, 4)} * dim, dim))",
            "        self.heads = heads",
            f"        self.scale = {rng.random():.3f}",
            "",
            "    def forward(self, x):",
            "        b, t, c = x.shape",
            "        q, k, v = self.qkv(F.rms_norm(x, (c,))).split(c, dim=-1)",
            "        q = q.view(b, t, self.heads, -1).transpose(1, 2)",
            "        k = k.view(b, t, self.heads, -1).transpose(1, 2)",
            "        v = v.view(b, t, self.heads, -1).transpose(1, 2)",
            "        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)",
            "        x = x + self.scale * self.proj(y.transpose(1, 2).reshape(b, t, c))",
            "        return x + self.mlp(F.rms_norm(x, (c,)))",
            "",
            f"def quantize_{b}(w, bits={rng.choice([4, 5, 6, 8])}):",
            "    scale = w.abs().amax(dim=-1, keepdim=True).clamp_min(1e-8) / (2 ** (bits - 1) - 1)",
            "    q = torch.round(w / scale).clamp(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)",
            "    return q.to(torch.int8), scale.half()",
            "",
            f"def schedule_{b}(step, total, warmup={rng.randint(10, 200)}):",
            "    if step < warmup:",
            "        return step / warmup",
            "    frac = (step - warmup) / max(1, total - warmup)",
            f"    return {rng.random():.3f} + 0.5 * (1 + math.cos(math.pi * frac))",
            "",
            "@torch.no_grad()",
            f"def eval_chunk_{b}(model, tokens, seq_len={dim * 4}):",
            "    model.eval()",
            "    losses = []",
            "    for start in range(0, tokens.numel() - seq_len - 1, seq_len):",
            "        chunk = tokens[start:start + seq_len + 1]",
            "        x, y = chunk[:-1][None], chunk[1:][None]",
            "        logits = model(x)",
            "        losses.append(F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1)).item())",
            "    model.train()",
            "    return sum(losses) / max(1, len(losses))",
            "",
            f"def train_step_{b}(model, opt, x, y, step, total):",
            "    for group in opt.param_groups:",
            f"        group['lr'] = {rng.random() / 100:.5f} * schedule_{b}(step, total)",
            "    loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())",
            "    opt.zero_grad(set_to_none=True)",
            "    loss.backward()",
            "    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)",
            "    opt.step()",
            "    return loss.detach()",
            "",
        ]
    out += [
        "def main():",
        "    args = Hyperparameters()",
        "    start = time.perf_counter()",
        f"    model = nn.Sequential(*[Block{rng.randrange(blocks)}(256, 4) for _ in range(4)])",
        "    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)",
        "    tokens = torch.from_numpy(np.zeros(1 << 16, dtype=np.int64))",
        "    for step in range(100):",
        "        if time.perf_counter() - start > 600:",
        "            break",
        "        train_step_0(model, opt, tokens[:256].view(1, -1), tokens[1:257].view(1, -1), step, 100)",
        f"    print(eval_chunk_{rng.randrange(blocks)}(model, tokens))",
        "",
        'if __name__ == "__main__":',
        "    main()",
        "",
    ]
    return "\n".join(out)


def fallback_items() -> list[BenchItem]:
    items = []
    text = synthetic_training_script()
    sub = Submission(root="synthetic")
    sub.files["train_gpt.py"] = SubmissionFile("train_gpt.py", text.encode(), len(text))
    items.append(BenchItem("synthetic_training_script", sub))
    for folder in sorted((ROOT / "fixtures").glob("packed_*")):
        if (folder / "train_gpt.py").exists():
            items.append(BenchItem(folder.name, code_only(load_path(folder))))
    return items


# --- measuring --------------------------------------------------------------------------------------------------
def measure(item: BenchItem, repeat: int) -> BenchRow:
    import libcst

    from auditor.engine import audit
    from auditor.facts import build_context
    from rules import all_rules

    rules = all_rules()
    ctx = build_context(item.submission)
    texts = [u.text for u in ctx.units if u.tree is not None]  # exactly what the audit parses

    def run_audit() -> dict[str, float]:
        timings: dict[str, float] = {}
        audit(item.submission, rules, timings=timings)
        return timings

    audit_s, timings = best_of(repeat, run_audit)
    libcst_s, _ = best_of(repeat, lambda: [libcst.parse_module(t) for t in texts])
    return BenchRow(
        name=item.name,
        lines=sum(t.count("\n") + 1 for t in texts),
        kbytes=sum(len(t.encode()) for t in texts) / 1024,
        layers=len(ctx.layers),
        audit_s=audit_s,
        libcst_s=libcst_s,
        rule_timings=dict(timings) if isinstance(timings, dict) else {},
    )


def report(rows: Sequence[BenchRow], top: int) -> str:
    lines = [f"{'file':<64} {'lines':>6} {'KB':>6} {'L':>2} {'audit s':>8} {'libcst s':>9} {'ratio':>6}"]
    for r in rows:
        lines.append(
            f"{r.name[:64]:<64} {r.lines:>6} {r.kbytes:>6.0f} {r.layers:>2} {r.audit_s:>8.3f} "
            f"{r.libcst_s:>9.3f} {r.ratio:>6.2f}"
        )
    total_audit = sum(r.audit_s for r in rows)
    total_cst = sum(r.libcst_s for r in rows)
    # a ratio over a near-empty file (an empty train_gpt.py exists among the records) is noise: leave it out
    sized = [r for r in rows if r.lines >= MIN_LINES_FOR_RATIO] or list(rows)
    ratios = sorted(r.ratio for r in sized)
    worst = max(sized, key=lambda r: r.ratio)
    overall = total_audit / total_cst if total_cst else float("inf")
    lines += [
        "",
        f"{len(rows)} files, {sum(r.lines for r in rows):,} lines: audit {total_audit:.2f} s, libcst parse "
        f"{total_cst:.2f} s, overall ratio {overall:.2f}",
        f"per-file ratio over the {len(sized)} files of {MIN_LINES_FOR_RATIO}+ lines: median "
        f"{ratios[len(ratios) // 2]:.2f}, worst {worst.ratio:.2f} ({worst.name}), "
        f"{sum(x > 2 for x in ratios)} over 2.0",
    ]
    real = [r for r in rows if r.lines >= REAL_SIZE_LINES]
    if real:  # the acceptance criterion: every real-size file audited within 2x of libcst's parse time
        worst_real = max(real, key=lambda r: r.ratio)
        lines.append(
            f"real-size files ({REAL_SIZE_LINES:,}+ lines): {len(real)}, worst {worst_real.ratio:.2f} "
            f"({worst_real.name}), {sum(r.ratio > 2 for r in real)} over 2.0"
        )
    summed: dict[str, float] = {}
    for r in rows:
        for key, seconds in r.rule_timings.items():
            summed[key] = summed.get(key, 0.0) + seconds
    if summed:
        lines += [
            "",
            "slowest stages/rules (summed over all files, best run each; 'facts' = load+unpack+parse):",
        ]
        for key, seconds in sorted(summed.items(), key=lambda kv: -kv[1])[:top]:
            lines.append(
                f"  {key:<8} {seconds:8.3f} s  {100 * seconds / total_audit if total_audit else 0:5.1f}%"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m auditor.bench", description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3, help="best of N runs per file (default 3)")
    p.add_argument("--limit", type=int, default=0, help="only the first N record folders (default: all)")
    p.add_argument("--top", type=int, default=10, help="how many of the slowest rules to list")
    p.add_argument("paths", nargs="*", help="record folders or .py files to use instead of the mirror")
    args = p.parse_args(argv)
    if args.paths:
        items = [BenchItem(Path(x).name, code_only(load_path(x))) for x in args.paths]
        source = "given paths"
    elif (git_dir := mirror_dir()) is not None:
        items = mirror_items(git_dir, args.limit)
        source = f"merged records at HEAD of {git_dir}"
    else:
        items = fallback_items()
        source = "fallback: generated script + packed fixtures (set PGOLF_REPO for the real records)"
    print(f"pgolf-audit bench: {len(items)} files from {source}; best of {args.repeat}", file=sys.stderr)
    rows = []
    for item in items:
        rows.append(measure(item, args.repeat))
        print(
            f"  {item.name}: audit {rows[-1].audit_s:.3f} s, libcst {rows[-1].libcst_s:.3f} s",
            file=sys.stderr,
        )
    print(report(rows, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
