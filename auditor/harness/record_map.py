"""Map a record-family submission's hyperparameters and state dict onto the reference model, or refuse.

Where the hyperparameters come from, most authoritative first:
1. the ``Hyperparameters:`` block the run printed in its log (``  key: value`` lines), for the artifact's seed;
2. otherwise the script's own defaults, read statically from its ``Hyperparameters`` class
   (``name = int(os.environ.get("ENV", default))``; nothing is executed), overridden by the env assignments of the
   README's run command (``QK_GAIN_INIT=5.25 TTT_ENABLED=1 torchrun ... train_gpt.py``).

`map_record` turns them into a `ModelConfig` plus the evaluation settings the submission declared (eval length,
stride, TTT chunk / epochs / lr / momentum), and checks the artifact's state dict against the model that config
builds, key by key and shape by shape. Anything that does not map (a parameter our model does not have, such as
SmearGate's ``smear_gate.weight`` or a sparse attention gate's ``attn_gate_w``; a switched-on hyperparameter that
changes the forward pass, such as ``embedding_dim != model_dim``) raises `UnsupportedArchitecture` naming it:
rescoring a model we cannot rebuild exactly would produce a wrong score, which is worse than none.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reference_model.config import ModelConfig

ROPE_BUFFER = re.compile(r"register_buffer\(\s*['\"]inv_freq['\"]")
HPARAM_LINE = re.compile(r"^\s{1,8}([a-z_][a-z0-9_]*):\s?(.*)$")

# Hyperparameters that change the model's function and how they map onto ModelConfig.
_INT_FIELDS = {
    "vocab_size": "vocab_size",
    "num_layers": "num_layers",
    "model_dim": "model_dim",
    "num_heads": "num_heads",
    "num_kv_heads": "num_kv_heads",
    "rope_dims": "rope_dims",
    "xsa_last_n": "xsa_last_n",
    "parallel_residual_start": "parallel_residual_start",
    "num_loops": "num_loops",
    "loop_start": "loop_start",
    "loop_end": "loop_end",
}
_FLOAT_FIELDS = {"mlp_mult": "mlp_mult", "logit_softcap": "logit_softcap", "rope_base": "rope_base"}
_BOOL_FIELDS = {
    "tie_embeddings": "tie_embeddings",
    "ln_scale": "ln_scale",
    "skip_gates_enabled": "skip_gates",
}
# Switches of the descendants that change the forward pass; the reference model has none of them, so "on" refuses.
_UNSUPPORTED_SWITCHES = (
    "smear_gate_enabled",
    "sparse_attn_gate_enabled",
    "gated_attn_enabled",
    "attn_out_gate_enabled",
    "bigram_enabled",
    "value_embed_enabled",
    "ve_enabled",
)
# Hyperparameters that only shape training, quantization, logging or data paths: irrelevant to a rescore.
_IRRELEVANT = re.compile(
    r"(^|_)(lr|wd|eps|beta\d?|momentum|warmup|warmdown|iterations|ema|clip|sigmas|gptq|bits|compressor|"
    r"calibration|seed|run_id|path|dir|files|logfile|world_size|rank|distributed|is_main_process|grad_accum|"
    r"batch|tokens|every|wallclock|reserve|etlb|muon|adam|lqer|quant|init|std|frac|at|steps|backend|"
    r"min_lr|enable_looping_at|sliding_window_enabled|ttt|eval|val|train|prequant|phased|lora|doc|"
    r"hessian|prune|selective|compile|log|data|tokenizer|datasets|model_path|gate_window|rope_train_seq_len|caseops)(_|$)"
)


class UnsupportedArchitecture(ValueError):
    """The submission's model cannot be rebuilt exactly by the reference model; the message names why."""


@dataclass
class EvalSettings:
    seq_len: int = 2048
    stride: int = 64
    ttt_enabled: bool = False
    ttt_chunk_tokens: int = 32_768
    ttt_epochs: int = 3
    ttt_lr: float = 0.005
    ttt_momentum: float = 0.9
    sources: dict[str, str] = field(default_factory=dict)  # setting -> where it came from


@dataclass
class RecordMapping:
    config: ModelConfig
    eval: EvalSettings
    hparams_source: str  # "train_seed42.log hyperparameter block" | "train_gpt.py defaults + README.md:12"
    state: dict[str, Any]  # renamed to the reference model's keys
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------- sources
def logged_hparams(text: str) -> dict[str, str]:
    """The ``Hyperparameters:`` block of a log (the records print ``  key: value`` per attribute, sorted)."""
    out: dict[str, str] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip().rstrip(":") != "Hyperparameters":
            continue
        for nxt in lines[i + 1 :]:
            m = HPARAM_LINE.match(nxt)
            if not m:
                break
            out[m[1]] = m[2].strip()
        if out:
            return out
    return out


def _literal(node: ast.AST) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        return None


def _env_call(node: ast.AST) -> tuple[str, Any] | None:
    """("ENV", default) for os.environ.get("ENV", d) / os.getenv("ENV", d), looking through int()/float()/bool()."""
    while isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args:
        if node.func.id not in ("int", "float", "bool", "str"):
            return None
        node = node.args[0]
    if not isinstance(node, ast.Call) or len(node.args) < 1:
        return None
    f = node.func
    name = (
        f.attr
        if isinstance(f, ast.Attribute)
        and (f.attr == "getenv" or (f.attr == "get" and isinstance(f.value, ast.Attribute)))
        else None
    )
    if name is None:
        return None
    key = _literal(node.args[0])
    if not isinstance(key, str):
        return None
    default = _literal(node.args[1]) if len(node.args) > 1 else None
    return key, default


def code_hparams(source: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Statically read ``attr = conv(os.environ.get("ENV", default))`` in classes named like Hyperparameters,
    with `env` overriding the defaults as the run command would. Values are strings, as in a logged block."""
    from auditor.unpack import pep701_compat

    try:
        tree = ast.parse(pep701_compat(source))
    except SyntaxError:
        return {}
    env = env or {}
    out: dict[str, str] = {}
    for cls in ast.walk(tree):
        if not isinstance(cls, ast.ClassDef) or "hyper" not in cls.name.lower():
            continue
        for stmt in cls.body:
            if (
                isinstance(stmt, ast.Assign)
                and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name)
            ):
                target, value = stmt.targets[0].id, stmt.value
            elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value:
                target, value = stmt.target.id, stmt.value
            else:
                continue
            got = _env_call(value)
            if got is not None:
                key, default = got
                raw = env.get(key, default)
                if raw is not None:
                    out[target] = str(raw)
            elif (lit := _literal(value)) is not None and isinstance(lit, int | float | str | bool):
                out[target] = str(lit)
    return out


# --------------------------------------------------------------------------------------------------- values
def _as_bool(v: str) -> bool:
    s = v.strip().lower()
    if s in ("true", "1", "yes", "on"):
        return True
    if s in ("false", "0", "no", "off", "", "none"):
        return False
    try:
        return float(s) != 0.0
    except ValueError:
        return True


def _num(v: str, kind: type) -> Any:
    try:
        return kind(float(v)) if kind is int else kind(v)
    except ValueError:
        raise UnsupportedArchitecture(f"hyperparameter value {v!r} is not a {kind.__name__}") from None


def eval_settings(hp: Mapping[str, str], source: str) -> EvalSettings:
    ev = EvalSettings()
    spec: tuple[tuple[str, str, type], ...] = (
        ("eval_seq_len", "seq_len", int),
        ("eval_stride", "stride", int),
        ("ttt_chunk_tokens", "ttt_chunk_tokens", int),
        ("ttt_epochs", "ttt_epochs", int),
        ("ttt_lr", "ttt_lr", float),
        ("ttt_momentum", "ttt_momentum", float),
    )
    if "eval_seq_len" not in hp and "train_seq_len" in hp:
        ev.seq_len = _num(hp["train_seq_len"], int)
        ev.sources["seq_len"] = f"{source} (train_seq_len)"
    for key, attr, kind in spec:
        if key in hp:
            setattr(ev, attr, _num(hp[key], kind))
            ev.sources[attr] = source
    if "ttt_enabled" in hp:
        ev.ttt_enabled = _as_bool(hp["ttt_enabled"])
    return ev


def _expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    from reference_model.model import build_on_meta

    model = build_on_meta(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def map_record(
    hp: Mapping[str, str], state: Mapping[str, Any], source: str, rope_bf16_positions: bool = True
) -> RecordMapping:
    """ModelConfig + eval settings from `hp`, checked against `state` (see the module docstring).

    `rope_bf16_positions`: the script keeps RoPE's inv_freq in a buffer that its ``.bfloat16()`` rounds (the whole
    2026-04-09 family does; see ModelConfig.rope_bf16_positions). Measured: without it, the rescore of a record's
    sliding eval lands 2.8e-4 BPB above the record's own number on an H200; with it the CPU bf16 logits of the
    record's model and ours are bit-identical."""
    problems: list[str] = []
    fields: dict[str, Any] = {"rope_bf16_positions": rope_bf16_positions}
    for key, attr in _INT_FIELDS.items():
        if key in hp:
            fields[attr] = _num(hp[key], int)
    for key, attr in _FLOAT_FIELDS.items():
        if key in hp:
            fields[attr] = _num(hp[key], float)
    for key, attr in _BOOL_FIELDS.items():
        if key in hp:
            fields[attr] = _as_bool(hp[key])
    # The records build Rotary with train_seq_len as the NTK reference length (not rope_train_seq_len); a short
    # training sequence with a 2048-token eval therefore rescales RoPE at eval, and so must we.
    if "train_seq_len" in hp:
        fields["rope_train_seq_len"] = _num(hp["train_seq_len"], int)
    if (
        "embedding_dim" in hp
        and "model_dim" in hp
        and _num(hp["embedding_dim"], int) != fields.get("model_dim")
    ):
        problems.append(
            f"embedding_dim={hp['embedding_dim']} differs from model_dim={hp['model_dim']} "
            "(embed_proj/head_proj factorised embedding)"
        )
    for key in _UNSUPPORTED_SWITCHES:
        if key in hp and _as_bool(hp[key]):
            problems.append(f"{key}={hp[key]}")
    for key, value in hp.items():
        known = key in _INT_FIELDS or key in _FLOAT_FIELDS or key in _BOOL_FIELDS
        if (
            known
            or key in _UNSUPPORTED_SWITCHES
            or key in ("embedding_dim", "qk_gain_init", "tied_embed_init_std")
        ):
            continue
        if _IRRELEVANT.search(key):
            continue
        if _as_bool(value):  # an unknown switch that is on: it may change the forward pass
            problems.append(f"{key}={value} (unknown to the reference model)")
    # parallel residuals: some stacks print -1 for "off"; num_loops=0 turns recurrence off
    try:
        cfg = ModelConfig(**fields)
    except (TypeError, ValueError) as exc:
        raise UnsupportedArchitecture(f"hyperparameters do not form a valid reference model: {exc}") from None

    renamed = {("out_proj.weight" if k == "lm_head.weight" else k): v for k, v in state.items()}
    expected = _expected_shapes(cfg)
    extra = sorted(k for k in renamed if k not in expected)
    missing = sorted(k for k in expected if k not in renamed)
    wrong = [
        f"{k} {tuple(renamed[k].shape)} (expected {expected[k]})"
        for k in expected
        if k in renamed and tuple(renamed[k].shape) != expected[k]
    ]
    if extra:
        shown = sorted({re.sub(r"blocks\.\d+\.", "blocks.N.", k) for k in extra})
        problems.append("parameters the reference model does not have: " + ", ".join(shown[:8]))
    if missing:
        shown = sorted({re.sub(r"blocks\.\d+\.", "blocks.N.", k) for k in missing})
        problems.append("parameters the artifact lacks: " + ", ".join(shown[:8]))
    if wrong:
        problems.append("shape mismatches: " + "; ".join(wrong[:4]))
    if problems:
        raise UnsupportedArchitecture(
            "cannot rebuild this model exactly, so it is not rescored: " + "; ".join(problems)
        )
    notes = [f"hyperparameters from {source}", f"bf16 RoPE tables: {rope_bf16_positions}"]
    return RecordMapping(cfg, eval_settings(hp, source), source, renamed, notes)


# --------------------------------------------------------------------------------------------------- context
@dataclass
class RecordContext:
    """What a submission folder says about its runs: per-seed logged hyperparameters, code defaults, run env."""

    logged: dict[int | None, tuple[str, dict[str, str]]] = field(
        default_factory=dict
    )  # seed -> (log, hparams)
    code: dict[str, str] = field(default_factory=dict)
    code_source: str = ""
    # the script registers RoPE's inv_freq as a buffer and casts its model with .bfloat16() (None: no code seen)
    rope_bf16_positions: bool | None = None

    def hparams_for(self, seed: int | None) -> tuple[dict[str, str], str]:
        if seed in self.logged:
            path, hp = self.logged[seed]
            return hp, f"{path} hyperparameter block"
        if seed is None and len(self.logged) == 1:
            path, hp = next(iter(self.logged.values()))
            return hp, f"{path} hyperparameter block"
        if self.code:
            return dict(self.code), self.code_source
        if self.logged:  # another seed's block: the architecture is the same across a submission's seeds
            path, hp = next(iter(self.logged.values()))
            return hp, f"{path} hyperparameter block (another seed)"
        return {}, "no hyperparameters found"


def context_from_submission(sub: Any) -> RecordContext:
    """Collect the per-seed hyperparameter blocks, the entry script's defaults (decoded statically) and the README
    run command's env from a loaded Submission. Reads only; nothing is executed."""
    from auditor.evidence.logs import parse_log
    from auditor.flow.consts import parse_run_commands
    from auditor.unpack import unpack_source

    ctx = RecordContext()
    texts: dict[str, str] = {}
    for path, f in sub.files.items():
        text, _ = f.text() if hasattr(f, "text") else (None, None)
        if text is not None:
            texts[path] = text
    for path, text in sorted(texts.items()):
        if not path.endswith((".log", ".txt")) or "Hyperparameters" not in text:
            continue
        hp = logged_hparams(text)
        if not hp:
            continue
        seed = parse_log(text, path).seed
        if seed is None and "seed" in hp:
            try:
                seed = int(hp["seed"])
            except ValueError:
                seed = None
        ctx.logged.setdefault(seed, (path, hp))
    entry = getattr(sub, "entry", None) or ("train_gpt.py" if "train_gpt.py" in texts else None)
    if entry and entry in texts:
        commands = parse_run_commands({p: t for p, t in texts.items() if p.lower().endswith((".md", ".sh"))})
        env = commands[0].env_dict if commands else {}
        best: dict[str, str] = {}
        for unit in unpack_source(entry, texts[entry], read_file=sub.read_text).units:
            got = code_hparams(unit.text, env)
            if len(got) > len(best):
                best = got
            if ROPE_BUFFER.search(unit.text):
                ctx.rope_bf16_positions = ".bfloat16()" in unit.text
            elif ctx.rope_bf16_positions is None and "class Rotary" in unit.text:
                ctx.rope_bf16_positions = False
        ctx.code = best
        where = f"{commands[0].path}:{commands[0].line}" if commands else "no run command"
        ctx.code_source = f"{entry} defaults + {where}"
    return ctx
