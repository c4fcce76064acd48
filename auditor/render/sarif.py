"""SARIF 2.1.0 output: rules in tool.driver.rules, results with regions, codeFlows for source-to-sink paths,
waived findings as external suppressions. Validated in the tests against the vendored official schema."""

from __future__ import annotations

from typing import Any

from auditor.findings import Finding, Location, Report, Severity, Verdict
from rules import all_rules
from rules.base import Rule

SARIF_SCHEMA_URI = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)
INFORMATION_URI = "https://github.com/pgolf-audit/pgolf-audit"
SRCROOT = "SRCROOT"

_LEVEL = {Verdict.FAIL: "error", Verdict.WARN: "warning", Verdict.PASS: "none", Verdict.SKIP: "none"}
_KIND = {
    Verdict.FAIL: "fail",
    Verdict.WARN: "review",
    Verdict.PASS: "informational",
    Verdict.SKIP: "notApplicable",
}
_DEFAULT_LEVEL = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "note",
    Severity.INFO: "note",
}


def _rule_descriptor(rule: type[Rule]) -> dict[str, Any]:
    b = rule.basis
    return {
        "id": rule.id,
        "name": rule.name,
        "shortDescription": {"text": rule.title},
        "fullDescription": {"text": rule.rationale},
        "helpUri": rule.help_uri(),
        "help": {"text": f"Basis: {b.ref} ({b.date}): {b.quote}"},
        "defaultConfiguration": {"level": _DEFAULT_LEVEL[rule.severity]},
        "properties": {
            "tags": [rule.category],
            "category": rule.category,
            "severity": rule.severity.value,
            "confidence": rule.confidence.value,
            "evidenceLevel": rule.evidence_level.value,
            "basis": {"ref": b.ref, "date": b.date, "quote": b.quote, "section": b.section},
        },
    }


def _uri(loc: Location) -> str:
    # A decoded layer is addressed as a fragment of the shipped file ("train_gpt.py#L1"); its region is in
    # decoded coordinates, which `properties.decodedLayer` makes explicit for consumers.
    return loc.layer or loc.path


def _physical(loc: Location) -> dict[str, Any]:
    phys: dict[str, Any] = {"artifactLocation": {"uri": _uri(loc), "uriBaseId": SRCROOT}}
    if loc.line > 0:
        region: dict[str, Any] = {"startLine": loc.line}
        if loc.col > 0:
            region["startColumn"] = loc.col
        if loc.end_line >= loc.line:
            region["endLine"] = loc.end_line
            if loc.end_col > 0 and (loc.end_line > loc.line or loc.end_col >= max(loc.col, 1)):
                region["endColumn"] = loc.end_col
        if loc.snippet:
            region["snippet"] = {"text": loc.snippet}
        phys["region"] = region
    return phys


def _location(loc: Location, message: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"physicalLocation": _physical(loc)}
    if message:
        out["message"] = {"text": message}
    if loc.layer:
        out["properties"] = {"decodedLayer": loc.layer, "shippedFile": loc.path}
    return out


def _result(f: Finding, rule_index: dict[str, int]) -> dict[str, Any]:
    res: dict[str, Any] = {
        "ruleId": f.rule_id,
        "kind": _KIND[f.verdict],
        "level": _LEVEL[f.verdict] if f.gating or f.verdict is Verdict.PASS else "note",
        "message": {"text": f.message},
        "partialFingerprints": {"pgolfAudit/v1": f.fingerprint},
        "properties": {
            "verdict": f.verdict.value,
            "severity": f.severity.value,
            "confidence": f.confidence.value,
            "evidenceLevel": f.evidence_level.value,
            "tags": [f.category] if f.category else [],
        },
    }
    if f.rule_id in rule_index:
        res["ruleIndex"] = rule_index[f.rule_id]
    if f.evidence:
        res["properties"]["evidence"] = f.evidence
    if f.data:
        res["properties"]["data"] = f.data
    if f.locations:
        res["locations"] = [_location(loc) for loc in f.locations]
    if f.related:
        res["relatedLocations"] = [dict(_location(loc), id=i) for i, loc in enumerate(f.related)]
    if f.flow:
        res["codeFlows"] = [
            {
                "threadFlows": [
                    {"locations": [{"location": _location(step.location, step.message)} for step in f.flow]}
                ]
            }
        ]
    if f.waived:
        res["suppressions"] = [
            {"kind": "external", "state": "accepted", "justification": f.waiver_reason or "waived"}
        ]
    return res


def to_sarif(report: Report) -> dict[str, Any]:
    ran = {rid for rid, _, _ in report.rules_run}
    rules = [r for r in all_rules() if r.id in ran]
    rule_index = {r.id: i for i, r in enumerate(rules)}
    results = [_result(f, rule_index) for f in report.findings]
    notifications = [
        {"level": "warning", "message": {"text": err}, "descriptor": {"id": "internal"}}
        for err in report.errors
    ]
    run: dict[str, Any] = {
        "tool": {
            "driver": {
                "name": "pgolf-audit",
                "version": report.tool_version,
                "semanticVersion": report.tool_version,
                "informationUri": INFORMATION_URI,
                "rules": [_rule_descriptor(r) for r in rules],
                "properties": {"rulesetVersion": report.ruleset_version},
            }
        },
        "originalUriBaseIds": {
            SRCROOT: {"description": {"text": f"submission root: {report.submission.path}"}}
        },
        "invocations": [
            {
                "executionSuccessful": not report.errors,
                "toolExecutionNotifications": notifications,
            }
        ],
        "results": results,
        "properties": {
            "overall": report.overall.value,
            "summary": report.summary(),
            "unpackedLayers": [
                {"file": la.path, "layer": la.name, "codecs": list(la.codecs), "line": la.line}
                for la in report.layers
            ],
        },
    }
    return {"$schema": SARIF_SCHEMA_URI, "version": "2.1.0", "runs": [run]}
