"""Is a record's improvement over the previous one statistically significant? (rules.md §A.12)

Written rule (README, "Submission Process"): beat the previous record by at least 0.005 nats, shown at p < 0.01.
Applied rule (leaderboard PRs #1899/#1900/#1902): the chronological frontier at p < 0.25 against the previous
frontier row. Both are one-sided Welch t-tests on per-seed val_loss (nats/token; lower is better):

    H0: mean(ref) - mean(cand) <= margin      t = ((mean_ref - mean_cand) - margin) / sqrt(s_c²/n_c + s_r²/n_r)

with Welch-Satterthwaite degrees of freedom. The t distribution's tail comes from the regularized incomplete beta
function, implemented here (continued fraction, Numerical Recipes §6.4) so the product needs no scipy.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import fmean, variance

from auditor.constants import RECORD_MARGIN_NATS, RECORD_P_APPLIED, RECORD_P_WRITTEN

_EPS = 3e-16
_TINY = 1e-300
_MAX_ITER = 400


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for the incomplete beta function (modified Lentz)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _MAX_ITER + 1):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"incomplete beta did not converge for a={a}, b={b}, x={x}")


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), for a, b > 0 and 0 <= x <= 1."""
    if a <= 0 or b <= 0:
        raise ValueError("a and b must be positive")
    if not 0.0 <= x <= 1.0:
        raise ValueError("x must lie in [0, 1]")
    if x in (0.0, 1.0):
        return x
    ln_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(ln_front)
    # the continued fraction converges fast for x < (a+1)/(a+b+2); use the symmetry otherwise
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom (df may be fractional, as Welch's is)."""
    if df <= 0:
        raise ValueError("degrees of freedom must be positive")
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


@dataclass(frozen=True)
class Welch:
    t: float
    df: float
    p: float  # one-sided: P(improvement <= margin) evidence against H0
    improvement: float  # mean(ref) - mean(cand)
    se: float


def welch_one_sided(candidate: list[float], reference: list[float], margin: float = 0.0) -> Welch:
    """One-sided Welch test that the candidate's mean is lower than the reference's by more than `margin`."""
    if len(candidate) < 2 or len(reference) < 2:
        raise ValueError("Welch's test needs at least two values per group")
    mc, mr = fmean(candidate), fmean(reference)
    vc, vr = variance(candidate), variance(reference)
    qc, qr = vc / len(candidate), vr / len(reference)
    se = math.sqrt(qc + qr)
    diff = mr - mc
    if se == 0.0:
        # identical seeds on both sides: the sign of the difference is certain
        p = 0.0 if diff > margin else 1.0
        return Welch(
            math.copysign(math.inf, diff - margin) if diff != margin else 0.0, math.inf, p, diff, 0.0
        )
    t = (diff - margin) / se
    df = (qc + qr) ** 2 / (
        (qc * qc / (len(candidate) - 1) if qc else 0.0) + (qr * qr / (len(reference) - 1) if qr else 0.0)
    )
    return Welch(t, df, t_sf(t, df), diff, se)


def seeds_needed(
    candidate: list[float], reference: list[float], margin: float, alpha: float, max_n: int = 1000
) -> int | None:
    """Smallest n (seeds per group, both groups) at which the observed means and standard deviations would give
    p < alpha; None when the observed improvement does not exceed the margin (no n is enough)."""
    mc, mr = fmean(candidate), fmean(reference)
    diff = mr - mc
    if diff <= margin:
        return None
    sc = math.sqrt(variance(candidate)) if len(candidate) > 1 else 0.0
    sr = math.sqrt(variance(reference)) if len(reference) > 1 else 0.0
    for n in range(2, max_n + 1):
        fake_c = _with_moments(mc, sc, n)
        fake_r = _with_moments(mr, sr, n)
        if welch_one_sided(fake_c, fake_r, margin).p < alpha:
            return n
    return None


def _with_moments(mean: float, sd: float, n: int) -> list[float]:
    """n values with exactly this mean and sample standard deviation."""
    if sd == 0.0:
        return [mean] * n
    # ±k around the mean; k chosen so the sample variance is sd²
    half = n // 2
    k = sd * math.sqrt((n - 1) / (2 * half))
    vals = [mean + k] * half + [mean - k] * half + ([mean] if n % 2 else [])
    return vals


@dataclass
class SignificanceReport:
    n_candidate: int
    n_reference: int
    mean_candidate: float
    mean_reference: float
    improvement_nats: float
    improvement_bpb: float | None
    written_p: float  # one-sided p for improvement > 0.005 nats
    applied_p: float  # one-sided p for improvement > 0
    written_ok: bool
    applied_ok: bool
    seeds_needed_written: int | None
    seeds_needed_applied: int | None
    t_written: float
    t_applied: float
    df: float
    unit: str = "nats"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def assess(
    candidate: list[float],
    reference: list[float],
    candidate_bpb: list[float] | None = None,
    reference_bpb: list[float] | None = None,
    margin: float = RECORD_MARGIN_NATS,
) -> SignificanceReport:
    """Both tests and the seed count, on per-seed val_loss in nats."""
    written = welch_one_sided(candidate, reference, margin)
    applied = welch_one_sided(candidate, reference, 0.0)
    bpb_gain = None
    if candidate_bpb and reference_bpb:
        bpb_gain = fmean(reference_bpb) - fmean(candidate_bpb)
    return SignificanceReport(
        n_candidate=len(candidate),
        n_reference=len(reference),
        mean_candidate=fmean(candidate),
        mean_reference=fmean(reference),
        improvement_nats=applied.improvement,
        improvement_bpb=bpb_gain,
        written_p=written.p,
        applied_p=applied.p,
        written_ok=written.improvement >= margin and written.p < RECORD_P_WRITTEN,
        applied_ok=applied.improvement > 0 and applied.p < RECORD_P_APPLIED,
        seeds_needed_written=seeds_needed(candidate, reference, margin, RECORD_P_WRITTEN),
        seeds_needed_applied=seeds_needed(candidate, reference, 0.0, RECORD_P_APPLIED),
        t_written=written.t,
        t_applied=applied.t,
        df=applied.df,
    )


# ---------------------------------------------------------------------------------------------------------------
@dataclass
class SeedValue:
    seed: int | None
    val_loss: float
    val_bpb: float | None
    source: str  # "log:<path>:<line>" or "claims:<json path>"


@dataclass
class SeedValues:
    values: list[SeedValue]
    source: str  # "logs" | "claims" | "numbers" | "none"
    notes: list[str]

    @property
    def losses(self) -> list[float]:
        return [v.val_loss for v in self.values]

    @property
    def bpbs(self) -> list[float] | None:
        got = [v.val_bpb for v in self.values]
        return None if any(b is None for b in got) else [float(b) for b in got if b is not None]


def seed_values_from_logs(logs: list) -> SeedValues:  # list[ParsedLog]
    """One value per seed from the logs' scored lines; a seed logged twice keeps the last file (sorted path)."""
    by_seed: dict[object, SeedValue] = {}
    notes: list[str] = []
    for log in sorted(logs, key=lambda lg: lg.path):
        s = log.final_score
        if s is None or s.val_loss <= 0:
            continue
        seed = log.seed if log.seed is not None else log.filename_seed
        key: object = seed if seed is not None else f"path:{log.path}"
        if key in by_seed:
            notes.append(f"seed {seed} is logged more than once; {log.path} is used")
        by_seed[key] = SeedValue(seed, s.val_loss, s.val_bpb, f"log:{log.path}:{s.line_no}")
    return SeedValues(list(by_seed.values()), "logs" if by_seed else "none", notes)


def seed_values_from_claims(claims) -> SeedValues:  # auditor.evidence.claims.Claims
    out = []
    for seed in sorted(claims.seeds):
        block = claims.main_seed(seed)
        if block is None or block.val_loss is None:
            continue
        out.append(
            SeedValue(
                seed,
                block.val_loss.value,
                block.val_bpb.value if block.val_bpb else None,
                f"claims:{block.source}",
            )
        )
    return SeedValues(out, "claims" if out else "none", [])


def seed_values_of(sub, logs: list | None = None) -> SeedValues:
    """Per-seed val_loss of a submission: its logs when they give two or more seeds, else submission.json."""
    from auditor.evidence.claims import claims_of_submission
    from auditor.evidence.logs import parse_submission_logs

    if logs is None:
        logs = parse_submission_logs(sub.log_paths, sub.read_text)
    from_logs = seed_values_from_logs(logs)
    if len(from_logs.values) >= 2:
        return from_logs
    from_claims = seed_values_from_claims(claims_of_submission(sub))
    if len(from_claims.values) > len(from_logs.values):
        from_claims.notes.append("per-seed values from submission.json (the logs give fewer seeds)")
        return from_claims
    return from_logs


def parse_numbers(text: str) -> list[float]:
    """'1.0810, 1.0822 1.0815' -> floats; ValueError with the offending token otherwise."""
    out = []
    for tok in text.replace(",", " ").split():
        try:
            out.append(float(tok))
        except ValueError:
            raise ValueError(f"not a number: {tok!r}") from None
    if not out:
        raise ValueError("no numbers given")
    return out
