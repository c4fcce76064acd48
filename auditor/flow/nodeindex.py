"""One shared index of every parsed unit's nodes, built once per audit and reused by every analysis.

Rules and flow analyses used to call `ast.walk(unit.tree)` (or an equivalent hand-rolled walk) over the whole
tree several times each; on a 3,000-line script each full walk costs as much as a fair part of parsing it. The
index walks each tree once and keeps:

- `nodes`: every node in exactly `ast.walk` order (breadth first), so a loop over it sees what `ast.walk` sees,
  in the same order (findings keep their order);
- `by_type`: the same nodes grouped by exact class, each group in walk order;
- `children(node)`: the direct children of a node (in `ast.iter_child_nodes` order), from a table filled during
  the walk instead of re-reading the node's fields;
- `parent(node)`: the direct parent (None for the module);
- `scope_nodes(scope)`: the nodes of a function/module body that are not inside a nested def/class, memoised.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from auditor.facts import AuditContext, CodeUnit

_AST = ast.AST
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def child_nodes(node: ast.AST) -> list[ast.AST]:
    """`list(ast.iter_child_nodes(node))` without the generator machinery (same order)."""
    out: list[ast.AST] = []
    for name in node._fields:
        value = getattr(node, name, None)
        if isinstance(value, _AST):
            out.append(value)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, _AST):
                    out.append(item)
    return out


class NodeIndex:
    def __init__(self, tree: ast.AST) -> None:
        self.tree = tree
        nodes: list[ast.AST] = []
        kids: dict[int, list[ast.AST]] = {}
        parents: dict[int, ast.AST] = {}
        by_type: dict[type, list[ast.AST]] = {}
        todo = deque([tree])
        popleft, extend, append = todo.popleft, todo.extend, nodes.append
        while todo:
            node = popleft()
            append(node)
            by_type.setdefault(type(node), []).append(node)
            cs = child_nodes(node)
            kids[id(node)] = cs
            for c in cs:
                parents[id(c)] = node
            extend(cs)
        self.nodes = nodes
        self.by_type = by_type
        self._kids = kids
        self._parents = parents
        self._scope_cache: dict[int, list[ast.AST]] = {}

    def children(self, node: ast.AST) -> list[ast.AST]:
        got = self._kids.get(id(node))
        return got if got is not None else child_nodes(node)

    def parent(self, node: ast.AST) -> ast.AST | None:
        return self._parents.get(id(node))

    def of_type(self, *types: type) -> list[ast.AST]:
        """Nodes of the given exact classes, in walk order (merged when several classes are asked for)."""
        if len(types) == 1:
            return self.by_type.get(types[0], [])
        wanted = set(types)
        return [n for n in self.nodes if type(n) in wanted]

    def functions(self) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
        return self.of_type(ast.FunctionDef, ast.AsyncFunctionDef)  # type: ignore[return-value]

    def walk(self, node: ast.AST) -> Iterator[ast.AST]:
        """`ast.walk(node)` for a node of this tree, reading children from the table (same order)."""
        if node is self.tree:
            yield from self.nodes
            return
        todo = deque([node])
        kids = self._kids
        while todo:
            n = todo.popleft()
            got = kids.get(id(n))
            todo.extend(got if got is not None else child_nodes(n))
            yield n

    def scope_nodes(self, scope: ast.AST) -> list[ast.AST]:
        """Nodes of a function or module body, not descending into nested functions/classes (their own scopes).
        Order: the last statement's subtree first, depth first (the order the earlier per-rule walk produced)."""
        got = self._scope_cache.get(id(scope))
        if got is not None:
            return got
        out: list[ast.AST] = []
        kids = self._kids
        stack = list(getattr(scope, "body", []))
        pop, extend, append = stack.pop, stack.extend, out.append
        while stack:
            n = pop()
            if isinstance(n, _SCOPES):
                continue
            append(n)
            got = kids.get(id(n))
            extend(got if got is not None else child_nodes(n))
        self._scope_cache[id(scope)] = out
        return out


def node_index(ctx: AuditContext, unit: CodeUnit) -> NodeIndex:
    """The index of one parsed unit, built once per audit."""
    assert unit.tree is not None
    return ctx.memo(("node_index", id(unit)), lambda: NodeIndex(unit.tree))  # type: ignore[arg-type]
