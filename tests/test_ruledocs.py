from __future__ import annotations

from pathlib import Path

from auditor.ruledocs import generate
from rules import all_rules

DOC = Path(__file__).resolve().parents[1] / "docs" / "rules.md"


def test_rules_page_is_up_to_date() -> None:
    assert DOC.read_text(encoding="utf-8") == generate(), "run: python -m auditor.ruledocs > docs/rules.md"


def test_every_help_uri_has_an_anchor() -> None:
    text = DOC.read_text(encoding="utf-8")
    for rule in all_rules():
        assert rule.help_uri().endswith(f"docs/rules.md#{rule.id.lower()}")
        assert f"\n## {rule.id}\n" in text
