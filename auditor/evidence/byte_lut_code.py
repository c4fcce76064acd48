"""How a submission's code builds its per-token byte counts, read structurally from the parsed trees.

A "byte LUT builder" is any function (or the module body) that takes a piece's text from the tokenizer
(`.id_to_piece(i)`, `.IdToPiece(i)`, `.decode([i])`, ...) and measures it with `len(<text>.encode(...))`. Names do
not matter: the analysis follows which local names hold piece text (assigned from a piece call, or from slicing /
string methods applied to such a name). For each builder it records:

- whether byte-fallback ids are special-cased (`.is_byte(`/`.IsByte(` call, or a `"<0x"` literal test); without it
  a byte-fallback piece is measured as its text — 6 bytes for "<0xC3>", 3 for a decoded U+FFFD — instead of the one
  source byte it stands for (the Scylla bug class, rules.md §A.10);
- how the leading "▁" (U+2581) is handled: a `startswith("▁")` test (the has_leading_space LUT), and whether the
  measured text drops the "▁" (`[1:]`, `lstrip("▁")`, `removeprefix("▁")`, `replace("▁", "")`). Keeping it while also
  adding the leading-space byte counts the space twice (3 + 1 bytes);
- program-wide: CaseOps markers (case-transformed data) and byte-sidecar support (rules.md §B.4), and LUT arrays
  read from a side file (`np.load`/`json.load`/`torch.load`/`pickle.load` subscripted with a byte/space/boundary key).

Nothing here imports or runs submission code.
"""

from __future__ import annotations

import ast
import bisect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from auditor.constants import CASEOPS_SENTINELS
from auditor.flow.nodeindex import NodeIndex, node_index

if TYPE_CHECKING:
    from auditor.facts import AuditContext, CodeUnit

LEADING_SPACE = "\u2581"
RAW_PIECE_METHODS = {"id_to_piece", "IdToPiece", "convert_ids_to_tokens", "id_to_token"}  # text with its "▁"
PIECE_METHODS = RAW_PIECE_METHODS | {"decode", "decode_ids", "DecodeIds", "decode_pieces", "DecodePieces"}
BYTE_TEST_METHODS = {"is_byte", "IsByte"}
STRIP_METHODS = {"lstrip", "removeprefix", "strip"}
LOADERS = {
    ("np", "load"),
    ("numpy", "load"),
    ("json", "load"),
    ("json", "loads"),
    ("torch", "load"),
    ("pickle", "load"),
    ("pickle", "loads"),
}
LUT_KEY = re.compile(r"byte|space|boundary", re.I)
CASEOPS_TEXT = re.compile(r"caseops|lossless_caps", re.I)
SIDECAR_TEXT = re.compile(r"_bytes_|val_bytes|byte_sidecar|bytes_files", re.I)


@dataclass
class LutBuilder:
    unit: CodeUnit
    scope: ast.AST  # FunctionDef / AsyncFunctionDef / Module
    name: str
    piece_calls: list[ast.Call] = field(default_factory=list)
    length_calls: list[ast.Call] = field(default_factory=list)  # len(<piece text>.encode(...))
    byte_tests: list[ast.AST] = field(default_factory=list)
    leading_space_tests: list[ast.AST] = field(default_factory=list)
    strips: list[ast.AST] = field(default_factory=list)  # "▁" removed from the measured text
    space_to_blank: list[ast.AST] = field(default_factory=list)  # "▁" replaced by " " (still one byte)
    mentions_leading_space: bool = False
    measures_raw_piece: bool = False  # a measured text is a raw piece (id_to_piece), which keeps its "▁"
    plus_constant: list[ast.AST] = field(
        default_factory=list
    )  # len(<piece>.encode()) + 1: a byte added by hand

    @property
    def line(self) -> int:
        return self.length_calls[0].lineno if self.length_calls else getattr(self.scope, "lineno", 0)


@dataclass
class SideFileLut:
    unit: CodeUnit
    call: ast.Call  # the loader call
    keys: list[str]  # LUT-looking string keys read from the loaded object


@dataclass
class ByteCodeFacts:
    builders: list[LutBuilder] = field(default_factory=list)
    side_files: list[SideFileLut] = field(default_factory=list)
    caseops_marks: list[tuple[CodeUnit, ast.AST, str]] = field(default_factory=list)
    sidecar_marks: list[tuple[CodeUnit, ast.AST, str]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------------
def _attr(call: ast.AST) -> str | None:
    if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _const_str(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _root_name(node: ast.AST) -> str | None:
    """The local name an expression of string operations is built on: piece[1:].lower() -> piece."""
    while True:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Subscript):
            node = node.value
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            node = node.func.value
        else:
            return None


def _is_strip(node: ast.AST) -> bool:
    """An expression that drops a leading "▁": x[1:], x.lstrip("▁"), x.removeprefix("▁"), x.replace("▁", "")."""
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice):
        low = node.slice.lower
        return isinstance(low, ast.Constant) and low.value == 1 and node.slice.upper is None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        args = node.args
        first = _const_str(args[0]) if args else None
        if node.func.attr in STRIP_METHODS and first is not None and LEADING_SPACE in first:
            return True
        if node.func.attr == "replace" and first is not None and LEADING_SPACE in first and len(args) > 1:
            return _const_str(args[1]) == ""
    return False


def _is_space_to_blank(node: ast.AST) -> bool:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "replace":
        args = node.args
        return (
            len(args) > 1
            and LEADING_SPACE in (_const_str(args[0]) or "")
            and (_const_str(args[1]) or "").strip() == ""
            and _const_str(args[1]) != ""
        )
    return False


def _contains_strip(node: ast.AST) -> bool:
    return any(_is_strip(n) for n in ast.walk(node))


def _len_names(tree: ast.Module) -> frozenset[str]:
    """`len` and its module-level aliases bound once (`D=len`: python-minifier hoists builtins this way), resolved
    by the same module-constant folding the order analysis uses."""
    from auditor.flow.order import module_constants

    return frozenset({"len"} | {k for k, v in module_constants(tree, ast.Name).items() if v == "len"})


def _analyse_scope(
    unit: CodeUnit,
    scope: ast.AST,
    name: str,
    index: NodeIndex,
    len_names: frozenset[str] = frozenset({"len"}),
) -> LutBuilder | None:
    nodes = index.scope_nodes(scope)
    piece_calls = [n for n in nodes if isinstance(n, ast.Call) and _attr(n) in PIECE_METHODS]
    if not piece_calls:
        return None
    # names holding piece text: assigned from a piece call, or from string operations on such a name
    piece_names: set[str] = set()
    raw_names: set[str] = set()
    assigns = [n for n in nodes if isinstance(n, ast.Assign | ast.AnnAssign | ast.NamedExpr)]
    # what an assigned value calls does not change between rounds: read each value's subtree once
    called: dict[int, tuple[bool, bool]] = {}
    for a in assigns:
        if a.value is not None:
            attrs = {_attr(n) for n in ast.walk(a.value) if isinstance(n, ast.Call)}
            called[id(a)] = (bool(attrs & PIECE_METHODS), bool(attrs & RAW_PIECE_METHODS))
    strip_assigns: list[ast.AST] = []
    for _ in range(3):  # a few rounds reach p = sp.id_to_piece(i); q = p[1:]; r = q.lower()
        for a in assigns:
            value = a.value
            targets = a.targets if isinstance(a, ast.Assign) else [a.target]
            if value is None:
                continue
            from_piece, from_raw = called[id(a)]
            from_name = _root_name(value) in piece_names
            if from_piece or from_name:
                for t in targets:
                    if isinstance(t, ast.Name):
                        piece_names.add(t.id)
                        if from_raw or _root_name(value) in raw_names:
                            raw_names.add(t.id)
                if from_name and _contains_strip(value):
                    strip_assigns.append(a)
    b = LutBuilder(unit, scope, name, piece_calls=piece_calls)
    parent_of = {id(c): p for p in nodes for c in ast.iter_child_nodes(p)}  # within this scope only
    parents = parent_of.get
    for n in nodes:
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in len_names and n.args:
            arg = n.args[0]
            if isinstance(arg, ast.Call) and _attr(arg) == "encode":
                text = arg.func.value  # type: ignore[attr-defined]
                if (
                    _root_name(text) in piece_names
                    or any(isinstance(x, ast.Call) and _attr(x) in PIECE_METHODS for x in ast.walk(text))
                ) and _stored_as_table(n, parents, nodes):
                    b.length_calls.append(n)
                    if _root_name(text) in raw_names or any(
                        isinstance(x, ast.Call) and _attr(x) in RAW_PIECE_METHODS for x in ast.walk(text)
                    ):
                        b.measures_raw_piece = True
                    if _contains_strip(text):
                        b.strips.append(text)
        if isinstance(n, ast.Call) and _attr(n) in BYTE_TEST_METHODS:
            b.byte_tests.append(n)
        s = _const_str(n)
        if s is not None:
            if "<0x" in s.lower():
                b.byte_tests.append(n)
            if LEADING_SPACE in s:
                b.mentions_leading_space = True
        if (
            isinstance(n, ast.Call)
            and _attr(n) == "startswith"
            and n.args
            and LEADING_SPACE in (_const_str(n.args[0]) or "")
        ):
            b.leading_space_tests.append(n)
        if isinstance(n, ast.Compare) and any(
            LEADING_SPACE == _const_str(c) for c in [n.left, *n.comparators]
        ):
            b.leading_space_tests.append(n)
        if _is_space_to_blank(n):
            b.space_to_blank.append(n)
    b.strips.extend(strip_assigns)
    measured = {id(c) for c in b.length_calls}
    for n in nodes:
        if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Add):
            sides = (n.left, n.right)
            if any(id(x) in measured for x in sides) and any(
                isinstance(x, ast.Constant) and isinstance(x.value, int) and x.value > 0 for x in sides
            ):
                b.plus_constant.append(n)
    return b if b.length_calls else None


def _stored_as_table(
    length: ast.Call, parents: Callable[[int], ast.AST | None], nodes: list[ast.AST]
) -> bool:
    """The measured length ends up in a per-token table: `t[i] = len(...)`, `out.append(len(...))`, a
    comprehension element, a returned value, or a local that is then stored that way. A length printed in a report
    or packed into a tuple of statistics is not a byte LUT."""
    node: ast.AST = length
    while True:
        parent = parents(id(node))
        if parent is None:
            return False
        if isinstance(parent, ast.Tuple | ast.List | ast.JoinedStr | ast.FormattedValue | ast.Compare):
            return False
        if isinstance(parent, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = parent.targets if isinstance(parent, ast.Assign) else [parent.target]
            if any(isinstance(t, ast.Subscript) for t in targets):
                return True
            names = {t.id for t in targets if isinstance(t, ast.Name)}
            return bool(names) and any(_stores_name(n, names, parents) for n in nodes)
        if isinstance(parent, ast.Return | ast.ListComp | ast.GeneratorExp | ast.DictComp):
            return True
        if isinstance(parent, ast.Call) and _attr(parent) in ("append", "extend", "__setitem__"):
            return True
        if isinstance(parent, ast.stmt):
            return False
        node = parent


def _stores_name(node: ast.AST, names: set[str], parents: Callable[[int], ast.AST | None]) -> bool:
    """`t[i] = <expr using one of names>` or `.append(<expr using it>)` (not inside a tuple)."""
    if isinstance(node, ast.Assign) and any(isinstance(t, ast.Subscript) for t in node.targets):
        value = node.value
    elif isinstance(node, ast.Call) and _attr(node) in ("append", "extend") and node.args:
        value = node.args[0]
    else:
        return False
    if isinstance(value, ast.Tuple | ast.List):
        return False
    return any(isinstance(x, ast.Name) and x.id in names for x in ast.walk(value))


def _side_file_luts(unit: CodeUnit, scope: ast.AST, index: NodeIndex) -> list[SideFileLut]:
    nodes = index.scope_nodes(scope)
    loaded: dict[str, ast.Call] = {}
    for n in nodes:
        pairs: list[tuple[ast.AST, ast.AST]] = []
        if isinstance(n, ast.Assign):
            pairs = [(t, n.value) for t in n.targets]
        elif isinstance(n, ast.With | ast.AsyncWith):
            pairs = [(i.optional_vars, i.context_expr) for i in n.items if i.optional_vars is not None]
        for target, value in pairs:
            if isinstance(target, ast.Name) and isinstance(value, ast.Call) and _is_loader(value):
                loaded[target.id] = value
    out: dict[int, SideFileLut] = {}
    for n in nodes:
        key = None
        if isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name) and n.value.id in loaded:
            key = _const_str(n.slice)
            call = loaded[n.value.id]
        elif (
            isinstance(n, ast.Call)
            and _attr(n) == "get"
            and isinstance(n.func.value, ast.Name)
            and n.func.value.id in loaded
            and n.args
        ):  # type: ignore[attr-defined]
            key = _const_str(n.args[0])
            call = loaded[n.func.value.id]  # type: ignore[attr-defined]
        elif isinstance(n, ast.Subscript) and isinstance(n.value, ast.Call) and _is_loader(n.value):
            key = _const_str(n.slice)
            call = n.value
        if key and LUT_KEY.search(key):
            entry = out.setdefault(id(call), SideFileLut(unit, call, []))
            if key not in entry.keys:
                entry.keys.append(key)
    return list(out.values())


def _is_loader(call: ast.Call) -> bool:
    f = call.func
    if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
        return (f.value.id, f.attr) in LOADERS
    return False


def _has_line_in(lines: list[int], scope: ast.AST) -> bool:
    """Does one of the (sorted) call lines fall inside the scope's line span? A scope whose span holds no piece
    call cannot build a LUT (and none without a loader call reads a side-file LUT): skip its per-node pass."""
    if not lines:
        return False
    if isinstance(scope, ast.Module):
        return True
    first = bisect.bisect_left(lines, scope.lineno)  # type: ignore[attr-defined]
    return first < len(lines) and lines[first] <= (scope.end_lineno or scope.lineno)  # type: ignore[attr-defined]


def analyse_byte_code(ctx: AuditContext) -> ByteCodeFacts:
    """Shared across the byte rules (memoised under "byte_lut_code")."""
    return ctx.memo("byte_lut_code", lambda: _analyse(ctx))


def _analyse(ctx: AuditContext) -> ByteCodeFacts:
    facts = ByteCodeFacts()
    for unit in ctx.parsed_units:
        tree = unit.tree
        assert tree is not None
        index = node_index(ctx, unit)
        scopes: list[tuple[ast.AST, str]] = [(tree, "<module>")]
        scopes += [(n, n.name) for n in index.functions()]
        # a scope can only build a LUT with a piece call in it, and only read a side-file LUT through a loader
        # call: a unit with neither (most layers of most scripts) needs no per-scope pass at all
        calls = index.of_type(ast.Call)
        piece_lines = sorted(c.lineno for c in calls if _attr(c) in PIECE_METHODS)
        loader_lines = sorted(c.lineno for c in calls if _is_loader(c))  # type: ignore[arg-type]
        len_names = _len_names(tree)
        for scope, name in scopes:
            if _has_line_in(piece_lines, scope):
                b = _analyse_scope(unit, scope, name, index, len_names)
                if b is not None:
                    facts.builders.append(b)
            if _has_line_in(loader_lines, scope):
                facts.side_files.extend(_side_file_luts(unit, scope, index))
        for n in index.of_type(ast.Constant, ast.Import, ast.ImportFrom):
            s = _const_str(n)
            if s is None:
                if isinstance(n, ast.Import | ast.ImportFrom):
                    names = [a.name for a in n.names] + (
                        [n.module] if isinstance(n, ast.ImportFrom) and n.module else []
                    )
                    if any(CASEOPS_TEXT.search(x or "") for x in names):
                        facts.caseops_marks.append((unit, n, "import of a lossless-caps (CaseOps) module"))
                continue
            if CASEOPS_TEXT.search(s) or any(ch in s for ch in CASEOPS_SENTINELS):
                facts.caseops_marks.append((unit, n, s[:80]))
            if SIDECAR_TEXT.search(s):
                facts.sidecar_marks.append((unit, n, s[:80]))
    return facts
