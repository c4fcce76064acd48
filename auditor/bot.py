"""The PR bot: audit every record folder a pull request touches and keep ONE sticky comment up to date.

Fork-safe by construction: the PR's files are read as git blobs (`--git-dir`, `refs/pull/N/head`), never checked
out, imported or executed, so the workflow may run with a token that can comment (pull_request_target) without
running untrusted code. The GitHub REST API base is configurable (GITHUB_API_URL) so tests talk to a real HTTP
server on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path, PurePosixPath

from auditor.engine import audit
from auditor.errors import InputError
from auditor.exitcodes import exit_code
from auditor.findings import Report
from auditor.github_api import GitHub
from auditor.render.markdown import STICKY_MARKER, render_markdown
from auditor.submission import git_command, load_git

RECORD_ROOT = "records"
MAX_COMMENT_CHARS = 65_000  # GitHub rejects issue comments over 65,536 characters


def changed_record_folders(git_dir: str, base: str, head: str) -> list[str]:
    """Record folders (records/<track>/<dir>) with files changed between base and head (merge-base diff)."""
    base_args = git_command(git_dir)
    proc = subprocess.run(
        [*base_args, "diff", "--name-only", "-z", f"{base}...{head}", "--", RECORD_ROOT],
        capture_output=True,
        check=False,
        timeout=120,
    )
    if proc.returncode != 0:
        raise InputError(f"git diff {base}...{head} failed: {proc.stderr.decode(errors='replace').strip()}")
    folders: list[str] = []
    for raw in proc.stdout.split(b"\x00"):
        parts = PurePosixPath(raw.decode("utf-8", errors="replace")).parts
        if len(parts) >= 4 and parts[0] == RECORD_ROOT:
            folder = "/".join(parts[:3])
            if folder not in folders:
                folders.append(folder)
    return folders


def audit_pull_request(git_dir: str, base: str, head: str) -> list[Report]:
    reports = []
    for folder in changed_record_folders(git_dir, base, head):
        try:
            reports.append(audit(load_git(git_dir, head, folder)))
        except InputError:
            continue  # a folder deleted by the PR has nothing to audit at head
    return reports


def combined_comment(reports: list[Report]) -> str:
    """One comment for every audited folder. Each report gets an equal share of GitHub's size limit; inside its
    share the verdict tables are never cut, only finding details (render_markdown says how many it left out)."""
    if not reports:
        return f"{STICKY_MARKER}\n## pgolf-audit\n\nThis pull request changes no record folder under `records/`.\n"
    share = MAX_COMMENT_CHARS // len(reports) - 10
    parts = [render_markdown(r, budget=share) for r in reports]
    return "\n---\n".join([parts[0]] + [p.replace(STICKY_MARKER + "\n", "", 1) for p in parts[1:]])


def run_bot(
    git_dir: str,
    base: str,
    head: str,
    repo: str | None,
    pr: int | None,
    dry_run: bool,
    output: str | None,
    strict: bool,
    sarif: str | None = None,
) -> int:
    reports = audit_pull_request(git_dir, base, head)
    body = combined_comment(reports)
    if output:
        Path(output).write_text(body, encoding="utf-8")
    if sarif:  # for code scanning: one run, repository-relative paths (auditor/render/sarif_repo.py)
        from auditor.render.sarif_repo import combined_sarif

        Path(sarif).write_text(json.dumps(combined_sarif(reports), indent=1) + "\n", encoding="utf-8")
    if dry_run or not repo or pr is None:
        if not output:
            print(body, end="")
    else:
        token = os.environ.get("GITHUB_TOKEN", "")
        if not token:
            raise InputError("GITHUB_TOKEN is not set (use --dry-run to print the comment instead)")
        gh = GitHub(repo, token, os.environ.get("GITHUB_API_URL", "https://api.github.com"))
        gh.login = os.environ.get("PGOLF_BOT_LOGIN") or None
        try:
            action, cid = gh.upsert_sticky(pr, body, STICKY_MARKER)
        except InputError:
            if not output:  # never lose the report: it goes to stdout when it could not be posted
                print(body, end="")
            raise
        print(f"pgolf-audit bot: {action} comment {cid} on {repo}#{pr} ({len(reports)} record folder(s))")
    return max((exit_code(r, strict=strict) for r in reports), default=0)
