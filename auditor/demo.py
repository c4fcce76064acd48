"""`make demo`: audit the bundled example submissions and show each report.

Each example states the verdict it must get, so the demo doubles as a smoke test: it exits 1 if any example
does not get its expected verdict.
"""

from __future__ import annotations

import sys
from pathlib import Path

from auditor.engine import audit
from auditor.findings import Verdict
from auditor.render import render
from auditor.submission import load_path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

EXAMPLES: list[tuple[str, Verdict, str]] = [
    (
        "clean_baseline",
        Verdict.PASS,
        "a clean baseline-shaped record: trains on train shards, scores val under no_grad",
    ),
    (
        "packed_lzma_b85",
        Verdict.PASS,
        "the same kind of script shipped as exec(L.decompress(B.b85decode(...)))",
    ),
    ("eval_download", Verdict.FAIL, "downloads data during evaluation"),
    ("packed_eval_download", Verdict.FAIL, "a packed script whose decoded eval function opens a URL"),
    ("ttt_prequant_on_val", Verdict.FAIL, "fine-tunes on validation tokens before scoring them"),
    ("ngram_target_in_key", Verdict.FAIL, "n-gram cache whose lookup key hashes in the target token"),
]


def main() -> int:
    color = sys.stdout.isatty()
    mismatches = []
    shown = 0
    for name, expected, story in EXAMPLES:
        folder = FIXTURES / name
        if not folder.is_dir():
            print(f"(example {name} is not bundled in this checkout)")
            mismatches.append(name)
            continue
        report = audit(load_path(folder))
        print(f"\n=== {name}: {story} (expect {expected.value})")
        print(render(report, "text", color=color), end="")
        shown += 1
        if report.overall is not expected:
            mismatches.append(f"{name}: got {report.overall.value}, expected {expected.value}")
    print(f"\n{shown} examples audited; try `pgolf-audit fixtures/<name> --format markdown|sarif|json`.")
    if mismatches:
        print("Unexpected: " + "; ".join(mismatches))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
