"""Every output format: SARIF validated against the official 2.1.0 schema, JSON against our versioned schema,
Markdown table-first with <details>, text without colour codes when not a TTY."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from auditor.findings import Basis, Finding, FlowStep, Location, Report, Severity, SubmissionIdentity, Verdict
from auditor.render import render
from auditor.render.markdown import STICKY_MARKER
from auditor.render.sarif import to_sarif

SCHEMAS = Path(__file__).resolve().parents[1] / "auditor" / "schemas"
BASIS = Basis(ref="issue #1017", date="2026-03-26", quote="Score before update.")


def sample_report() -> Report:
    decoded = Location("train_gpt.py", 120, 9, 120, 30, layer="train_gpt.py#L1", snippet="loss.backward()")
    fail = Finding(
        "PG001",
        "analysis-defeated",
        Verdict.FAIL,
        "update | before score",
        severity=Severity.HIGH,
        category="evidence",
        locations=[decoded],
        flow=[
            FlowStep(Location("train_gpt.py", 10, 5, layer="train_gpt.py#L1"), "val tokens loaded"),
            FlowStep(decoded, "backward on val loss"),
        ],
        related=[Location("train_gpt.py", 140, 1, layer="train_gpt.py#L1", snippet="eval_val(...)")],
        evidence="scored at line 140 after update at line 120",
        basis=BASIS,
        data={"order": [120, 140]},
    )
    warn = Finding(
        "PG001",
        "analysis-defeated",
        Verdict.WARN,
        "shim not decodable",
        severity=Severity.MEDIUM,
        category="evidence",
        locations=[Location("helper.py", 3, 1, 3, 20)],
        basis=BASIS,
    )
    info = Finding(
        "PG001",
        "analysis-defeated",
        Verdict.PASS,
        "dead code would download",
        severity=Severity.INFO,
        category="evidence",
        locations=[Location("train_gpt.py", 5)],
        basis=BASIS,
    )
    waived = Finding(
        "PG001",
        "analysis-defeated",
        Verdict.FAIL,
        "waived thing",
        severity=Severity.HIGH,
        category="evidence",
        locations=[Location("train_gpt.py", 7)],
        basis=BASIS,
        waived=True,
        waiver_reason="ruled legal",
    )
    return Report(
        submission=SubmissionIdentity(path="records/x", entry="train_gpt.py"),
        tool_version="0.1.0",
        ruleset_version="test",
        findings=[fail, warn, info, waived],
        rules_run=[("PG001", "analysis-defeated", "evidence")],
        errors=[],
    )


def test_sarif_is_schema_valid_and_complete() -> None:
    schema = json.loads((SCHEMAS / "sarif-schema-2.1.0.json").read_text())
    sarif = to_sarif(sample_report())
    jsonschema.Draft7Validator(schema).validate(sarif)
    run = sarif["runs"][0]
    rule = run["tool"]["driver"]["rules"][0]
    assert rule["id"] == "PG001" and rule["helpUri"].startswith("https://")
    assert rule["properties"]["tags"] == ["evidence"]
    fail = run["results"][0]
    assert fail["level"] == "error" and fail["kind"] == "fail"
    region = fail["locations"][0]["physicalLocation"]["region"]
    assert (region["startLine"], region["startColumn"], region["endColumn"]) == (120, 9, 30)
    assert fail["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "train_gpt.py#L1"
    steps = fail["codeFlows"][0]["threadFlows"][0]["locations"]
    assert [s["location"]["physicalLocation"]["region"]["startLine"] for s in steps] == [10, 120]
    suppressed = [r for r in run["results"] if "suppressions" in r]
    assert len(suppressed) == 1 and suppressed[0]["suppressions"][0]["justification"] == "ruled legal"


def test_sarif_of_a_real_audit_is_schema_valid(tmp_path: Path) -> None:
    from auditor.cli import main

    (tmp_path / "train_gpt.py").write_text("def f(:\n")
    out = tmp_path / "r.sarif"
    assert main([str(tmp_path), "--format", "sarif", "--output", str(out)]) == 0
    schema = json.loads((SCHEMAS / "sarif-schema-2.1.0.json").read_text())
    jsonschema.Draft7Validator(schema).validate(json.loads(out.read_text()))


def test_json_report_matches_versioned_schema() -> None:
    schema = json.loads((SCHEMAS / "report.schema.json").read_text())
    data = json.loads(render(sample_report(), "json"))
    jsonschema.Draft202012Validator(schema).validate(data)
    assert data["schema_version"].startswith("1.")
    assert data["overall"] == "FAIL"
    assert data["summary"]["waived"] == 1
    assert [f["verdict"] for f in data["findings"]] == ["FAIL", "WARN", "PASS", "FAIL"]


def test_markdown_has_table_first_and_details() -> None:
    md = render(sample_report(), "markdown")
    lines = md.splitlines()
    assert lines[0] == STICKY_MARKER
    table_at = next(i for i, line in enumerate(lines) if line.startswith("| Rule |"))
    details_at = next(i for i, line in enumerate(lines) if line.startswith("<details>"))
    assert table_at < details_at
    assert "update \\| before score" in md  # pipes escaped inside the table/summary
    assert "Waived by maintainers (1)" in md and "ruled legal" in md
    assert "`train_gpt.py#L1:120:9`" in md


@pytest.mark.parametrize("color", [False, True])
def test_text_colour_only_when_asked(color: bool) -> None:
    text = render(sample_report(), "text", color=color)
    assert ("\x1b[" in text) is color
    assert "FAIL" in text and "train_gpt.py#L1:120:9" in text and "WAIVED: ruled legal" in text


def test_markdown_table_lists_the_worst_rules_first() -> None:
    from auditor.engine import audit
    from auditor.submission import load_path

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "eval_download"
    md = render(audit(load_path(fixture)), "markdown")
    rows = [line for line in md.splitlines() if line.startswith("| [`PG")]
    verdicts = [("FAIL" in r) * 3 + ("WARN" in r) * 2 for r in rows]
    assert verdicts == sorted(verdicts, reverse=True) and verdicts[0] == 3
    # only FAIL and WARN rules in the table; the rest is one collapsed line
    assert all(v >= 2 for v in verdicts)
    assert "rules pass or do not apply</summary>" in md and "docs/rules.md#pg201) PASS" in md


def test_markdown_per_seed_table_from_the_logs() -> None:
    from auditor.engine import audit
    from auditor.submission import load_path

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "clean_baseline"
    report = audit(load_path(fixture))
    md = render(report, "markdown")
    seeds = report.tables["log_table"]["rows"]
    assert seeds, "the fixture ships run logs"
    head = "| Seed | Scored line | val_bpb (log) | Claimed | Agrees | Log |"
    assert head in md
    first = md.splitlines()[md.splitlines().index(head) + 2]
    seed = seeds[0]["seed"]
    assert first.startswith(
        f"| {'—' if seed is None else seed} | {seeds[0]['label']} | {seeds[0]['val_bpb']} |"
    )
    assert first.endswith(f"`{seeds[0]['log']}:{seeds[0]['line']}` |")


def test_markdown_stays_under_githubs_limit_and_keeps_the_verdict_table() -> None:
    from auditor.bot import combined_comment
    from auditor.render.markdown import GITHUB_COMMENT_LIMIT

    rep = sample_report()
    big = rep.findings[0]
    for i in range(400):  # 400 long findings: ~1 MB of details
        rep.findings.append(
            Finding(
                "PG001",
                "analysis-defeated",
                Verdict.FAIL,
                f"finding {i}",
                severity=Severity.HIGH,
                category="evidence",
                locations=[Location("train_gpt.py", i + 1, 1, snippet="x" * 200)],
                evidence="e" * 2500,
                flow=big.flow,
                basis=BASIS,
            )
        )
    body = combined_comment([rep, rep])
    assert len(body) < GITHUB_COMMENT_LIMIT
    assert body.count("| Rule | Name | Verdict |") == 2  # each folder's verdict table survives
    assert "left out to fit GitHub's comment limit" in body
    assert body.count("<details>") == body.count("</details>")  # no block cut in half


def _text(report: Report, **opts: bool) -> str:
    from auditor.render.text import TextOptions

    return render(report, "text", text_options=TextOptions(**opts))


def _two_fail_one_warn() -> Report:
    rep = sample_report()
    second = Finding(
        "PG201",
        "ttt-val-before-score",
        Verdict.FAIL,
        "update before score",
        severity=Severity.CRITICAL,
        category="ttt_val_before_score",
        locations=[Location("train_gpt.py", 83, 13, snippet="loss.backward()")],
        basis=BASIS,
    )
    rep.findings.insert(0, second)
    rep.rules_run.append(("PG201", "ttt-val-before-score", "ttt_val_before_score"))
    return rep


def test_text_lists_fail_then_warn_then_one_summary_line() -> None:
    text = _text(_two_fail_one_warn())
    lines = text.splitlines()
    heads = [ln for ln in lines[: lines.index("Waived findings (maintainer waivers)")] if ": PG" in ln]
    assert heads == [
        "train_gpt.py#L1:120:9: PG001 analysis-defeated [FAIL]",
        "train_gpt.py:83:13: PG201 ttt-val-before-score [FAIL]",
        "helper.py:3:1: PG001 analysis-defeated [WARN]",
    ]
    assert "   83 | loss.backward()" in lines
    # counts are per rule (PG001's worst gating verdict is FAIL), as in the JSON summary
    assert lines[-1] == "2 FAIL, 0 WARN, 1 waived in 2 rules -> FAIL"
    # the per-rule table, the notes and the flow are verbose-only
    assert (
        "category" not in text and "dead code would download" not in text and "val tokens loaded" not in text
    )


def test_text_verbose_shows_table_notes_flow_and_ruling() -> None:
    text = _text(_two_fail_one_warn(), verbose=True)
    assert "val tokens loaded" in text and "dead code would download" in text
    assert "ruling: issue #1017 (2026-03-26)" in text
    assert any(ln.split()[:2] == ["PG201", "ttt-val-before-score"] for ln in text.splitlines())


def test_text_quiet_is_the_summary_alone() -> None:
    assert _text(_two_fail_one_warn(), quiet=True) == "2 FAIL, 0 WARN, 1 waived in 2 rules -> FAIL\n"


def test_text_statistics_counts_per_rule() -> None:
    lines = _text(_two_fail_one_warn(), statistics=True).splitlines()
    stats = [ln.split() for ln in lines if ln.strip()[:1].isdigit() and "PG" in ln]
    assert stats == [
        ["1", "PG001", "analysis-defeated", "FAIL"],
        ["1", "PG001", "analysis-defeated", "WARN"],
        ["1", "PG201", "ttt-val-before-score", "FAIL"],
    ]


def test_cli_quiet_keeps_the_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    from auditor.cli import main

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "ttt_prequant_on_val"
    loud = main([str(fixture)])
    capsys.readouterr()
    quiet = main([str(fixture), "--quiet"])
    out = capsys.readouterr().out
    assert loud == quiet == 1
    assert out.count("\n") == 1 and out.rstrip().endswith("-> FAIL")
