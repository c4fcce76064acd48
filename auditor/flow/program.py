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
    _module_name,
    _note_assigned,
    _statements,
    _target_leaves,
)
from auditor.flow.reach import ReachMixin
from auditor.flow.resolve import ResolveMixin

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


class Program(ResolveMixin, ReachMixin):
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
        self._classes_by_attr: dict[str, list[ClassInfo]] | None = None  # once built (classes_defining)
        self._build()
        # Classes and their attributes are final once built: index them (each lookup was a scan of every class,
        # quadratic on a folder of 57 full-size scripts).
        self._classes_by_attr = {}
        for c in self.classes:
            for attr in {*c.body.assigned, *c.self_attrs}:
                self._classes_by_attr.setdefault(attr, []).append(c)

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
        if self._classes_by_attr is not None:  # built: the index holds the same classes in the same order
            return list(self._classes_by_attr.get(attr, ()))
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
