"""Walk the call tree under entry-flow events, in taint contexts: "what runs (and with which data) from here".

`walk_events(ctx, events)` yields every call site executed under the given entry events (depth-first, each
(site, taint context) once), with the chain of call sites that leads there and the first default-off gate on the
way. Rules use it to ask, e.g., "which network calls run during evaluation" or "which `.backward()` runs in the
training phase on validation-derived data", and to print the call chain as a flow.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from auditor.deadline import poll
from auditor.findings import FlowStep
from auditor.flow.program import CallSite, EntryEvent, Gate, program_of
from auditor.flow.taint import Ctx, taint_engine

if TYPE_CHECKING:
    from auditor.facts import AuditContext

_MAX_VISITS = 30000


@dataclass(frozen=True)
class Visit:
    site: CallSite
    ctx: Ctx | None  # taint context of the function holding the site (None: never analysed)
    chain: tuple[CallSite, ...]  # entry event site first, this site last
    gate: Gate | None  # first gate on the chain that is off by default (None: runs by default)
    event: EntryEvent
    ctx_chain: tuple[Ctx | None, ...] = ()  # taint context of each chain site's function

    def chain_from(self, k: int, message: str) -> list[FlowStep]:
        """Call-chain steps from chain[k] (inclusive) down to this site."""
        steps = [FlowStep(s.unit.location(s.node), f"calls {_callee_text(s)}") for s in self.chain[k:-1]]
        steps.append(FlowStep(self.site.unit.location(self.site.node), message))
        return steps

    @property
    def live(self) -> bool:
        """Runs under the documented configuration (see API.md "Run commands")."""
        return self.gate is None or self.gate.runs

    @property
    def by_command(self) -> bool:
        """Runs only because the documented configuration (a README / *.sh run command, or the log) turns a
        default-off flag on."""
        return self.gate is not None and self.gate.by_command

    @property
    def off_by_command(self) -> Gate | None:
        """A gate on the way that is on by default but that the documented configuration turns off."""
        if self.gate is not None and self.gate.off_by_command:
            return self.gate
        return next((g for s in self.chain for g in s.gates if g.off_by_command), None)

    @property
    def command_disagrees(self) -> Gate | None:
        """The gate on which the defaults and a documented run command disagree (either way), if any."""
        if self.by_command:
            return self.gate
        return self.off_by_command

    def chain_flow(self, message: str) -> list[FlowStep]:
        steps = [FlowStep(s.unit.location(s.node), f"calls {_callee_text(s)}") for s in self.chain[:-1]]
        steps.append(FlowStep(self.site.unit.location(self.site.node), message))
        return steps


def _callee_text(site: CallSite) -> str:
    if site.callees:
        return site.callees[0].qualname + "()"
    return (site.ext or "?") + "()"


def walk_events(ctx: AuditContext, events: list[EntryEvent]) -> Iterator[Visit]:
    prog = program_of(ctx)
    engine = taint_engine(ctx)
    seen: set[tuple[int, int]] = set()
    visits = 0
    drivers = prog.inlined_driver_sites()
    for ev in events:
        caller_ctxs = engine.ctxs.get(ev.site.caller) or [None]
        for cctx in caller_ctxs:
            stack: list[tuple[CallSite, Ctx | None, tuple[CallSite, ...], Gate | None, tuple]] = [
                (ev.site, cctx, (ev.site,), ev.gate, (cctx,))
            ]
            while stack:
                poll("the call walk from phase events")  # the hottest loop on huge folders (issue 11)
                site, sctx, chain, gate, cchain = stack.pop()
                # a site first reached under a gate that does not run is visited again when a path that runs
                # reaches it (one helper called from both branches of a default-off flag)
                key = (id(site.node), id(sctx), gate is None or gate.runs)
                if key in seen:
                    continue
                seen.add(key)
                visits += 1
                if visits > _MAX_VISITS:
                    ctx.cut_short.append(f"the call walk stopped after {_MAX_VISITS:,} call sites")
                    return
                via = chain[-2] if len(chain) > 1 else (ev.via[-1] if ev.via else None)
                g = gate or prog.site_gate(site, via)  # parameter gates decided by the call that got here
                yield Visit(site, sctx, chain, g, ev, cchain)
                if site is ev.site and id(site.node) in drivers:
                    continue  # an inlined driver: its body's sites are events of their own
                for callee in site.callees[:6]:
                    cc = engine.edges.get((id(sctx), id(site.node), callee)) if sctx is not None else None
                    if cc is None:
                        got = engine.ctxs.get(callee)
                        cc = got[0] if got else None
                    for inner in sorted(callee.calls, key=lambda s: -s.order):
                        stack.append((inner, cc, chain + (inner,), g, cchain + (cc,)))
