"""One-way layers: `pgolf_data` is a leaf, `reference_model` never imports `auditor` or `rules`.

The auditor may call into the reference model (the `reference` subcommand, the verifier's rescore), never the other
way round, so the reference model stays usable on its own and a change in the auditor cannot break it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_packages(package: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        tops: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                tops |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                tops.add(node.module.split(".")[0])
        out[str(path.relative_to(ROOT))] = tops
    return out


@pytest.mark.parametrize(
    "package, forbidden",
    [("pgolf_data", {"auditor", "rules", "reference_model"}), ("reference_model", {"auditor", "rules"})],
)
def test_layer_does_not_import_upwards(package: str, forbidden: set[str]) -> None:
    offenders = {f: sorted(t & forbidden) for f, t in imported_packages(package).items() if t & forbidden}
    assert not offenders, offenders


def test_the_scan_sees_imports() -> None:
    # the check above must be able to fail: the auditor's harness does import the reference model
    found = imported_packages("auditor")
    assert any("reference_model" in tops for tops in found.values())
