"""What the order analysis counts as scoring and as a loss, as syntax: running sums (`total += v` started from
zero), whole-sequence log-likelihood sums (`-np.log(p).sum()`), `min(...)` selections, the target a loss is computed
against (`cross_entropy(logits, y)`), entropy terms (`p * log p`, not a likelihood). Pure functions over the stdlib
``ast``, used by auditor.flow.order_interp."""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING

from auditor.flow import vocab
from auditor.flow.nodeindex import child_nodes
from auditor.flow.syntax import last_attr, names_in, simple_statements

if TYPE_CHECKING:
    from auditor.flow.order_index import FuncInfo


def loss_targets(fi: FuncInfo) -> frozenset[str]:
    """Names `fi`'s own code passes as the target of a loss (`cross_entropy(logits, y)`, `cross_entropy(lg,
    y_batch.reshape(-1))`; reshapes and casts keep the variable): reading them is reading validation *targets*. A
    slice of the token stream (`tokens[i + 1:j]`) names no target variable: the same stream also feeds the inputs."""
    out: set[str] = set()
    stack: list[ast.AST] = list(fi.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        stack.extend(child_nodes(node))
        if isinstance(node, ast.Call):
            name = loss_target(node)
            if name:
                out.add(name)
    return frozenset(out)


def loss_target(c: ast.Call) -> str | None:
    if last_attr(c.func) not in vocab.LOSS_FUNCS:
        return None
    tgt = c.args[1] if len(c.args) > 1 else next((k.value for k in c.keywords if k.arg == "target"), None)
    while isinstance(tgt, ast.Call) and isinstance(tgt.func, ast.Attribute):
        tgt = tgt.func.value
    return tgt.id if isinstance(tgt, ast.Name) else None


LOG_CALLS = frozenset({"log", "log2"})


def full_sum(c: ast.Call, name: str | None, attr: str | None) -> bool:
    """A reduction of everything to one number: `sum(xs)`, `x.sum()`, `np.sum(x)` (no dim/axis)."""
    if any(k.arg in ("dim", "axis") for k in c.keywords):
        return False
    if name == "sum":
        return len(c.args) == 1
    if attr == "sum":
        return not c.args or (
            len(c.args) == 1 and isinstance(c.func, ast.Attribute) and not _is_array(c.func)
        )
    return False


def _is_array(func: ast.Attribute) -> bool:
    """`x.sum(1)` reduces one axis of x; `np.sum(x)` is a module function whose first argument is the data."""
    return not (isinstance(func.value, ast.Name) and func.value.id in ("np", "numpy", "torch", "math"))


def entropy_term(e: ast.BinOp) -> bool:
    """`p * log(p)` (either order): the factor is the log's own argument."""
    for log_side, other in ((e.left, e.right), (e.right, e.left)):
        node = log_side
        while isinstance(node, ast.UnaryOp):
            node = node.operand
        if isinstance(node, ast.Call) and last_attr(node.func) in LOG_CALLS and node.args:
            if ast.dump(other) in ast.dump(node.args[0]):
                return True
    return False


def rebinds_itself(s: ast.Assign) -> bool:
    """`total = total + v`: an accumulation written as a rebinding."""
    if len(s.targets) != 1 or not isinstance(s.targets[0], ast.Name):
        return False
    name = s.targets[0].id
    v = s.value
    return isinstance(v, ast.BinOp) and any(
        isinstance(x, ast.Name) and x.id == name for x in (v.left, v.right)
    )


def is_min_selection(c: ast.Call) -> bool:
    """`min(a, b)`, `min(results)`, `torch.minimum(a, b)`, `np.nanmin(x)`, `results_tensor.min()`."""
    func = c.func
    if isinstance(func, ast.Name):
        return func.id == "min"
    if isinstance(func, ast.Attribute):
        return func.attr in ("minimum", "fmin", "nanmin", "amin") or (func.attr == "min" and not c.args)
    return False


_ZERO_CTORS = frozenset(
    {
        "zeros",
        "zeros_like",
        "tensor",
        "scalar_tensor",
        "full",
        "as_tensor",
        "float64",
        "float32",
        "double",
        "float",
        "int",
    }
)


def running_sums(fi: FuncInfo) -> set[str]:
    """Names that start at zero in `fi`, plus parameters it adds into but never returns."""
    out: set[str] = set()
    returned: set[str] = set()
    for st in simple_statements(fi.body):
        if isinstance(st, ast.Return) and st.value is not None:
            returned |= names_in(st.value)
        if isinstance(st, (ast.Assign, ast.AnnAssign)) and st.value is not None:
            targets = st.targets if isinstance(st, ast.Assign) else [st.target]
            values = st.value.elts if isinstance(st.value, ast.Tuple) else [st.value]
            flat: list[ast.expr] = []
            for t in targets:
                flat.extend(t.elts if isinstance(t, ast.Tuple) else [t])
            for t, v in zip(
                flat, values if len(values) == len(flat) else [st.value] * len(flat), strict=False
            ):
                if isinstance(t, ast.Name) and _is_zero(v):
                    out.add(t.id)
    out |= {p for p in fi.params if p not in returned}
    return out


def _is_zero(v: ast.expr) -> bool:
    if isinstance(v, ast.Constant):
        return isinstance(v.value, (int, float)) and not isinstance(v.value, bool) and v.value == 0
    node: ast.AST = v
    while isinstance(node, ast.Call):
        if last_attr(node.func) in _ZERO_CTORS:
            return True
        node = node.func.value if isinstance(node.func, ast.Attribute) else node.func
    return False


def accumulator(target: ast.AST) -> bool:
    """A sum being accumulated (`total`, `self.total`), not a table entry (`counts[k] += ...`, a write) nor a
    tensor's storage (`p.data`, `p.grad`)."""
    if isinstance(target, ast.Attribute):
        return target.attr not in ("data", "grad") and isinstance(target.value, ast.Name)
    return isinstance(target, ast.Name)
