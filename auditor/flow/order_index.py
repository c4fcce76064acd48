"""The order analysis's own program index (functions, classes, name and method lookup).

Duplication kept on purpose for now: auditor.flow.program has the shared index and call graph; the interpreter
asks it first for method calls on objects (``_shared_resolver`` in auditor.flow.order) and falls back to this
index for lexical lookup (nested defs, closures, aliases bound in the interpreter's state)."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from auditor.flow.syntax import dotted, sub_bodies

if TYPE_CHECKING:
    from auditor.facts import CodeUnit


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
                ci = ClassInfo(stmt.name, stmt, unit, bases=[dotted(b) or "" for b in stmt.bases])
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
                for sub_body in sub_bodies(stmt):
                    self._collect(unit, sub_body, owner, cls)

    def _make_func(self, unit: CodeUnit, node: ast.AST, owner: FuncInfo, cls: ClassInfo | None) -> FuncInfo:
        args = node.args  # type: ignore[attr-defined]
        params = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
        key = f"{unit.name}:{cls.name + '.' if cls else ''}{node.name}:{node.lineno}"  # type: ignore[attr-defined]
        decorators = [dotted(d) or "" for d in node.decorator_list]  # type: ignore[attr-defined]
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
