"""Cross-checks of what a submission claims against what its run logs show (rules.md §D, §E, §A.12).

- PG611: submission.json per-seed and headline val_bpb / val_loss / artifact bytes vs each seed's scored line.
- PG612: README headline and per-seed table numbers vs the logs.
- PG613: the source a log embeds vs the shipped train_gpt.py (or its decoded layer).
- PG614: a log that stops before its final scored evaluation (incomplete evidence).
- PG615: runs in the logs that submission.json does not disclose.

Tolerances are the rounding of the printed precision of both numbers compared: 1.0614 in a README agrees with
1.06141 (4 decimals: +-0.00005) but 1.06145 in submission.json does not agree with a log's 1.06140940.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import itertools
import re
import statistics
import warnings
from collections.abc import Iterable

from auditor.evidence.claims import Claims, Number, claims_of, readme_bpb_numbers
from auditor.evidence.logs import ParsedLog, ScoreLine, logs_of
from auditor.evidence.table import seed_table_of
from auditor.facts import AuditContext
from auditor.findings import Basis, Confidence, EvidenceLevel, Finding, Location, Severity, Verdict
from rules.base import Case, Rule

README_BASIS = Basis(
    ref="openai/parameter-golf README (Submission Process)",
    date="2026-03-18",
    quote="A `submission.json` file (see the example runs) that includes your name, GitHub ID, `val_bpb`, and "
    "related metadata. A train log, automatically produced by your script.",
    section="A.1",
)

# -- shared fixture text for the embedded cases --------------------------------------------------------------------
CASE_LOG_42 = """\
seed:42
world_size:8 grad_accum_steps:1
val_loader:shards pattern=./data/fineweb_val_*.bin tokens:62021632
step:6900/9000 train_loss:1.9705 train_time:599947ms step_avg:86.95ms
stopping_early: wallclock_cap train_time:600051ms step:6901/9000
Serialized model int6+zstd: 15648811 bytes
Total submission size int6+zstd: 15706984 bytes
final_int6_roundtrip_exact val_loss:1.97031200 val_bpb:1.16693811
final_int6_sliding_window val_loss:1.9321 val_bpb:1.1443 stride:64 eval_time:73150ms
final_int6_sliding_window_exact val_loss:1.93212054 val_bpb:1.14430897
"""
CASE_LOG_7 = (
    CASE_LOG_42.replace("seed:42", "seed:7")
    .replace("1.14430897", "1.14512000")
    .replace("1.1443 ", "1.1451 ")
    .replace("1.93212054", "1.93350001")
    .replace("1.9321 ", "1.9335 ")
)
CASE_JSON_OK = """\
{
  "author": "A", "github_id": "a", "name": "run", "date": "2026-03-25",
  "val_bpb": 1.14471, "val_loss": 1.93281,
  "seeds": [42, 7],
  "seed_results": {
    "42": {"val_bpb": 1.14430897, "val_loss": 1.93212054, "artifact_bytes": 15706984},
    "7": {"val_bpb": 1.14512, "val_loss": 1.93350001}
  }
}
"""


def _loc_json(claims: Claims, needle: str) -> list[Location]:
    if not claims.path:
        return []
    line = claims.line_of(needle)
    text = claims.raw_text.splitlines()[line - 1].strip() if line else ""
    return [Location(path=claims.path, line=line, snippet=text[:240])]


def _score_lines(log: ParsedLog) -> Iterable[ScoreLine]:
    return (s for s in log.score_lines if not s.is_diagnostic)


def _fmt(n: float | None, decimals: int = 8) -> str:
    return "?" if n is None else f"{n:.{decimals}f}".rstrip("0").rstrip(".")


class ClaimedScoresDisagreeWithLogs(Rule):
    record_only = True
    id = "PG611"
    name = "claimed-scores-disagree-with-logs"
    title = "submission.json numbers that the run logs do not show"
    category = "evidence"
    severity = Severity.HIGH
    confidence = Confidence.HIGH
    evidence_level = EvidenceLevel.LOG
    rationale = (
        "The leaderboard takes val_bpb from submission.json, but the evidence is the log the script wrote. Every "
        "per-seed val_bpb / val_loss must equal the scored line of that seed's log (rules.md §E: the most specific "
        "score-bearing line, diagnostic evals excluded) within the rounding of the printed precision, and the "
        "headline mean must be the mean of those lines. A claimed seed without a log is missing evidence."
    )
    basis = README_BASIS
    valid = (
        Case(
            code="print('train')\n",
            files={
                "submission.json": CASE_JSON_OK,
                "train_seed42.log": CASE_LOG_42,
                "train_seed7.log": CASE_LOG_7,
            },
            verdict=Verdict.PASS,
        ),
    )
    invalid = (
        Case(
            code="print('train')\n",
            files={
                "submission.json": CASE_JSON_OK.replace('"val_bpb": 1.14430897', '"val_bpb": 1.13430897'),
                "train_seed42.log": CASE_LOG_42,
                "train_seed7.log": CASE_LOG_7,
            },
            verdict=Verdict.FAIL,
            line=10,
            path="train_seed42.log",
            note="seed 42 claims 0.01 better than its log",
        ),
        Case(
            code="print('train')\n",
            files={
                "submission.json": CASE_JSON_OK.replace('"val_bpb": 1.14430897', '"val_bpb": 1.16693811'),
                "train_seed42.log": CASE_LOG_42,
                "train_seed7.log": CASE_LOG_7,
            },
            verdict=Verdict.WARN,
            line=8,
            path="train_seed42.log",
            note="claim equals the round-trip line, not the sliding-window score; the mean then disagrees too",
        ),
        Case(
            code="print('train')\n",
            files={"submission.json": CASE_JSON_OK, "train_seed42.log": CASE_LOG_42},
            verdict=Verdict.WARN,
            line=7,
            path="submission.json",
            note="seed 7 claimed, no log for it",
        ),
    )

    def check(self, ctx: AuditContext) -> Iterable[Finding]:
        claims = claims_of(ctx)
        logs = logs_of(ctx)
        table = seed_table_of(ctx)  # also puts the per-seed table into the report
        if not logs:
            yield self.skip("no run logs to compare with (reported by PG601)")
            return
        checked = 0
        bad = 0
        for lg in logs:
            # The file name is a claim too: a run named for one seed that logged another is mislabelled.
            if lg.filename_seed is not None and lg.seed_source == "log" and lg.seed != lg.filename_seed:
                bad += 1
                yield self.finding(
                    Verdict.WARN,
                    f"{lg.path} is named for seed {lg.filename_seed} but the run logged seed {lg.seed}",
                    [lg.location(lg.seed_line)],
                    related=_loc_json(claims, f'"{lg.filename_seed}"'),
                    severity=Severity.MEDIUM,
                )
        if claims.problem or not claims.data:
            if not bad:
                yield self.skip("no readable submission.json (reported by PG602)")
            return
        for seed, blocks in sorted(claims.seeds.items()):
            mine = [lg for lg in logs if lg.answers_to_seed(seed)]
            for block in blocks:
                for finding in self._check_block(claims, seed, block, mine):
                    bad += finding.verdict is not Verdict.PASS
                    yield finding
                checked += 1
        for seed in claims.seed_list:
            if seed not in claims.seeds and not any(lg.answers_to_seed(seed) for lg in logs):
                bad += 1
                yield self.finding(
                    Verdict.WARN,
                    f"submission.json lists seed {seed} but no log of seed {seed} is shipped "
                    "(missing evidence)",
                    _loc_json(claims, '"seeds"'),
                    severity=Severity.MEDIUM,
                )
        for finding in self._check_headline(claims, logs, table):
            bad += 1
            yield finding
        if not bad:
            yield self.finding(
                Verdict.PASS, f"{checked} per-seed claim(s) and the headline agree with the logs"
            )

    def _check_block(self, claims: Claims, seed: int, block, mine: list[ParsedLog]) -> Iterable[Finding]:
        where = _loc_json(claims, f'"{seed}"')
        if block.val_bpb is None and block.val_loss is None:
            return
        if not mine:
            yield self.finding(
                Verdict.WARN,
                f"{block.source} claims val_bpb {_fmt(block.val_bpb.value if block.val_bpb else None)} for seed "
                f"{seed}, but no log of seed {seed} is shipped (missing evidence)",
                where,
                severity=Severity.MEDIUM,
            )
            return
        finals = [(lg, lg.final_score) for lg in mine if lg.final_score]
        if not finals:
            # Every log of the seed ends before its score: PG614 fails that; here it is only the missing match.
            yield self.finding(
                Verdict.WARN,
                f"{block.source} claims seed {seed}, but no log of seed {seed} reaches "
                "its final score line (see PG614)",
                where,
                severity=Severity.MEDIUM,
            )
            return
        for metric in ("val_bpb", "val_loss"):
            claimed: Number | None = getattr(block, metric)
            if claimed is None:
                continue
            if any(claimed.agrees(getattr(s, metric), s.decimals) for _, s in finals):
                continue
            other = next(
                (
                    (lg, s)
                    for lg in mine
                    for s in _score_lines(lg)
                    if claimed.agrees(getattr(s, metric), s.decimals)
                ),
                None,
            )
            lg, s = finals[-1]
            logged = getattr(s, metric)
            if other is not None:
                olg, os_ = other
                yield self.finding(
                    Verdict.WARN,
                    f"{block.source}.{metric} = {_fmt(claimed.value)} is the `{os_.label}` line of {olg.path}, "
                    f"not its scored line `{s.label}` = {_fmt(logged)} (line {s.line_no})",
                    [olg.location(os_.line_no)],
                    related=[lg.location(s.line_no), *where],
                    severity=Severity.MEDIUM,
                    data={
                        "seed": seed,
                        "metric": metric,
                        "claimed": claimed.value,
                        "logged": logged,
                        "matched_label": os_.label,
                        "scored_label": s.label,
                    },
                )
                continue
            # Lower is better for both bpb and loss: an inflated claim fails, a conservative one warns.
            better = claimed.value < logged
            yield self.finding(
                Verdict.FAIL if better else Verdict.WARN,
                f"{block.source}.{metric} = {_fmt(claimed.value)} but the scored line of {lg.path} says "
                f"{_fmt(logged)} (`{s.label}`, line {s.line_no}); difference {claimed.value - logged:+.8f} is beyond "
                f"the rounding of the printed precision (+-{claimed.half_ulp + 0.5 * 10**-s.decimals:.1e})"
                + (
                    "; the claim is better than the evidence"
                    if better
                    else "; the claim is worse than the log"
                ),
                [lg.location(s.line_no)],
                related=where,
                severity=Severity.HIGH if better else Severity.MEDIUM,
                data={"seed": seed, "metric": metric, "claimed": claimed.value, "logged": logged},
            )
        if block.artifact_bytes is not None:
            arts = [(lg, lg.artifact_size) for lg in mine if lg.artifact_size]
            if arts and not any(a.bytes == block.artifact_bytes for _, a in arts):
                lg, a = arts[-1]
                yield self.finding(
                    Verdict.WARN,
                    f"{block.source}.artifact_bytes = {block.artifact_bytes} but {lg.path} logs {a.bytes} bytes "
                    f"(line {a.line_no})",
                    [lg.location(a.line_no)],
                    related=where,
                    severity=Severity.LOW,
                )

    def _check_headline(self, claims: Claims, logs: list[ParsedLog], table) -> Iterable[Finding]:
        claimed = claims.val_bpb
        if claimed is None:
            return
        candidates = _mean_candidates(logs, claims)
        if not candidates:
            return
        if any(mean_agrees(claimed, m, d) for m, d in candidates):
            return
        ref, dec = candidates[0]
        where = _loc_json(claims, f'"{claims.val_bpb_key}"')
        rows = [r for r in table.rows if r.seed is not None and r.val_bpb is not None]
        detail = ", ".join(f"{r.seed}: {_fmt(r.val_bpb)}" for r in rows) or "no seeded log"
        other = next(
            ((lg, s) for lg in logs for s in lg.score_lines if claimed.agrees(s.val_bpb, s.decimals)), None
        )
        if other is not None:
            lg, s = other
            yield self.finding(
                Verdict.WARN,
                f"headline {claims.val_bpb_key} = {_fmt(claimed.value)} is the `{s.label}` line of {lg.path}, not "
                f"the scored lines' mean {ref:.8f} ({detail})",
                [lg.location(s.line_no)],
                related=where,
                severity=Severity.MEDIUM,
                data={"claimed": claimed.value, "logged_mean": ref, "matched_label": s.label},
            )
            return
        # The headline is a derived statistic (mean of bpb, bpb of the mean loss, a disclosed subset...), so a
        # mismatch is a warning; it fails only when it is better than every logged run: no average of the
        # evidence can produce a number below its smallest member.
        best = min(v for v, _ in candidates)
        verdict = (
            Verdict.FAIL if claimed.value < best - 2 * claimed.half_ulp - 0.5 * 10**-dec else Verdict.WARN
        )
        best_row = min(rows, key=lambda r: r.val_bpb) if rows else None  # type: ignore[arg-type,return-value]
        primary = (
            [next(lg for lg in logs if lg.path == best_row.log).location(best_row.line)]
            if best_row
            else where
        )
        yield self.finding(
            verdict,
            f"headline {claims.val_bpb_key} = {_fmt(claimed.value)} but the logs' scored lines average "
            f"{ref:.8f} ({detail})"
            + (
                f"; the claim is better than every logged run (best {best:.8f})"
                if verdict is Verdict.FAIL
                else ""
            ),
            primary,
            related=where,
            severity=Severity.HIGH if verdict is Verdict.FAIL else Severity.MEDIUM,
            data={"claimed": claimed.value, "logged_mean": ref},
        )


def mean_agrees(claimed: Number, mean: float, decimals: int) -> bool:
    """A printed mean agrees when within twice its rounding: authors often average per-seed values already
    rounded to the printed precision (<= half an ulp off) and round the mean again (another half ulp)."""
    return abs(claimed.value - mean) <= 2 * claimed.half_ulp + 0.5 * 10.0**-decimals + 1e-12


def _mean_candidates(logs: list[ParsedLog], claims: Claims) -> list[tuple[float, int]]:
    """Means the headline may legitimately be: over the claimed seeds (one log per seed, any combination of a
    seed's logs), or over every seeded log; a single-run claim is its log's score."""
    by_seed: dict[int, list[ScoreLine]] = {}
    for lg in logs:
        if lg.final_score is None or lg.seed is None:
            continue
        key = (
            lg.filename_seed if lg.filename_seed in claims.seeds and lg.seed not in claims.seeds else lg.seed
        )
        by_seed.setdefault(key, []).append(lg.final_score)  # type: ignore[arg-type]
        # A per-seed claim that matches another line of the log (reported on its own) is what the author
        # averaged; include it so the headline is judged against the author's selection too.
        for block in claims.seeds.get(key, []):
            for s in _score_lines(lg):
                if s is not lg.final_score and block.val_bpb and block.val_bpb.agrees(s.val_bpb, s.decimals):
                    by_seed[key].append(s)
    if not by_seed:
        finals = [lg.final_score for lg in logs if lg.final_score]
        return [(s.val_bpb, s.decimals) for s in finals]
    out: list[tuple[float, int]] = []
    claimed_main = [
        s
        for s in claims.seeds
        if any(b.source.startswith(("seed_results.", "seeds.")) for b in claims.seeds[s])
    ]
    for seeds in (claimed_main, list(claims.seed_list), sorted(by_seed)):
        groups = [by_seed[s] for s in seeds if s in by_seed]
        if not groups:
            continue
        for combo in itertools.islice(itertools.product(*groups), 4096):
            out.append((statistics.fmean(s.val_bpb for s in combo), min(s.decimals for s in combo)))
    out += [(s.val_bpb, s.decimals) for group in by_seed.values() for s in group]
    return out


class ReadmeScoresUnsupportedByLogs(Rule):
    record_only = True
    id = "PG612"
    name = "readme-scores-unsupported-by-logs"
    title = "README headline or per-seed numbers that no log line shows"
    category = "evidence"
    severity = Severity.MEDIUM
    confidence = Confidence.MEDIUM
    evidence_level = EvidenceLevel.LOG
    rationale = (
        "Reviewers read the README first. Its headline val_bpb (the title) and the per-seed rows of its results "
        "table should be numbers the logs show: a seed's score line, or the mean of the seeds' scored lines, "
        "to the precision printed."
    )
    basis = README_BASIS
    valid = (
        Case(
            code="print(1)\n",
            files={
                "README.md": "# Record: sliding window — val_bpb 1.1447 (2-seed mean)\n\n| seed | val_bpb |\n"
                "|---|---|\n| 42 | 1.14431 |\n| 7 | 1.1451 |\n",
                "train_seed42.log": CASE_LOG_42,
                "train_seed7.log": CASE_LOG_7,
            },
            verdict=Verdict.PASS,
        ),
    )
    invalid = (
        Case(
            code="print(1)\n",
            files={
                "README.md": "# Record: sliding window — val_bpb 1.1391 (2-seed mean)\n\n| seed | val_bpb |\n"
                "|---|---|\n| 42 | 1.14431 |\n| 7 | 1.1451 |\n",
                "train_seed42.log": CASE_LOG_42,
                "train_seed7.log": CASE_LOG_7,
            },
            verdict=Verdict.WARN,
            line=1,
            path="README.md",
        ),
        Case(
            code="print(1)\n",
            files={
                "README.md": "# Record\n\n| seed | val_bpb |\n|---|---|\n| 42 | 1.1401 |\n| 7 | 1.1451 |\n",
                "train_seed42.log": CASE_LOG_42,
                "train_seed7.log": CASE_LOG_7,
            },
            verdict=Verdict.WARN,
            line=5,
            path="README.md",
        ),
    )

    def check(self, ctx: AuditContext) -> Iterable[Finding]:
        readme_path = next(
            (
                p
                for p in sorted(ctx.submission.files, key=lambda p: (p.count("/"), p))
                if p.lower().endswith("readme.md")
            ),
            None,
        )
        text = ctx.submission.read_text(readme_path) if readme_path else None
        logs = [lg for lg in logs_of(ctx) if lg.final_score]
        if text is None or not logs:
            yield self.skip("no README or no scored log")
            return
        claims = claims_of(ctx)
        means = _mean_candidates(logs, claims)
        lines = text.splitlines()
        found = warned = 0
        title_no = next((i for i, ln in enumerate(lines, 1) if ln.startswith("#")), 0)
        for _, num in readme_bpb_numbers(lines[title_no - 1] if title_no else ""):
            found += 1
            if not any(mean_agrees(num, m, d) for m, d in means):
                warned += 1
                yield self.finding(
                    Verdict.WARN,
                    f"README headline val_bpb {num.value} is neither a logged score nor the mean of the seeds' "
                    f"scored lines (closest: {min((m for m, _ in means), key=lambda m: abs(m - num.value)):.8f})",
                    [Location(readme_path, title_no, snippet=lines[title_no - 1].strip()[:240])],  # type: ignore[arg-type]
                )
        rows: dict[int, list[tuple[int, str, list[Number]]]] = {}
        seeds = {lg.seed for lg in logs if lg.seed is not None} | {
            lg.filename_seed for lg in logs if lg.filename_seed is not None
        }
        for i, line in enumerate(lines, 1):
            if not line.lstrip().startswith("|"):
                continue
            # The seed cell first, and at most 64 cells: a hostile 10 MB table row must cost nothing (issue 11)
            first, _, rest = line.strip().strip("|").partition("|")
            first = re.sub(r"[*`_ ]", "", first)
            if not first.isdigit() or len(first) > 18 or int(first) not in seeds:
                continue
            cells = [first] + [re.sub(r"[*`_ ]", "", c) for c in rest.split("|", 64)[:64]]
            nums = [
                Number(float(c), len(c.split(".")[1])) for c in cells[1:] if re.fullmatch(r"\d\.\d{3,8}", c)
            ]
            if nums:
                rows.setdefault(int(cells[0]), []).append((i, line, nums))
        # A results table may show several stages (pre-quant, sliding, TTT) for a seed; what must be there is the
        # seed's scored value, in at least one row for that seed.
        for seed, seed_rows in sorted(rows.items()):
            mine = [lg for lg in logs if lg.answers_to_seed(seed)]
            scored = [lg.final_score for lg in mine if lg.final_score]
            scored += [
                s
                for lg in mine
                for s in _score_lines(lg)
                for b in claims.seeds.get(seed, [])
                if b.val_bpb and b.val_bpb.agrees(s.val_bpb, s.decimals)
            ]
            found += 1
            if any(n.agrees(s.val_bpb, s.decimals) for _, _, nums in seed_rows for n in nums for s in scored):
                continue
            i, line, nums = seed_rows[0]
            final = scored[0]
            warned += 1
            yield self.finding(
                Verdict.WARN,
                f"README rows for seed {seed} (lines {', '.join(str(r[0]) for r in seed_rows)}) do not show the "
                f"seed's scored value {_fmt(final.val_bpb)} (`{final.label}`); they show "
                f"{', '.join(str(n.value) for n in nums)}",
                [Location(readme_path, i, snippet=line.strip()[:240])],  # type: ignore[arg-type]
                related=[mine[0].location(final.line_no)],
            )
        if not found:
            yield self.skip("README states no headline or per-seed numbers to check")
        elif not warned:
            yield self.finding(
                Verdict.PASS, f"{found} README headline/per-seed number(s) agree with the logs"
            )


CASE_SCRIPT = """\
import os

LR = float(os.environ.get("LR", "0.04"))


def main():
    print("train", LR)


if __name__ == "__main__":
    main()
"""


class LoggedCodeDiffersFromShipped(Rule):
    record_only = True
    id = "PG613"
    name = "logged-code-differs-from-shipped"
    title = "The source embedded in a log is not the shipped train_gpt.py"
    category = "evidence"
    severity = Severity.MEDIUM
    confidence = Confidence.HIGH
    evidence_level = EvidenceLevel.LOG
    rationale = (
        "Most scripts log their own source. When that text differs from the shipped train_gpt.py (or from the "
        "script a packed train_gpt.py decodes to), the logs are evidence for a different program than the one "
        "being judged. Packed scripts are compared on their decoded layer, and after minification with the "
        "flags of the compressed-code convention when python-minifier is installed."
    )
    basis = Basis(
        ref="openai/parameter-golf README (Submission Process)",
        date="2026-03-18",
        quote="A train log, automatically produced by your script. A `train_gpt.py` script and any other "
        "dependencies.",
        section="A.1",
    )
    valid = (
        Case(
            code=CASE_SCRIPT,
            files={
                "train.log": CASE_SCRIPT + "=" * 100 + "\nseed:1\n"
                "final_int8_zlib_roundtrip_exact val_loss:2.0 val_bpb:1.2\n"
            },
            verdict=Verdict.PASS,
            note="baseline style: log0(code) at the top of the log",
        ),
    )
    invalid = (
        Case(
            code=CASE_SCRIPT,
            files={
                "train.log": "=" * 100
                + "\nSource code:\n"
                + "=" * 100
                + "\n"
                + CASE_SCRIPT.replace('"0.04"', '"0.02"')
                + "=" * 100
                + "\nseed:1\nfinal_int8_zlib_roundtrip_exact val_loss:2.0 val_bpb:1.2\n"
            },
            verdict=Verdict.WARN,
            line=6,
            path="train.log",
            note="the logged run used another default LR",
        ),
    )

    def check(self, ctx: AuditContext) -> Iterable[Finding]:
        logs = [lg for lg in logs_of(ctx) if lg.embedded_source]
        entry = ctx.submission.entry
        if not logs or entry is None:
            yield self.skip("no log embeds source" if entry else "no train_gpt.py to compare with")
            return
        shipped = [(u.name, _norm(u.text)) for u in ctx.units if u.path == entry]
        seen: dict[str, Finding] = {}
        for lg in logs:
            src = lg.embedded_source
            assert src is not None
            code = _norm(src.text)
            digest = hashlib.sha256(code.encode()).hexdigest()[:12]
            if digest in seen:
                continue
            match = next((name for name, text in shipped if text == code), None)
            if match is None:
                match = _same_program(src.text, [u for u in ctx.units if u.path == entry])
            if match is None and len(shipped) > 1:
                # Only a packed script can hold the minified form of the logged code; minifying costs ~1 s.
                minified = _minify(src.text)
                match = next(
                    (
                        f"{name} (after minification)"
                        for name, text in shipped
                        if minified is not None and text == _norm(minified)
                    ),
                    None,
                )
            if match:
                seen[digest] = self.finding(
                    Verdict.PASS, f"{lg.path} embeds the code of {match} (sha {digest})"
                )
                yield seen[digest]
                continue
            name, text = min(shipped, key=lambda nt: _diff_size(nt[1], code))
            summary, first_line, hunks = _diff_summary(text, code, name, lg.path)
            seen[digest] = self.finding(
                Verdict.WARN,
                f"{lg.path} embeds code that differs from {name}: {summary}",
                [lg.location(src.start_line + first_line - 1)],
                evidence=hunks,
                data={"log_source_sha": digest, "compared_with": name},
            )
            yield seen[digest]


def _same_program(code: str, units: list) -> str | None:
    """The unit whose syntax tree equals that of `code` (they differ only in comments or formatting)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dumped = ast.dump(ast.parse(code))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    for unit in units:
        if unit.tree is not None and ast.dump(unit.tree) == dumped:
            return f"{unit.name} (same syntax tree; differs only in comments or formatting)"
    return None


def _norm(text: str) -> str:
    lines = [ln.rstrip() for ln in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def _minify(text: str) -> str | None:
    try:
        import python_minifier
    except ImportError:
        return None
    try:
        return python_minifier.minify(
            text, rename_locals=False, hoist_literals=False, remove_literal_statements=True
        )
    except Exception:  # minifier rejects code it cannot parse; then there is nothing to compare
        return None


def _diff_size(a: str, b: str) -> int:
    sm = difflib.SequenceMatcher(None, a.split("\n"), b.split("\n"), autojunk=False)
    return sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in sm.get_opcodes() if tag != "equal")


def _diff_summary(shipped: str, logged: str, shipped_name: str, log_path: str) -> tuple[str, int, str]:
    """('+a/-b lines in n hunks', first differing line in the logged code (1-based), first hunks as text)."""
    a, b = shipped.split("\n"), logged.split("\n")
    sm = difflib.SequenceMatcher(None, a, b, autojunk=False)
    ops = [op for op in sm.get_opcodes() if op[0] != "equal"]
    added = sum(j2 - j1 for _, _, _, j1, j2 in ops)
    removed = sum(i2 - i1 for _, i1, i2, _, _ in ops)
    first = ops[0][3] + 1 if ops else 1
    diff = list(
        difflib.unified_diff(a, b, fromfile=shipped_name, tofile=f"{log_path} (embedded)", n=1, lineterm="")
    )
    return (
        f"{removed} line(s) only in the shipped file, {added} only in the log, {len(ops)} hunk(s)",
        first,
        "\n".join(diff[:40]) + ("\n..." if len(diff) > 40 else ""),
    )


class IncompleteRunLog(Rule):
    record_only = True
    id = "PG614"
    name = "incomplete-run-log"
    title = "A log that stops before its final scored evaluation"
    category = "evidence"
    severity = Severity.HIGH
    confidence = Confidence.HIGH
    evidence_level = EvidenceLevel.LOG
    rationale = (
        "A log that ends inside the scored pass (or after training with no score at all) cannot support a claimed "
        "score: the number in submission.json is then not evidenced. The leaderboard audit excluded 'submissions "
        "with missing evidence'."
    )
    basis = Basis(
        ref="PR #1902 description (cocohearts)",
        date="2026-04-29",
        quote="Exclusion classes: PPM/byte-mixture, pre-quant/future-validation leakage, over-cap artifacts, "
        "duplicates, submissions with missing evidence.",
        section="A.12",
    )
    valid = (Case(code="print(1)\n", files={"train_seed42.log": CASE_LOG_42}, verdict=Verdict.PASS),)
    invalid = (
        Case(
            code="print(1)\n",
            files={
                "train_seed42.log": CASE_LOG_42.split("final_int6_roundtrip")[0]
                + "ttt_sliding:start chunks=10 stride=64\n"
            },
            verdict=Verdict.FAIL,
            line=8,
            path="train_seed42.log",
        ),
    )

    def check(self, ctx: AuditContext) -> Iterable[Finding]:
        logs = logs_of(ctx)
        if not logs:
            yield self.skip("no run logs")
            return
        seed_table_of(ctx)  # the per-seed table goes into the report whichever log rules are selected
        claims = claims_of(ctx)
        claimed = set(claims.seed_list)
        for lg in logs:
            if not lg.truncated:
                continue
            line = lg.eval_begin_line or (
                lg.stop.line_no if lg.stop else (lg.steps[-1].line_no if lg.steps else 0)
            )
            # Split runs (a train log that stops after serialising, an eval log that scores the artifact) are
            # complete evidence together: another log of the same seed carrying the final score completes it.
            completed_by = next(
                (
                    o
                    for o in logs
                    if o is not lg
                    and o.final_score is not None
                    and lg.seed is not None
                    and o.answers_to_seed(lg.seed)
                ),
                None,
            )
            if completed_by is not None:
                yield self.info(
                    f"{lg.path} {lg.truncation_reason}; the score of seed {lg.seed} is in "
                    f"{completed_by.path} (line {completed_by.final_score.line_no})",  # type: ignore[union-attr]
                    [lg.location(line)],
                )
                continue
            unclaimed = (
                claimed and lg.seed is not None and lg.seed not in claimed and lg.filename_seed not in claimed
            )
            yield self.finding(
                Verdict.WARN if unclaimed else Verdict.FAIL,
                f"incomplete evidence: {lg.path}: {lg.truncation_reason}"
                + (f" (seed {lg.seed} is not among the claimed seeds)" if unclaimed else ""),
                [lg.location(line)],
                severity=Severity.MEDIUM if unclaimed else Severity.HIGH,
            )
        if not any(lg.truncated for lg in logs):
            yield self.finding(Verdict.PASS, f"{len(logs)} log(s) reach their final scored evaluation")


class UndisclosedExtraRuns(Rule):
    record_only = True
    id = "PG615"
    name = "undisclosed-extra-runs"
    title = "Runs in the logs that submission.json does not list"
    category = "evidence"
    severity = Severity.MEDIUM
    confidence = Confidence.MEDIUM
    evidence_level = EvidenceLevel.LOG
    rationale = (
        "Reporting the best seeds of more runs than disclosed biases the mean. Accepted practice (PR #1769) is to "
        "disclose every run, and the audit recomputes the mean over all of them; a logged seed that "
        "submission.json does not mention is an undisclosed run."
    )
    basis = Basis(
        ref="openai/parameter-golf README (Submission Process); PR #1769",
        date="2026-04-22",
        quote="Tuning hyperparameters across runs is fine; brute-forcing ridiculous seeds is not.",
        section="A.12",
    )
    valid = (
        Case(
            code="print(1)\n",
            files={
                "submission.json": CASE_JSON_OK,
                "train_seed42.log": CASE_LOG_42,
                "train_seed7.log": CASE_LOG_7,
            },
            verdict=Verdict.PASS,
        ),
    )
    invalid = (
        Case(
            code="print(1)\n",
            files={
                "submission.json": CASE_JSON_OK.replace('"seeds": [42, 7]', '"seeds": [42]').replace(
                    ',\n    "7": {"val_bpb": 1.14512, "val_loss": 1.93350001}', ""
                ),
                "train_seed42.log": CASE_LOG_42,
                "train_seed7.log": CASE_LOG_7,
            },
            verdict=Verdict.WARN,
            line=1,
            path="train_seed7.log",
        ),
    )

    def check(self, ctx: AuditContext) -> Iterable[Finding]:
        claims = claims_of(ctx)
        logs = logs_of(ctx)
        if not claims.seed_list or not logs:
            yield self.skip("submission.json lists no seeds" if logs else "no run logs")
            return
        listed = set(claims.seed_list)
        extra = [
            lg
            for lg in logs
            if lg.seed is not None and lg.seed not in listed and lg.filename_seed not in listed
        ]
        for lg in extra:
            score = lg.final_score
            yield self.finding(
                Verdict.WARN,
                f"{lg.path} is a run of seed {lg.seed}"
                + (f" scoring {_fmt(score.val_bpb)}" if score else "")
                + f", but submission.json lists only seeds {sorted(listed)}",
                [lg.location(lg.seed_line or (score.line_no if score else 1))],
            )
        if not extra:
            yield self.finding(Verdict.PASS, f"every logged seed is among the claimed seeds {sorted(listed)}")
