"""One pass over a function body that records its call sites (evaluation order), function references, decided
branches (gates), loops and dynamic-dispatch defeats. Used by Program while building the index.
"""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING

from auditor.flow.model import _DEF_NODES, _FUNC_NODES, _LOOPS, CallSite, Func, Gate
from auditor.flow.nodeindex import child_nodes

if TYPE_CHECKING:
    from auditor.flow.program import Program

# nodes the body walker records nothing for and that hold no node it would record: not worth a visit
_INERT = (ast.Constant, ast.expr_context, ast.operator, ast.cmpop, ast.unaryop, ast.boolop)


class BodyWalker:
    """One pass over a function body: call sites in evaluation order, refs, decided branches, loops."""

    def __init__(self, prog: Program, f: Func, counter: list[int]):
        self.prog, self.f, self.counter = prog, f, counter

    def visit(self, n: ast.AST, gates: tuple[Gate, ...], loops: tuple[ast.AST, ...]) -> None:
        f, prog = self.f, self.prog
        if isinstance(n, ast.Name):  # the commonest node first; a stored name has nothing below it to visit
            if isinstance(n.ctx, ast.Load):
                target = prog.lookup_name(f, n.id)
                if isinstance(target, Func):
                    f.refs.append((n, target, gates))
            return
        if isinstance(n, _DEF_NODES):
            for d in n.decorator_list:
                self.visit(d, gates, loops)
            if isinstance(n, _FUNC_NODES):
                for d in n.args.defaults + [x for x in n.args.kw_defaults if x is not None]:
                    self.visit(d, gates, loops)
            return
        if isinstance(n, (ast.If, ast.IfExp)):
            self.visit(n.test, gates, loops)
            for branch, part in (("body", n.body), ("orelse", n.orelse)):
                g = prog._gate(f, n.test, branch)
                if g is not None:
                    prog.branch_gates[(id(n), branch)] = g
                nodes = part if isinstance(part, list) else [part]
                if not nodes:
                    continue
                sub = gates + (g,) if g is not None else gates
                if g is not None:
                    start = (nodes[0].lineno, nodes[0].col_offset)
                    last = nodes[-1]
                    f.regions.append((start, (last.end_lineno or 0, last.end_col_offset or 0), g))
                for x in nodes:
                    self.visit(x, sub, loops)
            return
        if isinstance(n, _LOOPS):
            head = [n.iter, n.target] if isinstance(n, (ast.For, ast.AsyncFor)) else [n.test]
            for x in head:
                self.visit(x, gates, loops)
            for x in n.body:
                self.visit(x, gates, loops + (n,))
            for x in n.orelse:
                self.visit(x, gates, loops)
            return
        if isinstance(n, ast.Call):
            for child in child_nodes(n):
                if child is n.func:
                    self._visit_callee_expr(child, gates, loops)
                elif not isinstance(child, _INERT):
                    self.visit(child, gates, loops)
            callees, constructs, ext, how = prog.resolve(f, n)
            self.counter[0] += 1
            site = CallSite(f, n, callees, ext, constructs, how, gates, loops, self.counter[0])
            f.calls.append(site)
            self._note_defeated(n, ext)
            return
        if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Load):
            if isinstance(n.value, ast.Name) and f.params and n.value.id == f.params[0] and f.cls is not None:
                m = f.cls.method(n.attr)
                if m is not None:  # bound method passed as a value (`self.hook`)
                    f.refs.append((n, m, gates))
        for child in child_nodes(n):
            if not isinstance(child, _INERT):
                self.visit(child, gates, loops)

    def _visit_callee_expr(self, fexpr: ast.AST, gates: tuple[Gate, ...], loops: tuple[ast.AST, ...]) -> None:
        # the callee expression itself is not a reference (it is the call); its sub-expressions may hold calls
        if isinstance(fexpr, ast.Name):
            return
        if isinstance(fexpr, ast.Attribute):
            self._visit_callee_expr(fexpr.value, gates, loops) if isinstance(
                fexpr.value, ast.Attribute
            ) else (self.visit(fexpr.value, gates, loops) if not isinstance(fexpr.value, ast.Name) else None)
            return
        self.visit(fexpr, gates, loops)

    def _note_defeated(self, n: ast.Call, ext: str | None) -> None:
        fexpr = n.func
        reason = None
        if (
            isinstance(fexpr, ast.Call)
            and isinstance(fexpr.func, ast.Name)
            and fexpr.func.id == "getattr"
            and len(fexpr.args) >= 2
            and not isinstance(fexpr.args[1], ast.Constant)
            and not self.prog.is_external_root(self.f.unit.name, fexpr.args[0], self.f)
        ):
            reason = "call through getattr with a computed attribute name"
        elif ext in ("exec", "eval", "builtins.exec", "builtins.eval"):
            reason = f"{ext}() of code that is not decoded statically"
        elif ext in ("importlib.import_module", "__import__"):
            reason = "module imported by computed name"
        elif (
            isinstance(fexpr, ast.Subscript)
            and isinstance(fexpr.value, ast.Call)
            and isinstance(fexpr.value.func, ast.Name)
            and fexpr.value.func.id in ("globals", "locals", "vars")
        ):
            reason = f"call through {fexpr.value.func.id}()[...]"
        if reason:
            self.prog.defeated.append((self.f.unit.location(n), reason, self.f))
