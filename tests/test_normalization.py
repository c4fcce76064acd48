"""PG302 unnormalized-scoring: ratio estimators, byte-level mixtures, and the normalized shapes that must pass."""

from __future__ import annotations

import pytest

from auditor.findings import Verdict
from auditor.rename import minify, rename_identifiers
from auditor.testing import submission_from_files
from tests._targets_helpers import as_sibling_module, gating, mirror_has, run, run_fixture, run_mirror

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


# --- issue 8, class 4: normalization -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "path", "line", "snippet"),
    [
        (
            "ngram_target_in_class_method",
            "train_gpt.py",
            75,
            "p = full_c[hit].clamp(max=ctx_c[hit]) / ctx_c[hit].clamp(min=1)",
        ),
        (
            "ngram_per_token_helper_hash",
            "train_gpt.py",
            40,
            "p = min(full_count, ctx_count) / max(ctx_count, 1)",
        ),
        ("mixer_entropy_expert", "train_gpt.py", 43, "spread_nll = -(lp.exp() * lp).sum(-1)"),
    ],
)
def test_unnormalized_scores_fail_on_the_right_line(name: str, path: str, line: int, snippet: str) -> None:
    verdict, findings = run_fixture(name, RULE)
    assert verdict is Verdict.FAIL
    fail = gating(findings, Verdict.FAIL)
    assert len(fail) == 1, [f.message for f in fail]
    assert fail[0].primary is not None
    assert (fail[0].primary.path, fail[0].primary.line) == (path, line)
    assert fail[0].primary.snippet == snippet


@pytest.mark.parametrize("name", ["ngram_dirichlet_normalized_legal", "ngram_oracle_gate"])
def test_totals_kept_as_the_sum_of_their_counts_are_normalized(name: str) -> None:
    """`(c[tgt] + s/V) / (total + s)` with `total` incremented together with `c` (a scalar total, a per-row total
    at the table's row, or an object's `total` field next to its `counts`) is a distribution: PASS."""
    verdict, findings = run_fixture(name, RULE)
    assert verdict is Verdict.PASS, [f.message for f in findings]
    assert not findings


def test_hashed_pair_table_is_not_a_row_of_its_total() -> None:
    """The same Dirichlet code with the pair counts in hashed buckets `(row * P + tok) % B` collides: FAIL."""

    def hashed(src: str) -> str:
        return src.replace("rows * self.V + tgt", "(rows * 131 + tgt) % self.B")

    verdict, findings = run_fixture("ngram_dirichlet_normalized_legal", RULE, hashed)
    assert verdict is Verdict.FAIL, [f.message for f in findings]
    assert gating(findings, Verdict.FAIL)[0].primary.line == 46


def test_total_counted_apart_from_the_table_is_not_normalized() -> None:
    """A total that is also incremented where the table is not (here: by every token of a separate pass) is no
    longer the table's sum."""

    def apart(src: str) -> str:
        return src.replace(
            "    def add(self, prev, tgt):",
            "    def warm(self, n):\n        self.uni_total += n\n\n    def add(self, prev, tgt):",
        )

    verdict, findings = run_fixture("ngram_dirichlet_normalized_legal", RULE, apart)
    assert verdict is Verdict.FAIL, [f.message for f in findings]
    assert gating(findings, Verdict.FAIL)[0].primary.line == 44  # the unigram ratio over uni_total


def test_mixer_without_the_entropy_expert_passes() -> None:
    def drop(src: str) -> str:
        return src.replace("[model_nll, uni_nll, spread_nll]", "[model_nll, uni_nll]").replace(
            "torch.zeros(3)", "torch.zeros(2)"
        )

    verdict, findings = run_fixture("mixer_entropy_expert", RULE, drop)
    assert verdict is Verdict.PASS, [f.message for f in findings]


def test_entropy_used_as_a_mixing_weight_passes() -> None:
    """Entropy gating the mixing weight (the legal fix valerio-oai suggested) is not an expert."""

    def as_weight(src: str) -> str:
        return src.replace(
            "return torch.stack([model_nll, uni_nll, spread_nll], dim=-1)",
            "a = torch.sigmoid(spread_nll - 3.0)[:, None]\n"
            "        return torch.stack([model_nll, uni_nll], dim=-1) - torch.cat([(1 - a).log(), a.log()], -1)",
        ).replace("torch.zeros(3)", "torch.zeros(2)")

    verdict, findings = run_fixture("mixer_entropy_expert", RULE, as_weight)
    assert verdict is Verdict.PASS, [f.message for f in findings]


def test_ratio_in_an_imported_sibling_module_fails_there() -> None:
    files = as_sibling_module("ngram_per_token_helper_hash")
    verdict, findings = run(submission_from_files(files, root="sibling"), RULE)
    assert verdict is Verdict.FAIL
    assert [(f.primary.path, f.primary.line) for f in gating(findings, Verdict.FAIL)] == [
        ("ngram_cache.py", 34)
    ]
