"""Fuzzing the log parser: real log lines from the fixtures, mutated (numbers swapped for huge, negative, NaN or
4,000+-digit ones, characters replaced, lines cut), mixed with CRLF, bare CR progress bars, timestamps, binary junk,
and 10 MB lines; then whole submissions with such logs through the log rules and `rescore`.

Properties: parse_log never raises; CPU time and peak allocation stay under explicit bounds (linear in the input);
a mutated log never produces a score that its own lines do not print; the engine reports no internal error.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from _fuzz import MB, bounded, cli, fuzz_settings, run_limited
from hypothesis import assume, given
from hypothesis import strategies as st

from auditor.engine import audit, select_rules
from auditor.evidence.logs import parse_log
from auditor.findings import Verdict
from auditor.testing import submission_from_files

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
REAL_LINES = sorted(
    {
        ln
        for p in FIXTURES.rglob("*")
        if p.suffix in (".log", ".txt") and p.is_file()
        for ln in p.read_text(errors="replace").splitlines()
        if ln.strip()
    }
)
NUMBERS = [
    "0",
    "-1",
    "1e999",
    "nan",
    "inf",
    "-0.0",
    "9" * 400,
    "1" * 4500,
    "3.14159265358979323846",
    "",
    "1e-400",
]
JUNK = ["\x00", "\ufffd", "\x1b[2K", "\r", "\t", "\u202e", " " * 50, "val_bpb:", "val_loss:", "=" * 30]
LOG_RULE_CATEGORIES = ["evidence", "time_limit", "artifact_size", "byte_denominator", "package"]


def mutate_line(line: str, rnd: random.Random) -> str:
    how = rnd.randrange(6)
    if how == 0:  # swap one number
        import re

        nums = list(re.finditer(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", line))
        if nums:
            m = rnd.choice(nums)
            return line[: m.start()] + rnd.choice(NUMBERS) + line[m.end() :]
    if how == 1 and line:  # cut
        return line[: rnd.randrange(len(line))]
    if how == 2:  # junk in the middle
        i = rnd.randrange(len(line) + 1)
        return line[:i] + rnd.choice(JUNK) + line[i:]
    if how == 3:
        return f"{rnd.randrange(10**9, 10**10)}.{rnd.randrange(1000)} {line}"  # a timestamp prefix
    if how == 4:
        return "progress 10%\r" + line  # bare-CR progress bar
    return line


@st.composite
def logs(draw: st.DrawFn) -> str:
    lines = draw(st.lists(st.sampled_from(REAL_LINES), min_size=0, max_size=80))
    rnd = random.Random(draw(st.integers(0, 2**32)))
    lines = [mutate_line(ln, rnd) if rnd.random() < 0.4 else ln for ln in lines]
    lines += draw(st.lists(st.text(max_size=120), max_size=5))
    eol = draw(st.sampled_from(["\n", "\r\n", "\r\n\n", "\n\r"]))
    return eol.join(lines) + draw(st.sampled_from(["", eol]))


def _parse(text: str, name: str = "train_seed42.log"):  # noqa: ANN202
    cap = 64 * MB + 40 * len(text)  # the parser keeps the lines and a few views of them: linear in the input
    return bounded(lambda: parse_log(text, name), cpu_s=20.0, peak_bytes=cap, what="parse_log")


@fuzz_settings(300)
@given(logs())
def test_mutated_real_logs(text: str) -> None:
    log = _parse(text)
    printed = set(text.replace("\r", "\n").split("\n"))
    for s in log.score_lines + log.periodic_val:
        assert any(s.text in ln for ln in printed), (
            s
        )  # a score is only ever read from a line of the log itself
    assert all(isinstance(p, str) for p in log.problems)


@fuzz_settings(200)
@given(st.binary(max_size=4000), st.sampled_from(["strict", "replace", "surrogateescape"]))
def test_binary_junk(data: bytes, errors: str) -> None:
    try:
        text = data.decode("utf-8", errors=errors)
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    _parse(text, "junk.log")


def test_huge_numbers_are_ignored_not_fatal() -> None:
    text = "\n".join(
        [
            "seed:" + "1" * 5000,
            "Total submission size int6+brotli: " + "9" * 5000 + " bytes",
            "step:" + "1" * 5000 + "/20000 train_loss:2.0 train_time:1000ms step_avg:50.0ms",
            "Hyperparameters:",
            "  world_size: " + "8" * 5000,
            "final_int8_zlib_roundtrip val_loss:2.0000 val_bpb:1.2000",
        ]
    )
    log = _parse(text)
    assert log.final_score is not None and log.final_score.val_bpb == 1.2
    assert log.sizes == [] and log.world_size is None
    assert sum("digits; line ignored" in p for p in log.problems) == 4


def test_ten_megabyte_lines() -> None:
    """Single 10 MB lines shaped to tempt the regexes into backtracking: words, a label with no scores, digits."""
    ten = 10 * MB
    for line in (
        "a " * (ten // 2),
        "final_int8" + " x:1" * (ten // 4) + " val_loss:",
        "step:" + "1" * ten,
        "val_loss:1.0 " * (ten // 13),
        "|" + " " * ten,
    ):
        log = _parse(line + "\nfinal_int8_zlib_roundtrip val_loss:2.0 val_bpb:1.0\n")
        assert log.final_score is not None and log.final_score.line_no == 2


@fuzz_settings(40)
@given(logs(), logs())
def test_log_rules_and_rescore_on_mutated_logs(a: str, b: str) -> None:
    files = {
        "train_gpt.py": "def main():\n    pass\n\n\nif __name__ == '__main__':\n    main()\n",
        "train_seed42.log": a,
        "train_seed7.log": b.encode("utf-8", "surrogatepass"),
        "submission.json": json.dumps({"val_bpb": 1.1, "seeds": [42, 7]}),
    }
    report = bounded(
        lambda: audit(submission_from_files(files), select_rules(LOG_RULE_CATEGORIES), time_budget_s=None),
        cpu_s=30.0,
        peak_bytes=256 * MB,
        what="audit",
    )
    assert report.errors == []


@fuzz_settings(30)
@given(st.binary(max_size=3000))
def test_unusable_logs_never_pass_the_log_rules(data: bytes) -> None:
    """Logs with nothing of a run in them: every rule that needs one says SKIP or WARN, with its reason."""
    text = data.decode("utf-8", errors="replace")
    assume(not parse_log(text, "train_seed42.log").is_run_log)
    files = {"train_gpt.py": "print(1)\n", "train_seed42.log": data, "submission.json": '{"val_bpb": 1.1}'}
    report = audit(submission_from_files(files), select_rules(["PG611", "PG614", "PG631", "PG632", "PG701"]))
    for rv in report.per_rule():
        assert rv.verdict in (Verdict.SKIP, Verdict.WARN), rv
        assert all(f.message for f in report.findings if f.rule_id == rv.rule_id)


def test_cli_on_hostile_logs_under_rlimits(tmp_path: Path) -> None:
    """The whole CLI (audit and rescore) on a folder of hostile logs, in a child limited to 2 GB of address space
    and 120 s of CPU: a 10 MB line, a CRLF log with 200,000 lines, binary junk, huge numbers."""
    (tmp_path / "train_gpt.py").write_text(
        "def main():\n    pass\n\n\nif __name__ == '__main__':\n    main()\n"
    )
    (tmp_path / "train_seed1.log").write_text(
        "x" * (10 * MB) + "\nfinal_int8_zlib_roundtrip val_loss:2 val_bpb:1\n"
    )
    rows = "".join(
        f"step:{i}/200000 train_loss:2.0 train_time:{i}ms step_avg:1.0ms\r\n" for i in range(200_000)
    )
    (tmp_path / "train_seed2.log").write_bytes(rows.encode())
    (tmp_path / "train_seed3.log").write_bytes(bytes(range(256)) * 4096)
    (tmp_path / "train_seed4.log").write_text("seed:" + "4" * 9000 + "\n")
    out = tmp_path / "report.json"
    proc = run_limited(cli(str(tmp_path), "-f", "json", "-o", str(out)), cpu_s=120, address_space=2048 * MB)
    assert proc.returncode in (0, 1, 3) and "internal error" not in proc.stderr, proc.stderr[-2000:]
    assert json.loads(out.read_text())["errors"] == []
    proc = run_limited(cli("rescore", str(tmp_path), "-f", "json"), cpu_s=120, address_space=2048 * MB)
    assert proc.returncode == 0, proc.stderr[-2000:]
