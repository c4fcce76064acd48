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

if TYPE_CHECKING:
    from auditor.facts import CodeUnit

LOG_CALLS = vocab.LOG_CALLS
LABEL_LOSSES = vocab.LABEL_LOSSES
DIST_CALLS = vocab.DIST_CALLS
NORMALIZERS = vocab.NORMALIZERS
# declared once in auditor.flow.vocab: metadata carries no values; shape builders take none from their argument
SHAPE_ATTRS = vocab.METADATA_ATTRS
SHAPE_CALLS = vocab.METADATA_CALLS | vocab.SHAPE_BUILDERS
LOOKUP_CALLS = vocab.LOOKUP_CALLS
TOKEN_PRESERVING_CALLS = vocab.TOKEN_PRESERVING_CALLS
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
    shifted_nodes: set[int] = field(default_factory=set)  # target_nodes found only as the later shifted view
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
        length); "gate": like "value" plus what selects it (comparisons, `where` masks, conditional tests, the
        indices of `x[mask] = v` stores), not the positions a load reads; "all": every node, including masks and
        indices (used to look for BOS masks)."""
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
                if mode in ("all", "gate"):
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

    def intrinsic_target(self, expr: ast.AST, shifted: bool = True) -> bool:
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
            if id(n) in self.target_nodes and (shifted or id(n) not in self.shifted_nodes):
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
            if (
                isinstance(n, ast.Call)
                and id(n) not in self.call_pass
                and call_name(n) not in TOKEN_PRESERVING_CALLS
            ):
                continue  # across functions only known token-preserving calls: `self.embed(ids)` is no token
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
        # mode "gate": what selects the value counts too (`hit = full_c >= 1` choosing where the cache is used)
        return [n.left, *n.comparators] if mode == "gate" else []
    if isinstance(n, ast.Attribute):
        return [] if n.attr in SHAPE_ATTRS else [n.value]
    if isinstance(n, ast.Subscript):
        return [n.value]
    if isinstance(n, ast.IfExp):
        return [n.test, n.body, n.orelse] if mode == "gate" else [n.body, n.orelse]
    if isinstance(n, ast.Call):
        name = call_name(n)
        if name in SHAPE_CALLS and not (mode == "count" and name in {"len", "size", "numel"}):
            return []
        out: list[ast.AST] = list(n.args) + [k.value for k in n.keywords]
        if name == "where" and len(n.args) == 3 and mode != "gate":
            out = list(n.args[1:])  # where(mask, a, b): the value is a or b (mode "gate" keeps the mask)
        if isinstance(n.func, ast.Attribute):
            out.append(n.func.value)
        return out
    return [c for c in ast.iter_child_nodes(n) if isinstance(c, ast.expr) and not isinstance(c, ast.Slice)]


def _has_normalizer(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) and call_name(n) in NORMALIZERS for n in ast.walk(node))


# ---------------------------------------------------------------------------------------------------------------
# casts of an index array keep its positions: `s[(p + 1).astype(np.int64)]` reads position p + 1
_INDEX_CASTS = {"astype", "long", "int", "to", "type"}


def _unwrap_index(node: ast.AST | None) -> ast.AST | None:
    while (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _INDEX_CASTS
    ):
        node = node.func.value
    return node


def _term_diff(hi: tuple[str, int] | None, lo: tuple[str, int] | None) -> tuple[tuple[str, ...], int] | None:
    """`hi - lo` of two linear forms as (sorted signed terms, constant): the width of a slice."""
    if hi is None or lo is None:
        return None
    terms = [t for t in hi[0].split("|") if t]
    for t in (t for t in lo[0].split("|") if t):
        neg = ("-" if t.startswith("+") else "+") + t[1:]
        if t in terms:
            terms.remove(t)
        else:
            terms.append(neg)
    return (tuple(sorted(terms)), hi[1] - lo[1])


def _window_pair(x: ast.Slice, y: ast.Slice) -> bool:
    """`s[p - L + k : p - L + k + n]` (one context column of a window of width L) next to `s[p + 1 : p + 1 + n]`:
    two views of the same width n, the later one starting after the context position."""
    if x.upper is None or y.upper is None:
        return False
    lx, ly = linear_form(x.lower), linear_form(y.lower)
    wx = _term_diff(linear_form(x.upper), lx)
    if lx is None or ly is None or wx is None or wx != _term_diff(linear_form(y.upper), ly) or not wx[0]:
        return False
    return bool(ly[0]) and _context_offset(lx[0], ly[0]) and ly[1] >= lx[1]


def _slice_pair_target(a: ast.Subscript, b: ast.Subscript, same_positions: object = None) -> bool:
    """Is `b` the next-token view of the same stream that `a` is the input view of?"""
    pa = [_unwrap_index(p) for p in index_parts(a)]
    pb = [_unwrap_index(p) for p in index_parts(b)]
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
            if not shifted and _window_pair(x, y):
                shifted = True
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
            and (_dump(x.left) == _dump(y) or (callable(same_positions) and same_positions(x.left, y)))
            and not shifted
        ):
            shifted = True
            continue
        lx, ly = linear_form(x), linear_form(y)
        if lx is not None and ly is not None and lx[0] == ly[0] and ly[1] > lx[1] and lx[0] and not shifted:
            shifted = True
            continue
        if lx is not None and ly is not None and ly[0] and not shifted and _context_offset(lx[0], ly[0]):
            shifted = True  # s[p - L + k] (a context window of width L) next to s[p]
            continue
        return False
    return shifted


def _context_offset(x_terms: str, y_terms: str) -> bool:
    """`p - L + k` against `p`: every term of the target index is in the context index, and what is left over
    subtracts something (a window width), so the context position lies before the target."""
    xs, ys = x_terms.split("|"), y_terms.split("|")
    rest = list(xs)
    for t in ys:
        if t not in rest:
            return False
        rest.remove(t)
    return bool(rest) and any(t.startswith("-") for t in rest)


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

    def position_root(e: ast.AST) -> str:
        # `jv = pos[sel]` reads a subset of the positions `pos`: the same positions for pairing s[jv - k], s[pos]
        seen = 0
        while isinstance(e, ast.Name) and seen < 4:
            defs = scope.defs.get(e.id, [])
            if len(defs) != 1 or not isinstance(defs[0], ast.Subscript):
                break
            e = defs[0].value
            seen += 1
        return _dump(e)

    def same_positions(p: ast.AST, q: ast.AST) -> bool:
        return position_root(p) == position_root(q)

    for subs in subs_by_base.values():
        if len(subs) < 2 or len(subs) > 400:
            continue
        for b in subs:
            if id(b) in scope.target_nodes:
                continue
            # the latest view is the target: with s[i - 1], s[i] and s[i + 1] all read, s[i] is context for
            # s[i + 1] (the byte just seen, fed to an update that predicts the next one), not a target itself
            if any(a is not b and _slice_pair_target(a, b, same_positions) for a in subs) and not any(
                c is not b and _slice_pair_target(b, c, same_positions) for c in subs
            ):
                scope.target_nodes.add(id(b))
                scope.shifted_nodes.add(id(b))
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


# The interprocedural facts and the scoring queries live in their own modules (kept under ~600 lines each); the
# names other rules import from here are resolved lazily (those modules import this one).
_REEXPORTS = {
    "reach_of": "auditor.flow.target_queries",
    "TargetFacts": "auditor.flow.target_calls",
    "target_facts": "auditor.flow.target_calls",
}


def __getattr__(name: str) -> object:
    module = _REEXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
