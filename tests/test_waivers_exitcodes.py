"""Exit codes (0/1/2/3) and maintainer waivers; nothing inside a submission can clear a finding."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from auditor.cli import main
from auditor.errors import InputError
from auditor.exitcodes import ERROR, FAILED, OK, STRICT_WARN, exit_code
from auditor.findings import Finding, Location, Report, Severity, SubmissionIdentity, Verdict
from auditor.waivers import apply_waivers, load_waivers


def _report(*verdicts: Verdict, severity: Severity = Severity.HIGH) -> Report:
    findings = [
        Finding(
            "PG001",
            "analysis-defeated",
            v,
            f"m{i}",
            severity=severity,
            locations=[Location("train_gpt.py", i + 1)],
        )
        for i, v in enumerate(verdicts)
    ]
    return Report(
        SubmissionIdentity("x", "train_gpt.py"),
        "0",
        "0",
        findings=findings,
        rules_run=[("PG001", "analysis-defeated", "evidence")],
    )


@pytest.mark.parametrize(
    ("verdicts", "strict", "code"),
    [
        ((), False, OK),
        ((Verdict.PASS,), True, OK),
        ((Verdict.WARN,), False, OK),
        ((Verdict.WARN,), True, STRICT_WARN),
        ((Verdict.FAIL, Verdict.WARN), False, FAILED),
        ((Verdict.FAIL, Verdict.WARN), True, FAILED),
    ],
)
def test_exit_codes(verdicts: tuple[Verdict, ...], strict: bool, code: int) -> None:
    assert exit_code(_report(*verdicts), strict=strict) == code


def test_info_findings_never_gate() -> None:
    assert exit_code(_report(Verdict.FAIL, severity=Severity.INFO), strict=True) == OK


def _write(tmp: Path, text: str) -> Path:
    p = tmp / "waivers.toml"
    p.write_text(text)
    return p


def test_waiver_clears_only_the_matching_finding(tmp_path: Path) -> None:
    report = _report(Verdict.FAIL, Verdict.FAIL)
    target = report.findings[0]
    waivers = load_waivers(
        _write(
            tmp_path,
            f'''
[[waiver]]
rule = "PG001"
path = "train_gpt.py"
fingerprint = "{target.fingerprint}"
reason = "ruled legal in PR #1530"
approved_by = "maintainer"

[[waiver]]
rule = "PG001"
path = "other.py"
fingerprint = "0000000000000000"
reason = "stale"
''',
        )
    )
    apply_waivers(report, waivers)
    assert target.waived and "ruled legal" in target.waiver_reason
    assert not report.findings[1].waived
    assert exit_code(report) == FAILED  # the other FAIL still counts
    assert len(report.unused_waivers) == 1 and "other.py" in report.unused_waivers[0]


def test_expired_waiver_does_not_apply(tmp_path: Path) -> None:
    report = _report(Verdict.FAIL)
    fp = report.findings[0].fingerprint
    waivers = load_waivers(
        _write(
            tmp_path,
            f'[[waiver]]\nrule="PG001"\npath="train_gpt.py"\n'
            f'fingerprint="{fp}"\nreason="r"\nexpires=2026-01-01\n',
        )
    )
    apply_waivers(report, waivers, today=dt.date(2026, 11, 22))
    assert not report.findings[0].waived and "expired" in report.unused_waivers[0]


@pytest.mark.parametrize(
    "text",
    [
        '[[waiver]]\nrule="PG001"\npath="a.py"\nfingerprint="x"\n',  # no reason
        '[[waiver]]\nrule="PG001"\npath="a.py"\nfingerprint="x"\nreason="  "\n',  # blank reason
        "[[waiver]\n",  # broken TOML
        '[[waiver]]\nrule="PG001"\npath="a.py"\nfingerprint="x"\nreason="r"\nexpires="soon"\n',
    ],
)
def test_bad_waiver_files_are_input_errors(tmp_path: Path, text: str) -> None:
    with pytest.raises(InputError):
        load_waivers(_write(tmp_path, text))


def test_cli_waiver_round_trip_and_strict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    # A submitter-side suppression comment must not clear anything.
    (sub / "train_gpt.py").write_text("# pgolf-audit: ignore PG001  # noqa\ndef f(:\n")
    assert main([str(sub), "--strict", "--format", "json"]) == STRICT_WARN
    data = json.loads(capsys.readouterr().out)
    finding = next(f for f in data["findings"] if f["verdict"] == "WARN")
    waiver = _write(
        tmp_path,
        f'[[waiver]]\nrule="{finding["rule_id"]}"\npath="train_gpt.py"\n'
        f'fingerprint="{finding["fingerprint"]}"\nreason="known false positive"\n',
    )
    assert main([str(sub), "--strict", "--format", "json", "--waivers", str(waiver)]) == OK
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["waived"] == 1 and data["findings"][0]["waived"] is True


def test_cli_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "missing")]) == ERROR
    assert "no such file" in capsys.readouterr().err
    assert main(["explain", "PG999"]) == ERROR
    assert main([str(tmp_path), "--format", "yaml"]) == ERROR
    assert main(["--git-dir", str(tmp_path)]) == ERROR
    assert "Traceback" not in capsys.readouterr().err
