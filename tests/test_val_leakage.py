"""PG401 train-on-val and PG402 calib-on-val on fixtures, the real PR #728 / #1019 pair, renamed variants."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from auditor.engine import audit
from auditor.findings import Finding, Verdict
from auditor.rename import minify, rename_identifiers
from auditor.submission import load_path
from auditor.testing import submission_from_files
from rules import get_rule

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MIRROR = Path("/work/.mirror/openai+parameter-golf/repo")
VALCALIB = "records/track_10min_16mb/2026-03-25_ValCalib_GPTQ_XSA_BigramHash3072/train_gpt.py"
PR728_COMMIT = "713bb3fcd9017ba01d104723b3f873201976bab8"  # dev_labels DEV-012 (calibration on val data)
RULES = ("PG401", "PG402")


def verdicts(files: dict[str, bytes]) -> dict[str, tuple[Verdict, list[Finding]]]:
    report = audit(submission_from_files(files), [get_rule(r) for r in RULES])
    return {
        rv.rule_id: (rv.gating_verdict, [f for f in report.findings if f.rule_id == rv.rule_id])
        for rv in report.per_rule()
    }


def fixture_files(folder: str, transform=None) -> dict[str, bytes]:
    sub = load_path(FIXTURES / folder)
    files = {p: f.data for p, f in sub.files.items()}
    if transform is not None:
        files["train_gpt.py"] = transform(files["train_gpt.py"].decode()).encode()
    return files


def line_of(folder: str, marker: str) -> int:
    text = (FIXTURES / folder / "train_gpt.py").read_text().splitlines()
    return next(i for i, t in enumerate(text, 1) if marker in t)


EXPECTED = {
    "clean_baseline": {"PG401": Verdict.PASS, "PG402": Verdict.PASS},
    "train_on_val": {"PG401": Verdict.FAIL, "PG402": Verdict.PASS},
    "calib_on_val": {"PG401": Verdict.PASS, "PG402": Verdict.FAIL},
    "calib_selfgen_legal": {"PG401": Verdict.PASS, "PG402": Verdict.PASS},
    "eval_download": {"PG401": Verdict.PASS, "PG402": Verdict.PASS},
    "val_tuned_temperature": {"PG401": Verdict.FAIL, "PG402": Verdict.PASS},
    "train_tuned_temperature_legal": {"PG401": Verdict.PASS, "PG402": Verdict.PASS},
    "calib_val_stats_logged_legal": {"PG401": Verdict.PASS, "PG402": Verdict.PASS},
    "prefix_ttt_monitor_restored_legal": {"PG401": Verdict.PASS, "PG402": Verdict.PASS},
}


@pytest.mark.parametrize("folder", sorted(EXPECTED))
def test_fixture_verdicts(folder: str) -> None:
    got = verdicts(fixture_files(folder))
    assert {r: v for r, (v, _) in got.items()} == EXPECTED[folder]


def test_train_on_val_points_at_the_update() -> None:
    _, findings = verdicts(fixture_files("train_on_val"))["PG401"]
    fail = next(f for f in findings if f.verdict is Verdict.FAIL)
    assert fail.primary.line == line_of("train_on_val", "loss.backward()")
    assert "fineweb_val_*.bin" in fail.flow[0].message  # the flow starts at the val shard pattern
    assert fail.flow[-1].location.line == fail.primary.line


def test_calib_on_val_points_at_where_val_batches_enter_calibration() -> None:
    _, findings = verdicts(fixture_files("calib_on_val"))["PG402"]
    fail = next(f for f in findings if f.verdict is Verdict.FAIL)
    # the last point in the driver where validation-derived batches head into calibration
    assert fail.primary.line == line_of("calib_on_val", "hessians = collect_hessians(model, batches)")
    assert any("hooks capture" in s.message for s in fail.flow)
    assert any("calib_stream = TokenStream(args.val_files)" in s.location.snippet for s in fail.flow)


def test_temperature_tuned_on_held_out_val_points_at_the_selection() -> None:
    """fixtures/val_tuned_temperature: a grid search on val_tokens[:10%] picks the temperature that scores the rest
    (no backward): reported where the selection assigns it, with the scoring call as related location."""
    folder = "val_tuned_temperature"
    _, findings = verdicts(fixture_files(folder))["PG401"]
    fail = next(f for f in findings if f.verdict is Verdict.FAIL)
    assert fail.primary.line == line_of(folder, "best_temp = temp")
    assert "tune an evaluation parameter" in fail.message
    assert fail.related and fail.related[0].line == line_of(
        folder, "val_loss = chunk_nll(model, scored, temperature)"
    )
    assert any("selected by comparing" in s.message for s in fail.flow)


def test_logged_activation_statistics_of_a_val_eval_are_not_calibration() -> None:
    """fixtures/calib_val_stats_logged_legal: hooks capture activation absmax and X^T X over val batches, but they
    only reach a log line; the twin (calib_on_val) feeds them to the quantizer and FAILs."""
    verdict, findings = verdicts(fixture_files("calib_val_stats_logged_legal"))["PG402"]
    assert verdict is Verdict.PASS and not findings


def test_prefix_ttt_with_weights_restored_is_not_training_on_val() -> None:
    """fixtures/prefix_ttt_monitor_restored_legal: the final-step monitoring eval adapts on each window's prefix and
    restores the snapshot after every window (info); without the restore the same update FAILs on its line."""
    folder = "prefix_ttt_monitor_restored_legal"
    verdict, findings = verdicts(fixture_files(folder))["PG401"]
    assert verdict is Verdict.PASS
    info = next(f for f in findings if not f.gating)
    assert info.primary.line == line_of(folder, "ttt_loss.backward()") and "restored" in info.message
    kept = fixture_files(
        folder, lambda s: s.replace("            model.load_state_dict(original_state)", "            pass")
    )
    verdict, findings = verdicts(kept)["PG401"]
    assert verdict is Verdict.FAIL
    assert next(f for f in findings if f.gating).primary.line == line_of(folder, "ttt_loss.backward()")


@pytest.mark.parametrize(
    "transform", [lambda s: rename_identifiers(s, seed=4), minify], ids=["renamed", "minified"]
)
@pytest.mark.parametrize("folder", sorted(EXPECTED))
def test_verdicts_survive_renaming_and_minification(folder: str, transform) -> None:
    got = verdicts(fixture_files(folder, transform))
    assert {r: v for r, (v, _) in got.items()} == EXPECTED[folder]


def _git_show(rev: str, path: str) -> bytes:
    return subprocess.run(
        ["git", f"--git-dir={MIRROR}", "show", f"{rev}:{path}"], capture_output=True, check=True
    ).stdout


@pytest.mark.skipif(not MIRROR.exists(), reason="openai/parameter-golf mirror not present")
def test_real_val_calibration_fails_and_the_merged_self_generated_version_passes() -> None:
    old = verdicts({"train_gpt.py": _git_show(PR728_COMMIT, VALCALIB)})
    assert old["PG402"][0] is Verdict.FAIL
    fail = next(f for f in old["PG402"][1] if f.verdict is Verdict.FAIL)
    # reported where the driver hands the val-built loader to the Hessian collection, with the loader's
    # construction on the val shard pattern in the flow
    assert fail.primary.snippet.startswith(
        ("hessians = collect_hessians(", "calib_loader = DistributedTokenLoader(")
    )
    assert any("DistributedTokenLoader(args.val_files" in s.location.snippet for s in fail.flow)
    assert any("hooks capture" in s.message for s in fail.flow)
    assert old["PG401"][0] is Verdict.PASS
    merged = verdicts({"train_gpt.py": _git_show("HEAD", VALCALIB)})
    assert merged["PG402"][0] is Verdict.PASS and merged["PG401"][0] is Verdict.PASS
    renamed = verdicts(
        {"train_gpt.py": rename_identifiers(_git_show(PR728_COMMIT, VALCALIB).decode(), seed=9).encode()}
    )
    assert renamed["PG402"][0] is Verdict.FAIL
    assert next(f for f in renamed["PG402"][1] if f.gating).primary.line == fail.primary.line


CASES = [
    pytest.param(rule_id, case, id=f"{rule_id}-{kind}{i}")
    for rule_id in ("PG101", "PG102", "PG401", "PG402")
    for kind, cases in (("valid", get_rule(rule_id).valid), ("invalid", get_rule(rule_id).invalid))
    for i, case in enumerate(cases)
]


@pytest.mark.parametrize(("rule_id", "case"), CASES)
def test_embedded_cases_do_not_depend_on_names(rule_id: str, case) -> None:
    """Every embedded case of the four flow rules keeps its verdict when all identifiers are renamed (and its
    line, since renaming keeps lines) and when the script is minified."""
    rule = get_rule(rule_id)
    files = case.materialize()

    def outcome(variant: dict[str, bytes]) -> tuple[Verdict, int | None]:
        report = audit(submission_from_files(variant), [rule])
        verdict = next(rv.gating_verdict for rv in report.per_rule())
        first = next((f for f in report.findings if f.verdict is verdict and f.gating), None)
        return verdict, first.primary.line if first is not None and first.primary else None

    plain = outcome(files)
    src = files["train_gpt.py"].decode()
    assert outcome({**files, "train_gpt.py": rename_identifiers(src, seed=13).encode()}) == plain
    assert outcome({**files, "train_gpt.py": minify(src).encode()})[0] is plain[0]
