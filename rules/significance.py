"""PG751: is the improvement over the previous record statistically significant? (rules.md §A.12)

Needs a reference: `--reference FOLDER` (the previous record; its per-seed val_loss from its logs, else its
submission.json) or `--reference-bpb "v1,v2,..."` (per-seed val_loss in nats). Without one the rule is skipped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from statistics import fmean

from auditor.constants import RECORD_MARGIN_NATS, RECORD_P_APPLIED, RECORD_P_WRITTEN
from auditor.errors import InputError
from auditor.evidence.logs import logs_of
from auditor.evidence.significance import (
    SeedValue,
    SeedValues,
    SignificanceReport,
    assess,
    parse_numbers,
    seed_values_of,
)
from auditor.facts import AuditContext
from auditor.findings import Basis, Confidence, EvidenceLevel, Finding, Location, Severity, Verdict
from auditor.submission import load_path
from rules.base import Case, Rule

# values below this are bits per byte, not nats per token, in every tokenizer family of the challenge
# (val_loss ≥ 1.9 nats/token for sp1024..sp8192 records; val_bpb ≤ 1.3 for anything near the leaderboard)
_BPB_LOOKING = 1.6


def _logs(seeds: list[tuple[int, float, float]]) -> dict[str, str]:
    return {
        f"train_seed{s}.log": f"seed:{s}\nquantized_ttt_phased val_loss:{loss:.8f} val_bpb:{bpb:.8f} "
        "eval_time:400000ms\n"
        for s, loss, bpb in seeds
    }


_CAND = [(42, 2.77180000, 1.07300000), (1337, 2.77260000, 1.07331000), (2024, 2.77120000, 1.07277000)]


class RecordSignificance(Rule):
    record_only = True
    id = "PG751"
    name = "improvement-not-significant"
    title = "The improvement over the reference record is not statistically significant"
    category = "evidence"
    severity = Severity.MEDIUM
    confidence = Confidence.HIGH
    evidence_level = EvidenceLevel.LOG
    rationale = (
        "Seeds vary, so a record must show its gain is real: the README asks for ≥ 0.005 nats at p < 0.01; the "
        "maintainers' leaderboard applies p < 0.25 against the previous frontier row. Both are one-sided Welch "
        "t-tests on per-seed val_loss. Below the applied cutoff the row is not accepted (FAIL); between the two the "
        "written rule is unmet (WARN) and the report says how many seeds would be needed."
    )
    basis = Basis(
        ref="openai/parameter-golf README (Submission Process, rule 1); PR #1902 / #1899 (cocohearts)",
        date="2026-03-18",
        quote="They must beat the existing SOTA by at least 0.005 nats. As in modded-nanogpt, because of inter-run "
        "variance all submissions must provide enough run logs to show at `p < 0.01` that they achieved the "
        "required 0.005-nat improvement.",
        section="A.12",
    )
    valid = (
        Case(code="print(1)\n", files=_logs(_CAND), verdict=Verdict.SKIP, note="no reference given"),
        Case(
            code="print(1)\n",
            files=_logs(_CAND),
            verdict=Verdict.PASS,
            options={"reference_values": "2.7810, 2.7822, 2.7805"},
        ),
    )
    invalid = (
        Case(
            code="print(1)\n",
            files=_logs(_CAND),
            verdict=Verdict.FAIL,
            line=2,
            path="train_seed1337.log",
            options={"reference_values": "2.7721, 2.7719, 2.7725"},
            note="0.0003 nats better: p ≈ 0.3",
        ),
        Case(
            code="print(1)\n",
            files=_logs(_CAND),
            verdict=Verdict.WARN,
            line=2,
            path="train_seed1337.log",
            options={"reference_values": "2.7750, 2.7745, 2.7752"},
            note="p < 0.25 but well under 0.005 nats",
        ),
    )

    def check(self, ctx: AuditContext) -> Iterable[Finding]:
        opts = ctx.submission.options
        ref_path, ref_text = opts.reference, opts.reference_values
        if not ref_path and not ref_text:
            yield self.skip("no reference record given (--reference FOLDER or --reference-bpb v1,v2,...)")
            return
        cand = seed_values_of(ctx.submission, logs_of(ctx))
        try:
            ref = self._reference(str(ref_path) if ref_path else None, str(ref_text) if ref_text else None)
        except (InputError, ValueError) as exc:
            yield self.finding(
                Verdict.WARN, f"the reference could not be read: {exc}", confidence=Confidence.LOW
            )
            return
        where = self._where(ctx, cand)
        if len(cand.values) < 2 or len(ref.values) < 2:
            yield self.finding(
                Verdict.WARN,
                f"significance cannot be tested: {len(cand.values)} candidate seed(s) ({cand.source}) and "
                f"{len(ref.values)} reference seed(s) ({ref.source}); Welch's test needs at least two per side",
                where,
                confidence=Confidence.MEDIUM,
            )
            return
        c_loss, r_loss, unit = cand.losses, ref.losses, "nats"
        margin = RECORD_MARGIN_NATS
        notes = [*cand.notes, *ref.notes]
        if ref.source == "numbers" and fmean(r_loss) < _BPB_LOOKING <= fmean(c_loss) and cand.bpbs:
            # the reference numbers are bits per byte: compare BPB and convert the margin with the candidate's own
            # bits-per-nat ratio (val_bpb / val_loss = tokens / (bytes · ln 2))
            ratio = fmean(b / v.val_loss for b, v in zip(cand.bpbs, cand.values, strict=True))
            c_loss, unit, margin = cand.bpbs, "bpb", RECORD_MARGIN_NATS * ratio
            notes.append(
                f"reference values read as val_bpb (all < {_BPB_LOOKING}); 0.005 nats = {margin:.5f} bpb"
            )
        rep = assess(
            c_loss,
            r_loss,
            cand.bpbs if unit == "nats" else None,
            ref.bpbs if unit == "nats" else None,
            margin=margin,
        )
        rep.unit = unit
        message = self._message(rep, cand, ref, margin, notes)
        data = {
            **rep.to_dict(),
            "candidate": [v.__dict__ for v in cand.values],
            "reference": [v.__dict__ for v in ref.values],
        }
        if rep.written_ok:
            yield self.finding(Verdict.PASS, message, where, data=data)
        elif rep.applied_ok:
            yield self.finding(Verdict.WARN, message, where, data=data)
        else:
            yield self.finding(Verdict.FAIL, message, where, data=data)

    # ----------------------------------------------------------------------------------------------------------
    @staticmethod
    def _reference(path: str | None, numbers: str | None) -> SeedValues:
        if path:
            ref = seed_values_of(load_path(path))
            ref.notes = [f"reference {path}: {n}" for n in ref.notes] or [f"reference {path} ({ref.source})"]
            return ref
        assert numbers is not None
        vals = parse_numbers(numbers)
        return SeedValues([SeedValue(None, v, None, "cli") for v in vals], "numbers", [])

    @staticmethod
    def _where(ctx: AuditContext, cand: SeedValues) -> list[Location]:
        """The first candidate log's scored line (else submission.json)."""
        for v in cand.values:
            if v.source.startswith("log:"):
                path, line = v.source[len("log:") :].rsplit(":", 1)
                for log in logs_of(ctx):
                    if log.path == path:
                        return [log.location(int(line))]
        claims = ctx.submission.claims_path
        return [Location(path=claims)] if claims else []

    @staticmethod
    def _message(
        rep: SignificanceReport, cand: SeedValues, ref: SeedValues, margin: float, notes: list[str]
    ) -> str:
        u = rep.unit
        gain = f"{rep.improvement_nats:+.5f} {u}"
        if rep.improvement_bpb is not None:
            gain += f" ({rep.improvement_bpb:+.5f} bpb)"
        need = rep.seeds_needed_written
        if rep.written_ok:
            tail = "meets the written rule"
        elif need is None:
            tail = (
                f"the observed gain is under the {margin:.5f}-{u} margin, so no number of seeds meets the written "
                "rule"
            )
        else:
            tail = (
                f"about {need} seeds per side at the observed means and spreads would meet the written rule"
            )
        text = (
            f"mean val_loss {rep.mean_candidate:.6f} over {rep.n_candidate} seeds ({cand.source}) vs "
            f"{rep.mean_reference:.6f} over {rep.n_reference} ({ref.source}): improvement {gain}; applied rule "
            f"(p < {RECORD_P_APPLIED}): p = {_p(rep.applied_p)} {'met' if rep.applied_ok else 'NOT met'}; written "
            f"rule (≥ {margin:.5f} {u} at p < {RECORD_P_WRITTEN}): p = {_p(rep.written_p)} "
            f"{'met' if rep.written_ok else 'NOT met'}; {tail}"
        )
        if not rep.applied_ok:
            need_applied = rep.seeds_needed_applied
            text += (
                "; no number of seeds meets the applied rule either (no improvement)"
                if need_applied is None
                else f"; about {need_applied} seeds per side would meet the applied rule"
            )
        if notes:
            text += " (" + "; ".join(notes) + ")"
        return text


def _p(p: float) -> str:
    if p < 1e-4:
        return f"{p:.1e}"
    return f"{p:.4f}" if not math.isnan(p) else "nan"
