"""Interprocedural target facts: every analysed scope linked through program.py's call graph and resolver.

Callers' targets, realized losses and distributions flow into callees' parameters (bound with `Func.bind`); callees'
return summaries flow back (which returned element is the target by the callee's own evidence, which parameters'
token it carries, whether it is a hash that mixed the target in); returned values that reach a caller's score are
score sinks of the callee too. See auditor/flow/API.md, "Targets".
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from auditor.flow.target_queries import key_formation, score_sinks
from auditor.flow.target_scopes import build_scopes
from auditor.flow.targets import Scope, find_targets

if TYPE_CHECKING:
    from auditor.facts import AuditContext, CodeUnit


@dataclass
class TargetFacts:
    """Per-audit facts: every scope with its targets, after propagating targets across calls."""

    scopes: list[Scope]
    by_name: dict[str, list[Scope]]
    # id(scope) -> returned elements (None: the whole value, i: tuple element i) that reach a caller's score
    scored_returns: dict[int, set[int | None]] = field(default_factory=dict)
    # id(callee scope) -> (caller scope, call node) for every own call the program resolves
    callers: dict[int, list[tuple[Scope, ast.Call]]] = field(default_factory=dict)

    @property
    def own_funcs(self) -> frozenset[str]:
        return frozenset(self.by_name)

    def scopes_of(self, unit: CodeUnit) -> list[Scope]:
        return [s for s in self.scopes if s.unit is unit]

    def scope_at(self, unit: CodeUnit, node: ast.AST) -> Scope | None:
        """The innermost scope (function, else the module's top level) whose own nodes contain `node`."""
        best: Scope | None = None
        line = getattr(node, "lineno", None)
        for s in self.scopes:
            if s.unit is not unit:
                continue
            if s.name == "<module>":
                best = best or s
                continue
            lo, hi = getattr(s.node, "lineno", 0), getattr(s.node, "end_lineno", 0) or 0
            if line is not None and lo <= line <= hi:
                if best is None or best.name == "<module>" or lo >= getattr(best.node, "lineno", 0):
                    best = s
        return best

    def is_target(self, unit: CodeUnit, expr: ast.AST) -> bool:
        """Provenance "target": is `expr` the token being predicted at its position (found by use: the label of a
        cross_entropy, the index of a gather on log-probs, the next-token view of the stream, the per-token
        loop value paired with its context, a parameter a caller bound to one of these, a helper's return that
        carries one), or computed from it by token-preserving steps (casts, reshapes, arithmetic, hashing)?"""
        scope = self.scope_at(unit, expr)
        return scope is not None and scope.is_target_valued(expr)

    def is_realized_loss(self, unit: CodeUnit, expr: ast.AST) -> bool:
        """Is `expr` a loss / (log-)probability of the realized token (a label loss, a distribution read at the
        target, a parameter a caller bound to one)?"""
        scope = self.scope_at(unit, expr)
        return scope is not None and scope.is_realized_loss(expr)


def target_facts(ctx: AuditContext) -> TargetFacts:
    return ctx.memo(("flow.targets",), lambda: _compute(ctx))


# a return summary: per returned element (None = the whole value, i = element i of a returned tuple),
# (the element is the target whatever the arguments, the parameters whose token flows into it)
Summary = dict[
    int | None, tuple[bool, frozenset[str], bool]
]  # (+ the element is a hash mixing the target in)


def _compute(ctx: AuditContext) -> TargetFacts:
    """Scopes of every analysed unit, linked through the shared call graph (program.py's resolver): callers'
    targets and realized losses flow into callees' parameters, callees' return summaries flow back into callers
    (`full_key = self._bucket(ctx_h ^ (tgt * P))`, `ctx_key, full_key = self._keys(stream, pos)`)."""
    from auditor.flow.program import program_of

    try:
        prog = program_of(ctx)
    except Exception:  # the shared layer failing leaves each scope with its local evidence only
        prog = None
    # the files that run, as the program sees them (per shipped file its innermost decoded layer)
    units = [f.unit for f in prog.funcs if f.kind == "module"] if prog is not None else list(ctx.parsed_units)
    scopes: list[Scope] = []
    for unit in units:
        scopes.extend(build_scopes(unit))
    by_name: dict[str, list[Scope]] = {}
    for s in scopes:
        if s.name != "<module>":
            by_name.setdefault(s.name, []).append(s)
    facts = TargetFacts(scopes=scopes, by_name=by_name)
    own = frozenset(by_name)
    for s in scopes:
        s.own_calls = own
        find_targets(s)
        s.local_target_vars = set(s.target_vars)
    if prog is None:
        return facts
    by_node = {id(s.node): s for s in scopes}
    # (caller scope, call, [(callee scope, {param: arg})]) for every own call the program resolves
    links: list[tuple[Scope, ast.Call, list[tuple[Scope, dict[str, ast.AST]]]]] = []
    for s in scopes:
        for n in s.nodes:
            if not isinstance(n, ast.Call):
                continue
            site = prog.site_of(n)
            if site is None or not site.callees or (site.resolution == "cha" and len(site.callees) > 3):
                continue
            targets = [
                (by_node[id(f.node)], f.bind(n, site.is_bound_call(f)))
                for f in site.callees
                if id(f.node) in by_node
            ]
            if targets:
                links.append((s, n, targets))
    for s, call, targets in links:
        for callee, _binding in targets:
            facts.callers.setdefault(id(callee), []).append((s, call))
    elts: dict[int, list[tuple[ast.Subscript, int]]] = {}
    for s in scopes:
        for elt, call, i in s.elt_nodes:
            elts.setdefault(id(call), []).append((elt, i))
    summaries: dict[int, Summary] = {}
    for _ in range(6):
        changed = False
        for s, _call, targets in links:
            for callee, binding in targets:
                for param, arg in binding.items():
                    if param not in callee.target_vars and s.is_target_valued(arg):
                        callee.target_vars.add(param)
                        callee.invalidate()
                        changed = True
                    if (
                        param not in callee.nll_params
                        and param not in callee.target_vars
                        and s.is_realized_loss(arg)
                    ):
                        callee.nll_params.add(param)
                        callee.invalidate()
                        changed = True
                    if param not in callee.dist_params and s.is_distribution(arg):
                        callee.dist_params.add(
                            param
                        )  # a log-prob row handed to a helper stays a distribution
                        callee.invalidate()
                        changed = True
        for s, call, targets in links:
            for node, key in [(call, None), *[(e, i) for e, i in elts.get(id(call), [])]]:
                intrinsic = False
                hashed = False
                passed: list[ast.AST] = []
                for callee, binding in targets:
                    summary = summaries.get(id(callee))
                    if summary is None:
                        summary = summaries[id(callee)] = _return_summary(callee)
                    for k in (None, key) if key is not None else list(summary):
                        hit, params, mixed = summary.get(k, (False, frozenset(), False))
                        intrinsic |= hit
                        hashed |= mixed
                        passed.extend(binding[p] for p in params if p in binding)
                if hashed:
                    s.hashed_nodes.add(id(node))
                if intrinsic and id(node) not in s.target_nodes:
                    s.target_nodes.add(id(node))
                    s.invalidate()
                    changed = True
                if passed and s.call_pass.get(id(node)) != passed:
                    s.call_pass[id(node)] = passed
                    s.invalidate()
                    changed = True
        if not changed:
            break
        summaries.clear()
    _mark_scored_returns(facts, links, elts)
    return facts


def _mark_scored_returns(
    facts: TargetFacts,
    links: list[tuple[Scope, ast.Call, list[tuple[Scope, dict[str, ast.AST]]]]],
    elts: dict[int, list[tuple[ast.Subscript, int]]],
) -> None:
    """A callee's returned value that reaches a score in a caller (`ng_p, hit = cache.predict(ctx, tgt)` then
    `-log((1 - a) * p + a * ng_p)`) is a score sink of the callee too: lookups feeding it feed that score."""
    modules = {id(s.unit): s for s in facts.scopes if s.name == "<module>"}
    reach: dict[
        int, set[int]
    ] = {}  # scope -> ids of the nodes its sinks (and scored returns) are computed from

    def nodes_of(s: Scope) -> set[int]:
        got = reach.get(id(s))
        if got is None:
            got = set()
            for _call, arg in score_sinks(s, modules.get(id(s.unit)), facts.own_funcs, facts):
                got |= {id(n) for n in s.closure(arg, mode="gate")}
            reach[id(s)] = got
        return got

    for _ in range(6):
        changed = False
        for s, call, targets in links:
            sunk = nodes_of(s)
            keys: set[int | None] = set()
            if id(call) in sunk:
                keys.add(None)
            keys |= {i for e, i in elts.get(id(call), []) if id(e) in sunk}
            if not keys:
                continue
            for callee, _binding in targets:
                have = facts.scored_returns.setdefault(id(callee), set())
                new = keys - have
                if new:
                    have |= new
                    reach.pop(id(callee), None)
                    changed = True
        if not changed:
            break


def _return_summary(scope: Scope) -> Summary:
    """Which returned values are the target (intrinsically) and which parameters' token they carry."""
    out: dict[int | None, tuple[bool, frozenset[str], bool]] = {}
    params = set(scope.params)
    for n in scope.nodes:
        if not isinstance(n, ast.Return) or n.value is None:
            continue
        parts: list[tuple[int | None, ast.AST]] = (
            list(enumerate(n.value.elts)) if isinstance(n.value, ast.Tuple) else [(None, n.value)]
        )
        for k, expr in parts:
            hit, got, mixed = out.get(k, (False, frozenset(), False))
            chain = scope.target_witness(expr) if scope.is_target_valued(expr) else None
            hashed = (
                chain is not None and key_formation(scope, chain) is not None and _hash_like(scope, chain)
            )
            # a shifted pair of reads alone (`pts[i]`, `pts[i + 1]` of an interpolation table) is weak evidence:
            # it leaves the function only as a hash key built from it, a label / gather index is enough alone
            own = scope.intrinsic_target(expr) and (hashed or scope.intrinsic_target(expr, shifted=False))
            hit = hit or own
            got = got | (scope.token_sources(expr) & params)
            out[k] = (hit, frozenset(got), mixed or hashed)
    return out


_HASH_OPS = (ast.BitXor, ast.BitAnd, ast.BitOr, ast.Mod, ast.LShift, ast.RShift)


def _hash_like(scope: Scope, chain: list[ast.AST]) -> bool:
    """A key built by integer hashing (xor / mask / modulus, or an own hashing helper), not float arithmetic such
    as an interpolation `lp + t * (hp - lp)` between two rows of a table."""
    if any(isinstance(n, ast.BinOp) and isinstance(n.op, (ast.Div, ast.Pow)) for n in chain):
        return False
    return any(
        (isinstance(n, ast.BinOp) and isinstance(n.op, _HASH_OPS)) or id(n) in scope.hashed_nodes
        for n in chain
    )
