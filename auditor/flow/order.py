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
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from auditor.flow import vocab
from auditor.flow.events import (  # noqa: F401 - the event model, re-exported for rules
    EMPTY,
    NG,
    VAL,
    Branch,
    Event,
    Labels,
    common_loops,
    divergence,
    exclusive,
    loop_var_guard,
    same_invocation,
    substitute,
)
from auditor.flow.order_index import ClassInfo, FuncInfo, ProgramIndex
from auditor.flow.order_interp import (
    _BUILTIN_NAMES,
    Summary,
    _Ctx,
    _FunctionInterpreter,
)
from auditor.flow.positions import (  # noqa: F401 - re-exported for rules
    canonical,
    closure,
    compare_positions,
    def_map,
    is_data_loop,
    position_slices,
    rows_scored_separately,
    statements_by_id,
    value_names,
)
from auditor.flow.syntax import (  # noqa: F401 - re-exported
    assigned_names,
    base_name,
    calls_with_ng,
    is_no_grad_ctx,
    module_constants,
    names_in,
    simple_statements,
)
from auditor.flow.updates import classify_update

if TYPE_CHECKING:
    from auditor.facts import AuditContext, CodeUnit

VAL_PATTERN = vocab.VAL_SHARD
MAX_ROUNDS = 4


# ----------------------------------------------------------------------------------------------------------------
# Whole program
# ----------------------------------------------------------------------------------------------------------------
class OrderProgram:
    def __init__(self, index: ProgramIndex) -> None:
        self.index = index
        self.tainted_attrs: set[str] = set()
        self.fitted_attrs: set[str] = set()  # attributes holding state fitted on validation targets
        self._fit_read_clean: set[str] = set()
        # per function: names its losses are computed against, learnt while interpreting it
        self.targets: dict[str, frozenset[str]] = {}
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

    def note_fit_read(self, attr: str) -> None:
        self._fit_read_clean.add(attr)

    def add_fitted_attr(self, attr: str) -> None:
        if attr not in self.fitted_attrs:
            self.fitted_attrs.add(attr)
            if attr in self._fit_read_clean:
                self._attrs_changed = True  # read as unfitted earlier in this round: redo it

    def forward_fit_labels(self) -> Labels:
        """`fa:<attr>` labels returned by the submission's own `forward` / `__call__` methods (fitted attributes a
        module call reads), for calls whose receiver's class is unknown."""
        out: set[str] = set()
        for classes in self.index.classes.values():
            for ci in classes:
                for name in ("forward", "__call__"):
                    fi = ci.methods.get(name)
                    if fi is not None:
                        out |= {lab for lab in self.summary(fi).ret if lab.startswith("fa:")}
        return frozenset(out)

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
        if interp.new_targets:
            # a loss on validation targets was met after reads of those targets: interpret once more with them
            self.targets[fi.key] = interp.targets
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
            self._fit_read_clean = set()
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
            for call, ng in calls_with_ng(fi.body):
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
                    return base_name(call.func.value) or ""
                return ""
            params = params[1:]
        if name not in params:
            return ""
        for kw in call.keywords:
            if kw.arg == name:
                return base_name(kw.value) or ""
        i = params.index(name)
        positional = [a for a in call.args if not isinstance(a, ast.Starred)]
        if i < len(positional) and len(positional) == len(call.args):
            return base_name(positional[i]) or ""
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


# ----------------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class OrderFacts:
    root: FuncInfo | None
    events: list[Event]
    program: OrderProgram | None
    problem: str = ""
    shared: object | None = (
        None  # auditor.flow.program.Program (exclusive conditions), when it could be built
    )

    @property
    def scores(self) -> list[Event]:
        return [e for e in self.events if e.kind == "score" and e.is_val]

    @property
    def updates(self) -> list[Event]:
        return [e for e in self.events if e.kind == "update" and e.is_val]

    def exclusive(self, a: Event, b: Event) -> bool:
        """The two events never both run: opposite arms of one `if` (or the same test negated), or, from the
        shared program, conditions on their paths that require one flag both true and false (`if c and not t:`
        against `if t:`), compared where their call paths part."""
        if exclusive(a, b):
            return True
        prog = self.shared
        if prog is None:
            return False
        try:
            return bool(prog.exclusive(_parting_point(a, b), _parting_point(b, a)))
        except Exception:  # the shared query failing must not change a verdict: they may both run
            return False


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
    return OrderFacts(program.index.roots[entry.name], events, program, shared=_program(ctx))


def _parting_point(a: Event, b: Event) -> tuple[object, ast.AST]:
    """(unit, node) where `a`'s path leaves the path it shares with `b`: its call site in their deepest common
    caller, or the event itself."""
    i = 0
    while i < min(len(a.chain), len(b.chain)) and a.chain[i][0] is b.chain[i][0]:
        i += 1
    if i < len(a.chain):
        return a.chain[i][1].unit, a.chain[i][0]
    return a.func.unit, a.node


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
