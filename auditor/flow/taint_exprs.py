"""Expressions and calls of the taint interpreter (mixed into auditor.flow.taint_engine.TaintEngine).

What a value derives from, expression by expression: names, attributes (field-sensitive, class attributes),
subscripts, containers, comprehensions, and calls — own functions analysed per taint signature of their arguments,
objects built from tainted arguments, readers turning shard names into content, dataset loaders asked for a split,
loss functions (content -> `*-out`), opaque callables (a forward pass: `*-out`) and in-place mutators.
"""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING

from auditor.flow import vocab
from auditor.flow.program import ClassInfo, Func
from auditor.flow.taint_values import (
    AV,
    EMPTY,
    FORWARD_STEP,
    GRAM_STEP,
    LOSS_STEP,
    OUT_OF,
    STAT_OF,
    _element,
    _is_gram,
    _is_reader,
    _read,
    _reroot,
    _source,
    _with_step_deep,
    derive,
    join,
    split_source,
)

if TYPE_CHECKING:
    from auditor.flow.taint_engine import Ctx

# Sanitizers and mutators are declared once in auditor.flow.vocab (library semantics as data).
_METADATA_CALLS = vocab.METADATA_CALLS | {"print", "bool"}
_METADATA_ATTRS = vocab.METADATA_ATTRS
_MUTATORS = vocab.MUTATORS


class ExprMixin:
    """`eval` / `_call` and their helpers; the engine provides state (`ctxs`, `prog`, `module_ctx`, `edges`),
    `lookup`, `_assign`, `_mutate`, `_runs`, `_stmt` and `context`."""

    # ----------------------------------------------------------------------------------------------- expressions
    def eval(self, ctx: Ctx, e: ast.AST) -> AV:
        av = self._eval(ctx, e)
        key = id(e)
        old = ctx.node_avs.get(key)
        ctx.node_avs[key] = av if old is None else join(old, av)
        return av

    def _eval(self, ctx: Ctx, e: ast.AST) -> AV:  # noqa: C901 - expression dispatch
        # the node kinds are disjoint: the commonest (names, calls) are tested first
        if isinstance(e, ast.Name):
            return self.lookup(ctx, e.id)
        if isinstance(e, ast.Call):
            return self._call(ctx, e)
        if isinstance(e, ast.Constant):
            if isinstance(e.value, str):
                return _source(ctx.func.unit, e, e.value)
            return EMPTY
        if isinstance(e, ast.JoinedStr):
            out = EMPTY
            for v in e.values:
                if isinstance(v, ast.Constant) and isinstance(v.value, str):
                    out = join(out, _source(ctx.func.unit, e, v.value))
                elif isinstance(v, ast.FormattedValue):
                    out = join(out, self.eval(ctx, v.value).flat())
            return out
        if isinstance(e, ast.Attribute):
            if e.attr in _METADATA_ATTRS:
                self.eval(ctx, e.value)
                return EMPTY
            base = self.eval(ctx, e.value)
            f = base.field(e.attr)
            if f is not None:
                return f
            cls = base.cls or self.prog.type_of(ctx.func.unit.name, e.value, ctx.func)
            if cls is not None:
                got = self._class_attr(cls, e.attr)
                if got is not None:
                    return join(got, AV(base.kinds))
                if cls.method(e.attr) is not None:
                    return AV(base.flat().kinds)  # a bound method carries its object's data (executor.submit)
                return AV(base.kinds)
            if base.empty:
                # receiver of unknown class (e.g. a parameter of code nobody calls): field-based fallback on the
                # one class whose body defines this attribute (Hyperparameters-style configs)
                owners = [c for c in self.prog.classes_defining(e.attr) if e.attr in c.body.assigned]
                if len(owners) == 1:
                    got = self._class_attr(owners[0], e.attr)
                    if got is not None:
                        return got
            return AV(base.flat().kinds)
        if isinstance(e, ast.Subscript):
            base = self.eval(ctx, e.value)
            self.eval(ctx, e.slice)
            if isinstance(e.slice, ast.Constant):
                if isinstance(e.slice.value, str):
                    f = base.field(e.slice.value)
                    if f is not None:
                        return f
                if (
                    isinstance(e.slice.value, int)
                    and base.items is not None
                    and -len(base.items) <= e.slice.value < len(base.items)
                ):
                    return base.items[e.slice.value]
            return AV(base.flat().kinds)
        if isinstance(e, (ast.Tuple, ast.List, ast.Set)):
            items = tuple(self.eval(ctx, x) for x in e.elts)
            return AV(items=items) if any(not i.empty for i in items) else EMPTY
        if isinstance(e, ast.Dict):
            fields: dict[str, AV] = {}
            out = EMPTY
            for k, v in zip(e.keys, e.values):
                av = self.eval(ctx, v)
                if isinstance(k, ast.Constant) and isinstance(k.value, str):
                    fields[k.value] = av  # known keys read back exactly, clean ones included
                else:
                    if k is not None:
                        self.eval(ctx, k)
                    out = join(out, av.flat())
            if not out.kinds and all(v.empty for v in fields.values()):
                return EMPTY
            return AV(out.kinds, tuple(sorted(fields.items())))
        if isinstance(e, ast.BinOp):
            out = join(self.eval(ctx, e.left).flat(), self.eval(ctx, e.right).flat())
            if isinstance(e.op, ast.MatMult) and out.kinds and _is_gram(e):
                out = derive(out, STAT_OF, (ctx.func.unit, e, GRAM_STEP))
            return out
        if isinstance(e, ast.UnaryOp):
            return self.eval(ctx, e.operand).flat()
        if isinstance(e, ast.BoolOp):
            out = EMPTY
            for v in e.values:
                out = join(out, self.eval(ctx, v))
            return out
        if isinstance(e, ast.Compare):
            self.eval(ctx, e.left)
            for c in e.comparators:
                self.eval(ctx, c)
            return EMPTY
        if isinstance(e, ast.IfExp):
            self.eval(ctx, e.test)
            a, b = self.eval(ctx, e.body), self.eval(ctx, e.orelse)
            return join(a if self._runs(e, "body") else EMPTY, b if self._runs(e, "orelse") else EMPTY)
        if isinstance(e, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            # comprehension variables live in their own scope: bind them, evaluate, then restore the outer names
            names = {n.id for gen in e.generators for n in ast.walk(gen.target) if isinstance(n, ast.Name)}
            saved = {n: ctx.env[n] for n in names if n in ctx.env}
            first_iter = self.eval(ctx, e.generators[0].iter)  # evaluated in the enclosing scope
            for n in names:
                ctx.env[n] = EMPTY  # binds here, never in an enclosing or module scope
            try:
                for k, gen in enumerate(e.generators):
                    it = first_iter if k == 0 else self.eval(ctx, gen.iter)
                    self._assign(ctx, gen.target, _element(it), gen.iter)
                    for cond in gen.ifs:
                        self.eval(ctx, cond)
                if isinstance(e, ast.DictComp):
                    return join(self.eval(ctx, e.key).flat(), self.eval(ctx, e.value).flat())
                return AV(self.eval(ctx, e.elt).flat().kinds)
            finally:
                for n in names:
                    if n in saved:
                        ctx.env[n] = saved[n]
                    else:
                        ctx.env.pop(n, None)
        if isinstance(e, (ast.Starred, ast.Await, ast.YieldFrom)):
            return self.eval(ctx, e.value)
        if isinstance(e, ast.Yield):
            return self.eval(ctx, e.value) if e.value is not None else EMPTY
        if isinstance(e, ast.NamedExpr):
            av = self.eval(ctx, e.value)
            self._assign(ctx, e.target, av, e)
            return av
        if isinstance(e, ast.Slice):
            for x in (e.lower, e.upper, e.step):
                if x is not None:
                    self.eval(ctx, x)
            return EMPTY
        if isinstance(e, ast.Lambda):
            return EMPTY
        if isinstance(e, ast.FormattedValue):
            return self.eval(ctx, e.value).flat()
        return EMPTY

    def _class_attr(self, cls: ClassInfo, attr: str) -> AV | None:
        for c in cls.mro():
            if attr in c.body.assigned:
                mod_ctx = self._class_body_ctx(c)
                return mod_ctx.env.get(attr, EMPTY)
        return None

    def _class_body_ctx(self, c: ClassInfo) -> Ctx:
        for ctx in self.ctxs.get(c.body, []):
            return ctx
        parent = self.module_ctx.get(c.unit.name)
        from auditor.flow.taint_engine import Ctx  # noqa: PLC0415 - the engine module imports this one

        ctx = Ctx(c.body, ("<class>", c.qualname), parent=parent)
        self.ctxs.setdefault(c.body, []).append(ctx)
        for _ in range(2):
            for stmt in c.node.body:
                self._stmt(ctx, stmt)
        ctx.done = True
        return ctx

    def _call(self, ctx: Ctx, e: ast.Call) -> AV:  # noqa: C901 - call dispatch
        if (
            isinstance(e.func, ast.Name)
            and e.func.id == "getattr"
            and len(e.args) >= 2
            and isinstance(e.args[1], ast.Constant)
            and isinstance(e.args[1].value, str)
        ):
            # getattr(obj, "name", default) reads one field, like obj.name
            got = self.eval(ctx, ast.Attribute(value=e.args[0], attr=e.args[1].value, ctx=ast.Load()))
            return join(got, self.eval(ctx, e.args[2])) if len(e.args) > 2 else got
        site = self._site(ctx, e)
        arg_avs = [self.eval(ctx, a) for a in e.args]
        kw_avs = {k.arg: self.eval(ctx, k.value) for k in e.keywords}
        recv_av = EMPTY
        if isinstance(e.func, ast.Attribute):
            recv_av = self.eval(ctx, e.func.value)
        elif not isinstance(e.func, ast.Name):
            recv_av = self.eval(ctx, e.func)
        name = (
            e.func.attr
            if isinstance(e.func, ast.Attribute)
            else (e.func.id if isinstance(e.func, ast.Name) else "")
        )
        everything = EMPTY
        for av in arg_avs + list(kw_avs.values()):
            everything = join(everything, av.flat())

        if site is not None and site.constructs is not None:
            return self._construct(ctx, site, e, arg_avs, kw_avs)
        if site is not None and site.callees and site.resolution != "cha":
            out = EMPTY
            for callee in site.callees[:4]:
                out = join(out, self._invoke(ctx, site, callee, recv_av))
            if (
                site.callees[0].name in ("forward", "__call__")
                and everything.kinds
                and not isinstance(e.func, ast.Attribute)
            ):
                out = join(out, derive(everything, OUT_OF, (ctx.func.unit, e, FORWARD_STEP)))
            return out
        if (
            site is not None
            and site.resolution == "none"
            and isinstance(e.func, (ast.Name, ast.Attribute))
            and (
                everything.kinds
                and name not in _MUTATORS
                and name not in _METADATA_CALLS
                and not (isinstance(e.func, ast.Attribute) and not recv_av.empty)
            )
        ):
            # calling a callable object we cannot see into (a model, a compiled module): its output depends on
            # the data through a forward pass
            return derive(everything, OUT_OF, (ctx.func.unit, e, FORWARD_STEP))
        # external or unresolved: the result carries its inputs (receiver included: `t.to(dev)`, `s.take(n)`)
        if name in _METADATA_CALLS:
            return EMPTY
        if isinstance(e.func, ast.Attribute) and name in _MUTATORS:
            self._mutate(ctx, e.func.value, everything, e)
        ext = getattr(site, "ext", None) or ""
        if ext in vocab.SPLIT_LOADERS:
            split = next((k.value for k in e.keywords if k.arg == "split"), None)
            value = self.prog.eval_const(ctx.func.unit, split, ctx.func) if split is not None else None
            if isinstance(value, str):
                got = split_source(ctx.func.unit, e, value)
                if got.kinds:
                    return join(got, join(everything, recv_av.flat()))
        if _is_reader(site, name) and (everything.kinds or recv_av.kinds):
            return _read(join(everything, recv_av.flat()), ctx.func.unit, e)
        if ext.startswith("torch") and ext.rsplit(".", 1)[-1] in vocab.LOSS_FUNCS:
            # a loss of (outputs, targets): a number about the data, not the data (targets included)
            return derive(join(everything, recv_av.flat()), OUT_OF, (ctx.func.unit, e, LOSS_STEP))
        if site is not None and site.resolution == "cha" and site.callees:
            out = join(everything, recv_av.flat())
            for callee in site.callees[:4]:
                out = join(out, self._invoke(ctx, site, callee, recv_av))
            return out
        if recv_av.cls is not None and isinstance(e.func, ast.Attribute):
            return join(everything, recv_av.flat())
        return join(everything, recv_av.flat())

    def _site(self, ctx: Ctx, e: ast.Call) -> object | None:
        return self.prog.site_of(e)

    def _args_for(self, ctx: Ctx, site, callee: Func) -> dict[str, AV]:
        out: dict[str, AV] = {}
        for pname, expr in callee.bind(site.node, bound_self=site.is_bound_call(callee)).items():
            av = self.eval(ctx, expr)
            if not av.empty:
                out[pname] = _with_step_deep(
                    av, (ctx.func.unit, expr, f"passed to {callee.qualname}() as `{pname}`")
                )
        return out

    def _invoke(self, ctx: Ctx, site, callee: Func, recv_av: AV) -> AV:
        args = self._args_for(ctx, site, callee)
        self_av = EMPTY
        if site.is_bound_call(callee):
            self_av = recv_av if isinstance(site.node.func, ast.Attribute) else self.eval(ctx, site.node.func)
        parent = self._lexical_parent(ctx, callee)
        c = self.context(callee, args, self_av, parent, site, ctx)
        self.edges[(id(ctx), id(site.node), callee)] = c
        if (
            c.self_av is not self_av
            and isinstance(site.node.func, ast.Attribute)
            and isinstance(site.node.func.value, ast.Name)
            and c.self_av.fields
        ):
            # fields a method stored on the receiver are visible to the caller afterwards
            name = site.node.func.value.id
            holder = self._holder(ctx, name)
            holder.env[name] = join(holder.env.get(name, EMPTY), _reroot(c.self_av, callee.qualname, args))
        return _reroot(c.ret, callee.qualname, args)

    def _lexical_parent(self, ctx: Ctx, callee: Func) -> Ctx | None:
        if callee.parent is None:
            return None
        c: Ctx | None = ctx
        while c is not None:
            if c.func is callee.parent:
                return c
            c = c.parent
        got = self.ctxs.get(callee.parent)
        return got[0] if got else None

    def _construct(self, ctx: Ctx, site, e: ast.Call, arg_avs: list[AV], kw_avs: dict) -> AV:
        cls = site.constructs
        fields: dict[str, AV] = {}
        for c in reversed(cls.mro()):
            body = self._class_body_ctx(c)
            for k, v in body.env.items():
                if not v.empty:
                    fields[k] = v
        obj = AV(fields=tuple(sorted(fields.items())), cls=cls)
        for callee in site.callees:
            args = self._args_for(ctx, site, callee)
            c = self.context(callee, args, obj, self._lexical_parent(ctx, callee), site, ctx)
            self.edges[(id(ctx), id(site.node), callee)] = c
            obj = join(obj, _reroot(c.self_av, callee.qualname, args))
        if cls.method("__init__") is None:  # dataclass-like: fields from constructor arguments
            extra = EMPTY
            for av in arg_avs + list(kw_avs.values()):
                extra = join(extra, av.flat())
            if extra.kinds:
                obj = AV(extra.kinds, obj.fields, obj.items, cls)
        return AV(obj.kinds, obj.fields, obj.items, cls)
