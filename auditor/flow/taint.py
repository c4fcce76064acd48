"""Data-origin taint: which values are derived from validation shards (or training shards).

Sources are recognised by the data they name, never by variable names: a string constant (or f-string part)
spelling a shard pattern (`fineweb_val_*.bin`, `..._val_000.bin`) starts a taint, and it follows every derivation:
assignments, tuple unpacking, attribute and container aliases, slices/indexing/`.to()`/arithmetic, calls into the
submission's own functions (arguments bound to parameters by position and keyword, return values back), objects
built from tainted arguments (`Loader(val_pattern)`), and activations captured by forward hooks.

The analysis is context-sensitive by argument taint (one analysis of a function per distinct taint signature of its
arguments), flow-insensitive inside a function, and field-sensitive for objects whose construction is visible
(`args.val_files` is tainted, `args.lr` is not). Each tainted value keeps one witness path source -> here.
"""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING

from auditor.findings import FlowStep
from auditor.flow.program import Func, program_of
from auditor.flow.taint_engine import Ctx, TaintEngine
from auditor.flow.taint_values import (  # noqa: F401 - re-exported: rules import the value domain from here
    AV,
    CALIBRATION_STEPS,
    CONTENT,
    EMPTY,
    FAMILY,
    FIT_STEP,
    FORWARD_STEP,
    GRAM_STEP,
    HOOK_STEP,
    LOSS_STEP,
    PATH_OF,
    TRAIN,
    TRAIN_PATH,
    VAL,
    VAL_FIT,
    VAL_OUT,
    VAL_PATH,
    VAL_STAT,
    deep_path,
    join,
)

if TYPE_CHECKING:
    from auditor.facts import AuditContext


class TaintView:
    """Queries for one data family (val or train). Function arguments accept a Func or a qualname.

    By default shard *content* counts: what a reader returned, what is copied from it, and what a model, a loss
    or a calibration computed from it (`val`, `val-out`, `val-stat`); with `names=True` the shard names (patterns,
    file lists) count too, e.g. to ask "is this read opening val shards". `provenance=` picks the kinds exactly
    (e.g. `(VAL,)`: raw content only, as a "paid prefix" needs; `(VAL_STAT,)`: calibration statistics;
    `(VAL_FIT,)`: values selected by comparing val-derived values). `kinds_of(av)` answers which ones a value has.
    """

    def __init__(
        self, engine: TaintEngine, kind: str, names: bool = False, provenance: tuple[str, ...] | None = None
    ):
        self.engine, self.kind = engine, kind
        if provenance is not None:
            self.kinds = tuple(provenance)
        else:
            self.kinds = CONTENT[kind] + ((PATH_OF[kind],) if names else ())
        self.prog = engine.prog

    def kinds_of(self, av: AV) -> frozenset[str]:
        """The provenance kinds of this view's family that `av` carries (fields and items included)."""
        return av.deep_kinds() & frozenset(FAMILY[self.kind])

    def only(self, *kinds: str) -> TaintView:
        """The same analysis, asking for exactly these provenance kinds."""
        return TaintView(self.engine, self.kind, provenance=kinds)

    @property
    def incomplete(self) -> bool:
        """True when the context budget was hit somewhere (results may miss flows)."""
        return self.engine._budget_hit

    def _func(self, unit, func) -> Func | None:
        un = unit if isinstance(unit, str) else unit.name
        if isinstance(func, Func):
            return func
        if isinstance(func, str):
            return self.prog.func(un, func)
        return None

    def av(self, unit, expr: ast.AST, func) -> AV:
        f = self._func(unit, func)
        if f is None:
            f = self.prog.enclosing_func(unit, expr)
        if f is None:
            return EMPTY
        out = EMPTY
        for _, av in self.engine.av_at(f, expr):
            out = join(out, av)
        return out

    def is_tainted(self, unit, expr: ast.AST, func=None) -> bool:
        return not self.av(unit, expr, func).deep_kinds().isdisjoint(self.kinds)

    def tainted_in(self, ctx: Ctx, expr: ast.AST) -> bool:
        return not self.engine.av_in(ctx, expr).deep_kinds().isdisjoint(self.kinds)

    def holds(self, av: AV) -> bool:
        return not av.deep_kinds().isdisjoint(self.kinds)

    def contexts(self, func) -> list[Ctx]:
        f = func if isinstance(func, Func) else None
        return list(self.engine.ctxs.get(f, [])) if f else []

    def path(self, unit, expr: ast.AST, func=None, sink_message: str = "") -> list[FlowStep]:
        av = self.av(unit, expr, func)
        return self.path_of(av, unit, expr, sink_message)

    def path_in(self, ctx: Ctx, expr: ast.AST, sink_message: str = "") -> list[FlowStep]:
        return self.path_of(self.engine.av_in(ctx, expr), ctx.func.unit, expr, sink_message)

    def path_of(self, av: AV, unit, expr: ast.AST, sink_message: str = "") -> list[FlowStep]:
        steps = None
        for kind in self.kinds:
            steps = deep_path(av, kind)
            if steps is not None:
                break
        out = [FlowStep(u.location(n), msg) for u, n, msg in (steps or ())]  # type: ignore[attr-defined]
        if sink_message and not isinstance(unit, str):
            out.append(FlowStep(unit.location(expr), sink_message))
        return out


def taint_engine(ctx: AuditContext) -> TaintEngine:
    return ctx.memo(("flow", "taint"), lambda: TaintEngine(program_of(ctx)))


def val_taint(ctx: AuditContext, names: bool = False, provenance: tuple[str, ...] | None = None) -> TaintView:
    return TaintView(taint_engine(ctx), VAL, names, provenance)


def train_taint(ctx: AuditContext, names: bool = False) -> TaintView:
    return TaintView(taint_engine(ctx), TRAIN, names)
