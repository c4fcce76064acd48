"""The data model of the whole-program view: functions, classes, call sites, gates, reach answers.

Split out of program.py (which builds these) so that each module stays readable; import them from
`auditor.flow.program` as before.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from auditor.flow import vocab
from auditor.flow.consts import UNKNOWN, RunCommand
from auditor.flow.nodeindex import child_nodes

if TYPE_CHECKING:
    from auditor.facts import CodeUnit

_OPAQUE = ast.Constant(
    value=UNKNOWN
)  # an assignment whose value cannot be folded (tuple unpack, loop target...)
_FUNC_NODES = (ast.FunctionDef, ast.AsyncFunctionDef)
_LOOPS = (ast.For, ast.AsyncFor, ast.While)
_DEF_NODES = (*_FUNC_NODES, ast.ClassDef)


@dataclass(eq=False)
class Gate:
    """A branch decided statically: the `if` (or conditional expression) test and which side runs.

    `taken` is the answer under the defaults; `runs` is the answer under the documented configuration (the one
    policy every rule family follows, see API.md "Run commands"): log evidence of the values a run used, else a
    README/*.sh run command that changes the default, else the default. A *parameter gate* (`params` non-empty:
    `if use_ngram:` with `use_ngram` a parameter of the function) is undecided on its own (`taken` True, `default`
    UNKNOWN) and decided per call site: `Program.gate_in(gate, via)` folds it with the arguments of call `via`.
    """

    unit: CodeUnit = field(repr=False)
    test: ast.AST
    branch: str  # "body" | "orelse"
    taken: bool  # does this branch run under the defaults?
    default: Any  # value of the test under defaults (UNKNOWN only for an undecided parameter gate)
    env_vars: tuple[str, ...] = ()
    enabled_by: tuple[RunCommand, ...] = ()  # run commands under which a default-off branch runs
    disabled_by: tuple[RunCommand, ...] = ()  # run commands under which a default-on branch does not run
    kept_by: tuple[RunCommand, ...] = ()  # run commands that set the gate's variables and leave it as default
    logged: bool | None = (
        None  # does the branch run with the values the shipped logs print? (None: no evidence)
    )
    log_evidence: str = ""  # "path:line: text" of the log line that decided `logged`
    params: tuple[str, ...] = ()  # parameters the test reads (a parameter gate)
    via: CallSite | None = None  # the call site whose arguments decided this (parameter) gate

    @property
    def text(self) -> str:
        return ast.unparse(self.test)[:160]

    @property
    def runs(self) -> bool:
        """Does the branch run under the documented configuration?"""
        if self.logged is not None:
            return self.logged
        if not self.taken and self.enabled_by:
            return True
        if self.taken and self.disabled_by and not self.kept_by:
            return False
        return self.taken

    @property
    def by_command(self) -> bool:
        """Off under the defaults, on under the documented configuration."""
        return not self.taken and self.runs

    @property
    def off_by_command(self) -> bool:
        """On under the defaults, off under the documented configuration."""
        return self.taken and not self.runs

    @property
    def contested(self) -> bool:
        """The documented sources disagree among themselves (commands both ways, or a log against all commands):
        the configuration that produced the claimed score is not certain."""
        if self.logged is not None:
            cmds_on = bool(self.enabled_by) or (self.taken and bool(self.kept_by))
            cmds_off = bool(self.disabled_by) or (not self.taken and bool(self.kept_by))
            return (self.logged and cmds_off and not cmds_on) or (
                not self.logged and cmds_on and not cmds_off
            )
        return bool(self.kept_by) and bool(self.enabled_by or self.disabled_by)

    def describe(self) -> str:
        what = f"`if {self.text}`" + ("" if self.branch == "body" else " (else branch)")
        if self.via is not None:
            what += f" for the call at {self.via.unit.path}:{self.via.line}"
        state = "on" if self.taken else "off"
        extra = f" via {', '.join(self.env_vars)}" if self.env_vars else ""
        msg = f"{what} is {state} by default{extra}"
        if self.enabled_by:
            c = self.enabled_by[0]
            msg += f"; turned on by the run command at {c.path}:{c.line}"
        if self.disabled_by:
            c = self.disabled_by[0]
            msg += f"; turned off by the run command at {c.path}:{c.line}"
        if self.log_evidence:
            msg += f"; the log shows it {'ran' if self.logged else 'did not run'} ({self.log_evidence})"
        return msg


@dataclass(eq=False)
class CallSite:
    caller: Func
    node: ast.Call
    callees: list[Func] = field(default_factory=list)
    ext: str | None = None  # dotted name of an external callee (imports resolved), e.g. "torch.save"
    constructs: ClassInfo | None = None
    resolution: str = "none"  # "direct" | "import" | "self" | "typed" | "cha" | "external" | "none"
    gates: tuple[Gate, ...] = ()
    loops: tuple[ast.AST, ...] = ()  # enclosing loops inside the caller, outermost first
    order: int = 0  # post-order index inside the caller = evaluation order

    @property
    def unit(self) -> CodeUnit:
        return self.caller.unit

    @property
    def line(self) -> int:
        return self.node.lineno

    @property
    def deciding_gate(self) -> Gate | None:
        """The first enclosing gate whose branch does not run by default (None: runs by default).
        Parameter gates are undecided here; `Program.site_gate(site, via)` decides them per call."""
        return next((g for g in self.gates if not g.taken), None)

    @property
    def live_by_default(self) -> bool:
        return self.deciding_gate is None

    @property
    def live_under_some_command(self) -> bool:
        return all(g.taken or g.enabled_by for g in self.gates)

    @property
    def attr(self) -> str | None:
        return self.node.func.attr if isinstance(self.node.func, ast.Attribute) else None

    def arg_for(self, callee: Func, param: str) -> ast.AST | None:
        return callee.bind(self.node, bound_self=self.is_bound_call(callee)).get(param)

    def is_bound_call(self, callee: Func) -> bool:
        """True when the callee's first parameter is filled implicitly (method call, constructor, module call)."""
        if callee.cls is None or callee.is_static:
            return False
        if self.constructs is not None:
            return True
        if isinstance(self.node.func, ast.Attribute):
            recv = self.node.func.value
            # `Class.method(obj, ...)` passes self explicitly
            return not (isinstance(recv, ast.Name) and callee.cls.name == recv.id)
        return callee.name in ("forward", "__call__")  # `model(x)` -> forward(self, x)


@dataclass(eq=False)
class Func:
    """A function, method, class body or module top level (qualname "<module>")."""

    qualname: str
    unit: CodeUnit
    node: ast.AST
    module: Module
    cls: ClassInfo | None = None
    parent: Func | None = None
    params: list[str] = field(default_factory=list)
    assigned: dict[str, list[ast.AST]] = field(default_factory=dict)
    nested: dict[str, Func] = field(default_factory=dict)
    nested_classes: dict[str, ClassInfo] = field(default_factory=dict)
    calls: list[CallSite] = field(default_factory=list)
    refs: list[tuple[ast.AST, Func, tuple[Gate, ...]]] = field(
        default_factory=list
    )  # function used as a value
    regions: list[tuple[tuple[int, int], tuple[int, int], Gate]] = field(default_factory=list)
    is_static: bool = False
    kind: str = "function"  # "function" | "module" | "classbody"
    local_imports: set[str] = field(default_factory=set)  # names bound by `import` inside this function

    @property
    def name(self) -> str:
        return self.qualname.rsplit(".", 1)[-1]

    @property
    def fid(self) -> str:
        return f"{self.unit.name}::{self.qualname}"

    @property
    def line(self) -> int:
        return getattr(self.node, "lineno", 1)

    def __repr__(self) -> str:
        return f"<Func {self.fid}>"

    def own_nodes(self) -> Iterator[ast.AST]:
        """Every node that belongs to this function's body (nested def/class bodies excluded)."""
        body = self.node.body if hasattr(self.node, "body") else []
        stack = list(reversed(body))
        while stack:
            n = stack.pop()
            yield n
            if isinstance(n, (*_FUNC_NODES, ast.ClassDef)):
                extra = list(n.decorator_list)
                if isinstance(n, _FUNC_NODES):
                    extra += [d for d in n.args.defaults + n.args.kw_defaults if d is not None]
                stack.extend(reversed(extra))
                continue
            stack.extend(reversed(child_nodes(n)))

    def bind(self, call: ast.Call, bound_self: bool) -> dict[str, ast.AST]:
        """Argument expressions of `call` by this function's parameter name (positional index and keywords)."""
        if not isinstance(self.node, _FUNC_NODES):
            return {}
        a = self.node.args
        positional = [p.arg for p in a.posonlyargs + a.args]
        if bound_self and positional:
            positional = positional[1:]
        out: dict[str, ast.AST] = {}
        for i, arg in enumerate(call.args):
            if isinstance(arg, ast.Starred):
                break
            if i < len(positional):
                out[positional[i]] = arg
            elif a.vararg is not None:
                out.setdefault(a.vararg.arg, arg)
        names = set(positional) | {p.arg for p in a.kwonlyargs}
        for kw in call.keywords:
            if kw.arg is None:
                continue
            if kw.arg in names:
                out[kw.arg] = kw.value
            elif a.kwarg is not None:
                out.setdefault(a.kwarg.arg, kw.value)
        return out


@dataclass(eq=False)
class ClassInfo:
    qualname: str
    unit: CodeUnit
    node: ast.ClassDef
    module: Module
    body: Func  # the class body as a pseudo-function (class attributes are its assignments)
    methods: dict[str, Func] = field(default_factory=dict)
    base_exprs: list[ast.AST] = field(default_factory=list)
    bases: list[ClassInfo] = field(default_factory=list)
    external_bases: list[str] = field(default_factory=list)
    self_attrs: dict[str, list[tuple[ast.AST, Func]]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.node.name

    def __repr__(self) -> str:
        return f"<Class {self.qualname}>"

    def mro(self) -> list[ClassInfo]:
        out: list[ClassInfo] = []
        todo = [self]
        while todo:
            c = todo.pop(0)
            if c not in out:
                out.append(c)
                todo.extend(c.bases)
        return out

    def method(self, name: str) -> Func | None:
        for c in self.mro():
            if name in c.methods:
                return c.methods[name]
        return None

    def attr_exprs(self, name: str) -> list[tuple[ast.AST, Func]]:
        """Where attribute `name` gets its value: class-body assignment, else `self.name = ...` in methods."""
        for c in self.mro():
            if name in c.body.assigned:
                return [(x, c.body) for x in c.body.assigned[name]]
            if name in c.self_attrs:
                return list(c.self_attrs[name])
        return []

    @property
    def is_module_like(self) -> bool:
        return any(c.method("forward") is not None for c in [self]) or any(
            b.endswith("Module") for c in self.mro() for b in c.external_bases
        )


@dataclass(eq=False)
class Module:
    unit: CodeUnit
    name: str  # dotted module name ("train_gpt", "ngram.kernels")
    func: Func = None  # type: ignore[assignment]  # top level as pseudo-function "<module>"
    imported_names: dict[str, tuple[str, str]] = field(default_factory=dict)  # own-module imports
    import_alias: dict[str, str] = field(default_factory=dict)  # local name -> dotted external name


@dataclass(frozen=True)
class Reach:
    status: str  # "live" | "dead" | "gated_off" | "unknown"
    reason: str
    gate: Gate | None = None
    path: tuple[str, ...] = ()  # qualnames from the entry to the function holding the node

    @property
    def live(self) -> bool:
        return self.status in ("live", "unknown")


@dataclass(frozen=True)
class EntryEvent:
    """One call site of the entry flow in execution order (driver functions inlined)."""

    index: int
    site: CallSite
    via: tuple[CallSite, ...]  # the inlined driver calls that lead here, outermost first
    loops: tuple[ast.AST, ...]  # enclosing loops, outermost first, across the inlined chain
    gate: Gate | None  # a default-off gate on the way (None: runs by default)

    @property
    def depth(self) -> int:
        return len(self.via)


# ------------------------------------------------------------------------------------------------- helpers
def _locally_bound(func: Func, name: str) -> bool:
    """Is `name` a parameter, local or nested definition of `func` or an enclosing function?"""
    scope: Func | None = func
    while scope is not None:
        if scope.kind == "function" and (
            name in scope.params
            or name in scope.nested
            or name in scope.nested_classes
            or (name in scope.assigned and name not in scope.local_imports)
        ):
            return True
        scope = scope.parent
    return False


def _scopes(func: Func) -> Iterator[Func]:
    scope: Func | None = func
    while scope is not None:
        yield scope
        scope = scope.parent
    yield func.module.func


def _flat_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements of a block, looking inside if/try/with/for (definitions there still bind in this scope)."""
    for s in body:
        yield s
        if isinstance(s, (ast.If, ast.For, ast.While, ast.With, ast.AsyncWith, ast.AsyncFor)):
            yield from _flat_statements(s.body)
            yield from _flat_statements(getattr(s, "orelse", []))
        elif isinstance(s, ast.Try) or type(s).__name__ == "TryStar":
            yield from _flat_statements(s.body)
            for h in s.handlers:
                yield from _flat_statements(h.body)
            yield from _flat_statements(s.orelse)
            yield from _flat_statements(s.finalbody)


def _target_leaves(target: ast.AST, value: ast.AST | None) -> Iterator[tuple[ast.AST, ast.AST | None]]:
    """(leaf target, the value sub-expression assigned to it or None when it cannot be split)."""
    if isinstance(target, (ast.Tuple, ast.List)):
        vals = (
            value.elts
            if isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == len(target.elts)
            else None
        )
        for i, t in enumerate(target.elts):
            yield from _target_leaves(t.value if isinstance(t, ast.Starred) else t, vals[i] if vals else None)
    else:
        yield target, value


def _statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Every statement of a block and its sub-blocks, not entering nested def/class bodies (no expressions)."""
    stack: list[ast.stmt] = list(reversed(body))
    while stack:
        n = stack.pop()
        yield n
        if isinstance(n, (*_FUNC_NODES, ast.ClassDef)):
            continue
        for name in ("body", "orelse", "finalbody"):
            sub = getattr(n, name, None)
            if sub:
                stack.extend(reversed(sub))
        for h in getattr(n, "handlers", ()):
            stack.append(h)
        for c in getattr(n, "cases", ()):
            stack.extend(reversed(c.body))


def _all_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Every statement, nested def/class bodies included."""
    for n in _statements(body):
        yield n
        if isinstance(n, (*_FUNC_NODES, ast.ClassDef)):
            yield from _all_statements(n.body)


def _note_assigned(f: Func, body: list[ast.stmt]) -> None:
    """name -> assigned expressions, for the names a scope binds (nested defs excluded)."""
    _note_bindings(f, body)
    # A local the code fills while it runs (`hits = []` then `hits.append(x)`, `d[k] = v`) is runtime state:
    # its initial value does not decide `if hits:`.
    for n in _statements(body):
        name = None
        if (
            isinstance(n, ast.Expr)
            and isinstance(n.value, ast.Call)
            and isinstance(n.value.func, ast.Attribute)
            and isinstance(n.value.func.value, ast.Name)
            and n.value.func.attr in vocab.CONTAINER_MUTATORS | vocab.TENSOR_MUTATORS
        ):
            name = n.value.func.value.id
        elif isinstance(n, ast.Assign):
            name = next(
                (
                    t.value.id
                    for t in n.targets
                    if isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name)
                ),
                None,
            )
        exprs = f.assigned.get(name) if name is not None else None
        if exprs and exprs[-1] is not _OPAQUE and all(_empty_container(x) for x in exprs):
            exprs.append(
                _OPAQUE
            )  # only containers that start empty: `kw = dict(a=1)` + `kw["b"] = 2` keeps `a`


def _empty_container(x: ast.AST) -> bool:
    """`[]`, `{}`, `set()`, `list()`, `dict()`, `deque()`: a container that the code fills while it runs."""
    if isinstance(x, (ast.List, ast.Set, ast.Tuple)):
        return not x.elts
    if isinstance(x, ast.Dict):
        return not x.keys
    if isinstance(x, ast.Call) and not x.args and not x.keywords:
        name = (
            x.func.id
            if isinstance(x.func, ast.Name)
            else x.func.attr
            if isinstance(x.func, ast.Attribute)
            else ""
        )
        return name in ("list", "dict", "set", "deque", "defaultdict", "OrderedDict", "Counter")
    return False


def _note_bindings(f: Func, body: list[ast.stmt]) -> None:
    for n in _statements(body):
        if isinstance(n, (*_FUNC_NODES, ast.ClassDef)):
            continue
        if isinstance(n, ast.Assign):
            for t in n.targets:
                for leaf, sub in _target_leaves(t, n.value):
                    if isinstance(leaf, ast.Name):
                        f.assigned.setdefault(leaf.id, []).append(sub if sub is not None else _OPAQUE)
        elif isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name):
            f.assigned.setdefault(n.target.id, []).append(n.value if n.value is not None else _OPAQUE)
        elif isinstance(n, ast.AugAssign) and isinstance(n.target, ast.Name):
            f.assigned.setdefault(n.target.id, []).append(_OPAQUE)
        elif isinstance(n, (ast.For, ast.AsyncFor)):
            for leaf, _ in _target_leaves(n.target, None):
                if isinstance(leaf, ast.Name):
                    f.assigned.setdefault(leaf.id, []).append(_OPAQUE)
        elif isinstance(n, (ast.With, ast.AsyncWith)):
            for item in n.items:
                if item.optional_vars is not None:
                    for leaf, _ in _target_leaves(item.optional_vars, None):
                        if isinstance(leaf, ast.Name):
                            f.assigned.setdefault(leaf.id, []).append(_OPAQUE)
        elif isinstance(n, (ast.Import, ast.ImportFrom)) and f.kind == "function":
            for a in n.names:
                local = a.asname or a.name.split(".")[0]
                f.assigned.setdefault(local, []).append(_OPAQUE)
                f.local_imports.add(local)
        elif isinstance(n, ast.ExceptHandler) and n.name:
            f.assigned.setdefault(n.name, []).append(_OPAQUE)
        elif isinstance(n, (ast.If, ast.While)) and isinstance(n.test, ast.NamedExpr):
            if isinstance(n.test.target, ast.Name):  # `if (x := ...)`: the usual walrus spot
                f.assigned.setdefault(n.test.target.id, []).append(n.test.value)


def _module_name(path: str) -> str:
    p = PurePosixPath(path)
    parts = list(p.with_suffix("").parts)
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) or p.stem
