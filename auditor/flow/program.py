"""The whole-program view every flow rule shares: functions, classes, call sites, call graph, gates, reachability.

Built once per audit (`program_of(ctx)`, memoized) on the stdlib `ast` of every parsed unit, taking the innermost
decoded layer of packed files. Nothing here depends on identifier spellings: functions are found by definition,
calls by name resolution (scopes, imports between the submission's own modules, `self.m()`, receivers whose class
is known from construction, nn.Module `__call__` -> `forward`), flags by folding their defining expressions.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from auditor.flow.consts import UNKNOWN, ConstEval, RunCommand, parse_run_commands
from auditor.flow.nodeindex import child_nodes

if TYPE_CHECKING:
    from auditor.facts import AuditContext, CodeUnit

_OPAQUE = ast.Constant(
    value=UNKNOWN
)  # an assignment whose value cannot be folded (tuple unpack, loop target...)
_FUNC_NODES = (ast.FunctionDef, ast.AsyncFunctionDef)
_LOOPS = (ast.For, ast.AsyncFor, ast.While)
_DEF_NODES = (*_FUNC_NODES, ast.ClassDef)
# nodes the body walker records nothing for and that hold no node it would record: not worth a visit
_INERT = (ast.Constant, ast.expr_context, ast.operator, ast.cmpop, ast.unaryop, ast.boolop)
# External calls that hand back (a wrapper of) their first argument: the receiver's class survives them.
_TYPE_PRESERVING = {
    "compile",
    "DistributedDataParallel",
    "DDP",
    "FSDP",
    "FullyShardedDataParallel",
    "deepcopy",
    "to",
    "cuda",
    "cpu",
    "float",
    "half",
    "bfloat16",
    "eval",
    "train",
    "requires_grad_",
}
_PROTOCOL = (
    "__init__",
    "__call__",
    "forward",
    "__enter__",
    "__exit__",
    "__iter__",
    "__next__",
    "__len__",
    "__getitem__",
    "__post_init__",
)


@dataclass(eq=False)
class Gate:
    """A branch decided statically: the `if` (or conditional expression) test and which side runs by default."""

    unit: CodeUnit
    test: ast.AST
    branch: str  # "body" | "orelse"
    taken: bool  # does this branch run under the defaults?
    default: Any  # value of the test under defaults (never UNKNOWN: undecided tests make no Gate)
    env_vars: tuple[str, ...] = ()
    enabled_by: tuple[RunCommand, ...] = ()  # run commands under which a default-off branch runs
    disabled_by: tuple[RunCommand, ...] = ()  # run commands under which a default-on branch does not run

    @property
    def text(self) -> str:
        return ast.unparse(self.test)[:160]

    def describe(self) -> str:
        what = f"`if {self.text}`" + ("" if self.branch == "body" else " (else branch)")
        state = "on" if self.taken else "off"
        extra = f" via {', '.join(self.env_vars)}" if self.env_vars else ""
        msg = f"{what} is {state} by default{extra}"
        if self.enabled_by:
            c = self.enabled_by[0]
            msg += f"; turned on by the run command at {c.path}:{c.line}"
        if self.disabled_by:
            c = self.disabled_by[0]
            msg += f"; turned off by the run command at {c.path}:{c.line}"
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
        """The first enclosing gate whose branch does not run by default (None: runs by default)."""
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


class Program:
    def __init__(self, ctx: AuditContext):
        self.ctx = ctx
        self.modules: dict[str, Module] = {}  # by unit name
        self.module_by_name: dict[str, Module] = {}
        self.funcs: list[Func] = []
        self.classes: list[ClassInfo] = []
        self._methods_by_name: dict[str, list[Func]] = {}
        self._callers: dict[Func, list[CallSite]] = {}
        self._refs_to: dict[Func, list[Func]] = {}
        self.defeated: list[tuple[Any, str, Func]] = []  # (Location, reason, function holding it)
        self.run_commands: list[RunCommand] = parse_run_commands(_run_files(ctx))
        self.entry_module: Module | None = None
        self._reach: dict[Func, Reach] | None = None
        self._dispatch_defeated_live: bool | None = None
        self._type_cache: dict[tuple[int, str], ClassInfo | None] = {}
        self._site_index: dict[int, CallSite] | None = None
        self.branch_gates: dict[tuple[int, str], Gate] = {}  # (id(If/IfExp node), "body"|"orelse") -> Gate
        self._const_memos: dict[tuple | None, dict] = {}  # folded constants per environment
        self._entry_seq: list[EntryEvent] | None = None
        self._under: dict[tuple[int, bool], set[Func]] = {}
        self._driver_ids: set[int] | None = None
        self._build()

    # ----------------------------------------------------------------------------------------------- building
    def _build(self) -> None:
        units = _analysed_units(self.ctx)
        for unit in units:
            mod = Module(unit=unit, name=_module_name(unit.path))
            self.modules[unit.name] = mod
            self.module_by_name.setdefault(mod.name, mod)
            self.module_by_name.setdefault(mod.name.rsplit(".", 1)[-1], mod)
        entry = self.ctx.entry_unit
        if entry is not None and entry.tree is not None:
            self.entry_module = self.modules.get(entry.name)
        elif entry is not None:
            parsed = [u for u in self.ctx.units if u.path == entry.path and u.tree is not None]
            self.entry_module = self.modules.get(parsed[-1].name) if parsed else None
        for mod in self.modules.values():
            self._declare_module(mod)
        for c in self.classes:
            self._link_bases(c)
        for f in self.funcs:
            self._collect_self_attrs(f)
        for f in self.funcs:
            self._walk_body(f)
        for f in self.funcs:
            for site in f.calls:
                for callee in site.callees:
                    self._callers.setdefault(callee, []).append(site)
            for _, target, _ in f.refs:
                self._refs_to.setdefault(target, []).append(f)

    def _declare_module(self, mod: Module) -> None:
        tree = mod.unit.tree
        assert tree is not None
        mod.func = Func("<module>", mod.unit, tree, mod, kind="module")
        self.funcs.append(mod.func)
        self._declare_scope(mod.func, tree.body, prefix="")
        for node in _all_statements(tree.body):
            if isinstance(node, ast.Import):
                for a in node.names:
                    local = a.asname or a.name.split(".")[0]
                    target = a.name if a.asname else a.name.split(".")[0]
                    mod.import_alias[local] = target
                    if a.name in self.module_by_name:
                        mod.imported_names[local] = (a.name, "")
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                for a in node.names:
                    local = a.asname or a.name
                    mod.import_alias[local] = f"{base}.{a.name}" if base else a.name
                    if base in self.module_by_name:
                        mod.imported_names[local] = (base, a.name)
                    elif not base and a.name in self.module_by_name:
                        mod.imported_names[local] = (a.name, "")

    def _declare_scope(
        self, owner: Func, body: list[ast.stmt], prefix: str, cls: ClassInfo | None = None
    ) -> None:
        """Create Funcs/ClassInfos for definitions directly in `body` (searching through if/try/with blocks)."""
        for stmt in _flat_statements(body):
            if isinstance(stmt, _FUNC_NODES):
                qual = f"{prefix}{stmt.name}"
                f = Func(
                    qual,
                    owner.unit,
                    stmt,
                    owner.module,
                    cls=cls,
                    parent=owner if owner.kind == "function" else None,
                )
                a = stmt.args
                f.params = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs]
                if a.vararg:
                    f.params.append(a.vararg.arg)
                if a.kwarg:
                    f.params.append(a.kwarg.arg)
                f.is_static = any(
                    isinstance(d, ast.Name) and d.id == "staticmethod" for d in stmt.decorator_list
                )
                self.funcs.append(f)
                if cls is not None:
                    cls.methods.setdefault(stmt.name, f)
                    self._methods_by_name.setdefault(stmt.name, []).append(f)
                else:
                    owner.nested.setdefault(stmt.name, f)
                _note_assigned(f, stmt.body)
                self._declare_scope(f, stmt.body, prefix=f"{qual}.")
            elif isinstance(stmt, ast.ClassDef):
                qual = f"{prefix}{stmt.name}"
                cbody = Func(
                    f"{qual}.<body>",
                    owner.unit,
                    stmt,
                    owner.module,
                    kind="classbody",
                    parent=owner if owner.kind == "function" else None,
                )
                info = ClassInfo(qual, owner.unit, stmt, owner.module, cbody, base_exprs=list(stmt.bases))
                cbody.cls = info
                _note_assigned(cbody, stmt.body)
                self.classes.append(info)
                self.funcs.append(cbody)
                owner.nested_classes.setdefault(stmt.name, info)
                self._declare_scope(cbody, stmt.body, prefix=f"{qual}.", cls=info)
        if owner.kind == "module":
            _note_assigned(owner, body)

    def _link_bases(self, c: ClassInfo) -> None:
        for b in c.base_exprs:
            target = self._resolve_class_expr(c.body, b)
            if target is not None and target is not c:
                c.bases.append(target)
            else:
                c.external_bases.append(self.dotted(c.unit.name, b) or ast.unparse(b))

    def _collect_self_attrs(self, f: Func) -> None:
        if f.cls is None or not f.params or not isinstance(f.node, _FUNC_NODES):
            return
        me = f.params[0]
        for n in _statements(f.node.body):
            targets: list[ast.AST] = []
            value: ast.AST | None = None
            if isinstance(n, ast.Assign):
                targets, value = n.targets, n.value
            elif isinstance(n, ast.AnnAssign) and n.value is not None:
                targets, value = [n.target], n.value
            for t in targets:
                for leaf, sub in _target_leaves(t, value):
                    if (
                        isinstance(leaf, ast.Attribute)
                        and isinstance(leaf.value, ast.Name)
                        and leaf.value.id == me
                    ):
                        f.cls.self_attrs.setdefault(leaf.attr, []).append(
                            (sub if sub is not None else _OPAQUE, f)
                        )

    def _walk_body(self, f: Func) -> None:
        """Record call sites (post-order = evaluation order), function references and decided branches."""
        counter = [0]
        walker = _BodyWalker(self, f, counter)
        body = f.node.body if hasattr(f.node, "body") else []
        if isinstance(f.node, _FUNC_NODES) or isinstance(f.node, ast.ClassDef):
            for d in f.node.decorator_list:
                walker.visit(d, (), ())
        for stmt in body:
            walker.visit(stmt, (), ())

    # ------------------------------------------------------------------------------------------- resolution
    def dotted(self, unit_name: str, expr: ast.AST, func: Func | None = None) -> str | None:
        """`np.fromfile` -> "numpy.fromfile", `hf_hub_download` -> "huggingface_hub.hf_hub_download".

        With `func`, a root name that a local variable shadows (`B = Model()` next to `import numpy as B`, as
        minified code does) is not resolved through the imports."""
        parts: list[str] = []
        node = expr
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        mod = self.modules.get(unit_name)
        root = node.id
        if (
            mod is not None
            and node.id in mod.import_alias
            and not (func is not None and _locally_bound(func, node.id))
        ):
            root = mod.import_alias[node.id]
        return ".".join([root, *reversed(parts)])

    def is_external_root(self, unit_name: str, expr: ast.AST, func: Func | None = None) -> bool:
        node = expr
        while isinstance(node, ast.Attribute):
            node = node.value
        mod = self.modules.get(unit_name)
        if func is not None and isinstance(node, ast.Name) and _locally_bound(func, node.id):
            return False
        return (
            isinstance(node, ast.Name)
            and mod is not None
            and node.id in mod.import_alias
            and (node.id not in mod.imported_names)
        )

    def lookup_name(self, func: Func, name: str) -> Func | ClassInfo | Module | None:
        scope: Func | None = func
        while scope is not None:
            if scope.kind == "function" and name in scope.params:
                return None
            if name in scope.nested:
                return scope.nested[name]
            if name in scope.nested_classes:
                return scope.nested_classes[name]
            if scope.kind == "function" and name in scope.assigned:
                return self._alias_target(scope, name)
            scope = scope.parent
        mod = func.module
        if name in mod.func.nested:
            return mod.func.nested[name]
        if name in mod.func.nested_classes:
            return mod.func.nested_classes[name]
        if name in mod.imported_names:
            other_name, attr = mod.imported_names[name]
            other = self.module_by_name.get(other_name)
            if other is None:
                return None
            if not attr:
                return other
            return (
                other.func.nested.get(attr)
                or other.func.nested_classes.get(attr)
                or (self.module_by_name.get(f"{other_name}.{attr}"))
            )
        if name in mod.func.assigned:
            return self._alias_target(mod.func, name)
        return None

    def _alias_target(self, scope: Func, name: str) -> Func | ClassInfo | None:
        """`fn = eval_sliding if flag else eval_val` / `fn = torch.compile(eval_val)`: the function it names."""
        exprs = scope.assigned.get(name, [])
        if len(exprs) != 1:
            return None
        e = exprs[0]
        for _ in range(4):
            if (
                isinstance(e, ast.Call)
                and e.args
                and (self.dotted(scope.unit.name, e.func, scope) or "").split(".")[-1]
                in _TYPE_PRESERVING | {"partial"}
            ):
                e = e.args[0]
            else:
                break
        if isinstance(e, ast.Name) and e.id != name:
            got = self.lookup_name(scope, e.id)
            return got if isinstance(got, (Func, ClassInfo)) else None
        return None

    def _builtin_alias(self, func: Func, name: str) -> str | None:
        """`C = int` at module level (no other binding): calling C calls the builtin."""
        for scope in _scopes(func):
            if scope.kind == "function" and name in scope.params:
                return None
            exprs = scope.assigned.get(name)
            if exprs is None:
                continue
            if len(exprs) == 1 and isinstance(exprs[0], ast.Name):
                target = exprs[0].id
                if (
                    not any(
                        target in s.assigned or (s.kind == "function" and target in s.params)
                        for s in _scopes(func)
                    )
                    and target not in func.module.import_alias
                ):
                    return target
            return None
        return None

    def _resolve_class_expr(self, func: Func, expr: ast.AST) -> ClassInfo | None:
        if isinstance(expr, ast.Name):
            got = self.lookup_name(func, expr.id)
            return got if isinstance(got, ClassInfo) else None
        if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name):
            got = self.lookup_name(func, expr.value.id)
            if isinstance(got, Module):
                c = got.func.nested_classes.get(expr.attr)
                return c
        return None

    def type_of(self, unit_name: str, expr: ast.AST, func: Func | None, depth: int = 0) -> ClassInfo | None:
        """The own class an expression's value is an instance of, when construction shows it."""
        if func is None or depth > 6:
            return None
        key = (id(expr), func.fid)
        if key in self._type_cache:
            return self._type_cache[key]
        self._type_cache[key] = None  # recursion guard
        got = self._type_of(expr, func, depth)
        self._type_cache[key] = got
        return got

    def _type_of(self, expr: ast.AST, func: Func, depth: int) -> ClassInfo | None:
        un = func.unit.name
        if isinstance(expr, ast.Call):
            target = self._callee_object(func, expr.func)
            if isinstance(target, ClassInfo):
                return target
            last = (
                (self.dotted(un, expr.func, func) or "").split(".")[-1]
                if not isinstance(expr.func, ast.Attribute)
                else expr.func.attr
            )
            if last in _TYPE_PRESERVING:
                if isinstance(expr.func, ast.Attribute) and last in (
                    "to",
                    "cuda",
                    "cpu",
                    "float",
                    "half",
                    "bfloat16",
                    "eval",
                    "train",
                    "requires_grad_",
                ):
                    return self.type_of(un, expr.func.value, func, depth + 1)
                if expr.args:
                    return self.type_of(un, expr.args[0], func, depth + 1)
            return None
        if isinstance(expr, ast.IfExp):
            a = self.type_of(un, expr.body, func, depth + 1)
            b = self.type_of(un, expr.orelse, func, depth + 1)
            return a if a is not None and (b is None or b is a) else b
        if isinstance(expr, ast.Name):
            scope: Func | None = func
            while scope is not None:
                if scope.kind == "function" and expr.id in scope.params:
                    if (
                        scope.cls is not None
                        and scope.params
                        and expr.id == scope.params[0]
                        and not scope.is_static
                    ):
                        return scope.cls
                    return self._param_type(scope, expr.id, depth)
                if scope.kind == "function" and expr.id in scope.assigned:
                    return self._assigned_type(scope, expr.id, depth)
                scope = scope.parent
            mod = func.module
            if expr.id in mod.func.assigned:
                return self._assigned_type(mod.func, expr.id, depth)
            return None
        if isinstance(expr, ast.Attribute):
            owner = self.type_of(un, expr.value, func, depth + 1)
            if owner is not None:
                srcs = owner.attr_exprs(expr.attr)
                types = {self.type_of(f.unit.name, x, f, depth + 1) for x, f in srcs}
                types.discard(None)
                return types.pop() if len(types) == 1 else None
        return None

    def _assigned_type(self, scope: Func, name: str, depth: int) -> ClassInfo | None:
        types = {self.type_of(scope.unit.name, x, scope, depth + 1) for x in scope.assigned.get(name, [])}
        types.discard(None)
        return types.pop() if len(types) == 1 else None

    def _param_type(self, func: Func, name: str, depth: int) -> ClassInfo | None:
        node = func.node
        if isinstance(node, _FUNC_NODES):
            for p in node.args.posonlyargs + node.args.args + node.args.kwonlyargs:
                if p.arg == name and p.annotation is not None:
                    ann = p.annotation
                    if isinstance(ann, ast.Constant) and isinstance(ann.value, str):
                        try:
                            ann = ast.parse(ann.value, mode="eval").body
                        except SyntaxError:
                            ann = None
                    if ann is not None:
                        c = self._resolve_class_expr(func, ann)
                        if c is not None:
                            return c
        types: set[ClassInfo | None] = set()
        for site in self._callers.get(func, []):
            arg = site.arg_for(func, name)
            if arg is None:
                continue
            types.add(self.type_of(site.unit.name, arg, site.caller, depth + 1))
        types.discard(None)
        return types.pop() if len(types) == 1 else None

    def _callee_object(self, func: Func, fexpr: ast.AST) -> Func | ClassInfo | Module | None:
        if isinstance(fexpr, ast.Name):
            return self.lookup_name(func, fexpr.id)
        if isinstance(fexpr, ast.Attribute) and isinstance(fexpr.value, ast.Name):
            base = self.lookup_name(func, fexpr.value.id)
            if isinstance(base, Module):
                return base.func.nested.get(fexpr.attr) or base.func.nested_classes.get(fexpr.attr)
            if isinstance(base, ClassInfo):  # Class.method(...) / Class.staticmethod(...)
                return base.method(fexpr.attr)
        return None

    def resolve(self, func: Func, call: ast.Call) -> tuple[list[Func], ClassInfo | None, str | None, str]:
        """(callees, constructed class, external dotted name, how it was resolved)."""
        fexpr = call.func
        un = func.unit.name
        target = self._callee_object(func, fexpr)
        if isinstance(target, Func):
            how = (
                "import" if isinstance(fexpr, ast.Attribute) or target.module is not func.module else "direct"
            )
            return [target], None, None, how
        if isinstance(target, ClassInfo):
            init = [m for m in (target.method("__init__"), target.method("__post_init__")) if m is not None]
            return init, target, None, "direct"
        if isinstance(fexpr, ast.Name):
            if fexpr.id in ("super",):
                return [], None, "super", "external"
            t = self.type_of(un, fexpr, func)
            if t is not None:  # calling an instance: __call__, else forward (nn.Module)
                m = t.method("__call__") or t.method("forward")
                return ([m] if m else []), None, None, "typed"
            if fexpr.id in func.module.import_alias and not _locally_bound(func, fexpr.id):
                return [], None, self.dotted(un, fexpr, func), "external"
            bound = any(
                fexpr.id in (s.params if s.kind == "function" else []) or fexpr.id in s.assigned
                for s in _scopes(func)
            )
            if not bound:
                return [], None, fexpr.id, "external"
            builtin = self._builtin_alias(func, fexpr.id)
            if builtin is not None:  # `P = sorted` (minified code) calls the builtin
                return [], None, builtin, "external"
            return [], None, None, "none"
        if isinstance(fexpr, ast.Attribute):
            recv = fexpr.value
            if isinstance(recv, ast.Call) and isinstance(recv.func, ast.Name) and recv.func.id == "super":
                if func.cls is not None:
                    for base in func.cls.mro()[1:]:
                        m = base.methods.get(fexpr.attr)
                        if m is not None:
                            return [m], None, None, "self"
                return [], None, f"super.{fexpr.attr}", "external"
            if self.is_external_root(un, fexpr, func):
                return [], None, self.dotted(un, fexpr, func), "external"
            t = self.type_of(un, recv, func)
            if t is not None:
                m = t.method(fexpr.attr)
                if m is not None:
                    how = (
                        "self"
                        if isinstance(recv, ast.Name) and func.params and recv.id == func.params[0]
                        else ("typed")
                    )
                    return [m], None, None, how
                return [], None, None, "typed"
            cands = self._methods_by_name.get(fexpr.attr, [])
            if cands:
                return list(cands), None, None, "cha"
            return [], None, None, "none"
        return [], None, None, "none"

    # ------------------------------------------------------------------------------------------- constants
    def eval_const(
        self,
        unit: CodeUnit | str,
        expr: ast.AST,
        func: Func | str | None = None,
        env: dict[str, str] | None = None,
    ) -> Any:
        """Fold `expr` under the defaults (or `env`); UNKNOWN when it cannot be decided statically."""
        un = unit if isinstance(unit, str) else unit.name
        f = self.func(un, func) if isinstance(func, str) else func
        if f is None:
            f = self.enclosing_func(un, expr)
        return ConstEval(self, env=env).value(un, expr, f)

    def _gate(self, func: Func, test: ast.AST, branch: str) -> Gate | None:
        ev = ConstEval(self)
        default = ev.value(func.unit.name, test, func)
        if default is UNKNOWN:
            return None
        taken = bool(default) if branch == "body" else not bool(default)
        enabled, disabled = [], []
        if ev.env_used:
            for cmd in self.run_commands:
                if not ev.env_used & set(cmd.env_dict):
                    continue
                alt = ConstEval(self, env=cmd.env_dict).value(func.unit.name, test, func)
                if alt is UNKNOWN:
                    continue
                alt_taken = bool(alt) if branch == "body" else not bool(alt)
                if alt_taken and not taken:
                    enabled.append(cmd)
                elif taken and not alt_taken:
                    disabled.append(cmd)
        return Gate(
            func.unit,
            test,
            branch,
            taken,
            default,
            tuple(sorted(ev.env_used)),
            tuple(enabled),
            tuple(disabled),
        )

    def const_memo(self, env: dict[str, str] | None) -> dict:
        key = tuple(sorted(env.items())) if env is not None else None
        got = self._const_memos.get(key)
        if got is None:
            got = self._const_memos[key] = {}
        return got

    # ------------------------------------------------------------------------------------------- queries
    def func(self, unit_name: str, qualname: str) -> Func | None:
        for f in self.funcs:
            if f.unit.name == unit_name and f.qualname == qualname:
                return f
        return None

    def funcs_named(self, qualname: str) -> list[Func]:
        return [f for f in self.funcs if f.qualname == qualname]

    def classes_defining(self, attr: str) -> list[ClassInfo]:
        return [c for c in self.classes if attr in c.body.assigned or attr in c.self_attrs]

    def enclosing_func(self, unit: CodeUnit | str, node: ast.AST) -> Func | None:
        """The innermost function (or class body / module top level) whose source range holds `node`."""
        un = unit if isinstance(unit, str) else unit.name
        pos = (getattr(node, "lineno", 0), getattr(node, "col_offset", 0))
        best: Func | None = None
        best_span = None
        for f in self.funcs:
            if f.unit.name != un:
                continue
            if f.kind == "module":
                if best is None:
                    best = f
                continue
            start = (f.node.lineno, f.node.col_offset)
            end = (f.node.end_lineno or 0, f.node.end_col_offset or 0)
            if start <= pos <= end:
                span = (end[0] - start[0], end[1] - start[1])
                if best is None or best.kind == "module" or best_span is None or span < best_span:
                    best, best_span = f, span
        return best

    def callers(self, func: Func) -> list[CallSite]:
        return list(self._callers.get(func, []))

    def site_of(self, call: ast.Call) -> CallSite | None:
        """The CallSite recorded for an `ast.Call` node."""
        if self._site_index is None:
            self._site_index = {id(s.node): s for f in self.funcs for s in f.calls}
        return self._site_index.get(id(call))

    def sites_in(self, func: Func) -> list[CallSite]:
        return list(func.calls)

    def all_sites(self) -> Iterator[CallSite]:
        for f in self.funcs:
            yield from f.calls

    def gates_at(self, func: Func, node: ast.AST) -> list[Gate]:
        pos = (getattr(node, "lineno", 0), getattr(node, "col_offset", 0))
        return [g for start, end, g in func.regions if start <= pos <= end]

    # ------------------------------------------------------------------------------------------- reachability
    @property
    def entry(self) -> Func | None:
        return self.entry_module.func if self.entry_module else None

    def _compute_reach(self) -> dict[Func, Reach]:
        out: dict[Func, Reach] = {}
        root = self.entry
        if root is None:
            return out
        # pass 1: edges that run by default (or are turned on by a run command); pass 2: every edge
        for mode in ("live", "gated"):
            queue: deque[tuple[Func, tuple[str, ...], Gate | None]] = deque([(root, (root.qualname,), None)])
            seen: set[Func] = set(out) if mode == "gated" else set()
            if mode == "gated":
                queue = deque((f, r.path, r.gate) for f, r in out.items())
            else:
                seen.add(root)
                out[root] = Reach("live", "entry point", None, (root.qualname,))
            while queue:
                f, path, gate = queue.popleft()
                for target, gates in self._edges(f):
                    deciding = next((g for g in gates if not g.taken), None)
                    if mode == "live" and deciding is not None and not deciding.enabled_by:
                        continue
                    if target in seen:
                        continue
                    seen.add(target)
                    g2 = gate or deciding or next((g for g in gates if g.enabled_by), None)
                    if mode == "live":
                        reason = "reachable from the entry point"
                        if g2 is not None and g2.enabled_by:
                            reason = f"reachable; default-off but enabled by a run command ({g2.describe()})"
                        out[target] = Reach("live", reason, g2, path + (target.qualname,))
                    else:
                        out[target] = Reach(
                            "gated_off",
                            f"only reachable through {g2.describe()}"
                            if g2
                            else "only reachable through default-off code",
                            g2,
                            path + (target.qualname,),
                        )
                    queue.append((target, path + (target.qualname,), g2 if mode == "gated" else g2))
        return out

    def _edges(self, f: Func) -> Iterator[tuple[Func, tuple[Gate, ...]]]:
        for site in f.calls:
            for callee in site.callees:
                yield callee, site.gates
            if site.constructs is not None:
                for c in site.constructs.mro():
                    for name in _PROTOCOL:
                        if name in c.methods:
                            yield c.methods[name], site.gates
                    yield c.body, site.gates
        for _, target, gates in f.refs:
            yield target, gates
        if f.kind == "module":
            for c in f.nested_classes.values():
                yield c.body, ()
            for mname, _ in f.module.imported_names.values():
                other = self.module_by_name.get(mname)
                if other is not None and other is not f.module:
                    yield other.func, ()
        if f.kind == "classbody":
            for c in f.nested_classes.values():
                yield c.body, ()

    def func_reach(self, func: Func) -> Reach:
        if self._reach is None:
            self._reach = self._compute_reach()
        got = self._reach.get(func)
        if got is not None:
            return got
        if self.entry is None:
            return Reach("unknown", "no entry script could be analysed")
        if func.kind == "classbody" and func.cls is not None:
            return Reach("dead", f"class {func.cls.name} is never used")
        if self._dispatch_defeated_live is None:
            # Only defeats inside code the entry reaches count. Asking func_reach() of the defeating function
            # itself would recurse without end when that function is unreachable too.
            self._dispatch_defeated_live = any(
                reason for _, reason, g in self.defeated if (r := self._reach.get(g)) is not None and r.live
            )
        if self._dispatch_defeated_live:
            return Reach(
                "unknown",
                f"{func.qualname} is not called directly, but dynamic dispatch elsewhere may reach it",
            )
        return Reach("dead", f"{func.qualname} is never called from the entry point")

    def reach(self, unit: CodeUnit | str, node: ast.AST, func: Func | None = None) -> Reach:
        """Does `node` run? dead (its function is never called), gated_off (a default-off branch), live."""
        f = func or self.enclosing_func(unit, node)
        if f is None:
            return Reach("unknown", "not inside analysed code")
        r = self.func_reach(f)
        if r.status in ("dead", "gated_off"):
            return r
        gates = self.gates_at(f, node)
        off = next((g for g in gates if not g.taken), None)
        if off is not None:
            if off.enabled_by:
                return Reach(
                    "live", f"default-off but enabled by a run command ({off.describe()})", off, r.path
                )
            return Reach("gated_off", off.describe(), off, r.path)
        return r

    def site_reach(self, site: CallSite) -> Reach:
        r = self.func_reach(site.caller)
        if r.status in ("dead", "gated_off"):
            return r
        off = site.deciding_gate
        if off is not None:
            if off.enabled_by:
                return Reach(
                    "live", f"default-off but enabled by a run command ({off.describe()})", off, r.path
                )
            return Reach("gated_off", off.describe(), off, r.path)
        return r

    # ------------------------------------------------------------------------------------------- entry order
    def entry_sequence(self, max_depth: int = 6) -> list[EntryEvent]:
        """Top-level call sites of the entry flow in execution order; driver functions are inlined.

        A driver is an own function called from exactly one call site of the program (e.g. `main()`, and
        `train_and_eval(h)` called from main): its call is listed, followed by its own call sites.
        """
        if self._entry_seq is not None and max_depth == 6:
            return self._entry_seq
        root = self.entry
        if root is None:
            return []
        out: list[EntryEvent] = []

        def expand(
            f: Func,
            via: tuple[CallSite, ...],
            loops: tuple[ast.AST, ...],
            gate: Gate | None,
            active: set[Func],
        ) -> None:
            for site in sorted(f.calls, key=lambda s: s.order):
                g = gate or site.deciding_gate
                all_loops = loops + site.loops
                out.append(EntryEvent(len(out), site, via, all_loops, g))
                if len(via) >= max_depth:
                    continue
                for callee in site.callees:
                    if callee in active or site.constructs is not None:
                        continue
                    if len(self._callers.get(callee, [])) == 1 and callee.kind == "function":
                        expand(callee, via + (site,), all_loops, g, active | {callee})

        expand(root, (), (), None, {root})
        if max_depth == 6:
            self._entry_seq = out
        return out

    def inlined_driver_sites(self) -> set[int]:
        """ids of the call nodes whose callee is inlined into the entry sequence (drivers)."""
        if self._driver_ids is None:
            self._driver_ids = {id(s.node) for e in self.entry_sequence() for s in e.via}
        return self._driver_ids

    # ------------------------------------------------------------------------------------------- closure
    def called_under(self, site: CallSite, include_gated: bool = False) -> set[Func]:
        """Functions that run when `site` runs (its callees and everything they call); cached per site."""
        key = (id(site.node), include_gated)
        got = self._under.get(key)
        if got is None:
            got = self._under[key] = (
                self.reachable_from(list(site.callees), include_gated) if site.callees else set()
            )
        return got

    def reachable_from(self, funcs: list[Func], include_gated: bool = False) -> set[Func]:
        """Functions transitively called from `funcs` (edges through default-off gates only if asked)."""
        seen: set[Func] = set(funcs)
        todo = list(funcs)
        while todo:
            f = todo.pop()
            for target, gates in self._edges(f):
                if not include_gated and any(not g.taken and not g.enabled_by for g in gates):
                    continue
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        return seen


class _BodyWalker:
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


def _analysed_units(ctx: AuditContext) -> list[CodeUnit]:
    """Per shipped file, its innermost parsed layer (what actually runs)."""
    by_path: dict[str, CodeUnit] = {}
    for u in ctx.units:
        if u.tree is not None:
            by_path[u.path] = u  # units are ordered shipped-first, innermost-last
    return list(by_path.values())


def _run_files(ctx: AuditContext) -> dict[str, str]:
    out: dict[str, str] = {}
    for path, f in ctx.submission.files.items():
        name = PurePosixPath(path).name.lower()
        if name.endswith(".sh") or name.startswith("readme"):
            text, _ = f.text()
            if text is not None and len(text) < 2_000_000:
                out[path] = text
    return out


def program_of(ctx: AuditContext) -> Program:
    """The shared Program of this audit (built once)."""
    return ctx.memo(("flow", "program"), lambda: Program(ctx))
