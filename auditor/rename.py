"""Identifier renaming for robustness tests: a rule must give the same verdict whatever the code's names are.

`rename_identifiers(source, seed)` renames, losslessly with libcst (every statement stays on its line, comments
and formatting are kept), every identifier the module itself defines to meaningless names (v1, v2, ...), with one
mapping for the whole module so the renamed program is consistent:
  - functions, classes, parameters, local and global variables (assignment, for, with, except, comprehension,
    walrus and lambda targets, global/nonlocal declarations);
  - attributes the module assigns (`self.x = ...`, `obj.x = ...`), methods and class-body names of the module's
    own classes, wherever they are read as `.x`;
  - keyword argument names at call sites of the module's own functions and classes.
Left alone: builtins, dunder names, imported names and every attribute of an imported name (`torch.no_grad`,
`F.cross_entropy`, `os.environ.get`), methods of classes deriving from imported bases (`forward`, `step` of an
nn.Module / Optimizer subclass: the base class calls them by name), keyword arguments of other calls, and all
string literals.

Limits, by design: attributes are renamed by name, so an attribute the module assigns that an external object
also has (`self.view = ...` next to `tensor.view()`) is renamed on both; names reached through strings
(getattr, state_dict keys, **kwargs dicts) are not followed.

`minify(source)` is python-minifier with local and global renaming, for the minified variants.
"""

from __future__ import annotations

import builtins
import random
import re

import libcst as cst

_BUILTINS = frozenset(dir(builtins))


def _is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def _target_names(node: cst.CSTNode) -> list[cst.Name]:
    """Names bound by an assignment target (Name, Tuple/List unpacking, Starred)."""
    if isinstance(node, cst.Name):
        return [node]
    if isinstance(node, cst.Tuple | cst.List):
        return [n for el in node.elements for n in _target_names(el.value)]
    if isinstance(node, cst.StarredElement):
        return _target_names(node.value)
    return []


def _target_attributes(node: cst.CSTNode) -> list[cst.Attribute]:
    if isinstance(node, cst.Attribute):
        return [node]
    if isinstance(node, cst.Tuple | cst.List):
        return [a for el in node.elements for a in _target_attributes(el.value)]
    if isinstance(node, cst.StarredElement):
        return _target_attributes(node.value)
    return []


def _root_name(node: cst.BaseExpression) -> str | None:
    """The leftmost name of an attribute/call/subscript chain: `torch` for torch.zeros(3).view."""
    while True:
        if isinstance(node, cst.Attribute):
            node = node.value
        elif isinstance(node, cst.Call):
            node = node.func
        elif isinstance(node, cst.Subscript):
            node = node.value
        elif isinstance(node, cst.Name):
            return node.value
        else:
            return None


class _Collector(cst.CSTVisitor):
    """What the module defines, what it imports, and which method names belong to external protocols."""

    def __init__(self) -> None:
        self.imported: set[str] = set()
        self.names: list[str] = []  # bound names, in order of first definition
        self.attrs: list[str] = []  # attribute names the module assigns, methods and class-body names
        self.callables: set[str] = set()  # module-defined functions and classes (for keyword renaming)
        self.class_bases: list[cst.ClassDef] = []
        self.assigned_attrs: list[cst.Attribute] = []

    def _name(self, name: str) -> None:
        self.names.append(name)

    def _attr(self, name: str) -> None:
        self.attrs.append(name)

    # imports
    def visit_Import(self, node: cst.Import) -> bool:
        for alias in node.names:
            if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                self.imported.add(alias.asname.name.value)
            else:
                self.imported.add(_root_name(alias.name) or "")
        return False

    def visit_ImportFrom(self, node: cst.ImportFrom) -> bool:
        if isinstance(node.names, cst.ImportStar):
            return False
        for alias in node.names:
            if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                self.imported.add(alias.asname.name.value)
            elif isinstance(alias.name, cst.Name):
                self.imported.add(alias.name.value)
        return False

    # definitions
    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self._name(node.name.value)
        self.callables.add(node.name.value)
        if self.class_bases and self._direct_method(node):
            self._attr(node.name.value)

    def _direct_method(self, node: cst.FunctionDef) -> bool:
        cls = self.class_bases[-1]
        body = cls.body.body if isinstance(cls.body, cst.IndentedBlock) else ()
        return any(stmt is node for stmt in body)

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self._name(node.name.value)
        self.callables.add(node.name.value)
        self.class_bases.append(node)

    def leave_ClassDef(self, original_node: cst.ClassDef) -> None:
        self.class_bases.pop()

    def visit_Param(self, node: cst.Param) -> None:
        self._name(node.name.value)

    def _targets(self, target: cst.CSTNode, in_class_body: bool = False) -> None:
        for name in _target_names(target):
            self._name(name.value)
            if in_class_body:
                self._attr(name.value)
        self.assigned_attrs.extend(_target_attributes(target))

    def visit_Assign(self, node: cst.Assign) -> None:
        for t in node.targets:
            self._targets(t.target, self._in_class_body(node))

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        self._targets(node.target, self._in_class_body(node))

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        self._targets(node.target)

    def visit_For(self, node: cst.For) -> None:
        self._targets(node.target)

    def visit_CompFor(self, node: cst.CompFor) -> None:
        self._targets(node.target)

    def visit_AsName(self, node: cst.AsName) -> None:  # with ... as x, except E as x (imports return early)
        self._targets(node.name)

    def visit_NamedExpr(self, node: cst.NamedExpr) -> None:
        self._targets(node.target)

    def visit_Global(self, node: cst.Global) -> None:
        for item in node.names:
            self._name(item.name.value)

    def visit_Nonlocal(self, node: cst.Nonlocal) -> None:
        for item in node.names:
            self._name(item.name.value)

    def _in_class_body(self, stmt: cst.CSTNode) -> bool:
        if not self.class_bases:
            return False
        cls = self.class_bases[-1]
        body = cls.body.body if isinstance(cls.body, cst.IndentedBlock) else ()
        for line in body:
            if isinstance(line, cst.SimpleStatementLine) and any(s is stmt for s in line.body):
                return True
        return False


class _Renamer(cst.CSTTransformer):
    def __init__(self, names: dict[str, str], attrs: dict[str, str], callables: set[str], imported: set[str]):
        self.names = names
        self.attrs = attrs
        self.callables = callables
        self.imported = imported
        self.skip: set[int] = set()  # Name nodes that are attribute names, keywords or import parts
        self.call_stack: list[bool] = []  # does the enclosing call target one of our callables?

    def visit_Import(self, node: cst.Import) -> bool:
        return False

    def visit_ImportFrom(self, node: cst.ImportFrom) -> bool:
        return False

    def visit_Attribute(self, node: cst.Attribute) -> None:
        self.skip.add(id(node.attr))

    def leave_Attribute(self, original_node: cst.Attribute, updated_node: cst.Attribute) -> cst.Attribute:
        attr = original_node.attr.value
        if attr in self.attrs and _root_name(original_node.value) not in self.imported:
            return updated_node.with_changes(attr=cst.Name(self.attrs[attr]))
        return updated_node

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        ours = (isinstance(func, cst.Name) and func.value in self.callables) or (
            isinstance(func, cst.Attribute)
            and func.attr.value in self.callables
            and func.attr.value in self.attrs
            and _root_name(func.value) not in self.imported
        )
        self.call_stack.append(ours)

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.Call:
        self.call_stack.pop()
        return updated_node

    def visit_Arg(self, node: cst.Arg) -> None:
        if node.keyword is not None:
            self.skip.add(id(node.keyword))

    def leave_Arg(self, original_node: cst.Arg, updated_node: cst.Arg) -> cst.Arg:
        kw = original_node.keyword
        if kw is not None and self.call_stack and self.call_stack[-1] and kw.value in self.names:
            return updated_node.with_changes(keyword=cst.Name(self.names[kw.value]))
        return updated_node

    def leave_Name(self, original_node: cst.Name, updated_node: cst.Name) -> cst.Name:
        if id(original_node) in self.skip:
            return updated_node
        new = self.names.get(original_node.value)
        return updated_node.with_changes(value=new) if new else updated_node


def _fresh_names(count: int, taken: set[str]) -> list[str]:
    out: list[str] = []
    i = 1
    while len(out) < count:
        candidate = f"v{i}"
        if candidate not in taken:
            out.append(candidate)
        i += 1
    return out


def rename_identifiers(source: str, seed: int = 0) -> str:
    """`source` with every module-defined identifier renamed to v1, v2, ... (see the module docstring)."""
    module = cst.parse_module(source)
    collector = _Collector()
    module.visit(collector)
    imported = collector.imported
    # methods of a class deriving (directly or through our classes) from an imported or unknown base may be
    # called by that base by name (nn.Module.__call__ -> forward), so they keep their names
    protected = _external_methods(module, imported)

    def keep(name: str) -> bool:
        return name in imported or name in _BUILTINS or _is_dunder(name) or name in protected

    assigned_attr_names = [
        a.attr.value for a in collector.assigned_attrs if _root_name(a.value) not in imported
    ]
    names_order = list(dict.fromkeys(n for n in collector.names if not keep(n)))
    attrs_order = list(dict.fromkeys(a for a in [*collector.attrs, *assigned_attr_names] if not keep(a)))
    everything = list(dict.fromkeys([*names_order, *attrs_order]))
    taken = set(re.findall(r"[A-Za-z_]\w*", source))
    fresh = _fresh_names(len(everything), taken)
    random.Random(seed).shuffle(fresh)
    mapping = dict(zip(everything, fresh))
    renamer = _Renamer(
        names={n: mapping[n] for n in names_order},
        attrs={a: mapping[a] for a in attrs_order},
        callables={c for c in collector.callables if not keep(c)},
        imported=imported,
    )
    return module.visit(renamer).code


def _external_methods(module: cst.Module, imported: set[str]) -> set[str]:
    """Method names of classes with a base that is not (transitively) a plain class of the module."""
    classes: list[cst.ClassDef] = []

    class Visitor(cst.CSTVisitor):
        def visit_ClassDef(self, node: cst.ClassDef) -> None:
            classes.append(node)

    module.visit(Visitor())
    plain: set[str] = set()
    external: set[str] = set()
    for node in classes:  # definition order: a base is defined before the classes deriving from it
        bases = [a.value for a in node.bases if a.keyword is None]
        is_external = any(
            not (isinstance(b, cst.Name) and b.value in plain and b.value not in imported) for b in bases
        )
        (external if is_external else plain).add(node.name.value)
    out: set[str] = set()
    for node in classes:
        if node.name.value in external and isinstance(node.body, cst.IndentedBlock):
            out.update(stmt.name.value for stmt in node.body.body if isinstance(stmt, cst.FunctionDef))
    return out


def minify(source: str) -> str:
    """python-minifier with local and global renaming (the variant some records ship)."""
    import python_minifier

    return python_minifier.minify(source, rename_locals=True, rename_globals=True)
