"""PG202: eval-time tensors (SLOT deltas, logit biases) optimized on the targets that are then scored.

Standard SLOT freezes the model, creates a small tensor with ``requires_grad=True`` (a hidden-state delta, a
``[V]`` logit bias), runs optimizer steps on the window's next-token loss and then scores the same window with the
optimized tensor: the score of position t depends on x_t itself (C1/C3). FAIL when the tensor is optimized on a
loss that reads validation targets and the scoring that uses it comes afterwards, with the optimized positions
covering the scored ones (same slice, or no restriction at all). WARN for the "causal"/context-only variant that
optimizes only on positions before the scored slice (issue #1336 asked for a ruling; none is known), and for a bias
updated only after scoring (ETLB-like: C3-clean in form, but never accepted on the leaderboard, rules.md A.6).
Detection reads the data flow (which tensor was created with requires_grad, which loss reaches its optimizer, which
accumulation reads it), never identifier names.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable

from auditor.facts import AuditContext
from auditor.findings import Basis, Confidence, Finding, FlowStep, Severity, Verdict
from auditor.flow.order import (
    Event,
    OrderFacts,
    analyse_order,
    common_loops,
    is_data_loop,
)
from auditor.flow.order_queries import (
    gate_off,
    source_path,
    trains_on_previous_iteration,
)
from auditor.flow.positions import (
    compare_positions,
    fit_positions,
    fitted_tensors,
    per_row_tensor,
    rows_scored_separately,
)
from auditor.flow.score_syntax import loss_targets
from rules.base import Case, Rule

_WINDOW = """\
import os, torch
import torch.nn.functional as F

def score_windows(model, head, tokens, width, stride, steps, ctx_only):
    total = torch.zeros(())
    for ws in range(0, tokens.numel() - width, stride):
        x, y = tokens[ws:ws + width], tokens[ws + 1:ws + width + 1]
        with torch.no_grad():
            h = model(x)
        s = width - stride
        mask = torch.zeros(width)
        mask[{MASK}] = 1.0
        shift = torch.zeros(1, h.size(-1), requires_grad=True)
        opt = torch.optim.AdamW([shift], lr=0.01)
        for _ in range(steps):
            nll = F.cross_entropy(head(h + shift), y, reduction="none")
            opt.zero_grad()
            ((nll * mask).sum() / mask.sum()).backward()
            opt.step()
        with torch.no_grad():
            nll = F.cross_entropy(head(h + shift), y, reduction="none")
            total += nll[s:width].sum()
    return total

def main():
    tokens = torch.load(os.path.join("data", "fineweb_val_*.bin"))
    print(score_windows(torch.nn.Identity(), torch.nn.Linear(8, 8), tokens, 256, 64, 8, False))

main()
"""

_PLAIN = """\
import os, torch
import torch.nn.functional as F

def main():
    tokens = torch.load(os.path.join("data", "fineweb_val_*.bin"))
    model = torch.nn.Linear(8, 8)
    total = torch.zeros(())
    with torch.no_grad():
        for i in range(0, tokens.numel() - 256, 256):
            total += F.cross_entropy(model(tokens[i:i + 256]), tokens[i + 1:i + 257], reduction="sum")
    print(total)

main()
"""


_BIAS_BY_HAND = """\
import os, torch
import torch.nn.functional as F

def main():
    tokens = torch.load(os.path.join("data", "fineweb_val_*.bin"))
    model = torch.nn.Linear(8, 1024)
    total = torch.zeros(())
    bias = torch.zeros(1024)
    for i in range(0, tokens.numel() - 257, 256):
        x, y = tokens[i:i + 256], tokens[i + 1:i + 257]
        with torch.no_grad():
            logits = model(x)
        {FIT}
        nll = F.cross_entropy(logits + bias, y, reduction="none")
        total += nll.sum()
        {AFTER}
    print(total)

main()
"""
_STEP = "bias = bias - 0.1 * (F.softmax(logits + bias, -1) - F.one_hot(y, 1024)).mean(0)"


class EvalTensorOptimizedOnScoredTargets(Rule):
    id = "PG202"
    name = "slot-optimizes-scored-targets"
    title = "Eval-time delta or logit bias optimized on the targets it then scores (SLOT, ETLB)"
    category = "slot"
    severity = Severity.CRITICAL
    confidence = Confidence.HIGH
    rationale = (
        "Optimizing a delta or logit bias on a window's next-token loss and then scoring that window with it makes "
        "each position's prediction depend on its own target. The PR #1240 flip test found every scored position "
        "affected; no SLOT variant has been accepted on the leaderboard."
    )
    basis = Basis(
        ref="PR #1240 (andrewbaggio1); issue #1336 (causal SLOT, unresolved); rules.md A.5/A.6",
        date="2026-04-02",
        quote=(
            "With SLOT, every single scored position is affected, and I found a 100% violation rate across 240 "
            "tested pairs. I'm flagging my own submission (PR #1209)."
        ),
        url="https://github.com/openai/parameter-golf/pull/1240",
        section="A.5",
    )
    valid = (
        Case(code=_PLAIN, verdict=Verdict.PASS),
        Case(
            code=_BIAS_BY_HAND.replace("{FIT}", "pass").replace("{AFTER}", _STEP),
            verdict=Verdict.PASS,
            note="logit bias stepped by hand after each chunk is scored: only later chunks use it",
        ),
    )
    invalid = (
        Case(
            code=_WINDOW.replace("{MASK}", "s:width"),
            verdict=Verdict.FAIL,
            line=18,
            note="standard SLOT: the optimized mask is the scored slice",
        ),
        Case(
            code=_WINDOW.replace("{MASK}", ":s"),
            verdict=Verdict.WARN,
            line=18,
            note="context-only SLOT: optimizes on positions before the scored slice (issue #1336)",
        ),
        Case(
            code=_BIAS_BY_HAND.replace("{FIT}", _STEP).replace("{AFTER}", "pass"),
            verdict=Verdict.FAIL,
            line=14,
            note="ETLB without backward(): the bias steps on the chunk's own targets, then scores them",
        ),
    )

    def check(self, ctx: AuditContext) -> Iterable[Finding]:
        facts = analyse_order(ctx)
        if facts.root is None:
            yield self.skip(f"order analysis not run: {facts.problem}")
            return
        seen: set[int] = set()
        for upd in facts.updates:
            if upd.target != "free_tensor" or id(upd.node) in seen:
                continue
            users = [s for s in facts.scores if s.rg & upd.rg and not facts.exclusive(upd, s)]
            if not users:
                continue
            seen.add(id(upd.node))
            finding = self._judge(upd, users)
            finding.flow[:0] = source_path(ctx, upd)
            dead = gate_off(ctx, upd)
            if dead is not None and finding.verdict is not Verdict.PASS:
                finding = self.info(
                    f"If enabled: {finding.message} Gate: {dead.reason}.",
                    finding.locations,
                    related=finding.related,
                    flow=finding.flow,
                    data=finding.data | {"gate": dead.test},
                )
            yield finding
        for finding, event in self._fits(facts, facts.events, facts.scores):
            seen.add(id(event.node))
            dead = gate_off(ctx, event)
            if dead is not None and finding.verdict is not Verdict.PASS:
                finding = self.info(
                    f"If enabled: {finding.message} Gate: {dead.reason}.",
                    finding.locations,
                    related=finding.related,
                    flow=finding.flow,
                    data=finding.data | {"gate": dead.test},
                )
            yield finding
        if not seen:
            yield self.finding(
                Verdict.PASS, "No eval-time tensor is optimized on validation targets and then scored."
            )

    def _fits(
        self, facts: OrderFacts, events: list[Event], scores: list[Event]
    ) -> Iterable[tuple[Finding, Event]]:
        """Scorings whose prediction was fitted on validation targets without `backward()`: a logit bias moved by
        hand-written gradient steps on the targets of the batch (ETLB), or a temperature chosen by a search over
        the loss on validation targets and stored on the model (`model.temperature = t_star`)."""
        fits = [e for e in events if e.kind == "fit" and e.is_val]
        stores = [e for e in fits if e.target.startswith("attr:")]
        reported: set[int] = set()
        for score in scores:
            attrs = {lab[3:] for lab in score.labels if lab.startswith("fa:")}
            via: Event | None = None
            for label in sorted(lab for lab in score.labels if lab.startswith("fx:")):
                fit = _matching_fit(fits, label, score)
                if fit is None or facts.exclusive(fit, score):
                    continue
                fit_attrs = {lab[3:] for lab in fit.labels if lab.startswith("fa:")}
                if fit_attrs:
                    attrs |= fit_attrs
                    via = fit
                elif id(fit.node) not in reported:
                    reported.add(id(fit.node))
                    yield self._local_fit(fit, score), fit
            store = next(
                (
                    w
                    for w in stores
                    if w.target[5:] in attrs
                    and w.seq < score.seq
                    and not facts.exclusive(w, score)
                    and not any(is_data_loop(lp) for lp in common_loops(w, score))
                ),
                None,
            )
            # a store only after scoring, or updated online inside the scoring loop, is not a fit on what is scored
            if store is not None and id(store.node) not in reported:
                reported.add(id(store.node))
                yield self._stored_fit(store, via, score), store

    def _stored_fit(self, store: Event, fit: Event | None, score: Event) -> Finding:
        attr = store.target[5:]
        flow = store.flow(f"`{attr}` is set from a search over the loss on validation targets")
        if fit is not None:
            flow.extend(
                FlowStep(st.location, f"then: {st.message}") for st in fit.flow("the prediction reads it")
            )
        flow.append(FlowStep(score.location(), "then: validation tokens are scored with that prediction"))
        return self.finding(
            Verdict.FAIL,
            f"`{attr}` is fitted on validation targets without backward() (line {store.location().line}: chosen "
            f"by comparing the loss on them) and then used to predict the validation tokens that are scored (line "
            f"{score.location().line}): the scored positions' own targets decide their prediction (C1/C3, the "
            "ETLB family). If the fitted tokens are never scored, this is validation data used for tuning instead.",
            [store.location()],
            related=[score.location()] + ([fit.location()] if fit is not None else []),
            flow=flow,
            data={"order": "fit-then-score", "state": attr, "score_line": score.location().line},
            confidence=Confidence.MEDIUM,
        )

    def _local_fit(self, fit: Event, score: Event) -> Finding:
        targets = loss_targets(fit.func)
        kind, detail = fit_positions(fit, score, targets)
        flow = fit.flow("the prediction is built from state fitted on validation targets")
        flow.append(FlowStep(score.location(), "then: scored with it"))
        data = {"fit_line": fit.location().line, "score_line": score.location().line, "positions": kind}
        related = [score.location()]
        rows = rows_scored_separately(fit, score) if kind == "context" else None
        shared = rows is not None and any(
            per_row_tensor(n, fit.func) is False for n in fitted_tensors(fit, targets)
        )
        if kind in ("same", "all") or shared:
            where = {
                "same": f"on the scored positions themselves ({detail})",
                "all": "on every target of the batch, the scored ones included",
                "context": (
                    f"on the context positions of a whole batch of windows ({detail}), which are the scored "
                    "targets of the batch's overlapping windows"
                ),
            }[kind]
            return self.finding(
                Verdict.FAIL,
                f"A prediction (line {fit.location().line}) is built from state fitted on validation targets without "
                f"backward() {where}, then those targets are scored with it (line {score.location().line}): an "
                "eval-time logit bias / SLOT fitted on the answers (C1/C3).",
                [fit.location()],
                related=related if rows is None else related + [score.func.unit.location(rows)],
                flow=flow,
                data=data | ({"positions": "shared-batch-context"} if shared else {}),
            )
        return self.finding(
            Verdict.WARN,
            f"A prediction (line {fit.location().line}) is built from state fitted on validation targets before they "
            f"are scored (line {score.location().line}); the positions could only be related as {kind} "
            f"({detail}): context-only fitting is unresolved (issue #1336) and no ruling accepts eval-time logit "
            "biases (rules.md A.6).",
            [fit.location()],
            related=related,
            flow=flow,
            data=data,
            confidence=Confidence.LOW,
        )

    def _judge(self, upd: Event, users: list[Event]) -> Finding:
        # a fit on the batch the previous iteration scored (`prev_x = x` after scoring) comes first in the
        # iteration but never sees the targets it then scores: score-then-update in effect
        after = [
            s
            for s in users
            if s.seq > upd.seq
            and not ((shared := common_loops(upd, s)) and trains_on_previous_iteration(upd, s, shared[-1]))
        ]
        flow = upd.flow("optimizer steps on a loss over validation targets")
        if upd.step is not None and upd.step_func is not None:
            flow.append(
                FlowStep(upd.step_func.unit.location(upd.step), "the optimizer steps the eval-time tensor")
            )
        if not after:
            score = users[0]
            shared = common_loops(upd, score)
            if shared and all(is_data_loop(lp) for lp in shared):
                return self.finding(
                    Verdict.WARN,
                    f"An eval-time tensor is updated (line {upd.location().line}) only after the positions it is "
                    f"used on are scored (line {score.location().line}): C3-clean in form, but no ruling accepts "
                    "eval-time logit biases (ETLB, rules.md A.6).",
                    [upd.location()],
                    related=[score.location()],
                    flow=flow,
                    data={"order": "score-then-update"},
                    confidence=Confidence.MEDIUM,
                )
            return self.finding(
                Verdict.WARN,
                f"An eval-time tensor optimized at line {upd.location().line} is read by scoring at line "
                f"{score.location().line} in a later pass; the order could not be related to positions.",
                [upd.location()],
                related=[score.location()],
                flow=flow,
                confidence=Confidence.LOW,
            )
        score = after[0]
        flow.extend(
            FlowStep(st.location, f"then: {st.message}") for st in score.flow("scored with the tensor")
        )
        kind, detail = compare_positions(upd.node, upd.func, score)
        data = {"update_line": upd.location().line, "score_line": score.location().line, "positions": kind}
        related = [score.location()]
        shared_by = _shared_by_batch(upd, score) if kind == "context" else None
        if shared_by is not None:
            return self.finding(
                Verdict.FAIL,
                f"An eval-time tensor shared by all windows of a batch is optimized (line {upd.location().line}) on "
                f"their context positions ({detail}), then scores every window of the batch (line "
                f"{score.location().line}, one window per iteration of the loop at line "
                f"{score.func.unit.location(shared_by).line}). Overlapping windows' context positions are other "
                "windows' scored targets, so the tensor is fitted on targets it then scores: standard SLOT, not "
                "context-only.",
                [upd.location()],
                related=related + [score.func.unit.location(shared_by)],
                flow=flow,
                data=data | {"positions": "shared-batch-context"},
            )
        if kind in ("same", "all"):
            what = (
                f"on the scored positions themselves ({detail})"
                if kind == "same"
                else "on every position of the window, the scored ones included"
            )
            return self.finding(
                Verdict.FAIL,
                f"An eval-time tensor created with requires_grad is optimized (line {upd.location().line}) {what}, "
                f"then used to score those targets (line {score.location().line}): standard SLOT.",
                [upd.location()],
                related=related,
                flow=flow,
                data=data,
            )
        if kind == "context":
            return self.finding(
                Verdict.WARN,
                f"Context-only SLOT: the eval-time tensor is optimized (line {upd.location().line}) only on positions "
                f"before the scored slice ({detail}); issue #1336 asked whether this is legal and no ruling is known.",
                [upd.location()],
                related=related,
                flow=flow,
                data=data,
                confidence=Confidence.MEDIUM,
                severity=Severity.MEDIUM,
            )
        return self.finding(
            Verdict.WARN,
            f"An eval-time tensor is optimized on validation targets (line {upd.location().line}) before scoring "
            f"with it (line {score.location().line}); which positions the optimization covers could not be "
            f"related to the scored ones ({detail}).",
            [upd.location()],
            related=related,
            flow=flow,
            data=data,
            confidence=Confidence.LOW,
        )


def _matching_fit(fits: list[Event], label: str, score: Event) -> Event | None:
    """The fit event named by a score's `fx:<call>` label, on the call path closest to the score's."""
    node_id = int(label[3:])
    best: Event | None = None
    best_shared = -1
    for f in fits:
        if id(f.node) != node_id:
            continue
        shared = 0
        while shared < min(len(f.chain), len(score.chain)) and f.chain[shared][0] is score.chain[shared][0]:
            shared += 1
        if shared > best_shared:
            best, best_shared = f, shared
    return best


def _shared_by_batch(upd: Event, score: Event) -> ast.AST | None:
    """The per-window scoring loop when one eval-time tensor without a per-window axis (`zeros(1, 1, V)`) is fitted
    for a whole batch of windows and then scores each of them."""
    rows = rows_scored_separately(upd, score)
    if rows is None:
        return None
    for label in upd.rg:
        _, _, name = label.rpartition(":")
        for func in (upd.func, score.func, upd.func.parent):
            if func is not None and per_row_tensor(name, func) is False:
                return rows
    return None


def _unparse(node: object) -> str:
    try:
        return ast.unparse(node)  # type: ignore[arg-type]
    except Exception:
        return "<condition>"
