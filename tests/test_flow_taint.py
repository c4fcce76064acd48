"""Val/train data-origin taint: sources by shard-name strings, propagation through the shapes records use."""

from __future__ import annotations

import ast
import textwrap

from auditor.facts import AuditContext, build_context
from auditor.flow.taint import train_taint, val_taint
from auditor.rename import minify, rename_identifiers
from auditor.testing import submission_from_files

SCRIPT = """
import glob, os
import numpy as np
import torch

class Hyperparameters:
    data_path = os.environ.get("DATA_PATH", "./data/datasets/fineweb10B_sp1024")
    train_files = os.path.join(data_path, "fineweb_train_*.bin")
    val_files = os.path.join(data_path, "fineweb_val_*.bin")
    lr = 0.1

def load_shard(path):
    return torch.from_numpy(np.fromfile(path, dtype=np.uint16))

class Stream:
    def __init__(self, pattern):
        self.files = sorted(glob.glob(pattern))
        self.tokens = load_shard(self.files[0])

    def take(self, n):
        return self.tokens[:n]

class Loader:
    def __init__(self, pattern, device):
        self.stream = Stream(pattern)
        self.device = device

    def next_batch(self, n):
        chunk = self.stream.take(n + 1).to(self.device)
        return chunk[:-1], chunk[1:]

class ValData:
    def __init__(self, h):
        self.val_tokens = torch.cat([load_shard(f) for f in sorted(glob.glob(h.val_files))])
        self.luts = (torch.ones(8), torch.zeros(8))

def consume(a, b, c, tokens, scale=1.0):
    return tokens * scale

def main():
    h = Hyperparameters()
    val_data = ValData(h)
    train_loader = Loader(h.train_files, "cpu")
    calib_loader = Loader(h.val_files, "cpu")
    x, y = train_loader.next_batch(64)                     # TRAIN-BATCH
    cx, cy = calib_loader.next_batch(64)                   # VAL-BATCH
    piece = val_data.val_tokens[:128].to("cpu").float()    # VAL-SLICE
    bucket = {"val": piece, "lr": h.lr}
    stats = []
    stats.append(piece.sum())
    out = consume(1, 2, 3, piece, scale=h.lr)              # VAL-ARG
    mixed = x + 0                                          # TRAIN-ONLY
    lut = val_data.luts[0]                                 # LUT
    n = val_data.val_tokens.numel()                        # META
    print(bucket["val"], bucket["lr"], stats, out, mixed, lut, n, cx, cy, y, h.lr)   # USES

if __name__ == "__main__":
    main()
"""


def ctx_of(src: str) -> AuditContext:
    return build_context(submission_from_files({"train_gpt.py": textwrap.dedent(src).lstrip("\n")}))


def expr_at(ctx: AuditContext, marker: str, pick) -> tuple[ast.AST, object]:
    unit = ctx.entry_unit
    line = next(i for i, t in enumerate(unit.lines, 1) if marker in t)
    stmt = next(n for n in ast.walk(unit.tree) if isinstance(n, ast.stmt) and getattr(n, "lineno", 0) == line)
    return pick(stmt), unit


def test_sources_and_propagation() -> None:
    ctx = ctx_of(SCRIPT)
    vt, tt = val_taint(ctx), train_taint(ctx)

    def kinds(marker: str, pick=lambda s: s.value) -> tuple[bool, bool]:
        expr, unit = expr_at(ctx, marker, pick)
        return vt.is_tainted(unit, expr), tt.is_tainted(unit, expr)

    # objects built from different shard patterns stay apart (per construction site, not per class)
    assert kinds("# TRAIN-BATCH", lambda s: s.targets[0].elts[0]) == (False, True)
    assert kinds("# VAL-BATCH", lambda s: s.targets[0].elts[0]) == (True, False)
    # attribute alias, slicing, .to(), arithmetic
    assert kinds("# VAL-SLICE") == (True, False)
    # a tensor passed as the 4th positional argument reaches the callee's 4th parameter and comes back
    assert kinds("# VAL-ARG") == (True, False)
    assert kinds("# TRAIN-ONLY") == (False, True)
    # metadata is not data; config fields keep their own taint
    assert kinds("# META") == (False, False)
    uses = expr_at(ctx, "# USES", lambda s: s.value)[0]
    args = uses.args
    assert vt.is_tainted(ctx.entry_unit, args[0])  # bucket["val"]: dict entry
    assert not vt.is_tainted(ctx.entry_unit, args[1])  # bucket["lr"]
    assert vt.is_tainted(ctx.entry_unit, args[2])  # list the tainted value was appended to
    assert not vt.is_tainted(ctx.entry_unit, args[-1])  # h.lr: the config object is not val data


def test_path_runs_from_the_source_string_to_the_use() -> None:
    ctx = ctx_of(SCRIPT)
    vt = val_taint(ctx)
    expr, unit = expr_at(ctx, "# VAL-ARG", lambda s: s.value)
    steps = vt.path(unit, expr, sink_message="used here")
    assert "fineweb_val_*.bin" in steps[0].message
    assert steps[-1].message == "used here" and steps[-1].location.line == expr.lineno
    lines = [s.location.line for s in steps]
    assert len(lines) >= 4


HOOKS = """
import torch

def load(p):
    return torch.load(p)

def collect(model, tokens):
    stats = {}

    def make_hook(name):
        def hook(mod, inp, out):
            x = inp[0]
            stats[name] = stats.get(name, 0) + x.T @ x
        return hook

    for name, m in model.named_modules():
        m.register_forward_hook(make_hook(name))
    with torch.no_grad():
        model(tokens)
    return stats

def main(model):
    from_val = collect(model, load("data/fineweb_val_000000.bin"))      # HOOK-VAL
    from_train = collect(model, load("data/fineweb_train_000001.bin"))  # HOOK-TRAIN
    return from_val, from_train

if __name__ == "__main__":
    main(None)
"""


def test_forward_hook_captures_are_tainted_by_the_data_driven_through_the_model() -> None:
    ctx = ctx_of(HOOKS)
    vt, tt = val_taint(ctx), train_taint(ctx)
    val_expr, unit = expr_at(ctx, "# HOOK-VAL", lambda s: s.targets[0])
    train_expr, _ = expr_at(ctx, "# HOOK-TRAIN", lambda s: s.targets[0])
    val_call = expr_at(ctx, "# HOOK-VAL", lambda s: s.value)[0]
    train_call = expr_at(ctx, "# HOOK-TRAIN", lambda s: s.value)[0]
    assert vt.is_tainted(unit, val_call) and not tt.is_tainted(unit, val_call)
    assert tt.is_tainted(unit, train_call) and not vt.is_tainted(unit, train_call)
    messages = [s.message for s in vt.path(unit, val_call)]
    assert any("hooks capture" in m for m in messages) and any("X^T X" in m for m in messages)


def test_default_off_branches_do_not_taint_live_code() -> None:
    src = """
    import os, torch
    USE_VAL = os.environ.get("USE_VAL", "0") == "1"

    def main():
        data = torch.load("data/fineweb_train_000001.bin")
        if USE_VAL:
            data = torch.load("data/fineweb_val_000000.bin")   # OFF
        return data + 1                                          # LIVE

    if __name__ == "__main__":
        main()
    """
    ctx = ctx_of(src)
    vt = val_taint(ctx)
    live, unit = expr_at(ctx, "# LIVE", lambda s: s.value)
    off, _ = expr_at(ctx, "# OFF", lambda s: s.value)
    assert not vt.is_tainted(unit, live)
    assert vt.is_tainted(unit, off)  # still queryable, so rules can report it as information


def test_taint_does_not_depend_on_names() -> None:
    base = textwrap.dedent(SCRIPT).lstrip("\n")

    def summary(src: str) -> list[tuple[bool, bool]]:
        """Taint of each argument of the driver's final print(...) (minification keeps that call intact)."""
        ctx = build_context(submission_from_files({"train_gpt.py": src}))
        vt, tt = val_taint(ctx), train_taint(ctx)
        main = [f for f in ctx.entry_unit.tree.body if isinstance(f, ast.FunctionDef)][-1]  # the driver
        call = next(
            n
            for n in ast.walk(main)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"
        )
        return [(vt.is_tainted(ctx.entry_unit, a), tt.is_tainted(ctx.entry_unit, a)) for a in call.args]

    plain = summary(base)
    assert (True, False) in plain and (False, True) in plain and (False, False) in plain
    assert summary(rename_identifiers(base, seed=11)) == plain
    assert summary(minify(base)) == plain


PROVENANCE = """
import glob, os
import numpy as np
import torch
import torch.nn.functional as F

VAL = os.path.join("./data", "fineweb_val_*.bin")

def load(p):
    return torch.from_numpy(np.fromfile(sorted(glob.glob(p))[0], dtype=np.uint16).astype(np.int64))

def main(model, opt):
    stats = {}
    norms = []

    def grab(module, inputs, output):
        stats["h"] = inputs[0].T @ inputs[0]

    def schedule(frac):
        return 0.1 * (1.0 - frac)

    tokens = load(VAL)
    raw = tokens[:64]  # RAW
    loss = F.cross_entropy(model(tokens[:-1]), tokens[1:])  # LOSS
    monitor = model(tokens[:128])
    lr = schedule(0.5)  # SCHEDULE
    handle = model.register_forward_hook(grab)
    model(torch.zeros(8, dtype=torch.long))
    handle.remove()
    hessian = stats["h"]  # HESSIAN
    best, best_t = 1e9, 1.0
    for t in (0.9, 1.0, 1.1):
        nll = F.cross_entropy(model(tokens[:-1]) / t, tokens[1:]).item()
        if nll < best:
            best = nll
            best_t = t
    picked = best_t  # PICKED
"""


def test_provenance_kinds_are_facts_rules_query() -> None:
    """Raw content, a loss computed from it, a value selected by comparing such losses; hooks see only the forward
    passes inside their registration window, and a nested function that is not registered is not a hook."""
    from auditor.flow.taint import VAL, VAL_FIT, VAL_OUT, VAL_PATH, VAL_STAT

    ctx = ctx_of(PROVENANCE)
    vt = val_taint(ctx)
    unit = ctx.entry_unit

    def kinds(marker: str) -> frozenset[str]:
        node = expr_at(ctx, marker, lambda s: s.value)[0]
        return vt.kinds_of(vt.av(unit, node, "main")) - {VAL_PATH}  # names travel with what was read

    assert VAL in kinds("# RAW") and VAL_OUT not in kinds("# RAW")
    assert kinds("# LOSS") == {VAL_OUT}  # a loss of (outputs, targets) is not the data
    assert kinds("# SCHEDULE") == frozenset()  # `schedule` is a closure, not a registered hook
    assert kinds("# HESSIAN") == frozenset()  # the val forward passes ran before the hook was registered
    assert VAL_FIT in kinds("# PICKED") and VAL not in kinds("# PICKED")
    assert not vt.only(VAL).holds(vt.av(unit, expr_at(ctx, "# LOSS", lambda s: s.value)[0], "main"))
    assert VAL_STAT not in kinds("# LOSS")
