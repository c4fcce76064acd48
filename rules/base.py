"""The rule framework: a rule is one class with a stable id, its ruling, and embedded valid/invalid cases.

Rules read facts from the AuditContext (parsed units, shared analyses via `ctx.memo`); they never parse files
themselves, never print, never decide exit codes. The test suite turns every embedded Case into a test
(tests/test_rule_cases.py), Fixit-style.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from auditor.findings import (
    Basis,
    Confidence,
    EvidenceLevel,
    Finding,
    FlowStep,
    Location,
    Severity,
    Verdict,
)

if TYPE_CHECKING:
    from auditor.facts import AuditContext

# The fixed category vocabulary (exposed as SARIF properties.tags; matches the labelled corpus).
CATEGORIES = (
    "ttt_val_before_score",
    "ngram_target_in_key",
    "ngram_unnormalized",
    "slot",
    "train_on_val",
    "calib_on_val",
    "multipass",
    "doc_boundary",
    "causality",
    "eval_io",
    "byte_denominator",
    "artifact_size",
    "time_limit",
    "evidence",
    "package",
)


@dataclass(frozen=True)
class Case:
    """An embedded example. `code` becomes train_gpt.py; `files` adds (or replaces) other files.

    `verdict` is the rule's expected gating verdict for the case; `line` the expected primary line of the first
    finding with that verdict (and `path` its file, in display coordinates, e.g. "train_gpt.py#L1").
    """

    code: str | None = None
    verdict: Verdict = Verdict.FAIL
    line: int | None = None
    path: str = "train_gpt.py"
    files: Mapping[str, str | bytes] = field(default_factory=dict)
    note: str = ""
    options: Mapping[str, object] = field(
        default_factory=dict
    )  # run options (Submission.options), e.g. a reference

    def materialize(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        if self.code is not None:
            out["train_gpt.py"] = _dedent(self.code).encode("utf-8")
        for name, content in self.files.items():
            out[name] = content if isinstance(content, bytes) else _dedent(content).encode("utf-8")
        return out


def _dedent(text: str) -> str:
    import textwrap

    return textwrap.dedent(text).lstrip("\n")


class Rule:
    """Subclass and set the class attributes; implement `check`."""

    id: ClassVar[str] = ""
    name: ClassVar[str] = ""  # kebab-case, says what is wrong, e.g. "eval-time-network-io"
    title: ClassVar[str] = ""
    category: ClassVar[str] = ""
    rationale: ClassVar[str] = ""
    basis: ClassVar[Basis]
    severity: ClassVar[Severity] = Severity.HIGH
    confidence: ClassVar[Confidence] = Confidence.HIGH
    evidence_level: ClassVar[EvidenceLevel] = EvidenceLevel.STATIC
    valid: ClassVar[tuple[Case, ...]] = ()
    invalid: ClassVar[tuple[Case, ...]] = ()
    # Rules about record eligibility (package, claims, size, time, significance): on a non-record submission their
    # FAILs become WARNs, since non-record entries are accepted "if interesting" and are not ranked (README, A.1.9).
    # Legality rules (how the score is computed) keep FAIL on every track.
    record_only: ClassVar[bool] = False

    def check(self, ctx: AuditContext) -> Iterable[Finding]:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------------------------
    @classmethod
    def help_uri(cls) -> str:
        return f"https://github.com/pgolf-audit/pgolf-audit/blob/main/docs/rules.md#{cls.id.lower()}"

    def finding(
        self,
        verdict: Verdict,
        message: str,
        locations: Iterable[Location] = (),
        *,
        severity: Severity | None = None,
        confidence: Confidence | None = None,
        evidence_level: EvidenceLevel | None = None,
        related: Iterable[Location] = (),
        flow: Iterable[FlowStep] = (),
        evidence: str = "",
        data: dict | None = None,
    ) -> Finding:
        """A Finding pre-filled with this rule's identity, basis and defaults."""
        if severity is None:
            severity = Severity.INFO if verdict in (Verdict.PASS, Verdict.SKIP) else self.severity
        return Finding(
            rule_id=self.id,
            rule_name=self.name,
            verdict=verdict,
            message=message,
            severity=severity,
            confidence=confidence or self.confidence,
            evidence_level=evidence_level or self.evidence_level,
            category=self.category,
            locations=list(locations),
            related=list(related),
            flow=list(flow),
            evidence=evidence,
            basis=self.basis,
            data=dict(data or {}),
        )

    def info(self, message: str, locations: Iterable[Location] = (), **kw: object) -> Finding:
        """What a construct would do if enabled (dead code, default-off flag): reported, never gating."""
        return self.finding(Verdict.PASS, message, locations, severity=Severity.INFO, **kw)  # type: ignore[arg-type]

    def skip(self, message: str) -> Finding:
        return self.finding(Verdict.SKIP, message, severity=Severity.INFO)

    @classmethod
    def validate_definition(cls) -> list[str]:
        """Problems with the rule's own declaration (checked by the test suite)."""
        problems = []
        if not (cls.id.startswith("PG") and cls.id[2:].isdigit() and len(cls.id) == 5):
            problems.append(f"{cls.__name__}: id {cls.id!r} is not PGnnn")
        if cls.category not in CATEGORIES:
            problems.append(f"{cls.id}: category {cls.category!r} not in the vocabulary")
        if not cls.name or cls.name.lower() != cls.name or " " in cls.name:
            problems.append(f"{cls.id}: name must be kebab-case")
        basis = getattr(cls, "basis", None)
        if basis is None or not basis.ref or not basis.date or not basis.quote:
            problems.append(f"{cls.id}: basis needs ref, date and quote")
        elif basis.quote.count(". ") > 1:
            problems.append(f"{cls.id}: basis quote longer than two sentences")
        if not cls.title or not cls.rationale:
            problems.append(f"{cls.id}: title and rationale are required")
        if not cls.valid or not cls.invalid:
            problems.append(f"{cls.id}: needs at least one valid and one invalid case")
        return problems
