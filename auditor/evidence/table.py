"""The per-seed table: one row per seed with the scored line of its log (what `pgolf-audit rescore` prints, and
what the audit report carries under ``tables["log_table"]``).

A seed can have several logs (an original run and a compliance rerun, say). The row takes the log whose scored
line matches the submission's own per-seed claim when one does, else the log with the later file name; the
others are listed under ``other_runs``. Logs that name no seed get a row each with an empty seed.
"""

from __future__ import annotations

import csv
import io
import statistics
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from auditor.evidence.claims import Claims, claims_of, claims_of_submission
from auditor.evidence.logs import ParsedLog, logs_of, parse_submission_logs, read_log_text

if TYPE_CHECKING:
    from auditor.facts import AuditContext
    from auditor.submission import Submission

COLUMNS = (
    "seed",
    "label",
    "val_loss",
    "val_bpb",
    "tokens",
    "train_ms",
    "eval_ms",
    "artifact_bytes",
    "log",
    "line",
    "decimals",
    "claimed_val_bpb",
    "claim_agrees",
)


@dataclass
class SeedRow:
    seed: int | None
    label: str | None
    val_loss: float | None
    val_bpb: float | None
    tokens: int | None
    train_ms: float | None
    eval_ms: float | None
    artifact_bytes: int | None
    log: str
    line: int
    decimals: int | None
    claimed_val_bpb: float | None = None
    claim_agrees: bool | None = None  # None: nothing claimed for this seed


@dataclass
class SeedTable:
    rows: list[SeedRow] = field(default_factory=list)
    other_runs: list[SeedRow] = field(default_factory=list)
    claimed_mean_val_bpb: float | None = None
    claimed_seeds: list[int] = field(default_factory=list)

    @property
    def mean_val_bpb(self) -> float | None:
        vals = [r.val_bpb for r in self.rows if r.val_bpb is not None and r.seed is not None]
        return statistics.fmean(vals) if vals else None

    @property
    def std_val_bpb(self) -> float | None:
        vals = [r.val_bpb for r in self.rows if r.val_bpb is not None and r.seed is not None]
        return statistics.stdev(vals) if len(vals) > 1 else None

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(COLUMNS)
        for r in self.rows:
            d = asdict(r)
            writer.writerow(["" if d[c] is None else _fmt(d[c]) for c in COLUMNS])
        return buf.getvalue()

    def to_dict(self) -> dict[str, Any]:
        return {
            "columns": list(COLUMNS),
            "rows": [asdict(r) for r in self.rows],
            "other_runs": [asdict(r) for r in self.other_runs],
            "mean_val_bpb": self.mean_val_bpb,
            "std_val_bpb": self.std_val_bpb,
            "claimed_mean_val_bpb": self.claimed_mean_val_bpb,
            "claimed_seeds": list(self.claimed_seeds),
        }

    def to_text(self) -> str:
        if not self.rows:
            return "no run logs found (nothing to tabulate)"
        head = (
            "seed",
            "scored line",
            "val_loss",
            "val_bpb",
            "tokens",
            "train_ms",
            "eval_ms",
            "artifact",
            "claim",
            "log:line",
        )
        body = []
        for r in self.rows:
            claim = "" if r.claim_agrees is None else ("ok" if r.claim_agrees else f"!= {r.claimed_val_bpb}")
            body.append(
                (
                    "" if r.seed is None else str(r.seed),
                    r.label or "(no score)",
                    _fmt(r.val_loss),
                    _fmt(r.val_bpb),
                    _fmt(r.tokens),
                    _fmt(r.train_ms),
                    _fmt(r.eval_ms),
                    _fmt(r.artifact_bytes),
                    claim,
                    f"{r.log}:{r.line}" if r.line else r.log,
                )
            )
        widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(head)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip()]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in body]
        mean = self.mean_val_bpb
        if mean is not None:
            std = self.std_val_bpb
            lines.append("")
            lines.append(
                f"mean val_bpb {mean:.8f}"
                + (f" (std {std:.8f})" if std is not None else "")
                + (f"; claimed {self.claimed_mean_val_bpb}" if self.claimed_mean_val_bpb is not None else "")
            )
        for r in self.other_runs:
            lines.append(f"also for seed {r.seed}: {r.log}:{r.line} {r.label} val_bpb {_fmt(r.val_bpb)}")
        return "\n".join(lines)


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) >= 1000 else repr(v)
    return str(v)


def row_for(log: ParsedLog, seed: int | None) -> SeedRow:
    s = log.final_score
    train_ms = log.stop.train_ms if log.stop else (log.last_step.train_ms if log.last_step else None)
    art = log.artifact_size
    return SeedRow(
        seed=seed,
        label=s.label if s else None,
        val_loss=s.val_loss if s else None,
        val_bpb=s.val_bpb if s else None,
        tokens=log.val_tokens,
        train_ms=train_ms,
        eval_ms=s.eval_ms if s else None,
        artifact_bytes=art.bytes if art else None,
        log=log.path,
        line=s.line_no if s else 0,
        decimals=s.decimals if s else None,
    )


def build_seed_table(logs: list[ParsedLog], claims: Claims) -> SeedTable:
    table = SeedTable(
        claimed_mean_val_bpb=claims.val_bpb.value if claims.val_bpb else None,
        claimed_seeds=list(claims.seed_list),
    )
    by_seed: dict[int, list[ParsedLog]] = {}
    for log in logs:
        if log.seed is None:
            table.rows.append(row_for(log, None))
            continue
        by_seed.setdefault(log.seed, []).append(log)
    # A file named for a claimed seed but recording another one is still that claim's evidence (the conflict is
    # reported by the claims check); regroup it under the name's seed only when the logged seed is unclaimed.
    for seed, group in list(by_seed.items()):
        for log in list(group):
            fs = log.filename_seed
            if fs is not None and fs != seed and fs in claims.seeds and seed not in claims.seeds:
                group.remove(log)
                by_seed.setdefault(fs, []).append(log)
        if not group:
            del by_seed[seed]
    for seed in sorted(by_seed):
        group = sorted(by_seed[seed], key=lambda lg: lg.path)
        named = {lg.filename_seed for lg in group if lg.filename_seed is not None}
        if len(named) > 1:
            # Files named for different seeds that all logged this one: separate runs, one row each.
            table.rows += [_with_claim(row_for(lg, seed), claims, seed) for lg in group]
            continue
        claimed = claims.main_seed(seed)
        chosen = None
        if claimed and claimed.val_bpb:
            chosen = next(
                (
                    lg
                    for lg in group
                    if lg.final_score
                    and any(
                        b.val_bpb and b.val_bpb.agrees(lg.final_score.val_bpb, lg.final_score.decimals)
                        for b in claims.seeds.get(seed, [])
                    )
                ),
                None,
            )
        if chosen is None:
            scored = [lg for lg in group if lg.final_score] or group
            chosen = scored[-1]
        table.rows.append(_with_claim(row_for(chosen, seed), claims, seed))
        table.other_runs += [row_for(lg, seed) for lg in group if lg is not chosen]
    return table


def _with_claim(row: SeedRow, claims: Claims, seed: int) -> SeedRow:
    claimed = claims.main_seed(seed)
    if claimed and claimed.val_bpb:
        row.claimed_val_bpb = claimed.val_bpb.value
        row.claim_agrees = row.val_bpb is not None and any(
            b.val_bpb is not None and b.val_bpb.agrees(row.val_bpb, row.decimals)
            for b in claims.seeds.get(seed, [])
        )
    return row


def seed_table(sub: Submission) -> SeedTable:
    """The per-seed table of a loaded submission (the `rescore` subcommand)."""
    logs = parse_submission_logs(sub.log_paths, lambda p: read_log_text(sub, p))
    return build_seed_table(logs, claims_of_submission(sub))


def seed_table_of(ctx: AuditContext) -> SeedTable:
    """The same table inside an audit, computed once and published as ``log_table`` for the report."""
    table = ctx.memo("log_table", lambda: build_seed_table(logs_of(ctx), claims_of(ctx)))
    ctx.publish_table("log_table", table)
    return table
