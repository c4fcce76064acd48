"""PG302 unnormalized-scoring: ratio estimators, byte-level mixtures, and the normalized shapes that must pass."""

from __future__ import annotations

import pytest

from auditor.findings import Verdict
from auditor.rename import minify, rename_identifiers
from tests._targets_helpers import gating, mirror_has, run_fixture, run_mirror

RULE = "PG302"


@pytest.mark.parametrize(
    ("name", "line", "snippet"),
    [
        ("ngram_unnormalized_ratio", 60, "p_local = (gold + beta * p_model) / (ctx_c + beta)"),
        ("ppm_byte_mixture", 49, "per_byte = -float(nll_nats[i]) / len(tb)"),
        ("ngram_target_in_key", 62, "p_ng = np.minimum(full_c, ctx_c) / np.maximum(ctx_c, 1.0)"),
    ],
)
def test_unnormalized_fixtures_fail_on_the_right_line(name: str, line: int, snippet: str) -> None:
    verdict, findings = run_fixture(name, RULE)
    assert verdict is Verdict.FAIL
    first = gating(findings, Verdict.FAIL)[0]
    assert first.primary is not None and first.primary.line == line
    assert first.primary.snippet == snippet


@pytest.mark.parametrize(
    "name",
    [
        "ngram_context_only_legal",
        "ngram_tilt_normalized_legal",
        "bigram_hash_input_side_legal",
        "smear_bos_masked_legal",
    ],
)
def test_normalized_fixtures_pass(name: str) -> None:
    verdict, findings = run_fixture(name, RULE)
    assert verdict is Verdict.PASS, [f.message for f in findings]


def test_dividing_by_the_row_sum_fixes_the_ratio() -> None:
    """The PR #978 correction: the same code with the summed vocabulary mass as denominator passes."""

    def fix(src: str) -> str:
        return src.replace("/ (ctx_c + beta)", "/ (pair_c.sum(dim=1) + beta)")

    verdict, findings = run_fixture("ngram_unnormalized_ratio", RULE, fix)
    assert verdict is Verdict.PASS, [f.message for f in findings]


def test_byte_mixture_behind_default_off_flag_is_info() -> None:
    verdict, findings = run_fixture(
        "ppm_byte_mixture", RULE, lambda s: s.replace('"PPM_ENABLED", "1"', '"PPM_ENABLED", "0"')
    )
    assert verdict is Verdict.PASS
    assert findings and not any(f.gating for f in findings)


def test_pow_spread_form_fails() -> None:
    """`p ** (1 / n_bytes)` is the same spread as `lp / n_bytes`."""

    def pow_form(src: str) -> str:
        src = src.replace(
            "per_byte = -float(nll_nats[i]) / len(tb)",
            "per_byte = math.exp(-float(nll_nats[i])) ** (1.0 / len(tb))",
        )
        return src.replace("ln(lam) + per_byte", "ln(lam) + ln(per_byte)")

    verdict, findings = run_fixture("ppm_byte_mixture", RULE, pow_form)
    assert verdict is Verdict.FAIL
    assert gating(findings, Verdict.FAIL)[0].primary.line == 49


@pytest.mark.parametrize(
    "transform", [lambda s: rename_identifiers(s, seed=5), minify], ids=["rename", "minify"]
)
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ngram_unnormalized_ratio", Verdict.FAIL),
        ("ppm_byte_mixture", Verdict.FAIL),
        ("ngram_context_only_legal", Verdict.PASS),
        ("ngram_tilt_normalized_legal", Verdict.PASS),
    ],
)
def test_verdict_survives_renaming(name: str, expected: Verdict, transform) -> None:
    verdict, findings = run_fixture(name, RULE, transform)
    assert verdict is expected, [f.message for f in findings]


DEV = [
    (
        "d55045ef7728b4b7a38198f8fd6429c9ffb2ac61",
        "records/track_10min_16mb/2026-03-27_Normalized_Ngram_Bayesian_FirstMatch_0.3922",
        Verdict.FAIL,
        407,
    ),
    ("HEAD", "records/track_10min_16mb/2026-04-09_A2_Muon097_3Seed", Verdict.PASS, None),
    (
        "e5e366078d8181a86868ef1c6dbd1595758bce0e",
        "records/track_non_record_16mb/2026-03-20_SharedCore8x12d896_MLP1_1xH100SXM",
        Verdict.PASS,
        None,
    ),
]


@pytest.mark.parametrize(
    ("rev", "path", "expected", "line"), DEV, ids=[d[1].rsplit("/", 1)[-1][:30] for d in DEV]
)
def test_labelled_submissions(rev: str, path: str, expected: Verdict, line: int | None) -> None:
    if not mirror_has(rev):
        pytest.skip("parameter-golf mirror not available")
    verdict, findings = run_mirror(rev, path, RULE)
    assert verdict is expected, [f.message for f in findings]
    if line is not None:
        assert gating(findings, Verdict.FAIL)[0].primary.line == line


def test_tilt_without_log_z_fails() -> None:
    """Dropping log Z from the closed-form tilt leaves an unnormalized boost of the hinted token."""

    def drop_z(src: str) -> str:
        return src.replace("nll + has_hint * (z.log() - beta * is_hit)", "nll - has_hint * beta * is_hit")

    verdict, findings = run_fixture("ngram_tilt_normalized_legal", RULE, drop_z)
    assert verdict is Verdict.FAIL

    assert gating(findings, Verdict.FAIL)[0].primary.line == 68
