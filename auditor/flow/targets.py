"""What a prediction is scored against, and what is computed from it: the analyses behind PG301/PG302/PG303.

Everything here is structural, never name-based. Inside one function ("scope") we keep a flow-insensitive def-use
map (variable -> every expression assigned to it, including subscript stores `t[i] = v`, `lst.append(v)` and tuple
unpacking), and answer backward-slice questions on it:

* **The target** (the token being predicted) is found from how it is *used*: the label argument of
  `cross_entropy`/`nll_loss`; the index of `.gather(dim, idx)` on a log-softmax/softmax tensor; the later of two
  shifted views of one token stream (`s[1:]` next to `s[:-1]`, `s[i+1:j+1]` next to `s[i:j]`); the element at the
  scored position (`s[p]` next to its context `s[p - k]` / `s[p-k:p]`). Callers' targets flow into callees'
  parameters (positional and keyword binding, fixed point over the program).
* **Sinks** are the places a probability becomes a score: the argument of a log-family call (`log`, `log1p`,
  `log2`, `logaddexp`, also through aliases such as `_ln = math.log`) and the logits of `cross_entropy`.
* **Lookups** are subscripts / `take` / `index_select` whose index is *target-valued* (computed from the target
  token through arithmetic, hashing, casts and reshapes; not through comparisons or through another lookup).

Only the shapes are matched; identifiers can be renamed freely (tested with `auditor.rename` and python-minifier).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from auditor.flow import vocab
from auditor.flow.nodeindex import child_nodes

if TYPE_CHECKING:
    from auditor.facts import AuditContext, CodeUnit

LOG_CALLS = frozenset({"log", "log2", "log10", "log1p", "logaddexp", "logaddexp2"})
LABEL_LOSSES = frozenset({"cross_entropy", "nll_loss"})
DIST_CALLS = frozenset({"softmax", "log_softmax"})
NORMALIZERS = frozenset({"sum", "logsumexp", "nansum"})
# declared once in auditor.flow.vocab: metadata carries no values; shape builders take none from their argument
SHAPE_ATTRS = vocab.METADATA_ATTRS
SHAPE_CALLS = vocab.METADATA_CALLS | vocab.SHAPE_BUILDERS
LOOKUP_CALLS = frozenset({"take", "index_select", "take_along_dim", "take_along_axis"})
_FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)
# operator / context singletons: never interesting on their own, skipped to keep the walk small
_LEAF_KINDS = (ast.expr_context, ast.operator, ast.cmpop, ast.unaryop, ast.boolop)
# node kinds that bind or mutate a variable (what _DefCollector.visit looks at)
_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_DEF_SITES = (
    ast.Assign,
    ast.AnnAssign,
    ast.AugAssign,
    ast.NamedExpr,
    ast.For,
    ast.AsyncFor,
    ast.comprehension,
    ast.withitem,
    ast.Call,
)
# calls whose result is a score / probability / model output, not the token they were given
_NOT_TOKEN_VALUED = LABEL_LOSSES | DIST_CALLS | LOG_CALLS | {"gather", "exp", "sigmoid", "tanh", "embedding"}


def call_name(node: ast.AST) -> str:
    """The called name's last component: `F.cross_entropy(...)` -> "cross_entropy"; "" for non-calls."""
    if not isinstance(node, ast.Call):
        return ""
    f = node.func
    if isinstance(f, ast.Attribute):
        return f.attr
    if isinstance(f, ast.Name):
        return f.id
    return ""


def var_key(node: ast.AST) -> str | None:
    """A variable we track: a bare name, or `base.attr` on a bare name (object state such as `self.table`)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return f"{node.value.id}.{node.attr}"
    return None


def store_root(node: ast.AST) -> str | None:
    """The variable a store writes into: `y[i, :n] = v` and `self.t[k] = v` write into `y` / `self.t`."""
    while isinstance(node, (ast.Subscript, ast.Starred)):
        node = node.value
    return var_key(node)


def _walk_no_scopes(node: ast.AST) -> Iterator[ast.AST]:
    """ast.walk that does not descend into nested function/class/lambda bodies."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        children = [
            c for c in ast.iter_child_nodes(n) if not isinstance(c, (*_FUNCS, ast.ClassDef, ast.Lambda))
        ]
        stack.extend(
            reversed(children)
        )  # source order: definitions are seen before later unpacking reads them


def _dump(node: ast.AST | None) -> str:
    return ast.dump(node, annotate_fields=False) if node is not None else ""


def linear_form(node: ast.AST | None) -> tuple[str, int] | None:
    """`a + 1` -> (dump(a), 1); `1` -> ("", 1); None -> ("", 0): enough to compare shifted bounds. Sums are
    flattened and their terms sorted, so `a + 1 + b` and `a + b` compare as the same base with offsets 1 and 0."""
    if node is None:
        return ("", 0)
    terms: list[str] = []
    const = 0

    def add(n: ast.AST, sign: int) -> bool:
        nonlocal const
        if isinstance(n, ast.Constant) and isinstance(n.value, int) and not isinstance(n.value, bool):
            const += sign * n.value
            return True
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            return add(n.operand, -sign)
        if isinstance(n, ast.BinOp) and isinstance(n.op, (ast.Add, ast.Sub)):
            return add(n.left, sign) and add(n.right, sign if isinstance(n.op, ast.Add) else -sign)
        terms.append(("+" if sign > 0 else "-") + _dump(n))
        return True

    add(node, 1)
    if isinstance(node, ast.UnaryOp) and terms:
        return None  # `-x`: not a shifted bound we can compare
    return ("|".join(sorted(terms)), const)


def index_parts(sub: ast.Subscript) -> list[ast.AST]:
    sl = sub.slice
    return list(sl.elts) if isinstance(sl, ast.Tuple) else [sl]


# ---------------------------------------------------------------------------------------------------------------
@dataclass(eq=False)
class Scope:
    """One function (or a module body) with its flow-insensitive def-use map."""

    unit: CodeUnit
    node: ast.AST
    name: str
    params: list[str] = field(default_factory=list)
    is_method: bool = False
    defs: dict[str, list[ast.AST]] = field(default_factory=dict)
    index_defs: dict[str, list[ast.AST]] = field(
        default_factory=dict
    )  # `x[mask] = v` -> mask selects x's value
    nodes: list[ast.AST] = field(default_factory=list)
    target_vars: set[str] = field(default_factory=set)  # variables holding the target token(s)
    target_nodes: set[int] = field(default_factory=set)  # expressions that *are* the target (shift pattern)
    local_target_vars: set[str] = field(default_factory=set)  # target_vars by local evidence, before callers'
    store_values: set[int] = field(default_factory=set)  # values written with `t[k] = v` (table entries)
    hashed_nodes: set[int] = field(default_factory=set)  # own calls returning a key hashed from the target
    nll_params: set[str] = field(default_factory=set)  # params bound to a realized-token log-loss by a caller
    dist_params: set[str] = field(default_factory=set)  # params bound to a (log-)distribution by a caller
    own_calls: frozenset[str] = (
        frozenset()
    )  # names of the submission's own functions: opaque unless a return summary says otherwise
    # own calls (and synthetic tuple elements `a, b = f(...)`) -> the arguments whose token flows into the result,
    # from the callee's return summary (see _propagate); absent: an own call's result is not the token
    call_pass: dict[int, list[ast.AST]] = field(default_factory=dict)
    # `a, b = f(...)`: synthetic `f(...)[i]` nodes standing for each element (node, call, i)
    elt_nodes: list[tuple[ast.Subscript, ast.Call, int]] = field(default_factory=list)
    # variables whose value is target-valued / a distribution / a realized-token loss (fixed points, cached)
    _sets: dict[str, set[str]] = field(default_factory=dict)

    def invalidate(self) -> None:
        self._sets.clear()

    def add_def(self, key: str | None, value: ast.AST) -> None:
        if key is not None:
            self.defs.setdefault(key, []).append(value)

    # -- backward slices ----------------------------------------------------------------------------------------
    def closure(
        self, expr: ast.AST, mode: str = "value", skip: frozenset[str] = frozenset()
    ) -> list[ast.AST]:
        """The nodes the value of `expr` is computed from, following definitions of the variables it reads.

        mode "value": only what the *value* depends on (not subscript indices, shapes, comparisons or the tests
        of conditional expressions); "count": like "value" but also through `len()`/`.size()` (a byte count is a
        length); "all": every node, including masks and indices (used to look for BOS masks)."""
        out: dict[int, ast.AST] = {}
        seen_vars: set[str] = set(skip)
        stack: list[ast.AST] = [expr]
        while stack:
            n = stack.pop()
            if id(n) in out:
                continue
            out[id(n)] = n
            key = var_key(n) if isinstance(getattr(n, "ctx", None), ast.Load) else None
            if key is not None and key not in seen_vars:
                seen_vars.add(key)
                stack.extend(self.defs.get(key, ()))
                if mode == "all":
                    stack.extend(self.index_defs.get(key, ()))
            stack.extend(_value_children(n, mode))
        return list(out.values())

    def loaded_vars(self, nodes: Iterable[ast.AST]) -> set[str]:
        keys = set()
        for n in nodes:
            if isinstance(getattr(n, "ctx", None), ast.Load):
                k = var_key(n)
                if k is not None:
                    keys.add(k)
        return keys

    # -- the target ---------------------------------------------------------------------------------------------
    def is_target_valued(self, expr: ast.AST) -> bool:
        """Is `expr` the target token or computed from it by token-preserving steps (arithmetic, hashing, casts,
        reshapes, slicing the target itself)? Comparisons, shapes and values read *out of* a table stop the walk."""
        return self._expr_in(expr, self._fixpoint("target"), "target")

    def _fixpoint(self, kind: str) -> set[str]:
        """The variables holding a `kind` value: seeds, then any variable with a definition that reads one."""
        got = self._sets.get(kind)
        if got is not None:
            return got
        have: set[str] = (
            set(self.target_vars)
            if kind == "target"
            else set(self.nll_params)
            if kind == "loss"
            else set(self.dist_params)
            if kind == "dist"
            else set()
        )
        self._sets[kind] = (
            have  # visible (partial) while computing: recursion reads the current approximation
        )
        changed = True
        while changed:
            changed = False
            for key, values in self.defs.items():
                if key not in have and any(self._expr_in(v, have, kind) for v in values):
                    have.add(key)
                    changed = True
        return have

    def _expr_in(self, expr: ast.AST, have: set[str], kind: str) -> bool:
        """Does `expr` (without following variable definitions) read a `kind` variable or produce one itself?"""
        stack = [expr]
        while stack:
            n = stack.pop()
            if isinstance(n, (ast.Name, ast.Attribute)) and isinstance(n.ctx, ast.Load):
                key = var_key(n)
                if key is not None and key in have:
                    return True
                if isinstance(n, ast.Name) or (key is not None and key in self.defs):
                    continue
            if kind == "target":
                if id(n) in self.target_nodes:
                    return True
                stack.extend(self._token_children(n, None))
                continue
            if isinstance(n, ast.Call):
                name = call_name(n)
                if kind == "dist" and name in DIST_CALLS:
                    return True
                if kind == "loss":
                    if name in LABEL_LOSSES:
                        return True
                    if (
                        name == "gather"
                        and isinstance(n.func, ast.Attribute)
                        and self.is_distribution(n.func.value)
                    ):
                        return True
            if kind == "loss" and isinstance(n, ast.Subscript) and self._target_read_of_dist(n):
                return (
                    True  # `lp[rows, y]`: the realized token's (log-)probability read out of a distribution
                )
            if kind == "dist" and isinstance(n, ast.BinOp) and isinstance(n.op, (ast.Div, ast.Sub)):
                if _has_normalizer(n.right):
                    return True
            stack.extend(_value_children(n, "value"))
        return False

    def target_witness(self, expr: ast.AST) -> list[ast.AST] | None:
        """The chain of expressions from `expr` back to the target, or None."""
        seen: set[int] = set()
        seen_vars: set[str] = set()
        parent: dict[int, ast.AST | None] = {id(expr): None}
        stack: list[ast.AST] = [expr]
        while stack:
            n = stack.pop()
            if id(n) in seen:
                continue
            seen.add(id(n))
            hit = id(n) in self.target_nodes
            key = var_key(n) if isinstance(getattr(n, "ctx", None), ast.Load) else None
            if key is not None and key in self.target_vars:
                hit = True
            if hit:
                chain = [n]
                p = parent.get(id(n))
                while p is not None:
                    chain.append(p)
                    p = parent.get(id(p))
                return list(reversed(chain))
            for child in self._token_children(n, seen_vars):
                if id(child) not in parent:
                    parent[id(child)] = n
                stack.append(child)
        return None

    def intrinsic_target(self, expr: ast.AST) -> bool:
        """Is `expr` the target by this scope's own evidence (a label, a gather index, a shifted view, an own
        call returning the target), not merely because a caller passed the target into a parameter?"""
        seen: set[int] = set()
        seen_vars: set[str] = set()
        stack: list[ast.AST] = [expr]
        while stack:
            n = stack.pop()
            if id(n) in seen:
                continue
            seen.add(id(n))
            if id(n) in self.target_nodes:
                return True
            key = var_key(n) if isinstance(getattr(n, "ctx", None), ast.Load) else None
            if key is not None and key in self.local_target_vars:
                return True
            # a table whose entries were written from earlier targets (`hint[p] = best[ctx]`) holds past
            # tokens, not the one being predicted: entries written with `t[k] = v` are not followed
            stack.extend(c for c in self._token_children(n, seen_vars) if id(c) not in self.store_values)
        return False

    def token_sources(self, expr: ast.AST) -> set[str]:
        """The variables whose token `expr` carries through token-preserving steps (for return summaries)."""
        out: set[str] = set()
        seen: set[int] = set()
        seen_vars: set[str] = set()
        stack: list[ast.AST] = [expr]
        while stack:
            n = stack.pop()
            if id(n) in seen:
                continue
            seen.add(id(n))
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):
                out.add(n.id)
            stack.extend(self._token_children(n, seen_vars))
        return out

    def _token_children(self, n: ast.AST, seen_vars: set[str] | None) -> list[ast.AST]:
        """Token-preserving steps back from `n`; with seen_vars None variables are not followed."""
        passed = self.call_pass.get(id(n))
        if passed is not None:  # an own call whose return summary passes these arguments' token through
            return passed
        if isinstance(n, (ast.Compare, ast.BoolOp, ast.Lambda, *_FUNCS)):
            return []
        if isinstance(n, ast.Attribute):
            if n.attr in SHAPE_ATTRS:
                return []
            key = var_key(n) if isinstance(n.ctx, ast.Load) else None
            if key is not None and key in self.defs:
                if seen_vars is None or key in seen_vars:
                    return []
                seen_vars.add(key)
                return list(self.defs[key])
            return [n.value]
        if isinstance(n, ast.Name):
            if seen_vars is not None and isinstance(n.ctx, ast.Load) and n.id not in seen_vars:
                seen_vars.add(n.id)
                return list(self.defs.get(n.id, ()))
            return []
        if isinstance(n, ast.Subscript):
            # `tgt[i]` is still the target; `table[tgt]` is a value read out of a table, not the token
            return [n.value]
        if isinstance(n, ast.Call):
            name = call_name(n)
            if (
                name in SHAPE_CALLS
                or name in LOOKUP_CALLS
                or name == "get"  # `counts.get(tok)`: a value read at the token, not the token
                or name in _NOT_TOKEN_VALUED
                or name in self.own_calls
            ):
                return []  # own functions: a loss or model output computed from the target is not the token
            out: list[ast.AST] = list(n.args) + [k.value for k in n.keywords]
            if isinstance(n.func, ast.Attribute):
                out.append(n.func.value)
            return out
        if isinstance(
            n, (ast.BinOp, ast.UnaryOp, ast.IfExp, ast.Tuple, ast.List, ast.Starred, ast.NamedExpr)
        ):
            return [c for c in ast.iter_child_nodes(n) if isinstance(c, ast.expr)]
        return []

    # -- probability distributions ------------------------------------------------------------------------------
    def is_distribution(self, expr: ast.AST) -> bool:
        """Computed from a softmax/log-softmax, or divided by its own sum: a full-vocabulary distribution."""
        return self._expr_in(expr, self._fixpoint("dist"), "dist")

    def _target_read_of_dist(self, sub: ast.Subscript) -> bool:
        parts = index_parts(sub)
        return any(not isinstance(p, ast.Slice) and self.is_target_valued(p) for p in parts) and (
            self.is_distribution(sub.value)
        )

    def is_realized_loss(self, expr: ast.AST) -> bool:
        """Computed from a label loss (`cross_entropy(..., y)`), a log-prob gathered at the target, or a parameter
        bound to such a value by a caller."""
        return self._expr_in(expr, self._fixpoint("loss"), "loss")


def _value_children(n: ast.AST, mode: str) -> list[ast.AST]:
    if isinstance(n, (*_FUNCS, ast.Lambda, ast.ClassDef)):
        return []
    if mode == "all":
        return list(ast.iter_child_nodes(n))
    if isinstance(n, ast.Compare):
        return []
    if isinstance(n, ast.Attribute):
        return [] if n.attr in SHAPE_ATTRS else [n.value]
    if isinstance(n, ast.Subscript):
        return [n.value]
    if isinstance(n, ast.IfExp):
        return [n.body, n.orelse]
    if isinstance(n, ast.Call):
        name = call_name(n)
        if name in SHAPE_CALLS and not (mode == "count" and name in {"len", "size", "numel"}):
            return []
        out: list[ast.AST] = list(n.args) + [k.value for k in n.keywords]
        if name == "where" and len(n.args) == 3:
            out = list(n.args[1:])  # where(mask, a, b): the value is a or b
        if isinstance(n.func, ast.Attribute):
            out.append(n.func.value)
        return out
    return [c for c in ast.iter_child_nodes(n) if isinstance(c, ast.expr) and not isinstance(c, ast.Slice)]


def _has_normalizer(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) and call_name(n) in NORMALIZERS for n in ast.walk(node))


# ---------------------------------------------------------------------------------------------------------------
class _DefCollector:
    """Fill Scope.defs from the statements of one function body (nested scopes are separate Scopes)."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    def visit(self, n: ast.AST) -> None:
        s = self.scope
        if isinstance(n, ast.Assign):
            for tgt in n.targets:
                self.bind(tgt, n.value)
        elif isinstance(n, (ast.AnnAssign,)) and n.value is not None:
            self.bind(n.target, n.value)
        elif isinstance(n, ast.AugAssign):
            s.add_def(store_root(n.target), n.value)
        elif isinstance(n, ast.NamedExpr):
            self.bind(n.target, n.value)
        elif isinstance(n, (ast.For, ast.AsyncFor, ast.comprehension)):
            self.bind_iter(n.target, n.iter)
        elif isinstance(n, ast.withitem) and n.optional_vars is not None:
            self.bind(n.optional_vars, n.context_expr)
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute):
            # container mutation: lst.append(v), lst.extend(vs), d.update(...), t.copy_(v), t.index_put_(...)
            if n.func.attr in {
                "append",
                "extend",
                "add",
                "insert",
                "update",
                "copy_",
                "put_",
                "index_put_",
                "scatter_",
                "scatter_add_",
                "masked_scatter_",
                "fill_",
                "add_",
            }:
                root = store_root(n.func.value)
                for a in n.args[-1:]:
                    s.add_def(root, a)

    def bind(self, tgt: ast.AST, value: ast.AST) -> None:
        s = self.scope
        if isinstance(tgt, (ast.Tuple, ast.List)):
            parts = self.unpack(value, len(tgt.elts))
            if parts is None and isinstance(value, ast.Call):
                # `ctx_key, full_key = self.keys(...)`: one synthetic `call[i]` per element, so the callee's
                # return summary can say which element carries the target (not both)
                parts = []
                for i in range(len(tgt.elts)):
                    elt = ast.Subscript(value=value, slice=ast.Constant(value=i), ctx=ast.Load())
                    ast.copy_location(elt, value)
                    s.elt_nodes.append((elt, value, i))
                    parts.append(elt)
            for i, elt in enumerate(tgt.elts):
                self.bind(elt, parts[i] if parts is not None else value)
            return
        s.add_def(store_root(tgt), value)
        if isinstance(tgt, ast.Subscript):
            key = store_root(tgt)
            if key is not None:
                s.index_defs.setdefault(key, []).append(tgt.slice)
                s.store_values.add(id(value))

    def bind_iter(self, tgt: ast.AST, it: ast.AST) -> None:
        # for a, b in zip(X, Y) -> a<-X, b<-Y; for i, x in enumerate(X) -> x<-X
        if isinstance(tgt, (ast.Tuple, ast.List)) and isinstance(it, ast.Call):
            name = call_name(it)
            if name == "zip" and len(it.args) == len(tgt.elts):
                for elt, a in zip(tgt.elts, it.args):
                    self.bind(elt, a)
                return
            if name == "enumerate" and len(tgt.elts) == 2 and it.args:
                self.bind(tgt.elts[1], it.args[0])
                return
        self.bind(tgt, it)

    def unpack(self, value: ast.AST, n: int) -> list[ast.AST] | None:
        """Element-wise sources for `a, b = value` when the value is a tuple, or a subscript of a container whose
        every recorded element is a tuple of that length (`acc.append((k, v))` ... `k, v = acc[i]`)."""
        if isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == n:
            return list(value.elts)
        base = value
        while isinstance(base, ast.Subscript):
            base = base.value
        key = var_key(base)
        if key is None:
            return None
        elems = [
            d
            for d in self.scope.defs.get(key, ())
            if isinstance(d, (ast.Tuple, ast.List)) and len(d.elts) == n
        ]
        if not elems:
            return None
        merged: list[ast.AST] = []
        for i in range(n):
            merged.append(ast.Tuple(elts=[e.elts[i] for e in elems], ctx=ast.Load()))
        return merged


def _params(fn: ast.AST) -> list[str]:
    a = fn.args  # type: ignore[attr-defined]
    return [p.arg for p in [*a.posonlyargs, *a.args, *a.kwonlyargs]] + ([a.vararg.arg] if a.vararg else [])


def build_scopes(unit: CodeUnit) -> list[Scope]:
    """One Scope per function/method plus one for the module's top level, in one pass over the tree.

    Order: scopes in pre-order of their definitions, each scope's nodes in depth-first pre-order (a nested
    definition's scope is filled where it is met, before the rest of the enclosing body)."""
    assert unit.tree is not None
    mod = Scope(unit=unit, node=unit.tree, name="<module>")
    scopes: list[Scope] = [mod]

    def fill(scope: Scope, body: list[ast.stmt]) -> None:
        collector = _DefCollector(scope)
        nodes = scope.nodes
        stack: list[ast.AST] = list(reversed(body))
        while stack:
            n = stack.pop()
            if isinstance(n, _DEFS):
                enter(n, False)
                continue
            if isinstance(n, ast.Lambda):
                continue  # lambda bodies are not analysed
            nodes.append(n)
            if isinstance(n, _DEF_SITES):  # the only nodes _DefCollector.visit records anything for
                collector.visit(n)
            children = [c for c in child_nodes(n) if not isinstance(c, _LEAF_KINDS)]
            children.reverse()
            stack.extend(children)

    def enter(n: ast.AST, in_class: bool) -> None:
        if isinstance(n, _FUNCS):
            sc = Scope(unit=unit, node=n, name=n.name, params=_params(n), is_method=in_class)
            scopes.append(sc)
            fill(sc, n.body)
            return
        for c in n.body:  # type: ignore[attr-defined]  # a class: its statements are not analysed, its defs are
            if isinstance(c, _DEFS):
                enter(c, True)

    fill(mod, unit.tree.body)
    return scopes


# ---------------------------------------------------------------------------------------------------------------
def _slice_pair_target(a: ast.Subscript, b: ast.Subscript) -> bool:
    """Is `b` the next-token view of the same stream that `a` is the input view of?"""
    pa, pb = index_parts(a), index_parts(b)
    if len(pa) != len(pb):
        return False
    shifted = False
    for x, y in zip(pa, pb):
        if isinstance(x, ast.Slice) and isinstance(y, ast.Slice):
            lx, ly = linear_form(x.lower), linear_form(y.lower)
            if lx is None or ly is None:
                return False
            if lx == ly and _dump(x.upper) == _dump(y.upper):
                continue
            if lx[0] == ly[0] and ly[1] == lx[1] + 1 and not shifted:
                ux, uy = linear_form(x.upper), linear_form(y.upper)
                # s[:-1] / s[1:], s[i:j] / s[i+1:j+1]
                if (x.upper is not None and isinstance(x.upper, ast.UnaryOp) and y.upper is None) or (
                    ux is not None and uy is not None and ux[0] == uy[0] and uy[1] == ux[1] + 1
                ):
                    shifted = True
                    continue
            return False
        if isinstance(x, ast.Slice) or isinstance(y, ast.Slice):
            # context window s[p-k:p] next to the element s[p]
            if isinstance(x, ast.Slice) and not isinstance(y, ast.Slice) and _dump(x.upper) == _dump(y):
                shifted = True
                continue
            return False
        if _dump(x) == _dump(y):
            continue
        # s[p - k] (context) next to s[p] (target)
        if (
            isinstance(x, ast.BinOp)
            and isinstance(x.op, ast.Sub)
            and _dump(x.left) == _dump(y)
            and not shifted
        ):
            shifted = True
            continue
        lx, ly = linear_form(x), linear_form(y)
        if lx is not None and ly is not None and lx[0] == ly[0] and ly[1] > lx[1] and lx[0] and not shifted:
            shifted = True
            continue
        return False
    return shifted


def find_targets(scope: Scope) -> None:
    """Mark the target variables / expressions of one scope (local evidence only)."""
    subs_by_base: dict[str, list[ast.Subscript]] = {}
    for n in scope.nodes:
        if isinstance(n, ast.Call):
            name = call_name(n)
            if name in LABEL_LOSSES:
                label = (
                    n.args[1]
                    if len(n.args) > 1
                    else next((k.value for k in n.keywords if k.arg in {"target", "targets", "labels"}), None)
                )
                if label is not None:
                    scope.target_vars |= roots(label)
                    scope.target_nodes.add(id(label))
            elif name == "gather" and isinstance(n.func, ast.Attribute):
                idx = (
                    n.args[1]
                    if len(n.args) > 1
                    else next((k.value for k in n.keywords if k.arg == "index"), None)
                )
                if idx is not None and scope.is_distribution(n.func.value):
                    scope.target_vars |= roots(idx)
                    scope.target_nodes.add(id(idx))
        elif isinstance(n, ast.Subscript) and isinstance(n.ctx, ast.Load):
            subs_by_base.setdefault(_dump(n.value), []).append(n)
    for subs in subs_by_base.values():
        if len(subs) < 2 or len(subs) > 400:
            continue
        for b in subs:
            if id(b) in scope.target_nodes:
                continue
            if any(a is not b and _slice_pair_target(a, b) for a in subs):
                scope.target_nodes.add(id(b))
    scope.invalidate()


def roots(expr: ast.AST) -> set[str]:
    """Variables an expression is a view / cast / reshape of: `y.reshape(-1)`, `y[i, s:e]`, `y.to(dev)` -> {y}."""
    out: set[str] = set()
    stack = [expr]
    while stack:
        n = stack.pop()
        if isinstance(n, ast.Name):
            out.add(n.id)
        elif isinstance(n, ast.Attribute):
            key = var_key(n)
            if key is not None:
                out.add(key)
            else:
                stack.append(n.value)
        elif isinstance(n, ast.Subscript):
            stack.append(n.value)
        elif (
            isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and call_name(n) not in SHAPE_CALLS
        ):
            stack.append(n.func.value)
        elif isinstance(n, ast.Call) and call_name(n) in {
            "int",
            "long",
            "asarray",
            "as_tensor",
            "tensor",
            "array",
        }:
            stack.extend(n.args[:1])
        elif isinstance(n, (ast.Tuple, ast.List)):
            stack.extend(n.elts)
    return out


# ---------------------------------------------------------------------------------------------------------------
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

    scopes: list[Scope] = []
    for unit in _analysed_units(ctx):
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
    try:
        prog = program_of(ctx)
    except Exception:  # the shared layer failing leaves each scope with its local evidence only
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
                got |= {id(n) for n in s.closure(arg, mode="all")}
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
            own = scope.intrinsic_target(expr)
            hit = hit or own
            got = got | (scope.token_sources(expr) & params)
            if own and not mixed:
                chain = scope.target_witness(expr)
                mixed = chain is not None and key_formation(scope, chain) is not None
            out[k] = (hit, frozenset(got), mixed)
    return out


def _analysed_units(ctx: AuditContext) -> list[CodeUnit]:
    """What runs: for a packed file only its innermost decoded layer, otherwise the file itself."""
    out: list[CodeUnit] = []
    for u in ctx.parsed_units:
        inner = [v for v in ctx.parsed_units if v.path == u.path]
        if inner and inner[-1] is u:
            out.append(u)
    return out


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
    if chain and id(chain[-1]) in scope.hashed_nodes:
        return chain[
            -1
        ]  # the helper that returns the key hashed the target in: `_, full_key = self.keys(...)`
    for i, n in enumerate(chain):
        passed = scope.call_pass.get(id(n)) if isinstance(n, ast.Call) else None
        if passed and any(not isinstance(a, ast.Constant) and not scope.is_target_valued(a) for a in passed):
            return (
                n  # an own helper hashes the target together with the context: `self._hash_full(h, tgt, w)`
            )
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
    return None


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
_INCREMENT_CALLS = frozenset({"scatter_add_", "index_add_", "add_", "index_put_"})


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
_MINMAX = frozenset({"min", "max", "minimum", "maximum", "fmin", "fmax"})


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
            scored |= {id(m) for m in scope.closure(arg, mode="all")}
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
_STACKS = frozenset({"stack", "cat", "concatenate", "hstack", "vstack", "column_stack"})


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
