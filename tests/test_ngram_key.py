"""PG301 ngram-target-in-key: fixtures, renaming invariance, reachability and the labelled dev rows."""

from __future__ import annotations

import pytest

from auditor.findings import Verdict
from auditor.rename import minify, rename_identifiers
from auditor.testing import submission_from_files
from tests._targets_helpers import as_sibling_module, gating, mirror_has, run, run_fixture, run_mirror

RULE = "PG301"


def test_target_hashed_into_key_fails_at_key_line() -> None:
    verdict, findings = run_fixture("ngram_target_in_key", RULE)
    assert verdict is Verdict.FAIL
    fail = gating(findings, Verdict.FAIL)
    assert len(fail) == 1
    assert fail[0].primary is not None and fail[0].primary.line == 59
    assert "full_key" in fail[0].primary.snippet
    assert [loc.line for loc in fail[0].related] == [61, 66]  # the lookup, then the log of the blended p
    assert len(fail[0].flow) == 3


@pytest.mark.parametrize(
    "name",
    [
        "ngram_context_only_legal",
        "ngram_tilt_normalized_legal",
        "bigram_hash_input_side_legal",
        "ppm_byte_mixture",
        "smear_no_bos_mask",
    ],
)
def test_legal_or_other_rule_fixtures_pass(name: str) -> None:
    verdict, findings = run_fixture(name, RULE)
    assert verdict is Verdict.PASS, [f.message for f in findings]


def test_update_after_scoring_alone_is_legal() -> None:
    """Deleting the target-keyed lookup (keeping the post-scoring update with the same key) must pass."""

    def drop_lookup(src: str) -> str:
        src = src.replace("full_c = full_table[full_key].astype(np.float64)", "full_c = ctx_c * 0.5")
        assert "full_table[full_key]" not in src
        return src

    verdict, _ = run_fixture("ngram_target_in_key", RULE, drop_lookup)
    assert verdict is Verdict.PASS


def test_default_off_flag_is_info_not_fail() -> None:
    verdict, findings = run_fixture(
        "ngram_target_in_key", RULE, lambda s: s.replace('"NGRAM_ENABLED", "1"', '"NGRAM_ENABLED", "0"')
    )
    assert verdict is Verdict.PASS
    assert findings and all(not f.gating for f in findings)
    assert "Not run by default" in findings[0].message


def test_run_command_turning_the_flag_on_makes_it_fail() -> None:
    readme = "# run\n\n```\nNGRAM_ENABLED=1 torchrun --nproc_per_node=8 train_gpt.py\n```\n"
    verdict, _ = run_fixture(
        "ngram_target_in_key",
        RULE,
        lambda s: s.replace('"NGRAM_ENABLED", "1"', '"NGRAM_ENABLED", "0"'),
        extra={"README.md": readme},
    )
    assert verdict is Verdict.FAIL


def test_gate_reading_the_realized_token_fails() -> None:
    def gate(src: str) -> str:
        return (
            src.replace("hit = ctx_c >= 2", "hit = word_start_lut[tgt.astype(np.int64)] > 0")
            .replace("PRIMES = np.array(", "word_start_lut = np.load('word_start.npy')\nPRIMES = np.array(")
            .replace("full_c = full_table[full_key].astype(np.float64)", "full_c = ctx_c")
        )

    verdict, findings = run_fixture("ngram_target_in_key", RULE, gate)
    assert verdict is Verdict.FAIL
    assert "word_start_lut" in gating(findings, Verdict.FAIL)[0].primary.snippet


@pytest.mark.parametrize(
    "transform", [lambda s: rename_identifiers(s, seed=3), minify], ids=["rename", "minify"]
)
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ngram_target_in_key", Verdict.FAIL),
        ("ngram_context_only_legal", Verdict.PASS),
        ("ngram_tilt_normalized_legal", Verdict.PASS),
        ("bigram_hash_input_side_legal", Verdict.PASS),
    ],
)
def test_verdict_survives_renaming(name: str, expected: Verdict, transform) -> None:
    verdict, findings = run_fixture(name, RULE, transform)
    assert verdict is expected, [f.message for f in findings]


def test_renamed_fail_keeps_its_line() -> None:
    verdict, findings = run_fixture("ngram_target_in_key", RULE, lambda s: rename_identifiers(s, seed=11))
    assert verdict is Verdict.FAIL
    assert gating(findings, Verdict.FAIL)[0].primary.line == 59


DEV = [
    (
        "c58742a3e6600afd5ebe75a4e799850bad504adf",
        "records/track_10min_16mb/2026-03-25_BackoffNgramMixer_DriftFreeTTT_0.6683",
        Verdict.FAIL,
        113,
    ),
    (
        "682797376f06e5c2297f4ffcc6fe45aaeba5c108",
        "records/track_10min_16mb/2026-03-26_ScoreFirst_TTT_Ngram_Backoff",
        Verdict.FAIL,
        1164,
    ),
    (
        "e5e366078d8181a86868ef1c6dbd1595758bce0e",
        "records/track_non_record_16mb/2026-03-20_SharedCore8x12d896_MLP1_1xH100SXM",
        Verdict.PASS,
        None,
    ),
    (
        "9c011678af64fc49827fd8b6106c85a61502eee6",
        "records/track_non_record_16mb/2026-03-27_CompressedUT_CE_EMA_ExportAlignedQAT_1.4457",
        Verdict.PASS,
        None,
    ),
    ("HEAD", "records/track_10min_16mb/2026-04-09_A2_Muon097_3Seed", Verdict.PASS, None),
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


# --- issue 8, class 3: the target found by use wherever it is read ------------------------------------------------
@pytest.mark.parametrize(
    ("name", "path", "line", "snippet"),
    [
        (
            "ngram_target_in_class_method",
            "train_gpt.py",
            71,
            "full_h = h ^ (y_batch[r, c] * self.PRIMES[k - 1])",
        ),
        ("ngram_per_token_helper_hash", "train_gpt.py", 38, "full_h = self._hash_full(ctx_h, target, w)"),
        ("ngram_oracle_gate", "train_gpt.py", 72, "improved = mixed_nll < neural_nll"),
    ],
)
def test_target_found_by_use_fails_on_the_right_line(name: str, path: str, line: int, snippet: str) -> None:
    verdict, findings = run_fixture(name, RULE)
    assert verdict is Verdict.FAIL
    fail = gating(findings, Verdict.FAIL)
    assert len(fail) == 1, [f.message for f in fail]
    assert fail[0].primary is not None
    assert (fail[0].primary.path, fail[0].primary.line) == (path, line)
    assert fail[0].primary.snippet == snippet


@pytest.mark.parametrize("name", ["ngram_dirichlet_normalized_legal", "mixer_entropy_expert"])
def test_normalized_count_reads_and_experts_are_not_target_keys(name: str) -> None:
    """`(c[row, tgt] + s * q(tgt)) / (row_total + s)` reads the realized token's entry of a count row: a
    normalization question (PG302), not a key that looks at the answer."""
    verdict, findings = run_fixture(name, RULE)
    assert verdict is Verdict.PASS, [f.message for f in findings]
    assert not findings


def test_mixing_without_the_oracle_passes() -> None:
    """The same cache mixed at every position where it has a count (no comparison with the answer) passes."""

    def no_oracle(src: str) -> str:
        src = src.replace("    improved = mixed_nll < neural_nll\n", "")
        return src.replace("nll[idx[improved]] = mixed_nll[improved]", "nll[idx] = mixed_nll")

    verdict, findings = run_fixture("ngram_oracle_gate", RULE, no_oracle)
    assert verdict is Verdict.PASS, [f.message for f in findings]


def test_if_else_keeping_the_lower_loss_is_an_oracle() -> None:
    """The scalar form: `if mixed < neural: return mixed` / `return neural` inside a per-token helper."""

    def scalar(src: str) -> str:
        return src.replace(
            "    improved = mixed_nll < neural_nll\n    nll[idx[improved]] = mixed_nll[improved]\n",
            "    for j in range(len(idx)):\n"
            "        nll[idx[j]] = pick(mixed_nll[j], neural_nll[j])\n\n\n"
            "def pick(mixed, neural):\n"
            "    if mixed < neural:\n"
            "        return mixed\n"
            "    return neural\n",
        )

    verdict, findings = run_fixture("ngram_oracle_gate", RULE, scalar)
    assert verdict is Verdict.FAIL, [f.message for f in findings]
    assert "mixed < neural" in gating(findings, Verdict.FAIL)[0].primary.snippet


def test_running_best_is_not_an_oracle() -> None:
    """`if loss < best: best = loss` (a running minimum of monitoring losses) chooses nothing that is scored."""
    src = """
import torch.nn.functional as F

def monitor(model, batches):
    best = float("inf")
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        if loss < best:
            best = loss
    return best

if __name__ == "__main__":
    monitor(*load())
"""
    verdict, findings = run_fixture("ngram_oracle_gate", RULE, lambda _s: src)
    assert verdict is Verdict.PASS, [f.message for f in findings]


def test_helper_hash_without_the_target_passes() -> None:
    """The per-token helper queried with the context only (the cache keyed on the context) passes."""

    def ctx_only(src: str) -> str:
        return src.replace(
            "full_h = self._hash_full(ctx_h, target, w)", "full_h = self._hash_full(ctx_h, pos, w)"
        ).replace("            p = min(full_count, ctx_count) / max(ctx_count, 1)\n", "            p = 0.5\n")

    verdict, findings = run_fixture("ngram_per_token_helper_hash", RULE, ctx_only)
    assert verdict is Verdict.PASS, [f.message for f in findings]


def test_target_hashed_in_an_imported_sibling_module() -> None:
    """The cache class moved into `ngram_cache.py`, imported by the entry script: same finding, in that file."""
    files = as_sibling_module("ngram_per_token_helper_hash")
    assert "from ngram_cache import BackoffCache" in files["train_gpt.py"]
    verdict, findings = run(submission_from_files(files, root="sibling"), RULE)
    assert verdict is Verdict.FAIL
    fail = gating(findings, Verdict.FAIL)
    assert [(f.primary.path, f.primary.snippet) for f in fail] == [
        ("ngram_cache.py", "full_h = self._hash_full(ctx_h, target, w)")
    ]


def test_target_provenance_is_a_queryable_fact() -> None:
    """Other rules ask `target_facts(ctx).is_target(unit, expr)`: the hashed-in token inside the class method is
    the target, the context hash next to it is not; the gathered model probability is a realized-token value."""
    import ast as _ast

    from auditor.facts import build_context
    from auditor.flow.targets import target_facts
    from auditor.submission import load_path
    from tests._targets_helpers import FIXTURES

    ctx = build_context(load_path(FIXTURES / "ngram_target_in_class_method"))
    facts = target_facts(ctx)
    unit = next(u for u in ctx.parsed_units if u.path == "train_gpt.py")
    by_text = {}
    for node in _ast.walk(unit.tree):
        if isinstance(node, _ast.Assign) and len(node.targets) == 1:
            by_text.setdefault(_ast.unparse(node.targets[0]), node.value)
    assert facts.is_target(unit, by_text["full_h"])
    assert not facts.is_target(unit, by_text["ctx_c"])
    assert facts.is_realized_loss(unit, by_text["p_model"])


@pytest.mark.parametrize(
    ("ctx_read", "tgt_read"),
    [
        ("stream[sel_pos - (w - k)]", "stream[pos]"),  # context positions are a subset `sel_pos = pos[sel]`
        ("stream[pos - w + k]", "stream[pos]"),  # a context window of width w before the scored position
        # index arrays cast before the read keep their positions
        ("stream[(pos - w + k).astype(np.int64)]", "stream[(pos + 1).astype(np.int64)]"),
        # one context column of a window, as a slice, next to the scored slice of the same width n
        ("stream[pos - w + k : pos - w + k + sel]", "stream[pos + 1 : pos + 1 + sel]"),
    ],
    ids=["position-subset", "window-width", "cast-index", "window-slices"],
)
def test_context_and_target_reads_of_one_stream(ctx_read: str, tgt_read: str) -> None:
    src = f"""
import numpy as np

def score(stream, pos, sel, w, model_p, ctx_t, full_t, mask):
    sel_pos = pos[sel]
    h = np.zeros(len(pos), dtype=np.uint64)
    for k in range(w):
        h ^= {ctx_read} * np.uint64(40503)
    tgt = {tgt_read}
    full_key = (h ^ (tgt * np.uint64(2654435761))) & mask
    ctx_c = ctx_t[h & mask]
    p = np.minimum(full_t[full_key], ctx_c) / np.maximum(ctx_c, 1)
    return -np.log(0.8 * model_p + 0.2 * p)

if __name__ == "__main__":
    score(*load())
"""
    verdict, findings = run_fixture("ngram_oracle_gate", RULE, lambda _s: src)
    assert verdict is Verdict.FAIL, [f.message for f in findings]
    assert gating(findings, Verdict.FAIL)[0].primary.line == 10


def test_last_context_column_slice_is_not_the_target() -> None:
    """`s[a-1 : a-1+n]` next to the window columns `s[a-w+k : a-w+k+n]` is the newest *input* column, not the
    scored token: hashing it into the key is causal."""
    src = """
import numpy as np

def score(stream, a, n, w, model_p, ctx_t, full_t, mask):
    h = np.zeros(n, dtype=np.uint64)
    for k in range(w):
        h ^= stream[a - w + k : a - w + k + n] * np.uint64(40503)
    last = stream[a - 1 : a - 1 + n]
    full_key = (h ^ (last * np.uint64(2654435761))) & mask
    ctx_c = ctx_t[h & mask]
    p = np.minimum(full_t[full_key], ctx_c) / np.maximum(ctx_c, 1)
    return -np.log(0.8 * model_p + 0.2 * p)

if __name__ == "__main__":
    score(*load())
"""
    verdict, findings = run_fixture("ngram_oracle_gate", RULE, lambda _s: src)
    assert verdict is Verdict.PASS, [f.message for f in findings]


def test_interpolation_table_is_not_a_token_stream() -> None:
    """`anchors[i]` next to `anchors[i + 1]` inside a piecewise-linear helper: its result is no target, so a
    table read at it is no target key (seen on an unseen PR head)."""
    src = """
import math

def pw(value, anchors):
    for i in range(len(anchors) - 1):
        lv, lp = anchors[i]
        hv, hp = anchors[i + 1]
        if value <= hv:
            return lp + (value - lv) / (hv - lv) * (hp - lp)
    return anchors[-1][1]

def score(tokens, weights, model_p):
    bits = 0.0
    for t in range(len(tokens) - 1):
        w = weights.get(pw(float(t), [(0, 0.1), (10, 0.5)]), 0.5)
        bits -= math.log(w * model_p[t] + (1 - w) / 256)
    return bits

if __name__ == "__main__":
    score(*load())
"""
    verdict, findings = run_fixture("ngram_oracle_gate", RULE, lambda _s: src)
    assert verdict is Verdict.PASS, [f.message for f in findings]
