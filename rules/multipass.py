"""PG203: validation tokens scored in a second pass with state built from the whole split, or the best of
several scoring passes reported.

Issue #1017 C4: one left-to-right pass, each token scored exactly once. FAIL when a loop over validation positions
writes lookup state (a count table, a cache, a bias) from validation content and a *later* loop, sharing no
enclosing loop with it, scores validation tokens with a value read from that state (pass 1 builds, pass 2
rescores: the PR #846 ... #986 family), and when a `min(...)` selects among the results of several scoring calls
(min-over-passes). An online cache that is read for scoring and updated after, inside the same loop, is one pass
and is not this rule's concern (target-in-key / normalisation are other rules).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable

from auditor.facts import AuditContext
from auditor.findings import Basis, Confidence, Finding, FlowStep, Severity, Verdict
from auditor.flow.order import (
    VAL,
    Event,
    OrderFacts,
    analyse_order,
    assigned_names,
    closure,
    common_loops,
    def_map,
    divergence,
    is_data_loop,
    names_in,
    statements_by_id,
    value_names,
)
from auditor.flow.order_queries import (
    during_training,
    gate_off,
    update_order,
)
from rules.base import Case, Rule

_TWO_PASS = """\
import os, torch

def evaluate(model, tokens, alpha):
    counts = torch.zeros(4096)
    for i in range(1, tokens.numel()):
        counts[(tokens[i - 1] * 31 + tokens[i]) % 4096] += 1
    total = torch.zeros(())
    with torch.no_grad():
        for i in range(1, tokens.numel()):
            p_model = torch.softmax(model(tokens[i - 1:i]), -1)[0, tokens[i]]
            p_cache = counts[(tokens[i - 1] * 31 + tokens[i]) % 4096] / counts.sum()
            total += -torch.log((1 - alpha) * p_model + alpha * p_cache)
    return total

def main():
    tokens = torch.load(os.path.join("data", "fineweb_val_*.bin"))
    print(evaluate(torch.nn.Linear(8, 8), tokens, 0.1))

main()
"""

_ONLINE = """\
import os, torch

def evaluate(model, tokens, alpha):
    counts = torch.ones(4096)
    total = torch.zeros(())
    with torch.no_grad():
        for i in range(1, tokens.numel()):
            p_model = torch.softmax(model(tokens[i - 1:i]), -1)[0]
            p_cache = counts / counts.sum()
            total += -torch.log((1 - alpha) * p_model[tokens[i]] + alpha * p_cache[tokens[i]])
            counts[tokens[i]] += 1
    return total

def main():
    tokens = torch.load(os.path.join("data", "fineweb_val_*.bin"))
    print(evaluate(torch.nn.Linear(8, 8), tokens, 0.1))

main()
"""

_MIN_OF_PASSES = """\
import os, torch
import torch.nn.functional as F

def score(model, tokens, width):
    total = torch.zeros(())
    with torch.inference_mode():
        for i in range(0, tokens.numel() - width, width):
            total += F.cross_entropy(model(tokens[i:i + width]), tokens[i + 1:i + width + 1], reduction="sum")
    return total

def main():
    tokens = torch.load(os.path.join("data", "fineweb_val_*.bin"))
    model = torch.nn.Linear(8, 8)
    first = score(model, tokens, 256)
    second = score(model, tokens, 512)
    print(min(first, second))

main()
"""


_ADAPTED_THEN_RESCORED = """\
import os, torch
import torch.nn.functional as F

def score(model, tokens):
    total = torch.zeros(())
    with torch.no_grad():
        for i in range(0, tokens.numel() - 257, 256):
            total += F.cross_entropy(model(tokens[i:i + 256]), tokens[i + 1:i + 257], reduction="sum")
    return total

def score_first_ttt(model, tokens):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    total = torch.zeros(())
    for i in range(0, tokens.numel() - 257, 256):
        x, y = tokens[i:i + 256], tokens[i + 1:i + 257]
        with torch.no_grad():
            total += F.cross_entropy(model(x), y, reduction="sum")
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return total

def main():
    tokens = torch.load(os.path.join("data", "fineweb_val_*.bin"))
    model = torch.nn.Linear(8, 8)
    print(score_first_ttt(model, tokens))
    print(score(model, tokens))

main()
"""

_MONITOR_MIN = """\
import os, torch
import torch.nn.functional as F

def score(model, tokens):
    total = torch.zeros(())
    with torch.no_grad():
        for i in range(0, tokens.numel() - 257, 256):
            total += F.cross_entropy(model(tokens[i:i + 256]), tokens[i + 1:i + 257], reduction="sum")
    return total

def main():
    train = torch.load(os.path.join("data", "fineweb_train_*.bin"))
    val = torch.load(os.path.join("data", "fineweb_val_*.bin"))
    model = torch.nn.Linear(8, 8)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    best = float("inf")
    for step in range(100):
        if step % 10 == 0:
            best = min(best, score(model, val[:4097]))
            print(best)
        x, y = train[step * 256:(step + 1) * 256], train[step * 256 + 1:(step + 1) * 256 + 1]
        F.cross_entropy(model(x), y).backward()
        opt.step()
    print(score(model, val))

main()
"""


class ValidationRescoredInSecondPass(Rule):
    id = "PG203"
    name = "multipass-rescoring"
    title = "Validation rescored with state built from the whole split, or best of several passes reported"
    category = "multipass"
    severity = Severity.CRITICAL
    confidence = Confidence.HIGH
    rationale = (
        "Each validation token must be scored once, left to right, from state built only from the tokens before "
        "it. A first pass that fills a cache with the whole split lets the second pass score every token with "
        "statistics of itself and its future; reporting the minimum of several passes selects on the answer."
    )
    basis = Basis(
        ref="issue #1017 C4 and C1 (NoesisGenesis; C4 as paraphrased in rules.md A.2); PRs #846-#986 closed",
        date="2026-03-27",
        quote="One left-to-right pass; each token is scored exactly once. No rescoring, and no multi-pass or "
        "min-over-passes selection.",
        url="https://github.com/openai/parameter-golf/issues/1017",
        section="A.2",
    )
    valid = (
        Case(code=_ONLINE, verdict=Verdict.PASS, note="online cache: read, score, then update"),
        Case(
            code=_MONITOR_MIN, verdict=Verdict.PASS, note="running min over monitoring evals during training"
        ),
    )
    invalid = (
        Case(
            code=_TWO_PASS, verdict=Verdict.FAIL, line=12, note="pass 1 fills counts, pass 2 scores with them"
        ),
        Case(code=_MIN_OF_PASSES, verdict=Verdict.FAIL, line=16, note="min over two scoring passes"),
        Case(
            code=_ADAPTED_THEN_RESCORED,
            verdict=Verdict.FAIL,
            line=26,
            note="score-first TTT adapts the model in place, then a full pass rescores val with it",
        ),
    )

    def check(self, ctx: AuditContext) -> Iterable[Finding]:
        facts = analyse_order(ctx)
        if facts.root is None:
            yield self.skip(f"order analysis not run: {facts.problem}")
            return
        found = False
        passes = [
            *self._selections(ctx, facts.events),
            *self._two_pass(facts, facts.events, facts.scores),
            *self._state_passes(facts, facts.events, facts.scores),
            *self._adapted_rescore(ctx, facts, facts.updates, facts.scores),
        ]
        for finding, event in passes:
            dead = gate_off(ctx, event)
            if dead is not None:
                finding = self.info(
                    f"If enabled: {finding.message} Gate: {dead.reason}.",
                    finding.locations,
                    related=finding.related,
                    flow=finding.flow,
                    data=finding.data | {"gate": dead.test},
                )
            found = True
            yield finding
        if not found:
            yield self.finding(Verdict.PASS, "Each validation token is scored in a single pass.")

    def _selections(self, ctx: AuditContext, events: list[Event]) -> Iterable[tuple[Finding, Event]]:
        seen: set[int] = set()
        for ev in events:
            if ev.kind != "select" or id(ev.node) in seen:
                continue
            seen.add(id(ev.node))
            if during_training(ctx, ev):
                continue  # a running min over periodic monitoring evals: each scores another checkpoint
            yield (
                self.finding(
                    Verdict.FAIL,
                    f"min(...) at line {ev.location().line} selects among the results of several scoring passes over "
                    "validation data (min-over-passes).",
                    [ev.location()],
                    flow=ev.flow("the best of several scoring passes is taken"),
                    data={"order": "min-over-passes"},
                ),
                ev,
            )

    def _adapted_rescore(
        self, ctx: AuditContext, facts: OrderFacts, updates: list[Event], scores: list[Event]
    ) -> Iterable[tuple[Finding, Event]]:
        """A score-first test-time-training pass (each chunk scored, then trained on) leaves the model adapted to
        every chunk it saw; a later scoring pass with that same model re-scores validation tokens it has already
        been trained on: a second pass whose state was built from the split (C4, as well as PG201's C3)."""
        reported: set[int] = set()
        for upd in updates:
            if upd.target != "module" or upd.throwaway:
                continue
            first = next(
                (
                    s
                    for s in scores
                    if s.seq < upd.seq
                    and not facts.exclusive(s, upd)
                    and any(is_data_loop(lp) for lp in common_loops(s, upd))
                ),
                None,
            )
            if first is None:
                continue  # no pass scored validation before training on it: PG201 alone (train-then-score)
            # PG203 keeps alternative passes over deep copies in view: a min over them is the selection it judges
            verdict = update_order(
                upd,
                [s for s in scores if not common_loops(s, upd)],
                facts.exclusive,
                copies_are_separate=False,
            )
            if verdict is None or verdict[0] != "after":
                continue
            second = verdict[1]
            if gate_off(ctx, second) is not None:
                continue  # the second pass does not run under the defaults
            second_site, update_site = divergence(second, upd)
            if second_site.line in reported:
                continue
            reported.add(second_site.line)
            flow = first.flow("pass 1 scores validation chunks")
            flow.extend(
                FlowStep(st.location, f"then: {st.message}")
                for st in upd.flow("and trains the model on each chunk after scoring it")
            )
            flow.extend(
                FlowStep(st.location, f"then: {st.message}")
                for st in second.flow("pass 2 scores validation again with the adapted model")
            )
            yield (
                self.finding(
                    Verdict.FAIL,
                    f"A second scoring pass over validation (line {second_site.line}) runs with the model that the "
                    f"first pass's test-time training adapted (update at line {upd.location().line}, after scoring "
                    f"at line {first.location().line}), so it re-scores tokens the model was already trained on: "
                    "a full rescore with state built from the split.",
                    [second_site],
                    related=[upd.location(), first.location(), second.location()],
                    flow=flow,
                    data={
                        "order": "rescore-after-adaptation",
                        "update_line": upd.location().line,
                        "first_pass_line": first.location().line,
                    },
                    confidence=Confidence.MEDIUM,
                ),
                upd,  # gated by the update: a pass that never adapts the model leaves nothing to rescore with
            )

    def _state_passes(
        self, facts: OrderFacts, events: list[Event], scores: list[Event]
    ) -> Iterable[tuple[Finding, Event]]:
        """A scoring call over validation fills an object (a cache) that a *later* scoring call receives: the
        second call rescores with state built from everything the first one saw (two-pass / full rescore)."""
        writes = [w for w in events if w.kind == "write" and w.is_val and w.names]
        reported: set[int] = set()
        for w in writes:
            for s2 in scores:
                if s2.seq <= w.seq or facts.exclusive(w, s2):
                    continue
                d = _divergence_depth(w, s2)
                if d > len(w.chain) or d >= len(s2.chain) or d >= len(w.names) or not w.names[d]:
                    continue
                # the write happens in the frame where the paths part (directly, or inside a call made there)
                first_call = w.chain[d][0] if d < len(w.chain) else w.node
                second_call = s2.chain[d][0]
                frame = s2.chain[d][1]
                callee = s2.chain[d + 1][1] if d + 1 < len(s2.chain) else s2.func
                if id(second_call) in reported or not (
                    _passes_name(second_call, w.names[d]) or _closure_reads(callee, frame, w.names[d])
                ):
                    continue
                s1 = _first(
                    s
                    for s in scores
                    if len(s.chain) > d
                    and s.seq <= w.seq
                    and s.chain[d][0] is not second_call
                    and all(s.chain[i][0] is w.chain[i][0] for i in range(d))
                    and not facts.exclusive(s, w)
                )
                if s1 is None:
                    continue  # nothing was scored before the state was filled: a precompute, not a first pass
                reported.add(id(second_call))
                caller = frame
                flow = w.flow(f"pass 1 writes `{w.names[d]}` from validation tokens while scoring them")
                flow.extend(
                    FlowStep(st.location, f"then: {st.message}")
                    for st in s2.flow("pass 2 scores validation tokens again with that state")[d:]
                )
                yield (
                    self.finding(
                        Verdict.FAIL,
                        f"A second scoring pass over validation (line {caller.unit.location(second_call).line}) "
                        f"receives `{w.names[d]}`, which was filled from the validation tokens (line "
                        f"{caller.unit.location(first_call).line}) during the first scoring pass (line "
                        f"{s1.chain[d][1].unit.location(s1.chain[d][0]).line}): the tokens it rescores are predicted "
                        "with statistics of themselves and of their future.",
                        [caller.unit.location(second_call)],
                        related=[caller.unit.location(first_call), w.location(), s2.location()],
                        flow=flow,
                        data={
                            "order": "rescore-with-pass1-state",
                            "state": w.names[d],
                            "first_pass_line": caller.unit.location(first_call).line,
                        },
                        confidence=Confidence.MEDIUM,
                    ),
                    s2,
                )

    def _two_pass(
        self, facts: OrderFacts, events: list[Event], scores: list[Event]
    ) -> Iterable[tuple[Finding, Event]]:
        """A loop over validation writes a lookup table at keys computed from validation *content* (a count table,
        a hashed cache: directly in the scoring function, or in a method it calls on an object it holds, such as
        `cache.bulk_update(val)`), and a later scoring in that function, outside the loop, reads the table."""
        writes = [w for w in events if w.kind == "write" and w.is_val and w.keyed and VAL in w.keys]
        reported: set[int] = set()
        for s in scores:
            if id(s.node) in reported:
                continue
            depth = len(s.chain)
            for w in writes:
                if w.seq >= s.seq or facts.exclusive(w, s) or len(w.chain) < depth:
                    continue
                if any(w.chain[i][0] is not s.chain[i][0] for i in range(depth)):
                    continue  # another invocation
                if len(w.chain) == depth:
                    if w.func is not s.func:
                        continue
                    name = w.target
                elif w.chain[depth][1] is s.func and depth < len(w.names) and w.names[depth]:
                    name = w.names[depth]  # the object the scoring function handed to the writing method
                else:
                    continue
                shared = common_loops(w, s)
                if len(w.loops) <= len(shared) or _own(shared, w if len(w.chain) == depth else s):
                    continue  # written inside a loop that also scores: per-window / online state
                build_loop = w.loops[len(shared)]
                if not is_data_loop(build_loop) or not _reads_state(s, name):
                    continue
                reported.add(id(s.node))
                flow = w.flow("pass 1 writes lookup state from validation tokens")
                flow.append(FlowStep(s.location(), "pass 2 scores validation tokens with that state"))
                build = (
                    w.chain[depth][1].unit.location(w.chain[depth][0])
                    if len(w.chain) > depth
                    else w.location()
                )
                yield (
                    self.finding(
                        Verdict.FAIL,
                        f"Validation tokens are scored (line {s.location().line}) with state that an earlier pass over "
                        f"the validation split wrote (line {build.line}): the second pass sees statistics of "
                        "the tokens it scores and of their future.",
                        [s.location()],
                        related=[build, w.location(), w.func.unit.location(build_loop)],
                        flow=flow,
                        data={
                            "order": "two-pass",
                            "write_line": build.line,
                            "score_line": s.location().line,
                        },
                        confidence=Confidence.MEDIUM,
                    ),
                    s,
                )
                break


def _divergence_depth(a: Event, b: Event) -> int:
    d = 0
    while d < min(len(a.chain), len(b.chain)) and a.chain[d][0] is b.chain[d][0]:
        d += 1
    return d


def _passes_name(call: ast.AST, name: str) -> bool:
    """Does the call hand `name` to its callee (as an argument or as the receiver of a method call)?"""
    if not isinstance(call, ast.Call):
        return False
    parts = [*call.args, *(k.value for k in call.keywords)]
    if isinstance(call.func, ast.Attribute):
        parts.append(call.func.value)
    return any(isinstance(p, ast.Name) and p.id == name for p in parts)


def _closure_reads(callee: object, caller: object, name: str) -> bool:
    """A nested function reading its enclosing function's `name` receives it without an argument."""
    if getattr(callee, "parent", None) is not caller or name in getattr(callee, "params", ()):
        return False
    return any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(callee.node))  # type: ignore[attr-defined]


def _own(loops: list[ast.AST], ev: Event) -> list[ast.AST]:
    """The loops among `loops` written in the event's own function (not in a caller)."""
    node = ev.func.node
    first, last = getattr(node, "lineno", 0), getattr(node, "end_lineno", 0) or 10**9
    return [lp for lp in loops if first <= getattr(lp, "lineno", 0) <= last]


def _first(items: Iterable[Event]) -> Event | None:
    return next(iter(items), None)


def _reads_state(score: Event, name: str) -> bool:
    """Does the scored value read `name`'s contents (not only index into something with it)?"""
    defs = def_map(score.func)
    by_id = statements_by_id(score.func)
    start = value_names(score.node)
    if name in start:
        return True
    for sid in closure(defs, start):
        stmt = by_id.get(sid)
        if stmt is None or name in assigned_names(stmt):
            continue
        reads = stmt.iter if isinstance(stmt, (ast.For, ast.AsyncFor)) else stmt
        if name in names_in(reads, skip_slices=True):
            return True
    return False
