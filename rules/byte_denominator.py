"""Byte denominators, validation coverage and CaseOps data leakage, checked from the logs a record ships.

PG701 recomputes the byte denominator every precise score line implies (bytes = tokens·val_loss / (val_bpb·ln 2),
rules.md §0) and compares it with the canonical value of the run's tokenizer family (§B.5). PG702 checks that the
score covers the whole validation set. PG703 looks for the fingerprints of the CaseOps train/val overlap (§A.8).
The static side (how the byte LUT is built in code) is in rules/byte_lut_code.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from auditor.constants import (
    ASSUMED_TOKENS_FAIL_RATIO,
    CASEOPS_LEAKY_VAL_TOKENS,
    CASEOPS_PIECE_BYTES_DENOMINATOR,
    IMPLIED_MIN_DECIMALS,
    MAX_TRUNCATION_TAIL_TOKENS,
)
from auditor.evidence.bytes_implied import (
    DenominatorCheck,
    canonical_evals,
    caseops_overlap_signs,
    check_denominator,
    family_of,
    tokenizer_facts,
)
from auditor.evidence.logs import ParsedLog, ScoreLine, logs_of
from auditor.facts import AuditContext
from auditor.findings import Basis, Confidence, EvidenceLevel, Finding, Severity, Verdict
from rules.base import Case, Rule

_CODE = "print('train')\n"
# A scored pass that states how many target positions it scored (`positions:61921846`, `scored_tokens:`): compared
# with the validation targets the same run loaded. Positions skipped inside documents (after every BOS, say) are not
# a truncation tail; a small slack covers per-rank batching of the last window.
_SCORED_COUNT = re.compile(
    r"\b(?:positions|scored_tokens|tokens_scored|scored_positions|scored_targets)[:=]\s*(\d+)\b"
)
SCORED_COUNT_SLACK = 16_384


def _log(*lines: str) -> str:
    return "\n".join(lines) + "\n"


def _checked_lines(log: ParsedLog) -> list[ScoreLine]:
    """Score lines that measure the full eval: not diagnostic (partial coverage, rules.md §B.3), and the most
    precise available (8 decimals when the log has any; else the selected score with its rounding error)."""
    usable = [s for s in log.score_lines if not s.is_diagnostic and s.val_loss > 0 and s.val_bpb > 0]
    precise = [s for s in usable if s.decimals >= IMPLIED_MIN_DECIMALS]
    if precise:
        return precise
    final = log.final_score
    return [final] if final is not None and final in usable else []


def is_non_record(ctx: AuditContext) -> bool:
    """A non-record-track submission, by its folder (records/track_non_record_16mb/...) or its `track` claim."""
    sub = ctx.submission
    where = f"{sub.git_path or ''} {sub.root}".lower().replace("-", "_")
    claims, _ = sub.claims()
    track = str((claims or {}).get("track", "")).lower().replace("-", "_")
    return "non_record" in where or "non_record" in track


def _fmt_check(label: str, c: DenominatorCheck) -> str:
    tokens = f"{c.tokens:,} tokens" + (
        " (assumed: the log does not print val_tokens)" if c.tokens_assumed else ""
    )
    return (
        f"`{label}`: val_loss {c.val_loss} over {tokens} and val_bpb {c.val_bpb} imply a byte denominator "
        f"of {c.implied:,.0f}"
    )


class ImpliedByteDenominator(Rule):
    id = "PG701"
    name = "implied-byte-denominator-mismatch"
    title = "The byte denominator implied by the logged score is not the canonical one"
    category = "byte_denominator"
    severity = Severity.CRITICAL
    evidence_level = EvidenceLevel.LOG
    rationale = (
        "val_bpb = val_loss/ln2 × tokens/bytes, so a score line with val_loss and val_bpb to 8 decimals reveals "
        "the byte count the run divided by. Every lossless tokenizer must divide by the UTF-8 size of the same 50k "
        "validation documents (≈151.08 MB; the exact value per tokenizer family and truncation is known). A larger "
        "denominator — piece bytes of case-transformed text, byte-fallback pieces counted as 3 bytes, a space "
        "counted twice — deflates the reported BPB by exactly that ratio."
    )
    basis = Basis(
        ref="openai/parameter-golf README (Submission Process, rule 2)",
        date="2026-03-18",
        quote="If changes are made to the tokenizer or dataset, prove with certainty that the val_bpb is "
        "correctly calculated.",
        section="B.5",
    )
    valid = (
        Case(
            code=_CODE,
            verdict=Verdict.PASS,
            files={
                "train_seed42.log": _log(
                    "val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path=./data/tokenizers/fineweb_8192_bpe.model",
                    "val_tokens: 40540160",
                    "diagnostic quantized val_loss:2.81000000 val_bpb:1.08760000 eval_time:9000ms",
                    "quantized_ttt_phased val_loss:2.80000000 val_bpb:1.08396726 eval_time:400000ms",
                )
            },
            note="sp8192 at its canonical 151,078,222 bytes; the diagnostic line is not used",
        ),
        Case(
            code=_CODE,
            verdict=Verdict.PASS,
            files={
                "train_seed1.log": _log(
                    "val_bpb:byte_sidecar:enabled",
                    "val_tokens: 47851520",
                    "quantized_ttt_phased val_loss:2.31287992 val_bpb:1.05689587 eval_time:519703ms",
                )
            },
            note="CaseOps scored on its byte sidecar (151,074,499 bytes)",
        ),
    )
    invalid = (
        Case(
            code=_CODE,
            verdict=Verdict.FAIL,
            line=3,
            path="train_seed0.log",
            files={
                "train_seed0.log": _log(
                    "  tokenizer_path: ./data/tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model",
                    "val_tokens: 47851520",
                    "quantized_ttt_phased val_loss:2.31287992 val_bpb:0.97008170 eval_time:519703ms",
                )
            },
            note="CaseOps evaluated with tokenizer piece bytes: 164,594,398-byte denominator",
        ),
    )

    def check(self, ctx: AuditContext) -> Iterable[Finding]:
        logs = logs_of(ctx)
        if not logs:
            yield self.skip("no run logs: the byte denominator cannot be checked from evidence")
            return
        table: list[dict[str, object]] = []
        for log in logs:
            yield from self._check_log(log, table)
        ctx.publish_table("byte_denominator_table", table)

    def _check_log(self, log: ParsedLog, table: list[dict[str, object]]) -> Iterable[Finding]:
        facts = tokenizer_facts(log)
        guess = family_of(facts)
        lines = _checked_lines(log)
        if not lines:
            yield self.skip(f"{log.path}: no score line with val_loss and val_bpb")
            return
        checks: list[tuple[ScoreLine, DenominatorCheck]] = []
        for s in lines:
            c = check_denominator(s.val_loss, s.val_bpb, s.decimals, guess.family, facts.val_tokens)
            if c is None:
                continue
            checks.append((s, c))
            table.append({"log": log.path, "line": s.line_no, "label": s.label, **c.to_dict()})
        if not checks:
            yield self.skip(
                f"{log.path}: neither val_tokens nor a known tokenizer family "
                f"({guess.reason}); the implied denominator cannot be computed"
            )
            return
        judged = [(s, c) for s, c in checks if c.status in ("match", "mismatch")]
        if not judged:
            # truncated or foreign validation sets are PG702's verdict; the denominator then means nothing
            yield self.skip(f"{log.path}: the score does not cover the canonical validation set (see PG702)")
            return
        family_text = guess.family or "custom tokenizer"
        why = f"family {family_text} from {guess.reason}"
        bad = [(s, c) for s, c in judged if c.status == "mismatch"]
        final = log.final_score
        final_ok = any(s is final and c.status == "match" for s, c in judged)
        if bad and final_ok:
            # the scored line is right; another eval line (not labelled diagnostic) divides by something else,
            # e.g. an eval that covers part of the stream: worth a look, not a wrong score
            s, c = bad[-1]
            yield self.finding(
                Verdict.WARN,
                f"the scored line `{final.label}` has the canonical denominator, but {_fmt_check(s.label, c)} "
                f"(expected {c.expected:,.0f}, delta {c.delta:+,.0f}): a partial-coverage or differently counted "
                "eval",
                [log.location(s.line_no)],
                confidence=Confidence.LOW,
                related=[log.location(final.line_no)],
                data={"checks": [c.to_dict() for _, c in judged]},
            )
            return
        if bad:
            s, c = next(((s, c) for s, c in bad if s is final), bad[-1])
            canon = (
                f"canonical {c.canonical.denominator:,} for {c.canonical.family} at {c.canonical.val_tokens:,} "
                f"tokens"
                if c.canonical
                else f"the validation text is {c.expected:,.0f} bytes for any lossless tokenizer"
            )
            ratio = c.ratio or 1.0
            hint = ""
            if abs(c.implied - CASEOPS_PIECE_BYTES_DENOMINATOR) < 0.001 * CASEOPS_PIECE_BYTES_DENOMINATOR:
                hint = (
                    " This is the CaseOps piece-bytes denominator (sentinels counted as 3-byte characters)."
                )
            message = (
                f"{_fmt_check(s.label, c)}; expected {c.expected:,.0f} ({canon}; {why}); delta "
                f"{c.delta:+,.0f} bytes ({(ratio - 1) * 100:+.3f}%), beyond the {c.tolerance:,.0f}-byte tolerance. "
                f"The reported val_bpb is off by ×{ratio:.6f}; over the canonical denominator it is "
                f"{c.corrected_bpb:.8f}.{hint}"
            )
            confidence = (
                Confidence.HIGH
                if (s.decimals >= IMPLIED_MIN_DECIMALS and not c.tokens_assumed)
                else Confidence.MEDIUM
            )
            if abs(ratio - 1) < 0.005:
                confidence = (
                    Confidence.MEDIUM
                )  # a small deviation may come from eval coverage, not byte counting
            verdict = Verdict.FAIL
            if c.tokens_assumed and abs(ratio - 1) < ASSUMED_TOKENS_FAIL_RATIO:
                # small deviation on an assumed token count: the eval may simply have scored other targets
                verdict, confidence = Verdict.WARN, Confidence.LOW
            yield self.finding(
                verdict,
                message,
                [log.location(s.line_no)],
                confidence=confidence,
                related=[log.location(x.line_no) for x, _ in bad if x is not s][:5],
                evidence=log.line(s.line_no).strip(),
                data={"checks": [c.to_dict() for _, c in bad]},
            )
            return
        s, c = judged[-1]
        yield self.finding(
            Verdict.PASS,
            f"{_fmt_check(s.label, c)}: within {abs(c.delta or 0):,.0f} bytes of the expected {c.expected:,.0f} "
            f"({why}; {len(judged)} line(s) checked)",
            [log.location(s.line_no)],
            data={"checks": [c.to_dict() for _, c in judged]},
        )


class TruncatedValidation(Rule):
    id = "PG702"
    name = "validation-set-truncated"
    title = "The score covers only part of the validation set"
    category = "byte_denominator"
    severity = Severity.CRITICAL
    evidence_level = EvidenceLevel.LOG
    rationale = (
        "The score is defined on the full fixed 50,000-document validation split. A run that scores far fewer "
        "targets than the canonical count for its tokenizer (beyond the one-window truncation tail) reports a "
        'number on a different, smaller text — e.g. the 9,662,464-token 10k-doc CaseOps val called "full val".'
    )
    basis = Basis(
        ref="issue #2127 (leon2k2k2k, andrewbaggio1); PR #2146 (cocohearts)",
        date="2026-05-01",
        quote="CaseOps data prepared with the --val-docs=10000 default scores a 10k-doc validation set and trains "
        "on validation documents.",
        section="A.8",
    )
    valid = (
        Case(
            code=_CODE,
            verdict=Verdict.PASS,
            files={
                "train.log": _log(
                    "val_loader:shards pattern=./data/datasets/fineweb10B_sp1024/fineweb_val_*.bin tokens:62021632",
                    "final_int8_zlib_roundtrip_exact val_loss:2.05000000 val_bpb:1.21412869",
                )
            },
        ),
    )
    invalid = (
        Case(
            code=_CODE,
            verdict=Verdict.WARN,
            line=1,
            path="train.log",
            files={
                "train.log": _log(
                    "val_loader:shards pattern=./data/datasets/fineweb10B_sp1024/fineweb_val_*.bin tokens:65536",
                    "final_int8_zlib_roundtrip_exact val_loss:2.29290000 val_bpb:1.35568780",
                ),
                "submission.json": '{"track": "non-record-16mb", "val_bpb": 1.3557}',
            },
            note="a non-record study scored on a 65k-token slice: WARN, not comparable",
        ),
        Case(
            code=_CODE,
            verdict=Verdict.FAIL,
            line=3,
            path="train.log",
            files={
                "train.log": _log(
                    "val_loader:shards pattern=./data/datasets/fineweb10B_sp1024/fineweb_val_*.bin tokens:62021632",
                    "final_int8_zlib_roundtrip_exact val_loss:2.07145173 val_bpb:1.22683039",
                    "final_probe_eval docs:50000 positions:61921846 bytes:151022576 eval_time:283951ms",
                )
            },
            note="the headline pass skips the first position after every BOS: 99,786 of the loaded targets",
        ),
        Case(
            code=_CODE,
            verdict=Verdict.FAIL,
            line=2,
            path="train_seed42.log",
            files={
                "train_seed42.log": _log(
                    "  tokenizer_path: ./tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model",
                    "val_tokens: 9662464",
                    "quantized_ttt_phased val_loss:2.20000000 val_bpb:0.93624800 eval_time:300000ms",
                )
            },
        ),
    )

    def check(self, ctx: AuditContext) -> Iterable[Finding]:
        logs = logs_of(ctx)
        if not logs:
            yield self.skip("no run logs: validation coverage cannot be checked")
            return
        non_record = is_non_record(ctx)
        for log in logs:
            yield from self._check_log(log, non_record)

    def _check_log(self, log: ParsedLog, non_record: bool) -> Iterable[Finding]:
        facts = tokenizer_facts(log)
        guess = family_of(facts)
        tokens = facts.val_tokens
        line = facts.lines.get("val_tokens", 0)
        docs = log.ttt_phased_total_docs
        problems: list[str] = []
        note = ""
        if tokens == CASEOPS_LEAKY_VAL_TOKENS:
            problems.append(
                f"val_tokens {tokens:,} is the 10k-document CaseOps validation set (the canonical "
                f"CaseOps val is 47,851,520 targets)"
            )
        elif tokens is not None and guess.family:
            counts = sorted({r.val_tokens for r in canonical_evals(guess.family)})
            nearest = min(counts, key=lambda n: abs(n - tokens))
            if abs(nearest - tokens) > MAX_TRUNCATION_TAIL_TOKENS:
                # fewer/more targets than the canonical export: the implied denominator tells a different
                # tokenization of the whole text apart from a cut-down validation set
                checks = [
                    check_denominator(s.val_loss, s.val_bpb, s.decimals, guess.family, tokens)
                    for s in _checked_lines(log)
                ]
                judged = [c for c in checks if c is not None]
                if judged and all(c.status != "truncated" for c in judged):
                    c = judged[-1]
                    note = (
                        f"val_tokens {tokens:,} is not the canonical {nearest:,} for {guess.family}, but the "
                        f"score divides by {c.implied:,.0f} bytes, the whole validation text (another tokenizer "
                        "model or export of it)"
                    )
                elif tokens < counts[0]:
                    problems.append(
                        f"val_tokens {tokens:,} is {tokens / counts[0]:.1%} of the canonical "
                        f"{counts[0]:,} for {guess.family} ({guess.reason})"
                        + (
                            f", and the score divides by only {judged[-1].implied:,.0f} bytes"
                            if judged
                            else ""
                        )
                    )
                else:
                    yield self.finding(
                        Verdict.WARN,
                        f"{log.path}: val_tokens {tokens:,} matches no canonical "
                        f"{guess.family} validation export ({', '.join(f'{n:,}' for n in counts)})",
                        [log.location(line)],
                        confidence=Confidence.MEDIUM,
                    )
                    return
        scored = _scored_count(log)
        if scored is not None and tokens is not None and scored[0] < tokens - SCORED_COUNT_SLACK:
            count, sline = scored
            problems.append(
                f"the scored pass reports {count:,} positions (line {sline}) of the {tokens:,} validation targets "
                f"it loaded: {tokens - count:,} positions are never scored (not a truncation tail), so the score "
                "covers a chosen subset of the text"
            )
            line = sline
        if docs is not None and docs < 50_000:
            problems.append(
                f"phased TTT evaluates total_docs:{docs} instead of the 50,000 validation documents"
            )
        if problems and non_record:
            # a non-record study may evaluate on a slice; its number is then not comparable to the leaderboard
            yield self.finding(
                Verdict.WARN,
                f"{log.path}: " + "; ".join(problems) + ": a non-record submission, but "
                "its val_bpb is not on the full validation set and is not comparable to records",
                [log.location(line)],
                evidence=log.line(line).strip(),
                confidence=Confidence.MEDIUM,
            )
        elif problems:
            yield self.finding(
                Verdict.FAIL,
                f"{log.path}: " + "; ".join(problems) + ": the score is not on the full validation set",
                [log.location(line)],
                evidence=log.line(line).strip(),
            )
        elif tokens is None:
            yield self.skip(f"{log.path}: the log does not print val_tokens")
        elif guess.family is None and any(
            c is not None and c.status == "truncated"
            for c in (
                check_denominator(s.val_loss, s.val_bpb, s.decimals, None, tokens)
                for s in _checked_lines(log)
            )
        ):
            msg = (
                f"{log.path}: the score divides by far fewer bytes than the validation text "
                f"({tokens:,} targets): only part of the validation set was scored"
            )
            yield self.finding(
                Verdict.WARN if non_record else Verdict.FAIL,
                msg,
                [log.location(line)],
                confidence=Confidence.MEDIUM,
            )
        elif guess.family is None:
            yield self.skip(f"{log.path}: no canonical token count for this tokenizer ({guess.reason})")
        else:
            yield self.finding(
                Verdict.PASS,
                f"{log.path}: "
                + (note or f"val_tokens {tokens:,} covers the canonical {guess.family} validation set"),
                [log.location(line)],
            )


def _scored_count(log: ParsedLog) -> tuple[int, int] | None:
    """(positions, line) stated by an evaluation line after training: a line that times an eval or counts documents
    and states how many target positions it scored. The last such line (the headline pass comes last)."""
    start = log.stop.line_no if log.stop is not None else 0
    found = None
    for n, text in enumerate(log.lines, 1):
        if n <= start or not ("eval" in text or "docs:" in text):
            continue
        m = _SCORED_COUNT.search(text)
        if m:
            found = (int(m[1]), n)
    return found


class CaseOpsTrainValOverlap(Rule):
    id = "PG703"
    name = "caseops-train-val-overlap"
    title = "CaseOps data prepared with the leaky --val-docs=10000 default"
    category = "train_on_val"
    severity = Severity.CRITICAL
    evidence_level = EvidenceLevel.LOG
    rationale = (
        "prepare_caseops_data.py defaults to --val-docs=10000 and 10M-token shards: training then starts at "
        "document 10,000 while the canonical validation set is documents 0..49,999, so 80% of the validation "
        "documents are trained on. Its logs show it: train_shards 1499 (or any count above the clean export's 80) "
        "and, for the 10k-doc val, val_tokens 9,662,464."
    )
    basis = Basis(
        ref="issue #2127 (leon2k2k2k, andrewbaggio1); PR #2146 comments (cocohearts)",
        date="2026-05-01",
        quote="15 of 34 CaseOps-lineage PRs are affected by the train/val overlap and are excluded from the May-1 "
        "leaderboard.",
        section="A.8",
    )
    valid = (
        Case(
            code=_CODE,
            verdict=Verdict.PASS,
            files={
                "train_seed0.log": _log(
                    "  datasets_dir: ./data/datasets/fineweb10B_sp8192_caseops/datasets/datasets/"
                    "fineweb10B_sp8192_lossless_caps_caseops_v1_reserved",
                    "train_shards: 80",
                    "val_tokens: 47851520",
                )
            },
            note="the clean HF export also has datasets/datasets; 80 shards, full val",
        ),
    )
    invalid = (
        Case(
            code=_CODE,
            verdict=Verdict.FAIL,
            line=3,
            path="train_seed0.log",
            files={
                "train_seed0.log": _log(
                    "  datasets_dir: ./data/datasets/fineweb10B_sp8192_caseops/datasets/datasets/"
                    "fineweb10B_sp8192_lossless_caps_caseops_v1_reserved",
                    "  vocab_size: 8192",
                    "train_shards: 1499",
                    "val_tokens: 47851520",
                )
            },
        ),
    )

    def check(self, ctx: AuditContext) -> Iterable[Finding]:
        logs = logs_of(ctx)
        if not logs:
            yield self.skip("no run logs: data-preparation fingerprints cannot be checked")
            return
        for log in logs:
            facts = tokenizer_facts(log)
            guess = family_of(facts)
            signs = caseops_overlap_signs(facts, guess.family)
            decisive = [s for s in signs if s.decisive]
            if decisive:
                first = decisive[0]
                others = [s for s in signs if s is not first]
                yield self.finding(
                    Verdict.FAIL,
                    f"{log.path}: " + "; ".join(s.message for s in [first, *others]),
                    [log.location(first.line)],
                    related=[log.location(s.line) for s in others if s.line],
                    evidence=log.line(first.line).strip(),
                    confidence=Confidence.HIGH
                    if first.kind == "leaky_val_tokens" or facts.train_shards == 1499
                    else Confidence.MEDIUM,
                )
            elif guess.family == "caseops_sp8192":
                yield self.finding(
                    Verdict.PASS,
                    f"{log.path}: CaseOps run without the leaky-preparation "
                    f"fingerprints (train_shards {facts.train_shards}, val_tokens {facts.val_tokens})",
                    [log.location(facts.lines.get("train_shards", 0))],
                )
            else:
                yield self.skip(f"{log.path}: not a CaseOps run ({guess.reason})")
