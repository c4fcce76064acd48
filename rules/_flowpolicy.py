"""The run-command policy (auditor/flow/API.md "Run commands") as the flow rules apply it to one finding.

The documented configuration is what runs: a construct under a gate that runs as documented is judged like
default-on code (FAIL where illegal, the message naming the command or log), one that does not run is information,
and only a gate the documented sources disagree on (`Gate.contested`) leaves a WARN.
"""

from __future__ import annotations

from dataclasses import dataclass

from auditor.flow.model import Gate
from auditor.flow.walk import Visit


@dataclass(frozen=True)
class Outcome:
    state: str  # "live" | "off" | "contested"
    note: str = ""  # the gate and the command/log that decided it ("" when it runs by default)


def _decide(gates: list[Gate], first_off: Gate | None, runs: bool) -> Outcome:
    off = next((g for g in gates if g.off_by_command), None)
    if not runs or off is not None:
        g = first_off if first_off is not None and not first_off.runs else off
        return Outcome("off", g.describe() if g is not None else "")
    contested = next((g for g in gates if g.contested), None)
    if contested is not None:
        return Outcome("contested", contested.describe())
    on = next((g for g in gates if g.by_command), None)
    return Outcome("live", f"runs as documented: {on.describe()}" if on is not None else "")


def visit_outcome(v: Visit) -> Outcome:
    """A walked call site: its first default-off gate and every gate on its call chain."""
    gates = ([v.gate] if v.gate is not None else []) + [g for s in v.chain for g in s.gates]
    return _decide(gates, v.gate, v.live)


def reach_outcome(r, sites) -> Outcome:
    """A site judged by `Reach` (`r`, already through its caller chain) and the call sites leading to it."""
    gates = ([r.gate] if r.gate is not None else []) + [g for s in sites if s is not None for g in s.gates]
    return _decide(gates, r.gate, r.live)
