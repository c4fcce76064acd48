"""`make bench`: the report pairs audit time with libcst parse time per file and lists the slowest rules."""

from __future__ import annotations

import ast

import pytest

from auditor import bench


def test_synthetic_script_is_real_size_and_deterministic() -> None:
    text = bench.synthetic_training_script()
    assert text == bench.synthetic_training_script()
    assert 1500 <= text.count("\n") <= 2200
    ast.parse(text)


def test_bench_report_on_fixtures(capsys: pytest.CaptureFixture[str], fixtures_dir) -> None:
    rc = bench.main(["--repeat", "1", "--top", "3", str(fixtures_dir / "packed_nested")])
    out = capsys.readouterr().out
    assert rc == 0
    row = next(line for line in out.splitlines() if line.startswith("packed_nested"))
    lines, kb, layers, audit_s, libcst_s, ratio = row.split()[1:]
    assert int(layers) == 2 and float(audit_s) > 0 and float(libcst_s) > 0
    assert abs(float(ratio) - float(audit_s) / float(libcst_s)) < 0.05 * float(ratio) + 0.01
    assert "slowest stages/rules" in out and "facts" in out


def test_bench_report_names_the_worst_real_size_file() -> None:
    rows = [
        bench.BenchRow("small", 400, 10, 0, 0.3, 0.1),
        bench.BenchRow("big", 1800, 70, 0, 0.3, 0.2),
        bench.BenchRow("bigger", 3000, 120, 1, 0.9, 0.3),
    ]
    out = bench.report(rows, top=3)
    assert "real-size files (1,000+ lines): 2, worst 3.00 (bigger), 1 over 2.0" in out
