"""What the submission claims for one seed, for comparison with a rescore or a rerun (rules PG801, PG802).

Sources, most authoritative first: the seed's block in submission.json (`auditor.evidence.claims`), then the
scored line of the seed's own log (the per-seed table, `auditor.evidence.table`). Logs written by a harness rerun
are never claims. Without a seed, a single-seed submission's one seed is used; otherwise the headline mean, which
a single run can only be compared with loosely (`is_mean`).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from auditor.evidence.claims import claims_of
from auditor.evidence.logs import logs_of
from auditor.findings import Location

if TYPE_CHECKING:
    from auditor.evidence.logs import ParsedLog
    from auditor.facts import AuditContext


@dataclass
class Claimed:
    seed: int | None
    val_bpb: float | None = None
    decimals: int = 8
    source: str = ""  # "submission.json seed_results.42", "train_seed42.log:87", ...
    location: Location | None = None
    is_mean: bool = False
    val_tokens: int | None = None  # targets the claimed eval scored (from the seed's log)
    artifact_bytes: int | None = None
    train_ms: float | None = None
    seed_std: float | None = None  # std of the claimed per-seed val_bpb (two or more seeds)

    @property
    def half_ulp(self) -> float:
        return 0.5 * 10.0**-self.decimals


def harness_results(ctx: AuditContext) -> dict[str, Any]:
    return ctx.submission.options.harness


def rerun_log_paths(ctx: AuditContext) -> set[str]:
    runs = harness_results(ctx).get("rerun") or []
    return {str(r.get("log")) for r in runs if isinstance(r, dict) and r.get("log")}


def claim_logs(ctx: AuditContext) -> list[ParsedLog]:
    """The submission's own run logs (harness rerun logs excluded)."""
    own = rerun_log_paths(ctx)
    return [lg for lg in logs_of(ctx) if lg.path not in own]


def _json_location(claims: Any, value: float, decimals: int, key: str, after: str = "") -> Location | None:
    """The line of the claimed number in submission.json (searched after `after`, e.g. the seed's key)."""
    if not claims.path:
        return None
    raw = claims.raw_text or ""
    start = max(raw.find(after), 0) if after else 0
    idx = raw.find(f"{value:.{decimals}f}", start)
    if idx < 0:
        idx = raw.find(f'"{key}"', start)
    line = raw.count("\n", 0, idx) + 1 if idx >= 0 else 1
    text = raw.splitlines()[line - 1] if raw else ""
    return Location(path=claims.path, line=line, col=1, snippet=text.strip()[:240])


def claimed_for(ctx: AuditContext, seed: int | None) -> Claimed:
    claims = claims_of(ctx)
    logs = claim_logs(ctx)
    if seed is None and len(claims.seed_list) == 1:
        seed = claims.seed_list[0]
    if seed is None:
        seeded = {lg.seed for lg in logs if lg.seed is not None}
        if len(seeded) == 1 and not claims.seed_list:
            seed = seeded.pop()
    out = Claimed(seed)
    per_seed = [b.val_bpb.value for s in claims.seeds if (b := claims.main_seed(s)) and b.val_bpb]
    if len(per_seed) >= 2:
        out.seed_std = statistics.stdev(per_seed)
    seed_logs = (
        [lg for lg in logs if seed is not None and lg.answers_to_seed(seed)] if seed is not None else logs
    )
    scored = [lg for lg in seed_logs if lg.final_score]
    if scored:
        log = scored[-1]
        out.val_tokens = log.val_tokens
        art = log.artifact_size
        out.artifact_bytes = art.bytes if art else None
        out.train_ms = log.stop.train_ms if log.stop else (log.last_step.train_ms if log.last_step else None)
    block = claims.main_seed(seed) if seed is not None else None
    if block is not None:
        if block.artifact_bytes is not None:
            out.artifact_bytes = block.artifact_bytes
        if block.train_time_s is not None:
            out.train_ms = block.train_time_s * 1e3
    if out.artifact_bytes is None and len(claims.seed_list) <= 1:
        out.artifact_bytes = claims.bytes_total
    if block is not None and block.val_bpb is not None:
        out.val_bpb, out.decimals = block.val_bpb.value, block.val_bpb.decimals
        out.source = f"{claims.path} {block.source}"
        key = block.source.rsplit(".", 1)[-1]
        out.location = _json_location(
            claims, block.val_bpb.value, block.val_bpb.decimals, "val_bpb", after=f'"{key}"'
        )
        return out
    single_run = len(claims.seed_list) <= 1 and len({lg.seed for lg in logs if lg.seed is not None}) <= 1
    if claims.val_bpb is not None and not claims.seeds and single_run:
        out.val_bpb, out.decimals = claims.val_bpb.value, claims.val_bpb.decimals
        out.source = f"{claims.path} {claims.val_bpb_key}"
        out.location = _json_location(
            claims, claims.val_bpb.value, claims.val_bpb.decimals, claims.val_bpb_key or "val_bpb"
        )
        return out
    if seed is not None and scored:
        s = scored[-1].final_score
        assert s is not None
        out.val_bpb, out.decimals = s.val_bpb, s.decimals
        out.source = f"{scored[-1].path}:{s.line_no} ({s.label})"
        out.location = scored[-1].location(s.line_no)
        return out
    if claims.val_bpb is not None and (seed is None or not claims.seeds):
        out.val_bpb, out.decimals = claims.val_bpb.value, claims.val_bpb.decimals
        out.is_mean = len(claims.seed_list) > 1
        out.source = f"{claims.path} {claims.val_bpb_key}" + (" (mean over seeds)" if out.is_mean else "")
        out.location = _json_location(
            claims, claims.val_bpb.value, claims.val_bpb.decimals, claims.val_bpb_key or "val_bpb"
        )
    return out


def mode_of_label(label: str) -> str | None:
    """The eval mode a score line's label names: plain | sliding | ttt, or None (pre-quantization, ETLB, other).

    Labels seen in the records: ``quantized`` / ``final_int8_zlib_roundtrip(_exact)`` / ``final_int6_roundtrip``
    (plain windows), ``quantized_sliding_window`` / ``final_int6_sliding_window(_exact)`` (sliding),
    ``quantized_ttt`` / ``legal_ttt_exact`` / ``quantized_ttt_phased`` (score-first TTT)."""
    low = label.lower()
    if "pre" in low and "quant" in low or "etlb" in low or "diagnostic" in low:
        return None
    if "ttt" in low:
        return "ttt"
    if "sliding" in low:
        return "sliding"
    if "roundtrip" in low or low.strip() in ("quantized", "final_quantized", "quantized_exact"):
        return "plain"
    return None


@dataclass
class Logged:
    val_bpb: float
    decimals: int
    source: str
    location: Location | None
    val_tokens: int | None


def logged_for_mode(ctx: AuditContext, seed: int | None, mode: str) -> Logged | None:
    """The submission's own logged number for `mode` (the last such line of the seed's log, most decimals)."""
    logs = claim_logs(ctx)
    if seed is not None:
        logs = [lg for lg in logs if lg.answers_to_seed(seed)]
    elif len({lg.seed for lg in logs}) > 1:
        return None
    candidates = [
        (s.decimals, i, lg, s)
        for lg in logs
        for i, s in enumerate(lg.score_lines)
        if not s.is_diagnostic and not s.is_prequant and mode_of_label(s.label) == mode
    ]
    best = max(candidates, key=lambda c: (c[0], c[1]))[2:] if candidates else None
    if best is None:
        return None
    lg, s = best
    return Logged(
        s.val_bpb, s.decimals, f"{lg.path}:{s.line_no} ({s.label})", lg.location(s.line_no), lg.val_tokens
    )


def claim_mode(ctx: AuditContext, claimed: Claimed) -> str | None:
    """Which eval mode the claimed number is: the mode of a logged line of its seed that prints the same value."""
    if claimed.val_bpb is None:
        return None
    logs = claim_logs(ctx)
    if claimed.seed is not None:
        logs = [lg for lg in logs if lg.answers_to_seed(claimed.seed)]
    tol = claimed.half_ulp + 1e-12
    for lg in logs:
        for s in reversed(lg.score_lines):
            if not s.is_diagnostic and abs(s.val_bpb - claimed.val_bpb) <= max(tol, 0.5 * 10.0**-s.decimals):
                mode = mode_of_label(s.label)
                if mode is not None:
                    return mode
    return None
