"""Generate docs/rules.md (the page every SARIF helpUri points to) from the rule registry.

`python -m auditor.ruledocs > docs/rules.md`; a test keeps the committed page in sync with the code.
"""

from __future__ import annotations

from rules import all_rules


def generate() -> str:
    out = [
        "# pgolf-audit rules",
        "",
        "Generated from the rule classes by `python -m auditor.ruledocs`; do not edit by hand.",
        "",
        "| id | name | category | severity | evidence | basis |",
        "|---|---|---|---|---|---|",
    ]
    rules = all_rules()
    for r in rules:
        out.append(
            f"| [{r.id}](#{r.id.lower()}) | {r.name} | {r.category} | {r.severity.value} | "
            f"{r.evidence_level.value} | {r.basis.ref} ({r.basis.date}) |"
        )
    for r in rules:
        b = r.basis
        out += [
            "",
            f"## {r.id}",
            "",
            f"**{r.name}** — {r.title}",
            "",
            r.rationale,
            "",
            f"- category: `{r.category}`; default severity: {r.severity.value}; confidence: {r.confidence.value}; "
            f"evidence: {r.evidence_level.value}",
            f"- basis: {b.ref}, {b.date}" + (f" (shared/docs/rules.md {b.section})" if b.section else ""),
            f"  > {b.quote}",
            f"- examples: {len(r.invalid)} flagged, {len(r.valid)} not flagged (`pgolf-audit explain {r.id}`)",
        ]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(generate(), end="")
