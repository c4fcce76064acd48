"""PNG plots next to a `verify` report: per-seed BPB (claimed, logged, rerun, rescored, with the run-to-run noise
band PG802 judges against) and training-loss curves from the submission's logs and the rerun's.

matplotlib is optional (`pip install 'pgolf-audit[plots]'`): without it the report says the plots were skipped
and why. The plots are drawn from the report's own tables (``log_table``, ``harness``) and the log text, so they
show exactly the numbers the rules judged.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.constants import RERUN_SEED_STD_BPB, RERUN_SEED_STD_FLOOR_BPB

PLOTS_TABLE = "plots"
MISSING = "matplotlib is not installed (pip install 'pgolf-audit[plots]'); plots skipped"
# `step:N/M train_loss:F ...` (old logs) and `N/M train_loss: F ...` (new logs), optionally after a timestamp.
_STEP = re.compile(
    r"(?:^|\s)(?:step:)?(\d+)/(\d+)\s+train_loss:\s*([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf))"
)


@dataclass
class LossCurve:
    log: str
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    rerun: bool = False


def loss_curves(text: str, log: str, rerun: bool = False) -> list[LossCurve]:
    """Training-loss points of one log, split where the step counter goes back (a log holding several runs)."""
    curves: list[LossCurve] = []
    cur: LossCurve | None = None
    for line in text.splitlines():
        m = _STEP.search(line)
        if not m:
            continue
        step, loss = int(m.group(1)), float(m.group(3))
        if cur is None or (cur.steps and step <= cur.steps[-1]):
            cur = LossCurve(log if not curves else f"{log} (run {len(curves) + 1})", rerun=rerun)
            curves.append(cur)
        if math.isfinite(loss):
            cur.steps.append(step)
            cur.losses.append(loss)
    return [c for c in curves if c.steps]


@dataclass
class SeedPoints:
    seed: int
    claimed: float | None = None
    logged: float | None = None
    rerun: float | None = None
    rescored: dict[str, float] = field(default_factory=dict)  # mode -> val_bpb


def seed_points(tables: dict[str, Any]) -> list[SeedPoints]:
    """Per seed: the claim, the submission's logged score, the rerun's logged score and each rescore."""
    harness = tables.get("harness") or {}
    rerun_logs = {str(r.get("log")) for r in harness.get("rerun", []) if r.get("log")}
    by_seed: dict[int, SeedPoints] = {}

    def get(seed: Any) -> SeedPoints | None:
        if not isinstance(seed, int) or isinstance(seed, bool):
            return None
        return by_seed.setdefault(seed, SeedPoints(seed))

    log_table = tables.get("log_table") or {}
    for row in [*log_table.get("rows", []), *log_table.get("other_runs", [])]:
        p = get(row.get("seed"))
        if p is None:
            continue
        if row.get("log") in rerun_logs:
            p.rerun = row.get("val_bpb") if p.rerun is None else p.rerun
            continue
        if p.logged is None:
            p.logged = row.get("val_bpb")
        if p.claimed is None:
            p.claimed = row.get("claimed_val_bpb")
    # verify's per-seed rescore table resolves the seed of an artifact named without one; older reports only have
    # the raw rescore results
    table = harness.get("seed_table")
    rescores = (
        [{"seed": r.get("seed"), "mode": r.get("mode"), "val_bpb": r.get("rescored")} for r in table]
        if isinstance(table, list)
        else harness.get("rescore", [])
    )
    for res in rescores:
        p = get(res.get("seed"))
        if p is not None and res.get("val_bpb") is not None and not res.get("error"):
            p.rescored[str(res.get("mode") or "rescore")] = float(res["val_bpb"])
    return [by_seed[s] for s in sorted(by_seed)]


def noise_band(points: list[SeedPoints]) -> tuple[float, float] | None:
    """(centre, sqrt(2)·sigma) as PG802 uses them: the mean claim, sigma = the claims' own per-seed std with the
    same floor and default as the rule (one seed: the default)."""
    claims = [p.claimed for p in points if p.claimed is not None]
    if not claims:
        claims = [p.logged for p in points if p.logged is not None]
    if not claims:
        return None
    std = statistics.stdev(claims) if len(claims) > 1 else None
    sigma = max(RERUN_SEED_STD_FLOOR_BPB, std or RERUN_SEED_STD_BPB)
    return statistics.fmean(claims), math.sqrt(2.0) * sigma


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only; never a window
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_seeds(points: list[SeedPoints], path: Path, title: str) -> bool:
    plt = _pyplot()
    if plt is None or not points:
        return False
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    xs = list(range(len(points)))
    band = noise_band(points)
    if band:
        centre, pair = band
        ax.axhspan(
            centre - 3 * pair, centre + 3 * pair, color="#f4c7c3", alpha=0.5, label="±3·√2σ (PG802 FAIL)"
        )
        ax.axhspan(
            centre - 2 * pair, centre + 2 * pair, color="#fce8b2", alpha=0.8, label="±2·√2σ (PG802 WARN)"
        )
        ax.axhline(centre, color="#888888", lw=0.8, ls=":", label=f"mean claim {centre:.5f}")
    series: list[tuple[str, str, str, Callable[[SeedPoints], float | None]]] = [
        ("claimed", "o", "#1f77b4", lambda p: p.claimed),
        ("logged", "x", "#2ca02c", lambda p: p.logged),
        ("rerun", "^", "#9467bd", lambda p: p.rerun),
    ]
    for label, marker, colour, value in series:
        pts = [(x, value(p)) for x, p in zip(xs, points, strict=True) if value(p) is not None]
        if pts:
            ax.scatter(
                [a for a, _ in pts],
                [b for _, b in pts],
                marker=marker,
                s=70,
                color=colour,
                label=label,
                zorder=3,
            )
    modes = sorted({m for p in points for m in p.rescored})
    for i, mode in enumerate(modes):
        pts = [
            (x + 0.12 * (i + 1), p.rescored[mode])
            for x, p in zip(xs, points, strict=True)
            if mode in p.rescored
        ]
        ax.scatter(
            [a for a, _ in pts],
            [b for _, b in pts],
            marker="s",
            s=55,
            color=f"C{3 + i}",
            label=f"rescored ({mode})",
            zorder=3,
        )
    ax.set_xticks(xs, [f"seed {p.seed}" for p in points])
    ax.set_xlim(-0.5, len(points) - 0.5 + 0.12 * len(modes))
    ax.set_ylabel("val_bpb (lower is better)")
    ax.set_title(title)
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return True


def plot_losses(curves: list[LossCurve], path: Path, title: str) -> bool:
    plt = _pyplot()
    if plt is None or not curves:
        return False
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for c in curves:
        ax.plot(
            c.steps,
            c.losses,
            lw=1.6,
            ls="--" if c.rerun else "-",
            label=("rerun: " if c.rerun else "") + c.log,
        )
    ax.set_xlabel("step")
    ax.set_ylabel("train_loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return True


def write_verify_plots(report: Any, sub: Any, output: str | None) -> dict[str, Any]:
    """Write the plots next to `output` and record them in report.tables["plots"]: {"files": {...}} with paths
    relative to the report, or {"skipped": reason}."""
    info: dict[str, Any]
    if not output:
        info = {"skipped": "plots are written next to the report: give --output FILE"}
    elif _pyplot() is None:
        info = {"skipped": MISSING}
    else:
        out = Path(output)
        stem = out.name.split(".")[0] or "verify"
        name = getattr(report.submission, "name", None) or Path(str(report.submission.path)).name
        files: dict[str, str] = {}
        bpb = out.with_name(f"{stem}.seeds_bpb.png")
        if plot_seeds(seed_points(report.tables), bpb, f"{name}: per-seed val_bpb"):
            files["seeds_bpb"] = bpb.name
        harness = report.tables.get("harness") or {}
        rerun_logs = {str(r.get("log")) for r in harness.get("rerun", []) if r.get("log")}
        curves: list[LossCurve] = []
        for path in getattr(sub, "log_paths", []):
            f = sub.files.get(path)
            data = getattr(f, "data", None)
            if data:
                curves += loss_curves(data.decode("utf-8", errors="replace"), path, rerun=path in rerun_logs)
        loss = out.with_name(f"{stem}.train_loss.png")
        if plot_losses(curves, loss, f"{name}: training loss"):
            files["train_loss"] = loss.name
        info = (
            {"files": files}
            if files
            else {"skipped": "no per-seed scores and no training-loss lines to plot"}
        )
    report.tables[PLOTS_TABLE] = info
    return info


def plots_section(info: dict[str, Any], fmt: str) -> str:
    """What the rendered report says about the plots: image links in Markdown, a line in text."""
    files = info.get("files") or {}
    titles = {
        "seeds_bpb": "Per-seed val_bpb (claimed, logged, rerun, rescored; noise band)",
        "train_loss": "Training loss",
    }
    if fmt == "markdown":
        if not files:
            return f"\n_Plots: {info.get('skipped', 'none')}_\n"
        body = "".join(f"\n**{titles.get(k, k)}**\n\n![{titles.get(k, k)}]({v})\n" for k, v in files.items())
        return "\n### Plots\n" + body
    if fmt == "text":
        return "plots: " + (", ".join(files.values()) if files else str(info.get("skipped", "none"))) + "\n"
    return ""
