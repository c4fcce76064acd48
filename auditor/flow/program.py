"""The whole-program view every flow rule shares: functions, classes, call sites, call graph, gates, reachability.

Built once per audit (`program_of(ctx)`, memoized) on the stdlib `ast` of every parsed unit, taking the innermost
decoded layer of packed files. Nothing here depends on identifier spellings: functions are found by definition,
calls by name resolution (scopes, imports between the submission's own modules, `self.m()`, receivers whose class
is known from construction, nn.Module `__call__` -> `forward`), flags by folding their defining expressions.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from auditor.flow import vocab
from auditor.flow.consts import UNKNOWN, ConstEval, RunCommand, launch_lines, parse_run_commands
from auditor.flow.index import BodyWalker
from auditor.flow.model import (
    _FUNC_NODES,
    _OPAQUE,
    CallSite,
    ClassInfo,
    EntryEvent,
    Func,
    Gate,
    Module,
    Reach,
    _all_statements,
    _flat_statements,
    _locally_bound,
    _module_name,
    _note_assigned,
    _scopes,
    _statements,
    _target_leaves,
)
from auditor.flow.reach import ReachMixin

if TYPE_CHECKING:
    from auditor.facts import AuditContext, CodeUnit

__all__ = [
    "UNKNOWN",
    "CallSite",
    "ClassInfo",
    "ConstEval",
    "EntryEvent",
    "Func",
    "Gate",
    "Module",
    "Program",
    "Reach",
    "RunCommand",
    "program_of",
]

_CONSTRUCTORS = ("__init__", "__post_init__", "__new__", "setup")
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


class Program(ReachMixin):
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
        self.runtime_attrs: set[str] = set()  # attributes the code changes while it runs (see below)
        self.late_attr_assigns: dict[str, list[tuple[ast.AST, Func]]] = {}  # `obj.a = v` outside constructors
        self.branch_gates: dict[tuple[int, str], Gate] = {}  # (id(If/IfExp node), "body"|"orelse") -> Gate
        self._const_memos: dict[tuple | None, dict] = {}  # folded constants per environment
        self._entry_seq: list[EntryEvent] | None = None
        self._under: dict[tuple[int, bool], set[Func]] = {}
        # reachability state (auditor/flow/reach.py)
        self.launch_lines: list[tuple[str, str]] = launch_lines(_run_files(ctx))
        self._entries: list[Func] | None = None
        self._constructions: dict[int, list[tuple[CodeUnit, ast.Call, Func]]] | None = None
        self._contexts: dict[Func, list[tuple[CallSite | None, Gate | None]]] = {}
        self._gate_cache: dict[tuple[int, int], Gate] = {}
        self._param_gated: dict[Func, bool] = {}
        self._log_memo: dict[str, dict[str, str]] = {}
        self._logs: list[tuple[str, str]] | None = None
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
            self._collect_runtime_state(f)
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

    def construction_sites(self, cls: ClassInfo) -> list[tuple[CodeUnit, ast.Call, Func]]:
        """(unit, call, calling function) of every `Cls(...)` that builds `cls`, found syntactically (usable while
        the index is still being built, when call sites are not all recorded yet)."""
        if self._constructions is None:
            names = {c.name for c in self.classes}
            found: dict[int, list[tuple[CodeUnit, ast.Call, Func]]] = {}
            for mod in self.modules.values():
                for n in ast.walk(mod.unit.tree):  # type: ignore[arg-type]
                    if not isinstance(n, ast.Call):
                        continue
                    fx = n.func
                    last = (
                        fx.id
                        if isinstance(fx, ast.Name)
                        else fx.attr
                        if isinstance(fx, ast.Attribute)
                        else None
                    )
                    if last not in names:
                        continue
                    caller = self.enclosing_func(mod.unit, n)
                    target = self._callee_object(caller, fx) if caller is not None else None
                    if isinstance(target, ClassInfo) and caller is not None:
                        found.setdefault(id(target), []).append((mod.unit, n, caller))
            self._constructions = found
        return self._constructions.get(id(cls), [])

    def _collect_runtime_state(self, f: Func) -> None:
        """Attributes whose value the code changes while it runs are runtime state, not configuration.

        `self.total += n`, `self.buf.append(x)`, `self.table[k] = v` (anywhere), and `obj.attr = v` outside a
        constructor: a gate reading such an attribute (`if self.uni_total > 0`) is not a flag that the defaults
        decide. The first three make the attribute UNKNOWN to the folder; later plain assignments become extra
        candidate values (a different value makes it UNKNOWN, the same constant keeps it)."""
        if not isinstance(f.node, _FUNC_NODES):
            return
        in_ctor = f.name in _CONSTRUCTORS
        for n, guards in _guarded_statements(f.node.body, frozenset()):
            if isinstance(n, ast.AugAssign):
                t = n.target.value if isinstance(n.target, ast.Subscript) else n.target
                if isinstance(t, ast.Attribute):
                    self.runtime_attrs.add(t.attr)
            elif isinstance(n, (ast.Assign, ast.AnnAssign)):
                targets = n.targets if isinstance(n, ast.Assign) else [n.target]
                for t in targets:
                    for leaf, sub in _target_leaves(t, n.value):
                        if isinstance(leaf, ast.Subscript) and isinstance(leaf.value, ast.Attribute):
                            self.runtime_attrs.add(leaf.value.attr)
                        elif isinstance(leaf, ast.Attribute) and not in_ctor and leaf.attr not in guards:
                            # (`if args.flag: args.flag = True` re-pins a flag inside its own branch: not a change)
                            value = sub if sub is not None else _OPAQUE
                            self.late_attr_assigns.setdefault(leaf.attr, []).append((value, f))
            elif (
                isinstance(n, ast.Expr)
                and isinstance(n.value, ast.Call)
                and isinstance(n.value.func, ast.Attribute)
                and isinstance(n.value.func.value, ast.Attribute)
                and n.value.func.attr in vocab.CONTAINER_MUTATORS | vocab.TENSOR_MUTATORS
            ):
                self.runtime_attrs.add(n.value.func.value.attr)

    def _walk_body(self, f: Func) -> None:
        """Record call sites (post-order = evaluation order), function references and decided branches."""
        counter = [0]
        walker = BodyWalker(self, f, counter)
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

    def const_memo(
        self, env: dict[str, str] | None, params: dict[tuple[int, str], Any] | None = None
    ) -> dict:
        key: tuple | None = tuple(sorted(env.items())) if env is not None else None
        if params:  # one memo per call binding of a parameter gate (folded values of other scopes repeat)
            key = (key, tuple(sorted((k, repr(v)) for k, v in params.items())))
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


def _guarded_statements(
    body: list[ast.stmt], guards: frozenset[str]
) -> Iterator[tuple[ast.stmt, frozenset[str]]]:
    """Statements of a block (not entering nested defs) with the attribute names read by enclosing `if` tests."""
    for n in body:
        yield n, guards
        if isinstance(n, (*_FUNC_NODES, ast.ClassDef)):
            continue
        inner = guards
        if isinstance(n, ast.If):
            inner = guards | {a.attr for a in ast.walk(n.test) if isinstance(a, ast.Attribute)}
        for name in ("body", "orelse", "finalbody"):
            yield from _guarded_statements(getattr(n, name, None) or [], inner)
        for h in getattr(n, "handlers", ()):
            yield from _guarded_statements(h.body, guards)


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
