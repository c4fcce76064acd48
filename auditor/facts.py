"""Facts about a submission that every rule reads: decoded code units, one parsed tree per unit, and a memo of
shared analyses (call graph, gates, taint, log tables...) computed once and reused by every rule.

Why `ast` and not libcst for the shared tree: measured on a 1,900-line record script, libcst parses in 0.40 s and
its PositionProvider needs another 0.35 s, one visitor pass 0.15 s; the stdlib `ast` parses the same file in
0.03 s with line/column ranges included. The audit must stay well inside 2x libcst's parse time, so analyses run on
`ast`. libcst is used where a lossless concrete tree is the point (identifier renaming that keeps every line where it
was, in `auditor.rename`).
"""

from __future__ import annotations

import ast
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from auditor.deadline import Deadline
from auditor.deadline import current as current_deadline
from auditor.findings import Location, UnpackedLayer
from auditor.submission import Submission

T = TypeVar("T")

MAX_PARSE_BYTES = 20 * 1024 * 1024


@dataclass
class CodeUnit:
    """One analysable piece of Python: a shipped file, or a layer decoded out of one."""

    path: str  # the shipped file it comes from
    name: str  # path for plain files; "path#L1" (then #L2...) for decoded layers
    text: str
    layer: UnpackedLayer | None = None
    tree: ast.Module | None = None
    parse_error: str | None = None
    lines: list[str] = field(default_factory=list)
    parse_error_line: int = 0

    @property
    def is_decoded(self) -> bool:
        return self.layer is not None

    def location(self, node: ast.AST | None = None, line: int = 0, col: int = 0) -> Location:
        """A Location in this unit's coordinates (decoded coordinates for decoded layers)."""
        if node is not None and hasattr(node, "lineno"):
            line = node.lineno  # type: ignore[attr-defined]
            col = node.col_offset + 1  # type: ignore[attr-defined]
            end_line = getattr(node, "end_lineno", None) or line
            end_col = (getattr(node, "end_col_offset", None) or 0) + 1
        else:
            end_line, end_col = line, col
        snippet = self.lines[line - 1].strip()[:240] if 0 < line <= len(self.lines) else ""
        return Location(
            path=self.path,
            line=line,
            col=col,
            end_line=end_line,
            end_col=end_col,
            layer=self.name if self.is_decoded else None,
            snippet=snippet,
        )


def parse_unit(unit: CodeUnit) -> None:
    unit.lines = unit.text.splitlines()
    if unit.tree is not None:
        return  # parsed already while unpacking (the same text; the unpacker never changes a tree)
    if len(unit.text) > MAX_PARSE_BYTES:
        unit.parse_error = f"{unit.name}: {len(unit.text)} characters is over the parse limit; not analysed"
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarnings from odd escapes in submission code
            unit.tree = ast.parse(unit.text, filename=unit.name)
    except SyntaxError as exc:
        unit.parse_error = f"{unit.name}:{exc.lineno or 0}:{exc.offset or 0}: cannot parse: {exc.msg}"
        unit.parse_error_line = exc.lineno or 0
    except (ValueError, RecursionError, MemoryError) as exc:
        unit.parse_error = f"{unit.name}: cannot parse: {type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class Problem:
    """A file or layer the auditor could not read, decode or parse (PG001 reports each as a WARN)."""

    path: str  # shipped file ("" for submission-wide problems)
    line: int
    message: str
    layer: str | None = None  # decoded layer the line refers to

    def location(self) -> Location | None:
        return Location(path=self.path, line=self.line, layer=self.layer) if self.path else None


@dataclass
class AuditContext:
    submission: Submission
    units: list[CodeUnit] = field(default_factory=list)
    layers: list[UnpackedLayer] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    _memo: dict[Any, Any] = field(default_factory=dict)
    # Tables a rule publishes for the report (e.g. the per-seed log table); the engine copies them, nothing else.
    tables: dict[str, Any] = field(default_factory=dict)
    # Shared analyses that stopped at a size cap (e.g. the call walk's visit limit). A rule that used one and found
    # nothing must not PASS on it: the engine turns that into a WARN naming the cap.
    cut_short: list[str] = field(default_factory=list)

    @property
    def entry_unit(self) -> CodeUnit | None:
        """The innermost decoded layer of the entry script (what actually runs), else the entry file itself."""
        entry = self.submission.entry
        if entry is None:
            return None
        mine = [u for u in self.units if u.path == entry]
        return mine[-1] if mine else None

    @property
    def parsed_units(self) -> list[CodeUnit]:
        return [u for u in self.units if u.tree is not None]

    def unit(self, name: str) -> CodeUnit | None:
        for u in self.units:
            if u.name == name:
                return u
        return None

    @property
    def deadline(self) -> Deadline | None:
        """The running audit's time budget (auditor/deadline.py). Long loops call `deadline.poll(what)` (cheap,
        throttled) or `ctx.deadline.check(what)`; when it is spent they raise BudgetExceeded and the engine WARNs."""
        return current_deadline()

    def memo(self, key: Any, compute: Callable[[], T]) -> T:
        """Compute a shared analysis once per audit (rules call this with a stable key)."""
        if key not in self._memo:
            deadline = current_deadline()  # a shared analysis is where the time goes: check the budget first
            if deadline is not None:
                parts = key if isinstance(key, tuple) else (key,)
                deadline.check("analysis " + ".".join(str(k) for k in parts if isinstance(k, str)))
            self._memo[key] = compute()
        return self._memo[key]

    def publish_table(self, name: str, table: Any) -> None:
        """Attach a table to the report under `tables[name]` (an object with `to_dict()`, or JSON-able data).
        Publishing the same name twice keeps the last table: tables are results, not accumulators."""
        self.tables[name] = table


def build_context(submission: Submission) -> AuditContext:
    """Read, unpack and parse every code file of the submission; nothing is executed."""
    from auditor.unpack import unpack_source

    ctx = AuditContext(submission=submission)
    for problem in submission.load_problems:
        ctx.problems.append(Problem("", 0, problem))
    deadline = current_deadline()
    for path in submission.code_paths:
        if deadline is not None and deadline.expired():  # no raise here: what was loaded is still audited
            deadline.note_cut(f"reading {path}")
            ctx.problems.append(Problem(path, 0, f"{path}: not analysed: the audit's time budget ran out"))
            continue
        text, problem = submission.files[path].text()
        if text is None:
            ctx.problems.append(Problem(path, 0, problem or f"{path}: unreadable"))
            continue
        outcome = unpack_source(path, text, read_file=submission.read_text)
        for unit in outcome.units:
            parse_unit(unit)
            if unit.parse_error:
                ctx.problems.append(
                    Problem(
                        unit.path,
                        unit.parse_error_line,
                        unit.parse_error,
                        unit.name if unit.is_decoded else None,
                    )
                )
            ctx.units.append(unit)
        ctx.layers.extend(outcome.layers)
        for line, message in outcome.problems:
            ctx.problems.append(Problem(path, line, message))
    _drop_files_included_by_exec(ctx)
    return ctx


def _drop_files_included_by_exec(ctx: AuditContext) -> None:
    """A sibling file run through `exec(open(...).read())` is analysed as a layer of the file that runs it (so the
    call graph starts at the entry); its standalone copy would report every finding twice."""
    included = {
        u.text
        for u in ctx.units
        if u.layer is not None and any(c.startswith("file:") for c in u.layer.codecs)
    }
    if included:
        ctx.units = [u for u in ctx.units if u.layer is not None or u.text not in included]
