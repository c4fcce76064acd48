"""The per-folder time budget of an audit.

A hostile or merely enormous submission (one PR head ships 57 full-size training scripts in one record folder) must
not hold a sweep, the PR bot or CI for minutes. The engine gives every audit a `Deadline`; it checks it between
rules, and long analyses poll it through the cheap module-level `poll(what)` (no context object needed, so deep
loops in the flow modules can call it). When the budget is spent, `poll` raises `BudgetExceeded` naming what was
running; the engine turns that into a WARN on the rule that was cut short and on every rule not run, and the
report says which analyses were cut (`Deadline.cut`). A verdict is never PASS because time ran out.

Cost: `poll` is a counter increment; every 64th call it also reads the ContextVar and the process CPU clock, so it
can sit in a hot loop.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

# CPU seconds per record folder. Measured over PR-head folders: median ~1 s, p95 ~2.6 s; the slowest seen, 57
# full-size scripts in one folder, needs ~54 s and is cut. PGOLF_TIME_BUDGET_S overrides it (0 = no budget).
DEFAULT_BUDGET_S = 30.0


def default_budget_s() -> float | None:
    raw = os.environ.get("PGOLF_TIME_BUDGET_S", "").strip()
    if not raw:
        return DEFAULT_BUDGET_S
    try:
        value = float(raw)
    except ValueError:
        return DEFAULT_BUDGET_S
    return value if value > 0 else None


def _clock() -> float:
    """CPU seconds of this process: the budget bounds the work, so a folder gets the same verdict on an idle
    machine and on a shared one under load (wall time would cut more on a busy CI runner). One seam for tests."""
    return time.process_time()


class BudgetExceeded(BaseException):
    """The audit's time budget ran out while `what` was running.

    A BaseException, like KeyboardInterrupt: analyses that guard their own work with `except Exception` must not
    swallow it (the engine catches it by name around each rule)."""

    def __init__(self, what: str, budget_s: float) -> None:
        super().__init__(f"the {budget_s:g}-s CPU-time budget of this audit ran out during {what}")
        self.what = what
        self.budget_s = budget_s


@dataclass
class Deadline:
    budget_s: float | None  # None: no limit
    start: float = field(default_factory=lambda: _clock())
    cut: list[str] = field(default_factory=list)  # what was cut short or not run, in order
    grace_s: float = 0.0  # extra time granted once the budget is spent, for the cheap log/claims rules

    @property
    def at(self) -> float:
        return float("inf") if self.budget_s is None else self.start + self.budget_s + self.grace_s

    def spent(self) -> bool:
        """The budget itself is used up (a grace granted since does not count)."""
        return self.budget_s is not None and _clock() > self.start + self.budget_s

    def grant_grace(self) -> None:
        """Once: a fifth of the budget (at least 5 s) from now, so the log and claims rules, which read numbers,
        not code, still run after the code analyses spent the budget."""
        if self.budget_s is not None and not self.grace_s:
            overrun = max(0.0, _clock() - self.start - self.budget_s)
            self.grace_s = overrun + max(5.0, 0.2 * self.budget_s)

    def elapsed(self) -> float:
        return _clock() - self.start

    def expired(self) -> bool:
        return self.budget_s is not None and _clock() > self.at

    def check(self, what: str) -> None:
        """Raise BudgetExceeded if the budget is spent (unthrottled: for loops that run a few times)."""
        if self.expired():
            raise BudgetExceeded(what, self.budget_s or 0.0)

    def note_cut(self, what: str) -> None:
        if what not in self.cut:
            self.cut.append(what)


_CURRENT: ContextVar[Deadline | None] = ContextVar("pgolf_audit_deadline", default=None)
_calls = 0


def poll(what: str) -> None:
    """Cheap check for hot loops: raise BudgetExceeded when the running audit's budget is spent."""
    global _calls
    _calls += 1
    if _calls & 63:
        return
    d = _CURRENT.get()
    if d is not None and d.budget_s is not None and _clock() > d.at:
        raise BudgetExceeded(what, d.budget_s)


def current() -> Deadline | None:
    return _CURRENT.get()


@contextmanager
def active(deadline: Deadline) -> Iterator[Deadline]:
    """Make `deadline` the one `poll` checks, for the duration of one audit."""
    token = _CURRENT.set(deadline)
    try:
        yield deadline
    finally:
        _CURRENT.reset(token)
