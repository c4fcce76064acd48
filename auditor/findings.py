"""The one result type of the auditor: a `Finding`, collected into a `Report`.

Rules, the evidence checks and the GPU harness all produce Findings; renderers only read Reports; the CLI alone
turns a Report into an exit code (`auditor.exitcodes`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

# Version of the JSON report layout (auditor/schemas/report.schema.json). Bump the major on breaking changes.
JSON_SCHEMA_VERSION = "1.0"


class Verdict(StrEnum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"

    @property
    def rank(self) -> int:
        # Worst-of ordering used to fold many findings into one per-rule verdict.
        return {"SKIP": 0, "PASS": 1, "WARN": 2, "FAIL": 3}[self.value]


class Severity(StrEnum):
    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Confidence(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class EvidenceLevel(StrEnum):
    STATIC = "static"
    LOG = "log"
    RESCORE = "rescore"
    RERUN = "rerun"


@dataclass(frozen=True)
class Location:
    """A 1-based line / 1-based column range in a file of the submission.

    For code that was unpacked from an `exec(...)` shim, `path` is the shipped file, `layer` names the decoded
    layer (e.g. ``train_gpt.py#L1``) and the line/column are in decoded coordinates.
    """

    path: str
    line: int = 0
    col: int = 0
    end_line: int = 0
    end_col: int = 0
    layer: str | None = None
    snippet: str = ""

    @property
    def display_path(self) -> str:
        return self.layer or self.path

    def __str__(self) -> str:
        if self.line:
            return f"{self.display_path}:{self.line}:{self.col or 1}"
        return self.display_path


@dataclass(frozen=True)
class FlowStep:
    """One hop of a source-to-sink path (SARIF codeFlows)."""

    location: Location
    message: str


@dataclass(frozen=True)
class Basis:
    """The ruling a rule rests on: where, when and (briefly) what was said."""

    ref: str  # e.g. "PR #779 (valerio-oai)"
    date: str  # ISO date of the ruling
    quote: str  # at most two sentences
    url: str = ""
    section: str = ""  # section of shared/docs/rules.md

    def __str__(self) -> str:
        return f"{self.ref}, {self.date}: \u201c{self.quote}\u201d"


@dataclass
class Finding:
    rule_id: str
    rule_name: str
    verdict: Verdict
    message: str
    severity: Severity = Severity.MEDIUM
    confidence: Confidence = Confidence.HIGH
    evidence_level: EvidenceLevel = EvidenceLevel.STATIC
    category: str = ""
    locations: list[Location] = field(default_factory=list)
    related: list[Location] = field(default_factory=list)
    flow: list[FlowStep] = field(default_factory=list)
    evidence: str = ""
    basis: Basis | None = None
    data: dict[str, Any] = field(default_factory=dict)
    waived: bool = False
    waiver_reason: str = ""
    fingerprint: str = ""

    def __post_init__(self) -> None:
        if not self.fingerprint:
            self.fingerprint = self.compute_fingerprint()

    @property
    def primary(self) -> Location | None:
        return self.locations[0] if self.locations else None

    def compute_fingerprint(self) -> str:
        """Stable across line shifts: rule, file and the normalized evidence text, not line numbers."""
        loc = self.primary
        anchor = " ".join((loc.snippet if loc else "").split()) or " ".join(self.message.split())
        key = "\x1f".join([self.rule_id, loc.path if loc else "", anchor, self.verdict.value])
        return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]

    @property
    def gating(self) -> bool:
        """A finding that can fail the run: not waived, not merely informational."""
        return not self.waived and self.severity is not Severity.INFO

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["verdict"] = self.verdict.value
        d["severity"] = self.severity.value
        d["confidence"] = self.confidence.value
        d["evidence_level"] = self.evidence_level.value
        return d


@dataclass(frozen=True)
class UnpackedLayer:
    """One decoding step peeled off a packed script (e.g. b85 -> lzma raw LZMA2)."""

    path: str  # shipped file
    name: str  # e.g. "train_gpt.py#L1"
    codecs: tuple[str, ...]  # outermost first, e.g. ("base85", "lzma")
    line: int  # line of the exec(...) in the parent layer
    decoded_bytes: int
    sha256: str


@dataclass
class SubmissionIdentity:
    path: str
    entry: str | None
    git_rev: str | None = None
    git_path: str | None = None
    name: str | None = None
    author: str | None = None


@dataclass
class RuleVerdict:
    rule_id: str
    rule_name: str
    category: str
    verdict: Verdict
    gating_verdict: Verdict
    findings: int


@dataclass
class Report:
    submission: SubmissionIdentity
    tool_version: str
    ruleset_version: str
    findings: list[Finding] = field(default_factory=list)
    layers: list[UnpackedLayer] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # analysis problems that did not stop the run
    tables: dict[str, Any] = field(default_factory=dict)  # e.g. the per-seed log table
    rules_run: list[tuple[str, str, str]] = field(default_factory=list)  # (id, name, category)
    unused_waivers: list[str] = field(default_factory=list)

    @property
    def active(self) -> list[Finding]:
        return [f for f in self.findings if not f.waived]

    @property
    def waived(self) -> list[Finding]:
        return [f for f in self.findings if f.waived]

    def per_rule(self) -> list[RuleVerdict]:
        """One verdict per rule that ran: the worst gating finding (info findings read as PASS)."""
        out: list[RuleVerdict] = []
        for rule_id, name, category in self.rules_run:
            mine = [f for f in self.findings if f.rule_id == rule_id]
            gating = [f for f in mine if f.gating]
            shown = [f for f in mine if not f.waived]
            worst = max((f.verdict for f in shown), key=lambda v: v.rank, default=Verdict.PASS)
            worst_gating = max((f.verdict for f in gating), key=lambda v: v.rank, default=Verdict.PASS)
            if shown and all(f.verdict is Verdict.SKIP for f in shown):
                worst = worst_gating = Verdict.SKIP
            if worst.rank > worst_gating.rank and worst_gating is not Verdict.SKIP:
                worst = worst_gating  # informational FAIL-shaped findings do not colour the table
            out.append(RuleVerdict(rule_id, name, category, worst, worst_gating, len(mine)))
        return out

    def summary(self) -> dict[str, int]:
        counts = {v.value: 0 for v in Verdict}
        for rv in self.per_rule():
            counts[rv.gating_verdict.value] += 1
        counts["waived"] = len(self.waived)
        return counts

    @property
    def overall(self) -> Verdict:
        verdicts = [rv.gating_verdict for rv in self.per_rule()]
        if self.errors and all(v is not Verdict.FAIL for v in verdicts):
            verdicts.append(Verdict.WARN)  # analysis defeated somewhere: never a clean PASS
        return max(verdicts, key=lambda v: v.rank, default=Verdict.SKIP)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": JSON_SCHEMA_VERSION,
            "submission": asdict(self.submission),
            "tool_version": self.tool_version,
            "ruleset_version": self.ruleset_version,
            "overall": self.overall.value,
            "summary": self.summary(),
            "rules": [
                {
                    "id": rv.rule_id,
                    "name": rv.rule_name,
                    "category": rv.category,
                    "verdict": rv.verdict.value,
                    "gating_verdict": rv.gating_verdict.value,
                    "findings": rv.findings,
                }
                for rv in self.per_rule()
            ],
            "findings": [f.to_dict() for f in self.findings],
            "layers": [asdict(layer) for layer in self.layers],
            "errors": list(self.errors),
            "tables": self.tables,
            "unused_waivers": list(self.unused_waivers),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, default=str)
