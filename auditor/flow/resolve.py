"""Name and call resolution over the Program's index: scopes, own-module imports, receivers whose class is known
from construction, `self.m()` / `super().m()`, aliases. A mixin of Program (split out to keep modules readable).
"""

from __future__ import annotations

import ast

from auditor.flow.model import _FUNC_NODES, ClassInfo, Func, Module, _locally_bound, _scopes

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


class ResolveMixin:
    """Resolution queries; mixed into Program (uses its modules, _callers, _methods_by_name, _type_cache)."""

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
