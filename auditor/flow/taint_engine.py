"""The data-origin taint engine: one abstract interpretation of the submission over provenance kinds.

Sources are recognised by the data they name, never by variable names: a string constant (or f-string part)
spelling a shard pattern (`fineweb_val_*.bin`, `..._val_000.bin`) starts a taint, and so does a dataset loader
asked for a named split (`load_dataset(..., split="train")`); it follows every derivation: assignments, tuple
unpacking, attribute and container aliases, slices/indexing/`.to()`/arithmetic, calls into the submission's own
functions (arguments bound to parameters by position and keyword, return values back), objects built from tainted
arguments (`Loader(val_pattern)`), activations captured by registered forward hooks (taint_hooks), loss functions
(content -> `*-out`) and selections by comparison (`*-fit`). Provenance kinds: auditor.flow.taint_values.

Modules: taint_values (the value domain), taint_exprs (expressions and calls), taint_hooks (forward hooks),
this one (driver, contexts, environments, statements, queries).

The analysis is context-sensitive by argument taint (one analysis of a function per distinct taint signature of its
arguments), flow-sensitive inside a function (branches joined, loops iterated), and field-sensitive for objects
whose construction is visible (`args.val_files` is tainted, `args.lr` is not). Each kind keeps one witness path.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from auditor.flow.program import Func, Program
from auditor.flow.taint_exprs import ExprMixin
from auditor.flow.taint_hooks import HookMixin
from auditor.flow.taint_values import (
    AV,
    CONTENT,
    EMPTY,
    FIT_OF,
    FIT_STEP,
    TRAIN,
    VAL,
    _element,
    _join_envs,
    _short,
    derive,
    join,
)

_MAX_CONTEXTS = 4000
_MAX_DEPTH = 40


@dataclass(eq=False)
class Ctx:
    """One analysis of a function under one taint signature of its inputs."""

    func: Func
    key: tuple
    env: dict[str, AV] = field(default_factory=dict)
    ret: AV = EMPTY
    self_av: AV = EMPTY
    parent: Ctx | None = None  # lexical parent context (closures)
    site: object | None = None  # the CallSite that first created this context
    caller: Ctx | None = None  # the context of that call site
    done: bool = False
    node_avs: dict[int, AV] = field(default_factory=dict)  # value of each evaluated expression at its point
    sticky: dict[str, AV] = field(default_factory=dict)  # locals that forward hooks write to

    def chain(self) -> list[Ctx]:
        """This context and the contexts of the calls that led to it, innermost first."""
        out, c = [], self
        while c is not None and c not in out:
            out.append(c)
            c = c.caller
        return out


class TaintEngine(HookMixin, ExprMixin):
    def __init__(self, prog: Program):
        self.prog = prog
        self.ctxs: dict[Func, list[Ctx]] = {}
        self._by_key: dict[tuple, Ctx] = {}
        self._depth = 0
        self._budget_hit = False
        self.module_ctx: dict[str, Ctx] = {}
        self.edges: dict[tuple[int, int, Func], Ctx] = {}  # (caller ctx, call node, callee) -> callee ctx
        # step texts: a statement is unparsed once, not on every trip / context that binds tainted data there
        self._short_texts: dict[int, tuple[ast.AST, str]] = {}
        self._run()

    # ----------------------------------------------------------------------------------------------- driver
    def _run(self) -> None:
        entry = self.prog.entry
        order = [m.func for m in self.prog.modules.values() if m.func is not entry]
        if entry is not None:
            order.append(entry)
        for f in order:  # imported own modules first, so their globals exist when the entry runs
            self._module(f)
        for (
            f
        ) in self.prog.funcs:  # code never called still gets one look (dead/gated code is reported as such)
            if f.kind == "function" and f not in self.ctxs:
                parent = self.ctxs.get(f.parent, [None])[0] if f.parent is not None else None
                self.context(f, {}, EMPTY, parent, None, None)

    def _module(self, f: Func) -> Ctx:
        if f.unit.name in self.module_ctx:
            return self.module_ctx[f.unit.name]
        ctx = Ctx(f, ("<module>", f.unit.name))
        self.module_ctx[f.unit.name] = ctx
        self.ctxs.setdefault(f, []).append(ctx)
        self._analyse(ctx)
        return ctx

    def context(
        self,
        f: Func,
        args: dict[str, AV],
        self_av: AV,
        parent: Ctx | None,
        site: object | None,
        caller: Ctx | None,
    ) -> Ctx:
        key = (
            f.fid,
            tuple(sorted((k, v.signature()) for k, v in args.items())),
            self_av.signature(),
            id(parent) if parent is not None and parent.func.kind == "function" else 0,
        )
        got = self._by_key.get(key)
        if got is not None:
            return got
        ctx = Ctx(f, key, dict(args), EMPTY, self_av, parent, site, caller)
        if f.cls is not None and f.params and not f.is_static:
            ctx.env[f.params[0]] = self_av
        self._by_key[key] = ctx
        self.ctxs.setdefault(f, []).append(ctx)
        if len(self._by_key) > _MAX_CONTEXTS or self._depth > _MAX_DEPTH:
            self._budget_hit = True
            ctx.done = True
            ctx.ret = AV(tuple(sorted({k: p for a in args.values() for k, p in a.flat().kinds}.items())))
            return ctx
        self._depth += 1
        try:
            self._analyse(ctx)
        finally:
            self._depth -= 1
        return ctx

    def _analyse(self, ctx: Ctx) -> None:
        body = getattr(ctx.func.node, "body", [])
        start = dict(ctx.env)
        self._block(ctx, body)
        if self._registers_hooks(ctx):
            self._run_hooks(ctx)
            if ctx.sticky:  # second pass: what the hooks captured is visible wherever those locals are read
                ctx.env = dict(start)
                self._block(ctx, body)
        f = ctx.func
        if f.cls is not None and f.params and not f.is_static and f.params[0] in ctx.env:
            ctx.self_av = join(ctx.self_av, ctx.env[f.params[0]])  # fields set here or by helper methods
        ctx.done = True

    def _block(self, ctx: Ctx, body: list[ast.stmt]) -> None:
        for stmt in body:
            self._stmt(ctx, stmt)

    def _branches(self, ctx: Ctx, *blocks: list[ast.stmt], selected: tuple[list, AV] | None = None) -> None:
        """Run alternative blocks from the same state and join what they leave. `selected` = (block, value): the
        names that block assigns are selected by a comparison whose operands carry `value` (implicit flow)."""
        before = dict(ctx.env)
        results = []
        for b in blocks:
            ctx.env = dict(before)
            self._block(ctx, b)
            if selected is not None and b is selected[0]:
                for st in b:
                    for t in getattr(st, "targets", [getattr(st, "target", None)]):
                        if isinstance(t, ast.Name) and isinstance(st, (ast.Assign, ast.AnnAssign)):
                            self._bind(
                                ctx, t.id, join(ctx.env.get(t.id, EMPTY), selected[1]), st, strong=True
                            )
            results.append(ctx.env)
        ctx.env = _join_envs(results) if results else before

    def _selection(self, ctx: Ctx, test: ast.AST) -> AV | None:
        """`if loss < best:` over values derived from data: what the branch assigns is selected by that data
        (a grid search, an argmin). Only ordering comparisons count: equality tests are dispatch, not tuning."""
        if not isinstance(test, ast.Compare) or not all(
            isinstance(op, (ast.Lt, ast.Gt, ast.LtE, ast.GtE)) for op in test.ops
        ):
            return None
        av = EMPTY
        for x in (test.left, *test.comparators):
            got = ctx.node_avs.get(id(x))
            if got is not None:
                av = join(av, got.flat())
        if not any(k in CONTENT[VAL] or k in CONTENT[TRAIN] for k in av.kind_set):
            return None
        return derive(
            AV(tuple((k, p) for k, p in av.kinds if k in FIT_OF)), FIT_OF, (ctx.func.unit, test, FIT_STEP)
        )

    def _runs(self, node: ast.AST, branch: str) -> bool:
        """False for a branch that does not run under the documented configuration (API.md, `Gate.runs`): off by
        default and not turned on by a command or log, or turned off by one."""
        g = self.prog.branch_gates.get((id(node), branch))
        return g is None or g.runs

    def _scratch(self, ctx: Ctx, body: list[ast.stmt]) -> None:
        """Analyse code that does not run by default on a throw-away state: its values can be queried (rules
        report it as information), but nothing it computes reaches the code that does run."""
        saved_env, saved_ret, saved_self = ctx.env, ctx.ret, ctx.self_av
        ctx.env = dict(saved_env)
        try:
            self._block(ctx, body)
        finally:
            ctx.env, ctx.ret, ctx.self_av = saved_env, saved_ret, saved_self

    def _loop(self, ctx: Ctx, body: list[ast.stmt], head=None) -> None:
        """Two trips round the loop, joined with the state before it (values carried across iterations)."""
        for trip in range(2):
            before = dict(ctx.env)
            if head is not None:
                head()
            self._block(ctx, body)
            ctx.env = _join_envs([before, ctx.env])
            if trip == 0 and all(
                v is before.get(k) or v.deep_kinds() == before.get(k, EMPTY).deep_kinds()
                for k, v in ctx.env.items()
            ):
                break  # nothing new is carried into a second iteration

    @staticmethod
    def _snapshot(ctx: Ctx) -> tuple:
        return (
            tuple(sorted((k, v.signature(2)) for k, v in ctx.env.items())),
            ctx.ret.signature(2),
            ctx.self_av.signature(2),
        )

    def _new_ctx(self, f: Func, key: tuple, args: dict[str, AV], parent: Ctx | None, caller: Ctx) -> Ctx:
        """A context outside the signature cache (hooks: one per registering context)."""
        c = Ctx(f, key, dict(args), EMPTY, EMPTY, parent, None, caller)
        self.ctxs.setdefault(f, []).append(c)
        return c

    # ----------------------------------------------------------------------------------------------- env
    def _short(self, node: ast.AST) -> str:
        got = self._short_texts.get(id(node))
        if (
            got is not None and got[0] is node
        ):  # the entry holds the node, so its id cannot be reused meanwhile
            return got[1]
        text = _short(node)
        self._short_texts[id(node)] = (node, text)
        return text

    def _holder(self, ctx: Ctx, name: str) -> Ctx:
        """The context whose scope binds `name`: our own, else (closures mutating free variables) a parent's."""
        f = ctx.func
        if f.kind != "function" or name in f.assigned or name in f.params or name in ctx.env:
            return ctx
        c = ctx.parent
        while c is not None:
            if c.func.kind != "function" or name in c.func.assigned or name in c.func.params:
                return c
            c = c.parent
        mod = self.module_ctx.get(f.unit.name)
        if mod is not None and name in mod.func.assigned:
            return mod
        return ctx

    def lookup(self, ctx: Ctx, name: str) -> AV:
        c: Ctx | None = ctx
        while c is not None:
            if name in c.sticky:
                return join(c.env.get(name, EMPTY), c.sticky[name])
            if name in c.env:
                return c.env[name]
            f = c.func
            if f.kind == "function" and (name in f.assigned or name in f.params):
                return EMPTY
            c = c.parent
        mod = self.module_ctx.get(ctx.func.unit.name)
        if mod is not None and name in mod.env:
            return mod.env[name]
        # a name imported from another own module
        m = self.prog.modules.get(ctx.func.unit.name)
        if m is not None and name in m.imported_names:
            other_name, attr = m.imported_names[name]
            other = self.prog.module_by_name.get(other_name)
            if other is not None and attr:
                oc = self.module_ctx.get(other.unit.name)
                if oc is not None:
                    return oc.env.get(attr, EMPTY)
        return EMPTY

    def _bind(self, ctx: Ctx, name: str, av: AV, node: ast.AST, strong: bool = True) -> None:
        holder = self._holder(ctx, name)
        if av.kinds:
            text = (
                self._short(node)
                if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign))
                else (f"{name} = {self._short(node)}")
            )
            av = av.with_step((ctx.func.unit, node, text))
        old = holder.env.get(name)
        if holder is not ctx or holder.func.kind != "function":
            strong = False  # a global or a closure's parent local: other code may see either value
        holder.env[name] = av if (old is None or strong) else join(old, av)

    def _assign(self, ctx: Ctx, target: ast.AST, av: AV, node: ast.AST) -> None:
        if isinstance(target, ast.Name):
            self._bind(ctx, target.id, av, node)
        elif isinstance(target, (ast.Tuple, ast.List)):
            n = len(target.elts)
            items = av.items if av.items is not None and len(av.items) == n else None
            for i, t in enumerate(target.elts):
                sub = items[i] if items is not None else AV(av.flat().kinds)
                self._assign(ctx, t.value if isinstance(t, ast.Starred) else t, sub, node)
        elif isinstance(target, ast.Attribute):
            base = target.value
            if isinstance(base, ast.Name):
                holder = self._holder(ctx, base.id)
                cur = holder.env.get(base.id, EMPTY)
                if base.id not in holder.env and holder.func.kind != "function":
                    cur = self.lookup(ctx, base.id)
                if av.kinds:
                    av = av.with_step((ctx.func.unit, node, f"{base.id}.{target.attr} = {self._short(node)}"))
                fields = dict(cur.fields)
                fields[target.attr] = join(fields[target.attr], av) if target.attr in fields else av
                new = AV(cur.kinds, tuple(sorted(fields.items())), cur.items, cur.cls)
                holder.env[base.id] = new
                if ctx.func.cls is not None and ctx.func.params and base.id == ctx.func.params[0]:
                    ctx.self_av = new
        elif isinstance(target, ast.Subscript):
            self._mutate(ctx, target.value, av, node, key=target.slice)
        elif isinstance(target, ast.Starred):
            self._assign(ctx, target.value, av, node)

    def _mutate(
        self, ctx: Ctx, container: ast.AST, av: AV, node: ast.AST, key: ast.AST | None = None
    ) -> None:
        """`c[k] = v`, `c.append(v)`, `c[k] += v`: the container now holds tainted data."""
        if not av.deep_kinds():
            return
        root = container
        while isinstance(root, (ast.Subscript, ast.Attribute)):
            root = root.value
        if not isinstance(root, ast.Name):
            return
        step = (ctx.func.unit, node, f"{self._short(node)} (stored into {root.id})")
        if root is container and isinstance(key, ast.Constant) and isinstance(key.value, str):
            self._assign(ctx, ast.Attribute(value=root, attr=key.value, ctx=ast.Store()), av, node)
            return
        holder = self._holder(ctx, root.id)
        cur = holder.env.get(root.id)
        if cur is None:
            cur = self.lookup(ctx, root.id)
        add = AV(av.flat().with_step(step).kinds)
        if (
            container is not root
            and isinstance(container, ast.Attribute)
            and isinstance(container.value, ast.Name)
        ):
            fields = dict(cur.fields)
            fields[container.attr] = join(fields.get(container.attr, EMPTY), add)
            holder.env[root.id] = AV(cur.kinds, tuple(sorted(fields.items())), cur.items, cur.cls)
        else:
            holder.env[root.id] = join(cur, add)

    # ----------------------------------------------------------------------------------------------- statements
    def _stmt(self, ctx: Ctx, s: ast.stmt) -> None:  # noqa: C901 - statement dispatch
        if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            return
        if isinstance(s, ast.Assign):
            av = self.eval(ctx, s.value)
            for t in s.targets:
                self._assign(ctx, t, av, s)
        elif isinstance(s, ast.AnnAssign):
            if s.value is not None:
                self._assign(ctx, s.target, self.eval(ctx, s.value), s)
        elif isinstance(s, ast.AugAssign):
            av = join(self.eval(ctx, s.value), self.eval(ctx, s.target))
            if isinstance(s.target, ast.Name):
                self._bind(ctx, s.target.id, av, s)
            elif isinstance(s.target, ast.Subscript):
                self._mutate(ctx, s.target.value, av, s)
            else:
                self._assign(ctx, s.target, av, s)
        elif isinstance(s, (ast.For, ast.AsyncFor)):
            it = self.eval(ctx, s.iter)
            self._loop(ctx, s.body, head=lambda: self._assign(ctx, s.target, _element(it), s))
            self._block(ctx, s.orelse)
        elif isinstance(s, ast.While):
            self._loop(ctx, s.body, head=lambda: self.eval(ctx, s.test))
            self._block(ctx, s.orelse)
        elif isinstance(s, ast.If):
            self.eval(ctx, s.test)
            live = [b for b, name in ((s.body, "body"), (s.orelse, "orelse")) if self._runs(s, name)]
            for b, name in ((s.body, "body"), (s.orelse, "orelse")):
                if not self._runs(s, name) and b:
                    self._scratch(ctx, b)
            sel = self._selection(ctx, s.test) if s.body in live else None
            self._branches(ctx, *live, selected=(s.body, sel) if sel is not None and sel.kinds else None)
        elif isinstance(s, (ast.With, ast.AsyncWith)):
            for item in s.items:
                av = self.eval(ctx, item.context_expr)
                if item.optional_vars is not None:
                    self._assign(ctx, item.optional_vars, av, s)
            self._block(ctx, s.body)
        elif isinstance(s, ast.Try) or type(s).__name__ == "TryStar":
            self._block(ctx, s.body)
            self._branches(ctx, s.orelse, *[h.body for h in s.handlers])
            self._block(ctx, s.finalbody)
        elif isinstance(s, ast.Return):
            if s.value is not None:
                av = self.eval(ctx, s.value)
                if av.kinds:
                    av = av.with_step((ctx.func.unit, s, f"returned from {ctx.func.qualname}()"))
                ctx.ret = join(ctx.ret, av)
        elif isinstance(s, ast.Expr):
            av = self.eval(ctx, s.value)
            if isinstance(s.value, (ast.Yield, ast.YieldFrom)):
                ctx.ret = join(ctx.ret, av)
        elif isinstance(s, ast.Match):
            self.eval(ctx, s.subject)
            self._branches(ctx, *[c.body for c in s.cases], [])
        else:
            for child in ast.iter_child_nodes(s):
                if isinstance(child, ast.expr):
                    self.eval(ctx, child)

    # ----------------------------------------------------------------------------------------------- queries
    def av_at(self, func: Func, expr: ast.AST) -> list[tuple[Ctx, AV]]:
        """The value of `expr` at its own program point, in every analysed context of `func`."""
        out = []
        for c in self.ctxs.get(func, []):
            av = c.node_avs.get(id(expr))
            if av is None:
                av = self.eval(c, expr)
            out.append((c, av))
        return out

    def av_in(self, ctx: Ctx, expr: ast.AST) -> AV:
        av = ctx.node_avs.get(id(expr))
        return av if av is not None else self.eval(ctx, expr)
