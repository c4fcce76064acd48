"""PG101 eval-time-network-io and PG102 eval-time-train-data on fixtures, renamed and minified variants."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditor.engine import audit
from auditor.findings import Finding, Verdict
from auditor.rename import minify, rename_identifiers
from auditor.submission import load_path
from auditor.testing import submission_from_files
from rules import get_rule

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RULES = ("PG101", "PG102")


def run(folder: str, transform=None) -> dict[str, tuple[Verdict, list[Finding]]]:
    sub = load_path(FIXTURES / folder)
    if transform is not None:
        files = {p: f.data for p, f in sub.files.items()}
        files["train_gpt.py"] = transform(files["train_gpt.py"].decode()).encode()
        sub = submission_from_files(files, root=folder)
    report = audit(sub, [get_rule(r) for r in RULES])
    return {
        rv.rule_id: (rv.gating_verdict, [f for f in report.findings if f.rule_id == rv.rule_id])
        for rv in report.per_rule()
    }


def line_of(folder: str, marker: str) -> int:
    text = (FIXTURES / folder / "train_gpt.py").read_text().splitlines()
    return next(i for i, t in enumerate(text, 1) if marker in t)


def test_eval_download_fails_on_the_download_line() -> None:
    got = run("eval_download")
    verdict, findings = got["PG101"]
    assert verdict is Verdict.FAIL
    fail = next(f for f in findings if f.verdict is Verdict.FAIL)
    assert fail.primary.line == line_of("eval_download", "path = hf_hub_download(")
    assert "hf_hub_download" in fail.message and fail.flow  # the call chain from the evaluation
    assert got["PG102"][0] is Verdict.PASS


@pytest.mark.parametrize(
    "folder", ["clean_baseline", "eval_io_dead_code", "eval_io_flag_off", "calib_selfgen_legal"]
)
def test_no_eval_io_failure(folder: str) -> None:
    got = run(folder)
    assert {r: v for r, (v, _) in got.items()} == {"PG101": Verdict.PASS, "PG102": Verdict.PASS}


def test_dead_and_default_off_constructs_are_reported_as_information() -> None:
    dead = run("eval_io_dead_code")
    assert any("never called" in f.message for f in dead["PG101"][1] if not f.gating)
    assert any("never called" in f.message for f in dead["PG102"][1] if not f.gating)
    flag = run("eval_io_flag_off")
    net = [f for f in flag["PG101"][1] if not f.gating]
    assert net and "REMOTE_TABLES" in net[0].message
    reads = [f for f in flag["PG102"][1] if not f.gating]
    assert reads and "TRAIN_PRIOR" in reads[0].message


def test_run_command_turning_the_flag_on_is_reported() -> None:
    sub = load_path(FIXTURES / "eval_io_flag_off")
    files = {p: f.data for p, f in sub.files.items()}
    files["run.sh"] = b"REMOTE_TABLES=1 TRAIN_PRIOR=1 torchrun --standalone --nproc_per_node=8 train_gpt.py\n"
    report = audit(submission_from_files(files), [get_rule(r) for r in RULES])
    gating = [f for f in report.findings if f.gating]
    assert {f.rule_id for f in gating} == {"PG101", "PG102"}
    # the documented configuration runs them (API.md "Run commands"): FAIL, naming the command
    assert all(f.verdict is Verdict.FAIL and "run.sh:1" in f.message for f in gating)


@pytest.mark.parametrize(
    "transform", [lambda s: rename_identifiers(s, seed=1), minify], ids=["renamed", "minified"]
)
@pytest.mark.parametrize(
    "folder", ["eval_download", "eval_io_dead_code", "eval_io_flag_off", "clean_baseline"]
)
def test_verdicts_survive_renaming_and_minification(folder: str, transform) -> None:
    plain = run(folder)
    variant = run(folder, transform)
    assert {r: v for r, (v, _) in variant.items()} == {r: v for r, (v, _) in plain.items()}


def test_renamed_download_reports_the_same_line() -> None:
    plain = run("eval_download")["PG101"][1]
    renamed = run("eval_download", lambda s: rename_identifiers(s, seed=2))["PG101"][1]
    assert [f.primary.line for f in renamed if f.gating] == [f.primary.line for f in plain if f.gating]


def test_local_subprocess_is_not_network() -> None:
    from auditor.facts import build_context
    from auditor.flow.program import program_of
    from rules.eval_io import network_reason

    src = (
        "import subprocess, os\n"
        "subprocess.run(['lrzip', '-z', 'model.bin'], check=True)\n"
        "subprocess.run('g++ -O3 -shared kernel.cpp -o kernel.so', shell=True)\n"
        "os.system('wget -q https://example.com/x.bin')\n"
        "subprocess.check_call(['python', '-m', 'pip', 'install', 'sentencepiece'])\n"
    )
    prog = program_of(build_context(submission_from_files({"train_gpt.py": src})))
    reasons = {s.line: network_reason(prog, s) for s in prog.all_sites()}
    assert reasons[2] is None and reasons[3] is None
    assert "wget" in reasons[4] and "pip" in reasons[5]


def test_packed_script_is_analysed_in_its_decoded_layer() -> None:
    """fixtures/packed_eval_download (lzma+base85 exec shim, from the unpacking work): the download sits in the
    decoded code and is reported there, in decoded coordinates."""
    if not (FIXTURES / "packed_eval_download").exists():
        pytest.skip("packed fixture not present")
    verdict, findings = run("packed_eval_download")["PG101"]
    assert verdict is Verdict.FAIL
    fail = next(f for f in findings if f.verdict is Verdict.FAIL)
    assert fail.primary.layer == "train_gpt.py#L1" and "urlopen" in fail.primary.snippet


def test_default_on_read_turned_off_by_the_run_command_does_not_run() -> None:
    """The defaults read train shards at eval, but the documented run command switches that off: the documented
    configuration is what runs (API.md "Run commands"), so PASS with an info finding naming both."""
    from rules.eval_io import _TRAIN_READ_FLAG

    code = _TRAIN_READ_FLAG.replace(
        'os.environ.get("NGRAM_FROM_TRAIN", "0")', 'os.environ.get("NGRAM_FROM_TRAIN", "1")'
    )
    rule = get_rule("PG102")
    alone = audit(submission_from_files({"train_gpt.py": code}), [rule])
    assert alone.per_rule()[0].gating_verdict is Verdict.FAIL
    run_sh = "NGRAM_FROM_TRAIN=0 torchrun --standalone --nproc_per_node=8 train_gpt.py\n"
    both = audit(submission_from_files({"train_gpt.py": code, "run.sh": run_sh}), [rule])
    assert both.per_rule()[0].gating_verdict is Verdict.PASS
    info = next(f for f in both.findings if "NGRAM_FROM_TRAIN" in f.message)
    assert "turned off by the run command at run.sh:1" in info.message


def test_hub_stream_inside_the_timed_eval_of_a_per_seed_loop_fails_on_that_line() -> None:
    """fixtures/eval_hf_stream_per_seed: every seed trains, writes and reloads the artifact, then streams the scored
    texts from the hub. The per-seed loop is a driver, not the training loop, and the test-time training after the
    reload is not training: the stream sits in the evaluation phase."""
    folder = "eval_hf_stream_per_seed"
    verdict, findings = run(folder)["PG101"]
    assert verdict is Verdict.FAIL
    fail = next(f for f in findings if f.verdict is Verdict.FAIL)
    assert fail.primary.line == line_of(folder, 'texts = [row["text"] for row in load_dataset(')
    assert "during evaluation" in fail.message
    # the training corpus streamed before the seed loop is setup
    setup_line = line_of(folder, 'corpus = [row["text"] for row in load_dataset(')
    assert all(f.primary.line != setup_line for f in findings if f.gating)


def test_hub_stream_during_setup_of_a_per_seed_loop_passes() -> None:
    verdict, findings = run("setup_hf_stream_per_seed_legal")["PG101"]
    assert verdict is Verdict.PASS
    assert any("setup phase" in f.message for f in findings)
