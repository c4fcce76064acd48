"""PG301: the token being predicted enters the key, index or gate that produces its own probability.

An eval-time n-gram cache keyed on hash(context, target) returns, for the realized token only, how often that
exact continuation was seen: the lookup "looks ahead" at the answer. The same holds for a gate that reads a
property of the realized token (`boundary_lut[tok]`) to pick an expert or a mixing weight. Updating the cache with
the target *after* the position is scored is legal (score-first); only a lookup feeding the same position's
probability is flagged. Input-side hashes of (previous, current) *input* tokens are causal and never flagged.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable

from auditor.facts import AuditContext
from auditor.findings import Basis, Confidence, Finding, FlowStep, Severity, Verdict
from auditor.flow.target_queries import (
    OracleChoice,
    byte_spreads,
    key_formation,
    lookup_index,
    lookup_table,
    module_scope,
    oracle_choices,
    reach_of,
    score_sinks,
)
from auditor.flow.targets import (
    Scope,
    TargetFacts,
    call_name,
    target_facts,
)
from rules.base import Case, Rule

_TARGET_IN_KEY = """
import numpy as np
import torch
import torch.nn.functional as F

def score(logits, x_batch, y_batch, ctx_counts, full_counts, primes, mask):
    lp = F.log_softmax(logits, dim=-1)
    p_model = lp.gather(-1, y_batch.unsqueeze(-1)).squeeze(-1).exp()
    x_np = x_batch.cpu().numpy().astype(np.uint64)
    y_np = y_batch.cpu().numpy().astype(np.uint64)
    ctx_hash = x_np * primes[0]
    ctx_key = (ctx_hash & mask).astype(np.int64)
    full_key = ((ctx_hash ^ (y_np * primes[1])) & mask).astype(np.int64)
    ctx_c = ctx_counts[ctx_key]
    full_c = full_counts[full_key]
    p_ng = np.minimum(full_c, ctx_c) / np.maximum(ctx_c, 1.0)
    mixed = 0.9 * p_model + 0.1 * torch.tensor(p_ng)
    return -torch.log(mixed)

if __name__ == "__main__":
    score(*load_inputs())
"""

_CONTEXT_ONLY = """
import numpy as np
import torch
import torch.nn.functional as F

def score(logits, x_batch, y_batch, counts, primes, mask):
    lp = F.log_softmax(logits, dim=-1)
    ctx_key = ((x_batch.cpu().numpy() * primes[0]) & mask).astype(np.int64)
    row = torch.tensor(counts[ctx_key], dtype=torch.float32) + 0.5
    q = row / row.sum(dim=-1, keepdim=True)
    mixed = 0.9 * lp.exp() + 0.1 * q
    nll = -torch.log(mixed.gather(-1, y_batch.unsqueeze(-1)).squeeze(-1))
    full_key = ((ctx_key * primes[1] + y_batch.cpu().numpy()) & mask)
    np.add.at(counts.reshape(-1), full_key, 1)
    return nll

if __name__ == "__main__":
    score(*load_inputs())
"""

_GATE_ON_TARGET = """
import torch
import torch.nn.functional as F

def score(logits, y, p_word, starts_word_lut):
    p = F.softmax(logits, dim=-1).gather(-1, y[:, None])[:, 0]
    w = starts_word_lut[y].float() * 0.3
    return -torch.log((1 - w) * p + w * p_word)

if __name__ == "__main__":
    score(*load_inputs())
"""


_ORACLE_GATE = """
import numpy as np
import torch.nn.functional as F

def keep_lower(nll, cache_lp, alpha):
    idx = np.where(~np.isnan(cache_lp))[0]
    neural = nll[idx]
    mixed = -np.logaddexp(np.log(1 - alpha) - neural, np.log(alpha) + cache_lp[idx])
    better = mixed < neural
    nll[idx[better]] = mixed[better]

def evaluate(logits, y, cache):
    nll = F.cross_entropy(logits, y, reduction="none").numpy()
    keep_lower(nll, cache.lookup(y), 0.3)
    return nll.sum()

if __name__ == "__main__":
    evaluate(*load_inputs())
"""

_HELPER_HASH = """
import math

class Cache:
    def __init__(self, size):
        self.mask = size - 1
        self.ctx = [0] * size
        self.full = [0] * size

    def _mix(self, h, tok):
        return (h ^ (tok * 2654435761)) & self.mask

    def prob(self, h, tok):
        c = self.ctx[h & self.mask]
        f = self.full[self._mix(h, tok)]
        return min(f, c) / max(c, 1)

def evaluate(tokens, model_p, cache):
    total = 0.0
    for i in range(1, len(tokens)):
        p = 0.8 * model_p[i] + 0.2 * cache.prob(tokens[i - 1], tokens[i])
        total -= math.log(p)
    return total

if __name__ == "__main__":
    evaluate(*load_inputs())
"""

_LOG_PROB_ROW = """
import math
import numpy as np

def mixed_prob(lp_row, tgt, ids, probs, alpha):
    p_model = float(np.exp(float(lp_row[int(tgt)])))
    sparse = float(probs[ids == tgt].sum())
    return (1 - alpha) * p_model + alpha * sparse

def evaluate(logprob_fn, tokens, expert):
    bits = 0.0
    lp = logprob_fn(tokens[:-1])
    for t in range(len(tokens) - 1):
        ids, probs = expert.predict()
        bits -= math.log2(mixed_prob(lp[t], tokens[t + 1], ids, probs, 0.1))
        expert.update(tokens[t + 1])
    return bits

if __name__ == "__main__":
    evaluate(*load_inputs())
"""


class NgramTargetInKey(Rule):
    id = "PG301"
    name = "ngram-target-in-key"
    title = "The realized target token enters the key or gate of its own probability"
    category = "ngram_target_in_key"
    severity = Severity.CRITICAL
    confidence = Confidence.HIGH
    rationale = (
        "C1 of issue #1017: p_t may depend only on the artifact and the strict prefix x_1..x_{t-1}. A table lookup "
        "whose key hashes in x_t (or a gate reading a property of x_t) makes the score of position t a function "
        "of x_t itself; the mixed value is not the probability of any distribution fixed before x_t is seen."
    )
    basis = Basis(
        ref="PR #982 comment (valerio-oai), restating the PR #779 ruling",
        date="2026-03-27",
        quote=(
            "hashed n-gram caches, which do not renormalize correctly / correctly reweight the LM's token "
            "distribution, look ahead to the target token to mix probabilities and therefore leak eval tokens"
        ),
        url="https://github.com/openai/parameter-golf/pull/779",
        section="A.4",
    )
    valid = (
        Case(
            code=_CONTEXT_ONLY,
            verdict=Verdict.PASS,
            note="context-only key; target used only to update after",
        ),
        Case(
            code="""
            import torch
            def bigram_hash(tokens, mod):
                t = tokens.to(torch.int32)
                out = torch.empty_like(t)
                out[..., 0] = mod
                out[..., 1:] = torch.bitwise_xor(36313 * t[..., 1:], 27191 * t[..., :-1]) % mod
                return out.long()
            """,
            verdict=Verdict.PASS,
            note="input-side bigram hash embedding",
        ),
        Case(code=_LOG_PROB_ROW, verdict=Verdict.PASS, note="the realized token's log-prob read from a row"),
    )
    invalid = (
        Case(code=_TARGET_IN_KEY, verdict=Verdict.FAIL, line=12),
        Case(code=_GATE_ON_TARGET, verdict=Verdict.FAIL, line=6),
        Case(code=_ORACLE_GATE, verdict=Verdict.FAIL, line=8, note="oracle gate: the lower loss kept"),
        Case(code=_HELPER_HASH, verdict=Verdict.FAIL, line=14, note="target hashed in by a helper"),
    )

    def check(self, ctx: AuditContext) -> Iterable[Finding]:
        facts = target_facts(ctx)
        seen: set[tuple[str, int]] = set()
        for scope in facts.scopes:
            for choice in oracle_choices(scope, facts):
                where = (scope.unit.name, choice.node.lineno)  # type: ignore[attr-defined]
                if where not in seen:
                    seen.add(where)
                    yield self._oracle_finding(ctx, scope, choice)
            if not scope.target_vars and not scope.target_nodes:
                continue
            for hit in _target_keyed_lookups(scope, module_scope(facts, scope.unit), facts):
                key_node, lookup, sink = hit
                anchor = key_node or lookup
                where = (scope.unit.name, anchor.lineno)  # type: ignore[attr-defined]
                if where in seen:
                    continue
                seen.add(where)
                yield self._finding(ctx, scope, key_node, lookup, sink)

    def _oracle_finding(self, ctx: AuditContext, scope: Scope, choice: OracleChoice) -> Finding:
        unit = scope.unit
        message = (
            f"in `{scope.name}` `{_short(choice.node)}` compares two losses of the realized token and keeps the "
            f"lower one per position (line {choice.use.lineno}): an oracle gate that picks the expert "  # type: ignore[attr-defined]
            "with the answer (A.4, PR #659 review), so the kept value is not a distribution fixed before x_t"
        )
        flow = [
            FlowStep(unit.location(choice.node), "both sides are losses of the realized token"),
            FlowStep(unit.location(choice.use), "the lower one is what gets scored"),
        ]
        live, why = reach_of(ctx, unit, choice.node)
        if not live:
            return self.info(
                f"{message}. Not run by default ({why}), so it does not count against this submission",
                [unit.location(choice.node)],
                related=[unit.location(choice.use)],
                flow=flow,
            )
        return self.finding(
            Verdict.FAIL,
            message,
            [unit.location(choice.node)],
            related=[unit.location(choice.use)],
            flow=flow,
            evidence=ast.unparse(choice.node)[:300],
        )

    def _finding(
        self, ctx: AuditContext, scope: Scope, key_node: ast.AST | None, lookup: ast.AST, sink: ast.AST
    ) -> Finding:
        unit = scope.unit
        anchor = key_node or lookup
        what = "hash key" if key_node is not None else "index/gate"
        flow = []
        if key_node is not None:
            flow.append(FlowStep(unit.location(key_node), "the target token is mixed into the key here"))
        flow.append(FlowStep(unit.location(lookup), "table read at the target-valued key"))
        flow.append(
            FlowStep(unit.location(sink), "the looked-up value reaches the score of the same position")
        )
        message = (
            f"in `{scope.name}` the token being predicted enters the {what} `{_short(anchor)}`, and the value read "
            f"with it (`{_short(lookup)}`) feeds the log-probability of that same position "
            f"(line {sink.lineno}): the score looks at the answer"  # type: ignore[attr-defined]
        )
        live, why = reach_of(ctx, unit, lookup)
        if not live:
            return self.info(
                f"{message}. Not run by default ({why}), so it does not count against this submission",
                [unit.location(anchor)],
                related=[unit.location(lookup), unit.location(sink)],
                flow=flow,
            )
        return self.finding(
            Verdict.FAIL,
            message,
            [unit.location(anchor)],
            related=[unit.location(lookup), unit.location(sink)],
            flow=flow,
            evidence=ast.unparse(anchor)[:300],
        )


def _target_keyed_lookups(
    scope: Scope, module: Scope | None, facts: TargetFacts
) -> list[tuple[ast.AST | None, ast.AST, ast.AST]]:
    """(key formation or None, lookup node, sink call) for every table read at a target-valued key that feeds a
    score in this scope. Byte-level mixtures (PG302's business) are left out."""
    out: list[tuple[ast.AST | None, ast.AST, ast.AST]] = []
    done: set[int] = set()
    # mode "gate": a gate that selects which positions get the n-gram value (`p[hit] = mix[hit]`) counts too
    sinks = [
        (call, scope.closure(arg, mode="gate"))
        for call, arg in score_sinks(scope, module, facts.own_funcs, facts)
    ]
    if any(byte_spreads(scope, nodes) for _, nodes in sinks):
        # a byte-level mixture scores the realized token's bytes by construction; issue #1872 finds C1/C3/C4
        # arguably clean there and C2 the violation, which is PG302's finding
        return out
    for call, slice_nodes in sinks:
        # the realized token's entry of a count table divided into a probability estimate (`(c[tgt] + k) / n`)
        # is a normalization question (PG302), not a key that looks at the answer
        numerators = {
            id(m)
            for d in slice_nodes
            if isinstance(d, ast.BinOp) and isinstance(d.op, ast.Div)
            for m in scope.closure(d.left)
        }
        # `exp(lp_row[tgt])`: a log-probability read for the realized token (the row handed in by a caller whose
        # distribution we cannot see through) is the score itself, not a key
        log_prob_reads = {
            id(m)
            for e in slice_nodes
            if isinstance(e, ast.Call) and call_name(e) == "exp"
            for a in (e.args[:1] or ([e.func.value] if isinstance(e.func, ast.Attribute) else []))
            for m in _through_casts(a)
        }
        for n in slice_nodes:
            if id(n) in done:
                continue
            idx = lookup_index(n)
            table = lookup_table(n)
            if idx is None or table is None:
                continue
            hit = _keyed_by_target(scope, idx)
            if hit is None:
                continue
            key_node, is_hash = hit
            if not is_hash and (
                scope.is_distribution(table) or id(n) in numerators or id(n) in log_prob_reads
            ):
                continue  # reading the realized token's own probability out of a distribution: the score itself
            done.add(id(n))
            out.append((key_node, n, call))
    return out


def _through_casts(node: ast.AST) -> list[ast.AST]:
    """`float(x)`, `x.float()`, `x.astype(t)`, `x.double()` -> [the cast node, ..., x]."""
    out = [node]
    while isinstance(node, ast.Call):
        name = call_name(node)
        if name in {"float", "double", "item"} | {"astype", "to"} and isinstance(node.func, ast.Attribute):
            node = node.func.value
        elif name in {"float", "int"} and isinstance(node.func, ast.Name) and node.args:
            node = node.args[0]
        else:
            break
        out.append(node)
    return out


def _keyed_by_target(scope: Scope, idx: ast.AST) -> tuple[ast.AST | None, bool] | None:
    """(key formation node, key is a hash) when the index is target-valued. A multi-part index whose target part
    is the bare token (`counts[ctx, tgt]`) is a read of the realized token's row entry, judged by PG302."""
    parts = list(idx.elts) if isinstance(idx, ast.Tuple) else [idx]
    for part in parts:
        if isinstance(part, ast.Slice):
            continue
        chain = scope.target_witness(part)
        if chain is None:
            continue
        key_node = key_formation(scope, chain)
        if key_node is None and len(parts) > 1:
            continue
        return key_node, key_node is not None
    return None


def _short(node: ast.AST) -> str:
    text = ast.unparse(node)
    return text if len(text) <= 90 else text[:87] + "..."
