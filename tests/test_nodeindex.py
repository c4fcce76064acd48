"""The fast walks of auditor.flow.nodeindex must see exactly what ast.walk / ast.iter_child_nodes see, in order."""

from __future__ import annotations

import ast
from pathlib import Path

from auditor.flow.nodeindex import NodeIndex, child_nodes, walk

ROOT = Path(__file__).resolve().parents[1]

_SAMPLE = """
import torch as T
class M(T.nn.Module):
    scale: float = 0.5
    def forward(self, x, *a, k=1, **kw):
        y = [v * 2 for v in x if v]
        with T.no_grad():
            z = {k: (lambda q: q + 1)(v) for k, v in kw.items()}
        async def inner():
            await something(y[1:-1], z)
        return f"{x!r:>10}" if y else -x
def top(n):
    try:
        del n[0]
    except (KeyError, IndexError) as e:
        raise ValueError(e) from None
    match n:
        case [1, *rest]:
            return rest
"""


def _trees() -> list[ast.AST]:
    trees = [ast.parse(_SAMPLE)]
    trees.append(ast.parse((ROOT / "auditor" / "flow" / "program.py").read_text()))
    return trees


def test_child_nodes_and_walk_match_the_stdlib_in_order() -> None:
    for tree in _trees():
        nodes = list(ast.walk(tree))
        assert [id(n) for n in walk(tree)] == [id(n) for n in nodes]
        for n in nodes:
            assert [id(c) for c in child_nodes(n)] == [id(c) for c in ast.iter_child_nodes(n)]


def test_index_groups_and_scopes() -> None:
    tree = ast.parse(_SAMPLE)
    idx = NodeIndex(tree)
    assert [id(n) for n in idx.nodes] == [id(n) for n in ast.walk(tree)]
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert [id(n) for n in idx.of_type(ast.Call)] == [id(n) for n in calls]
    assert [f.name for f in idx.functions()] == ["top", "forward", "inner"]  # walk (breadth-first) order
    forward = next(f for f in idx.functions() if f.name == "forward")
    own = idx.scope_nodes(forward)
    assert not any(isinstance(n, ast.Await) for n in own)  # inside the nested `inner`: its own scope
    assert any(isinstance(n, ast.Lambda) for n in own)  # a lambda is not a def: its nodes stay in the scope
    assert idx.scope_nodes(forward) is own  # memoised
