"""The per-seed rescore table `verify` prints and attaches: claimed, logged same-mode, rescored, delta, bytes.

One row per rescore (artifact x mode). `claimed` is the submission's claim for the seed (submission.json, else the
seed's log) and `claim_mode` the eval it is the score of (the mode of the logged line that prints it); `logged` is
the seed's own log line for the rescored mode (``quantized``, ``quantized_sliding_window``, ``quantized_ttt``...).
The delta that matters is rescored minus the number of the same mode: the claim when it is that mode, else the
logged line; PG801 judges the same pair.
"""

from __future__ import annotations

from typing import Any


def seed_table(sub: Any, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from auditor.facts import build_context
    from auditor.harness.claimed import claim_mode, claimed_for, logged_for_mode

    ctx = build_context(sub)
    rows: list[dict[str, Any]] = []
    for res in results:
        seed, mode = res.get("seed"), str(res.get("mode"))
        claimed = claimed_for(ctx, seed)
        cmode = claim_mode(ctx, claimed)
        logged = logged_for_mode(ctx, claimed.seed if seed is None else seed, mode)
        rescored = res.get("val_bpb") if not res.get("error") else None
        reference = claimed.val_bpb if cmode == mode and claimed.val_bpb is not None else None
        ref_source = claimed.source if reference is not None else None
        if reference is None and logged is not None:
            reference, ref_source = logged.val_bpb, logged.source
        rows.append(
            {
                "seed": claimed.seed if seed is None else seed,
                "mode": mode,
                "claimed": claimed.val_bpb,
                "claim_mode": cmode,
                "claim_source": claimed.source,
                "logged": logged.val_bpb if logged else None,
                "logged_source": logged.source if logged else None,
                "rescored": rescored,
                "delta": (rescored - reference) if rescored is not None and reference is not None else None,
                "delta_against": ref_source,
                "tokens": res.get("tokens"),
                "denominator": res.get("denominator"),
                "canonical": bool(res.get("canonical")),
                "error": res.get("error"),
            }
        )
    return rows


def _num(v: Any, fmt: str = ".8f") -> str:
    return "-" if v is None else format(v, fmt)


def table_text(rows: list[dict[str, Any]]) -> str:
    """A fixed-width text table (stderr of `verify`, and the note of the run)."""
    head = (
        "seed",
        "mode",
        "claimed",
        "logged (same mode)",
        "rescored",
        "delta",
        "targets",
        "bytes (denominator)",
    )
    lines = [head]
    for r in rows:
        claimed = _num(r["claimed"]) + (
            f" ({r['claim_mode']})" if r["claimed"] is not None and r["claim_mode"] else ""
        )
        lines.append(
            (
                str(r["seed"]) if r["seed"] is not None else "-",
                r["mode"],
                claimed,
                _num(r["logged"]),
                _num(r["rescored"]) if r["rescored"] is not None else "failed",
                _num(r["delta"], "+.8f"),
                _num(r["tokens"], ",d"),
                _num(r["denominator"], ",d"),
            )
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)
