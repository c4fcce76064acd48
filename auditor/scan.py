"""`pgolf-audit scan --git-dir DIR [--prs 100-200,1517] [--jobs N] --output scan.jsonl [--html scan.html]`.

Audits the record folders that every `refs/pull/N/head` adds or changes against its merge base with the main
branch, and writes one JSON line per (PR, folder). Everything is read as git objects (`git diff`, `ls-tree`,
`cat-file`), never checked out, so a scan of untrusted PR heads runs nothing of theirs.

Why it is fast enough for ~2,000 heads on 2 cores: PR heads mostly carry the same record folders (a PR rebased,
re-pushed, or copied from another), so the unit of work is the *distinct* (git tree id, folder path) pair — the tree
id is the hash of the folder's whole content, and the path matters too because rules read the folder name (its
date, its track). Each distinct pair is audited once in a worker process and its result written for every PR that
carries it (`"reused": true` on the copies).

Resumable: lines already in --output are kept, their (pr, folder) pairs are not audited again, and their results
are reused for other PRs with the same tree. Every line is flushed as it is written, so an interrupted scan loses at
most the audits in flight; a torn last line is dropped on resume.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.errors import InputError, UsageError
from auditor.submission import git_command

RECORD_ROOT = "records"
PR_URL = "https://github.com/openai/parameter-golf/pull/{pr}"
DEFAULT_TIMEOUT_S = 300.0  # per distinct folder; the audit's own limits make this a backstop, not a budget


# ---------------------------------------------------------------------------------------------------------------
# Which PR heads, which folders
# ---------------------------------------------------------------------------------------------------------------


def parse_prs(spec: str | None) -> set[int] | None:
    """`100-200,1517` -> {100..200, 1517}; None means every PR."""
    if spec is None or not spec.strip():
        return None
    out: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise UsageError(f"--prs: expected numbers and ranges like 100-200,1517, got {part!r}")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        if hi < lo:
            raise UsageError(f"--prs: empty range {part!r}")
        out.update(range(lo, hi + 1))
    return out


@dataclass(frozen=True)
class Head:
    pr: int
    commit: str  # "" when the ref does not exist (asked for with --prs but absent)
    date: str  # committer date of the head, ISO 8601 ("" when unknown)


def _git(
    git_dir: str, *args: str, timeout: float = 120, input_: bytes | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*git_command(git_dir), *args], capture_output=True, check=False, timeout=timeout, input=input_
    )


def check_git_dir(git_dir: str) -> None:
    """One clear line for a missing or broken repository, before any work starts."""
    if not Path(git_dir).is_dir():
        raise InputError(f"no such git repository: {git_dir}")
    try:
        proc = _git(git_dir, "rev-parse", "--git-dir", timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InputError(f"cannot run git on {git_dir}: {exc}") from exc
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise InputError(f"{git_dir} is not a git repository ({msg[0] if msg else 'git rev-parse failed'})")


def resolve_base(git_dir: str, base: str | None) -> str:
    """The main branch: --base if given, else the first of refs/heads/main, origin/main, master, HEAD."""
    candidates = (
        [base] if base else ["refs/heads/main", "refs/remotes/origin/main", "refs/heads/master", "HEAD"]
    )
    for cand in candidates:
        proc = _git(git_dir, "rev-parse", "--verify", "--quiet", f"{cand}^{{commit}}", timeout=30)
        if proc.returncode == 0:
            return proc.stdout.decode().strip()
    raise InputError(
        f"no main branch to diff against in {git_dir} (tried {', '.join(candidates)}; use --base)"
    )


def list_heads(git_dir: str, prs: set[int] | None) -> list[Head]:
    """Every refs/pull/N/head. PRs asked for but absent come back with an empty commit, so the scan writes a SKIP
    line for them instead of silently doing nothing.

    The refs are listed without reading their objects (a `%(committerdate)` format makes for-each-ref die on the
    first ref whose commit is missing, which would stop the whole scan); the dates come from one `cat-file
    --batch` over the commits, where a missing one is just a "missing" line."""
    proc = _git(git_dir, "for-each-ref", "--format=%(refname)%00%(objectname)", "refs/pull/", timeout=120)
    if proc.returncode != 0:
        raise InputError(f"git for-each-ref failed: {proc.stderr.decode(errors='replace').strip()}")
    found: dict[int, Head] = {}
    for line in proc.stdout.decode("utf-8", errors="replace").splitlines():
        ref, _, commit = line.partition("\x00")
        m = re.fullmatch(r"refs/pull/(\d+)/head", ref)
        if m and (prs is None or int(m.group(1)) in prs):
            found[int(m.group(1))] = Head(int(m.group(1)), commit, "")
    dates = commit_dates(git_dir, sorted({h.commit for h in found.values()}))
    for pr, head in found.items():
        found[pr] = Head(pr, head.commit, dates.get(head.commit, ""))
    if prs is not None:
        for pr in prs - found.keys():
            found[pr] = Head(pr, "", "")
    return [found[pr] for pr in sorted(found)]


_COMMITTER = re.compile(rb"^committer .* (\d+) ([+-])(\d\d)(\d\d)$", re.M)


def commit_dates(git_dir: str, commits: list[str]) -> dict[str, str]:
    """Committer date (ISO 8601, the committer's own offset) of each commit that exists; missing ones are absent."""
    if not commits:
        return {}
    proc = _git(
        git_dir, "cat-file", "--batch", timeout=300, input_="".join(c + "\n" for c in commits).encode()
    )
    out: dict[str, str] = {}
    buf, pos = proc.stdout, 0
    while pos < len(buf):
        nl = buf.find(b"\n", pos)
        if nl < 0:
            break
        header = buf[pos:nl].split()
        pos = nl + 1
        if len(header) < 3 or not header[2].isdigit():
            continue  # "<sha> missing"
        size = int(header[2])
        body = buf[pos : pos + size]
        pos += size + 1
        m = _COMMITTER.search(body.split(b"\n\n", 1)[0]) if header[1] == b"commit" else None
        if m:
            sign = 1 if m.group(2) == b"+" else -1
            tz = dt.timezone(sign * dt.timedelta(hours=int(m.group(3)), minutes=int(m.group(4))))
            out[header[0].decode()] = dt.datetime.fromtimestamp(int(m.group(1)), tz).isoformat()
    return out


def changed_folders(git_dir: str, base: str, head: str) -> tuple[list[str], str]:
    """records/<track>/<dir> folders with files added or changed between the merge base and the head, and a note.

    A head with no history in common with main (a PR from an unrelated repository) has no merge base: then the
    folders whose content differs from main's (deletions left out) are audited, and the note says so."""
    note = ""
    proc = _git(git_dir, "diff", "--name-only", "-z", f"{base}...{head}", "--", RECORD_ROOT)
    if proc.returncode != 0 and b"no merge base" in proc.stderr:
        note = "no merge base with main: folders that differ from main"
        proc = _git(git_dir, "diff", "--name-only", "-z", "--diff-filter=d", base, head, "--", RECORD_ROOT)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise InputError(err[0] if err else f"git diff {base}...{head} failed")
    folders: list[str] = []
    for raw in proc.stdout.split(b"\x00"):
        parts = raw.decode("utf-8", errors="replace").split("/")
        if len(parts) >= 4 and parts[0] == RECORD_ROOT:
            folder = "/".join(parts[:3])
            if folder not in folders and "\n" not in folder:
                folders.append(folder)
    return folders, note


def tree_ids(git_dir: str, specs: list[str]) -> dict[str, str | None]:
    """`commit:folder` -> tree id, or None when the folder is not a tree at that commit (deleted by the PR).
    One `cat-file --batch-check` for the whole scan instead of a process per folder."""
    if not specs:
        return {}
    proc = _git(
        git_dir, "cat-file", "--batch-check", timeout=300, input_="".join(s + "\n" for s in specs).encode()
    )
    if proc.returncode != 0:
        raise InputError(f"git cat-file --batch-check failed: {proc.stderr.decode(errors='replace').strip()}")
    lines = proc.stdout.decode("utf-8", errors="replace").splitlines()
    out: dict[str, str | None] = {}
    for spec, line in zip(specs, lines, strict=False):
        parts = line.split()
        out[spec] = parts[0] if len(parts) >= 2 and parts[1] == "tree" else None
    return out


# ---------------------------------------------------------------------------------------------------------------
# Auditing one distinct folder (in a worker process)
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Job:
    """One distinct (tree, folder): audited at `commit` (any head that carries it) for every PR in `prs`."""

    tree: str
    folder: str
    commit: str
    prs: list[Head] = field(default_factory=list)


_RULES: list[Any] | None = None


def _init_worker(rule_names: list[str] | None) -> None:
    global _RULES
    from auditor.engine import select_rules

    _RULES = select_rules(rule_names)
    # The parent owns Ctrl-C: workers that die on SIGINT mid-write would leave the pool hanging.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _AuditTimeout(BaseException):
    """Raised by the CPU-time alarm. A BaseException so that the engine's per-rule `except Exception` (which turns
    a crashing rule into a note and carries on) cannot swallow it and let the audit run on past its budget."""

    pass


def _on_alarm(signum: int, frame: Any) -> None:
    raise _AuditTimeout


def audit_folder(git_dir: str, commit: str, folder: str, timeout_s: float) -> dict[str, Any]:
    """Audit `commit:folder`; never raises. The result holds overall, fail/warn rule ids, seconds, error, note."""
    from auditor.engine import audit, select_rules
    from auditor.findings import Verdict
    from auditor.submission import load_git

    rules = _RULES if _RULES is not None else select_rules(None)
    t0 = time.perf_counter()
    res: dict[str, Any] = {"overall": "ERROR", "fail_rules": [], "warn_rules": [], "error": "", "note": ""}
    # CPU time, not wall time: on a shared machine a folder must not time out because other processes had the cores
    use_alarm = timeout_s > 0 and hasattr(signal, "SIGPROF")
    if use_alarm:
        old = signal.signal(signal.SIGPROF, _on_alarm)
        signal.setitimer(signal.ITIMER_PROF, timeout_s)
    try:
        try:
            sub = load_git(git_dir, commit, folder)
        except InputError as exc:
            # Nothing auditable (no script, log, README or submission.json) is a SKIP, not a tool error;
            # git failing to read what it listed is an error.
            msg = str(exc)
            if msg.startswith(("git ", "cannot run git", "cannot read blobs", "no such git", "not a git")):
                res["error"] = msg
            else:
                res["overall"], res["note"] = "SKIP", msg
        else:
            report = audit(sub, rules)
            res["overall"] = report.overall.value
            for rv in report.per_rule():
                if rv.gating_verdict is Verdict.FAIL:
                    res["fail_rules"].append(rv.rule_id)
                elif rv.gating_verdict is Verdict.WARN:
                    res["warn_rules"].append(rv.rule_id)
            if report.errors:
                res["error"] = "; ".join(report.errors)[:500]
    except _AuditTimeout:
        res["overall"], res["error"] = "ERROR", f"audit stopped after {timeout_s:g}s of CPU time"
    except Exception as exc:  # one folder's crash must not stop a 2,000-head scan; it is reported on its line
        res["overall"], res["error"] = "ERROR", f"internal error: {type(exc).__name__}: {exc}"[:500]
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_PROF, 0)
            signal.signal(signal.SIGPROF, old)
    res["seconds"] = round(time.perf_counter() - t0, 3)
    return res


def _work(args: tuple[str, str, str, float, int]) -> tuple[int, dict[str, Any]]:
    git_dir, commit, folder, timeout_s, idx = args
    return idx, audit_folder(git_dir, commit, folder, timeout_s)


# ---------------------------------------------------------------------------------------------------------------
# Output, resume, progress
# ---------------------------------------------------------------------------------------------------------------


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a previous scan; a torn last line (killed mid-write) and blank lines are ignored."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and "pr" in obj:
            out.append(obj)
    return out


def _repair_tail(path: Path) -> None:
    """Cut a torn last line so the next line appended starts on its own line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    cut = data.rfind(b"\n")
    with path.open("r+b") as fh:
        fh.truncate(cut + 1 if cut >= 0 else 0)


def make_line(head: Head, folder: str, res: dict[str, Any], tree: str = "", reused: bool = False) -> dict:
    return {
        "pr": head.pr,
        "folder": folder,
        "overall": res["overall"],
        "fail": len(res.get("fail_rules", [])),
        "warn": len(res.get("warn_rules", [])),
        "fail_rules": list(res.get("fail_rules", [])),
        "warn_rules": list(res.get("warn_rules", [])),
        "seconds": res.get("seconds", 0.0),
        "error": res.get("error", ""),
        "note": res.get("note", ""),
        "date": head.date,
        "head": head.commit,
        "tree": tree,
        "reused": reused,
        "url": PR_URL.format(pr=head.pr),
    }


class Progress:
    """A one-line bar on stderr, redrawn in place on a terminal; elsewhere a plain line every 10%."""

    def __init__(self, total: int, stream: Any = None) -> None:
        self.total = max(total, 0)
        self.done = 0
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.t0 = time.monotonic()
        self._last_decile = -1

    def advance(self, n: int = 1) -> None:
        self.done += n
        self._draw()

    def _draw(self, final: bool = False) -> None:
        total = self.total or 1
        frac = min(self.done / total, 1.0)
        elapsed = time.monotonic() - self.t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        width = 30
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        text = (
            f"scan [{bar}] {self.done}/{self.total} audits {frac:4.0%}  "
            f"{elapsed:5.0f}s elapsed  ETA {eta:4.0f}s"
        )
        if self.tty:
            print("\r" + text, end="\n" if final else "", file=self.stream, flush=True)
        else:
            decile = int(frac * 10)
            if decile != self._last_decile or (final and self.done == 0):
                self._last_decile = decile
                print(text, file=self.stream, flush=True)

    def close(self) -> None:
        self._draw(final=True)


# ---------------------------------------------------------------------------------------------------------------
# The scan
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class ScanStats:
    heads: int = 0
    folders: int = 0  # (pr, folder) lines written this run, SKIP lines included
    distinct: int = 0  # distinct (tree, folder) audited this run
    reused_lines: int = 0
    resumed: int = 0  # (pr, folder) pairs already in the output
    errors: int = 0
    wall_s: float = 0.0
    verdicts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        v = ", ".join(f"{n} {k}" for k, n in sorted(self.verdicts.items()))
        return (
            f"pgolf-audit scan: {self.heads} PR heads, {self.folders} lines written ({v or 'none'}), "
            f"{self.distinct} distinct folder trees audited, {self.reused_lines} lines reused a result, "
            f"{self.resumed} already in the output, {self.errors} errors, {self.wall_s:.1f}s"
        )


def plan(
    git_dir: str, base: str, heads: list[Head], done: set[tuple[int, str]], jobs: int
) -> tuple[list[tuple[Head, str, dict[str, Any]]], dict[tuple[str, str], Job], dict[int, str]]:
    """Diff every head against its merge base (threads: git does the work) and group folders by tree.

    Returns (lines to write now without auditing, distinct jobs keyed by (tree, folder), per-PR notes)."""
    immediate: list[tuple[Head, str, dict[str, Any]]] = []
    pending: list[tuple[Head, str]] = []
    notes: dict[int, str] = {}  # per PR: how its folders were found, when not the usual way

    def diff(head: Head) -> tuple[Head, list[str] | None, str]:
        if not head.commit:
            return head, None, f"no ref refs/pull/{head.pr}/head in the repository"
        if not head.date:
            return (
                head,
                None,
                f"refs/pull/{head.pr}/head points at {head.commit[:12]}, which is not in the repository",
            )
        try:
            folders, note = changed_folders(git_dir, base, head.commit)
            notes[head.pr] = note
            return head, folders, ""
        except (InputError, OSError, subprocess.TimeoutExpired) as exc:
            return head, None, f"cannot diff refs/pull/{head.pr}/head: {exc}"

    todo = [h for h in heads if (h.pr, "") not in done]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for head, folders, problem in pool.map(diff, todo):
            if folders is None:
                # A vanished ref or a head whose objects are missing: SKIP, and the scan carries on.
                immediate.append((head, "", {"overall": "SKIP", "note": problem}))
            elif not folders:
                immediate.append((head, "", {"overall": "SKIP", "note": "changes no record folder"}))
            else:
                pending += [(head, f) for f in folders if (head.pr, f) not in done]
    trees = tree_ids(git_dir, [f"{h.commit}:{f}" for h, f in pending])
    keyed: dict[tuple[str, str], Job] = {}
    for head, folder in pending:
        tree = trees.get(f"{head.commit}:{folder}")
        if tree is None:
            immediate.append((head, folder, {"overall": "SKIP", "note": "folder deleted at the PR head"}))
            continue
        job = keyed.setdefault((tree, folder), Job(tree, folder, head.commit))
        job.prs.append(head)
    return immediate, keyed, notes


def scan(
    git_dir: str,
    output: str,
    prs: str | None = None,
    jobs: int = 0,
    base: str | None = None,
    rules: list[str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    progress_stream: Any = None,
) -> ScanStats:
    t0 = time.monotonic()
    git_dir = str(git_dir)
    check_git_dir(git_dir)
    wanted = parse_prs(prs)
    jobs = jobs if jobs and jobs > 0 else (os.cpu_count() or 1)
    if rules is not None:
        from auditor.engine import select_rules

        if not select_rules(rules):
            raise UsageError(f"--rules {','.join(rules)!r} matches no rule")
    base_commit = resolve_base(git_dir, base)
    heads = list_heads(git_dir, wanted)

    out_path = Path(output)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    previous = read_lines(out_path)
    _repair_tail(out_path)
    done = {(int(x["pr"]), str(x.get("folder", ""))) for x in previous}
    # Results already computed (this scan interrupted earlier): reuse them for new PRs with the same tree.
    known: dict[tuple[str, str], dict[str, Any]] = {}
    for x in previous:
        if x.get("tree") and x.get("overall") != "ERROR" and not x.get("reused"):
            known[(x["tree"], x["folder"])] = x

    stats = ScanStats(heads=len(heads))
    asked = {h.pr for h in heads}
    stats.resumed = sum(1 for p, _f in done if p in asked)
    immediate, keyed, notes = plan(git_dir, base_commit, heads, done, jobs)

    with out_path.open("a", encoding="utf-8") as fh:

        def write(head: Head, folder: str, res: dict[str, Any], tree: str = "", reused: bool = False) -> None:
            line = make_line(head, folder, res, tree, reused)
            if notes.get(head.pr) and folder:
                line["note"] = "; ".join(x for x in (line["note"], notes[head.pr]) if x)
            fh.write(json.dumps(line, sort_keys=False) + "\n")
            fh.flush()
            stats.folders += 1
            stats.reused_lines += int(reused)
            stats.verdicts[line["overall"]] = stats.verdicts.get(line["overall"], 0) + 1
            # a tool error is a folder that could not be audited, or a rule that crashed on it (report.errors)
            stats.errors += int(line["overall"] == "ERROR" or bool(line["error"]))

        for head, folder, res in immediate:
            write(head, folder, res)

        todo: list[Job] = []
        for key, job in keyed.items():
            if key in known:
                for head in job.prs:
                    write(head, job.folder, known[key], job.tree, reused=True)
            else:
                todo.append(job)
        stats.distinct = len(todo)

        def deliver(job: Job, res: dict[str, Any]) -> None:
            for i, head in enumerate(job.prs):
                write(head, job.folder, res, job.tree, reused=i > 0)

        bar = Progress(len(todo), progress_stream)
        # Biggest trees first would balance better, but the size is unknown without reading them; the order of
        # the PRs is a fine proxy and keeps the output in a readable order.
        args = [(git_dir, j.commit, j.folder, timeout_s, i) for i, j in enumerate(todo)]
        if jobs == 1 or len(todo) <= 1:
            _init_worker_in_process(rules)
            for a in args:
                idx, res = _work(a)
                deliver(todo[idx], res)
                bar.advance()
        elif todo:
            ctx = multiprocessing.get_context("fork" if sys.platform != "win32" else "spawn")
            with ctx.Pool(min(jobs, len(todo)), initializer=_init_worker, initargs=(rules,)) as pool:
                for idx, res in pool.imap_unordered(_work, args, chunksize=1):
                    deliver(todo[idx], res)
                    bar.advance()
        bar.close()
    stats.wall_s = time.monotonic() - t0
    return stats


def _init_worker_in_process(rules: list[str] | None) -> None:
    global _RULES
    from auditor.engine import select_rules

    _RULES = select_rules(rules)


def run_scan(
    git_dir: str,
    output: str,
    prs: str | None,
    jobs: int,
    html: str | None,
    base: str | None = None,
    rules: list[str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> int:
    """CLI entry: exit 0 when every line was written without a tool error; 2 when a folder could not be audited
    or a rule crashed on one (its line says which). FAIL verdicts do not change the exit code: a scan of every PR
    is a census, not a gate."""
    stats = scan(git_dir, output, prs=prs, jobs=jobs, base=base, rules=rules, timeout_s=timeout_s)
    print(stats.summary(), file=sys.stderr)
    if html:
        from auditor.render.scan_html import write_scan_html

        lines = read_lines(Path(output))
        write_scan_html(lines, html)
        print(f"pgolf-audit scan: wrote {html} ({len(lines)} lines)", file=sys.stderr)
    errors = sum(1 for x in read_lines(Path(output)) if x.get("overall") == "ERROR" or x.get("error"))
    return 2 if errors else 0
