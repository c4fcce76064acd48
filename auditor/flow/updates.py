"""What an update event trains (module weights or a free eval-time tensor), which optimizer step commits it, and
whether its trained state is thrown away (a warm-up) or owned by one call (a per-call adapter)."""

from __future__ import annotations

import ast

from auditor.flow.events import Event
from auditor.flow.order_index import FuncInfo
from auditor.flow.syntax import (
    MUTATORS,
    assigned_names,
    base_name,
    calls_with_ng,
    creates_free_tensor,
    dotted,
    module_constants,
    names_in,
    simple_statements,
)


def classify_update(ev: Event) -> None:
    """Fill `target`, `step` and `throwaway` for an update event, from the function the backward is written in."""
    fi = ev.func
    stmts = list(simple_statements(fi.body))
    defs: dict[str, list[ast.stmt]] = {}
    for s in stmts:
        for n in assigned_names(s):
            defs.setdefault(n, []).append(s)
    line = getattr(ev.node, "lineno", 0)
    step_call: ast.Call | None = None
    for n, _ng in calls_with_ng(fi.body):
        if (
            isinstance(n.func, ast.Attribute)
            and n.func.attr == "step"
            and not n.args
            and getattr(n, "lineno", 0) >= line
        ):
            if step_call is None or n.lineno < step_call.lineno:
                recv = base_name(n.func.value)
                if recv and _optimizer_params(recv, defs) is not None:
                    step_call = n
    if step_call is not None:
        ev.step = step_call
        ev.step_func = fi
        recv = base_name(step_call.func.value)  # type: ignore[union-attr]
        params = _optimizer_params(recv or "", defs, line)
        roots = _param_roots(params, defs) if params is not None else set()
        consts = module_constants(fi.unit.tree) if fi.unit.tree is not None else {}
        if roots and all(_is_free_tensor_def(r, defs, consts, line) for r in roots):
            ev.target = "free_tensor"
        ev.throwaway = bool(roots) and all(_is_throwaway(r, fi, defs, ev.node) for r in roots)
        if roots and all(_owned_locally(r, fi, defs) for r in roots):
            ev.owner = fi
    elif ev.rg:
        ev.target = "free_tensor"  # manual updates of a requires_grad tensor (no optimizer object)


def _optimizer_params(name: str, defs: dict[str, list[ast.stmt]], before: int = 10**9) -> ast.expr | None:
    """The parameter argument of the call that built optimizer `name` (an `optim.X(params, ...)` call): the last
    such binding before line `before` (branches often build different optimizers under one name)."""
    candidates = [d for d in defs.get(name, []) if getattr(d, "lineno", 0) <= before]
    for s in reversed(candidates or defs.get(name, [])):
        if isinstance(s, ast.Assign) and isinstance(s.value, ast.Call):
            call = s.value
            name = dotted(call.func) or ""
            if ".optim." in f".{name}" or name.startswith("optim."):
                return (
                    call.args[0]
                    if call.args
                    else next((k.value for k in call.keywords if k.arg == "params"), None)
                )
            if call.args:
                # a helper that builds the optimizer (`build_opt(config, lora)`): the argument that is an object
                # built here is what it optimizes; else its first argument
                for arg in call.args:
                    base = base_name(arg)
                    if base and any(
                        isinstance(d, ast.Assign) and isinstance(d.value, ast.Call)
                        for d in defs.get(base, [])
                    ):
                        return arg
                return call.args[0]
    return None


def _owned_locally(root: str, fi: FuncInfo, defs: dict[str, list[ast.stmt]], depth: int = 0) -> bool:
    """Is `root` an object built inside `fi` that never leaves it (not a parameter, not returned, not stored into
    an attribute, container or global)? Then updates to it end with the call."""
    own = defs.get(root, [])
    if root in fi.params or not own or depth > 2:
        return False
    for d in own:
        if not isinstance(d, ast.Assign):
            return False
        if isinstance(d.value, ast.Call):
            continue
        if isinstance(d.value, (ast.Tuple, ast.Name)):  # `cur, opt = lora, opt` aliases another local
            others = [n for n in names_in(d.value) if n != root]
            if others and all(_owned_locally(n, fi, defs, depth + 1) for n in others):
                continue
        return False
    for node in ast.walk(fi.node):
        if (
            isinstance(node, (ast.Return, ast.Yield))
            and node.value is not None
            and root in names_in(node.value)
        ):
            return False
        if isinstance(node, (ast.Global, ast.Nonlocal)) and root in node.names:
            return False
        if isinstance(node, ast.Assign) and root in names_in(node.value, skip_slices=True):
            if any(isinstance(t, (ast.Attribute, ast.Subscript)) for t in node.targets):
                return False
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MUTATORS:
            if any(isinstance(a, ast.Name) and a.id == root for a in node.args):
                return False
    return True


def _param_roots(params: ast.expr, defs: dict[str, list[ast.stmt]], depth: int = 0) -> set[str]:
    roots: set[str] = set()
    for n in names_in(params):
        own = defs.get(n, [])
        if depth < 3 and own and all(isinstance(s, ast.Assign) for s in own):
            values = [s.value for s in own if isinstance(s, ast.Assign)]
            if all(isinstance(v, (ast.List, ast.ListComp, ast.Tuple, ast.Name)) for v in values):
                for v in values:
                    roots |= _param_roots(v, defs, depth + 1)
                continue
        roots.add(n)
    return roots


def _is_free_tensor_def(
    name: str, defs: dict[str, list[ast.stmt]], consts: dict[str, object], before: int = 10**9
) -> bool:
    """Is `name`, as last bound before line `before`, a tensor created with requires_grad?"""
    own = [s for s in defs.get(name, []) if isinstance(s, (ast.Assign, ast.AnnAssign))]
    prior = [s for s in own if getattr(s, "lineno", 0) <= before]
    last = prior[-1] if prior else (own[-1] if own else None)
    return last is not None and last.value is not None and creates_free_tensor(last.value, consts)


def _is_throwaway(root: str, fi: FuncInfo, defs: dict[str, list[ast.stmt]], backward: ast.AST) -> bool:
    """The updated object is built here, used only by forward calls inside the update loop, then dropped."""
    own = defs.get(root, [])
    if root in fi.params or not own:
        return False
    if not all(isinstance(s, ast.Assign) and isinstance(s.value, ast.Call) for s in own):
        return False
    update_loop = _outermost_loop_containing(fi.body, backward)
    if update_loop is None:
        return False
    inside = {id(n) for n in ast.walk(update_loop)}
    parents = _parent_map(fi.node)
    for node in ast.walk(fi.node):
        if not (isinstance(node, ast.Name) and node.id == root and isinstance(node.ctx, ast.Load)):
            continue
        if id(node) in inside:
            continue
        if not _harmless_use(node, parents):
            return False
    # inside the loop: allowed as a call argument or `.parameters()` receiver; never stored, returned, or
    # read for its state
    for node in ast.walk(update_loop):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == root:
            if node.attr not in ("parameters", "named_parameters", "to", "train", "eval", "zero_grad"):
                return False
        if (
            isinstance(node, (ast.Return, ast.Yield))
            and node.value is not None
            and root in names_in(node.value)
        ):
            return False
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Name) and node.value.id == root:
            return False
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MUTATORS:
            if any(root in names_in(a) for a in node.args):
                return False
    return True


_HARMLESS_METHODS = frozenset(
    {
        "parameters",
        "named_parameters",
        "to",
        "train",
        "eval",
        "zero_grad",
        "cpu",
        "cuda",
        "float",
        "half",
        "bfloat16",
        "requires_grad_",
    }
)


def _parent_map(root: ast.AST) -> dict[int, ast.AST]:
    return {id(ch): node for node in ast.walk(root) for ch in ast.iter_child_nodes(node)}


def _harmless_use(name: ast.Name, parents: dict[int, ast.AST]) -> bool:
    """Uses of a local model outside its update loop that cannot carry its trained state anywhere else: calling
    it (outside a score accumulation), moving it between devices/modes, collecting its parameters, deleting it."""
    parent = parents.get(id(name))
    if isinstance(parent, ast.Call) and parent.func is name:
        node: ast.AST | None = parent
        while node is not None and not isinstance(node, ast.stmt):
            node = parents.get(id(node))
        return not isinstance(node, ast.AugAssign)
    if isinstance(parent, ast.Attribute) and parent.value is name:
        return parent.attr in _HARMLESS_METHODS
    return isinstance(parent, ast.Delete)


def _outermost_loop_containing(body: list[ast.stmt], target: ast.AST) -> ast.AST | None:
    for s in simple_statements(body):
        if isinstance(s, (ast.For, ast.AsyncFor, ast.While)):
            if any(n is target for n in ast.walk(s)):
                return s
    return None
