"""Which positions an update, a fit or a scoring reads: def-use closures inside one function, the slices that
restrict positions (``nll[i, s:wlen]``, ``mask[i, :s] = 1``), whether a loop moves to new positions each iteration.
Used by PG201 (update and score on disjoint positions), PG202 (SLOT/ETLB: optimized vs scored positions, shared by
the windows of a batch) and PG203."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from typing import TYPE_CHECKING

from auditor.flow.syntax import assigned_names, last_attr, names_in, simple_statements, stmt_reads

if TYPE_CHECKING:
    from auditor.flow.order_index import FuncInfo


def is_data_loop(loop: ast.AST) -> bool:
    """Do iterations visit different positions? True when a value that changes per iteration (the loop target,
    or for `while` loops a name re-bound from a call each time round) reaches an index or slice in the body.
    An epoch loop (`for epoch in range(E)`) only reaches lr schedules, logs and `if epoch == E-1` tests."""
    body = list(getattr(loop, "body", []))
    if isinstance(loop, (ast.For, ast.AsyncFor)):
        derived = names_in(loop.target)
    else:
        derived = set()
        for s in simple_statements(body):
            if isinstance(s, (ast.Assign, ast.AugAssign)) and any(
                isinstance(n, ast.Call) for n in ast.walk(s.value)
            ):
                derived |= assigned_names(s)
    stmts = list(simple_statements(body))
    for _ in range(6):
        grew = False
        for s in stmts:
            if stmt_reads(s) & derived:
                new = assigned_names(s) - derived
                if new:
                    derived |= new
                    grew = True
        if not grew:
            break
    for s in stmts:
        for n in ast.walk(s):
            if isinstance(n, ast.Subscript) and names_in(n.slice) & derived:
                return True
            if isinstance(n, ast.Call) and last_attr(n.func) in ("narrow", "index_select", "gather", "take"):
                if any(names_in(a) & derived for a in n.args):
                    return True
    return False


def def_map(fi: FuncInfo) -> dict[str, list[ast.stmt]]:
    """Every statement that binds or mutates each name in `fi` (flow-insensitive)."""
    defs: dict[str, list[ast.stmt]] = {}
    for s in simple_statements(fi.body):
        if isinstance(s, (ast.If, ast.While, ast.With, ast.AsyncWith, ast.Try)):
            continue
        for n in assigned_names(s):
            defs.setdefault(n, []).append(s)
    return defs


def closure(defs: dict[str, list[ast.stmt]], names: set[str], follow_indices: bool = False) -> set[int]:
    """Ids of the statements that (transitively) define `names`, following values (and, if asked, the indices and
    masks that select positions: `nll[mask]`)."""
    seen_names: set[str] = set()
    out: dict[int, ast.stmt] = {}
    todo = list(names)
    while todo:
        n = todo.pop()
        if n in seen_names:
            continue
        seen_names.add(n)
        for s in defs.get(n, []):
            if id(s) in out:
                continue
            out[id(s)] = s
            if isinstance(s, (ast.For, ast.AsyncFor)):
                reads = names_in(s.iter)
            else:
                reads = names_in(s, skip_slices=not follow_indices)
            todo.extend(reads - seen_names)
    return set(out)


def statements_by_id(fi: FuncInfo) -> dict[int, ast.stmt]:
    return {id(s): s for s in simple_statements(fi.body)}


def position_slices(stmts: Iterable[ast.stmt]) -> set[tuple[str, str]]:
    """The (lower, upper) bounds of the last sliced axis of every subscript in `stmts` that restricts positions
    with a bound that is not a constant (`nll[i, s:wlen]`, `mask[i, :s] = 1`), as source text."""
    out: set[tuple[str, str]] = set()
    for s in stmts:
        roots = [s.target] if isinstance(s, (ast.For, ast.AsyncFor)) else [s]
        for root in roots:
            for node in ast.walk(root):
                if not isinstance(node, ast.Subscript):
                    continue
                sl = node.slice
                last = sl.elts[-1] if isinstance(sl, ast.Tuple) and sl.elts else sl
                if not isinstance(last, ast.Slice) or last.step is not None:
                    continue
                lo = ast.unparse(last.lower) if last.lower is not None else ""
                hi = ast.unparse(last.upper) if last.upper is not None else ""
                if _constant_bound(last.lower) and (_constant_bound(last.upper) or _minus_one(last.upper)):
                    continue  # [:-1], [1:], [:, :seq_len - 1]: the input/target shift, not a choice of positions
                out.add((lo, hi))
    return out


def _minus_one(node: ast.expr | None) -> bool:
    return (
        isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.Sub)
        and isinstance(node.right, ast.Constant)
        and node.right.value == 1
    )


def _constant_bound(node: ast.expr | None) -> bool:
    if node is None:
        return True
    if isinstance(node, ast.UnaryOp):
        node = node.operand
    return isinstance(node, ast.Constant)


def value_names(node: ast.AST) -> set[str]:
    """Names whose values an accumulation / backward reads (the receiver of `loss.backward()`, the right-hand
    side of `total += v`, the arguments of `total.add_(v)`)."""
    if isinstance(node, ast.AugAssign):
        return names_in(node.value, skip_slices=True)
    if isinstance(node, ast.Assign):
        return names_in(node.value, skip_slices=True)
    if isinstance(node, ast.Call):
        if isinstance(node.func, ast.Attribute) and node.func.attr == "backward":
            return names_in(node.func.value, skip_slices=True)
        parts = [*node.args, *(k.value for k in node.keywords)]
        return set().union(*(names_in(p, skip_slices=True) for p in parts)) if parts else set()
    return names_in(node, skip_slices=True)


def canonical(text: str, defs: dict[str, list[ast.stmt]], depth: int) -> str:
    """A bound's shape with names replaced by their single definition (up to `depth` levels) and otherwise
    anonymised: `_s` and `s` both defined as `0 if ws == 0 else max(wlen - stride, 0)` compare equal."""
    if not text:
        return ""
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        return text
    return _canon(node, defs, depth)


def _canon(node: ast.AST, defs: dict[str, list[ast.stmt]], depth: int) -> str:
    if isinstance(node, ast.Name):
        own = defs.get(node.id, [])
        if (
            depth > 0
            and len(own) == 1
            and isinstance(own[0], ast.Assign)
            and len(own[0].targets) == 1
            and isinstance(own[0].targets[0], ast.Name)
        ):
            return _canon(own[0].value, defs, depth - 1)
        return "N"
    if isinstance(node, ast.Constant):
        return repr(node.value)
    parts = [type(node).__name__]
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.expr_context,)):
            continue
        parts.append(_canon(child, defs, depth))
    return "(" + " ".join(parts) + ")"
