"""Syntax queries shared by the order analysis (auditor.flow.order) and its position reasoning: which names a
statement reads or binds, the statements of a body, dotted names, no-grad contexts, module constants, tensors
created with requires_grad. Pure functions over the stdlib ``ast``; no identifier spelling decides anything."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator

from auditor.flow import vocab

MUTATORS = vocab.CONTAINER_MUTATORS
NO_GRAD_CALLS = vocab.NO_GRAD_CONTEXTS


def sub_bodies(stmt: ast.stmt) -> Iterator[list[ast.stmt]]:
    for attr in ("body", "orelse", "finalbody"):
        sub = getattr(stmt, attr, None)
        if isinstance(sub, list) and sub and isinstance(sub[0], ast.stmt):
            yield sub
    for h in getattr(stmt, "handlers", []) or []:
        yield h.body
    for case in getattr(stmt, "cases", []) or []:
        yield case.body


def dotted(node: ast.AST) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Call):
        inner = dotted(node.func)
        return None if inner is None else ".".join([inner, *reversed(parts)])
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def last_attr(node: ast.AST) -> str | None:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


def is_no_grad_ctx(expr: ast.expr) -> bool:
    """`torch.no_grad()`, `torch.inference_mode()`, `torch.set_grad_enabled(False)` (also as decorators)."""
    target = expr.func if isinstance(expr, ast.Call) else expr
    last = last_attr(target)
    if last in NO_GRAD_CALLS:
        if isinstance(expr, ast.Call) and last == "inference_mode" and expr.args:
            first = expr.args[0]
            return not (isinstance(first, ast.Constant) and first.value is False)
        return True
    if last == "set_grad_enabled" and isinstance(expr, ast.Call) and expr.args:
        first = expr.args[0]
        return isinstance(first, ast.Constant) and first.value is False
    return False


def is_enable_grad(expr: ast.expr) -> bool:
    target = expr.func if isinstance(expr, ast.Call) else expr
    return last_attr(target) == "enable_grad"


def base_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred)):
        node = node.value
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return base_name(node.func.value)
    return node.id if isinstance(node, ast.Name) else None


def _constant(node: ast.AST | None, consts: dict[str, object]) -> object:
    """A literal, or a module-level name bound once to a literal (minifiers hoist `True` into `F=True`)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in consts:
        return consts[node.id]
    return _UNSET


_UNSET = object()


def module_constants(tree: ast.Module, kind: type = ast.Constant) -> dict[str, object]:
    """Module-scope names bound exactly once to a literal (or, with kind=ast.Name, to another name: `S=bool`)."""
    counts: dict[str, int] = {}
    values: dict[str, object] = {}
    for stmt in simple_statements(tree.body):
        for n in assigned_names(stmt):
            counts[n] = counts.get(n, 0) + 1
        if isinstance(stmt, ast.Assign) and isinstance(stmt.value, kind):
            for t in stmt.targets:
                if isinstance(t, ast.Name):
                    values[t.id] = stmt.value.value if isinstance(stmt.value, ast.Constant) else stmt.value.id  # type: ignore[attr-defined]
    return {k: v for k, v in values.items() if counts.get(k) == 1}


def creates_free_tensor(value: ast.expr, consts: dict[str, object] | None = None) -> bool:
    """`torch.zeros(..., requires_grad=True)`, `nn.Parameter(...)`, `t.clone().requires_grad_()` and the same
    wrapped in method chains (`.to(device)`): the calls along the value's call chain, not its arguments."""
    consts = consts or {}
    node: ast.AST = value
    while isinstance(node, ast.Call):
        for kw in node.keywords:
            if kw.arg == "requires_grad" and _constant(kw.value, consts) is True:
                return True
        last = last_attr(node.func)
        if last == "Parameter":
            return True
        if last == "requires_grad_":
            return not (node.args and _constant(node.args[0], consts) is False)
        node = node.func.value if isinstance(node.func, ast.Attribute) else node.func
        while isinstance(node, (ast.Attribute, ast.Subscript)):
            node = node.value
    return False


_LEAVES = (
    ast.Name,
    ast.Constant,
    ast.expr_context,
    ast.operator,
    ast.boolop,
    ast.cmpop,
    ast.unaryop,
    ast.alias,
)
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)


def calls_with_ng(body: list[ast.stmt]) -> list[tuple[ast.Call, bool]]:
    """Every call in a function body (not in nested defs) with whether it sits in a no-grad with-block."""
    out: list[tuple[ast.Call, bool]] = []
    stack: list[tuple[ast.AST, bool]] = [(s, False) for s in reversed(body)]
    while stack:
        node, ng = stack.pop()
        if isinstance(node, _LEAVES) or isinstance(node, _SCOPES):
            continue
        if isinstance(node, (ast.With, ast.AsyncWith)):
            inner = ng
            for item in node.items:
                if is_no_grad_ctx(item.context_expr):
                    inner = True
                elif is_enable_grad(item.context_expr):
                    inner = False
                stack.append((item.context_expr, ng))
            stack.extend((s, inner) for s in node.body)
            continue
        if isinstance(node, ast.Call):
            out.append((node, ng))
        for name in node._fields:
            value = getattr(node, name, None)
            if isinstance(value, list):
                stack.extend((v, ng) for v in value if isinstance(v, ast.AST))
            elif isinstance(value, ast.AST):
                stack.append((value, ng))
    return out


def names_in(node: ast.AST, skip_slices: bool = False) -> set[str]:
    out: set[str] = set()

    def walk(n: ast.AST) -> None:
        if isinstance(n, ast.Name):
            out.add(n.id)
            return
        if skip_slices and isinstance(n, ast.Subscript):
            walk(n.value)
            return
        for ch in ast.iter_child_nodes(n):
            walk(ch)

    walk(node)
    return out


def assigned_names(s: ast.stmt) -> set[str]:
    """Names a statement binds or mutates in place (subscript/attribute stores, `x.append(...)`, `x.add_(...)`)."""
    out: set[str] = set()
    targets: list[ast.expr] = []
    if isinstance(s, ast.Assign):
        targets = list(s.targets)
    elif isinstance(s, (ast.AugAssign, ast.AnnAssign)):
        targets = [s.target]
    elif isinstance(s, (ast.For, ast.AsyncFor)):
        targets = [s.target]
    elif (
        isinstance(s, ast.Expr) and isinstance(s.value, ast.Call) and isinstance(s.value.func, ast.Attribute)
    ):
        attr = s.value.func.attr
        if attr in MUTATORS or attr.endswith("_"):
            b = base_name(s.value.func.value)
            if b:
                out.add(b)
    for t in targets:
        for n in ast.walk(t):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                out.add(n.id)
        b = base_name(t)
        if b:
            out.add(b)
    return out


def simple_statements(body: Iterable[ast.stmt]) -> Iterator[ast.stmt]:
    """All statements under `body` except the bodies of nested defs, compound statements included."""
    for s in body:
        if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        yield s
        for sub in sub_bodies(s):
            yield from simple_statements(sub)


def stmt_reads(s: ast.stmt) -> set[str]:
    if isinstance(s, (ast.For, ast.AsyncFor)):
        return names_in(s.iter)
    if isinstance(s, ast.While):
        return names_in(s.test)
    if isinstance(s, ast.If):
        return names_in(s.test)
    if isinstance(s, (ast.With, ast.AsyncWith)):
        return set().union(*(names_in(i.context_expr) for i in s.items))
    if isinstance(s, (ast.Try, ast.FunctionDef, ast.ClassDef)):
        return set()
    return names_in(s)
