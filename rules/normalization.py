"""PG302: a score that is not -log of a distribution normalized over the token vocabulary.

Two shapes are flagged where they feed the score (the argument of a log):

* a ratio whose numerator is a value read for the realized token out of a table that is not a distribution
  (a gold count, a hashed bucket, a gathered count row) and whose denominator is not that table's own sum over
  the vocabulary (`gold / (ctx_count + beta)`, `full_count / ctx_count`);
* a realized-token log-prob spread over the token's bytes (`lp / n_bytes`, `p ** (1 / n_bytes)`) and then scored
  per byte, as byte-level mixtures (PPM-D) do: the result is no distribution over the token alphabet.

Softmax / log-softmax outputs, counts divided by their row sum, mixtures of such distributions and the closed-form
renormalized tilt (nll + log Z - beta * 1[tgt == hint]) are normalized and pass.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable

from auditor.facts import AuditContext
from auditor.findings import Basis, Confidence, Finding, FlowStep, Severity, Verdict
from auditor.flow.target_queries import (
    byte_spreads,
    entropy_experts,
    lookup_index,
    lookup_table,
    module_scope,
    reach_of,
    score_sinks,
    sum_maintained,
)
from auditor.flow.targets import (
    LOG_CALLS,
    NORMALIZERS,
    Scope,
    TargetFacts,
    call_name,
    roots,
    target_facts,
)
from rules.base import Case, Rule

_GOLD_OVER_CONTEXT = """
import torch
import torch.nn.functional as F

def score(logits, y, pair_counts, ctx_counts, ctx_ids, beta):
    lp = F.log_softmax(logits.float(), dim=-1)
    p_model = lp.gather(-1, y[:, None]).squeeze(-1).exp()
    rows = pair_counts[ctx_ids].float()
    gold = rows.gather(1, y[:, None]).squeeze(1)
    ctx_c = ctx_counts[ctx_ids].float()
    p_local = (gold + beta * p_model) / (ctx_c + beta)
    return -torch.log(0.5 * p_local + 0.5 * p_model)

if __name__ == "__main__":
    score(*load_inputs())
"""

_GOLD_OVER_ROW_SUM = """
import torch
import torch.nn.functional as F

def score(logits, y, pair_counts, ctx_ids, beta):
    p_model = F.softmax(logits.float(), dim=-1)
    rows = pair_counts[ctx_ids].float()
    q = (rows + beta * p_model) / (rows.sum(dim=1, keepdim=True) + beta)
    mixed = 0.5 * q + 0.5 * p_model
    return -torch.log(mixed.gather(1, y[:, None]).squeeze(1))

if __name__ == "__main__":
    score(*load_inputs())
"""

_BYTE_SPREAD = """
import math
import torch.nn.functional as F

def byte_mix(nll, targets, token_bytes, byte_model, lam):
    total = 0.0
    for i in range(len(targets)):
        n = len(token_bytes[int(targets[i])])
        per_byte = -float(nll[i]) / n
        for b in token_bytes[int(targets[i])]:
            p = lam * math.exp(per_byte) + (1 - lam) * byte_model.prob(b)
            total -= math.log(p)
            byte_model.update(b)
    return total

def evaluate(logits, x, y, token_bytes, byte_model):
    nll = F.cross_entropy(logits, y, reduction="none")
    return byte_mix(nll, y, token_bytes, byte_model, 0.5)

if __name__ == "__main__":
    evaluate(*load_inputs())
"""


_ENTROPY_EXPERT = """
import torch
import torch.nn.functional as F

def experts(logits, y):
    lp = F.log_softmax(logits, dim=-1)
    nll = -lp.gather(-1, y[:, None])[:, 0]
    ent = -(lp.exp() * lp).sum(-1)
    return torch.stack([nll, ent], dim=-1)

def score(logits, y, log_w):
    return -(log_w - experts(logits, y)).logsumexp(-1)

if __name__ == "__main__":
    score(*load_inputs())
"""

_SUM_MAINTAINED = """
import torch

class Unigram:
    def __init__(self, vocab):
        self.V = vocab
        self.counts = torch.zeros(vocab)
        self.total = 0.0

    def nll(self, y):
        return -torch.log((self.counts[y] + 1.0 / self.V) / (self.total + 1.0))

    def add(self, y):
        self.counts.scatter_add_(0, y, torch.ones(y.numel()))
        self.total += y.numel()

if __name__ == "__main__":
    Unigram(1024).nll(load_inputs())
"""


class UnnormalizedScoring(Rule):
    id = "PG302"
    name = "unnormalized-scoring"
    title = "Score is not -log of a distribution normalized over the vocabulary"
    category = "ngram_unnormalized"
    severity = Severity.CRITICAL
    confidence = Confidence.HIGH
    rationale = (
        "C2 of issue #1017: p_t must be a proper distribution over the full token alphabet, fixed before x_t is "
        "seen. A value computed only for the realized token (gold count over context count, hashed bucket "
        "ratios) or a byte-level mixture sums to something other than 1 over the vocabulary, so its -log is not "
        "a code length; PR #886 shows the hashed version sums to ~277 and a 1-bucket table gives BPB 0."
    )
    basis = Basis(
        ref="valerio-oai on PR #982 (also PR #978's rerun of PR #972; issue #1872 on byte mixtures)",
        date="2026-03-27",
        quote=(
            "hashed n-gram caches, which do not renormalize correctly / correctly reweight the LM's token "
            "distribution, look ahead to the target token to mix probabilities and therefore leak eval tokens"
        ),
        url="https://github.com/openai/parameter-golf/pull/982",
        section="A.4, A.7",
    )
    valid = (
        Case(code=_GOLD_OVER_ROW_SUM, verdict=Verdict.PASS, note="count rows divided by their own sum"),
        Case(
            code="""
            import torch
            def tilt(nll, logits, y, hint, beta):
                lse = nll + logits.gather(-1, y[:, None])[:, 0]
                p_hint = (logits.gather(-1, hint[:, None])[:, 0] - lse).exp()
                z = 1.0 + p_hint * (beta.exp() - 1.0)
                return nll + (z.log() - beta * (y == hint).double())
            """,
            verdict=Verdict.PASS,
            note="closed-form renormalized tilt",
        ),
        Case(code=_SUM_MAINTAINED, verdict=Verdict.PASS, note="total kept as the sum of the counts"),
    )
    invalid = (
        Case(
            code="""
            import torch.nn.functional as F
            def tilt(logits, y, hint, beta):
                nll = F.cross_entropy(logits, y, reduction="none")
                return nll - beta * (y == hint).double()
            if __name__ == "__main__":
                tilt(*load_inputs())
            """,
            verdict=Verdict.FAIL,
            line=4,
            note="tilt without the log Z renormalizer",
        ),
        Case(code=_GOLD_OVER_CONTEXT, verdict=Verdict.FAIL, line=10),
        Case(code=_BYTE_SPREAD, verdict=Verdict.FAIL, line=8),
        Case(code=_ENTROPY_EXPERT, verdict=Verdict.FAIL, line=7, note="entropy stacked as an expert"),
    )

    def check(self, ctx: AuditContext) -> Iterable[Finding]:
        facts = target_facts(ctx)
        seen: set[tuple[str, int]] = set()
        for scope in facts.scopes:
            module = module_scope(facts, scope.unit)
            for kind, node, detail, sink in _violations(scope, module, facts):
                where = (scope.unit.name, node.lineno)  # type: ignore[attr-defined]
                if where in seen:
                    continue
                seen.add(where)
                yield self._finding(ctx, scope, kind, node, detail, sink)

    def _finding(
        self, ctx: AuditContext, scope: Scope, kind: str, node: ast.AST, detail: ast.AST, sink: ast.AST
    ) -> Finding:
        unit = scope.unit
        text = ast.unparse(node)
        text = text if len(text) <= 100 else text[:97] + "..."
        if kind == "ratio":
            message = (
                f"in `{scope.name}` the scored probability uses `{text}`: a value read for the realized token from "
                f"`{ast.unparse(detail)[:60]}`, which is not a distribution, divided by something other than that "
                "table's sum over the vocabulary; it is not the probability of a normalized distribution (C2)"
            )
            steps = [
                FlowStep(unit.location(detail), "realized-token value from an unnormalized table"),
                FlowStep(unit.location(node), "divided by a non-vocabulary denominator"),
            ]
        elif kind == "entropy":
            message = (
                f"in `{scope.name}` the entropy `{text}` (a sum over the whole distribution, reading no token) is "
                f"stacked as one more expert's loss next to realized-token losses and mixed: as a probability it "
                "gives every token e^-H, so the mixture sums to more than 1 over the vocabulary (C2)"
            )
            steps = [FlowStep(unit.location(node), "entropy of the model distribution, not a token's loss")]
        elif kind == "boost":
            message = (
                f"in `{scope.name}` the realized token's loss is shifted by an indicator of the target "
                f"(`{ast.unparse(detail)[:60]}`) in `{text}` with no log-normalizer term: a boost of the hinted "
                "token that is not renormalized over the vocabulary (the legal tilt adds log Z, Z = 1 + p(h)(e^b - 1))"
            )
            steps = [FlowStep(unit.location(detail), "indicator of the realized token")]
        else:
            message = (
                f"in `{scope.name}` the realized token's log-prob is spread over its bytes (`{text}`) and scored "
                "per byte: a byte-level mixture is not a distribution over the token alphabet (C2, issue #1872)"
            )
            steps = [FlowStep(unit.location(node), "token log-prob spread over the token's bytes")]
        if sink is not node:
            steps.append(FlowStep(unit.location(sink), "scored here"))
        live, why = reach_of(ctx, unit, node)
        if not live:
            return self.info(
                f"{message}. Not run by default ({why})",
                [unit.location(node)],
                related=[unit.location(sink)],
                flow=steps,
            )
        return self.finding(
            Verdict.FAIL,
            message,
            [unit.location(node)],
            related=[unit.location(sink)],
            flow=steps,
            evidence=ast.unparse(node)[:300],
        )


def _violations(
    scope: Scope, module: Scope | None, facts: TargetFacts
) -> list[tuple[str, ast.AST, ast.AST, ast.AST]]:
    out: list[tuple[str, ast.AST, ast.AST, ast.AST]] = []
    done: set[int] = set()
    for call, arg in score_sinks(scope, module, facts.own_funcs, facts):
        nodes = scope.closure(arg)
        for sp in byte_spreads(scope, nodes):
            if id(sp.node) not in done:
                done.add(id(sp.node))
                out.append(("spread", sp.node, sp.denominator, call))
        for n in nodes:
            if id(n) in done or not isinstance(n, ast.BinOp) or not isinstance(n.op, ast.Div):
                continue
            read = _unnormalized_realized_read(scope, n.left)
            if read is None:
                continue
            table = (
                read.func.value
                if isinstance(read, ast.Call) and call_name(read) == "gather"
                else (lookup_table(read))
            )
            table_vars = roots(table if table is not None else read)
            if _normalizes(scope, n.right, table_vars) or _sum_maintained_total(
                facts, scope, n.right, table_vars
            ):
                continue
            done.add(id(n))
            out.append(("ratio", n, read, call))
    out.extend(_unnormalized_boosts(scope))
    for stack, elt in entropy_experts(scope, facts):
        defs = scope.defs.get(elt.id, []) if isinstance(elt, ast.Name) else []
        node = defs[0] if len(defs) == 1 else elt  # point at the entropy's definition when there is one
        out.append(("entropy", node, elt, stack))
    return out


def _unnormalized_boosts(scope: Scope) -> list[tuple[str, ast.AST, ast.AST, ast.AST]]:
    """`nll - beta * (tgt == hint)`: a realized-token loss shifted by an indicator of the target, with no log
    normalizer (log Z) in the shift. The closed-form tilt adds `log Z - beta * 1[tgt == hint]` and passes."""
    out: list[tuple[str, ast.AST, ast.AST, ast.AST]] = []
    for n in scope.nodes:
        if not isinstance(n, ast.BinOp) or not isinstance(n.op, (ast.Add, ast.Sub)):
            continue
        for loss_side, shift in ((n.left, n.right), (n.right, n.left)):
            if any(isinstance(x, ast.Call) and call_name(x) in LOG_CALLS for x in ast.walk(loss_side)):
                continue  # `log Z - beta * 1[...]` is the normalizer pair of a tilt, not the loss being shifted
            if not scope.is_realized_loss(loss_side):  # cached fixed point: cheap, and rules most sums out
                continue
            indicator = _target_indicator(scope, shift)  # a backward slice: only for a realized-loss side
            if indicator is None or _has_log(scope, shift):
                continue
            out.append(("boost", n, indicator, n))
            break
    return out


def _target_indicator(scope: Scope, expr: ast.AST) -> ast.AST | None:
    for n in scope.closure(expr):
        if isinstance(n, ast.Compare) and len(n.ops) == 1 and isinstance(n.ops[0], ast.Eq):
            sides = [n.left, n.comparators[0]]
            if sum(scope.is_target_valued(x) for x in sides) == 1:
                return n
    return None


def _has_log(scope: Scope, expr: ast.AST) -> bool:
    return any(
        isinstance(n, ast.Call) and call_name(n) in LOG_CALLS | {"logsumexp"} for n in scope.closure(expr)
    )


def _unnormalized_realized_read(scope: Scope, numerator: ast.AST) -> ast.AST | None:
    """A value read for the realized token out of a table that is not a distribution. Reads inside a nested ratio
    (`s * q(tgt)` with `q = (c[tgt] + a) / (n + b)`) are that ratio's own question, judged where it is divided."""
    nodes = scope.closure(numerator)
    nested: set[int] = set()
    for d in nodes:
        if isinstance(d, ast.BinOp) and isinstance(d.op, ast.Div) and d is not numerator:
            nested |= {id(m) for m in scope.closure(d)}
    for n in nodes:
        if id(n) in nested:
            continue
        if isinstance(n, ast.Call) and call_name(n) == "gather" and isinstance(n.func, ast.Attribute):
            # a per-row gather that feeds a score picks the realized entry, whatever the index is called
            if len(n.args) > 1 and not scope.is_distribution(n.func.value):
                return n
            continue
        idx = lookup_index(n)
        table = lookup_table(n)
        if idx is None or table is None:
            continue
        parts = list(idx.elts) if isinstance(idx, ast.Tuple) else [idx]
        if any(not isinstance(p, ast.Slice) and scope.is_target_valued(p) for p in parts):
            if not scope.is_distribution(table):
                return n
    return None


def _normalizes(scope: Scope, denominator: ast.AST, table_vars: set[str]) -> bool:
    """Does the denominator contain a sum (or logsumexp) over the same table the numerator was read from?"""
    for n in scope.closure(denominator):
        if isinstance(n, ast.Call) and call_name(n) in NORMALIZERS:
            operand = (
                n.func.value
                if isinstance(n.func, ast.Attribute) and not n.args
                else (n.args[0] if n.args else getattr(n.func, "value", None))
            )
            if isinstance(n.func, ast.Attribute) and call_name(n) in NORMALIZERS:
                recv = n.func.value
                if not (isinstance(recv, ast.Name) and recv.id in {"torch", "np", "numpy", "math"}):
                    operand = recv
            if operand is None:
                continue
            if scope.loaded_vars(scope.closure(operand)) & _expand(scope, table_vars):
                return True
    return False


def _sum_maintained_total(
    facts: TargetFacts, scope: Scope, denominator: ast.AST, table_vars: set[str]
) -> bool:
    """`(count[tgt] + s/V) / (total + s)` where the program keeps `total` equal to the sum of `count` (per row):
    a normalized estimate (RV-013 shape), unlike a separately hashed context count."""
    tables = _expand(scope, table_vars)
    totals = scope.loaded_vars(scope.closure(denominator)) - tables
    return any(
        sum_maintained(facts.scopes, t, tot) for t in tables for tot in totals if "." in t or t in scope.defs
    )


def _expand(scope: Scope, table_vars: set[str]) -> set[str]:
    """The table variables and every variable they are computed from (a row view shares its source)."""
    out = set(table_vars)
    for v in table_vars:
        out |= scope.loaded_vars(scope.closure(ast.Name(id=v, ctx=ast.Load())))
    return out
