"""Welch's one-sided test, the t tail from our own incomplete beta, and PG751 on fixtures and real records."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from auditor.engine import audit, select_rules
from auditor.evidence.significance import (
    assess,
    betainc,
    parse_numbers,
    seed_values_of,
    seeds_needed,
    t_sf,
    welch_one_sided,
)
from auditor.findings import Verdict
from auditor.submission import load_git, load_path

MIRROR = Path(os.environ.get("PGOLF_REPO", "/work/.mirror/openai+parameter-golf/repo"))


@pytest.mark.parametrize(
    "a, b, x, expected",
    [
        (1.0, 1.0, 0.3, 0.3),  # uniform
        (2.0, 1.0, 0.5, 0.25),  # I_x(a,1) = x^a
        (1.0, 3.0, 0.2, 1 - 0.8**3),  # I_x(1,b) = 1-(1-x)^b
        (0.5, 0.5, 0.5, 0.5),  # symmetric
        (0.5, 0.5, 0.25, 1 / 3),  # arcsine law: (2/pi) asin(sqrt(x))
    ],
)
def test_betainc_closed_forms(a: float, b: float, x: float, expected: float) -> None:
    assert betainc(a, b, x) == pytest.approx(expected, abs=1e-13)


def test_t_tail_known_values() -> None:
    assert t_sf(0.0, 5) == pytest.approx(0.5)
    assert t_sf(1.0, 1) == pytest.approx(0.25)  # Cauchy: 1/2 - atan(1)/pi
    assert t_sf(2.0, 2) == pytest.approx(0.5 * (1 - 2 / math.sqrt(6)))  # df=2: 1/2 (1 - t/sqrt(2+t²))
    assert t_sf(-2.0, 2) == pytest.approx(1 - 0.5 * (1 - 2 / math.sqrt(6)))
    assert t_sf(2.3533634, 3) == pytest.approx(0.05, abs=1e-6)  # the t table
    assert t_sf(4.5407029, 3) == pytest.approx(0.01, abs=1e-6)


def test_against_scipy_on_a_grid() -> None:
    stats = pytest.importorskip("scipy.stats")
    special = pytest.importorskip("scipy.special")
    for a in (0.3, 0.5, 1.7, 4.0, 25.0, 200.0):
        for b in (0.5, 1.0, 3.3, 60.0):
            for x in (1e-6, 0.01, 0.3, 0.5, 0.77, 0.999):
                assert betainc(a, b, x) == pytest.approx(float(special.betainc(a, b, x)), rel=1e-9, abs=1e-15)
    for df in (1.0, 2.2, 3.77, 10.0, 140.0):
        for t in (-5.0, -0.4, 0.0, 0.9, 2.5, 8.0, 40.0):
            assert t_sf(t, df) == pytest.approx(float(stats.t.sf(t, df)), rel=1e-9, abs=1e-15)


def test_welch_matches_scipy_ttest() -> None:
    stats = pytest.importorskip("scipy.stats")
    cand = [1.0810, 1.0822, 1.0815, 1.0818]
    ref = [1.0850, 1.0861, 1.0846]
    w = welch_one_sided(cand, ref, 0.0)
    expected = stats.ttest_ind(ref, cand, equal_var=False, alternative="greater")
    assert w.t == pytest.approx(float(expected.statistic)) and w.p == pytest.approx(float(expected.pvalue))
    shifted = stats.ttest_ind([r - 0.002 for r in ref], cand, equal_var=False, alternative="greater")
    assert welch_one_sided(cand, ref, 0.002).p == pytest.approx(float(shifted.pvalue))


def test_degenerate_and_small_inputs() -> None:
    assert welch_one_sided([1.0, 1.0], [2.0, 2.0]).p == 0.0
    assert welch_one_sided([2.0, 2.0], [1.0, 1.0]).p == 1.0
    with pytest.raises(ValueError):
        welch_one_sided([1.0], [2.0, 2.1])
    assert parse_numbers("2.77, 2.78 2.79") == [2.77, 2.78, 2.79]
    with pytest.raises(ValueError, match="not a number"):
        parse_numbers("2.77,abc")


def test_seeds_needed_is_the_smallest_n_that_reaches_alpha() -> None:
    cand, ref = [2.3200, 2.3215, 2.3190], [2.3300, 2.3320, 2.3290]
    n = seeds_needed(cand, ref, 0.005, 0.01)
    assert n is not None and n >= 2
    from auditor.evidence.significance import _with_moments

    def p_at(k: int) -> float:
        return welch_one_sided(
            _with_moments(2.32016667, 0.00125831, k), _with_moments(2.33033333, 0.00152753, k), 0.005
        ).p

    assert p_at(n) < 0.01 and (n == 2 or p_at(n - 1) >= 0.01)
    assert seeds_needed([2.33, 2.331], [2.332, 2.333], 0.005, 0.01) is None  # gain under the margin


def test_assess_reports_both_rules() -> None:
    rep = assess([2.3195, 2.3205, 2.3200], [2.3300, 2.3310, 2.3290])
    assert rep.written_ok and rep.applied_ok and rep.improvement_nats == pytest.approx(0.01)


# -- PG751 on fixtures --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "folder, verdict",
    [
        ("candidate_significant", Verdict.PASS),
        ("candidate_applied_only", Verdict.WARN),
        ("candidate_not_significant", Verdict.FAIL),
    ],
)
def test_rule_against_a_reference_folder(fixtures_dir: Path, folder: str, verdict: Verdict) -> None:
    sub = load_path(fixtures_dir / "significance" / folder)
    sub.options.reference = str(fixtures_dir / "significance" / "reference")
    report = audit(sub, select_rules(["PG751"]))
    (finding,) = [f for f in report.findings if f.rule_id == "PG751"]
    assert finding.verdict is verdict
    assert finding.primary.path.startswith("train_seed") and finding.primary.line == 3
    assert finding.data["n_reference"] == 3  # read from the reference's submission.json (it has no logs)
    if folder == "candidate_applied_only":
        assert finding.data["applied_p"] == pytest.approx(0.0626, abs=5e-4) and "0.0626" in finding.message


def test_rule_skips_without_reference_and_warns_on_bad_reference(fixtures_dir: Path, tmp_path: Path) -> None:
    sub = load_path(fixtures_dir / "significance" / "candidate_significant")
    assert audit(sub, select_rules(["PG751"])).per_rule()[0].gating_verdict is Verdict.SKIP
    sub.options.reference = str(tmp_path / "missing")
    report = audit(sub, select_rules(["PG751"]))
    assert report.per_rule()[0].gating_verdict is Verdict.WARN
    assert "could not be read" in report.findings[0].message


def test_reference_numbers_in_bpb_are_recognised(fixtures_dir: Path) -> None:
    sub = load_path(fixtures_dir / "significance" / "candidate_significant")
    sub.options.reference_values = "1.06473025,1.06562743,1.06610085"
    report = audit(sub, select_rules(["PG751"]))
    (finding,) = report.findings
    assert finding.data["unit"] == "bpb" and "read as val_bpb" in finding.message
    assert finding.verdict is Verdict.PASS


@pytest.mark.corpus
def test_real_pair_reproduces_the_leaderboard_p_value() -> None:
    # PR #1902 lists p=0.063 for #1769 against #1736 (rules.md §A.12)
    if not MIRROR.exists():
        pytest.skip("no local mirror of openai/parameter-golf (set PGOLF_REPO)")
    base = "records/track_10min_16mb/"
    cand = seed_values_of(
        load_git(
            MIRROR, "HEAD", base + "2026-04-22_SP8192_CaseOps_GatedAttn_QuantGate_Loop45_PhasedTTT_MLPClip12"
        )
    )
    ref = seed_values_of(
        load_git(MIRROR, "HEAD", base + "2026-04-19_SP8192_CaseOps_GatedAttn_QuantGate_Loop45_PhasedTTT")
    )
    rep = assess(cand.losses, ref.losses)
    assert (rep.n_candidate, rep.n_reference) == (5, 3)
    assert round(rep.applied_p, 3) == 0.063 and not rep.written_ok
