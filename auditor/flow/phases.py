"""Which part of the entry flow is training, serialization (quantize/compress/write the artifact) and evaluation.

Recognised by what the code does, not by names:
- an *update* is `.backward()`, `torch.autograd.grad(...)` or an optimizer `.step()` whose receiver is not a
  learning-rate scheduler;
- the *training loop* is the first loop of the entry flow that drives updates over training-shard data (train
  taint); failing that, the last entry call that drives such updates;
- *serialization* is `torch.save` / `pickle.dump` / `np.save` / a codec `compress` / writing a file opened for
  bytes, after training;
- *evaluation* is everything after the last serialization (or after training when nothing is written): the calls
  that deserialize and score.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from auditor.flow import vocab
from auditor.flow.program import CallSite, EntryEvent, Func, program_of
from auditor.flow.taint import train_taint, val_taint

if TYPE_CHECKING:
    from auditor.facts import AuditContext

_SERIALIZERS = vocab.SERIALIZER_CALLS
_COMPRESS_MODULES = vocab.COMPRESS_MODULES
_SCHEDULER_HINTS = vocab.SCHEDULER_HINTS


def is_update(site: CallSite) -> bool:
    """`loss.backward()`, `torch.autograd.grad(...)`, `opt.step()` (not a scheduler)."""
    if site.ext in vocab.BACKWARD_CALLS:
        return True
    attr = site.attr
    if attr == vocab.BACKWARD_ATTR:
        return True
    if attr == vocab.STEP_ATTR and isinstance(site.node.func, ast.Attribute):
        # a learning-rate scheduler's step() is not an update; its receiver is the only hint available
        recv = ast.unparse(site.node.func.value).lower()
        return not any(h in recv for h in _SCHEDULER_HINTS)
    return False


def is_serializer(site: CallSite) -> bool:
    ext = site.ext or ""
    if ext in _SERIALIZERS or ext.endswith(".save") and ext.startswith("torch"):
        return True
    if ext.split(".")[0] in _COMPRESS_MODULES and ext.endswith("compress"):
        return True
    if site.attr == "compress" and ext.split(".")[0] not in ("", "None"):
        return True
    if site.attr in ("write", "write_bytes") and _writes_bytes(site):
        return True
    return False


def is_deserializer(site: CallSite) -> bool:
    """Reading an artifact back: `torch.load`, `pickle.load`, a codec `decompress`."""
    ext = site.ext or ""
    if ext in ("torch.load", "pickle.load", "pickle.loads", "numpy.load", "safetensors.torch.load_file"):
        return True
    return ext.split(".")[0] in _COMPRESS_MODULES and ext.endswith("decompress")


def _writes_bytes(site: CallSite) -> bool:
    """`f.write(blob)` where f comes from `open(..., "wb")` in the same function, or `Path(..).write_bytes`."""
    if site.attr == "write_bytes":
        return True
    recv = site.node.func.value if isinstance(site.node.func, ast.Attribute) else None
    if not isinstance(recv, ast.Name):
        return False
    for n in site.caller.own_nodes():
        if (
            isinstance(n, ast.withitem)
            and isinstance(n.optional_vars, ast.Name)
            and n.optional_vars.id == recv.id
        ):
            return _is_open_wb(n.context_expr)
        if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == recv.id for t in n.targets):
            if _is_open_wb(n.value):
                return True
    return False


def _is_open_wb(e: ast.AST) -> bool:
    if not (isinstance(e, ast.Call) and isinstance(e.func, (ast.Name, ast.Attribute))):
        return False
    name = e.func.id if isinstance(e.func, ast.Name) else e.func.attr
    if name != "open":
        return False
    modes = [a for a in e.args[1:2]] + [k.value for k in e.keywords if k.arg == "mode"]
    return any(
        isinstance(m, ast.Constant)
        and isinstance(m.value, str)
        and "b" in m.value
        and ("w" in m.value or "a" in m.value)
        for m in modes
    )


@dataclass
class Phases:
    events: list[EntryEvent]
    training_loop: ast.AST | None = None
    training_start: int = -1
    training_end: int = -1
    serialization_end: int = -1
    confident: bool = False
    eval_funcs: set[Func] = field(default_factory=set)
    train_funcs: set[Func] = field(default_factory=set)
    _site_phase: dict[int, str] = field(default_factory=dict)

    def phase_of(self, event: EntryEvent) -> str:
        i = event.index
        if self.training_end < 0:
            return "evaluation" if self.serialization_end >= 0 and i > self.serialization_end else "setup"
        if i < self.training_start:
            return "setup"
        if i <= self.training_end:
            return "training"
        if i <= self.serialization_end:
            return "serialization"
        return "evaluation"

    @property
    def eval_events(self) -> list[EntryEvent]:
        return [e for e in self.events if self.phase_of(e) == "evaluation"]

    def phase_of_site(self, site: CallSite) -> str | None:
        """Phase of an entry-flow call site (None when the site is not on the entry sequence)."""
        return self._site_phase.get(id(site.node))


def _compute(ctx: AuditContext) -> Phases:
    prog = program_of(ctx)
    events = prog.entry_sequence()
    ph = Phases(events)
    drivers = (
        prog.inlined_driver_sites()
    )  # calls whose bodies are inlined: their subtree is every phase at once
    tt = train_taint(ctx)
    vt = val_taint(ctx)

    def reach_of(ev: EntryEvent) -> set[Func]:
        return prog.called_under(ev.site)

    # what each function does itself, computed once (events ask about whole call trees many times)
    flags: dict[Func, tuple[bool, bool, bool]] = {}

    def flag(f: Func, i: int) -> bool:
        got = flags.get(f)
        if got is None:
            got = flags[f] = (
                any(is_update(s) for s in f.calls),
                any(is_serializer(s) for s in f.calls),
                any(is_deserializer(s) for s in f.calls),
            )
        return got[i]

    def drives_updates(ev: EntryEvent) -> bool:
        if is_update(ev.site):
            return True
        return id(ev.site.node) not in drivers and any(flag(f, 0) for f in reach_of(ev))

    engine = tt.engine

    def consumes(ev: EntryEvent, view) -> bool:
        """The call takes or yields the data itself: an argument or its result carries it directly. A config
        object that merely holds a shard pattern among its fields does not count."""
        node = ev.site.node
        exprs = [node, *node.args, *[k.value for k in node.keywords]]
        for c in engine.ctxs.get(ev.site.caller, []):
            for x in exprs:
                av = c.node_avs.get(id(x))
                if av is not None and view.kind in av.kind_set:
                    return True
        return False

    # 1. the training loop: the first loop holding updates and train-data consumption
    loops_seen: list[ast.AST] = []
    for ev in events:
        for lp in ev.loops:
            if lp not in loops_seen:
                loops_seen.append(lp)
    for lp in loops_seen:  # warmup loops and the main loop all qualify: training spans first .. last
        inside = [e for e in events if lp in e.loops]
        if not any(consumes(e, tt) and drives_updates(e) for e in inside) and not (
            any(drives_updates(e) for e in inside) and any(consumes(e, tt) for e in inside)
        ):
            continue
        if any(consumes(e, vt) and drives_updates(e) for e in inside) and not any(
            consumes(e, tt) and drives_updates(e) for e in inside
        ):
            continue  # an update loop over validation data is test-time training, not training
        writes = [e.index for e in inside if is_serializer(e.site)]
        if (
            writes
            and any(is_deserializer(e.site) and e.index > min(writes) for e in inside)
            and any(e.loops.index(lp) < len(e.loops) - 1 and drives_updates(e) for e in inside)
        ):
            continue  # a per-seed driver loop (train, write, reload, score each time): the training loop is inside
        first = min(e.index for e in inside)
        if ph.training_end >= 0 and any(
            is_serializer(e.site) and ph.training_end < e.index < first for e in events
        ):
            continue  # updates after the artifact was written: test-time training, not training
        ph.training_loop = lp
        start, end = min(e.index for e in inside), max(e.index for e in inside)
        ph.training_start = start if ph.training_start < 0 else min(ph.training_start, start)
        ph.training_end = max(ph.training_end, end)
        ph.confident = True
    if ph.training_loop is None:  # a training call that is not inlined (e.g. called twice)
        cands = [
            e
            for e in events
            if drives_updates(e)
            and (
                consumes(e, tt)
                or any(
                    tt.is_tainted(f.unit, s.node, f)
                    for f in reach_of(e)
                    for s in f.calls[:200]
                    if is_update(s)
                )
            )
        ]
        if cands:
            ph.training_start = cands[0].index
            ph.training_end = cands[0].index
            ph.confident = True
    # warmup/compile steps before the loop are training too
    if ph.training_start > 0:
        for e in events[: ph.training_start]:
            if drives_updates(e) and consumes(e, tt):
                ph.training_start = e.index
                break
    # 2. serialization: the last artifact write after training and before the artifact is read back (or, when
    # it never is, before the last val-consuming event)
    after = ph.training_end
    first_load = next(
        (
            e.index
            for e in events
            if e.index > after
            and id(e.site.node) not in drivers
            and (is_deserializer(e.site) or any(flag(f, 2) for f in reach_of(e)))
        ),
        None,
    )
    last_val = max(
        (
            e.index
            for e in events
            if e.index > after
            and id(e.site.node) not in drivers
            and (
                consumes(e, vt)
                or any(vt.is_tainted(f.unit, s.node, f) for f in reach_of(e) for s in f.calls[:50])
            )
        ),
        default=len(events),
    )
    stop = first_load if first_load is not None else last_val
    for e in events:
        if e.index <= after or e.index >= stop or id(e.site.node) in drivers:
            continue
        if is_serializer(e.site) or any(flag(f, 1) for f in reach_of(e)):
            ph.serialization_end = e.index
    for e in events:
        ph._site_phase[id(e.site.node)] = ph.phase_of(e)
    for e in events:
        phase = ph.phase_of(e)
        target = ph.eval_funcs if phase == "evaluation" else ph.train_funcs if phase == "training" else None
        if target is not None and e.site.callees:
            target |= reach_of(e)
    return ph


def phases_of(ctx: AuditContext) -> Phases:
    return ctx.memo(("flow", "phases"), lambda: _compute(ctx))


def update_sites(func: Func) -> list[CallSite]:
    return [s for s in func.calls if is_update(s)]
