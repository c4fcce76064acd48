"""Audit every record folder of every PR head of a local openai/parameter-golf mirror, once per distinct
(git tree id, folder path), and measure each audit (issue 11). Not a test module: a driver, run by hand:

    nice -n 10 .venv/bin/python tests/pr_heads_sweep.py --git-dir MIRROR --out heads.jsonl [--jobs 1]
    .venv/bin/python tests/pr_heads_sweep.py --summary heads.jsonl

Every PR head carries all the record folders of main at its base plus its own, so most (tree, path) pairs repeat
across heads: each distinct pair is audited once, in a forked child (one per folder, so the child's ru_maxrss is
that folder's peak RSS), with the default per-folder time budget. A line per pair: wall and CPU seconds, peak RSS,
overall verdict, internal errors, what the time budget cut. Resumable: pairs already in --out are skipped.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def git(git_dir: str, *args: str) -> bytes:
    return subprocess.run(["git", f"--git-dir={git_dir}", *args], capture_output=True, check=False).stdout


def ls_tree(git_dir: str, tree: str) -> list[tuple[str, str, str]]:
    """(type, id, name) of a tree's entries."""
    out = []
    for rec in git(git_dir, "ls-tree", "-z", tree).split(b"\0"):
        if not rec:
            continue
        meta, _, name = rec.partition(b"\t")
        _, typ, oid = meta.decode().split()
        out.append((typ, oid, name.decode("utf-8", errors="surrogateescape")))
    return out


def distinct_folders(git_dir: str) -> Iterator[tuple[str, str, str, int]]:
    """(commit, folder path, folder tree id, PR) for each distinct (tree id, path), first PR head that has it."""
    heads = [
        line.split()
        for line in git(git_dir, "for-each-ref", "--format=%(objectname) %(refname)", "refs/pull/")
        .decode()
        .split("\n")
        if line.endswith("/head")
    ]
    heads.sort(key=lambda h: int(h[1].split("/")[2]))
    seen: set[tuple[str, str]] = set()
    track_cache: dict[str, list[tuple[str, str, str]]] = {}
    for commit, ref in heads:
        records = git(git_dir, "rev-parse", "-q", "--verify", f"{commit}:records").decode().strip()
        if not records:
            continue
        for typ, track_id, track in track_cache.setdefault(records, ls_tree(git_dir, records)):
            if typ != "tree":
                continue
            for typ2, folder_id, name in track_cache.setdefault(track_id, ls_tree(git_dir, track_id)):
                key = (folder_id, f"records/{track}/{name}")
                if typ2 == "tree" and key not in seen:
                    seen.add(key)
                    yield commit, key[1], folder_id, int(ref.split("/")[2])


def audit_one(job: tuple[str, str, str, str, int]) -> dict:
    git_dir, commit, folder, tree, pr = job
    from auditor.engine import audit
    from auditor.errors import InputError
    from auditor.submission import load_git

    line: dict = {"tree": tree, "folder": folder, "pr": pr, "commit": commit}
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        report = audit(load_git(git_dir, commit, folder))
        line.update(overall=report.overall.value, errors=report.errors)
        line["budget_cut"] = report.tables.get("time_budget", {}).get("cut", [])
    except InputError as exc:
        line.update(overall="SKIP", note=str(exc)[:200], errors=[])
    except BaseException as exc:  # noqa: BLE001 - what escapes audit() is exactly what this sweep looks for
        line.update(overall="CRASH", errors=[f"{type(exc).__name__}: {exc}"[:500]])
    line["wall_s"] = round(time.perf_counter() - t0, 3)
    line["cpu_s"] = round(time.process_time() - c0, 3)
    line["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return line


def run(
    git_dir: str, out: Path, jobs: int, limit: int | None, shuffle: int | None, stop_at: float | None
) -> None:
    done = set()
    if out.exists():
        for ln in out.read_text().splitlines():
            try:
                d = json.loads(ln)
            except ValueError:
                continue
            done.add((d["tree"], d["folder"]))
    todo = [(git_dir, c, f, t, pr) for c, f, t, pr in distinct_folders(git_dir) if (t, f) not in done]
    if shuffle is not None:  # a run cut short by --stop-after is then a uniform sample of the pairs
        random.Random(shuffle).shuffle(todo)
    if limit:
        todo = todo[:limit]
    print(f"{len(done)} done, {len(todo)} to audit", file=sys.stderr, flush=True)
    import auditor.engine  # noqa: F401 - imported once in the parent, inherited by every forked child
    import rules  # noqa: F401

    ctx = multiprocessing.get_context("fork")
    t0 = time.monotonic()
    with ctx.Pool(jobs, maxtasksperchild=1) as pool, out.open("a") as fh:
        for i, line in enumerate(pool.imap_unordered(audit_one, todo, chunksize=1), 1):
            fh.write(json.dumps(line) + "\n")
            fh.flush()
            if stop_at is not None and time.time() > stop_at:
                print(f"stopped after {i} of {len(todo)} (--stop-after)", file=sys.stderr, flush=True)
                pool.terminate()
                break
            if i % 50 == 0 or line["errors"] or line["overall"] == "CRASH":
                rate = i / (time.monotonic() - t0)
                print(
                    f"{i}/{len(todo)} {rate:.2f}/s last {line['folder']} {line['wall_s']}s", file=sys.stderr
                )


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * (len(values) - 1) + 0.5))] if values else 0.0


def summary(path: Path) -> dict:
    lines = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    audited = [d for d in lines if d["overall"] not in ("SKIP",)]
    walls = [d["wall_s"] for d in audited]
    cpus = [d["cpu_s"] for d in audited]
    rss = [d["peak_rss_mb"] for d in lines]
    slow = sorted(audited, key=lambda d: -d["wall_s"])[:5]
    return {
        "pairs": len(lines),
        "audited": len(audited),
        "skipped": len(lines) - len(audited),
        "verdicts": {v: sum(d["overall"] == v for d in lines) for v in sorted({d["overall"] for d in lines})},
        "internal_errors": [(d["pr"], d["folder"], d["errors"]) for d in lines if d["errors"]],
        "budget_cut": [(d["pr"], d["folder"], d.get("budget_cut")) for d in lines if d.get("budget_cut")],
        "wall_s": {"median": statistics.median(walls), "p95": pct(walls, 0.95), "max": max(walls)},
        "cpu_s": {"median": statistics.median(cpus), "p95": pct(cpus, 0.95), "max": max(cpus)},
        "peak_rss_mb": {"median": statistics.median(rss), "p95": pct(rss, 0.95), "max": max(rss)},
        "slowest": [(d["pr"], d["folder"], d["wall_s"], d["cpu_s"]) for d in slow],
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--git-dir")
    p.add_argument("--out", type=Path)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--limit", type=int)
    p.add_argument("--count", action="store_true", help="only count the distinct (tree, path) pairs")
    p.add_argument("--summary", type=Path)
    p.add_argument("--shuffle", type=int, help="audit in a random order with this seed")
    p.add_argument("--stop-after", type=float, help="stop after this many minutes (what is done is kept)")
    a = p.parse_args()
    if a.summary:
        print(json.dumps(summary(a.summary), indent=1))
    elif a.count:
        print(sum(1 for _ in distinct_folders(a.git_dir)))
    else:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        stop_at = time.time() + 60 * a.stop_after if a.stop_after else None
        run(a.git_dir, a.out, a.jobs, a.limit, a.shuffle, stop_at)


if __name__ == "__main__":
    main()
