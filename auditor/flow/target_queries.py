"""Where a probability becomes a score and what feeds it: the queries PG301/PG302/PG303 ask of the target facts.

Sinks (log-family calls, label losses, returned values a caller scores), table lookups and the hash keys that mix
the target in, byte-level spreads, count tables with totals maintained as their sum (normalized estimates), oracle
choices between realized-token losses, and mixture experts that are not distributions.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from auditor.flow import vocab
from auditor.flow.targets import (
    LABEL_LOSSES,
    LOG_CALLS,
    LOOKUP_CALLS,
    Scope,
    _dump,
    call_name,
    index_parts,
    store_root,
    var_key,
)

if TYPE_CHECKING:
    from auditor.facts import AuditContext, CodeUnit
    from auditor.flow.target_calls import TargetFacts


# ---------------------------------------------------------------------------------------------------------------
def log_aliases(scope: Scope, module: Scope | None) -> set[str]:
    """Local names bound to a log function (`_ln = math.log`)."""
    out: set[str] = set()
    for sc in (scope, module):
        if sc is None:
            continue
        for key, values in sc.defs.items():
            for v in values:
                if isinstance(v, (ast.Attribute, ast.Name)) and (
                    (v.attr if isinstance(v, ast.Attribute) else v.id) in LOG_CALLS
                ):
                    out.add(key)
    return out


def score_sinks(
    scope: Scope,
    module: Scope | None = None,
    own_funcs: frozenset[str] = frozenset(),
    facts: TargetFacts | None = None,
) -> list[tuple[ast.AST, ast.AST]]:
    """(call, argument) pairs where a probability becomes a score in this scope. `own_funcs`: names of functions
    the submission defines (a bare `log(...)` calling one of them is a logging helper). With `facts`, also
    (return statement, returned value) for the returned values a caller scores."""
    aliases = log_aliases(scope, module)
    out: list[tuple[ast.AST, ast.AST]] = []
    keys = facts.scored_returns.get(id(scope), set()) if facts is not None else set()
    if keys:
        for n in scope.nodes:
            if isinstance(n, ast.Return) and n.value is not None:
                if isinstance(n.value, ast.Tuple) and None not in keys:
                    out.extend((n, e) for i, e in enumerate(n.value.elts) if i in keys)
                else:
                    out.append((n, n.value))
    entropy_logs = {id(lg) for _prod, lg in entropy_terms(scope)}
    for n in scope.nodes:
        if not isinstance(n, ast.Call):
            continue
        name = call_name(n)
        is_alias = isinstance(n.func, ast.Name) and n.func.id in aliases
        if (name in LOG_CALLS or is_alias) and _is_message_log(n, own_funcs):
            continue  # `log(f"... bpb={x}")`: a logging helper, not the logarithm
        if id(n) in entropy_logs:
            continue  # `p * log(p)`: a term of an entropy over the vocabulary, not the score of one token
        if name in LOG_CALLS or is_alias:
            if isinstance(n.func, ast.Attribute) and not n.args and name in LOG_CALLS:
                out.append((n, n.func.value))  # p.log()
            else:
                out.extend((n, a) for a in n.args[:2])
        elif name in LABEL_LOSSES and n.args:
            out.append((n, n.args[0]))
    return out


def entropy_terms(scope: Scope) -> list[tuple[ast.BinOp, ast.AST]]:
    """`p * log(p)` / `lp.exp() * lp` products (either order): the summand of an entropy -sum_v p(v) log p(v),
    a property of the whole distribution that reads no token. Returns (product, its log operand)."""
    out: list[tuple[ast.BinOp, ast.AST]] = []
    for n in scope.nodes:
        if not isinstance(n, ast.BinOp) or not isinstance(n.op, ast.Mult):
            continue
        for a, b in ((n.left, n.right), (n.right, n.left)):
            if isinstance(a, ast.Call) and call_name(a) in LOG_CALLS:
                arg = a.args[0] if a.args else (a.func.value if isinstance(a.func, ast.Attribute) else None)
                if arg is not None and _dump(arg) == _dump(b):
                    out.append((n, a))  # p * log(p)
                    break
            if isinstance(a, ast.Call) and call_name(a) == "exp":
                arg = a.args[0] if a.args else (a.func.value if isinstance(a.func, ast.Attribute) else None)
                if arg is not None and _dump(arg) == _dump(b):
                    out.append((n, b))  # exp(lp) * lp: lp is the log operand
                    break
    return out


def _is_message_log(call: ast.Call, own_funcs: frozenset[str]) -> bool:
    if isinstance(call.func, ast.Name) and call.func.id in own_funcs:
        return True
    return any(
        isinstance(a, ast.JoinedStr) or (isinstance(a, ast.Constant) and isinstance(a.value, str))
        for a in call.args
    )


def module_scope(facts: TargetFacts, unit: CodeUnit) -> Scope | None:
    return next((s for s in facts.scopes if s.unit is unit and s.name == "<module>"), None)


# ---------------------------------------------------------------------------------------------------------------
def reach_of(ctx: AuditContext, unit: CodeUnit, node: ast.AST) -> tuple[bool, str]:
    """(runs by default?, why not) from the shared flow layer; analysis problems there read as "runs"."""
    try:
        from auditor.flow.program import program_of

        prog = program_of(ctx)
        r = prog.reach(unit, node)
        if r.status in ("dead", "gated_off"):
            return False, r.reason
        off = _self_flag_off(prog, unit, node)
        if off is not None:
            return False, off
    except Exception as exc:  # the shared layer failing must never turn a finding into a PASS
        return True, f"reachability unknown ({type(exc).__name__})"
    return True, r.reason


def _self_flag_off(prog: object, unit: CodeUnit, node: ast.AST) -> str | None:
    """`if self.flag:` around `node` where every assignment of `self.flag` folds to false under the defaults and
    under every run command of the folder (e.g. `self.on = h.smear_enabled`, env default "0")."""
    from auditor.flow.consts import UNKNOWN

    func = prog.enclosing_func(unit, node)  # type: ignore[attr-defined]
    if func is None or func.cls is None:
        return None
    for test in _enclosing_if_tests(func.node, node):
        if not (
            isinstance(test, ast.Attribute)
            and isinstance(test.value, ast.Name)
            and func.params
            and test.value.id == func.params[0]
        ):
            continue
        exprs = func.cls.attr_exprs(test.attr)
        if not exprs:
            continue
        envs: list[dict[str, str] | None] = [None] + [c.env_dict for c in prog.run_commands]  # type: ignore[attr-defined]
        values = []
        for e, f in exprs:
            sources = [(e, f)]
            if isinstance(e, ast.Attribute) and isinstance(e.value, ast.Name) and e.value.id in f.params:
                # `self.on = h.flag` with `h` a parameter: the config classes that define `flag`
                sources += [
                    (x, g)
                    for c in prog.classes_defining(e.attr)  # type: ignore[attr-defined]
                    if c is not func.cls
                    for x, g in c.attr_exprs(e.attr)
                ]
            for env in envs:
                folded = [prog.eval_const(unit, x, g, env=env) for x, g in sources]  # type: ignore[attr-defined]
                known = [v for v in folded if v is not UNKNOWN]
                values.append(known[0] if known else UNKNOWN)
        if values and all(v is not UNKNOWN and not v for v in values):
            return f"`if {ast.unparse(test)}` is off by default and under every run command of the folder"
    return None


def _enclosing_if_tests(fn: ast.AST, node: ast.AST) -> list[ast.AST]:
    """Tests of the `if` statements whose body (not else) contains `node`, inside function `fn`."""
    out: list[ast.AST] = []

    def visit(n: ast.AST) -> bool:
        for child in ast.iter_child_nodes(n):
            if child is node:
                return True
            if getattr(child, "lineno", 0) <= node.lineno <= (
                getattr(child, "end_lineno", 0) or 0
            ) or not hasattr(child, "lineno"):
                if visit(child):
                    if isinstance(n, ast.If) and child in n.body:
                        out.append(n.test)
                    return True
        return False

    visit(fn)
    return out


def lookup_index(node: ast.AST) -> ast.AST | None:
    """The index of a table read: `t[k]`, `np.take(t, k)`, `t.index_select(0, k)`; None for anything else."""
    if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
        return node.slice
    if isinstance(node, ast.Call) and call_name(node) == "get" and isinstance(node.func, ast.Attribute):
        return node.args[0] if node.args else None  # `counts.get(tok)`: a dict read at that key
    if isinstance(node, ast.Call) and call_name(node) in LOOKUP_CALLS:
        if isinstance(node.func, ast.Attribute) and call_name(node) == "index_select" and len(node.args) > 1:
            return node.args[1]
        if len(node.args) > 1:
            return node.args[1]
    return None


def lookup_table(node: ast.AST) -> ast.AST | None:
    if isinstance(node, ast.Subscript):
        return node.value
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        if call_name(node) in ("index_select", "get"):
            return node.func.value
        return node.args[0] if node.args else None
    return None


def key_formation(scope: Scope, chain: list[ast.AST]) -> ast.AST | None:
    """In a witness chain from an index back to the target, the first arithmetic step that mixes the target with
    a non-constant, non-target value: where the target enters a hash key (`ctx_hash ^ (tgt * P)`)."""
    for i, n in enumerate(chain):
        if isinstance(n, ast.BinOp):
            nxt = chain[i + 1] if i + 1 < len(chain) else None
            other = n.right if nxt is n.left else n.left
            if isinstance(other, ast.Constant) or scope.is_target_valued(other):
                continue
            if not any(
                isinstance(x, (ast.Name, ast.Attribute, ast.Subscript, ast.Call)) for x in ast.walk(other)
            ):
                continue
            return n
        if isinstance(n, ast.Call) and call_name(n) in {
            "bitwise_xor",
            "bitwise_and",
            "bitwise_or",
            "add",
            "mul",
        }:
            return n
    # no mixing step here: an own helper hashed the target in (`self._hash_full(h, tgt, w)`, `_, k = self.keys()`)
    return next((n for n in chain if id(n) in scope.hashed_nodes), None)


@dataclass
class Spread:
    """A realized-token log-prob divided over its bytes (`lp / n_bytes`, `p ** (1 / n_bytes)`)."""

    node: ast.AST
    denominator: ast.AST


def byte_spreads(scope: Scope, nodes: Iterable[ast.AST]) -> list[Spread]:
    """Divisions of a realized-token loss/log-prob by a byte count of the realized token, and the matching
    `p ** (1 / n)` form: the first step of a byte-level mixture (PPM-style)."""
    out: list[Spread] = []
    for n in nodes:
        if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div):
            if _is_target_count(scope, n.right) and scope.is_realized_loss(n.left):
                out.append(Spread(n, n.right))
        elif isinstance(n, ast.BinOp) and isinstance(n.op, ast.Pow):
            e = n.right
            if isinstance(e, ast.BinOp) and isinstance(e.op, ast.Div) and isinstance(e.left, ast.Constant):
                if _is_target_count(scope, e.right) and scope.is_realized_loss(n.left):
                    out.append(Spread(n, e.right))
    return out


def _is_target_count(scope: Scope, expr: ast.AST) -> bool:
    """A per-token quantity read from a table at the target (`lut[tgt]`, `len(lut[tgt])`)."""
    for n in scope.closure(expr, mode="count"):
        idx = lookup_index(n)
        if idx is not None and scope.is_target_valued(idx):
            return True
    return False


# ---------------------------------------------------------------------------------------------------------------
# Count tables and their totals: `(count[tgt] + s/V) / (total + s)` is a normalized distribution when `total` is
# maintained as the sum of that same count table (both incremented together, the total at the table's row).
_INCREMENT_CALLS = vocab.INCREMENT_CALLS


@dataclass(frozen=True)
class Increment:
    """`key[parts] += ...` (or scatter_add_ / np.add.at) inside one scope; parts are ast dumps of the index."""

    key: str
    parts: tuple[ast.AST, ...]


def increments(scope: Scope) -> list[Increment]:
    """Every in-place increment of a variable / attribute in this scope."""
    out: list[Increment] = []
    for n in scope.nodes:
        value = n.value if isinstance(n, ast.Assign) else None
        if isinstance(value, ast.Name) and len(scope.defs.get(value.id, ())) == 1:
            value = scope.defs[value.id][0]
        if (
            isinstance(n, ast.Assign)
            and len(n.targets) == 1
            and isinstance(n.targets[0], ast.Subscript)
            and isinstance(value, ast.BinOp)
            and isinstance(value.op, ast.Add)
        ):
            key = store_root(n.targets[0])  # `c[k] = c.get(k, 0) + 1` (also through a local `c_k = ...`)
            if key is not None and key in scope.loaded_vars(scope.closure(value)):
                out.append(Increment(key, tuple(index_parts(n.targets[0]))))
        elif isinstance(n, ast.AugAssign) and isinstance(n.op, ast.Add):
            key = store_root(n.target)
            if key is not None:
                parts = tuple(index_parts(n.target)) if isinstance(n.target, ast.Subscript) else ()
                out.append(Increment(key, parts))
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute):
            name = n.func.attr
            if name in _INCREMENT_CALLS:
                recv = n.func.value
                while isinstance(recv, ast.Call) and call_name(recv) in {"view", "reshape", "flatten", "to"}:
                    recv = recv.func.value  # type: ignore[attr-defined]
                key = store_root(recv)
                if key is None:
                    continue
                if name in {"scatter_add_", "index_add_"} and len(n.args) >= 2:
                    parts: tuple[ast.AST, ...] = (n.args[1],)
                elif name == "index_put_" and n.args:
                    idx = n.args[0]
                    parts = tuple(idx.elts) if isinstance(idx, (ast.Tuple, ast.List)) else (idx,)
                else:
                    parts = ()
                out.append(Increment(key, parts))
            elif name == "at" and isinstance(n.func.value, ast.Attribute) and n.func.value.attr == "add":
                if len(n.args) >= 2:  # np.add.at(table, idx, v)
                    key = store_root(n.args[0])
                    idx = n.args[1]
                    if key is not None:
                        parts = tuple(idx.elts) if isinstance(idx, ast.Tuple) else (idx,)
                        out.append(Increment(key, parts))
    return out


def _mixes(scope: Scope, expr: ast.AST) -> bool:
    """Is an index computed by combining several non-constant values (a hash / flattened key)?"""
    for n in scope.closure(expr):
        if isinstance(n, ast.BinOp) and isinstance(
            n.op, (ast.Add, ast.Mult, ast.BitXor, ast.BitAnd, ast.BitOr, ast.Mod, ast.Sub)
        ):
            if not isinstance(n.left, ast.Constant) and not isinstance(n.right, ast.Constant):
                if not (isinstance(n.op, (ast.Mult,)) and _is_dim_const(n.right)):
                    return True
    return False


def _is_dim_const(n: ast.AST) -> bool:
    return isinstance(n, ast.Attribute) and n.attr.isupper() or isinstance(n, ast.Subscript)


def _row_of(scope: Scope, table_part: ast.AST, total_parts: tuple[ast.AST, ...]) -> bool:
    """The table's increment index is the total's row plus a plain token column: `t[row, tok]`, or the flattened
    `row * V + tok` (no modulus: a hashed bucket `(row * P + tok) % n` collides and is not a row)."""
    if not isinstance(table_part, ast.BinOp) or not isinstance(table_part.op, ast.Add):
        defs = scope.defs.get(table_part.id, []) if isinstance(table_part, ast.Name) else []
        return len(defs) == 1 and _row_of(scope, defs[0], total_parts)
    left = table_part.left
    if not (isinstance(left, ast.BinOp) and isinstance(left.op, ast.Mult)):
        return False
    return (
        len(total_parts) == 1
        and _dump(left.left) == _dump(total_parts[0])
        and not _mixes(scope, table_part.right)
    )


def sum_maintained(scopes: list[Scope], table_key: str, total_key: str) -> bool:
    """Is `total_key` kept equal to the sum of `table_key` (per row)? Some scope increments both, the table at
    the total's row plus a token column that is not hashed together with it; the total is never incremented
    anywhere without the table."""
    together = False
    # object fields are matched by field name when the receivers differ (`entry.counts` read, `self.counts`
    # incremented in the entry's class), the two fields on one receiver
    tab_recv, _, tab_field = table_key.rpartition(".")
    tot_recv, _, tot_field = total_key.rpartition(".")
    by_field = bool(tab_recv) and tab_recv == tot_recv

    def same(key: str, want: str, fld: str) -> bool:
        return key == want or (by_field and key.rpartition(".")[2] == fld and "." in key)

    for s in scopes:
        incs = increments(s)
        tabs = [i for i in incs if same(i.key, table_key, tab_field)]
        tots = [i for i in incs if same(i.key, total_key, tot_field)]
        if by_field:
            recvs = {i.key.rpartition(".")[0] for i in tabs}
            tots = [i for i in tots if i.key.rpartition(".")[0] in recvs] if tabs else tots
        if tots and not tabs:
            return False
        for tab in tabs:
            for tot in tots:
                n = len(tot.parts)
                if len(tab.parts) == n + 1 and all(
                    _dump(a) == _dump(b) for a, b in zip(tab.parts[:n], tot.parts)
                ):
                    together |= not _mixes(s, tab.parts[n])
                elif len(tab.parts) == 1 and n == 0:
                    together |= not _mixes(s, tab.parts[0])
                elif len(tab.parts) == 1 and n == 1:
                    together |= _row_of(s, tab.parts[0], tot.parts)
    return together


# ---------------------------------------------------------------------------------------------------------------
# Oracle selection: the lower of two realized-token losses kept per position (`improved = mixed < neural;
# nll[improved] = mixed[improved]`, `if mixed < neural: return mixed`, `else: scored = neural`). The choice
# reads the answer (C1), and sum_v max(p1(v), p2(v)) > 1, so the kept value is no distribution (C2).
_ORDERING = (ast.Lt, ast.Gt, ast.LtE, ast.GtE)
_MINMAX = vocab.MINMAX_CALLS


@dataclass(frozen=True)
class OracleChoice:
    node: ast.AST  # the comparison or min/max call
    use: ast.AST  # where the choice is applied (a store, a return, an assignment, the call itself)


def oracle_choices(scope: Scope, facts: TargetFacts | None = None) -> list[OracleChoice]:
    """Per-position choices between two different realized-token losses that decide the kept value."""
    out: list[OracleChoice] = []
    scored: set[int] = set()
    if facts is not None:
        module = next((m for m in facts.scopes if m.unit is scope.unit and m.name == "<module>"), None)
        for _call, arg in score_sinks(scope, module, facts.own_funcs, facts):
            scored |= {id(m) for m in scope.closure(arg, mode="gate")}
    cmps: dict[int, ast.Compare] = {}
    for n in scope.nodes:
        if isinstance(n, ast.Compare) and len(n.ops) == 1 and isinstance(n.ops[0], _ORDERING):
            a, b = n.left, n.comparators[0]
            if _two_losses(scope, a, b):
                cmps[id(n)] = n
    for n in scope.nodes:
        if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Subscript):
            # `nll[sel] = other[sel]` into a realized-loss array, the selector computed from a comparison
            dest = n.targets[0]
            if not scope.is_realized_loss(dest.value):
                continue
            for m in scope.closure(dest.slice, mode="all"):
                if id(m) in cmps:
                    out.append(OracleChoice(cmps[id(m)], n))
                    break
        elif isinstance(n, ast.If) and id(n.test) in cmps:
            # compared as source text: a store and a load of one name differ in their ast dumps
            sides = {ast.unparse(n.test.left), ast.unparse(n.test.comparators[0])}  # type: ignore[attr-defined]
            for st in [*n.body, *n.orelse]:
                for m in ast.walk(st):
                    if isinstance(m, ast.Return) and m.value is not None and ast.unparse(m.value) in sides:
                        out.append(OracleChoice(n.test, m))
                        break
                    if (
                        isinstance(m, ast.Assign)
                        and len(m.targets) == 1
                        and ast.unparse(m.targets[0]) in sides
                        and ast.unparse(m.value) in sides
                    ):
                        out.append(OracleChoice(n.test, m))  # `else: scored = neural`: keep the lower one
                        break
                else:
                    continue
                break
        elif isinstance(n, ast.Call) and call_name(n) in _MINMAX and len(n.args) == 2 and not n.keywords:
            if _two_losses(scope, n.args[0], n.args[1]) and id(n) in scored:
                out.append(OracleChoice(n, n))  # `min(mixed_nll, neural_nll)` where the result is scored
    return out


def _two_losses(scope: Scope, a: ast.AST, b: ast.AST) -> bool:
    """Two different realized-token losses: each side reads a source the other does not (a cache's value next to
    the model's), not a loss against a constant or a running best of itself (`if loss < best: best = loss`)."""
    if _dump(a) == _dump(b) or not (scope.is_realized_loss(a) and scope.is_realized_loss(b)):
        return False
    ka = scope.loaded_vars(scope.closure(a)) - {var_key(a)}
    kb = scope.loaded_vars(scope.closure(b)) - {var_key(b)}
    if not ka and not kb:  # two different parameters a caller bound to realized-token losses
        return all(
            isinstance(x, ast.Name) and x.id in scope.params and x.id not in scope.defs for x in (a, b)
        )
    return bool(ka - kb) and bool(kb - ka) or bool((ka ^ kb) - {var_key(a), var_key(b)})


# ---------------------------------------------------------------------------------------------------------------
# Mixture experts that are not distributions: an entropy -sum_v p(v) log p(v) stacked with realized-token losses
# as one more expert's "NLL" gives every token probability e^-H, so the mixture sums to more than 1 (RV-101 shape).
_STACKS = vocab.STACK_CALLS


def entropy_experts(scope: Scope, facts: TargetFacts) -> list[tuple[ast.Call, ast.AST]]:
    """(stack call, element) where a per-position entropy is stacked next to realized-token losses and the stack
    is mixed (`logsumexp` over experts) here or by a caller of this function."""
    out: list[tuple[ast.Call, ast.AST]] = []
    products = {id(p) for p, _lg in entropy_terms(scope)}
    if not products:
        return out
    for n in scope.nodes:
        if not (isinstance(n, ast.Call) and call_name(n) in _STACKS and n.args):
            continue
        seq = n.args[0]
        if not isinstance(seq, (ast.List, ast.Tuple)) or len(seq.elts) < 2:
            continue
        losses = [e for e in seq.elts if scope.is_realized_loss(e)]
        entropies = [
            e
            for e in seq.elts
            if not scope.is_realized_loss(e) and any(id(m) in products for m in scope.closure(e))
        ]
        if losses and entropies and _mixed(scope, n, facts):
            out.extend((n, e) for e in entropies)
    return out


def _mixed(scope: Scope, stack: ast.Call, facts: TargetFacts) -> bool:
    def feeds_lse(s: Scope, node: ast.AST) -> bool:
        for m in s.nodes:
            if isinstance(m, ast.Call) and call_name(m) == "logsumexp":
                recv = m.func.value if isinstance(m.func, ast.Attribute) else None
                module_fn = isinstance(recv, ast.Name) and recv.id in {
                    "torch",
                    "np",
                    "numpy",
                    "scipy",
                    "special",
                }
                # `x.logsumexp(-1)` mixes x; `torch.logsumexp(x, -1)` mixes its first argument
                arg = recv if recv is not None and not module_fn else (m.args[0] if m.args else m.func)
                if any(x is node for x in s.closure(arg)):
                    return True
        return False

    if feeds_lse(scope, stack):
        return True
    returned = any(
        isinstance(m, ast.Return) and m.value is not None and any(x is stack for x in scope.closure(m.value))
        for m in scope.nodes
    )
    return returned and any(feeds_lse(c, call) for c, call in facts.callers.get(id(scope), []))
