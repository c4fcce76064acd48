"""Training and evaluation time of one run, from its log (rules.md §A.13).

Training. The loop reads the wallclock after each step *without a device sync* and stops after the step at which
it is over budget; the final ``train_time`` is taken after the next sync. So a compliant run stops past
600,000 ms by up to one step of check granularity plus up to one step of GPU work still in flight when the clock
was read: the enforcement tolerance is two steps of this run's own step time. Merged records overran by at most
~1.6 steps (e.g. 600,137 ms at 86.7 ms/step); the runs ruled over the limit overran by ~9-17 steps (601,153 ms
with a forced step count, PR #1956; 602,048 ms, PR #1945 seed 42). GPTQ Hessian collection reads training data,
so ``train_time + Hessian time`` is held to the same budget and the same tolerance (the reserve must cover it).

Evaluation. The scored pass is timed by the script (``eval_time:Nms`` of the score line, ``total_eval_time``);
compile warmup, decompression and diagnostic evals are untimed by convention and reported separately.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from auditor.constants import EVAL_LIMIT_MS, TRAIN_LIMIT_MS
from auditor.evidence.logs import ParsedLog

STEP_TOLERANCE = 2.0  # steps: one of check granularity + one of unsynchronised in-flight work


@dataclass
class TrainTiming:
    train_ms: float
    line: int  # stop line (or last step line)
    step: int | None
    step_ms: float | None  # this run's step time near the end
    step_ms_from: str
    stopped_by_cap: bool
    hessian_s: float | None = None
    hessian_line: int = 0
    reserve_s: float | None = None
    reserve_line: int = 0

    @property
    def tolerance_ms(self) -> float:
        return STEP_TOLERANCE * self.step_ms if self.step_ms else 0.0

    @property
    def overrun_ms(self) -> float:
        return self.train_ms - TRAIN_LIMIT_MS

    @property
    def with_hessians_ms(self) -> float | None:
        return None if self.hessian_s is None else self.train_ms + 1000.0 * self.hessian_s

    def steps(self, ms: float) -> float | None:
        return ms / self.step_ms if self.step_ms else None

    def describe(self) -> str:
        parts = [f"train_time {self.train_ms:,.0f} ms (line {self.line})"]
        if self.step_ms:
            parts.append(
                f"step time {self.step_ms:.1f} ms ({self.step_ms_from}); tolerance "
                f"{STEP_TOLERANCE:g} steps = {self.tolerance_ms:,.0f} ms"
            )
        if self.hessian_s is not None:
            parts.append(f"GPTQ Hessians {self.hessian_s:g} s (line {self.hessian_line})")
        if self.reserve_s is not None:
            parts.append(f"GPTQ reserve {self.reserve_s:g} s")
        return "; ".join(parts)


def train_timing(log: ParsedLog) -> TrainTiming | None:
    """The run's training time and its step time near the end; None when the log shows no training."""
    fine = [s for s in log.steps if not s.coarse]
    if log.stop is not None:
        train_ms, line, step, capped = log.stop.train_ms, log.stop.line_no, log.stop.step, True
    elif log.steps:
        last = log.steps[-1]
        train_ms, line, step, capped = last.train_ms, last.line_no, last.step, False
    else:
        return None
    step_ms, how = None, ""
    if len(fine) >= 2 and fine[-1].step > fine[-2].step:
        a, b = fine[-2], fine[-1]
        step_ms, how = (b.train_ms - a.train_ms) / (b.step - a.step), f"steps {a.step}..{b.step}"
    elif fine and fine[-1].step_avg_ms:
        step_ms, how = fine[-1].step_avg_ms, f"step_avg at step {fine[-1].step}"
    elif step:
        step_ms, how = train_ms / step, f"mean over {step} steps"
    # The hyperparameter dump is exact; `gptq:reserving 0s` of older scripts rounded 0.5 s to 0.
    try:
        reserve = (
            float(log.hparams["gptq_reserve_seconds"]) if "gptq_reserve_seconds" in log.hparams else None
        )
    except ValueError:
        reserve = None
    if reserve is None:
        reserve = log.gptq.reserve_s
    return TrainTiming(
        train_ms=train_ms,
        line=line,
        step=step,
        step_ms=step_ms,
        step_ms_from=how,
        stopped_by_cap=capped,
        hessian_s=log.gptq.collect_s,
        hessian_line=log.gptq.collect_line,
        reserve_s=reserve,
        reserve_line=log.gptq.reserve_line,
    )


@dataclass
class EvalTiming:
    scored_ms: float | None  # the timer of the scored pass
    scored_line: int
    scored_from: str
    untimed: list[tuple[str, float, int]] = field(default_factory=list)  # (what, ms, line)
    other_evals_ms: float = 0.0  # non-diagnostic evals before the scored one (old records sum these)

    @property
    def all_ms(self) -> float:
        return (self.scored_ms or 0.0) + self.other_evals_ms + sum(ms for _, ms, _ in self.untimed)

    def describe(self) -> str:
        lines = [
            f"scored pass {self.scored_ms:,.0f} ms ({self.scored_from}, line {self.scored_line})"
            if self.scored_ms is not None
            else "scored pass: no timer logged"
        ]
        if self.other_evals_ms:
            lines.append(f"earlier non-diagnostic evals {self.other_evals_ms:,.0f} ms")
        for what, ms, line in self.untimed:
            lines.append(f"untimed by convention: {what} {ms:,.0f} ms (line {line})")
        lines.append(f"everything after training: {self.all_ms:,.0f} ms; limit {EVAL_LIMIT_MS:,} ms")
        return "\n".join(lines)


def eval_timing(log: ParsedLog) -> EvalTiming | None:
    final = log.final_score
    if final is None:
        return None
    if log.total_eval_time_s is not None and log.total_eval_time_line > final.line_no - 3:
        scored, line, src = log.total_eval_time_s * 1000.0, log.total_eval_time_line, "total_eval_time"
    elif final.eval_ms is not None:
        scored, line, src = final.eval_ms, final.line_no, f"eval_time of `{final.label}`"
    else:
        scored, line, src = None, final.line_no, "no eval_time on the score line"
    timing = EvalTiming(scored, line, src)
    counted: set[str] = set()
    for s in log.score_lines:
        if s is final or s.eval_ms is None or s.line_no > final.line_no:
            continue
        key = s.label.replace("_exact", "")
        if key == final.label.replace("_exact", "") or key in counted:
            continue  # the 8-decimal twin of a line already counted
        if abs(s.val_bpb - final.val_bpb) <= 0.5 * (10.0**-s.decimals + 10.0**-final.decimals):
            continue  # the scored pass itself, printed by another line (`ttt_sliding:done` next to `legal_ttt`)
        counted.add(key)
        if s.is_diagnostic or s.is_prequant:
            timing.untimed.append((f"`{s.label}` eval", s.eval_ms, s.line_no))
        else:
            timing.other_evals_ms += s.eval_ms
    if log.ttt_compile_warmup_s is not None:
        timing.untimed.append(
            ("TTT compile warmup", log.ttt_compile_warmup_s * 1000.0, log.ttt_compile_warmup_line)
        )
    return timing
