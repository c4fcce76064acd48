"""PG304: the model that produces the scored probabilities lets tokens at or after position t reach position t.

C1 (issue #1017) requires p_t to be a function of the artifact and the strict prefix x_1..x_{t-1} only. A
transformer is causal because of how its sequence-mixing ops are called, not because of what they are named, so
this rule reads the calls themselves:

* attention: `scaled_dot_product_attention` with `is_causal` false and no causal `attn_mask`; flash-attention
  calls with `causal=False` (or no `causal`, whose library default is false); `flex_attention` without a causal
  `block_mask`. A mask is causal when what it is built from has triangular structure (`tril`/`triu`, an ordering
  comparison of positions such as `i >= j`), followed through the submission's own helper functions, callers'
  arguments and `self.` attributes / `register_buffer`. A causal mask whose leading rows are then overwritten to
  "allowed" for every column (`mask[:M, M:] = True`: memory / register / global tokens that read the whole
  sequence while every later position reads them back) is not causal.
* convolutions over the sequence axis (input transposed to (B, C, T)): `padding='same'` or a centred padding
  (`k // 2`, `d*(k-1)//2`, any padding between 0 and d*(k-1)), a symmetric or right `F.pad` of the input, or a
  full `d*(k-1)` padding whose output is cut on the left. Left padding of d*(k-1), or full padding with the last
  outputs sliced off, is the causal convolution and passes. `kernel_size=1` mixes channels only.
* bidirectional recurrences (`bidirectional=True` LSTM/GRU/RNN).
* dense token mixing: an `nn.Linear` applied to a (B, C, T) view, i.e. over the sequence axis (MLP-Mixer).
* whole-sequence summaries broadcast back to every position: a scan `for t in range(T)` over the sequence axis
  (T from `b, T, d = x.shape` / `x.size(1)`, steps read `h[:, t]`) whose FINAL carried state is returned alone or
  broadcast (`.unsqueeze(1)`, `[:, None]`, `.expand`); a reduction over the sequence axis (`x.mean(dim=1)` of an
  x unpacked as (B, T, D), or dim=-1 of a (B, C, T) view) broadcast back (`keepdim=True`, `.unsqueeze(1)`...).
  Axis 1 of a forward's activation whose layout is not established: WARN. Not seen: summaries broadcast through
  an attribute or a caller's variable chain longer than the function, top-k/sort over the sequence axis that
  decides the structure (patch boundaries), a state built over the whole window carried into a second pass.

Only live code counts (`auditor.flow` reachability: dead code and default-off flags are reported as information).
When an axis, a flag or a mask cannot be resolved statically the verdict is WARN, never PASS. A masked-denoising
evaluation (the model's input is the scored tokens themselves with some replaced by a constant: MDLM/LLaDA ELBO)
is bidirectional by design: those findings are WARN, since its score is a variational bound rather than a
left-to-right factorization and the merged non-record MDLM entry shows no ruling against it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass, field

from auditor.facts import AuditContext, CodeUnit
from auditor.findings import Basis, Confidence, Finding, Location, Severity, Verdict
from auditor.flow.consts import UNKNOWN
from auditor.flow.model import CallSite, Func
from auditor.flow.program import program_of
from auditor.flow.targets import Scope, call_name, index_parts, reach_of, store_root, target_facts, var_key
from rules.base import Case, Rule

# Library entry points, matched on the import-resolved dotted name (CallSite.ext) so that aliases do not matter.
_SDPA = "scaled_dot_product_attention"
_FLASH = frozenset(
    {
        "flash_attn_func",
        "flash_attn_varlen_func",
        "flash_attn_qkvpacked_func",
        "flash_attn_kvpacked_func",
        "flash_attn_varlen_qkvpacked_func",
        "flash_attn_varlen_kvpacked_func",
        "flash_attn_with_kvcache",
    }
)
_FLEX = "flex_attention"
_RNNS = frozenset({"LSTM", "GRU", "RNN"})
_TRI_CALLS = frozenset({"tril", "triu", "tril_", "triu_", "tril_indices", "triu_indices"})
_ORDER_OPS = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)
_TRACE_DEPTH = 4
# constructors of learned tensors: keys built only from these are a memory, not the sequence
_PARAM_CTORS = frozenset(
    {
        "Parameter",
        "Embedding",
        "Linear",
        "zeros",
        "ones",
        "empty",
        "randn",
        "rand",
        "full",
        "tensor",
        "arange",
    }
)
# functional ops whose output has their first argument's layout
_LAYOUT_KEEPING = frozenset(
    {
        "pad",
        "silu",
        "gelu",
        "relu",
        "leaky_relu",
        "rms_norm",
        "layer_norm",
        "dropout",
        "sigmoid",
        "tanh",
        "softplus",
    }
)
_LAYOUT_METHODS = frozenset(
    {
        "transpose",
        "permute",
        "contiguous",
        "view",
        "reshape",
        "float",
        "half",
        "bfloat16",
        "to",
        "repeat_interleave",
    }
)
_META_ATTRS = frozenset({"device", "dtype", "shape", "ndim", "is_cuda"})

# A tiny scored model: {MIX} is the sequence-mixing layer under test, {INIT} its construction.
_MODEL = """
import os
import torch
import torch.nn.functional as F
from torch import nn


class Mixer(nn.Module):
    def __init__(self, dim, heads, k):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
{INIT}
    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
{MIX}
        return y.transpose(1, 2).reshape(b, t, d)


class Model(nn.Module):
    def __init__(self, vocab, dim):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.mix = Mixer(dim, 4, 3)
        self.head = nn.Linear(dim, vocab)

    def forward(self, ids):
        return self.head(self.mix(self.emb(ids)))


def evaluate(model, tokens, seq_len):
    total = 0.0
    with torch.no_grad():
        for s in range(0, tokens.numel() - seq_len, seq_len):
            chunk = tokens[s : s + seq_len + 1]
            total += F.cross_entropy(model(chunk[None, :-1])[0], chunk[1:], reduction="sum").item()
    return total


if __name__ == "__main__":
    print(evaluate(Model(1024, 64), torch.load(os.path.join("data", "fineweb_val_000000.pt")), 256))
"""


def _model(mix: str, init: str = "") -> str:
    return _MODEL.replace("{MIX}", mix.rstrip("\n")).replace("{INIT}", init)


_SDPA_CALL = "        y = F.scaled_dot_product_attention(q, k, v{ARGS})\n"


@dataclass
class Construct:
    """One sequence-mixing construct and what was decided about it."""

    kind: str  # "attention" | "conv" | "rnn" | "mixer"
    unit: CodeUnit
    node: ast.AST  # primary location (the call that makes it non-causal)
    use: ast.AST  # what must run for it to matter (reachability is asked of this node)
    verdict: Verdict  # FAIL or WARN (legal constructs are not reported)
    message: str
    related: list[Location] = field(default_factory=list)


class NonCausalModel(Rule):
    id = "PG304"
    name = "non-causal-model"
    title = "The scored model lets the token at t or later tokens reach position t (not strictly causal)"
    category = "causality"
    severity = Severity.CRITICAL
    confidence = Confidence.MEDIUM
    rationale = (
        "The probability scored at position t may depend only on the artifact and the strict prefix (C1). "
        "Non-causal attention (is_causal=False without a triangular mask, causal=False, memory tokens that read "
        "the whole sequence), centred or 'same'-padded convolutions over the sequence axis, bidirectional "
        "recurrences and dense token mixing over the sequence let the scored token and later tokens into the "
        "prediction, so the reported bits are not a code length."
    )
    basis = Basis(
        ref="issue #1017 (NoesisGenesis), condition C1, as cited by maintainers in PR #1902 / #1972 audits",
        date="2026-03-28",
        quote=(
            "At position t, the predictive distribution p_t must be a function only of the submitted artifact A "
            "and the strict prefix x_1..x_{t-1}."
        ),
        url="https://github.com/openai/parameter-golf/issues/1017",
        section="A.2",
    )
    valid = (
        Case(
            code=_model(_SDPA_CALL.replace("{ARGS}", ", is_causal=True")),
            verdict=Verdict.PASS,
            note="is_causal",
        ),
        Case(
            code=_model(
                "        mask = torch.tril(torch.ones(t, t, dtype=torch.bool, device=x.device))\n"
                + _SDPA_CALL.replace("{ARGS}", ", attn_mask=mask, is_causal=False")
            ),
            verdict=Verdict.PASS,
            note="boolean tril mask",
        ),
        Case(
            code=_model(
                "        bias = torch.triu(torch.full((t, t), float('-inf'), device=x.device), diagonal=1)\n"
                + _SDPA_CALL.replace("{ARGS}", ", attn_mask=bias")
            ),
            verdict=Verdict.PASS,
            note="additive triu(-inf) mask",
        ),
        Case(
            code=_model(
                "        y = self.conv(x.reshape(b * t, 1, d)).reshape(b, t, 1, d).expand(b, t, self.heads, d)\n"
                "        y = y.reshape(b, t, self.heads, d // self.heads * self.heads)[..., : d // self.heads]\n"
                "        y = y.transpose(1, 2)\n",
                "        self.conv = nn.Conv1d(1, 1, k, padding=k // 2)\n",
            ),
            verdict=Verdict.PASS,
            note="'same' conv over the feature axis (one channel, length = features)",
        ),
        Case(
            code=_model(
                "        if int(os.environ.get('BIDIR', '0')):\n"
                + "    "
                + _SDPA_CALL.replace("{ARGS}", ", is_causal=False")
                + "        else:\n"
                + "    "
                + _SDPA_CALL.replace("{ARGS}", ", is_causal=True")
            ),
            verdict=Verdict.PASS,
            note="bidirectional branch behind a default-off flag",
        ),
        Case(
            code=_model(
                _SDPA_CALL.replace("{ARGS}", ", is_causal=True")
                + "        y = y + x.mean(dim=-1, keepdim=True).view(b, 1, t, 1)\n"
            ),
            verdict=Verdict.PASS,
            note="mean over the feature axis (a norm statistic), per position",
        ),
    )
    invalid = (
        Case(code=_model(_SDPA_CALL.replace("{ARGS}", ", is_causal=False")), verdict=Verdict.FAIL, line=16),
        Case(
            code=_model(
                "        keep = torch.ones(t, t, dtype=torch.bool, device=x.device)\n"
                + _SDPA_CALL.replace("{ARGS}", ", attn_mask=keep")
            ),
            verdict=Verdict.FAIL,
            line=17,
            note="mask with no causal structure",
        ),
        Case(
            code=_model(
                "        h, _ = self.rnn(x)\n        y = h.view(b, t, self.heads, d // self.heads).transpose(1, 2)\n",
                "        self.rnn = nn.GRU(dim, dim // 2, batch_first=True, bidirectional=True)\n",
            ),
            verdict=Verdict.FAIL,
            line=12,
            note="bidirectional GRU",
        ),
        Case(
            code=_model(
                _SDPA_CALL.replace("{ARGS}", ", is_causal=True")
                + "        y = y + x.mean(dim=1).unsqueeze(1).view(b, 1, self.heads, d // self.heads).transpose(1, 2)\n"
            ),
            verdict=Verdict.FAIL,
            line=17,
            note="mean over the sequence axis added back to every position",
        ),
    )

    def check(self, ctx: AuditContext) -> Iterable[Finding]:
        analysis = _Analysis(ctx)
        constructs = analysis.run()
        if not constructs:
            return
        denoise = analysis.denoising_eval()
        for c in constructs:
            yield self._judge(ctx, c, denoise, analysis)

    def _judge(
        self, ctx: AuditContext, c: Construct, denoise: Location | None, analysis: _Analysis
    ) -> Finding:
        loc = c.unit.location(c.node)
        live, why = analysis.live(c.unit, c.use)
        if not live:
            return self.info(f"{c.message}. Not run by default ({why})", [loc], related=c.related)
        if denoise is not None:
            return self.finding(
                Verdict.WARN,
                f"{c.message}. The evaluation is masked denoising (the model's input is the scored tokens with "
                f"some replaced by a constant, {denoise}): bidirectional by design, scored as a variational bound, "
                "not a left-to-right factorization, so C1's strict-prefix wording does not fit it and a literal "
                "reading makes it illegal; no maintainer ruling covers it (the MDLM entry was merged as non-record), "
                "so this is a WARN for a maintainer to decide",
                [loc],
                related=[denoise, *c.related],
                severity=Severity.MEDIUM,
                confidence=Confidence.LOW,
            )
        status = program_of(ctx).reach(c.unit, c.use).status
        if status == "unknown" and c.verdict is Verdict.FAIL:
            return self.finding(
                Verdict.WARN,
                f"{c.message}. Whether this code runs could not be established ({why}), so this is not a FAIL",
                [loc],
                related=c.related,
                severity=Severity.MEDIUM,
                confidence=Confidence.LOW,
            )
        if c.verdict is Verdict.WARN:
            return self.finding(
                Verdict.WARN,
                c.message,
                [loc],
                related=c.related,
                severity=Severity.MEDIUM,
                confidence=Confidence.LOW,
            )
        return self.finding(Verdict.FAIL, c.message, [loc], related=c.related, evidence=_short(c.node, 300))


# ---------------------------------------------------------------------------------------------------------------
@dataclass
class _Trace:
    """What a traced expression is built from, across scopes."""

    nodes: list[tuple[Scope, ast.AST]] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)


class _Analysis:
    def __init__(self, ctx: AuditContext) -> None:
        self.ctx = ctx
        self.prog = program_of(ctx)
        self.facts = target_facts(ctx)
        self.scope_of_node: dict[int, Scope] = {id(s.node): s for s in self.facts.scopes}
        self.func_of_node: dict[int, Func] = {id(f.node): f for f in self.prog.funcs}
        self.out: list[Construct] = []
        self._submods: dict[int, list[CallSite]] | None = None
        self._scored_cache: dict[tuple[int, int], set[str]] = {}
        self._convs: frozenset[str] | None = None
        self._untyped: list[CallSite] | None = None

    # -- entry ----------------------------------------------------------------------------------------------------
    def run(self) -> list[Construct]:
        seen: set[tuple[str, int]] = set()
        for site in self.prog.all_sites():
            ext = site.ext or ""
            last = ext.rsplit(".", 1)[-1]
            if site.callees:  # an own function: its body is judged where its own calls are
                continue
            key = (site.unit.name, id(site.node))
            if key in seen:
                continue
            seen.add(key)
            if last == _SDPA:
                self._sdpa(site)
            elif last in _FLASH and "flash" in ext:
                self._flash(site)
            elif last == _FLEX:
                self._flex(site)
            elif last == "Conv1d" and ext.startswith("torch"):
                self._conv_module(site)
            elif last == "conv1d" and ext.startswith("torch"):
                self._conv_functional(site)
            elif last in _RNNS and ext.startswith("torch"):
                self._rnn(site)
            elif last == "Linear" and ext.startswith("torch"):
                self._linear(site)
        self._summaries()
        return self.out

    def denoising_eval(self) -> Location | None:
        """A live masked corruption of the very tokens that are scored, at the same positions (no shift): the
        input of a masked-diffusion ELBO (MDLM/LLaDA), where the model sees the unmasked tokens on both sides by
        design. Shapes: `where(cond, MASK, tokens)`, `tokens.masked_fill(cond, MASK)`, and
        `noisy = tokens.clone(); noisy[cond] = MASK`, with `tokens` scored in the same function (the label of
        `cross_entropy`, the index of `gather`) or passed in by a caller that scores it."""
        for scope in self.facts.scopes:
            scored = self._scored_in(scope)
            for n in scope.nodes:
                data: ast.AST | None = None
                fill: ast.AST | None = None
                if isinstance(n, ast.Call):
                    name = call_name(n)
                    if name == "where" and len(n.args) == 3:
                        data, fill = n.args[2], n.args[1]
                    elif (
                        name in {"masked_fill", "masked_fill_"}
                        and isinstance(n.func, ast.Attribute)
                        and n.args
                    ):
                        data, fill = n.func.value, n.args[-1]
                elif (
                    isinstance(n, ast.Assign)
                    and len(n.targets) == 1
                    and isinstance(n.targets[0], ast.Subscript)
                ):
                    tgt = n.targets[0]
                    if isinstance(tgt.value, ast.Name):
                        data, fill = _cloned_from(scope, tgt.value), n.value
                if not isinstance(data, ast.Name) or fill is None:
                    continue
                if not (
                    _scalar_like(fill)
                    or (isinstance(fill, ast.Call) and call_name(fill) in {"full_like", "full"})
                ):
                    continue
                if data.id not in scored and not self._scored_by_caller(scope, data.id):
                    continue
                if reach_of(self.ctx, scope.unit, n)[0]:
                    return scope.unit.location(n)
        return None

    def live(self, unit: CodeUnit, node: ast.AST, depth: int = 6) -> tuple[bool, str]:
        """reach_of, plus the submodule calls the call graph does not resolve: a submodule's `forward` whose only
        callers are `self.X(...)` sites runs only if one of those sites runs (`if FLAG: x = self.local(x)`)."""
        live, why = reach_of(self.ctx, unit, node)
        if not live or depth <= 0:
            return live, why
        func = self.prog.enclosing_func(unit, node)
        off = self._param_branch_off(func, node) if func is not None else None
        if off is not None:
            return False, off
        while func is not None and func.parent is not None:
            func = func.parent
        if func is None or func.cls is None or func.name not in ("forward", "__call__"):
            return live, why
        if self.prog.callers(func):
            return live, why
        sites = self._submodule_calls().get(id(func.cls), [])
        if not sites:
            return live, why
        reasons = []
        for site in sites:
            ok, r = self.live(site.unit, site.node, depth - 1)
            if ok:
                return True, r
            reasons.append(r)
        return False, reasons[0]

    def _before_scoring(self, site: CallSite, depth: int = 3) -> bool:
        """A call made by a training step: not under `no_grad`/`inference_mode`, inside a loop whose body calls
        `.backward()`. A non-causal training objective (masked LM, bidirectional auxiliary loss) does not make the
        scored evaluation non-causal; score-first TTT scores under no_grad, so its scoring calls still count."""
        fn = site.caller.node
        if any(_is_no_grad(d) for d in getattr(fn, "decorator_list", [])):
            return False
        pos = (site.node.lineno, site.node.col_offset)
        loops = []
        for n in ast.walk(fn):
            if (
                isinstance(n, ast.With)
                and any(_is_no_grad(i.context_expr) for i in n.items)
                and _within(n.body, pos)
            ):
                return False
            if isinstance(n, (ast.For, ast.While)) and _within(n.body, pos):
                loops.append(n)
        if loops:
            inner = max(loops, key=lambda n: (n.lineno, n.col_offset))
            if any(isinstance(n, ast.Call) and call_name(n) == "backward" for n in ast.walk(inner)):
                return True
        # a helper only training steps call (`forward_diffusion` passing is_causal=False, called by the loop)
        if depth <= 0:
            return False
        callers = [s for s, _ in self._callers(site.caller) if reach_of(self.ctx, s.unit, s.node)[0]]
        return bool(callers) and all(self._before_scoring(s, depth - 1) for s in callers)

    def _param_branch_off(self, func: Func, node: ast.AST) -> str | None:
        """`if is_causal: ... else: <node>` where the parameter `is_causal` is true at every live call (or by its
        default): the branch never runs. Environment flags are the flow layer's business; this covers the
        parameters it leaves undecided."""
        pos = (getattr(node, "lineno", 0), getattr(node, "col_offset", 0))
        for n in ast.walk(func.node):
            if not isinstance(n, ast.If):
                continue
            test, negate = n.test, False
            if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
                test, negate = test.operand, True
            if not (isinstance(test, ast.Name) and test.id in func.params):
                continue
            for branch, stmts in ((True, n.body), (False, n.orelse)):
                if stmts and _within(stmts, pos):
                    val, why = self._flag(func, test)
                    if isinstance(val, bool) and (val != negate) != branch:
                        return f"`{test.id}` is {val} at every call of `{func.qualname}`" + (
                            f" ({why})" if why else ""
                        )
        return None

    def _scored_in(self, scope: Scope, depth: int = 2) -> set[str]:
        """Variables of `scope` holding the scored tokens: scored here (label/gather index and what they are
        computed from), or passed to an own function/model that scores the parameter they bind to
        (`model(masked_ids, original_ids)` whose forward computes `cross_entropy(logits, original_ids)`)."""
        key = (id(scope), depth)
        got = self._scored_cache.get(key)
        if got is not None:
            return got
        self._scored_cache[key] = set()  # recursion guard
        out = _with_sources(scope, set(scope.target_vars) | _scored_names(scope))
        func = self.func_of_node.get(id(scope.node))
        if func is not None and depth > 0:
            for site in func.calls:
                for callee in site.callees:
                    cs = self._scope(callee)
                    if cs is None:
                        continue
                    inner = self._scored_in(cs, depth - 1)
                    if not inner:
                        continue
                    for param, arg in callee.bind(site.node, bound_self=site.is_bound_call(callee)).items():
                        if param in inner and isinstance(arg, ast.Name):
                            out |= _with_sources(scope, {arg.id})
        self._scored_cache[key] = out
        return out

    def _scored_by_caller(self, scope: Scope, param: str) -> bool:
        """`q_xt(x0, p)` corrupting its parameter: does a caller pass a tensor it scores (`gather(.., x0)`)?"""
        func = self.func_of_node.get(id(scope.node))
        if func is None or param not in func.params:
            return False
        for site, binding in self._callers(func):
            arg = binding.get(param)
            cs = self._scope(site.caller)
            if isinstance(arg, ast.Name) and cs is not None and arg.id in self._scored_in(cs):
                return True
        return False

    # -- helpers --------------------------------------------------------------------------------------------------
    def _scope(self, func: Func | None) -> Scope | None:
        return self.scope_of_node.get(id(func.node)) if func is not None else None

    def _add(
        self,
        kind: str,
        site_or_unit: CallSite | CodeUnit,
        node: ast.AST,
        use: ast.AST,
        verdict: Verdict,
        message: str,
        related: Iterable[Location] = (),
    ) -> None:
        unit = site_or_unit.unit if isinstance(site_or_unit, CallSite) else site_or_unit
        self.out.append(Construct(kind, unit, node, use, verdict, message, list(related)))

    def _kw(self, call: ast.Call, name: str, pos: int | None = None) -> ast.AST | None:
        for k in call.keywords:
            if k.arg == name:
                return k.value
        if (
            pos is not None
            and len(call.args) > pos
            and not any(isinstance(a, ast.Starred) for a in call.args)
        ):
            return call.args[pos]
        for k in call.keywords:
            if k.arg is None:  # `f(q, k, v, **opts)`: the dict literal(s) and `opts["name"] = v` stores
                return self._splat_value(call, k.value, name)
        return None

    def _splat_value(self, call: ast.Call, splat: ast.AST, name: str) -> ast.AST | None:
        """The value `name` gets from a `**opts` argument: None when the dict never sets it, an opaque name
        (which no flag or mask analysis can decide: WARN) when the dict cannot be read."""
        site = self.prog.site_of(call)
        scope = self._scope(site.caller) if site is not None else None
        unknown = ast.copy_location(ast.Name(id="<**>", ctx=ast.Load()), call)
        if scope is None or not isinstance(splat, ast.Name):
            return unknown
        found: ast.AST | None = None
        for d in scope.defs.get(splat.id, []):
            if isinstance(d, ast.Dict):
                for key, val in zip(d.keys, d.values):
                    if key is None:
                        return unknown  # `{**other}`
                    if isinstance(key, ast.Constant) and key.value == name:
                        found = val
            elif isinstance(d, ast.Call) and call_name(d) == "dict" and not d.args:
                found = next((k.value for k in d.keywords if k.arg == name), found)
            elif not self._is_store_value(scope, splat.id, d):
                return unknown
        for stmt in scope.nodes:  # `opts["is_causal"] = True`
            if (
                isinstance(stmt, ast.Assign)
                and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Subscript)
            ):
                t = stmt.targets[0]
                if isinstance(t.value, ast.Name) and t.value.id == splat.id:
                    if isinstance(t.slice, ast.Constant) and t.slice.value == name:
                        found = stmt.value
                    elif not isinstance(t.slice, ast.Constant):
                        return unknown
        return found

    @staticmethod
    def _is_store_value(scope: Scope, var: str, value: ast.AST) -> bool:
        """Is `value` recorded for `var` by a subscript store `var[k] = value` (not a rebinding)?"""
        return any(
            isinstance(n, ast.Assign)
            and n.value is value
            and any(isinstance(t, ast.Subscript) and store_root(t) == var for t in n.targets)
            for n in scope.nodes
        )

    def _flag(self, func: Func, expr: ast.AST, depth: int = 2 * _TRACE_DEPTH) -> tuple[object, str]:
        """The boolean value of a flag argument: folded under the defaults, or followed through the callers that
        bind the parameter it reads. ("wrapper", why) when it is a parameter nobody binds directly (a function
        used as a value: the calls that pass the flag are judged themselves)."""
        if isinstance(expr, ast.Constant):
            return bool(expr.value), ""
        if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.Not):
            val, why = self._flag(func, expr.operand, depth)
            return (not val if isinstance(val, bool) else val), why
        v = self.prog.eval_const(func.unit, expr, func)
        if v is not UNKNOWN and isinstance(v, (bool, int)):
            return bool(v), ""
        if (
            isinstance(expr, ast.Name)
            and expr.id not in func.params
            and func.parent is not None
            and not self._assigned_in(func, expr.id)
            and depth > 0
        ):
            return self._flag(func.parent, expr, depth - 1)  # a free variable of a nested function
        if isinstance(expr, ast.Name) and expr.id in func.params and depth > 0:
            live_sites = [(s, b) for s, b in self._callers(func) if reach_of(self.ctx, s.unit, s.node)[0]]
            default = _param_default(func.node, expr.id)
            if not live_sites and func.name in ("forward", "__call__") and func.cls is not None:
                # `model(x, causal=False)` on a model passed around as a value: the call graph cannot type it,
                # but a keyword names the parameter; without any such call the default decides
                live_sites = [
                    (s, {expr.id: k.value})
                    for s in self._untyped_calls()
                    for k in s.node.keywords
                    # same file: separate scripts in a folder define same-named classes of their own
                    if k.arg == expr.id
                    and s.unit.path == func.unit.path
                    and reach_of(self.ctx, s.unit, s.node)[0]
                ]
                if not live_sites:
                    if default is not None:
                        return self._flag(func, default, 0)
                    return ("wrapper", f"parameter `{expr.id}` of `{func.qualname}`")
            if not live_sites:
                return ("wrapper", f"parameter `{expr.id}` of `{func.qualname}`")
            sites = [(s, b) for s, b in live_sites if not self._before_scoring(s)]
            if not sites:  # a training objective may be bidirectional: only scoring calls matter
                return True, f"`{func.qualname}` is only called while training"
            values: list[tuple[object, str]] = []
            for s, binding in sites:
                arg = binding.get(expr.id)
                if arg is None:
                    if default is None:
                        values.append((None, f"no value for `{expr.id}` at {s.unit.name}:{s.line}"))
                        continue
                    values.append((*self._flag(func, default, 0)[:1], f"default of `{expr.id}`"))
                    continue
                val, why = self._flag(s.caller, arg, depth - 1)
                values.append((val, why or f"{s.unit.name}:{s.line} passes `{_short(arg)}`"))
            for val, why in values:
                if val is False:
                    return False, why
            for val, why in values:
                if val is None or val == "wrapper":
                    return None, why
            return True, ""
        return None, f"`{_short(expr)}` cannot be decided statically"

    def _callers(self, func: Func) -> list[tuple[CallSite, dict[str, ast.AST]]]:
        """Call sites of `func` with their argument binding: the program's resolved callers, plus submodule calls
        the call graph leaves unresolved (`self.attn(x, mask)`, `self.blocks[i](x)`, `for b in self.blocks:
        b(x)`) when `func` is the `forward` of the class those attributes are built from."""
        out = [
            (s, func.bind(s.node, bound_self=s.is_bound_call(func)))
            for s in self.prog.callers(func)
            # name-only (class hierarchy) resolution across files pairs separate scripts' same-named methods
            if s.resolution != "cha" or s.unit.path == func.unit.path
        ]
        if func.cls is not None and func.name in ("forward", "__call__"):
            for site in self._submodule_calls().get(id(func.cls), []):
                out.append((site, func.bind(site.node, bound_self=True)))
        return out

    def _untyped_calls(self) -> list[CallSite]:
        """Calls the call graph resolved to nothing (`model(x)` on a parameter, `fn(...)` on a value)."""
        if self._untyped is None:
            self._untyped = [
                s
                for s in self.prog.all_sites()
                if not s.callees
                and not s.ext
                and s.constructs is None
                # `self.X(...)` is a submodule call: _submodule_calls attributes it to the class X holds
                and not (s.caller.params and _self_attr_of(s.node.func, s.caller.params[0], None) is not None)
            ]
        return self._untyped

    def _submodule_calls(self) -> dict[int, list[CallSite]]:
        """id(ClassInfo) -> unresolved call sites that call an instance of it held in a `self.` attribute."""
        if self._submods is not None:
            return self._submods
        held: dict[
            tuple[int, str], set[int]
        ] = {}  # (id(owner class), attr) -> ids of own classes built there
        classes: dict[int, object] = {}
        for cls in self.prog.classes:
            for attr, sources in cls.self_attrs.items():
                for value, _ in sources:
                    for n in ast.walk(value):
                        site = self.prog.site_of(n) if isinstance(n, ast.Call) else None
                        if site is not None and site.constructs is not None:
                            held.setdefault((id(cls), attr), set()).add(id(site.constructs))
                            classes[id(site.constructs)] = site.constructs
        # `self.blocks.append(Block(...))` / `.extend([...])` / `.add_module(name, Block(...))` fill a container
        for f in self.prog.funcs:
            if f.cls is None or not f.params:
                continue
            for site in f.calls:
                if site.constructs is None:
                    continue
                for n in ast.walk(f.node):
                    if (
                        isinstance(n, ast.Call)
                        and call_name(n) in {"append", "extend", "add_module", "insert"}
                        and isinstance(n.func, ast.Attribute)
                        and any(site.node is x for a in n.args for x in ast.walk(a))
                    ):
                        attr = _self_attr_of(n.func.value, f.params[0], None)
                        if attr is not None:
                            held.setdefault((id(f.cls), attr), set()).add(id(site.constructs))
        out: dict[int, list[CallSite]] = {}
        for f in self.prog.funcs:
            if f.cls is None or not f.params:
                continue
            scope = self._scope(f)
            owners = [c for c in f.cls.mro()]
            for site in f.calls:
                if site.callees or site.ext:
                    continue
                attr = _self_attr_of(site.node.func, f.params[0], scope)
                if attr is None:
                    continue
                for owner in owners:
                    for cid in held.get((id(owner), attr), ()):
                        out.setdefault(cid, []).append(site)
        self._submods = out
        return out

    def _assigned_in(self, func: Func, name: str) -> bool:
        scope = self._scope(func)
        return scope is not None and name in scope.defs

    def _trace(
        self, scope: Scope, expr: ast.AST, depth: int = _TRACE_DEPTH, acc: _Trace | None = None
    ) -> _Trace:
        """Every node `expr` is computed from: local definitions (scope.closure), the returns of own functions it
        calls, the arguments callers bind to parameters it reads, and `self.` attributes' assignments."""
        acc = acc if acc is not None else _Trace()
        nodes = scope.closure(expr, mode="all")
        # in-place mutators are not definitions: `mask.masked_fill_(valid, 0.0)`, `m.tril_()` shape the value too
        names = {n.id for n in nodes if isinstance(n, ast.Name)}
        for n in scope.nodes:
            if (
                isinstance(n, ast.Call)
                and isinstance(n.func, ast.Attribute)
                and n.func.attr.endswith("_")
                and isinstance(n.func.value, ast.Name)
                and n.func.value.id in names
            ):
                nodes.append(n)
                for a in [*n.args, *(k.value for k in n.keywords)]:
                    nodes.extend(scope.closure(a, mode="all"))
        acc.nodes.extend((scope, n) for n in nodes)
        if depth <= 0:
            return acc
        func = self.func_of_node.get(id(scope.node))
        defined = set(scope.defs)
        meta = {id(n.value) for n in nodes if isinstance(n, ast.Attribute) and n.attr in _META_ATTRS}
        meta |= {
            id(a)
            for n in nodes
            if isinstance(n, ast.Call) and call_name(n) in {"len", "size"}
            for a in n.args
        }
        meta |= {
            id(n.func.value)
            for n in nodes
            if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Attribute)
            and n.func.attr in {"size", "dim"}
        }
        called = {id(n.func) for n in nodes if isinstance(n, ast.Call)}
        for n in nodes:
            if id(n) in meta:
                continue  # `x.device`, `x.shape`, `x.size(1)`: the mask takes no values from x
            if isinstance(n, ast.Call):
                site = self.prog.site_of(n)
                for callee in site.callees if site is not None else ():
                    cs = self._scope(callee)
                    if cs is None:
                        continue
                    for r in ast.walk(callee.node):
                        if isinstance(r, ast.Return) and r.value is not None:
                            self._trace(cs, r.value, depth - 1, acc)
            elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and func is not None:
                if n.id not in func.params and n.id not in defined and func.parent is not None:
                    ps = self._scope(func.parent)
                    if ps is not None:  # a free variable of a nested function: read it in the enclosing one
                        self._trace(ps, ast.Name(id=n.id, ctx=ast.Load()), depth - 1, acc)
                    continue
                if n.id in func.params and n.id not in defined and n.id != (func.params[:1] or [""])[0]:
                    bound = [(s, b[n.id]) for s, b in self._callers(func) if n.id in b]
                    default = _param_default(func.node, n.id)
                    if default is not None:
                        acc.nodes.append((scope, default))
                    if not bound and default is None:
                        acc.unresolved.append(f"parameter `{n.id}` of `{func.qualname}` is never bound")
                    for s, a in bound:
                        cs = self._scope(s.caller)
                        if cs is not None:
                            self._trace(cs, a, depth - 1, acc)
            elif isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Load) and func is not None:
                key = var_key(n)
                if key is None or key in defined or func.cls is None or not func.params:
                    continue
                if not (isinstance(n.value, ast.Name) and n.value.id == func.params[0]):
                    continue
                if id(n) in called or func.cls.method(n.attr) is not None:
                    continue  # `self.helper(...)`: a method, followed through its returns above
                sources = self._attr_sources(func, n.attr)
                if not sources:
                    acc.unresolved.append(f"`self.{n.attr}` is never assigned in the class")
                for value, owner in sources:
                    cs = self._scope(owner)
                    if cs is not None:
                        self._trace(cs, value, depth - 1, acc)
        return acc

    def _attr_sources(self, func: Func, attr: str) -> list[tuple[ast.AST, Func]]:
        """`self.attr = v` anywhere in the class (and its bases), plus `self.register_buffer("attr", v)`."""
        cls = func.cls
        if cls is None:
            return []
        out = list(cls.attr_exprs(attr))
        for c in cls.mro():
            for m in c.methods.values():
                for n in ast.walk(m.node):
                    if (
                        isinstance(n, ast.Call)
                        and call_name(n) == "register_buffer"
                        and len(n.args) >= 2
                        and isinstance(n.args[0], ast.Constant)
                        and n.args[0].value == attr
                    ):
                        out.append((n.args[1], m))
        return out

    def _causal_structure(self, trace: _Trace) -> ast.AST | None:
        """A triangular op or an ordering comparison of positions in what the mask is built from."""
        for _, n in trace.nodes:
            if isinstance(n, ast.Call) and call_name(n) in _TRI_CALLS:
                return n
            if isinstance(n, ast.Compare) and any(isinstance(op, _ORDER_OPS) for op in n.ops):
                operands = [n.left, *n.comparators]
                if all(not isinstance(o, ast.Constant) for o in operands):
                    return n
        return None

    def _memory_rows(self, trace: _Trace) -> tuple[Scope, ast.AST] | None:
        """`mask[:M, M:] = allowed` / `mask[:M, :] = allowed`: leading rows (memory/global tokens) opened to every
        later column. In an SDPA mask, allowed is True for boolean masks and 0 for additive (-inf) masks."""
        additive = any(_is_neg_inf(n) for _, n in trace.nodes)
        keys: dict[int, set[str]] = {}
        scopes: dict[int, Scope] = {}
        for sc, n in trace.nodes:
            k = var_key(n) if isinstance(n, (ast.Name, ast.Attribute)) else None
            if k:
                keys.setdefault(id(sc), set()).add(k)
                scopes[id(sc)] = sc
        for sid, sc in scopes.items():
            for stmt in sc.nodes:
                if not isinstance(stmt, ast.Assign) or len(stmt.targets) != 1:
                    continue
                tgt = stmt.targets[0]
                if not isinstance(tgt, ast.Subscript) or store_root(tgt) not in keys[sid]:
                    continue
                parts = index_parts(tgt)
                if len(parts) < 2:
                    continue
                rows, cols = parts[-2], parts[-1]
                if not (
                    isinstance(rows, ast.Slice) and rows.upper is not None and _is_zero_or_none(rows.lower)
                ):
                    continue
                if not (isinstance(cols, ast.Slice) and cols.upper is None):
                    continue
                if _allowed_value(stmt.value, additive):
                    return sc, stmt
        return None

    # -- attention ------------------------------------------------------------------------------------------------
    def _sdpa(self, site: CallSite) -> None:
        call = site.node
        func = site.caller
        scope = self._scope(func)
        flag_expr = self._kw(call, "is_causal", 5)
        mask = self._kw(call, "attn_mask", 3) or self._kw(call, "mask")
        if isinstance(mask, ast.Constant) and mask.value is None:
            mask = None
        if isinstance(mask, ast.Constant) and mask.value == "causal":
            return  # MLX: mask="causal"
        if isinstance(mask, ast.Name) and mask.id == "<**>":
            self._add(
                "attention",
                site,
                call,
                call,
                Verdict.WARN,
                f"in `{func.qualname}` attention `{_short(call)}`: its attn_mask comes from a `**` dict that "
                "cannot be read statically; causality not established",
            )
            return
        if (
            isinstance(mask, ast.IfExp)
            and flag_expr is None
            and {type(mask.body), type(mask.orelse)} == {ast.Constant}
            and {mask.body.value, mask.orelse.value} == {"causal", None}  # type: ignore[attr-defined]
        ):
            # MLX `mask='causal' if c else None` is `is_causal=c`
            test = mask.test if mask.body.value == "causal" else ast.UnaryOp(op=ast.Not(), operand=mask.test)  # type: ignore[attr-defined]
            ast.copy_location(test, mask.test)
            flag_expr, mask = test, None
        why = ""
        if flag_expr is not None:
            flag, why = self._flag(func, flag_expr)
            if flag == "wrapper":
                return
            if flag is True:
                return
            if flag is None:
                if mask is None:
                    self._add(
                        "attention",
                        site,
                        call,
                        call,
                        Verdict.WARN,
                        f"in `{func.qualname}` attention `{_short(call)}`: is_causal cannot be decided ({why}) "
                        "and there is no attn_mask",
                    )
                    return
        keys = self._keys_kind(scope, call) if scope is not None else "seq"
        if keys in ("memory", "cache"):
            return  # learned parameters (persistent memory) or a KV cache of earlier positions, not later tokens
        if keys in ("state", "cross") and mask is None:
            where = (
                "keys carried over from an earlier forward call (a `self.` tensor assigned from computed values)"
                if keys == "state"
                else "keys from other inputs than the queries (cross-attention)"
            )
            self._add(
                "attention",
                site,
                call,
                call,
                Verdict.WARN,
                f"in `{func.qualname}` attention `{_short(call)}` runs with is_causal false over {where}: "
                "causal only if what those keys hold lies strictly before every scored query position, which "
                "is decided by the caller and was not established",
            )
            return
        if mask is None:
            self._add(
                "attention",
                site,
                call,
                call,
                Verdict.FAIL,
                f"in `{func.qualname}` attention `{_short(call)}` runs with is_causal false"
                + (f" ({why})" if why else "")
                + " and no attn_mask: "
                "every position attends to the scored token and all later tokens",
            )
            return
        self._judge_mask(site, mask, f"attention `{_short(call)}` in `{func.qualname}`")

    def _judge_mask(self, site: CallSite, mask: ast.AST, what: str) -> None:
        scope = self._scope(site.caller)
        if scope is None:
            self._add("attention", site, site.node, site.node, Verdict.WARN, f"{what}: mask not analysable")
            return
        trace = self._trace(scope, mask)
        mem = self._memory_rows(trace)
        if mem is not None:
            sc, stmt = mem
            self._add(
                "attention",
                sc.unit,
                stmt,
                site.node,
                Verdict.FAIL,
                f"{what}: the mask opens its leading rows to every later position (`{_short(stmt)}`): "
                "memory/global tokens read the whole sequence, including the scored token and later ones, "
                "and every position reads them back",
                related=[site.unit.location(site.node)],
            )
            return
        tri = self._causal_structure(trace)
        if tri is not None:
            return
        if trace.unresolved:
            self._add(
                "attention",
                site,
                site.node,
                site.node,
                Verdict.WARN,
                f"{what} uses attn_mask `{_short(mask)}` whose construction cannot be followed "
                f"({trace.unresolved[0]}); causality not established",
            )
            return
        self._add(
            "attention",
            site,
            site.node,
            site.node,
            Verdict.FAIL,
            f"{what} uses attn_mask `{_short(mask)}` built without any triangular/ordering structure "
            "(no tril/triu, no position comparison): positions attend to later tokens",
        )

    def _keys_kind(self, scope: Scope, call: ast.Call) -> str:
        """Where the keys come from, relative to the queries:
        "seq" (the same inputs as the queries: self-attention over the sequence), "cross" (other inputs than
        the queries: cross-attention, whose alignment with the scored positions is decided by the caller),
        "memory" (learned parameters or constants only: they hold no token), "state" (`self.` tensors assigned
        from computed values: keys carried over from an earlier forward call)."""
        q = self._kw(call, "query", 0)
        k = self._kw(call, "key", 1)
        params = set(scope.params[1:] if scope.is_method else scope.params)
        if q is None or k is None:
            return "seq"
        me = scope.params[0] if scope.is_method and scope.params else None

        def reads(expr: ast.AST) -> tuple[set[str], set[str], bool]:
            """(parameters read, `self.` attributes read, reads anything but constructors/constants)."""
            names: set[str] = set()
            attrs: set[str] = set()
            other = False
            nodes = _value_nodes(scope, expr, me)
            # `torch.zeros(...)`, `F.pad(...)`: a module or function name is not a value the keys are built from
            namespaces = {id(n.value) for n in nodes if isinstance(n, ast.Attribute)}  # `torch.float32`
            namespaces |= {id(n.func) for n in nodes if isinstance(n, ast.Call)}
            for n in nodes:
                if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):
                    if n.id in params:
                        names.add(n.id)
                    elif n.id != me and n.id not in scope.defs and id(n) not in namespaces:
                        other = True  # a global or free variable: may hold anything
                if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == me:
                    attrs.add(n.attr)
            return names, attrs, other

        if (
            _strip_layout(k) is not None
            and isinstance(_strip_layout(k), ast.Name)
            and _strip_layout(k).id in params
        ):
            return "seq"  # an attention wrapper `f(q, k, v)`: its callers pass self-attention projections
        kp, kattrs, other = reads(k)
        if kp:
            qp, _, _ = reads(q)
            if qp and self._cache_append(scope, k, qp, reads):
                return "cache"
            return "cross" if qp and not (qp & kp) else "seq"
        if not params and not kattrs:
            return "seq" if other else "memory"  # top-level code: constant probes build keys from zeros/randn
        func = self.func_of_node.get(id(scope.node))
        for attr in kattrs:
            for value, _owner in self._attr_sources(func, attr) if func is not None else ():
                if not (isinstance(value, ast.Call) and call_name(value) in _PARAM_CTORS):
                    if any(isinstance(x, ast.Call) and call_name(x) in _PARAM_CTORS for x in ast.walk(value)):
                        continue
                    return "state"
        return "memory"

    def _cache_append(self, scope: Scope, k: ast.AST, qp: set[str], reads) -> bool:  # noqa: ANN001
        """`torch.cat((cache_k, k_new), dim)`: the keys are a KV cache from another argument with the new keys
        (projected from the queries' input) appended last: incremental decoding, one query at the newest position."""
        for n in scope.closure(k, mode="value"):
            if isinstance(n, ast.Call) and call_name(n) in {"cat", "concatenate"} and n.args:
                seq = n.args[0]
                if isinstance(seq, (ast.Tuple, ast.List)) and len(seq.elts) == 2:
                    old, new = (reads(e)[0] for e in seq.elts)
                    if old and not (old & qp) and (new & qp):
                        return True
        return False

    def _flash(self, site: CallSite) -> None:
        call = site.node
        func = site.caller
        flag_expr = self._kw(call, "causal")
        if flag_expr is None:
            self._add(
                "attention",
                site,
                call,
                call,
                Verdict.FAIL,
                f"in `{func.qualname}` `{_short(call)}` passes no `causal` (the flash-attention default is "
                "causal=False): every position attends to later tokens",
            )
            return
        flag, why = self._flag(func, flag_expr)
        if flag is True or flag == "wrapper":
            return
        if flag is None:
            self._add(
                "attention",
                site,
                call,
                call,
                Verdict.WARN,
                f"in `{func.qualname}` `{_short(call)}`: causal cannot be decided ({why})",
            )
            return
        self._add(
            "attention",
            site,
            call,
            call,
            Verdict.FAIL,
            f"in `{func.qualname}` `{_short(call)}` runs with causal=False{f' ({why})' if why else ''}: "
            "every position attends to the scored token and later tokens",
        )

    def _flex(self, site: CallSite) -> None:
        call = site.node
        bm = self._kw(call, "block_mask", 4)
        if bm is None or (isinstance(bm, ast.Constant) and bm.value is None):
            self._add(
                "attention",
                site,
                call,
                call,
                Verdict.FAIL,
                f"in `{site.caller.qualname}` `{_short(call)}` has no block_mask: flex attention is then "
                "full (bidirectional) attention",
            )
            return
        scope = self._scope(site.caller)
        if scope is None:
            return
        trace = self._trace(scope, bm)
        # the mask_mod is a function passed by name: its body holds the ordering comparison
        for _, n in list(trace.nodes):
            if isinstance(n, ast.Call) and call_name(n) == "create_block_mask" and n.args:
                fn = n.args[0]
                if isinstance(fn, ast.Lambda):
                    trace.nodes.extend((scope, x) for x in ast.walk(fn.body))
                else:
                    s = self.prog.site_of(n)
                    f = s.caller if s is not None else None
                    for g in self.prog.funcs:
                        if (
                            f is not None
                            and isinstance(fn, ast.Name)
                            and g.name == fn.id
                            and g.unit is f.unit
                        ):
                            trace.nodes.extend((scope, x) for x in ast.walk(g.node))
        if self._causal_structure(trace) is None:
            verdict = Verdict.WARN if trace.unresolved else Verdict.FAIL
            self._add(
                "attention",
                site,
                call,
                call,
                verdict,
                f"in `{site.caller.qualname}` flex attention `{_short(call)}`: its block mask has no ordering "
                "comparison of query and key positions"
                + (f" ({trace.unresolved[0]})" if trace.unresolved else ""),
            )

    # -- convolutions ---------------------------------------------------------------------------------------------
    def _uses(self, site: CallSite) -> list[tuple[ast.Call, Func]]:
        """Where a module constructed at `site` is called: `self.X = Conv1d(...)` -> `self.X(...)` in the class's
        methods; `c = Conv1d(...)` -> `c(...)` in the same function."""
        func = site.caller
        target = None
        for n in ast.walk(func.node):
            if isinstance(n, ast.Assign) and n.value is site.node and len(n.targets) == 1:
                target = n.targets[0]
        out: list[tuple[ast.Call, Func]] = []
        if isinstance(target, ast.Attribute) and func.cls is not None:
            for c in [func.cls, *self._subclasses(func.cls)]:
                for m in self.prog.funcs:
                    if m.cls is not c or not m.params:
                        continue
                    me = m.params[0]
                    for n in ast.walk(m.node):
                        if (
                            isinstance(n, ast.Call)
                            and isinstance(n.func, ast.Attribute)
                            and n.func.attr == target.attr
                            and isinstance(n.func.value, ast.Name)
                            and n.func.value.id == me
                        ):
                            out.append((n, m))
        elif isinstance(target, ast.Name):
            for n in ast.walk(func.node):
                if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == target.id:
                    out.append((n, func))
        return out

    def _conv_attrs(self) -> frozenset[str]:
        """Names of `self.` attributes built from a torch Conv1d (their output is channels-first)."""
        if self._convs is None:
            names: set[str] = set()
            for cls in self.prog.classes:
                for attr, sources in cls.self_attrs.items():
                    for value, _ in sources:
                        site = self.prog.site_of(value) if isinstance(value, ast.Call) else None
                        if site is not None and (site.ext or "").endswith("Conv1d"):
                            names.add(attr)
            self._convs = frozenset(names)
        return self._convs

    def _subclasses(self, cls: object) -> list[object]:
        return [c for c in self.prog.classes if cls in c.mro() and c is not cls]

    def _conv_module(self, site: CallSite) -> None:
        call = site.node
        func = site.caller
        k = self._const(func, self._kw(call, "kernel_size", 2))
        if _is_one(k):
            return
        stride = self._kw(call, "stride", 3)
        if stride is not None and not _is_one(self._const(func, stride)):
            return  # a strided (patching / downsampling) conv: its outputs are not aligned with positions
        pad_expr = self._kw(call, "padding", 4)
        scope = self._scope(func)
        if isinstance(pad_expr, ast.Name) and scope is not None and len(scope.defs.get(pad_expr.id, [])) == 1:
            pad_expr = scope.defs[pad_expr.id][0]  # `reach = d * (k - 1) // 2; Conv1d(..., padding=reach)`
        dil = self._const(func, self._kw(call, "dilation", 5))
        pad_kind = _padding_kind(
            self.prog.eval_const(func.unit, pad_expr, func) if pad_expr is not None else 0,
            pad_expr,
            k,
            1 if dil is None else dil,
        )
        uses = self._uses(site)
        what = f"`{_short(call)}` (in `{func.qualname}`)"
        if not uses:
            if pad_kind in ("centred", "same"):
                self._add(
                    "conv",
                    site,
                    call,
                    call,
                    Verdict.WARN,
                    f"convolution {what} has {pad_kind} padding and its use could not be found: if it runs "
                    "over the sequence axis it reads later tokens",
                )
            return
        for use, ufunc in uses:
            self._judge_conv_use(site, call, use, ufunc, pad_kind, what)

    def _judge_conv_use(
        self, site: CallSite, call: ast.Call, use: ast.Call, ufunc: Func, pad_kind: str, what: str
    ) -> None:
        uscope = self._scope(ufunc)
        if uscope is None or not use.args:
            return
        inp = use.args[0]
        axis = _seq_axis_last(uscope, inp, self._conv_attrs())
        input_pad = _input_pad(uscope, inp)
        trim = _output_trim(uscope, use)
        related = [ufunc.unit.location(use)]
        if axis == "channel":
            return  # mixes features of one position: causal whatever its padding
        if input_pad == "left" and pad_kind == "zero":
            return  # causal conv: left padding, no padding of its own
        if pad_kind == "full" and trim == "right":
            return  # causal conv: full padding, the last outputs sliced off
        if pad_kind == "zero" and input_pad is None:
            return  # a valid conv: its alignment is decided where its output is re-padded; not a "same" conv
        bad = None
        if pad_kind in ("same", "centred"):
            bad = f"{pad_kind} padding (output t reads inputs after t)"
        elif input_pad in ("symmetric", "right"):
            bad = f"{input_pad} padding of its input (output t reads inputs after t)"
        elif pad_kind == "full" and trim == "left":
            bad = "full padding with the first outputs cut off (output t reads inputs up to t + k - 1)"
        if bad is None:
            if axis == "seq":
                self._add(
                    "conv",
                    site,
                    call,
                    use,
                    Verdict.WARN,
                    f"convolution {what} over the sequence axis: its padding/trimming could not be decided "
                    f"(padding {pad_kind}, output trim {trim or 'none found'})",
                    related,
                )
            return
        if axis != "seq":
            self._add(
                "conv",
                site,
                call,
                use,
                Verdict.WARN,
                f"convolution {what} has {bad}; the axis it runs over could not be told from its input "
                f"`{_short(inp)}` (sequence axis: not causal; channel axis: legal)",
                related,
            )
            return
        self._add(
            "conv",
            site,
            call,
            use,
            Verdict.FAIL,
            f"convolution {what} runs over the sequence axis (input `{_short(inp)}`) with {bad}: the "
            "scored position sees the scored token and later tokens",
            related,
        )

    def _conv_functional(self, site: CallSite) -> None:
        call = site.node
        func = site.caller
        scope = self._scope(func)
        if scope is None or not call.args:
            return
        pad_expr = self._kw(call, "padding", 4)
        pval = self.prog.eval_const(func.unit, pad_expr, func) if pad_expr is not None else 0
        pad_kind = "same" if pval == "same" else ("zero" if pval == 0 else "unknown")
        inp = call.args[0]
        input_pad = _input_pad(scope, inp)
        if pad_kind == "zero" and input_pad in (None, "left"):
            return
        if pad_kind == "unknown" and input_pad is None:
            return  # kernel size unknown (a weight tensor): a constant padding may be a causal full padding
        bad = "'same' padding" if pad_kind == "same" else f"{input_pad} padding of its input"
        axis = _seq_axis_last(scope, inp, self._conv_attrs())
        if axis == "channel":
            return
        verdict = Verdict.FAIL if axis == "seq" else Verdict.WARN
        self._add(
            "conv",
            site,
            call,
            call,
            verdict,
            f"in `{func.qualname}` convolution `{_short(call)}` has {bad}"
            + (": output t reads inputs after t" if axis == "seq" else "; its axis could not be told"),
        )

    # -- recurrences and token mixing -----------------------------------------------------------------------------
    def _rnn(self, site: CallSite) -> None:
        call = site.node
        bi = self._kw(call, "bidirectional", 7)
        if bi is None:
            return
        flag, why = self._flag(site.caller, bi)
        if flag is False or flag == "wrapper":
            return
        uses = self._uses(site)
        use = uses[0][0] if uses else call
        related = [u[1].unit.location(u[0]) for u in uses[:3]]
        if flag is None:
            self._add(
                "rnn",
                site,
                call,
                use,
                Verdict.WARN,
                f"recurrence `{_short(call)}`: bidirectional cannot be decided ({why})",
                related,
            )
            return
        self._add(
            "rnn",
            site,
            call,
            use,
            Verdict.FAIL if uses else Verdict.WARN,
            f"bidirectional recurrence `{_short(call)}` (in `{site.caller.qualname}`): its backward direction "
            "carries later tokens into every position" + ("" if uses else " (its use was not found)"),
            related,
        )

    def _linear(self, site: CallSite) -> None:
        for use, ufunc in self._uses(site):
            uscope = self._scope(ufunc)
            if uscope is None or not use.args:
                continue
            if _seq_axis_last(uscope, use.args[0], self._conv_attrs()) != "seq":
                continue
            self._add(
                "mixer",
                site,
                site.node,
                use,
                Verdict.FAIL,
                f"dense token mixing: `{_short(site.node)}` is applied to `{_short(use.args[0])}`, a view with "
                "the sequence axis last, with no causal mask on its weight: every position mixes in later "
                "tokens",
                [ufunc.unit.location(use)],
            )

    # -- whole-sequence summaries broadcast back -----------------------------------------------------------------
    def _summaries(self) -> None:
        for scope in self.facts.scopes:
            if not isinstance(scope.node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            tensors, lengths = _seq_shapes(scope)
            if lengths:
                self._scans(scope, lengths)
            self._reductions(scope, tensors)

    def _scans(self, scope: Scope, lengths: set[str]) -> None:
        """`for t in range(T)` over the sequence axis carrying a state (`s = f(s, h[:, t])`) whose FINAL value is
        returned alone or broadcast back to the positions: every position then reads the whole sequence."""
        for loop in scope.nodes:
            if not (
                isinstance(loop, ast.For)
                and isinstance(loop.target, ast.Name)
                and isinstance(loop.iter, ast.Call)
                and 1 <= len(loop.iter.args) <= 3  # range(T), also aliased: what matters is the bound is T
                and _names_in(loop.iter.args[-1] if len(loop.iter.args) < 3 else loop.iter.args[1]) & lengths
            ):
                continue
            var = loop.target.id
            steps = [
                s
                for s in ast.walk(loop)
                if isinstance(s, ast.Subscript)
                and isinstance(s.slice, ast.Tuple)
                and len(s.slice.elts) >= 2
                and isinstance(s.slice.elts[0], ast.Slice)
                and isinstance(s.slice.elts[1], ast.Name)
                and s.slice.elts[1].id == var
            ]
            if not steps:
                continue
            per_step = any(
                (isinstance(s, ast.Call) and call_name(s) in ("append", "extend"))
                or (
                    isinstance(s, (ast.Assign, ast.AugAssign))
                    and any(
                        isinstance(t, ast.Subscript)
                        for t in getattr(s, "targets", [getattr(s, "target", None)])
                    )
                )
                for s in ast.walk(loop)
            )
            carried = {
                t.id
                for s in ast.walk(loop)
                if isinstance(s, ast.Assign)
                for t in s.targets
                if isinstance(t, ast.Name) and t.id in _names_in(s.value) and t.id != var
            }
            if not carried:
                continue
            after = _end(loop)
            ret = next(
                (
                    r
                    for r in scope.nodes
                    if isinstance(r, ast.Return)
                    and _position(r) > after
                    and isinstance(r.value, ast.Name)
                    and r.value.id in carried
                ),
                None,
            )
            derived = _derived(scope, carried, after)
            back = _broadcast_back(scope, derived, None, after)
            if ret is None and back is None:
                continue
            if ret is not None and per_step and back is None:
                continue  # per-step outputs are the result; a returned final state is a carry (streaming)
            where = back if back is not None else ret
            what = (
                f"broadcast back to every position by `{_short(back)}`"
                if back is not None
                else f"returned alone by `{scope.name}` (`{_short(ret)}`): a summary of the whole sequence"
            )
            self._add(
                "scan",
                scope.unit,
                loop,
                where,  # type: ignore[arg-type]
                Verdict.FAIL,
                f"scan over the sequence axis `{_short(loop.iter)}` (in `{scope.name}`) whose FINAL state "
                f"({', '.join(sorted(carried))}) is {what}: a position's prediction then depends on the tokens "
                "after it",
                [scope.unit.location(where)] if where is not None else [],
            )

    def _reductions(self, scope: Scope, tensors: set[str]) -> None:
        """A reduction over the sequence axis (`x.mean(dim=1)` of a (B, T, D) x) whose result is broadcast back to
        the positions (`keepdim=True`, `.unsqueeze(1)`, `[:, None]`, `.expand`). Axis unknown: WARN."""
        for n in scope.nodes:
            if not (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in _REDUCE):
                continue
            recv: ast.AST | None = n.func.value
            torch_form = isinstance(recv, ast.Name) and recv.id == "torch"
            if torch_form:
                recv = n.args[0] if n.args else None
            dim = self._kw(n, "dim", 1 if torch_form else 0)
            d = _int(dim) if dim is not None else None
            if recv is None or d is None or isinstance(recv, ast.Subscript):
                continue  # no axis, or a slice of the sequence (a prefix / window) is reduced
            roots = _names_in(recv)
            if d in (1, -2) and roots & tensors:
                axis = "seq"
            elif d in (-1, 2):
                axis = _seq_axis_last(scope, recv, self._conv_attrs())
                if axis != "seq":
                    continue
            elif (
                d in (1, -2)
                and scope.is_method
                and scope.name in ("forward", "__call__")
                and roots & _derived(scope, set(scope.params[1:]), (0, 0))
            ):
                # an activation of a module's forward (built from its inputs, not from its own weights): (B, T, ...)
                # as often as not, but its layout is not established
                axis = "unknown"
            else:
                continue
            keep = self._kw(n, "keepdim")
            after = _end(n)
            if isinstance(keep, ast.Constant) and keep.value is True:
                back: ast.AST | None = n
            else:
                assigned = {
                    t.id
                    for a in scope.nodes
                    if isinstance(a, ast.Assign) and any(m is n for m in ast.walk(a.value))
                    for t in a.targets
                    if isinstance(t, ast.Name)
                }
                back = _broadcast_back(scope, _derived(scope, assigned, after), n, _position(n))
            if back is None:
                continue
            if axis == "unknown":
                if not (isinstance(keep, ast.Constant) and keep.value is True) and back is n:
                    continue
                if isinstance(keep, ast.Constant) and keep.value is True:
                    continue  # `x.mean(dim=1, keepdim=True)` of an unknown layout: a feature norm as often as not
            self._add(
                "reduction",
                scope.unit,
                n,
                back,
                Verdict.FAIL if axis == "seq" else Verdict.WARN,
                (
                    f"whole-sequence reduction `{_short(n)}` (in `{scope.name}`) broadcast back to every position "
                    f"by `{_short(back)}`: each position then reads the tokens after it"
                    if axis == "seq"
                    else f"reduction `{_short(n)}` over axis {d} (in `{scope.name}`) broadcast back by "
                    f"`{_short(back)}`: whether axis {d} is the sequence could not be established"
                ),
                [scope.unit.location(back)],
            )

    def _const(self, func: Func, expr: ast.AST | None) -> object:
        if expr is None:
            return None
        v = self.prog.eval_const(func.unit, expr, func)
        return None if v is UNKNOWN else v


# ---------------------------------------------------------------------------------------------------------------
def _self_attr_of(fexpr: ast.AST, me: str, scope: Scope | None) -> str | None:
    """The attribute a callee expression reads: `self.X`, `self.X[i]`, or a loop variable over `self.X`."""
    while isinstance(fexpr, ast.Subscript):
        fexpr = fexpr.value
    if isinstance(fexpr, ast.Attribute) and isinstance(fexpr.value, ast.Name) and fexpr.value.id == me:
        return fexpr.attr
    if isinstance(fexpr, ast.Name) and scope is not None:
        for d in scope.defs.get(fexpr.id, []):
            for _ in range(4):  # `for b in self.blocks`, `enumerate(self.blocks)`, `self.blocks[i]`
                if isinstance(d, ast.Subscript):
                    d = d.value
                elif isinstance(d, ast.Call) and call_name(d) in {
                    "enumerate",
                    "zip",
                    "reversed",
                    "iter",
                    "list",
                }:
                    if not d.args:
                        break
                    d = d.args[0]
                else:
                    break
            if isinstance(d, ast.Attribute) and isinstance(d.value, ast.Name) and d.value.id == me:
                return d.attr
    return None


def _param_default(fn: ast.AST, name: str) -> ast.AST | None:
    a = getattr(fn, "args", None)
    if a is None:
        return None
    pos = [*a.posonlyargs, *a.args]
    for p, d in zip(pos[len(pos) - len(a.defaults) :], a.defaults):
        if p.arg == name:
            return d
    for p, d in zip(a.kwonlyargs, a.kw_defaults):
        if p.arg == name:
            return d
    return None


def _scored_names(scope: Scope) -> set[str]:
    """Variables read as the scored token: the index of `gather` (function or method form) and the label of
    `cross_entropy` / `nll_loss`, unshifted (a bare name, possibly with `[..., None]` / `.unsqueeze(-1)`)."""
    out: set[str] = set()
    for n in scope.nodes:
        if not isinstance(n, ast.Call):
            continue
        name = call_name(n)
        idx: ast.AST | None = None
        if name == "gather":
            fn_form = isinstance(n.func, ast.Name) or (
                isinstance(n.func, ast.Attribute)
                and isinstance(n.func.value, ast.Name)
                and n.func.value.id == "torch"
            )
            idx = next((k.value for k in n.keywords if k.arg == "index"), None)
            if idx is None:
                pos = 2 if fn_form else 1
                idx = n.args[pos] if len(n.args) > pos else None
        elif name in {"cross_entropy", "nll_loss"}:
            idx = next((k.value for k in n.keywords if k.arg == "target"), None)
            if idx is None and len(n.args) > 1:
                idx = n.args[1]
        while idx is not None and not isinstance(idx, ast.Name):
            if isinstance(idx, ast.Subscript) and not any(
                isinstance(p, ast.Slice) and (p.lower is not None or p.upper is not None)
                for p in index_parts(idx)
            ):
                idx = idx.value  # `x0[..., None]`, `x[mask]`: the same positions (a shifted slice is not)
            elif isinstance(idx, ast.Call) and call_name(idx) in {
                "unsqueeze",
                "long",
                "view",
                "reshape",
                "flatten",
            }:
                idx = idx.func.value if isinstance(idx.func, ast.Attribute) else None
            else:
                idx = None
        if isinstance(idx, ast.Name):
            out.add(idx.id)
    return out


def _value_nodes(scope: Scope, expr: ast.AST, me: str | None = None, limit: int = 20000) -> list[ast.AST]:
    """Like `scope.closure(expr, mode="value")` but never through metadata: `.to(k.device, k.dtype)`, `x.size(1)`,
    `x.shape` take no values from k or x (a KV state moved to the device of the new keys is not the new keys)."""
    out: list[ast.AST] = []
    seen: set[str] = set()
    stack: list[ast.AST] = [expr]
    while stack and len(out) < limit:
        n = stack.pop()
        out.append(n)
        if isinstance(n, ast.Attribute) and n.attr in _META_ATTRS:
            continue
        if isinstance(n, ast.Call):
            name = call_name(n)
            if name in {"size", "dim", "numel", "len"}:
                continue
            if name in {"to", "type", "type_as", "new_zeros", "new_ones", "new_empty"} and isinstance(
                n.func, ast.Attribute
            ):
                stack.append(n.func.value)
                continue
        key = var_key(n) if isinstance(getattr(n, "ctx", None), ast.Load) else None
        if key is not None and me is not None and key.startswith(me + "."):
            continue  # object state (`self._prev_k`): the caller asks where the attribute is assigned
        if key is not None and key not in seen:
            seen.add(key)
            stack.extend(scope.defs.get(key, ()))
        if isinstance(n, ast.IfExp):
            stack.extend((n.body, n.orelse))
            continue
        if isinstance(n, ast.Subscript):
            stack.append(n.value)
            continue
        stack.extend(
            c for c in ast.iter_child_nodes(n) if not isinstance(c, (ast.expr_context, ast.operator))
        )
    return out


def _with_sources(scope: Scope, names: set[str]) -> set[str]:
    """The scored variables plus the variables their values come from (`x0_safe = x0.masked_fill(...)` -> x0)."""
    out = set(names)
    for name in names:
        for d in scope.defs.get(name, []):
            out |= {n.id for n in scope.closure(d, mode="value") if isinstance(n, ast.Name)}
    return out


def _cloned_from(scope: Scope, var: ast.Name) -> ast.AST | None:
    """`noisy = tokens.clone()` -> `tokens` (the tensor a subscript store corrupts a copy of)."""
    for d in scope.defs.get(var.id, []):
        if (
            isinstance(d, ast.Call)
            and call_name(d) in {"clone", "copy", "detach"}
            and isinstance(d.func, ast.Attribute)
        ):
            return d.func.value
    return None


def _scalar_like(n: ast.AST) -> bool:
    if isinstance(n, ast.Constant) and isinstance(n.value, (int, float)) and not isinstance(n.value, bool):
        return True
    if isinstance(n, ast.UnaryOp) and isinstance(n.operand, ast.Constant):
        return True
    return isinstance(n, (ast.Name, ast.Attribute)) and not isinstance(n, ast.Subscript)


def _is_neg_inf(n: ast.AST) -> bool:
    if (
        isinstance(n, ast.Constant)
        and isinstance(n.value, str)
        and n.value.strip().lower() in {"-inf", "-infinity"}
    ):
        return True
    if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
        o = n.operand
        if isinstance(o, ast.Attribute) and o.attr == "inf":
            return True
        if isinstance(o, ast.Constant) and isinstance(o.value, (int, float)) and o.value >= 1e4:
            return True
    return (
        isinstance(n, ast.Attribute) and n.attr == "min" and call_name(getattr(n, "value", None)) == "finfo"
    )


def _is_zero_or_none(n: ast.AST | None) -> bool:
    return n is None or (isinstance(n, ast.Constant) and n.value == 0)


def _allowed_value(v: ast.AST, additive: bool) -> bool:
    if not isinstance(v, ast.Constant):
        return False
    if additive:
        return v.value == 0 and not isinstance(v.value, bool)
    return v.value is True or (v.value == 1 and not isinstance(v.value, float))


def _is_one(k: object) -> bool:
    if isinstance(k, (tuple, list)) and len(k) == 1:
        k = k[0]
    return k == 1 and not isinstance(k, bool)


def _padding_kind(value: object, expr: ast.AST | None, k: object, dil: object) -> str:
    """ "zero" | "same" | "centred" (0 < p < d(k-1)) | "full" (p = d(k-1)) | "unknown"."""
    if isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]
    if isinstance(value, str):
        return "same" if value == "same" else ("zero" if value == "valid" else "unknown")
    if isinstance(value, int) and not isinstance(value, bool):
        if value == 0:
            return "zero"
        if isinstance(k, int) and isinstance(dil, int):
            full = dil * (k - 1)
            return "full" if value == full else ("centred" if value < full else "unknown")
    if expr is None:
        return "unknown"
    # not foldable: read the shape of the expression (k // 2, d * (k - 1) // 2 are centred; k - 1 is full)
    for n in ast.walk(expr):
        if isinstance(n, ast.BinOp) and isinstance(n.op, (ast.FloorDiv, ast.Div, ast.RShift)):
            if isinstance(n.right, ast.Constant) and n.right.value in (2, 1):
                return "centred"
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Sub) and isinstance(expr.right, ast.Constant):
        return "full" if expr.right.value == 1 else "unknown"
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Mult):
        if any(
            isinstance(s, ast.BinOp)
            and isinstance(s.op, ast.Sub)
            and isinstance(s.right, ast.Constant)
            and s.right.value == 1
            for s in (expr.left, expr.right)
        ):
            return "full"
    return "unknown"


def _int(n: ast.AST) -> int | None:
    if isinstance(n, ast.Constant) and isinstance(n.value, int) and not isinstance(n.value, bool):
        return n.value
    if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
        v = _int(n.operand)
        return -v if v is not None else None
    return None


def _seq_axis_last(scope: Scope, inp: ast.AST, conv_attrs: frozenset[str] = frozenset()) -> str:
    """Is the sequence axis the last axis of `inp` (what a conv/linear runs over)? Walks the method chain and the
    variables it reads from the outermost op inwards, counting sequence/feature swaps (`transpose(1, 2)`,
    `.permute(0, 2, 1)`, `.mT`, `rearrange('b t d -> b d t')`) down to a base whose layout is known: a 3-D
    `view`/`reshape` or a plain hidden state is (B, T, C); the output of a Conv1d attribute is (B, C, T).
    "seq": the sequence axis is last; "channel": the last axis is the features (also `x.reshape(b * t, 1, d)`,
    `x.unsqueeze(-2)`: one channel whose length is the feature axis); "unknown": no swap and no known base."""
    node: ast.AST | None = inp
    seen: set[tuple[str, int]] = set()
    swaps = 0

    def verdict(base_seq_last: bool) -> str:
        return "seq" if base_seq_last != (swaps % 2 == 1) else "channel"

    for _ in range(32):
        if node is None:
            break
        if isinstance(node, ast.Name):
            d = _reaching_def(scope, node)
            if d is None or (node.id, id(d)) in seen:
                break
            seen.add((node.id, id(d)))
            node = d
            continue
        if isinstance(node, ast.Attribute):
            if node.attr == "mT":
                swaps += 1
                node = node.value
                continue
            break
        if isinstance(node, ast.Subscript):
            node = node.value
            continue
        if not isinstance(node, ast.Call):
            break
        name = call_name(node)
        torch_form = isinstance(node.func, ast.Name) or (
            isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "torch"
        )
        args = [_int(a) for a in (node.args[1:] if torch_form else node.args)]
        recv = (node.args[0] if node.args else None) if torch_form else getattr(node.func, "value", None)
        if name in {"transpose", "swapaxes", "swapdims"}:
            if len(args) == 2 and None not in args and set(args) in ({1, 2}, {-1, -2}, {1, -1}):
                swaps += 1
                node = recv
                continue
            return "unknown"
        if name == "permute":
            if args != [0, 2, 1]:
                return "unknown"
            swaps += 1
            node = recv
            continue
        if name == "rearrange" and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant):
            pat = str(node.args[1].value).replace(" ", "")
            if pat not in {
                "btd->bdt",
                "btc->bct",
                "bld->bdl",
                "bnd->bdn",
                "blc->bcl",
                "bdt->btd",
                "bct->btc",
            }:
                return "unknown"
            swaps += 1
            node = node.args[0]
            continue
        if name in {"view", "reshape"}:
            if swaps == 0 and len(node.args) >= 3 and _int(node.args[-2]) == 1:
                return "channel"
            return verdict(False) if len(node.args) == 3 and swaps else "unknown"
        if name == "unsqueeze":
            return "channel" if swaps == 0 and args and args[-1] in (1, -2) else "unknown"
        if name in {"contiguous", "float", "half", "bfloat16", "to", "type", "type_as", "clone", "detach"}:
            node = recv
            continue
        if name in _LAYOUT_KEEPING and node.args:  # `F.pad(x, ...)`, `F.silu(x)`: same layout as their input
            node = node.args[0]
            continue
        if (
            isinstance(node.func, ast.Attribute)
            and node.func.attr in conv_attrs
            and isinstance(node.func.value, ast.Name)
            and scope.is_method
            and scope.params[:1] == [node.func.value.id]
        ):
            return verdict(True)  # a Conv1d's output is (B, C, T)
        break
    return verdict(False) if swaps else "unknown"


def _is_no_grad(n: ast.AST) -> bool:
    """`torch.no_grad()`, `torch.inference_mode()`, also as a bare decorator name."""
    if isinstance(n, ast.Call):
        n = n.func
    name = n.attr if isinstance(n, ast.Attribute) else (n.id if isinstance(n, ast.Name) else "")
    return name in {"no_grad", "inference_mode"}


def _within(stmts: list[ast.stmt], pos: tuple[int, int]) -> bool:
    first, last = stmts[0], stmts[-1]
    start = (first.lineno, first.col_offset)
    end = (last.end_lineno or last.lineno, last.end_col_offset or 0)
    return start <= pos <= end


def _strip_layout(n: ast.AST | None) -> ast.AST | None:
    """`k.transpose(1, 2).contiguous()` -> `k`: the tensor under layout-only method calls."""
    while isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and call_name(n) in _LAYOUT_METHODS:
        n = n.func.value
    return n


def _reaching_def(scope: Scope, name: ast.Name) -> ast.AST | None:
    """The definition of `name` that reaches it in straight-line code: the last one that starts before it and
    does not contain it (`y = h.transpose(1, 2); y = conv(y)` -> the transpose for the `y` inside conv(...))."""
    pos = (name.lineno, name.col_offset)
    best: ast.AST | None = None
    for d in scope.defs.get(name.id, []):
        start = (getattr(d, "lineno", 0), getattr(d, "col_offset", 0))
        end = (getattr(d, "end_lineno", 0) or 0, getattr(d, "end_col_offset", 0) or 0)
        if start <= pos <= end:
            continue  # the use is inside this definition's value: it reads an earlier one
        if start < pos and (best is None or start > (best.lineno, best.col_offset)):  # type: ignore[attr-defined]
            best = d
    return best


def _pad_spec(call: ast.Call) -> tuple[int | None, int | None] | None:
    """(left, right) of the last axis for `F.pad(x, (l, r, ...))`; None if not a last-axis pad call."""
    if call_name(call) != "pad" or len(call.args) < 2:
        return None
    spec = call.args[1]
    if not isinstance(spec, (ast.Tuple, ast.List)) or len(spec.elts) < 2:
        return None
    left, right = spec.elts[0], spec.elts[1]
    lv, rv = _int(left), _int(right)
    lv = lv if lv is not None else (None if not isinstance(left, ast.Constant) else 0)
    rv = rv if rv is not None else (None if not isinstance(right, ast.Constant) else 0)
    if lv is None and rv is None:
        # both symbolic: the same expression on both sides is symmetric
        return (-1, -1) if ast.dump(left) == ast.dump(right) else (None, None)
    return (lv if lv is not None else -1, rv if rv is not None else -1)


def _input_pad(scope: Scope, inp: ast.AST) -> str | None:
    """ "left" | "right" | "symmetric" for an `F.pad` on the last axis of what feeds the conv, else None."""
    for n in scope.closure(inp, mode="value"):
        if not isinstance(n, ast.Call):
            continue
        spec = _pad_spec(n)
        if spec is None:
            continue
        left, right = spec
        if left is None or right is None:
            return "symmetric" if left is None and right is None else None
        if right == 0 and left != 0:
            return "left"
        if left == 0 and right != 0:
            return "right"
        if left != 0 and right != 0:
            return "symmetric"
    return None


def _output_trim(scope: Scope, use: ast.Call) -> str | None:
    """How the conv's output is sliced on its last axis: "right" (`[..., :T]`, `[..., :-p]`) keeps the causal
    outputs of a full-padded conv, "left" (`[..., p:]`) keeps the look-ahead ones."""
    parents: dict[int, ast.AST] = {}
    for n in scope.nodes:
        for c in ast.iter_child_nodes(n):
            parents[id(c)] = n
    holders: list[ast.AST] = [use]
    p = parents.get(id(use))
    # `y = self.conv(x)` then `y[..., :T]`: follow the variable the output is stored into
    while p is not None and not isinstance(p, ast.stmt):
        if isinstance(p, ast.Subscript) and p.value in holders:
            return _slice_side(p)
        holders.append(p)
        p = parents.get(id(p))
    if isinstance(p, ast.Assign) and len(p.targets) == 1 and isinstance(p.targets[0], ast.Name):
        var = p.targets[0].id
        for n in scope.nodes:
            if (
                isinstance(n, ast.Subscript)
                and isinstance(n.ctx, ast.Load)
                and isinstance(n.value, ast.Name)
                and n.value.id == var
            ):
                side = _slice_side(n)
                if side is not None:
                    return side
    return None


def _slice_side(sub: ast.Subscript) -> str | None:
    last = index_parts(sub)[-1]
    if not isinstance(last, ast.Slice) or last.step is not None:
        return None
    if last.lower is None and last.upper is not None:
        return "right"
    if last.upper is None and last.lower is not None and _int(last.lower) != 0:
        return "left"
    return None


def _short(node: ast.AST | None, limit: int = 90) -> str:
    if node is None:
        return ""
    text = ast.unparse(node).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------------------------
# Whole-sequence summaries broadcast back to every position: the final state of a scan over the sequence, or a
# reduction over the sequence axis (`x.mean(dim=1)`), added to / conditioning each position (position t then
# reads tokens after t). The sequence axis is established from a 3-way shape unpack (`B, T, D = x.shape`: axis 1
# of x is T, and a loop `for t in range(T)` walks it), or from `_seq_axis_last` for a (B, C, T) view.
_REDUCE = frozenset({"mean", "sum", "amax", "amin", "max", "min", "logsumexp", "std", "var", "norm", "prod"})


def _seq_shapes(scope: Scope) -> tuple[set[str], set[str]]:
    """(tensors known to be (B, T, D), names holding T): from `b, t, d = x.shape` / `x.size()` and
    `t = x.size(1)` / `x.shape[1]`."""
    tensors: set[str] = set()
    lengths: set[str] = set()
    for n in scope.nodes:
        if not isinstance(n, ast.Assign) or len(n.targets) != 1:
            continue
        tgt, val = n.targets[0], n.value
        src = _shape_of(val)
        if src is not None and isinstance(tgt, ast.Tuple) and len(tgt.elts) == 3:
            tensors.add(src)
            if isinstance(tgt.elts[1], ast.Name):
                lengths.add(tgt.elts[1].id)
        elif isinstance(tgt, ast.Name):
            ax = _shape_axis(val)
            if ax is not None and ax[1] == 1:
                lengths.add(tgt.id)
    return tensors, lengths


def _shape_of(val: ast.AST) -> str | None:
    """`x.shape` / `x.size()` -> "x"."""
    if isinstance(val, ast.Attribute) and val.attr == "shape" and isinstance(val.value, ast.Name):
        return val.value.id
    if (
        isinstance(val, ast.Call)
        and isinstance(val.func, ast.Attribute)
        and val.func.attr == "size"
        and not val.args
        and isinstance(val.func.value, ast.Name)
    ):
        return val.func.value.id
    return None


def _shape_axis(val: ast.AST) -> tuple[str, int] | None:
    """`x.size(k)` / `x.shape[k]` -> ("x", k)."""
    if isinstance(val, ast.Call) and isinstance(val.func, ast.Attribute) and val.func.attr == "size":
        if len(val.args) == 1 and isinstance(val.func.value, ast.Name) and _int(val.args[0]) is not None:
            return val.func.value.id, _int(val.args[0])  # type: ignore[return-value]
    if isinstance(val, ast.Subscript) and isinstance(val.value, ast.Attribute) and val.value.attr == "shape":
        if isinstance(val.value.value, ast.Name) and _int(val.slice) is not None:
            return val.value.value.id, _int(val.slice)  # type: ignore[return-value]
    return None


def _names_in(n: ast.AST) -> set[str]:
    return {m.id for m in ast.walk(n) if isinstance(m, ast.Name)}


def _derived(scope: Scope, seeds: set[str], after: tuple[int, int]) -> set[str]:
    """Names assigned (after `after`) from an expression reading one of `seeds`, transitively."""
    out = set(seeds)
    for _ in range(8):
        grew = False
        for n in scope.nodes:
            if not isinstance(n, ast.Assign) or (n.lineno, n.col_offset) < after:
                continue
            if not (_names_in(n.value) & out):
                continue
            for t in n.targets:
                for m in ast.walk(t):
                    if isinstance(m, ast.Name) and isinstance(m.ctx, ast.Store) and m.id not in out:
                        out.add(m.id)
                        grew = True
        if not grew:
            break
    return out


def _broadcast_back(
    scope: Scope, names: set[str], node: ast.AST | None, after: tuple[int, int]
) -> ast.AST | None:
    """An expression (after `after`) that re-inserts axis 1 into a value read from `names` (or containing `node`)
    and combines it with a per-position tensor: `v.unsqueeze(1)`, `v[:, None]`, `v.expand(...)`."""

    def reads(e: ast.AST) -> bool:
        return bool(_names_in(e) & names) or (node is not None and any(m is node for m in ast.walk(e)))

    for n in scope.nodes:
        if (getattr(n, "lineno", 0), getattr(n, "col_offset", 0)) < after:
            continue
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute):
            recv = n.func.value
            if n.func.attr == "unsqueeze" and n.args and _int(n.args[0]) in (1, -2) and reads(recv):
                return n
            if n.func.attr in ("expand", "expand_as") and reads(recv):
                return n
        if isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Tuple) and len(n.slice.elts) >= 2:
            e0, e1 = n.slice.elts[0], n.slice.elts[1]
            if (
                isinstance(e0, ast.Slice)
                and isinstance(e1, ast.Constant)
                and e1.value is None
                and reads(n.value)
            ):
                return n
    return None


def _position(n: ast.AST) -> tuple[int, int]:
    return (getattr(n, "lineno", 0), getattr(n, "col_offset", 0))


def _end(n: ast.AST) -> tuple[int, int]:
    return (getattr(n, "end_lineno", 0) or 0, getattr(n, "end_col_offset", 0) or 0)
