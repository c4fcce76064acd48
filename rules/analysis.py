"""PG001: code the auditor could not read, decode or parse.

When analysis is defeated the honest verdict is WARN, never PASS: an unparsable module or an undecodable
`exec(...)` shim may hide anything the other rules look for.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Iterable

from auditor.facts import AuditContext
from auditor.findings import Basis, Confidence, Finding, Severity, Verdict
from rules.base import Case, Rule

# A packed script whose decoded layer does not parse: the WARN must point at the decoded line, in the layer.
_BROKEN_LAYER = base64.b64encode(zlib.compress(b"x = 1\n\ndef f(:\n    pass\n")).decode()
_PACKED_BROKEN = f'import zlib, base64\nexec(zlib.decompress(base64.b64decode("{_BROKEN_LAYER}")))\n'


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
        Case(
            files={"helper.py": b"x = '\xff\xfe'\n"},
            code="print(1)\n",
            verdict=Verdict.WARN,
            path="helper.py",
        ),
        Case(
            code=_PACKED_BROKEN,
            verdict=Verdict.WARN,
            line=3,
            path="train_gpt.py#L1",
            note="decoded layer that does not parse: reported in decoded coordinates",
        ),
    )

    def check(self, ctx: AuditContext) -> Iterable[Finding]:
        for problem in ctx.problems:
            loc = problem.location()
            yield self.finding(Verdict.WARN, problem.message, [loc] if loc else [])
