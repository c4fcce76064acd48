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
    analyse_order,
    common_loops,
    exclusive,
    gate_off,
    is_data_loop,
    source_path,
)
from auditor.flow.positions import compare_positions, per_row_tensor, rows_scored_separately
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
    valid = (Case(code=_PLAIN, verdict=Verdict.PASS),)
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
            users = [s for s in facts.scores if s.rg & upd.rg and not exclusive(upd, s)]
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
        if not seen:
            yield self.finding(
                Verdict.PASS, "No eval-time tensor is optimized on validation targets and then scored."
            )

    def _judge(self, upd: Event, users: list[Event]) -> Finding:
        after = [s for s in users if s.seq > upd.seq]
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
