"""Per-function interpretation for the order analysis: flow-sensitive label propagation over one function body,
producing the function's summary (labels of the return value, ordered events). See auditor.flow.order.

Over ~600 lines on purpose: `_FunctionInterpreter` is one dispatch over statement and expression kinds whose
cases share the interpreter's state (labels per name, aliases, events); the syntax it relies on lives in
auditor.flow.syntax and auditor.flow.score_syntax."""

from __future__ import annotations

import ast
import builtins
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from auditor.flow import vocab
from auditor.flow.events import (
    EMPTY,
    FIT_SOURCES,
    HIST,
    LP,
    NG,
    TGT,
    VAL,
    VL,
    Branch,
    Event,
    Labels,
    substitute,
)
from auditor.flow.order_index import ClassInfo, FuncInfo
from auditor.flow.score_syntax import (
    LOG_CALLS,
    accumulator,
    entropy_term,
    full_sum,
    is_min_selection,
    loss_target,
    rebinds_itself,
    running_sums,
)
from auditor.flow.syntax import (
    MUTATORS,
    base_name,
    creates_free_tensor,
    dotted,
    is_enable_grad,
    is_no_grad_ctx,
    last_attr,
)

if TYPE_CHECKING:
    from auditor.flow.order import OrderProgram

VAL_PATTERN = vocab.VAL_SHARD
SHAPE_METHODS = vocab.METADATA_CALLS
SHAPE_ATTRS = vocab.METADATA_ATTRS
SHAPE_FUNCS = vocab.METADATA_CALLS
KEYED_WRITERS = vocab.KEYED_WRITERS
_BUILTIN_NAMES = frozenset(dir(builtins))
MAX_EVENTS = 5000


@dataclass
class Summary:
    ret: Labels = EMPTY
    events: list[Event] = field(default_factory=list)


@dataclass
class _Ctx:
    ng: bool = False
    loops: tuple[ast.AST, ...] = ()
    branches: tuple[Branch, ...] = ()
    first: bool = (
        True  # every enclosing loop of this function is on its first pass (no loop-carried values yet)
    )
    implicit: Labels = (
        EMPTY  # labels of the `if` tests deciding this point (a value chosen by comparing losses)
    )


class _FunctionInterpreter:
    """Flow-sensitive label propagation over one function body (loops run twice to reach a fixpoint)."""

    def __init__(self, program: OrderProgram, fi: FuncInfo) -> None:
        self.p = program
        self.fi = fi
        self.state: dict[str, Labels] = {}
        self.events: dict[tuple[int, int], Event] = {}
        self.ret: set[str] = set()
        self.aliases: dict[
            str, ast.expr
        ] = {}  # local name -> expression it was last bound to (for call binding)
        for param in fi.params:
            self.state[param] = frozenset({f"p:{param}"})
        for param in (fi.vararg, fi.kwarg):
            if param:
                self.state[param] = frozenset({f"p:{param}"})
        if fi.is_method and fi.params:
            self.state[fi.params[0]] = EMPTY  # the instance itself
        self.ng_only = program.ng_only.get(fi.key, False)
        self._sums: set[str] | None = None
        self.targets: frozenset[str] = program.targets.get(fi.key, frozenset())
        self.new_targets = False
        self.reads: dict[str, int] = {}

    # -- driver -------------------------------------------------------------------------------------------------
    def run(self) -> Summary:
        ctx = _Ctx(ng=self.ng_only)
        self.block(self.fi.body, ctx)
        events = sorted(self.events.values(), key=lambda e: e.seq)[:MAX_EVENTS]
        return Summary(ret=frozenset(self.ret), events=events)

    def block(self, stmts: Iterable[ast.stmt], ctx: _Ctx) -> None:
        for stmt in stmts:
            self.stmt(stmt, ctx)

    def stmt(self, s: ast.stmt, ctx: _Ctx) -> None:  # noqa: C901 - one dispatch over statement kinds
        if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            return
        self.current = s
        if isinstance(s, ast.Assign):
            labels = self.expr(s.value, ctx)
            labels = self._requires_grad_labels(s.value, s.targets, labels)
            self._score_by_rebinding(s, ctx)
            for t in s.targets:
                self.assign(t, labels, s.value, ctx)
        elif isinstance(s, ast.AnnAssign):
            if s.value is not None:
                labels = self.expr(s.value, ctx)
                labels = self._requires_grad_labels(s.value, [s.target], labels)
                self.assign(s.target, labels, s.value, ctx)
        elif isinstance(s, ast.AugAssign):
            labels = self.expr(s.value, ctx)
            if isinstance(s.op, (ast.Add, ast.Sub)) and accumulator(s.target):
                self._maybe_score(s, labels, ctx)
            base = base_name(s.target)
            if base:
                self.state[base] = self.state.get(base, EMPTY) | labels
            if isinstance(s.target, ast.Subscript) and base:
                self._maybe_write(s, base, self.expr(s.target.slice, ctx), ctx, labels)
            elif isinstance(s.target, ast.Attribute) and base and HIST in labels:
                self._maybe_write(s, base, EMPTY, ctx, labels)  # `self.counts += np.bincount(keys)`
        elif isinstance(s, (ast.For, ast.AsyncFor)):
            it = self.expr(s.iter, ctx)
            for k in range(self._passes(ctx)):
                inner = _Ctx(ctx.ng, ctx.loops + (s,), ctx.branches, ctx.first and k == 0, ctx.implicit)
                self.assign(s.target, it, None, inner)
                self.block(s.body, inner)
            self.block(s.orelse, ctx)
        elif isinstance(s, ast.While):
            self.expr(s.test, ctx)
            for k in range(self._passes(ctx)):
                inner = _Ctx(ctx.ng, ctx.loops + (s,), ctx.branches, ctx.first and k == 0, ctx.implicit)
                self.block(s.body, inner)
                self.expr(s.test, inner)
            self.block(s.orelse, ctx)
        elif isinstance(s, ast.If):
            test = self.expr(s.test, ctx)
            # a branch chosen by comparing losses on validation targets (a search over a temperature) makes what
            # it assigns depend on those targets
            implicit = ctx.implicit | (test & FIT_SOURCES if VAL in test or VL in test else EMPTY)
            before = dict(self.state)
            self.block(
                s.body,
                _Ctx(
                    ctx.ng,
                    ctx.loops,
                    ctx.branches + (Branch(s.test, True, self.fi.key, id(s)),),
                    ctx.first,
                    implicit,
                ),
            )
            after_body = self.state
            self.state = dict(before)
            self.block(
                s.orelse,
                _Ctx(
                    ctx.ng,
                    ctx.loops,
                    ctx.branches + (Branch(s.test, False, self.fi.key, id(s)),),
                    ctx.first,
                    implicit,
                ),
            )
            for k, v in after_body.items():
                self.state[k] = self.state.get(k, EMPTY) | v
        elif isinstance(s, (ast.With, ast.AsyncWith)):
            ng = ctx.ng
            for item in s.items:
                if is_no_grad_ctx(item.context_expr):
                    ng = True
                elif is_enable_grad(item.context_expr):
                    ng = False
                labels = self.expr(item.context_expr, ctx)
                if item.optional_vars is not None:
                    self.assign(item.optional_vars, labels, None, ctx)
            self.block(s.body, _Ctx(ng, ctx.loops, ctx.branches, ctx.first, ctx.implicit))
        elif isinstance(s, ast.Try) or type(s).__name__ == "TryStar":
            self.block(s.body, ctx)  # type: ignore[attr-defined]
            for h in s.handlers:  # type: ignore[attr-defined]
                self.block(h.body, ctx)
            self.block(s.orelse, ctx)  # type: ignore[attr-defined]
            self.block(s.finalbody, ctx)  # type: ignore[attr-defined]
        elif isinstance(s, ast.Return):
            if s.value is not None:
                self.ret |= self.expr(s.value, ctx)
        elif isinstance(s, ast.Expr):
            self.expr(s.value, ctx)
        elif isinstance(s, ast.Delete):
            for t in s.targets:
                if isinstance(t, ast.Name):
                    self.state.pop(t.id, None)
        elif type(s).__name__ == "Match":
            self.expr(s.subject, ctx)  # type: ignore[attr-defined]
            for case in s.cases:  # type: ignore[attr-defined]
                self.block(case.body, ctx)
        else:
            for child in ast.iter_child_nodes(s):
                if isinstance(child, ast.expr):
                    self.expr(child, ctx)

    @staticmethod
    def _passes(ctx: _Ctx) -> int:
        """Loop bodies run twice so loop-carried labels reach their uses; below two levels of nesting the
        enclosing loops' repetitions already do that (and 2**depth passes would not scale)."""
        return 2 if len(ctx.loops) < 2 else 1

    # -- assignment ---------------------------------------------------------------------------------------------
    def assign(self, target: ast.expr, labels: Labels, value: ast.expr | None, ctx: _Ctx) -> None:
        if ctx.implicit:
            labels = labels | ctx.implicit
        if isinstance(target, ast.Name):
            self.state[target.id] = labels
            if value is not None:
                self.aliases[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)):
            for elt in target.elts:
                self.assign(elt.value if isinstance(elt, ast.Starred) else elt, labels, None, ctx)
        elif isinstance(target, ast.Attribute):
            base = base_name(target)
            if labels & {VAL}:
                self.p.add_tainted_attr(target.attr)
            if labels & {VL, TGT} and _valish(labels):
                # state fitted on validation targets stored on an object (`model.temperature = t_star`): every
                # read of that attribute carries it
                self.p.add_fitted_attr(target.attr)
                self._record("fit", target, labels, ctx, target=f"attr:{target.attr}")
            if self.fi.is_method and self.fi.name == "__init__" and base == (self.fi.params or [None])[0]:
                self.ret |= {lab for lab in labels if lab == VAL or lab.startswith("p:")}
            if base and base != (self.fi.params[0] if self.fi.is_method and self.fi.params else None):
                self.state[base] = self.state.get(base, EMPTY) | labels
        elif isinstance(target, ast.Subscript):
            index = self.expr(target.slice, ctx)
            base = base_name(target)
            if base:
                self.state[base] = self.state.get(base, EMPTY) | labels
                self._maybe_write(target, base, index, ctx, labels)
        elif isinstance(target, ast.Starred):
            self.assign(target.value, labels, None, ctx)

    def _requires_grad_labels(self, value: ast.expr, targets: list[ast.expr], labels: Labels) -> Labels:
        """A free tensor created with requires_grad=True (or nn.Parameter / .requires_grad_()) gets its own label."""
        if not creates_free_tensor(value, self.p.constants(self.fi.unit)):
            return labels
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        return labels | {f"rg:{self.fi.key}:{n}" for n in names}

    # -- scoring ------------------------------------------------------------------------------------------------
    def _score_by_rebinding(self, s: ast.Assign, ctx: _Ctx) -> None:
        """`s = s + v` accumulates like `s += v`."""
        if len(s.targets) != 1 or not isinstance(s.targets[0], ast.Name):
            return
        name = s.targets[0].id
        v = s.value
        if isinstance(v, ast.BinOp) and isinstance(v.op, ast.Add):
            for side, other in ((v.left, v.right), (v.right, v.left)):
                if isinstance(side, ast.Name) and side.id == name:
                    self._maybe_score(s, self.expr(other, ctx), ctx)
                    return

    def _maybe_score(self, node: ast.AST, labels: Labels, ctx: _Ctx) -> None:
        valish = VAL in labels or any(lab.startswith("p:") for lab in labels)
        if not valish:
            return
        if not (ctx.ng or NG in labels):
            return
        if not self._is_sum(node):
            return
        self._record("score", node, labels, ctx)

    def _is_sum(self, node: ast.AST) -> bool:
        """The accumulated name is a running sum: started from zero (`total = 0.0`, `torch.zeros(())`), or a
        parameter the caller owns that this function only adds into (`_accumulate(loss_sum, ...)`), or a field.
        A residual stream (`x = x + block(x)`, started from an embedding) is not a sum of scores."""
        target: ast.AST | None = None
        if isinstance(node, ast.AugAssign):
            target = node.target
        elif isinstance(node, ast.Assign):
            target = node.targets[0]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = node.func.value
        if not isinstance(target, ast.Name):
            return True  # `self.total += ...`
        name = target.id
        if self._sums is None:
            self._sums = running_sums(self.fi)
        return name in self._sums

    def _maybe_write(self, node: ast.AST, base: str, keys: Labels, ctx: _Ctx, values: Labels = EMPTY) -> None:
        """An in-place write of validation content into a container or tensor. `keyed` when the index is computed
        from validation content (`counts[hash(ctx, tok)] += 1`: a lookup table); writes at positions
        (`h[i] = ...`, `buf[:, :n] = chunk`) are per-position buffers or tables filled by value."""
        if HIST in values and _valish(values):
            keys = values  # `table[o] += np.bincount(keys)`: one count per validation key
        if _valish(keys):
            self._record("write", node, keys | values, ctx, target=base, names=(base,), keyed=True, keys=keys)
        elif _valish(values):
            self._record("write", node, values, ctx, target=base, names=(base,), keyed=False)

    def _record(self, kind: str, node: ast.AST, labels: Labels, ctx: _Ctx, **kw: object) -> None:
        rg = frozenset(lab for lab in labels if lab.startswith("rg:"))
        key = (id(node), 0)
        self.events[key] = Event(
            kind=kind,
            node=node,
            func=self.fi,
            labels=labels,
            loops=ctx.loops,
            branches=ctx.branches,
            seq=(getattr(node, "lineno", 0) * 1000 + getattr(node, "col_offset", 0),),
            rg=rg,
            **kw,  # type: ignore[arg-type]
        )

    # -- expressions --------------------------------------------------------------------------------------------
    def expr(self, e: ast.AST | None, ctx: _Ctx) -> Labels:  # noqa: C901 - one dispatch over expression kinds
        if e is None:
            return EMPTY
        if isinstance(e, ast.Constant):
            if isinstance(e.value, str) and VAL_PATTERN.search(e.value):
                return frozenset({VAL})
            return EMPTY
        if isinstance(e, ast.Name):
            self.reads[e.id] = self.reads.get(e.id, 0) + 1
            labels = self.state[e.id] if e.id in self.state else self.p.free_name_labels(self.fi, e.id)
            if e.id in self.targets and _valish(labels):
                labels = labels | {TGT}  # the tokens this function's loss is computed against
            return labels
        if isinstance(e, ast.Attribute):
            if e.attr in SHAPE_ATTRS:
                self.expr(e.value, ctx)
                return EMPTY
            base = self.expr(e.value, ctx)
            if e.attr in self.p.tainted_attrs:
                base = base | {VAL}
            else:
                self.p.note_attr_read(e.attr)
            if e.attr in self.p.fitted_attrs:
                base = base | {f"fa:{e.attr}"}
            else:
                self.p.note_fit_read(e.attr)
            return base
        if isinstance(e, ast.BinOp):
            labels = self.expr(e.left, ctx) | self.expr(e.right, ctx)
            if LP in labels and isinstance(e.op, ast.Mult) and entropy_term(e):
                labels = labels - {LP}  # p * log p: an entropy, not the likelihood of the realized token
            return labels
        if isinstance(e, ast.UnaryOp):
            return self.expr(e.operand, ctx)
        if isinstance(e, (ast.Tuple, ast.List, ast.Set)):
            out = EMPTY
            for elt in e.elts:
                out = out | self.expr(elt, ctx)
            return out
        if isinstance(e, ast.JoinedStr):
            # formatted text (log lines, paths): only a val file pattern written into it is a source; the
            # formatted expressions still run (`print(f"{evaluate(model, val):.4f}")` scores)
            out = EMPTY
            for part in e.values:
                if (
                    isinstance(part, ast.Constant)
                    and isinstance(part.value, str)
                    and VAL_PATTERN.search(part.value)
                ):
                    out = frozenset({VAL})
                elif isinstance(part, ast.FormattedValue):
                    self.expr(part.value, ctx)
            return out
        if isinstance(e, ast.Subscript):
            base = self.expr(e.value, ctx)
            self.expr(e.slice, ctx)  # index values select positions; they do not carry content
            return base
        if isinstance(e, ast.Call):
            return self.call(e, ctx)
        if isinstance(e, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            # Comprehension variables live in their own scope (minifiers reuse outer names for them): bind them,
            # evaluate, then restore whatever the enclosing function had under those names.
            names = {n.id for gen in e.generators for n in ast.walk(gen.target) if isinstance(n, ast.Name)}
            saved = {n: (self.state.get(n), self.aliases.get(n)) for n in names}
            try:
                for gen in e.generators:
                    it = self.expr(gen.iter, ctx)
                    self.assign(gen.target, it, None, ctx)
                    for cond in gen.ifs:
                        self.expr(cond, ctx)
                if isinstance(e, ast.DictComp):
                    return self.expr(e.key, ctx) | self.expr(e.value, ctx)
                return self.expr(e.elt, ctx)
            finally:
                for n, (state, alias) in saved.items():
                    if state is None:
                        self.state.pop(n, None)
                    else:
                        self.state[n] = state
                    if alias is None:
                        self.aliases.pop(n, None)
                    else:
                        self.aliases[n] = alias
        if isinstance(e, ast.Lambda):
            # a lambda handed to a helper (`measure(lambda: evaluate(model, val))`) runs there: its body's calls
            # are taken to run here, in order
            params = [a.arg for a in e.args.posonlyargs + e.args.args + e.args.kwonlyargs]
            saved = {p: self.state.get(p) for p in params}
            for p in params:
                self.state[p] = EMPTY
            labels = self.expr(e.body, ctx)
            for p, old in saved.items():
                if old is None:
                    self.state.pop(p, None)
                else:
                    self.state[p] = old
            return labels
        if isinstance(e, ast.IfExp):
            self.expr(e.test, ctx)
            return self.expr(e.body, ctx) | self.expr(e.orelse, ctx)
        if isinstance(e, ast.Compare):
            out = self.expr(e.left, ctx)
            for c in e.comparators:
                out |= self.expr(c, ctx)
            return out
        if isinstance(e, ast.NamedExpr):
            labels = self.expr(e.value, ctx)
            self.assign(e.target, labels, e.value, ctx)
            return labels
        out: Labels = EMPTY
        for child in ast.iter_child_nodes(e):
            if isinstance(child, (ast.expr, ast.keyword, ast.comprehension)):
                out |= self.expr(child.value if isinstance(child, ast.keyword) else child, ctx)
        return out

    def call(self, c: ast.Call, ctx: _Ctx) -> Labels:  # noqa: C901 - resolution cases
        func = c.func
        arg_labels = [self.expr(a.value if isinstance(a, ast.Starred) else a, ctx) for a in c.args]
        kw_labels = {k.arg: self.expr(k.value, ctx) for k in c.keywords}
        all_args = frozenset().union(*arg_labels, *kw_labels.values()) if (arg_labels or kw_labels) else EMPTY
        ng_label = frozenset({NG}) if ctx.ng else EMPTY
        name = func.id if isinstance(func, ast.Name) else None
        if name is not None and name not in self.state:
            name = self.p.builtin_alias(self.fi.unit, name)  # `R=len` hoisted by minifiers
        attr = func.attr if isinstance(func, ast.Attribute) else None

        if (
            name == "getattr"
            and len(c.args) >= 2
            and isinstance(c.args[1], ast.Constant)
            and isinstance(c.args[1].value, str)
        ):
            # `getattr(self, "temperature", 1.0)` reads that attribute like `self.temperature`
            return self.expr(ast.Attribute(value=c.args[0], attr=c.args[1].value, ctx=ast.Load()), ctx)

        if name in SHAPE_FUNCS or attr in SHAPE_METHODS:
            if attr is not None:
                self.expr(func, ctx)
            return EMPTY

        # updates
        if attr == "backward":
            recv = self.expr(func.value, ctx)  # type: ignore[union-attr]
            self._record_update(c, recv, ctx)
            return EMPTY
        if attr == "grad" and dotted(func) in ("torch.autograd.grad", "autograd.grad") and c.args:
            self._record_update(c, arg_labels[0], ctx)
            return arg_labels[0]
        if attr == "requires_grad_" and isinstance(func, ast.Attribute):
            base = base_name(func.value)
            recv = self.expr(func.value, ctx)
            if base and base in self.state:
                label = f"rg:{self.fi.key}:{base}"
                self.state[base] = self.state[base] | {label}
                return recv | {label}
            return recv

        # scoring through in-place accumulation (`loss_sum.add_(nll)`; `p.data.add_(g)` is a weight update)
        if attr == "add_" and isinstance(func, ast.Attribute) and accumulator(func.value):
            self._maybe_score(c, all_args | ng_label, ctx)

        if last_attr(func) in vocab.LOSS_FUNCS and c.args:
            return self._loss(c, arg_labels, kw_labels, all_args, ctx) | ng_label

        # calls into the submission's own functions
        target = self.p.resolve(c, self.fi, self)
        if isinstance(target, FuncInfo):
            if isinstance(func, ast.Attribute) and not _is_self_receiver(func, self.fi):
                self._splice_callbacks(
                    c, all_args, ctx
                )  # the receiver's class is a guess: keep callbacks too
            summary = self.p.summary(target)
            subst = self.p.bind(target, c, arg_labels, kw_labels, self)
            ret = substitute(summary.ret, subst)
            if self._splice(c, target, summary, subst, ctx):
                ret = ret | {f"sr:{id(c)}:{'loop' if ctx.loops else 'once'}"}
            return ret | ng_label
        if isinstance(target, ClassInfo):
            init = target.methods.get("__init__") or self.p.index.method(target.name, "__init__")
            if init is not None:
                summary = self.p.summary(init)
                subst = self.p.bind(init, c, arg_labels, kw_labels, self)
                self._splice(c, init, summary, subst, ctx)
                return substitute(summary.ret, subst) | ng_label
            return all_args | ng_label
        if isinstance(func, ast.Name) and func.id in self.fi.params + [self.fi.vararg, self.fi.kwarg]:
            # a function-valued parameter: resolved where the caller binds it
            self._record("deferred", c, all_args, ctx)
            self.events[(id(c), 0)].target = func.id
            return all_args | ng_label | self._module_call_fits(func)

        self._splice_callbacks(c, all_args, ctx)
        recv = self._module_call_fits(func) if isinstance(func, ast.Name) and func.id in self.state else EMPTY
        if isinstance(func, ast.Attribute):
            recv = self.expr(func.value, ctx)
            if attr in MUTATORS or (attr and attr.endswith("_") and not attr.startswith("_")):
                base = base_name(func.value)
                if base:
                    self.state[base] = self.state.get(base, EMPTY) | all_args
                    if attr in KEYED_WRITERS:
                        pos = KEYED_WRITERS[attr]
                        keys = arg_labels[pos] if pos < len(arg_labels) else all_args
                        self._maybe_write(c, base, keys, ctx)
            if attr == "at" and len(c.args) >= 2:  # np.add.at(table, keys, v)
                base = base_name(c.args[0])
                if base:
                    self.state[base] = self.state.get(base, EMPTY) | all_args
                    self._maybe_write(c, base, arg_labels[1], ctx)
        if is_min_selection(c):
            self._maybe_select(c, recv | all_args, ctx)
        out = recv | all_args | ng_label
        if (attr or name) in vocab.HISTOGRAM_CALLS and _valish(all_args):
            out = out | {HIST}
        if (attr or name) in LOG_CALLS and _valish(out):
            out = out | {LP}  # log-likelihoods: what a scoring sums
        elif LP in out and full_sum(c, name, attr):
            self._maybe_reduction_score(c, out, ctx)
        return out

    def _module_call_fits(self, func: ast.expr) -> Labels:
        """A call of an object whose class is not known here (`model(x, y)` with `model` a parameter): a module
        call runs one of the submission's `forward` methods, so the fitted attributes they read reach the result
        (only asked when some attribute holds state fitted on validation targets)."""
        if not self.p.fitted_attrs or not isinstance(func, ast.Name):
            return EMPTY
        return self.p.forward_fit_labels()

    def _loss(
        self,
        c: ast.Call,
        arg_labels: list[Labels],
        kw_labels: dict[str | None, Labels],
        all_args: Labels,
        ctx: _Ctx,
    ) -> Labels:
        """`cross_entropy(pred, target)`: a number about validation targets (`vl`). When the prediction itself
        already depends on validation targets in the same pass (a logit bias fitted on them, a temperature stored by
        a search over their loss), a `fit` event is recorded here and the result carries `fx:<call>` so that a
        scoring of it can be traced back to the fit."""
        pred = arg_labels[0]
        tgt = arg_labels[1] if len(arg_labels) > 1 else kw_labels.get("target", EMPTY)
        name = loss_target(c)
        if name and _valish(tgt) and name not in self.targets:
            # learnt here; if the body read it before (beyond this argument), those reads are labelled when the
            # function is interpreted again
            self.targets = self.targets | {name}
            if self.reads.get(name, 0) > 1:
                self.new_targets = True
        out = (all_args - {TGT}) | ({VL} if _valish(tgt) else EMPTY)
        via_attr = {lab for lab in pred if lab.startswith("fa:")}
        key = (id(c), 0)
        if (TGT in pred and ctx.first) or via_attr or key in self.events:
            if key not in self.events:
                self._record("fit", c, pred, ctx, target="prediction")
            out = out | {f"fx:{id(c)}"}
        return out

    def _maybe_reduction_score(self, c: ast.Call, labels: Labels, ctx: _Ctx) -> None:
        """`loss_sum = torch.tensor(nll.sum())` with `nll = -np.log(p)`, `sum(-math.log(p) for p in probs)`: the
        whole-sequence sum of validation log-likelihoods computed without autograd is a scoring too (the
        accumulation forms are recorded by `_maybe_score`)."""
        cur = getattr(self, "current", None)
        if isinstance(cur, ast.AugAssign) or (
            isinstance(cur, ast.Assign) and isinstance(cur.value, ast.BinOp) and rebinds_itself(cur)
        ):
            return  # the accumulation around it is the scoring event
        if not _valish(labels) or not (ctx.ng or NG in labels):
            return
        if any(lab.startswith("sr:") for lab in labels):
            return  # a total of what scoring calls already returned (`sum(losses.values())`): not a new scoring
        self._record("score", c, labels, ctx)

    def _maybe_select(self, c: ast.Call, labels: Labels, ctx: _Ctx) -> None:
        """`min(...)` over the results of several scoring passes (two calls, or one call made in a loop)."""
        results = {lab for lab in labels if lab.startswith("sr:")}
        if len(results) >= 2 or any(lab.endswith(":loop") for lab in results):
            self._record("select", c, labels, ctx)

    def _splice_callbacks(self, c: ast.Call, labels: Labels, ctx: _Ctx) -> None:
        """A function of the submission handed to a library call (`lbfgs.step(closure)`, `hook(fn)`) runs there:
        its events are spliced in at the call, its parameters bound to the call's other arguments."""
        for arg in [*c.args, *(k.value for k in c.keywords)]:
            if not isinstance(arg, ast.Name) or arg.id in self.fi.params:
                continue
            name = arg.id
            alias = self.aliases.get(name)
            if isinstance(alias, ast.Name):
                name = alias.id
            elif alias is not None and name not in self.fi.nested:
                continue  # a local bound to something else
            found = self.p.index.lookup_name(name, self.fi, self.fi.unit)
            if not isinstance(found, FuncInfo) or found is self.fi:
                continue
            summary = self.p.summary(found)
            subst = {p: labels for p in [*found.params, found.vararg or "", found.kwarg or ""]}
            base = getattr(c, "lineno", 0) * 1000 + getattr(c, "col_offset", 0)
            for i, ev in enumerate(summary.events):
                if ev.kind != "deferred":
                    self.events[(id(c), 10**6 + id(found.node) % 10**5 * 100 + i)] = ev.spliced(
                        c, self.fi, subst, ctx.loops, ctx.branches, base, ctx.ng
                    )

    def _record_update(self, c: ast.Call, labels: Labels, ctx: _Ctx) -> None:
        valish = VAL in labels or any(lab.startswith("p:") for lab in labels)
        if not valish:
            return
        self._record("update", c, labels, ctx)

    def _splice(
        self, call: ast.Call, callee: FuncInfo, summary: Summary, subst: dict[str, Labels], ctx: _Ctx
    ) -> bool:
        """Copy the callee's events in at the call site; True when the call scores validation data."""
        base = getattr(call, "lineno", 0) * 1000 + getattr(call, "col_offset", 0)
        added: list[Event] = []
        for i, ev in enumerate(summary.events):
            if ev.kind == "deferred":
                bound = self.p.bound_function(callee, ev.target, call, self)
                if bound is None:
                    continue
                inner = self.p.summary(bound)
                args_labels = substitute(ev.labels, subst)  # already in this function's terms
                inner_subst = {p: args_labels for p in bound.params + [bound.vararg or "", bound.kwarg or ""]}
                for j, iev in enumerate(inner.events):
                    if iev.kind == "deferred":
                        continue
                    nested = iev.spliced(
                        ev.node, callee, inner_subst, ev.loops, ev.branches, ev.seq[0], False
                    )
                    spliced = nested.spliced(call, self.fi, {}, ctx.loops, ctx.branches, base, ctx.ng)
                    self.events[(id(call), i * 1000 + j)] = spliced
                    added.append(spliced)
                continue
            caller_name = self.p.name_in_caller(callee, call, ev.names[0], self.fi) if ev.names else ""
            spliced = ev.spliced(call, self.fi, subst, ctx.loops, ctx.branches, base, ctx.ng, caller_name)
            self.events[(id(call), i)] = spliced
            added.append(spliced)
        if len(self.events) > MAX_EVENTS * 2:
            keep = sorted(self.events.items(), key=lambda kv: kv[1].seq)[:MAX_EVENTS]
            self.events = dict(keep)
        return any(ev.kind == "score" and _valish(ev.labels) for ev in added)


def _is_self_receiver(func: ast.Attribute, fi: FuncInfo) -> bool:
    return (
        isinstance(func.value, ast.Name)
        and fi.is_method
        and bool(fi.params)
        and func.value.id == fi.params[0]
    )


def _valish(labels: Labels) -> bool:
    """Validation content, or a parameter that a caller may bind to it."""
    return VAL in labels or any(lab.startswith("p:") for lab in labels)
