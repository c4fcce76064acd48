"""Embedded cases of PG401 / PG402 (rules/val_leakage.py): small record-shaped scripts, one construct each.

Kept apart from the rule module so that the rule reads as the query it is. Each script is built from
rules._flowcases.record (train shards -> training loop -> artifact -> reload -> eval on val shards).
"""

from __future__ import annotations

from rules._flowcases import record

# =================================================================================================== PG401
MONITOR_OK = record(
    setup="""    monitor_tokens = load_tokens(VAL_FILES)""",
    after_train="""\
        if step % 50 == 0:
            print(f"step:{step} val_loss:{evaluate(model, monitor_tokens):.4f}")""",
)

VAL_IN_STREAM = record(setup="""    train_tokens = torch.cat([train_tokens, load_tokens(VAL_FILES)])""")

VAL_ONLY = record(setup="""    train_tokens = load_tokens(VAL_FILES)""")

PAID_PREFIX = record(
    after_train="""    prefix = load_tokens(VAL_FILES)[:65536].to(torch.uint16)""",
    artifact='{"model": model.state_dict(), "prefix": prefix}',
)

DEAD_FINETUNE = record(
    helpers="""

def finetune_on_validation(model, opt):
    tokens = load_tokens(VAL_FILES)
    for i in range(10):
        F.cross_entropy(model(tokens[i:i + 64]), tokens[i + 1:i + 65]).backward()
        opt.step()
"""
)

FLAG_OFF_FINETUNE = record(
    flags='VAL_WARMSTART = int(os.environ.get("VAL_WARMSTART", "0"))',
    setup="""\
    if VAL_WARMSTART:
        warm = load_tokens(VAL_FILES)
        for i in range(VAL_WARMSTART):
            F.cross_entropy(model(warm[i:i + 64]), warm[i + 1:i + 65]).backward()
            opt.step()""",
)

EVAL_ONLY_TTT = """\
import glob, io, os, zlib
import numpy as np
import torch
import torch.nn.functional as F

VAL_FILES = os.path.join(os.environ.get("DATA_PATH", "./data"), "fineweb_val_*.bin")


def load_tokens(pattern):
    return torch.cat([torch.from_numpy(np.fromfile(f, dtype=np.uint16).astype(np.int64))
                      for f in sorted(glob.glob(pattern))])


def main():
    model = torch.nn.Embedding(1024, 1024)
    with open("final_model.int8.ptz", "rb") as f:
        model.load_state_dict(torch.load(io.BytesIO(zlib.decompress(f.read()))))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    tokens = load_tokens(VAL_FILES)
    total = 0.0
    for i in range(0, tokens.numel() - 65, 64):
        chunk = tokens[i:i + 65]
        with torch.no_grad():
            total += F.cross_entropy(model(chunk[:-1]), chunk[1:]).item()
        F.cross_entropy(model(chunk[:-1]), chunk[1:]).backward()
        opt.step()
    print(f"val_loss:{total:.4f}")


if __name__ == "__main__":
    main()
"""


# A temperature grid-searched on the first tenth of val, then used to score the rest: val tokens that are never
# scored are used to tune an evaluation parameter (no backward(), a selection by comparing val losses).
_TEMPERATURE_HELPERS = """

def loss_at(model, tokens, temperature):
    with torch.no_grad():
        logits = model(tokens[:-1]) / temperature
        return F.cross_entropy(logits, tokens[1:]).item()


def pick_temperature(model, tokens):
    best_t, best = 1.0, float("inf")
    for t in (0.8, 0.9, 1.0, 1.1, 1.2):
        nll = loss_at(model, tokens, t)
        if nll < best:
            best = nll
            best_t = t
    return best_t
"""

TUNED_ON_VAL = record(
    helpers=_TEMPERATURE_HELPERS,
    eval="""\
    cut = val_tokens.numel() // 10
    temperature = pick_temperature(model, val_tokens[:cut])
    val_loss = loss_at(model, val_tokens[cut:], temperature)""",
)

TUNED_ON_TRAIN = record(
    helpers=_TEMPERATURE_HELPERS,
    eval="""\
    temperature = pick_temperature(model, train_tokens[:65536])
    val_loss = loss_at(model, val_tokens, temperature)""",
)

# Tracking the best monitoring loss for the log selects nothing that is used on validation data.
BEST_MONITOR_LOGGED = record(
    setup="""    best_seen = float("inf")""",
    after_train="""\
    for probe in range(3):
        current = evaluate(model, load_tokens(VAL_FILES))
        if current < best_seen:
            best_seen = current
    print(f"best monitoring val_loss:{best_seen:.4f}")""",
)

# A debug checkpoint holding the model and a scalar val_bpb float: a metric, not validation tokens.
CHECKPOINT_WITH_METRIC = record(
    after_train="""\
    monitor_bpb = evaluate(model, load_tokens(VAL_FILES)) / 0.693
    torch.save({"model": model.state_dict(), "val_bpb": monitor_bpb}, "checkpoint_debug.pt")""",
)

# A monitoring eval inside training that test-time trains on each window's prefix and restores the weights
# after every window: no validation gradient persists into the trained model (PG201 judges the TTT itself).
_PREFIX_TTT = """
import copy


def eval_with_prefix_ttt(model, tokens, opt):
    saved = copy.deepcopy(model.state_dict())
    total = 0.0
    for i in range(0, tokens.numel() - 129, 64):
        window = tokens[i:i + 129]
        F.cross_entropy(model(window[:64]), window[1:65]).backward()
        opt.step()
        with torch.no_grad():
            total += F.cross_entropy(model(window[64:128]), window[65:129]).item()
{restore}    return total
"""

PREFIX_TTT_RESTORED = record(
    helpers=_PREFIX_TTT.replace("{restore}", "        model.load_state_dict(saved)\n"),
    setup="""    print(eval_with_prefix_ttt(model, load_tokens(VAL_FILES), opt))""",
)

PREFIX_TTT_KEPT = record(
    helpers=_PREFIX_TTT.replace("{restore}", ""),
    setup="""    print(eval_with_prefix_ttt(model, load_tokens(VAL_FILES), opt))""",
)

# Test-time training on every validation token after training but before the artifact is written ("pre-quant
# TTT"): the val-fitted weights are what is quantized and serialized, so validation data is trained into the
# artifact. The same per-window TTT with the weights restored after every window leaves nothing in it.
_ADAPT_ON_TOKENS = """

def adapt_on_tokens(model, tokens, opt):
    for i in range(0, tokens.numel() - 65, 64):
        chunk = tokens[i:i + 65]
        F.cross_entropy(model(chunk[:-1]), chunk[1:]).backward()
        opt.step()
        opt.zero_grad()
"""

PREQUANT_TTT = record(
    helpers=_ADAPT_ON_TOKENS,
    after_train="""    adapt_on_tokens(model, load_tokens(VAL_FILES), opt)""",
)

# The same adaptation helper called from both branches of a default-off flag: the branch that runs by default
# still trains on validation data (the gated call must not hide it).
PREQUANT_TTT_TWO_PATHS = record(
    flags='TWO_STAGE = int(os.environ.get("TWO_STAGE", "0"))',
    helpers=_ADAPT_ON_TOKENS
    + """

def adapt(model, tokens, opt):
    if TWO_STAGE:
        adapt_on_tokens(model, tokens[:4096], opt)
        adapt_on_tokens(model, tokens, opt)
    else:
        adapt_on_tokens(model, tokens, opt)
""",
    after_train="""    adapt(model, load_tokens(VAL_FILES), opt)""",
)

# A linear probe built and fitted on validation activations inside one diagnostic function before the artifact
# is written: its optimizer covers only the local probe, the serialized model is untouched.
PREQUANT_PROBE = record(
    helpers="""

def probe_diagnostic(model, tokens):
    with torch.no_grad():
        feats = model(tokens[:-1])
    probe = torch.nn.Linear(1024, 1024)
    popt = torch.optim.Adam(probe.parameters(), lr=1e-3)
    for _ in range(20):
        loss = F.cross_entropy(probe(feats), tokens[1:])
        popt.zero_grad()
        loss.backward()
        popt.step()
    return loss.item()
""",
    after_train="""    print(probe_diagnostic(model, load_tokens(VAL_FILES)))""",
)

PREQUANT_PREFIX_TTT_RESTORED = record(
    helpers=_PREFIX_TTT.replace("{restore}", "        model.load_state_dict(saved)\n"),
    after_train="""    print(eval_with_prefix_ttt(model, load_tokens(VAL_FILES), opt))""",
)

# A custom-tokenizer data step re-tokenizes the validation documents and writes them as the validation shard
# (`fineweb_val_*.bin`, the official shard format): that is the validation set itself, not the artifact. The same
# writer aimed at a file shipped beside the model is a paid prefix.
_SHARD_WRITER = """

def write_shard(path, tokens):
    header = np.zeros(256, dtype=np.int32)
    header[0] = 20240520
    header[2] = len(tokens)
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.numpy().astype(np.uint16).tobytes())


def retokenize(tokens):
    return tokens % 997
"""

VAL_SHARD_REWRITTEN = record(
    helpers=_SHARD_WRITER,
    setup="""    out_dir = os.path.join(DATA, "retokenized")
    val_path = os.path.join(out_dir, "fineweb_val_000000.bin")
    write_shard(val_path, retokenize(load_tokens(VAL_FILES)))""",
)

VAL_PREFIX_FILE = record(
    helpers=_SHARD_WRITER,
    setup="""    prefix_path = "final_model.prefix.bin"
    write_shard(prefix_path, retokenize(load_tokens(VAL_FILES)))""",
)

# =================================================================================================== PG402
CALIB_HELPERS = """

def collect_hessians(model, tokens, n_batches):
    hessians = {}
    hooks = []

    def make_hook(name):
        def hook(module, inputs, output):
            x = inputs[0].float()
            hessians[name] = hessians.get(name, 0) + x.T @ x
        return hook

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            hooks.append(module.register_forward_hook(make_hook(name)))
    with torch.no_grad():
        for i in range(n_batches):
            model(tokens[i * 64:(i + 1) * 64])
    for h in hooks:
        h.remove()
    return hessians


def quantize_with_hessians(state_dict, hessians):
    out = {}
    for name, w in state_dict.items():
        h = hessians.get(name.rsplit(".", 1)[0])
        scale = w.abs().amax() / 127 if h is None else (w.abs() * h.diag().sqrt()).amax() / 127
        out[name] = (torch.round(w / scale).to(torch.int8), scale)
    return out


def generate_calibration(model, n_tokens):
    tokens = torch.zeros(1, dtype=torch.long)
    with torch.no_grad():
        for _ in range(n_tokens):
            probs = torch.softmax(model(tokens[-1:]), dim=-1)
            tokens = torch.cat([tokens, torch.multinomial(probs[-1], 1)])
    return tokens
"""

CALIB_VAL = record(
    helpers=CALIB_HELPERS,
    after_train="""\
    calib_tokens = load_tokens(VAL_FILES)[:65536]
    hessians = collect_hessians(model, calib_tokens, 64)
    quantized = quantize_with_hessians(model.state_dict(), hessians)""",
    artifact="quantized",
)

CALIB_TRAIN = record(
    helpers=CALIB_HELPERS,
    after_train="""\
    hessians = collect_hessians(model, train_tokens[:65536], 64)
    quantized = quantize_with_hessians(model.state_dict(), hessians)""",
    artifact="quantized",
)

CALIB_SELFGEN = record(
    helpers=CALIB_HELPERS,
    after_train="""\
    calib_tokens = generate_calibration(model, 4096)
    hessians = collect_hessians(model, calib_tokens, 64)
    quantized = quantize_with_hessians(model.state_dict(), hessians)""",
    artifact="quantized",
)

CALIB_VAL_DEAD = record(
    helpers=CALIB_HELPERS
    + """

def calibrate_on_validation(model):
    return collect_hessians(model, load_tokens(VAL_FILES), 64)
""",
    after_train="""\
    hessians = collect_hessians(model, train_tokens[:65536], 64)
    quantized = quantize_with_hessians(model.state_dict(), hessians)""",
    artifact="quantized",
)

CALIB_VAL_FLAG = record(
    flags='CALIB_SOURCE = os.environ.get("CALIB_SOURCE", "train")',
    helpers=CALIB_HELPERS,
    after_train="""\
    if CALIB_SOURCE == "val":
        hessians = collect_hessians(model, load_tokens(VAL_FILES)[:65536], 64)
    else:
        hessians = collect_hessians(model, train_tokens[:65536], 64)
    quantized = quantize_with_hessians(model.state_dict(), hessians)""",
    artifact="quantized",
)


# Activation statistics of a diagnostic val eval, captured by forward hooks and only logged: they never reach the
# quantizer (weight-only int8 with no calibration), so they are not calibration.
ACT_STATS_LOGGED = record(
    helpers="""

def activation_absmax(model, tokens):
    peaks = {}

    def grab(module, inputs, output):
        peaks["out"] = max(peaks.get("out", 0.0), output.detach().abs().amax().item())

    handle = model.register_forward_hook(grab)
    with torch.no_grad():
        model(tokens[:4096])
    handle.remove()
    return peaks
""",
    after_train="""\
    stats = activation_absmax(model, load_tokens(VAL_FILES))
    print(f"act_absmax:{stats['out']:.3f}")""",
)

# Hessian hooks are installed after a monitoring val eval and removed before the next one: only training batches
# run while they are registered. The twin forwards val batches while they are on.
_HOOK_WINDOW = """\
    hess = {{}}

    def grab(module, inputs, output):
        x = inputs[0].float()
        hess["w"] = hess.get("w", 0) + x.T @ x

    print(f"val_loss:{{evaluate(model, load_tokens(VAL_FILES)):.4f}}")
    handle = model.register_forward_hook(grab)
    evaluate(model, {calib}[:4096])
    handle.remove()
    print(f"val_loss:{{evaluate(model, load_tokens(VAL_FILES)):.4f}}")
    quantized = quantize_with_hessians(model.state_dict(), hess)"""

HOOKS_AFTER_MONITOR = record(
    helpers=CALIB_HELPERS, after_train=_HOOK_WINDOW.format(calib="train_tokens"), artifact="quantized"
)
HOOKS_OVER_VAL = record(
    helpers=CALIB_HELPERS,
    after_train=_HOOK_WINDOW.format(calib="load_tokens(VAL_FILES)"),
    artifact="quantized",
)
