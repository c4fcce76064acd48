"""Plots next to `verify` reports: the numbers they are drawn from, and real matplotlib PNGs (valid files whose
pixels show the series), linked from the Markdown; skipped with a note without matplotlib."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from auditor.constants import RERUN_SEED_STD_BPB, RERUN_SEED_STD_FLOOR_BPB
from auditor.engine import audit
from auditor.render import plots, render
from auditor.render.plots import loss_curves, noise_band, plots_section, seed_points, write_verify_plots
from auditor.submission import load_path
from tests._png import count_non_background, read_png

matplotlib = pytest.importorskip("matplotlib", reason="the `plots` extra (matplotlib) is not installed")

OLD = """\
step:1/200 train_loss:6.9312 train_time:10ms step_avg:10.00ms
step:100/200 train_loss:4.1000 train_time:1000ms step_avg:10.00ms
        print(f"step:{step}/{args.iterations} train_loss:{loss.item():.4f} train_time:{ms:.0f}ms")
step:200/200 train_loss:3.5000 train_time:2000ms step_avg:10.00ms
"""
NEW_TIMESTAMPED = """\
2026-04-09 12:00:01 1/500 train_loss: 7.0000 train_time: 0.1m tok/s: 1000
2026-04-09 12:00:02 250/500 train_loss: 3.2000 train_time: 4.0m tok/s: 1000
2026-04-09 12:00:03 1/500 train_loss: 6.9000 train_time: 0.1m tok/s: 1000
2026-04-09 12:00:04 500/500 train_loss: nan train_time: 8.0m tok/s: 1000
"""


def test_loss_curves_both_log_shapes() -> None:
    (old,) = loss_curves(OLD, "train_seed1.log")
    assert old.steps == [1, 100, 200] and old.losses == [
        6.9312,
        4.1,
        3.5,
    ]  # the f-string in the log is not a point
    first, second = loss_curves(NEW_TIMESTAMPED, "seed2.log", rerun=True)
    assert first.steps == [1, 250] and first.losses == [7.0, 3.2] and first.rerun
    assert second.log == "seed2.log (run 2)" and second.steps == [1]  # nan is not plotted


def _tables() -> dict[str, Any]:
    return {
        "log_table": {
            "rows": [
                {"seed": 1, "val_bpb": 1.0810, "claimed_val_bpb": 1.0810, "log": "train_seed1.log"},
                {"seed": 2, "val_bpb": 1.0830, "claimed_val_bpb": 1.0820, "log": "train_seed2.log"},
                {"seed": 1, "val_bpb": 1.0900, "claimed_val_bpb": None, "log": "rerun_seed1.log"},
            ],
            "other_runs": [],
        },
        "harness": {
            "rerun": [{"log": "rerun_seed1.log", "seed": 1}],
            "rescore": [
                {"seed": 2, "mode": "ttt", "val_bpb": 1.0850, "error": None},
                {"seed": 2, "mode": "sliding", "val_bpb": None, "error": "out of memory"},
            ],
        },
    }


def test_seed_points_and_noise_band_match_pg802() -> None:
    pts = seed_points(_tables())
    assert [p.seed for p in pts] == [1, 2]
    assert (pts[0].claimed, pts[0].logged, pts[0].rerun) == (1.0810, 1.0810, 1.0900)
    assert pts[1].rescored == {"ttt": 1.0850}  # a failed rescore is not a point
    centre, pair = noise_band(pts)  # type: ignore[misc]
    std = math.sqrt(((1.081 - 1.0815) ** 2 + (1.082 - 1.0815) ** 2) / 1)
    assert centre == pytest.approx(1.0815)
    assert pair == pytest.approx(math.sqrt(2) * max(RERUN_SEED_STD_FLOOR_BPB, std))
    # verify's seed table (seed resolved for an artifact named without one) takes precedence over raw results
    tables = _tables()
    tables["harness"]["seed_table"] = [{"seed": 1, "mode": "plain", "rescored": 1.0899}]
    assert seed_points(tables)[0].rescored == {"plain": 1.0899} and seed_points(tables)[1].rescored == {}
    # one seed: the rule's default sigma
    (_, pair1) = noise_band(pts[:1])  # type: ignore[misc]
    assert pair1 == pytest.approx(math.sqrt(2) * RERUN_SEED_STD_BPB)


def _colour_count(png: Path, rgb: tuple[int, int, int], tol: int = 30) -> int:
    w, h, ch, rows = read_png(png.read_bytes())
    return sum(
        1
        for y in range(h)
        for x in range(w)
        if all(abs(rows[y][x * ch + i] - rgb[i]) <= tol for i in range(3))
    )


def test_real_pngs_from_an_audited_submission(fixtures_dir: Path, tmp_path: Path) -> None:
    sub = load_path(fixtures_dir / "rerun_tiny")
    report = audit(sub)
    report.tables["harness"] = {"rescore": [{"seed": 42, "mode": "plain", "val_bpb": 2.6199, "error": None}]}
    out = tmp_path / "report.md"
    info = write_verify_plots(report, sub, str(out))
    assert info == {"files": {"seeds_bpb": "report.seeds_bpb.png", "train_loss": "report.train_loss.png"}}
    assert report.tables["plots"] is info
    for name in info["files"].values():
        png = tmp_path / name
        w, h, ch, rows = read_png(png.read_bytes())  # a valid PNG (CRCs, IHDR, filters)
        assert (w, h) == (800, 450)
        n, colours = count_non_background(rows, ch, (0, 0, w, h))
        assert n > 0.03 * w * h and len(colours) > 50
    # the claimed point (blue), the rescored point (C3 red) and the noise band (yellow) are drawn
    seeds_png = tmp_path / info["files"]["seeds_bpb"]
    assert _colour_count(seeds_png, (0x1F, 0x77, 0xB4)) > 50
    assert _colour_count(seeds_png, (0xD6, 0x27, 0x28)) > 50
    assert _colour_count(seeds_png, (0xFC, 0xE8, 0xB2), tol=12) > 5_000
    # the loss curve is one blue line across the axes (antialiased: count blue-dominant pixels)
    w, h, ch, rows = read_png((tmp_path / info["files"]["train_loss"]).read_bytes())
    blue = sum(1 for y in range(h) for x in range(w) if rows[y][x * ch + 2] - rows[y][x * ch] > 60)
    assert blue > 500
    md = plots_section(info, "markdown")
    assert "![Per-seed val_bpb" in md and "(report.seeds_bpb.png)" in md and "(report.train_loss.png)" in md


def test_empty_inputs_draw_nothing(tmp_path: Path) -> None:
    class Sub:
        log_paths: list[str] = []
        files: dict[str, Any] = {}

    class Rep:
        submission = type("S", (), {"name": "x", "path": "x"})()
        tables: dict[str, Any] = {}

    info = write_verify_plots(Rep(), Sub(), str(tmp_path / "r.json"))
    assert "skipped" in info and not list(tmp_path.glob("*.png"))


def test_without_matplotlib_the_report_says_so(
    fixtures_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plots, "_pyplot", lambda: None)
    sub = load_path(fixtures_dir / "rerun_tiny")
    report = audit(sub)
    info = write_verify_plots(report, sub, str(tmp_path / "r.md"))
    text = render(report, "markdown") + plots_section(info, "markdown")
    assert "plots skipped" in text and "pgolf-audit[plots]" in text
    assert not list(tmp_path.glob("*.png"))
    write_verify_plots(report, sub, str(tmp_path / "r.json"))
    js = json.loads(render(report, "json"))
    assert "matplotlib is not installed" in js["tables"]["plots"]["skipped"]


def test_verify_writes_and_links_the_plots(
    fixtures_dir: Path, shared_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """End to end: `verify --rerun --format markdown --output report.md` on the tiny bigram fixture writes both
    PNGs next to the report, the loss plot holds the submission's curve and the rerun's, and the Markdown links
    them."""
    import numpy as np

    from auditor.cli import main as cli_main
    from pgolf_data.shards import read_shard, write_shard

    data = shared_dir / "data"
    tokens = np.asarray(read_shard(data / "derived_docs_sample200_sp1024.bin"))
    write_shard(tmp_path / "train_part_000.bin", tokens[:-8193])
    write_shard(tmp_path / "val_part_000.bin", tokens[-8193:])
    out = tmp_path / "out" / "report.md"
    out.parent.mkdir()
    rc = cli_main(
        [
            "verify",
            str(fixtures_dir / "rerun_tiny"),
            "--val",
            str(tmp_path / "val_part_*.bin"),
            "--train",
            str(tmp_path / "train_part_*.bin"),
            "--tokenizer",
            str(data / "fineweb_1024_bpe.model"),
            "--rerun",
            "--seed",
            "42",
            "--scratch",
            str(tmp_path / "s"),
            "--format",
            "markdown",
            "--output",
            str(out),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    md = out.read_text()
    assert "![Per-seed val_bpb" in md and "(report.seeds_bpb.png)" in md and "(report.train_loss.png)" in md
    for name in ("report.seeds_bpb.png", "report.train_loss.png"):
        w, h, ch, rows = read_png((out.parent / name).read_bytes())
        n, _ = count_non_background(rows, ch, (0, 0, w, h))
        assert n > 0.03 * w * h
    # the rerun's curve is drawn too (dashed, second colour: orange)
    w, h, ch, rows = read_png((out.parent / "report.train_loss.png").read_bytes())
    orange = sum(
        1
        for y in range(h)
        for x in range(w)
        if rows[y][x * ch] - rows[y][x * ch + 2] > 120 and rows[y][x * ch + 1] > 90
    )
    assert orange > 200
