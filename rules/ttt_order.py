"""PG201: test-time training on validation tokens before they are scored.

The rule (README, 2026-03-20; issue #1017 C3): a model may only be trained on validation tokens it has already
been scored on. An update (``loss.backward()`` / ``autograd.grad``) whose loss reads validation data FAILs when the
scoring of those positions runs after it: train-all-then-score (``ttt_adapt`` then the eval), pre-quant TTT on val
before quantization, an update that precedes the scoring inside the same loop iteration, or a scoring loop that
revisits positions after an earlier pass trained on them (multi-epoch TTT reporting the last epoch). Score-first
TTT passes: inside a loop whose iterations visit different positions (chunks, documents, batches), the scoring of
the iteration's positions comes before the update on them; later phases may train on already-scored documents.

A warm-up update on validation tokens whose trained state is thrown away (built locally, used only by the warm-up
forward calls, then dropped) is a WARN, not a FAIL: rules.md A.3 records that the merged PR #1530 did this
(``ttt_lora:warming up compile`` on the first validation tokens) and was kept because the effect was "within
run-to-run variance"; later records warm up on random tokens instead.
"""

from __future__ import annotations

from collections.abc import Iterable

from auditor.facts import AuditContext
from auditor.findings import Basis, Confidence, Finding, FlowStep, Severity, Verdict
from auditor.flow.order import (
    Event,
    analyse_order,
    common_loops,
    divergence,
)
from auditor.flow.order_queries import (
    GateOff,
    dead_function_events,
    defeated_on_path,
    gate_off,
    source_path,
    update_order,
)
from rules.base import Case, Rule

_SCORE_FIRST = """\
import os, torch
import torch.nn.functional as F

def load_tokens(pattern):
    return torch.load(pattern)

def evaluate_with_adaptation(model, tokens, chunk, epochs):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    total = torch.zeros(())
    n = (tokens.numel() - 1) // chunk
    for ci in range(n):
        piece = tokens[ci * chunk:(ci + 1) * chunk + 1]
        x, y = piece[:-1], piece[1:]
        with torch.no_grad():
            total += F.cross_entropy(model(x), y, reduction="sum")
        if ci < n - 1:
            for _ in range(epochs):
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()
    return total

def main():
    tokens = load_tokens(os.path.join("data", "fineweb_val_*.bin"))
    model = torch.nn.Linear(8, 8)
    print(evaluate_with_adaptation(model, tokens, 1024, 3))

if __name__ == "__main__":
    main()
"""

_TRAIN_THEN_SCORE = """\
import os, torch
import torch.nn.functional as F

def load_tokens(pattern):
    return torch.load(pattern)

def score(model, tokens):
    total = torch.zeros(())
    with torch.inference_mode():
        for i in range(0, tokens.numel() - 1, 1024):
            total += F.cross_entropy(model(tokens[i:i + 1024]), tokens[i + 1:i + 1025], reduction="sum")
    return total

def adapt(model, tokens, epochs):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for _ in range(epochs):
        for i in range(0, tokens.numel() - 1, 1024):
            loss = F.cross_entropy(model(tokens[i:i + 1024]), tokens[i + 1:i + 1025])
            loss.backward()
            opt.step()

def main():
    tokens = load_tokens(os.path.join("data", "fineweb_val_*.bin"))
    model = torch.nn.Linear(8, 8)
    adapt(model, tokens, 3)
    print(score(model, tokens))

if __name__ == "__main__":
    main()
"""

_LAST_EPOCH = """\
import os, torch
import torch.nn.functional as F

def main():
    tokens = torch.load(os.path.join("data", "fineweb_val_*.bin"))
    model = torch.nn.Linear(8, 8)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    epochs = 3
    total = torch.zeros(())
    for epoch in range(epochs):
        for i in range(0, tokens.numel() - 1, 1024):
            x, y = tokens[i:i + 1024], tokens[i + 1:i + 1025]
            if epoch == epochs - 1:
                with torch.no_grad():
                    total += F.cross_entropy(model(x), y, reduction="sum")
            F.cross_entropy(model(x), y).backward()
            opt.step()
    print(total)

main()
"""

_PREFIX_PER_WINDOW = """\
import os, torch
import torch.nn.functional as F

def main():
    tokens = torch.load(os.path.join("data", "fineweb_val_*.bin"))
    model = torch.nn.Linear(8, 8)
    total = torch.zeros(())
    for ws in range(0, tokens.numel() - 257, 64):
        x, y = tokens[ws:ws + 256], tokens[ws + 1:ws + 257]
        s = 0 if ws == 0 else 192
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        F.cross_entropy(model(x[:s]), y[:s]).backward()
        opt.step()
        with torch.no_grad():
            nll = F.cross_entropy(model(x), y, reduction="none")
        total += nll[s:].sum()
    print(total)

main()
"""

_DEFAULT_OFF = _TRAIN_THEN_SCORE.replace(
    "    adapt(model, tokens, 3)\n",
    '    if bool(int(os.environ.get("ADAPT_ON_EVAL", "0"))):\n        adapt(model, tokens, 3)\n',
)


class ValidationTrainedBeforeScored(Rule):
    id = "PG201"
    name = "ttt-val-before-score"
    title = "Test-time training on validation tokens before they are scored"
    category = "ttt_val_before_score"
    severity = Severity.CRITICAL
    confidence = Confidence.HIGH
    rationale = (
        "A validation token may only be trained on after its loss has been added to the reported sums. Training "
        "on all of val and then scoring, pre-quantization TTT on val, or re-scoring positions in a later epoch "
        "all report a loss on tokens the model has already fitted."
    )
    basis = Basis(
        ref="README (commit fc6332a9c, Will DePue); issue #1017 C3; PR #568 ruling (valerio-oai)",
        date="2026-03-20",
        quote=(
            "You can't cheat by training on the validation set before you evaluate on the validation set. "
            "You are only allowed to test-time train on validation set tokens you've already evaluated your model on."
        ),
        section="A.3",
    )
    valid = (
        Case(code=_SCORE_FIRST, verdict=Verdict.PASS, note="score chunk ci under no_grad, then train on it"),
        Case(
            code=_DEFAULT_OFF, verdict=Verdict.PASS, note="train-then-score behind a default-off flag: info"
        ),
        Case(
            code=_PREFIX_PER_WINDOW,
            verdict=Verdict.PASS,
            note="per-window prefix TTT: train on [:s] (scored by earlier windows), score the disjoint [s:]",
        ),
    )
    invalid = (
        Case(
            code=_TRAIN_THEN_SCORE, verdict=Verdict.FAIL, line=19, note="adapt() on all of val, then score()"
        ),
        Case(code=_LAST_EPOCH, verdict=Verdict.FAIL, line=16, note="scores only in the last epoch"),
        Case(
            code=_PREFIX_PER_WINDOW.replace("model(x[:s]), y[:s]", "model(x), y"),
            verdict=Verdict.FAIL,
            line=12,
            note="the same per-window loop training on the whole window, scored suffix included",
        ),
    )

    def check(self, ctx: AuditContext) -> Iterable[Finding]:
        facts = analyse_order(ctx)
        if facts.root is None:
            yield self.skip(f"order analysis not run: {facts.problem}")
            return
        scores = facts.scores
        seen: set[int] = set()
        legal: list[tuple[Event, Event]] = []
        chosen: dict[int, tuple[Event, tuple[str, Event, object], GateOff | None]] = {}
        for upd in facts.updates:
            if upd.target != "module":
                continue  # free eval-time tensors (SLOT deltas, logit biases) are PG202's
            verdict = update_order(upd, scores, facts.exclusive)
            if verdict is None:
                first_scored = next((s for s in scores if s.seq < upd.seq and common_loops(upd, s)), None)
                if first_scored is not None:
                    legal.append((first_scored, upd))
                continue
            # One update statement is lifted once per calling context (a shared `run_phase()` called from a
            # default-off branch and from the branch that runs): a live context decides, so a gated-off one
            # found first must not hide it.
            gate = gate_off(ctx, upd)
            prev = chosen.get(id(upd.node))
            if prev is None or (prev[2] is not None and gate is None):
                chosen[id(upd.node)] = (upd, verdict, gate)
        for upd, verdict, gate in chosen.values():
            seen.add(id(upd.node))
            finding = self._finding(upd, verdict, gate)
            finding.flow[:0] = source_path(ctx, upd)
            yield finding
        if not seen:
            yield self._pass(facts.updates, legal, bool(scores))
        yield from self._dead_code(ctx)
        for location, reason in defeated_on_path(ctx, facts.events)[:1]:
            yield self.finding(
                Verdict.WARN,
                f"{reason}: on the path to scoring or updates, so their order cannot be fully checked",
                [location],
                confidence=Confidence.LOW,
            )

    def _dead_code(self, ctx: AuditContext) -> Iterable[Finding]:
        """Never-called functions whose own order would train on positions before scoring them: info only."""
        for fi, events in dead_function_events(ctx):
            scores = [e for e in events if e.kind == "score" and e.is_val]
            for upd in (e for e in events if e.kind == "update" and e.is_val and e.target == "module"):
                verdict = update_order(upd, scores)
                if verdict is None:
                    continue
                kind, score, _ = verdict
                yield self.info(
                    f"{fi.name}() is never called (dead code). If it were called with validation data it would "
                    f"update on them (line {upd.location().line}) before scoring them (line "
                    f"{score.location().line}).",
                    [upd.location()],
                    related=[score.location()],
                    data={"order": kind, "dead": True},
                )
                break

    # ------------------------------------------------------------------------------------------------------------
    def _finding(self, upd: Event, verdict: tuple[str, Event, object], dead: GateOff | None) -> Finding:
        kind, score, detail = verdict
        upd_site, score_site = divergence(upd, score)
        order = {
            "after": "the scoring runs after the update",
            "same-iteration": "inside the loop the update comes before the scoring of the same iteration",
            "re-pass": "a loop that does not move to new positions re-scores them after training on them",
        }[kind]
        message = (
            f"Update on validation tokens ({_describe(upd)}, line {upd.location().line}) before those tokens are "
            f"scored ({_describe(score)}, line {score.location().line}): {order}."
        )
        if kind == "re-pass" and detail is not None:
            message += (
                f" Scoring is guarded by `{_unparse(detail)}` on the re-visiting loop (last-epoch scoring)."
            )
        flow = upd.flow("backward() on a loss computed from validation tokens")
        if upd.step is not None and upd.step_func is not None:
            flow.append(FlowStep(upd.step_func.unit.location(upd.step), "optimizer step commits the update"))
        shared = _shared_prefix(upd, score)  # the calls both paths go through are shown once
        flow.extend(
            FlowStep(step.location, f"then: {step.message}") for step in score.flow("scored here")[shared:]
        )
        data = {
            "order": kind,
            "update_line": upd.location().line,
            "score_line": score.location().line,
            "update_site": str(upd_site),
            "score_site": str(score_site),
        }
        related = [score.location(), upd_site, score_site]
        if dead is not None:
            return self.info(
                f"If enabled, this would train on validation tokens before scoring them. {message} "
                f"Gate: {dead.reason}.",
                [upd.location()],
                related=related,
                flow=flow,
                data=data | {"gate": dead.test},
            )
        if upd.throwaway and kind == "after":
            return self.finding(
                Verdict.WARN,
                f"{message} The trained state is built locally and dropped right after (a warm-up or a diagnostic "
                "probe), so it does not feed the scored predictions; the merged PR #1530 did this and was kept because the gap was within "
                "run-to-run variance (rules.md A.3). Warm up on random tokens instead.",
                [upd.location()],
                related=related,
                flow=flow,
                data=data | {"throwaway": True},
                confidence=Confidence.MEDIUM,
                severity=Severity.LOW,
            )
        return self.finding(
            Verdict.FAIL,
            message,
            [upd.location()],
            related=related,
            flow=flow,
            data=data,
            evidence=f"update {upd_site} precedes scoring {score_site}",
        )

    def _pass(self, updates: list[Event], legal: list[tuple[Event, Event]], scored: bool) -> Finding:
        if legal:
            s, u = legal[0]
            return self.finding(
                Verdict.PASS,
                f"Score-first: validation positions are scored (line {s.location().line}) before the update on "
                f"them (line {u.location().line}) in a loop that moves to new positions each iteration.",
                [u.location()],
                related=[s.location()],
            )
        if not scored:
            return self.finding(Verdict.PASS, "No scoring of validation data found on the path that runs.")
        return self.finding(Verdict.PASS, "No update on validation data before it is scored.")


def _shared_prefix(a: Event, b: Event) -> int:
    n = 0
    while n < min(len(a.chain), len(b.chain)) and a.chain[n][0] is b.chain[n][0]:
        n += 1
    return n


def _describe(ev: Event) -> str:
    return "at module level" if ev.func.name == "<module>" else f"in {ev.func.name}()"


def _unparse(node: object) -> str:
    import ast

    try:
        return ast.unparse(node)  # type: ignore[arg-type]
    except Exception:
        return "<condition>"
