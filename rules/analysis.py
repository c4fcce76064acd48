"""PG001: code the auditor could not read, decode or parse.

When analysis is defeated the honest verdict is WARN, never PASS: an unparsable module or an undecodable
`exec(...)` shim may hide anything the other rules look for.
"""

from __future__ import annotations

from collections.abc import Iterable

from auditor.facts import AuditContext
from auditor.findings import Basis, Confidence, Finding, Location, Severity, Verdict
from rules.base import Case, Rule


class AnalysisDefeated(Rule):
    id = "PG001"
    name = "analysis-defeated"
    title = "Code that could not be read, decoded or parsed"
    category = "evidence"
    severity = Severity.MEDIUM
    confidence = Confidence.HIGH
    rationale = (
        "Every rule reads parsed code. A file that is not UTF-8, does not parse, or ships an exec(...) shim "
        "that cannot be decoded statically is a blind spot, so the audit cannot vouch for it."
    )
    basis = Basis(
        ref="openai/parameter-golf README (Submission Process)",
        date="2026-03-18",
        quote="train_gpt.py and any other dependencies must successfully compile and run within the records folder.",
        section="A.1",
    )
    valid = (Case(code="print('ok')\n", verdict=Verdict.PASS),)
    invalid = (
        Case(code="def f(:\n    pass\n", verdict=Verdict.WARN, line=1),
        Case(files={"helper.py": b"x = '\xff\xfe'\n"}, code="print(1)\n", verdict=Verdict.WARN, path="helper.py"),
    )

    def check(self, ctx: AuditContext) -> Iterable[Finding]:
        for path, line, message in ctx.problems:
            if line == 0 and ":" in message:
                # parse errors carry "name:line:col: message"
                parts = message.split(":")
                if len(parts) > 2 and parts[1].isdigit():
                    line = int(parts[1])
            loc = [Location(path=path, line=line)] if path else []
            yield self.finding(Verdict.WARN, message, loc)
