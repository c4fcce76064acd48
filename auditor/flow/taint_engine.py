"""The data-origin taint engine: one abstract interpretation of the submission over provenance kinds.

Sources are recognised by the data they name, never by variable names: a string constant (or f-string part)
spelling a shard pattern (`fineweb_val_*.bin`, `..._val_000.bin`) starts a taint, and so does a dataset loader
asked for a named split (`load_dataset(..., split="train")`); it follows every derivation: assignments, tuple
unpacking, attribute and container aliases, slices/indexing/`.to()`/arithmetic, calls into the submission's own
functions (arguments bound to parameters by position and keyword, return values back), objects built from tainted
arguments (`Loader(val_pattern)`), activations captured by registered forward hooks (taint_hooks), loss functions
(content -> `*-out`) and selections by comparison (`*-fit`). Provenance kinds: auditor.flow.taint_values.

The analysis is context-sensitive by argument taint (one analysis of a function per distinct taint signature of its
arguments), flow-sensitive inside a function (branches joined, loops iterated), and field-sensitive for objects
whose construction is visible (`args.val_files` is tainted, `args.lr` is not). Each kind keeps one witness path.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from auditor.flow import vocab
from auditor.flow.program import ClassInfo, Func, Program
from auditor.flow.taint_hooks import HookMixin
from auditor.flow.taint_values import (
    AV,
    CONTENT,
    EMPTY,
    FIT_OF,
    FIT_STEP,
    FORWARD_STEP,
    GRAM_STEP,
    LOSS_STEP,
    OUT_OF,
    STAT_OF,
    TRAIN,
    VAL,
    _element,
    _is_gram,
    _is_reader,
    _join_envs,
    _read,
    _reroot,
    _short,
    _source,
    _with_step_deep,
    derive,
    join,
    split_source,
)

# Sanitizers and mutators are declared once in auditor.flow.vocab (library semantics as data).
_METADATA_CALLS = vocab.METADATA_CALLS | {"print", "bool"}
_METADATA_ATTRS = vocab.METADATA_ATTRS
_MUTATORS = vocab.MUTATORS
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


class TaintEngine(HookMixin):
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
        """False for a branch that is off under the defaults (and not turned on by a run command)."""
        g = self.prog.branch_gates.get((id(node), branch))
        return g is None or g.taken or bool(g.enabled_by)

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
