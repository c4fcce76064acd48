"""Building the per-function scopes of auditor.flow.targets: one flow-insensitive def-use map per function (and one
for each module's top level), in one pass over the tree."""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING

from auditor.flow.nodeindex import child_nodes
from auditor.flow.targets import (
    _DEF_SITES,
    _DEFS,
    _FUNCS,
    _LEAF_KINDS,
    Scope,
    call_name,
    store_root,
    var_key,
)

if TYPE_CHECKING:
    from auditor.facts import CodeUnit


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
