"""Forward hooks in the taint engine: what a registered hook captures, and from which forward passes.

A hook registered with `module.register_forward_hook(fn)` sees the activations of every forward pass that runs
while it is registered. The engine therefore analyses, for a function that registers hooks:

- only the functions actually registered: `fn` itself (a nested def, a module-level function, an own function
  imported from a sibling module) or, for a factory `register_forward_hook(make_hook(name))`, the functions the
  factory defines (the closure it returns). Other nested functions (schedules, step closures) are not hooks;
- with the data of the calls that run inside the registration window: after the first registration and before the
  handles are removed (`h.remove()`). A validation eval that ran before the hooks were installed feeds nothing to
  them (the monitoring eval of a training loop, then GPTQ Hessian hooks over training batches).

Hook parameters (module, inputs, output) carry the *statistics* kind of the data (auditor.flow.taint_values
`STAT_OF`): activations captured during a forward pass are calibration statistics, not the data itself.
"""

from __future__ import annotations

import ast
import re
from typing import TYPE_CHECKING

from auditor.flow.program import Func
from auditor.flow.taint_values import EMPTY, HOOK_STEP, STAT_OF, derive, join

if TYPE_CHECKING:
    from auditor.flow.taint_engine import Ctx

HOOK_REGISTRARS = re.compile(r"^register_.*hook$")
_REMOVERS = ("remove",)


def _pos(node: ast.AST) -> tuple[int, int]:
    return (getattr(node, "lineno", 0), getattr(node, "col_offset", 0))


class HookMixin:
    """Mixed into TaintEngine: `_registers_hooks` / `_run_hooks` are called by `_analyse`."""

    def _registers_hooks(self, ctx: Ctx) -> bool:
        return any(s.attr and HOOK_REGISTRARS.match(s.attr) for s in ctx.func.calls)

    def _hook_funcs(self, ctx: Ctx, reg: ast.Call) -> list[Func]:
        """The functions a registration call installs as hooks."""
        expr = reg.args[0] if reg.args else next((k.value for k in reg.keywords if k.arg == "hook"), None)
        if expr is None:
            return []
        if isinstance(expr, ast.Call) and self.prog.dotted(ctx.func.unit.name, expr.func, ctx.func) in (
            "functools.partial",
            "partial",
        ):
            expr = expr.args[0] if expr.args else expr
        if isinstance(expr, ast.Name):
            got = self.prog.lookup_name(ctx.func, expr.id)
            return [got] if isinstance(got, Func) else []
        if isinstance(expr, ast.Call):  # a factory: the closures it defines are what it returns
            site = self.prog.site_of(expr)
            out: list[Func] = []
            for factory in (site.callees if site is not None else [])[:4]:
                todo = list(factory.nested.values())
                while todo:
                    nf = todo.pop()
                    todo.extend(nf.nested.values())
                    out.append(nf)
            return out
        return []

    def _run_hooks(self, ctx: Ctx) -> None:
        """Analyse the registered hook functions with the statistics of the data that the forward passes inside
        the registration window consume (their writes reach our locals through `ctx.sticky`)."""
        regs = [s for s in ctx.func.calls if s.attr and HOOK_REGISTRARS.match(s.attr)]
        hooks: list[Func] = []
        for s in regs:
            for f in self._hook_funcs(ctx, s.node):
                if f not in hooks:
                    hooks.append(f)
        if not hooks:
            return
        start = min(_pos(s.node) for s in regs)
        removals = [
            _pos(s.node)
            for s in ctx.func.calls
            if s.attr in _REMOVERS and not s.callees and _pos(s.node) > start
        ]
        end = min(removals) if removals else (1 << 30, 0)
        taint = EMPTY
        for site in ctx.func.calls:
            if site.attr and HOOK_REGISTRARS.match(site.attr):
                continue
            if site.ext is not None and site.resolution == "external":
                continue
            if not (start < _pos(site.node) < end):
                continue  # runs before the hooks are installed or after they are removed
            for a in list(site.node.args) + [k.value for k in site.node.keywords]:
                av = self.eval(ctx, a).flat()
                if av.kinds:
                    taint = join(taint, derive(av, STAT_OF, (ctx.func.unit, site.node, HOOK_STEP)))
        if not taint.kinds:
            return
        for nf in hooks:
            parent = self._nested_parent(ctx, nf)
            hook = self._new_ctx(nf, ("hook", nf.fid, id(ctx)), {p: taint for p in nf.params}, parent, ctx)
            before = dict(ctx.env)
            for _ in range(2):
                self._block(hook, nf.node.body)
            for k, v in ctx.env.items():  # locals of ours the hook mutated
                if v.deep_kinds() - before.get(k, EMPTY).deep_kinds():
                    ctx.sticky[k] = join(ctx.sticky.get(k, EMPTY), v)

    def _nested_parent(self, ctx: Ctx, nf: Func) -> Ctx | None:
        """The lexical context a hook closure runs in: ours when defined here, else its factory's context."""
        p = nf.parent
        if p is None or p.kind != "function":
            return None if p is None else self.module_ctx.get(nf.unit.name)
        if p is ctx.func:
            return ctx
        for c in self.ctxs.get(p, []):
            if c.parent is ctx or c.caller is ctx:
                return c
        return ctx
