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
