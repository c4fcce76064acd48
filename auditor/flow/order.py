"""Order analysis: where validation tokens are *scored* and where the model is *updated* on them, and in which
order those happen along the path that actually runs from the entry point.

Vocabulary (issue text / rules.md A.2 C3):
- *Scoring* is an accumulation (``s += v``, ``s.add_(v)``, ``s = s + v``) of a value that depends on validation
  data and is computed without autograd: inside ``torch.no_grad()`` / ``torch.inference_mode()`` (with-blocks,
  decorators), from a value produced there, or in a function that is only ever called from such a context.
- An *update* is ``loss.backward()`` / ``torch.autograd.grad(loss, ...)`` on a loss that depends on validation data.
  Its *target* is what the optimizer stepped after it holds: module parameters (weights, LoRA adapters) or free
  eval-time tensors created with ``requires_grad=True`` (SLOT deltas, logit biases).

How it works, all on the stdlib ``ast`` and without looking at identifier names:
1. every function is interpreted once, flow-sensitively, over sets of *labels* per local name: ``val`` (content of
   the validation split; sources are the val shard file patterns, which are data, not identifiers), ``ng``
   (computed without autograd), ``p:<param>`` (depends on that parameter) and ``rg:<fn>:<name>`` (depends on a free
   tensor created with requires_grad). Calls to functions of the submission are summarised (which parameters reach
   the return value), so a shared helper called with train data in one place and validation data in another is
   not confused;
2. each function yields an ordered list of score/update *events*; a call to another function splices the callee's
   events in at the call site with its ``p:`` labels replaced by the labels of the actual arguments (function-valued
   arguments such as ``timed_eval(label, eval_val, ...)`` are bound too). The module body of the entry script is the
   root; what it yields is the order in which scoring and updates run;
3. every event carries its loops, its ``if`` branches (for mutually exclusive paths and default-off gates) and the
   call chain that led to it (the flow shown in findings). *Write* events (validation content stored into a table
   or container, with the object's name in every function of the chain) let PG203 see state built by one pass
   and read by a later one.

Calls run where they are written, including those inside lambdas handed to helpers and own functions handed to
library calls as callbacks (`lbfgs.step(closure)`); nested functions are interpreted in their enclosing
function's scope. From the shared flow layer (``auditor.flow``) this module takes: method calls on objects whose
class it knows (`cache.update(...)`), default-off gates and README run commands (``prog.reach``), dead functions,
defeated analysis (``prog.defeated``) and the source-to-sink path of validation data (``val_taint(ctx).path``).

The rules in ``rules/ttt_order.py``, ``rules/slot.py`` and ``rules/multipass.py`` judge these events.
``analyse_order(ctx)`` computes everything once per audit (``ctx.memo``).
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from auditor.findings import FlowStep, Location
from auditor.flow import vocab

if TYPE_CHECKING:
    from auditor.facts import AuditContext, CodeUnit

Labels = frozenset[str]
EMPTY: Labels = frozenset()
VAL = "val"
NG = "ng"

# Library semantics are declared once in auditor.flow.vocab; these names are kept for this module's readers.
# Validation shard file patterns: "fineweb_val_*.bin", "val_000001.bin", "fineweb_val_bytes_*.bin".
VAL_PATTERN = vocab.VAL_SHARD
# Results that carry the *shape* of their input, not its content: barriers for taint.
SHAPE_METHODS = vocab.METADATA_CALLS
SHAPE_ATTRS = vocab.METADATA_ATTRS
SHAPE_FUNCS = vocab.METADATA_CALLS
# In-place container mutators: `x.append(v)` makes x carry v's labels (`x.op_()` tensor writes are matched by
# their trailing underscore where this module asks).
MUTATORS = vocab.CONTAINER_MUTATORS
NO_GRAD_CALLS = vocab.NO_GRAD_CONTEXTS
KEYED_WRITERS = vocab.KEYED_WRITERS
_BUILTIN_NAMES = frozenset(dir(builtins))
MAX_EVENTS = 5000
MAX_ROUNDS = 4


# ----------------------------------------------------------------------------------------------------------------
# Program index: functions, classes, call resolution
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class FuncInfo:
    key: str
    node: ast.AST  # FunctionDef / AsyncFunctionDef / Module (the root)
    unit: CodeUnit
    cls: str | None = None
    parent: FuncInfo | None = None
    params: list[str] = field(default_factory=list)
    vararg: str | None = None
    kwarg: str | None = None
    is_method: bool = False
    nested: dict[str, FuncInfo] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return getattr(self.node, "name", "<module>")

    @property
    def body(self) -> list[ast.stmt]:
        return list(getattr(self.node, "body", []))


@dataclass
class ClassInfo:
    name: str
    node: ast.ClassDef
    unit: CodeUnit
    methods: dict[str, FuncInfo] = field(default_factory=dict)
    bases: list[str] = field(default_factory=list)


class ProgramIndex:
    """Every function and class of the analysed units (innermost decoded layer per shipped file)."""

    def __init__(self, units: list[CodeUnit]) -> None:
        self.units = units
        self.funcs: dict[str, FuncInfo] = {}
        self.module_funcs: dict[str, list[FuncInfo]] = {}
        self.classes: dict[str, list[ClassInfo]] = {}
        self.roots: dict[str, FuncInfo] = {}
        self.class_attr_values: dict[str, list[tuple[ast.expr, FuncInfo | None]]] = {}
        for unit in units:
            assert unit.tree is not None
            root = FuncInfo(key=f"{unit.name}:<module>", node=unit.tree, unit=unit)
            self.roots[unit.name] = root
            self.funcs[root.key] = root
            self._collect(unit, unit.tree.body, root, None)

    def _collect(self, unit: CodeUnit, body: list[ast.stmt], owner: FuncInfo, cls: ClassInfo | None) -> None:
        for stmt in body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                fi = self._make_func(unit, stmt, owner, cls)
                if cls is not None:
                    cls.methods[stmt.name] = fi
                elif owner.node is unit.tree:
                    self.module_funcs.setdefault(stmt.name, []).append(fi)
                else:
                    owner.nested[stmt.name] = fi
                self._collect(unit, stmt.body, fi, None)
            elif isinstance(stmt, ast.ClassDef):
                ci = ClassInfo(stmt.name, stmt, unit, bases=[_dotted(b) or "" for b in stmt.bases])
                self.classes.setdefault(stmt.name, []).append(ci)
                for sub in stmt.body:
                    if isinstance(sub, (ast.Assign, ast.AnnAssign)) and sub.value is not None:
                        targets = sub.targets if isinstance(sub, ast.Assign) else [sub.target]
                        for t in targets:
                            if isinstance(t, ast.Name):
                                self.class_attr_values.setdefault(t.id, []).append((sub.value, None))
                self._collect(unit, stmt.body, owner, ci)
            else:
                # defs inside if/try/with/for blocks at this level still belong to `owner`
                for child in ast.iter_child_nodes(stmt):
                    if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        self._collect(unit, [child], owner, cls)
                for sub_body in _sub_bodies(stmt):
                    self._collect(unit, sub_body, owner, cls)

    def _make_func(self, unit: CodeUnit, node: ast.AST, owner: FuncInfo, cls: ClassInfo | None) -> FuncInfo:
        args = node.args  # type: ignore[attr-defined]
        params = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
        key = f"{unit.name}:{cls.name + '.' if cls else ''}{node.name}:{node.lineno}"  # type: ignore[attr-defined]
        decorators = [_dotted(d) or "" for d in node.decorator_list]  # type: ignore[attr-defined]
        is_method = cls is not None and "staticmethod" not in decorators
        fi = FuncInfo(
            key=key,
            node=node,
            unit=unit,
            cls=cls.name if cls else None,
            parent=owner if owner.node is not unit.tree else None,
            params=params,
            vararg=args.vararg.arg if args.vararg else None,
            kwarg=args.kwarg.arg if args.kwarg else None,
            is_method=is_method,
        )
        self.funcs[key] = fi
        return fi

    # -- resolution ---------------------------------------------------------------------------------------------
    def lookup_name(self, name: str, scope: FuncInfo | None, unit: CodeUnit) -> FuncInfo | ClassInfo | None:
        f = scope
        while f is not None:
            if name in f.nested:
                return f.nested[name]
            f = f.parent
        for fi in self.module_funcs.get(name, []):
            if fi.unit is unit:
                return fi
        for ci in self.classes.get(name, []):
            if ci.unit is unit:
                return ci
        cands = self.module_funcs.get(name, [])
        if len(cands) == 1:
            return cands[0]
        cls = self.classes.get(name, [])
        if len(cls) == 1:
            return cls[0]
        return None

    def method(self, cls_name: str | None, name: str) -> FuncInfo | None:
        seen: set[str] = set()
        todo = [cls_name] if cls_name else []
        while todo:
            c = todo.pop()
            if c in seen:
                continue
            seen.add(c)
            for ci in self.classes.get(c, []):
                if name in ci.methods:
                    return ci.methods[name]
                todo.extend(b.split(".")[-1] for b in ci.bases)
        return None


def _sub_bodies(stmt: ast.stmt) -> Iterator[list[ast.stmt]]:
    for attr in ("body", "orelse", "finalbody"):
        sub = getattr(stmt, attr, None)
        if isinstance(sub, list) and sub and isinstance(sub[0], ast.stmt):
            yield sub
    for h in getattr(stmt, "handlers", []) or []:
        yield h.body
    for case in getattr(stmt, "cases", []) or []:
        yield case.body


def _dotted(node: ast.AST) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Call):
        inner = _dotted(node.func)
        return None if inner is None else ".".join([inner, *reversed(parts)])
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _last_attr(node: ast.AST) -> str | None:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


def is_no_grad_ctx(expr: ast.expr) -> bool:
    """`torch.no_grad()`, `torch.inference_mode()`, `torch.set_grad_enabled(False)` (also as decorators)."""
    target = expr.func if isinstance(expr, ast.Call) else expr
    last = _last_attr(target)
    if last in NO_GRAD_CALLS:
        if isinstance(expr, ast.Call) and last == "inference_mode" and expr.args:
            first = expr.args[0]
            return not (isinstance(first, ast.Constant) and first.value is False)
        return True
    if last == "set_grad_enabled" and isinstance(expr, ast.Call) and expr.args:
        first = expr.args[0]
        return isinstance(first, ast.Constant) and first.value is False
    return False


def _is_enable_grad(expr: ast.expr) -> bool:
    target = expr.func if isinstance(expr, ast.Call) else expr
    return _last_attr(target) == "enable_grad"


# ----------------------------------------------------------------------------------------------------------------
# Events
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Branch:
    test: ast.expr
    taken: bool  # True: the `if` body; False: the else branch
    func: str  # key of the function the `if` lives in
    node_id: int


@dataclass
class Event:
    kind: str  # "score" | "update" | "result" (value returned by a scoring call, for min-over-passes)
    node: ast.AST  # the accumulation / backward call
    func: FuncInfo  # function it is written in
    labels: Labels
    loops: tuple[ast.AST, ...]  # enclosing loops, outermost first, across the call chain
    branches: tuple[Branch, ...]
    chain: tuple[tuple[ast.AST, FuncInfo], ...] = ()  # call sites from the root, outermost first
    seq: tuple[int, ...] = ()  # order key: positions along the call chain
    rg: Labels = EMPTY  # free requires_grad tensors the value depends on
    # update only:
    target: str = "module"  # updates: "module" | "free_tensor"; writes: the written name; deferred: the param
    # writes: the written object's name in each function of the chain, outermost first ("" where it is local)
    names: tuple[str, ...] = ()
    keyed: bool = False  # writes: at keys computed from validation content
    owner: FuncInfo | None = (
        None  # updates: the function whose local object is updated (gone when it returns)
    )
    throwaway: bool = False
    step: ast.AST | None = None  # optimizer.step() committing the update
    step_func: FuncInfo | None = None

    @property
    def is_val(self) -> bool:
        return VAL in self.labels

    def location(self) -> Location:
        return self.func.unit.location(self.node)

    def flow(self, message: str) -> list[FlowStep]:
        steps = [FlowStep(fi.unit.location(call), f"calls {_call_name(call)}()") for call, fi in self.chain]
        steps.append(FlowStep(self.location(), message))
        return steps

    def spliced(
        self,
        call: ast.AST,
        caller: FuncInfo,
        subst: dict[str, Labels],
        loops: tuple[ast.AST, ...],
        branches: tuple[Branch, ...],
        seq_head: int,
        ng: bool,
        caller_name: str = "",
    ) -> Event:
        labels = substitute(self.labels, subst)
        if self.kind == "score" and ng:
            labels = labels | {NG}
        return Event(
            kind=self.kind,
            node=self.node,
            func=self.func,
            labels=labels,
            loops=loops + self.loops,
            branches=branches + self.branches,
            chain=((call, caller), *self.chain),
            seq=(seq_head, *self.seq),
            rg=self.rg,
            target=self.target,
            throwaway=self.throwaway,
            step=self.step,
            step_func=self.step_func,
            names=(caller_name, *self.names) if self.names else (),
            keyed=self.keyed,
        )


def _call_name(call: ast.AST) -> str:
    if isinstance(call, ast.Call):
        name = _dotted(call.func)
        if name:
            return name
    return "<call>"


def substitute(labels: Labels, subst: dict[str, Labels]) -> Labels:
    """Replace the callee's parameter labels by the caller's argument labels. `p:` labels that are not the
    callee's parameters belong to an enclosing function (a closure's free variables) and are kept."""
    if not any(lab.startswith("p:") for lab in labels):
        return labels
    out = {lab for lab in labels if not lab.startswith("p:") or lab[2:] not in subst}
    for lab in labels:
        if lab.startswith("p:"):
            out |= subst.get(lab[2:], EMPTY)
    return frozenset(out)


# ----------------------------------------------------------------------------------------------------------------
# Per-function interpretation
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Summary:
    ret: Labels = EMPTY
    events: list[Event] = field(default_factory=list)


@dataclass
class _Ctx:
    ng: bool = False
    loops: tuple[ast.AST, ...] = ()
    branches: tuple[Branch, ...] = ()


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
            if isinstance(s.op, (ast.Add, ast.Sub)) and _accumulator(s.target):
                self._maybe_score(s, labels, ctx)
            base = _base_name(s.target)
            if base:
                self.state[base] = self.state.get(base, EMPTY) | labels
            if isinstance(s.target, ast.Subscript) and base:
                self._maybe_write(s, base, self.expr(s.target.slice, ctx), ctx, labels)
        elif isinstance(s, (ast.For, ast.AsyncFor)):
            it = self.expr(s.iter, ctx)
            inner = _Ctx(ctx.ng, ctx.loops + (s,), ctx.branches)
            for _ in range(self._passes(ctx)):
                self.assign(s.target, it, None, inner)
                self.block(s.body, inner)
            self.block(s.orelse, ctx)
        elif isinstance(s, ast.While):
            self.expr(s.test, ctx)
            inner = _Ctx(ctx.ng, ctx.loops + (s,), ctx.branches)
            for _ in range(self._passes(ctx)):
                self.block(s.body, inner)
                self.expr(s.test, inner)
            self.block(s.orelse, ctx)
        elif isinstance(s, ast.If):
            self.expr(s.test, ctx)
            before = dict(self.state)
            self.block(
                s.body, _Ctx(ctx.ng, ctx.loops, ctx.branches + (Branch(s.test, True, self.fi.key, id(s)),))
            )
            after_body = self.state
            self.state = dict(before)
            self.block(
                s.orelse, _Ctx(ctx.ng, ctx.loops, ctx.branches + (Branch(s.test, False, self.fi.key, id(s)),))
            )
            for k, v in after_body.items():
                self.state[k] = self.state.get(k, EMPTY) | v
        elif isinstance(s, (ast.With, ast.AsyncWith)):
            ng = ctx.ng
            for item in s.items:
                if is_no_grad_ctx(item.context_expr):
                    ng = True
                elif _is_enable_grad(item.context_expr):
                    ng = False
                labels = self.expr(item.context_expr, ctx)
                if item.optional_vars is not None:
                    self.assign(item.optional_vars, labels, None, ctx)
            self.block(s.body, _Ctx(ng, ctx.loops, ctx.branches))
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
        if isinstance(target, ast.Name):
            self.state[target.id] = labels
            if value is not None:
                self.aliases[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)):
            for elt in target.elts:
                self.assign(elt.value if isinstance(elt, ast.Starred) else elt, labels, None, ctx)
        elif isinstance(target, ast.Attribute):
            base = _base_name(target)
            val_labels = labels & {VAL}
            if val_labels:
                if self.p.add_tainted_attr(target.attr):
                    pass
            if self.fi.is_method and self.fi.name == "__init__" and base == (self.fi.params or [None])[0]:
                self.ret |= {lab for lab in labels if lab == VAL or lab.startswith("p:")}
            if base and base != (self.fi.params[0] if self.fi.is_method and self.fi.params else None):
                self.state[base] = self.state.get(base, EMPTY) | labels
        elif isinstance(target, ast.Subscript):
            index = self.expr(target.slice, ctx)
            base = _base_name(target)
            if base:
                self.state[base] = self.state.get(base, EMPTY) | labels
                self._maybe_write(target, base, index, ctx, labels)
        elif isinstance(target, ast.Starred):
            self.assign(target.value, labels, None, ctx)

    def _requires_grad_labels(self, value: ast.expr, targets: list[ast.expr], labels: Labels) -> Labels:
        """A free tensor created with requires_grad=True (or nn.Parameter / .requires_grad_()) gets its own label."""
        if not _creates_free_tensor(value, self.p.constants(self.fi.unit)):
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
            self._sums = _running_sums(self.fi)
        return name in self._sums

    def _maybe_write(self, node: ast.AST, base: str, keys: Labels, ctx: _Ctx, values: Labels = EMPTY) -> None:
        """An in-place write of validation content into a container or tensor. `keyed` when the index is computed
        from validation content (`counts[hash(ctx, tok)] += 1`: a lookup table); writes at positions
        (`h[i] = ...`, `buf[:, :n] = chunk`) are per-position buffers or tables filled by value."""
        if _valish(keys):
            self._record("write", node, keys | values, ctx, target=base, names=(base,), keyed=True)
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
            if e.id in self.state:
                return self.state[e.id]
            return self.p.free_name_labels(self.fi, e.id)
        if isinstance(e, ast.Attribute):
            if e.attr in SHAPE_ATTRS:
                self.expr(e.value, ctx)
                return EMPTY
            base = self.expr(e.value, ctx)
            if e.attr in self.p.tainted_attrs:
                base = base | {VAL}
            else:
                self.p.note_attr_read(e.attr)
            return base
        if isinstance(e, ast.BinOp):
            return self.expr(e.left, ctx) | self.expr(e.right, ctx)
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

        if name in SHAPE_FUNCS or attr in SHAPE_METHODS:
            if attr is not None:
                self.expr(func, ctx)
            return EMPTY

        # updates
        if attr == "backward":
            recv = self.expr(func.value, ctx)  # type: ignore[union-attr]
            self._record_update(c, recv, ctx)
            return EMPTY
        if attr == "grad" and _dotted(func) in ("torch.autograd.grad", "autograd.grad") and c.args:
            self._record_update(c, arg_labels[0], ctx)
            return arg_labels[0]
        if attr == "requires_grad_" and isinstance(func, ast.Attribute):
            base = _base_name(func.value)
            recv = self.expr(func.value, ctx)
            if base and base in self.state:
                label = f"rg:{self.fi.key}:{base}"
                self.state[base] = self.state[base] | {label}
                return recv | {label}
            return recv

        # scoring through in-place accumulation (`loss_sum.add_(nll)`; `p.data.add_(g)` is a weight update)
        if attr == "add_" and isinstance(func, ast.Attribute) and _accumulator(func.value):
            self._maybe_score(c, all_args | ng_label, ctx)

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
            return all_args | ng_label

        self._splice_callbacks(c, all_args, ctx)
        recv = EMPTY
        if isinstance(func, ast.Attribute):
            recv = self.expr(func.value, ctx)
            if attr in MUTATORS or (attr and attr.endswith("_") and not attr.startswith("_")):
                base = _base_name(func.value)
                if base:
                    self.state[base] = self.state.get(base, EMPTY) | all_args
                    if attr in KEYED_WRITERS:
                        pos = KEYED_WRITERS[attr]
                        keys = arg_labels[pos] if pos < len(arg_labels) else all_args
                        self._maybe_write(c, base, keys, ctx)
            if attr == "at" and len(c.args) >= 2:  # np.add.at(table, keys, v)
                base = _base_name(c.args[0])
                if base:
                    self.state[base] = self.state.get(base, EMPTY) | all_args
                    self._maybe_write(c, base, arg_labels[1], ctx)
        if _is_min_selection(c):
            self._maybe_select(c, recv | all_args, ctx)
        return recv | all_args | ng_label

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


def _is_min_selection(c: ast.Call) -> bool:
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


def _running_sums(fi: FuncInfo) -> set[str]:
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
        if _last_attr(node.func) in _ZERO_CTORS:
            return True
        node = node.func.value if isinstance(node.func, ast.Attribute) else node.func
    return False


def _accumulator(target: ast.AST) -> bool:
    """A sum being accumulated (`total`, `self.total`), not a table entry (`counts[k] += ...`, a write) nor a
    tensor's storage (`p.data`, `p.grad`)."""
    if isinstance(target, ast.Attribute):
        return target.attr not in ("data", "grad") and isinstance(target.value, ast.Name)
    return isinstance(target, ast.Name)


def _base_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred)):
        node = node.value
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return _base_name(node.func.value)
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


def _creates_free_tensor(value: ast.expr, consts: dict[str, object] | None = None) -> bool:
    """`torch.zeros(..., requires_grad=True)`, `nn.Parameter(...)`, `t.clone().requires_grad_()` and the same
    wrapped in method chains (`.to(device)`): the calls along the value's call chain, not its arguments."""
    consts = consts or {}
    node: ast.AST = value
    while isinstance(node, ast.Call):
        for kw in node.keywords:
            if kw.arg == "requires_grad" and _constant(kw.value, consts) is True:
                return True
        last = _last_attr(node.func)
        if last == "Parameter":
            return True
        if last == "requires_grad_":
            return not (node.args and _constant(node.args[0], consts) is False)
        node = node.func.value if isinstance(node.func, ast.Attribute) else node.func
        while isinstance(node, (ast.Attribute, ast.Subscript)):
            node = node.value
    return False


# ----------------------------------------------------------------------------------------------------------------
# Whole program
# ----------------------------------------------------------------------------------------------------------------
class OrderProgram:
    def __init__(self, index: ProgramIndex) -> None:
        self.index = index
        self.tainted_attrs: set[str] = set()
        self._attrs_changed = False
        self.summaries: dict[str, Summary] = {}
        self._in_progress: set[str] = set()
        self.ng_only: dict[str, bool] = {}
        self.module_state: dict[str, dict[str, Labels]] = {}
        self.interpreters: dict[str, _FunctionInterpreter] = {}
        self._constants: dict[object, dict[str, object]] = {}
        self._attrs_read_clean: set[str] = set()
        self.external: Callable[[ast.Call], FuncInfo | None] | None = None

    def constants(self, unit: CodeUnit) -> dict[str, object]:
        if unit.name not in self._constants:
            self._constants[unit.name] = module_constants(unit.tree) if unit.tree is not None else {}
        return self._constants[unit.name]

    def builtin_alias(self, unit: CodeUnit, name: str) -> str:
        key = ("alias", unit.name)
        if key not in self._constants:
            self._constants[key] = module_constants(unit.tree, ast.Name) if unit.tree is not None else {}  # type: ignore[index]
        target = self._constants[key].get(name)  # type: ignore[index]
        return target if isinstance(target, str) and target in _BUILTIN_NAMES else name

    def note_attr_read(self, attr: str) -> None:
        """An attribute was read while not (yet) tainted: if it becomes tainted later, this round is stale."""
        self._attrs_read_clean.add(attr)

    def add_tainted_attr(self, attr: str) -> bool:
        if attr not in self.tainted_attrs:
            self.tainted_attrs.add(attr)
            if attr in self._attrs_read_clean:
                self._attrs_changed = True  # someone already read it as clean: redo the round
            return True
        return False

    def free_name_labels(self, fi: FuncInfo, name: str) -> Labels:
        """A name read but not bound in this function: an enclosing function's or the module's binding."""
        parent = fi.parent
        while parent is not None:
            interp = self.interpreters.get(parent.key)
            if interp is not None and name in interp.state:
                return interp.state[name]
            parent = parent.parent
        return self.module_state.get(fi.unit.name, {}).get(name, EMPTY)

    # -- summaries ----------------------------------------------------------------------------------------------
    def summary(self, fi: FuncInfo) -> Summary:
        if fi.key in self.summaries:
            return self.summaries[fi.key]
        if fi.key in self._in_progress:
            return Summary()  # recursion: no summary for the back edge
        self._in_progress.add(fi.key)
        interp = _FunctionInterpreter(self, fi)
        self.interpreters[fi.key] = interp
        result = interp.run()
        self._in_progress.discard(fi.key)
        self.summaries[fi.key] = result
        return result

    def run(self, root_unit: CodeUnit | None) -> Summary | None:
        """Summaries for every function, then the root's events. Attribute taint is global (`self.val_tokens =
        ...` in one method, read in another): a round in which an attribute became tainted after something had
        already read it as clean is redone."""
        self._compute_ng_only()
        # nested functions are analysed when their enclosing function reaches them, with its names in scope
        funcs = [fi for fi in self.index.funcs.values() if fi.node is not fi.unit.tree and fi.parent is None]
        result: Summary | None = None
        for _ in range(MAX_ROUNDS):
            self._attrs_changed = False
            self._attrs_read_clean: set[str] = set()
            self.summaries.clear()
            self.interpreters.clear()
            # module-level bindings first (constants, hyperparameter objects), then every function
            for unit_name, root in self.index.roots.items():
                interp = _FunctionInterpreter(self, root)
                interp.block([s for s in root.body if not _is_main_guard(s)], _Ctx())
                self.module_state[unit_name] = interp.state
            self._class_bodies()
            for fi in funcs:
                self.summary(fi)
            if root_unit is not None:
                root = self.index.roots[root_unit.name]
                interp = _FunctionInterpreter(self, root)
                self.interpreters[root.key] = interp
                result = interp.run()
                self.summaries[root.key] = result
            if not self._attrs_changed:
                break
        return result

    def _class_bodies(self) -> None:
        """Class-level fields (`val_files = os.path.join(root, "fineweb_val_*.bin")`) taint their attribute."""
        for classes in self.index.classes.values():
            for ci in classes:
                root = self.index.roots[ci.unit.name]
                interp = _FunctionInterpreter(self, root)
                interp.state = dict(self.module_state.get(ci.unit.name, {}))
                body = [s for s in ci.node.body if isinstance(s, (ast.Assign, ast.AnnAssign))]
                interp.block(body, _Ctx())
                for s in body:
                    targets = s.targets if isinstance(s, ast.Assign) else [s.target]
                    for t in targets:
                        if isinstance(t, ast.Name) and VAL in interp.state.get(t.id, EMPTY):
                            self.add_tainted_attr(t.id)

    def _compute_ng_only(self) -> None:
        """A function is no-grad-only when decorated so, or when every call site is inside a no-grad context
        or inside another no-grad-only function."""
        sites: dict[str, list[tuple[str, bool]]] = {}
        ng_only: dict[str, bool] = {}
        for fi in self.index.funcs.values():
            if any(is_no_grad_ctx(d) for d in getattr(fi.node, "decorator_list", [])):
                ng_only[fi.key] = True
            for call, ng in _calls_with_ng(fi.body):
                target = self.resolve(call, fi, None)
                if isinstance(target, FuncInfo):
                    sites.setdefault(target.key, []).append((fi.key, ng))
        for _ in range(4):
            changed = False
            for key, callers in sites.items():
                if key not in ng_only and all(ng or ng_only.get(caller, False) for caller, ng in callers):
                    ng_only[key] = True
                    changed = True
            if not changed:
                break
        self.ng_only = ng_only

    # -- resolution and binding ---------------------------------------------------------------------------------
    def resolve(
        self, c: ast.Call, fi: FuncInfo, interp: _FunctionInterpreter | None
    ) -> FuncInfo | ClassInfo | None:
        func = c.func
        if isinstance(func, ast.Name):
            if interp is not None and func.id in interp.aliases and func.id not in fi.nested:
                alias = interp.aliases[func.id]
                if isinstance(alias, ast.Name) and alias.id != func.id:
                    return self.index.lookup_name(alias.id, fi, fi.unit)
                return None
            if func.id in fi.params:
                return None
            return self.index.lookup_name(func.id, fi, fi.unit)
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            if fi.is_method and fi.params and func.value.id == fi.params[0]:
                return self.index.method(fi.cls, func.attr)
            if fi.cls is None and fi.parent is not None and fi.parent.is_method:
                if fi.parent.params and func.value.id == fi.parent.params[0]:
                    return self.index.method(fi.parent.cls, func.attr)
        if isinstance(func, ast.Attribute) and self.external is not None:
            return self.external(c)  # `cache.update(...)`: the shared call graph knows the receiver's class
        return None

    def bind(
        self,
        callee: FuncInfo,
        c: ast.Call,
        arg_labels: list[Labels],
        kw_labels: dict[str | None, Labels],
        interp: _FunctionInterpreter,
    ) -> dict[str, Labels]:
        params = list(callee.params)
        if callee.is_method and params:
            params = params[1:]  # bound instance (self.m(...) or Class(...) -> __init__)
        subst: dict[str, Labels] = {}
        star: Labels = EMPTY
        for i, (arg, labels) in enumerate(zip(c.args, arg_labels, strict=False)):
            if isinstance(arg, ast.Starred):
                star |= labels
                continue
            if i < len(params):
                subst[params[i]] = labels
            else:
                star |= labels
        extra: Labels = EMPTY
        for k, labels in kw_labels.items():
            if k is None:
                extra |= labels
            elif k in params:
                subst[k] = labels
            else:
                extra |= labels
        for p in params:
            subst.setdefault(p, star | extra)  # unbound parameters take their defaults (or **kwargs)
        if callee.vararg:
            subst[callee.vararg] = star | subst.get(callee.vararg, EMPTY)
        if callee.kwarg:
            subst[callee.kwarg] = extra
        return subst

    def name_in_caller(
        self, callee: FuncInfo, call: ast.Call, name: str, caller: FuncInfo | None = None
    ) -> str:
        """The caller's name for an object the callee knows as `name` (its receiver, a parameter, or for a closure
        a free variable of the enclosing caller), or ""."""
        if not name:
            return ""
        name = self._unalias(callee, name)
        if caller is not None and callee.parent is caller and name not in callee.params:
            if not any(name in assigned_names(st) for st in simple_statements(callee.body)):
                return name  # a closure writing its enclosing function's object
        params = callee.params
        if callee.is_method and params:
            if name == params[0]:
                if isinstance(call.func, ast.Attribute):
                    return _base_name(call.func.value) or ""
                return ""
            params = params[1:]
        if name not in params:
            return ""
        for kw in call.keywords:
            if kw.arg == name:
                return _base_name(kw.value) or ""
        i = params.index(name)
        positional = [a for a in call.args if not isinstance(a, ast.Starred)]
        if i < len(positional) and len(positional) == len(call.args):
            return _base_name(positional[i]) or ""
        return ""

    def _unalias(self, fi: FuncInfo, name: str) -> str:
        """`N = cache` (minifiers alias parameters): the name a local alias stands for."""
        key = ("aliases", fi.key)
        if key not in self._constants:
            counts: dict[str, int] = {}
            values: dict[str, str] = {}
            for st in simple_statements(fi.body):
                for n in assigned_names(st):
                    counts[n] = counts.get(n, 0) + 1
                if isinstance(st, ast.Assign) and isinstance(st.value, ast.Name):
                    for t in st.targets:
                        if isinstance(t, ast.Name):
                            values[t.id] = st.value.id
            self._constants[key] = {k: v for k, v in values.items() if counts.get(k) == 1}
        table = self._constants[key]
        for _ in range(4):
            nxt = table.get(name)
            if not isinstance(nxt, str):
                break
            name = nxt
        return name

    def bound_function(
        self, callee: FuncInfo, param: str, call: ast.Call, interp: _FunctionInterpreter
    ) -> FuncInfo | None:
        """The function the caller passes for `param` of `callee` at `call` (`timed_eval('x', eval_val, ...)`)."""
        params = callee.params[1:] if callee.is_method else callee.params
        expr: ast.expr | None = None
        for kw in call.keywords:
            if kw.arg == param:
                expr = kw.value
        if expr is None and param in params:
            i = params.index(param)
            positional = [a for a in call.args if not isinstance(a, ast.Starred)]
            if i < len(positional):
                expr = positional[i]
        for _ in range(3):
            if isinstance(expr, ast.Name) and expr.id in interp.aliases and expr.id not in interp.fi.nested:
                nxt = interp.aliases[expr.id]
                if isinstance(nxt, ast.Name):
                    expr = nxt
                    continue
            break
        if isinstance(expr, ast.Name):
            found = self.index.lookup_name(expr.id, interp.fi, interp.fi.unit)
            return found if isinstance(found, FuncInfo) else None
        if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name) and interp.fi.is_method:
            if interp.fi.params and expr.value.id == interp.fi.params[0]:
                return self.index.method(interp.fi.cls, expr.attr)
        return None


def _is_main_guard(s: ast.stmt) -> bool:
    if not isinstance(s, ast.If) or not isinstance(s.test, ast.Compare):
        return False
    parts = [s.test.left, *s.test.comparators]
    return any(isinstance(p, ast.Name) and p.id == "__name__" for p in parts)


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


def _calls_with_ng(body: list[ast.stmt]) -> list[tuple[ast.Call, bool]]:
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
                elif _is_enable_grad(item.context_expr):
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


# ----------------------------------------------------------------------------------------------------------------
# Loop and statement helpers used by the judgements
# ----------------------------------------------------------------------------------------------------------------
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
            b = _base_name(s.value.func.value)
            if b:
                out.add(b)
    for t in targets:
        for n in ast.walk(t):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                out.add(n.id)
        b = _base_name(t)
        if b:
            out.add(b)
    return out


def simple_statements(body: Iterable[ast.stmt]) -> Iterator[ast.stmt]:
    """All statements under `body` except the bodies of nested defs, compound statements included."""
    for s in body:
        if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        yield s
        for sub in _sub_bodies(s):
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


def is_data_loop(loop: ast.AST) -> bool:
    """Do iterations visit different positions? True when a value that changes per iteration (the loop target,
    or for `while` loops a name re-bound from a call each time round) reaches an index or slice in the body.
    An epoch loop (`for epoch in range(E)`) only reaches lr schedules, logs and `if epoch == E-1` tests."""
    body = list(getattr(loop, "body", []))
    if isinstance(loop, (ast.For, ast.AsyncFor)):
        derived = names_in(loop.target)
    else:
        derived = set()
        for s in simple_statements(body):
            if isinstance(s, (ast.Assign, ast.AugAssign)) and any(
                isinstance(n, ast.Call) for n in ast.walk(s.value)
            ):
                derived |= assigned_names(s)
    stmts = list(simple_statements(body))
    for _ in range(6):
        grew = False
        for s in stmts:
            if stmt_reads(s) & derived:
                new = assigned_names(s) - derived
                if new:
                    derived |= new
                    grew = True
        if not grew:
            break
    for s in stmts:
        for n in ast.walk(s):
            if isinstance(n, ast.Subscript) and names_in(n.slice) & derived:
                return True
            if isinstance(n, ast.Call) and _last_attr(n.func) in ("narrow", "index_select", "gather", "take"):
                if any(names_in(a) & derived for a in n.args):
                    return True
    return False


def common_loops(a: Event, b: Event) -> list[ast.AST]:
    ids_b = {id(x) for x in b.loops}
    return [lp for lp in a.loops if id(lp) in ids_b]


def same_invocation(upd: Event, other: Event, owner: FuncInfo) -> bool:
    """Does `other` run inside the same call of `owner` as `upd` does?"""
    k = next((i for i, (_, caller) in enumerate(upd.chain) if caller is owner), len(upd.chain))
    if k == len(upd.chain) and upd.func is not owner:
        return False
    if len(other.chain) < k or any(other.chain[i][0] is not upd.chain[i][0] for i in range(k)):
        return False
    return (other.chain[k][1] is owner) if k < len(other.chain) else other.func is owner


def exclusive(a: Event, b: Event) -> bool:
    """Events on the two different arms of one `if` never both run; nor do events under `if c:` and `if not c:`
    (the same flag tested twice, e.g. TTT eval in one block and the plain eval in another)."""
    arms = {(br.node_id, br.taken) for br in a.branches}
    if any((br.node_id, not br.taken) in arms for br in b.branches):
        return True
    conds = {_polarity(br.test, br.taken) for br in a.branches}
    for br in b.branches:
        key, positive = _polarity(br.test, br.taken)
        if (key, not positive) in conds:
            return True
    return False


def _polarity(test: ast.expr, taken: bool) -> tuple[str, bool]:
    while isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        test, taken = test.operand, not taken
    return ast.dump(test), taken


def loop_var_guard(ev: Event, loop: ast.AST) -> ast.expr | None:
    """An `if` on the path to `ev` whose test reads the target of `loop` (`if epoch == epochs - 1:`)."""
    if not isinstance(loop, (ast.For, ast.AsyncFor)):
        return None
    targets = names_in(loop.target)
    for br in ev.branches:
        if names_in(br.test) & targets:
            return br.test
    return None


# ----------------------------------------------------------------------------------------------------------------
# Optimizer, free tensors and throwaway state (per update event)
# ----------------------------------------------------------------------------------------------------------------
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
    for n, _ng in _calls_with_ng(fi.body):
        if (
            isinstance(n.func, ast.Attribute)
            and n.func.attr == "step"
            and not n.args
            and getattr(n, "lineno", 0) >= line
        ):
            if step_call is None or n.lineno < step_call.lineno:
                recv = _base_name(n.func.value)
                if recv and _optimizer_params(recv, defs) is not None:
                    step_call = n
    if step_call is not None:
        ev.step = step_call
        ev.step_func = fi
        recv = _base_name(step_call.func.value)  # type: ignore[union-attr]
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
            dotted = _dotted(call.func) or ""
            if ".optim." in f".{dotted}" or dotted.startswith("optim."):
                return (
                    call.args[0]
                    if call.args
                    else next((k.value for k in call.keywords if k.arg == "params"), None)
                )
            if call.args:
                # a helper that builds the optimizer (`build_opt(config, lora)`): the argument that is an object
                # built here is what it optimizes; else its first argument
                for arg in call.args:
                    base = _base_name(arg)
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
    return last is not None and last.value is not None and _creates_free_tensor(last.value, consts)


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


# ----------------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class OrderFacts:
    root: FuncInfo | None
    events: list[Event]
    program: OrderProgram | None
    problem: str = ""

    @property
    def scores(self) -> list[Event]:
        return [e for e in self.events if e.kind == "score" and e.is_val]

    @property
    def updates(self) -> list[Event]:
        return [e for e in self.events if e.kind == "update" and e.is_val]


def analyse_order(ctx: AuditContext) -> OrderFacts:
    return ctx.memo("flow.order", lambda: _analyse(ctx))


def analysis_units(ctx: AuditContext) -> list[CodeUnit]:
    """The innermost parsed layer of every shipped code file (what runs)."""
    last: dict[str, CodeUnit] = {}
    for u in ctx.parsed_units:
        last[u.path] = u
    return list(last.values())


def _analyse(ctx: AuditContext) -> OrderFacts:
    units = analysis_units(ctx)
    entry = ctx.entry_unit
    if entry is None or entry.tree is None:
        return OrderFacts(None, [], None, problem="no parsable entry script")
    try:
        program = OrderProgram(ProgramIndex(units))
        program.external = _shared_resolver(ctx, program.index)
        summary = program.run(entry)
    except RecursionError:
        return OrderFacts(None, [], None, problem="the code nests too deeply to analyse")
    events = list(summary.events) if summary else []
    classified: dict[int, Event] = {}
    for ev in events:
        if ev.kind != "update":
            continue
        known = classified.get(id(ev.node))
        if known is None:
            classify_update(ev)
            classified[id(ev.node)] = ev
        else:
            ev.target, ev.throwaway, ev.step, ev.step_func = (
                known.target,
                known.throwaway,
                known.step,
                known.step_func,
            )
            ev.owner = known.owner
    return OrderFacts(program.index.roots[entry.name], events, program)


# ----------------------------------------------------------------------------------------------------------------
# Feature gates and defeated analysis, from the shared flow layer (auditor.flow.program)
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GateOff:
    """Why an event does not run under the defaults: the deciding `if` and its description."""

    test: str
    reason: str


def gate_off(ctx: AuditContext, ev: Event) -> GateOff | None:
    """The default-off gate on the path to `ev`: a hop of its call chain or its own statement that the shared flow
    layer decides is off under the defaults (and that no README/*.sh run command turns on), else None."""
    prog = _program(ctx)
    if prog is None:
        return None
    reaches = []
    for call, _caller in ev.chain:
        site = prog.site_of(call) if isinstance(call, ast.Call) else None
        if site is not None:
            reaches.append(prog.site_reach(site))
    reaches.append(prog.reach(ev.func.unit, ev.node))
    overridden = ctx.memo("flow.order.overridden_attrs", lambda: _attrs_set_at_run_time(ctx))
    for r in reaches:
        if r.status == "gated_off" and (r.gate is None or _plausible_gate(prog, r.gate, overridden)):
            test = ast.unparse(r.gate.test) if r.gate is not None else ""
            return GateOff(test=test, reason=r.reason)
    return None


def _attrs_set_at_run_time(ctx: AuditContext) -> set[str]:
    """Attribute names that code outside `__init__` assigns (`config.eval.ngram_enabled = True` in a profile
    function): a setting's class default does not decide such a gate."""
    out: set[str] = set()
    for unit in analysis_units(ctx):
        for node in ast.walk(unit.tree):  # type: ignore[arg-type]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name != "__init__":
                for sub in ast.walk(node):
                    if isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Store):
                        out.add(sub.attr)
    return out


def _plausible_gate(prog, gate, overridden: set[str]) -> bool:  # noqa: ANN001 - flow.program types
    """A default-off decision is trusted when it rests on settings, not on a local that the code fills at run time
    (`all_hidden = []` then `.append(...)` in a loop reads as "empty" statically but is not at run time), nor on a
    setting that code overrides at run time."""
    if any(isinstance(n, ast.Attribute) and n.attr in overridden for n in ast.walk(gate.test)):
        return False
    if getattr(gate, "env_vars", ()):
        return True
    func = prog.enclosing_func(gate.unit, gate.test)
    body = list(getattr(getattr(func, "node", None), "body", []))
    if not body:
        return True
    defs: dict[str, int] = {}
    runtime: set[str] = set()
    for st in simple_statements(body):
        for n in assigned_names(st):
            defs[n] = defs.get(n, 0) + 1
            if not isinstance(st, ast.Assign) or isinstance(st, (ast.For, ast.AsyncFor)):
                runtime.add(n)
    names = {n.id for n in ast.walk(gate.test) if isinstance(n, ast.Name)}
    return not any(n in runtime or defs.get(n, 0) > 1 for n in names)


def defeated_on_path(ctx: AuditContext, events: list[Event]) -> list[tuple[Location, str]]:
    """Dynamic dispatch / exec of generated code in a live function that leads to scoring or to an update."""
    prog = _program(ctx)
    if prog is None:
        return []
    on_path: set[int] = set()
    for ev in events:
        if ev.kind in ("score", "update") and ev.is_val:
            on_path.add(id(ev.func.node))
            on_path.update(id(fi.node) for _, fi in ev.chain)
    out: list[tuple[Location, str]] = []
    for loc, reason, func in prog.defeated:
        if id(func.node) in on_path and prog.func_reach(func).live:
            out.append((loc, reason))
    return out


def source_path(ctx: AuditContext, ev: Event) -> list[FlowStep]:
    """Where the validation data in an update's loss comes from (loader -> ... -> the loss), from the shared
    val-taint analysis; empty when it has no path to show."""
    node = ev.node
    expr = node.func.value if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) else node
    if isinstance(node, ast.AugAssign):
        expr = node.value
    try:
        from auditor.flow.taint import val_taint

        return list(val_taint(ctx).path(ev.func.unit, expr))
    except Exception:  # evidence only: a failure here must not change the verdict
        return []


def dead_function_events(ctx: AuditContext) -> list[tuple[FuncInfo, list[Event]]]:
    """Functions the entry never calls (shared flow layer: status "dead"), with their events as they would be if
    every parameter carried validation data: what the code would do if it were enabled."""
    facts = analyse_order(ctx)
    prog = _program(ctx)
    if prog is None or facts.program is None:
        return []
    dead = {id(f.node) for f in prog.funcs if prog.func_reach(f).status == "dead"}
    out: list[tuple[FuncInfo, list[Event]]] = []
    for fi in facts.program.index.funcs.values():
        if id(fi.node) not in dead or fi.parent is not None or fi.node is fi.unit.tree:
            continue
        summary = facts.program.summaries.get(fi.key)
        if summary is None or not summary.events:
            continue
        as_val = {p: frozenset({VAL}) for p in [*fi.params, fi.vararg or "", fi.kwarg or ""]}
        events = [
            ev.spliced(fi.node, fi, as_val, (), (), 0, False)
            for ev in summary.events
            if ev.kind != "deferred"
        ]
        for ev in events:
            ev.chain = ()
            if ev.kind == "update":
                classify_update(ev)
        out.append((fi, events))
    return out


_TRUSTED_RESOLUTIONS = frozenset({"direct", "import", "self", "typed", "cha"})


def _shared_resolver(ctx: AuditContext, index: ProgramIndex) -> Callable[[ast.Call], FuncInfo | None] | None:
    """Method calls on objects (`cache.update(...)`, `loader.next(...)`) resolved by the shared call graph when it
    names exactly one own function."""
    prog = _program(ctx)
    if prog is None:
        return None
    by_node = {id(fi.node): fi for fi in index.funcs.values()}

    def resolve(call: ast.Call) -> FuncInfo | None:
        site = prog.site_of(call)
        if (
            site is None
            or len(site.callees) != 1
            or getattr(site, "resolution", "") not in _TRUSTED_RESOLUTIONS
        ):
            return None
        return by_node.get(id(site.callees[0].node))

    return resolve


def _program(ctx: AuditContext):  # noqa: ANN202 - auditor.flow.program.Program, imported lazily
    try:
        from auditor.flow import program_of

        return program_of(ctx)
    except Exception:  # the shared layer failing must not take the order rules down: gates read as "on"
        return None


def divergence(a: Event, b: Event) -> tuple[Location, Location]:
    """Where the paths to two events part: the two call sites (or event sites) in their deepest common caller."""
    i = 0
    while i < min(len(a.chain), len(b.chain)) and a.chain[i][0] is b.chain[i][0]:
        i += 1
    la = a.chain[i][1].unit.location(a.chain[i][0]) if i < len(a.chain) else a.location()
    lb = b.chain[i][1].unit.location(b.chain[i][0]) if i < len(b.chain) else b.location()
    return la, lb


# ----------------------------------------------------------------------------------------------------------------
# Def-use closures and the positions a value is restricted to (SLOT masks, scored slices)
# ----------------------------------------------------------------------------------------------------------------
def def_map(fi: FuncInfo) -> dict[str, list[ast.stmt]]:
    """Every statement that binds or mutates each name in `fi` (flow-insensitive)."""
    defs: dict[str, list[ast.stmt]] = {}
    for s in simple_statements(fi.body):
        if isinstance(s, (ast.If, ast.While, ast.With, ast.AsyncWith, ast.Try)):
            continue
        for n in assigned_names(s):
            defs.setdefault(n, []).append(s)
    return defs


def closure(defs: dict[str, list[ast.stmt]], names: set[str], follow_indices: bool = False) -> set[int]:
    """Ids of the statements that (transitively) define `names`, following values (and, if asked, the indices and
    masks that select positions: `nll[mask]`)."""
    seen_names: set[str] = set()
    out: dict[int, ast.stmt] = {}
    todo = list(names)
    while todo:
        n = todo.pop()
        if n in seen_names:
            continue
        seen_names.add(n)
        for s in defs.get(n, []):
            if id(s) in out:
                continue
            out[id(s)] = s
            if isinstance(s, (ast.For, ast.AsyncFor)):
                reads = names_in(s.iter)
            else:
                reads = names_in(s, skip_slices=not follow_indices)
            todo.extend(reads - seen_names)
    return set(out)


def statements_by_id(fi: FuncInfo) -> dict[int, ast.stmt]:
    return {id(s): s for s in simple_statements(fi.body)}


def position_slices(stmts: Iterable[ast.stmt]) -> set[tuple[str, str]]:
    """The (lower, upper) bounds of the last sliced axis of every subscript in `stmts` that restricts positions
    with a bound that is not a constant (`nll[i, s:wlen]`, `mask[i, :s] = 1`), as source text."""
    out: set[tuple[str, str]] = set()
    for s in stmts:
        roots = [s.target] if isinstance(s, (ast.For, ast.AsyncFor)) else [s]
        for root in roots:
            for node in ast.walk(root):
                if not isinstance(node, ast.Subscript):
                    continue
                sl = node.slice
                last = sl.elts[-1] if isinstance(sl, ast.Tuple) and sl.elts else sl
                if not isinstance(last, ast.Slice) or last.step is not None:
                    continue
                lo = ast.unparse(last.lower) if last.lower is not None else ""
                hi = ast.unparse(last.upper) if last.upper is not None else ""
                if _constant_bound(last.lower) and (_constant_bound(last.upper) or _minus_one(last.upper)):
                    continue  # [:-1], [1:], [:, :seq_len - 1]: the input/target shift, not a choice of positions
                out.add((lo, hi))
    return out


def _minus_one(node: ast.expr | None) -> bool:
    return (
        isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.Sub)
        and isinstance(node.right, ast.Constant)
        and node.right.value == 1
    )


def _constant_bound(node: ast.expr | None) -> bool:
    if node is None:
        return True
    if isinstance(node, ast.UnaryOp):
        node = node.operand
    return isinstance(node, ast.Constant)


def value_names(node: ast.AST) -> set[str]:
    """Names whose values an accumulation / backward reads (the receiver of `loss.backward()`, the right-hand
    side of `total += v`, the arguments of `total.add_(v)`)."""
    if isinstance(node, ast.AugAssign):
        return names_in(node.value, skip_slices=True)
    if isinstance(node, ast.Assign):
        return names_in(node.value, skip_slices=True)
    if isinstance(node, ast.Call):
        if isinstance(node.func, ast.Attribute) and node.func.attr == "backward":
            return names_in(node.func.value, skip_slices=True)
        parts = [*node.args, *(k.value for k in node.keywords)]
        return set().union(*(names_in(p, skip_slices=True) for p in parts)) if parts else set()
    return names_in(node, skip_slices=True)


def canonical(text: str, defs: dict[str, list[ast.stmt]], depth: int) -> str:
    """A bound's shape with names replaced by their single definition (up to `depth` levels) and otherwise
    anonymised: `_s` and `s` both defined as `0 if ws == 0 else max(wlen - stride, 0)` compare equal."""
    if not text:
        return ""
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        return text
    return _canon(node, defs, depth)


def _canon(node: ast.AST, defs: dict[str, list[ast.stmt]], depth: int) -> str:
    if isinstance(node, ast.Name):
        own = defs.get(node.id, [])
        if (
            depth > 0
            and len(own) == 1
            and isinstance(own[0], ast.Assign)
            and len(own[0].targets) == 1
            and isinstance(own[0].targets[0], ast.Name)
        ):
            return _canon(own[0].value, defs, depth - 1)
        return "N"
    if isinstance(node, ast.Constant):
        return repr(node.value)
    parts = [type(node).__name__]
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.expr_context,)):
            continue
        parts.append(_canon(child, defs, depth))
    return "(" + " ".join(parts) + ")"
