"""Queries over the order analysis's events that rules ask (PG201/PG202/PG203): is an event behind a default-off
gate (shared program), does dynamic dispatch defeat the path, where does an update's validation data come from,
what never-called functions would do, is an event part of training (monitoring evals), and the update-before-score
judgement itself (`update_order`)."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from auditor.findings import FlowStep, Location
from auditor.flow.events import VAL, Event, common_loops, exclusive, loop_var_guard, same_invocation
from auditor.flow.order import _program, analyse_order, analysis_units
from auditor.flow.order_index import FuncInfo
from auditor.flow.positions import compare_positions, is_data_loop, rows_scored_separately
from auditor.flow.syntax import assigned_names, simple_statements
from auditor.flow.updates import classify_update

if TYPE_CHECKING:
    from auditor.facts import AuditContext


# ----------------------------------------------------------------------------------------------------------------
# Feature gates and defeated analysis, from the shared flow layer (auditor.flow.program)
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GateOff:
    """Why an event does not run under the defaults: the deciding `if` and its description."""

    test: str
    reason: str


def gate_off(ctx: AuditContext, ev: Event) -> GateOff | None:
    """The default-off gate on the path to `ev`: a hop of its call chain or its own statement that the shared flow
    layer decides is off under the defaults (and that no README/*.sh run command turns on), else None."""
    prog = _program(ctx)
    if prog is None:
        return None
    reaches = []
    hops: list[ast.AST] = []
    for call, _caller in ev.chain:
        site = prog.site_of(call) if isinstance(call, ast.Call) else None
        if site is not None:
            reaches.append(prog.site_reach(site))
            hops.append(call)
    reaches.append(prog.reach(ev.func.unit, ev.node))
    hops.append(ev.node)
    overridden = ctx.memo("flow.order.overridden_attrs", lambda: _attrs_set_at_run_time(ctx))
    ran: set[int] = set()  # gates the logs show ran (the hops inside report the same gate again)
    for r, hop in zip(reaches, hops):
        if r.status == "gated_off" and (r.gate is None or _plausible_gate(prog, r.gate, overridden)):
            if r.gate is not None and (
                id(r.gate.test) in ran or _branch_output_logged(ctx, prog, r.gate, hop)
            ):
                ran.add(id(r.gate.test))
                continue  # the shipped logs carry the branch's own output: it ran in the scored run
            test = ast.unparse(r.gate.test) if r.gate is not None else ""
            return GateOff(test=test, reason=r.reason)
    return None


_MIN_LOG_PREFIX = 10  # a shorter literal ("ttt:", "val_bpb") is too generic to say which branch printed it


def _branch_output_logged(ctx: AuditContext, prog, gate, hop: ast.AST) -> bool:  # noqa: ANN001 - flow types
    """Do the shipped logs contain a line that only the gated branch prints? A default-off `if` whose own
    `print`/`log(...)` message (the literal head of its string or f-string, e.g. "lora_ttt:starting rank=") starts a
    line of a log ran in the logged run, whatever the defaults say; the logs show what produced the score (the
    documented configuration's first source). Used only for the gate whose arm holds the hop itself, and only
    where the logs print no value of the gate's variables (those decide, through `Gate.runs`)."""
    if gate.logged is not None:
        return False
    func = prog.enclosing_func(gate.unit, gate.test)
    node = getattr(func, "node", None)
    if node is None:
        return False
    arm: list[ast.stmt] = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.If) and sub.test is gate.test:
            arm = sub.body if gate.branch == "body" else sub.orelse
            break
    if not any(n is hop for st in arm for n in ast.walk(st)):
        return False  # the hop sits under a further branch of the arm
    texts = ctx.memo("flow.order.log_texts", lambda: _log_texts(ctx))
    names = {n.attr for n in ast.walk(gate.test) if isinstance(n, ast.Attribute)}
    bases = {id(n.value) for n in ast.walk(gate.test) if isinstance(n, ast.Attribute)}  # `args` of `args.x`
    names |= {n.id for n in ast.walk(gate.test) if isinstance(n, ast.Name) and id(n) not in bases}
    names |= set(gate.env_vars)
    if any(re.search(rf"(?<![\w.]){re.escape(v)}\s*[:=]", t, re.IGNORECASE) for v in names for t in texts):
        return False  # the logs print the gate's settings: they, not a message, say whether it ran
    heads = {h for st in arm for h in _message_heads(st)}
    if not heads:
        return False
    inside = {id(n) for st in arm for n in ast.walk(st)}
    heads -= _message_heads(node, skip=inside)  # printed on the other paths of the function too: no evidence
    return any(("\n" + h) in text or text.startswith(h) for h in heads for text in texts)


def _message_heads(tree: ast.AST, skip: frozenset[int] | set[int] = frozenset()) -> set[str]:
    """Literal heads of the messages that calls under `tree` print (first argument a string or f-string)."""
    out: set[str] = set()
    for sub in ast.walk(tree):
        if not isinstance(sub, ast.Call) or not sub.args or id(sub) in skip:
            continue
        arg = sub.args[0]
        head = ""
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            head = arg.value
        elif isinstance(arg, ast.JoinedStr) and arg.values:
            first = arg.values[0]
            head = first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else ""
        head = head.lstrip()
        if len(head) >= _MIN_LOG_PREFIX and any(c.isalpha() for c in head) and "\n" not in head:
            out.add(head)
    return out


def _log_texts(ctx: AuditContext) -> list[str]:
    out: list[str] = []
    sub = ctx.submission
    for path in sub.log_paths:
        text, _ = sub.files[path].text()
        if text:
            out.append(text)
    return out


def _attrs_set_at_run_time(ctx: AuditContext) -> set[str]:
    """Attribute names that code outside `__init__` assigns (`config.eval.ngram_enabled = True` in a profile
    function): a setting's class default does not decide such a gate."""
    out: set[str] = set()
    for unit in analysis_units(ctx):
        for node in ast.walk(unit.tree):  # type: ignore[arg-type]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name != "__init__":
                for sub in ast.walk(node):
                    if isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Store):
                        out.add(sub.attr)
    return out


def _plausible_gate(prog, gate, overridden: set[str]) -> bool:  # noqa: ANN001 - flow.program types
    """A default-off decision is trusted when it rests on settings, not on a local that the code fills at run time
    (`all_hidden = []` then `.append(...)` in a loop reads as "empty" statically but is not at run time), nor on a
    setting that code overrides at run time."""
    if any(isinstance(n, ast.Attribute) and n.attr in overridden for n in ast.walk(gate.test)):
        return False
    if getattr(gate, "env_vars", ()):
        return True
    func = prog.enclosing_func(gate.unit, gate.test)
    body = list(getattr(getattr(func, "node", None), "body", []))
    if not body:
        return True
    defs: dict[str, int] = {}
    runtime: set[str] = set()
    for st in simple_statements(body):
        for n in assigned_names(st):
            defs[n] = defs.get(n, 0) + 1
            if not isinstance(st, ast.Assign) or isinstance(st, (ast.For, ast.AsyncFor)):
                runtime.add(n)
    names = {n.id for n in ast.walk(gate.test) if isinstance(n, ast.Name)}
    return not any(n in runtime or defs.get(n, 0) > 1 for n in names)


def defeated_on_path(ctx: AuditContext, events: list[Event]) -> list[tuple[Location, str]]:
    """Dynamic dispatch / exec of generated code in a live function that leads to scoring or to an update."""
    prog = _program(ctx)
    if prog is None:
        return []
    on_path: set[int] = set()
    for ev in events:
        if ev.kind in ("score", "update") and ev.is_val:
            on_path.add(id(ev.func.node))
            on_path.update(id(fi.node) for _, fi in ev.chain)
    out: list[tuple[Location, str]] = []
    for loc, reason, func in prog.defeated:
        if id(func.node) in on_path and prog.func_reach(func).live:
            out.append((loc, reason))
    return out


def source_path(ctx: AuditContext, ev: Event) -> list[FlowStep]:
    """Where the validation data in an update's loss comes from (loader -> ... -> the loss), from the shared
    val-taint analysis; empty when it has no path to show."""
    node = ev.node
    expr = node.func.value if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) else node
    if isinstance(node, ast.AugAssign):
        expr = node.value
    try:
        from auditor.flow.taint import val_taint

        return list(val_taint(ctx).path(ev.func.unit, expr))
    except Exception:  # evidence only: a failure here must not change the verdict
        return []


def dead_function_events(ctx: AuditContext) -> list[tuple[FuncInfo, list[Event]]]:
    """Functions the entry never calls (shared flow layer: status "dead"), with their events as they would be if
    every parameter carried validation data: what the code would do if it were enabled."""
    facts = analyse_order(ctx)
    prog = _program(ctx)
    if prog is None or facts.program is None:
        return []
    dead = {id(f.node) for f in prog.funcs if prog.func_reach(f).status == "dead"}
    out: list[tuple[FuncInfo, list[Event]]] = []
    for fi in facts.program.index.funcs.values():
        if id(fi.node) not in dead or fi.parent is not None or fi.node is fi.unit.tree:
            continue
        summary = facts.program.summaries.get(fi.key)
        if summary is None or not summary.events:
            continue
        as_val = {p: frozenset({VAL}) for p in [*fi.params, fi.vararg or "", fi.kwarg or ""]}
        events = [
            ev.spliced(fi.node, fi, as_val, (), (), 0, False)
            for ev in summary.events
            if ev.kind != "deferred"
        ]
        for ev in events:
            ev.chain = ()
            if ev.kind == "update":
                classify_update(ev)
        out.append((fi, events))
    return out


def during_training(ctx: AuditContext, ev: Event) -> bool:
    """Does `ev` run inside the training loop (shared phases: a periodic monitoring eval, a running `min` over
    them)? Such scoring judges checkpoints that training then moves past; it is a diagnostic, not a scoring pass
    of the submitted model."""
    try:
        from auditor.flow.phases import phases_of

        ph = phases_of(ctx)
    except Exception:  # phases failing must not change the verdict: not known to be training
        return False
    if not ph.confident:
        return False
    tl = ph.training_loop
    # the recognised loop may be the inner micro-step loop: an enclosing step loop is training as well
    if tl is not None and any(lp is tl or any(n is tl for n in ast.walk(lp)) for lp in ev.loops):
        return True
    prog = _program(ctx)
    if prog is None:
        return False
    for call, _caller in ev.chain:
        site = prog.site_of(call) if isinstance(call, ast.Call) else None
        if site is not None and ph.phase_of_site(site) == "training":
            return True
    return False


def update_order(
    upd: Event,
    scores: list[Event],
    excl: Callable[[Event, Event], bool] = exclusive,
    copies_are_separate: bool = True,
) -> tuple[str, Event, object] | None:
    """Why `upd` trains on positions that are scored later, or None when every scoring it meets comes first:
    ("after" | "same-iteration" | "re-pass", the scoring, detail). PG201's judgement, shared with PG203 (a later
    full pass scored with the weights a score-first pass adapted)."""
    for s in scores:
        if excl(upd, s):
            continue
        shared = common_loops(upd, s)
        if s.seq > upd.seq:
            if upd.owner is not None and not same_invocation(upd, s, upd.owner):
                continue  # the updated object (a per-call adapter) is gone before this scoring runs
            if shared and _prefix_of_one_window(upd, s):
                continue  # trains on the window's already-scored prefix, scores the disjoint rest
            if shared and trains_on_previous_iteration(upd, s, shared[-1]):
                continue  # trains on the batch the previous iteration scored (`prev_x = x` after scoring)
            if copies_are_separate and _trains_a_fresh_copy_elsewhere(upd, s):
                continue  # alternative passes: the update trains a deep copy handed to another call
            return ("same-iteration" if shared else "after", s, None)
        if shared:
            revisiting = [lp for lp in shared if not is_data_loop(lp)]
            if revisiting:
                return ("re-pass", s, loop_var_guard(s, revisiting[0]))
    return None


def _trains_a_fresh_copy_elsewhere(upd: Event, score: Event) -> bool:
    """Two calls of the same caller (alternative evaluation passes, `fn(copy.deepcopy(model))` per strategy): the
    update runs inside a call that was handed a deep copy of the model and the scoring inside a different call.
    What the first call trained is its own copy, gone when it returns, so it never reaches the other call's
    scoring (a min over such passes is PG203's concern, not an update before scoring)."""
    i = 0
    while i < min(len(upd.chain), len(score.chain)) and upd.chain[i][0] is score.chain[i][0]:
        i += 1
    if i >= len(upd.chain) or i >= len(score.chain) or upd.chain[i][1] is not score.chain[i][1]:
        return False
    call = upd.chain[i][0]
    if not isinstance(call, ast.Call):
        return False
    for arg in [*call.args, *(k.value for k in call.keywords)]:
        if (
            isinstance(arg, ast.Call)
            and isinstance(arg.func, (ast.Attribute, ast.Name))
            and (arg.func.attr if isinstance(arg.func, ast.Attribute) else arg.func.id) == "deepcopy"
        ):
            return True
    return False


def trains_on_previous_iteration(upd: Event, score: Event, loop: ast.AST) -> bool:
    """Lagged TTT: inside one loop iteration the update comes first, but its loss reads only data the loop carries
    over from the previous iteration, assigned after that iteration's scoring (`train(prev_x, prev_y)`, then score
    `x`, then `prev_x, prev_y = x, y`): every position it trains on was scored before. The backward slice of the
    loss inside the loop must rest on such carried names; a slice of a tensor defined outside the loop (all of
    val) or a name assigned before the update in the iteration (the current batch) breaks it."""
    call = upd.node.value if isinstance(upd.node, ast.Expr) else upd.node
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Attribute):
        return False
    if not isinstance(call.func.value, ast.Name) or upd.func is not score.func:
        return False
    u_line, s_line = getattr(upd.node, "lineno", 0), getattr(score.node, "lineno", 0)
    assigns: dict[str, list[tuple[int, ast.AST]]] = {}
    for st in ast.walk(loop):
        if (
            isinstance(st, (ast.Assign, ast.AugAssign, ast.AnnAssign))
            and getattr(st, "value", None) is not None
        ):
            for name in assigned_names(st):
                assigns.setdefault(name, []).append((st.lineno, st.value))  # type: ignore[arg-type]
    want, seen, carried = [call.func.value.id], set(), False
    while want:
        name = want.pop()
        if name in seen:
            continue
        seen.add(name)
        sites = assigns.get(name, [])
        before = [v for line, v in sites if line < u_line]
        if not sites:
            continue  # the model, the optimizer, constants: not positions
        if not before:
            if all(line > s_line for line, _ in sites):
                carried = True  # set after the scoring: holds the previous iteration's batch
                continue
            return False
        for value in before:
            for sub in ast.walk(value):
                if (
                    isinstance(sub, ast.Subscript)
                    and isinstance(sub.value, ast.Name)
                    and sub.value.id not in assigns
                ):
                    return False  # slices a tensor from outside the loop: fresh positions
                if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
                    want.append(sub.id)
    return carried


def _prefix_of_one_window(upd: Event, score: Event) -> bool:
    """Per-window prefix TTT: inside one iteration the update's loss reads only positions before the slice that
    is then scored (`train(x[:, :s])`, then `loss += nll[s:]`), and the updated weights score that one window, not
    a batch of overlapping windows whose other rows' scored targets sit in this prefix. The prefix was scored by
    earlier windows, so the state used at every scored position depends only on tokens before it (C1/C3)."""
    kind, _ = compare_positions(upd.node, upd.func, score)
    return kind == "context" and rows_scored_separately(upd, score) is None
