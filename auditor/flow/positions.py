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
    from auditor.flow.events import Event
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
    """Names whose values an accumulation / backward / scoring reduction reads (the receiver of `loss.backward()`
    and of `nll.sum()`, the right-hand side of `total += v`, the arguments of `total.add_(v)`, `sum(xs)`)."""
    if isinstance(node, ast.AugAssign):
        return names_in(node.value, skip_slices=True)
    if isinstance(node, ast.Assign):
        return names_in(node.value, skip_slices=True)
    if isinstance(node, ast.Call):
        if isinstance(node.func, ast.Attribute) and node.func.attr in ("backward", "sum"):
            # `loss.backward()`; `nll.sum()` (a whole-sequence scoring reduction): the receiver is the value
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


# ----------------------------------------------------------------------------------------------------------------
# Comparing the positions an update/fit reads with the positions a scoring reads
# ----------------------------------------------------------------------------------------------------------------
def compare_positions(fit_node: ast.AST, fit_func: FuncInfo, score: Event) -> tuple[str, str]:
    """Which positions does the loss that fits state (a backward's loss, a fitted bias) read, compared with the
    positions `score` accumulates? Returns (kind, detail): kind ``same`` (the scored slice itself), ``all`` (no
    restriction: the scored positions included), ``context`` (a slice that ends where the scored slice starts),
    ``unknown``.

    Statements feeding both (window slicing, hidden states) cancel out; what is left on each side is the mask or
    slice that only the fit or only the scoring applies."""
    if fit_func is not score.func and fit_func.parent is not score.func:
        return "unknown", "the fit and the scoring are in different functions"
    # a closure handed to the optimizer (`lbfgs.step(closure)`) reads the enclosing function's names, except
    # those it binds itself
    defs = def_map(score.func)
    by_id = statements_by_id(score.func)
    opt_defs = defs
    if fit_func is not score.func:
        opt_defs = {**defs, **def_map(fit_func)}
        by_id.update(statements_by_id(fit_func))
    opt_ids = closure(opt_defs, position_names(fit_node), follow_indices=True)
    score_ids = closure(defs, position_names(score.node), follow_indices=True)
    # the fitted loss's own expression restricts positions too (`cross_entropy(model(x[:, :s]), y[:, :s]).backward()`)
    own = [fit_node] if not isinstance(fit_node, ast.stmt) else []
    opt_slices = position_slices([*(by_id[i] for i in opt_ids - score_ids if i in by_id), *own])
    scored_stmt = [score.node] if isinstance(score.node, ast.stmt) else []
    score_slices = position_slices([*(by_id[i] for i in score_ids - opt_ids if i in by_id), *scored_stmt])
    same = opt_slices & score_slices
    if same:
        lo, hi = sorted(same)[0]
        return "same", f"[{lo}:{hi}]"
    if not opt_slices:
        return "all", "no position restriction on the fitted loss"
    lowers = {lo for lo, _ in score_slices if lo}
    # `s = 0 if ws == 0 else context_size`: the first window scores from 0, every other from the context's end
    lowers |= {alt for lo in list(lowers) for alt in _conditional_bounds(lo, defs)}
    ending = sorted((lo, hi) for lo, hi in opt_slices if hi and hi in lowers)
    if ending:
        lo, hi = ending[0]
        return "context", f"fitted on [{lo}:{hi}], scored from [{hi}:]"
    # the same bounds under other names (`mask[_i, _s:_wlen]` built in its own loop vs `nll[i, s:wlen]`)
    for olo, ohi in sorted(opt_slices):
        for slo, shi in sorted(score_slices):
            if (
                olo
                and canonical(olo, opt_defs, 2) == canonical(slo, defs, 2)
                and canonical(ohi, opt_defs, 0) == canonical(shi, defs, 0)
            ):
                return "same", f"[{olo}:{ohi}] computed like the scored [{slo}:{shi}]"
    return "unknown", f"fitted {sorted(opt_slices)}, scored {sorted(score_slices)}"


def _conditional_bounds(name: str, defs: dict[str, list[ast.stmt]]) -> set[str]:
    """The non-constant arms of a bound defined by a conditional (`s = 0 if ws == 0 else ctx`: {"ctx"})."""
    out: set[str] = set()
    for d in defs.get(name, []):
        if isinstance(d, ast.Assign) and isinstance(d.value, ast.IfExp):
            for arm in (d.value.body, d.value.orelse):
                if not isinstance(arm, ast.Constant):
                    out.add(ast.unparse(arm))
    return out


def position_names(node: ast.AST) -> set[str]:
    """Names the fitted loss / scored value reads, masks and indices included (`nll[mask]`, `nll[i, s:e]`)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "backward":
        return names_in(node.func.value)
    if isinstance(node, (ast.AugAssign, ast.Assign)):
        return names_in(node.value)
    return names_in(node)


def rows_scored_separately(fit: Event, score: Event) -> ast.AST | None:
    """The loop, entered after the fit and not shared with it, in which the scoring visits the rows of a batch one
    by one (`for i, ws in enumerate(batch): loss += nll[i, s:wlen]`): one fitted state serves several windows.
    None when each fit serves one scored window."""
    shared = {id(lp) for lp in fit.loops}
    for lp in score.loops:
        if id(lp) not in shared and is_data_loop(lp):
            return lp
    return None


def per_row_tensor(name: str, func: FuncInfo) -> bool | None:
    """Was the free tensor `name` created with a leading axis per row of the batch (`zeros(bsz, 1, d)`)? False for
    a leading axis of constant size 1 or a single axis (`zeros(1, 1, V)`, `zeros(V)`: one tensor shared by every
    window of the batch); None when its creation is not visible."""
    for d in def_map(func).get(name, []):
        if not isinstance(d, ast.Assign):
            continue
        node: ast.AST = d.value
        while isinstance(node, ast.Call):
            if last_attr(node.func) in ("zeros", "ones", "full", "empty", "randn", "rand", "zeros_like"):
                shape = list(node.args)
                if last_attr(node.func) == "full" and len(shape) == 2:
                    shape = shape[:1]
                if len(shape) == 1 and isinstance(shape[0], (ast.Tuple, ast.List)):
                    shape = list(shape[0].elts)
                if last_attr(node.func) == "zeros_like":
                    return None
                if len(shape) <= 1:
                    return False
                return not (isinstance(shape[0], ast.Constant) and shape[0].value == 1)
            node = node.func.value if isinstance(node.func, ast.Attribute) else node.func
    return None


def fit_positions(fit: Event, score: Event, targets: frozenset[str]) -> tuple[str, str]:
    """For a `fit` event at a loss call whose prediction was built from validation targets in the same pass (an
    eval-time logit bias fitted by hand-written gradient steps, no `backward()`): which target positions fed the
    prediction, compared with the scored ones. `targets` are the fit function's loss-target names. Kinds as in
    `compare_positions`."""
    if fit.func is not score.func or not isinstance(fit.node, ast.Call) or not fit.node.args:
        return "unknown", "the fit and the scoring are in different functions"
    defs = def_map(fit.func)
    by_id = statements_by_id(fit.func)
    pred_ids = closure(defs, names_in(fit.node.args[0]), follow_indices=True)
    fitted = [by_id[i] for i in pred_ids if i in by_id and _reads(by_id[i]) & targets]
    fit_slices = position_slices(fitted)
    score_ids = closure(defs, position_names(score.node), follow_indices=True)
    scored_stmt = [score.node] if isinstance(score.node, ast.stmt) else []
    score_slices = position_slices([*(by_id[i] for i in score_ids - pred_ids if i in by_id), *scored_stmt])
    if not fit_slices:
        return "all", "no position restriction on the targets it is fitted on"
    same = fit_slices & score_slices
    if same:
        lo, hi = sorted(same)[0]
        return "same", f"[{lo}:{hi}]"
    lowers = {lo for lo, _ in score_slices if lo}
    lowers |= {alt for lo in list(lowers) for alt in _conditional_bounds(lo, defs)}
    ending = sorted((lo, hi) for lo, hi in fit_slices if hi and hi in lowers)
    if ending:
        lo, hi = ending[0]
        return "context", f"fitted on [{lo}:{hi}], scored from [{hi}:]"
    return "unknown", f"fitted {sorted(fit_slices)}, scored {sorted(score_slices)}"


def _reads(stmt: ast.stmt) -> set[str]:
    """Names a statement reads (the value side of an assignment; `y = ...` defines `y`, it does not read it)."""
    if isinstance(stmt, (ast.Assign, ast.AugAssign, ast.AnnAssign)) and stmt.value is not None:
        return names_in(stmt.value)
    return names_in(stmt)


def fitted_tensors(fit: Event, targets: frozenset[str]) -> list[str]:
    """Names in the fit's prediction closure that are created once by a tensor constructor and then re-bound from
    target-derived values (`bias = zeros(V)` ... `bias = cur_bias.detach()`): the state the fit optimizes."""
    if not isinstance(fit.node, ast.Call) or not fit.node.args:
        return []
    defs = def_map(fit.func)
    by_id = statements_by_id(fit.func)
    pred_ids = closure(defs, names_in(fit.node.args[0]), follow_indices=True)
    out: list[str] = []
    for name, stmts in defs.items():
        if not any(id(st) in pred_ids for st in stmts) or len(stmts) < 2:
            continue
        if per_row_tensor(name, fit.func) is not None and any(
            names_in(by_id.get(id(st), st)) - {name} for st in stmts if id(st) in pred_ids
        ):
            out.append(name)
    return out
