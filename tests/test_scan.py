"""`pgolf-audit scan` on a real git repository whose refs/pull/N/head refs we build from our fixtures: which folders
each head adds or changes, one audit per distinct tree, SKIP lines for heads with nothing to audit, resume, bad
input, and the HTML dashboard (the Chromium screenshot test is in tests/test_scan_browser.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from auditor.cli import main
from auditor.render.scan_html import render_scan_html
from auditor.scan import parse_prs, read_lines, scan

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TRACK = "records/track_10min_16mb"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def _commit_on(repo: Path, base: str, ref: str, change) -> str:  # type: ignore[no-untyped-def]
    """Check out `base`, apply `change(repo)`, commit, and point `ref` at the commit (as GitHub's PR refs)."""
    _git(repo, "checkout", "-q", "--detach", base)
    change(repo)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", ref, "--allow-empty")
    sha = _git(repo, "rev-parse", "HEAD")
    _git(repo, "update-ref", ref, sha)
    return sha


def _add(name: str, fixture: str):  # type: ignore[no-untyped-def]
    return lambda repo: shutil.copytree(FIXTURES / fixture, repo / TRACK / name)


@pytest.fixture(scope="module")
def prrepo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pgscan")
    _git(root, "init", "-q", "-b", "main")
    _git(root, "config", "user.email", "t@example.com")
    _git(root, "config", "user.name", "t")
    shutil.copytree(FIXTURES / "clean_baseline", root / TRACK / "2026-03-20_Merged")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "merged record")
    main_sha = _git(root, "rev-parse", "HEAD")
    # 1 and 2: the same folder, byte for byte (a re-pushed PR): one audit, two lines
    _commit_on(root, main_sha, "refs/pull/1/head", _add("2026-04-01_Download", "eval_download"))
    _commit_on(root, main_sha, "refs/pull/2/head", _add("2026-04-01_Download", "eval_download"))
    # 3: touches no record folder
    _commit_on(root, main_sha, "refs/pull/3/head", lambda r: (r / "README.md").write_text("docs\n"))
    # 4: a record folder with nothing to audit (an image only)
    _commit_on(
        root,
        main_sha,
        "refs/pull/4/head",
        lambda r: (
            (r / TRACK / "2026-04-02_Pic").mkdir(parents=True),
            (r / TRACK / "2026-04-02_Pic" / "a.png").write_bytes(b"\x89PNG"),
        ),
    )
    # 5: deletes the merged record folder
    _commit_on(root, main_sha, "refs/pull/5/head", lambda r: shutil.rmtree(r / TRACK / "2026-03-20_Merged"))

    # 6: a clean record, and a change to the merged one in the same PR (two folders)
    def six(r: Path) -> None:
        shutil.copytree(FIXTURES / "clean_baseline", r / TRACK / "2026-04-03_Clean")
        (r / TRACK / "2026-03-20_Merged" / "README.md").write_text("# Merged\nedited\n")

    _commit_on(root, main_sha, "refs/pull/6/head", six)
    _git(root, "checkout", "-q", "main")
    return root


def _lines(path: Path) -> dict[tuple[int, str], dict]:
    return {(x["pr"], x["folder"]): x for x in read_lines(path)}


def test_parse_prs() -> None:
    assert parse_prs("100-102,1517") == {100, 101, 102, 1517}
    assert parse_prs(None) is None
    with pytest.raises(Exception, match="--prs"):
        parse_prs("10-x")


def test_scan_lines_skips_and_dedupe(prrepo: Path, tmp_path: Path) -> None:
    out = tmp_path / "scan.jsonl"
    stats = scan(str(prrepo), str(out), prs="1-6,99", jobs=1)
    got = _lines(out)
    dl = f"{TRACK}/2026-04-01_Download"
    # the folder PR 1 and 2 add FAILs the network rule, with the rule id on the line
    assert got[(1, dl)]["overall"] == "FAIL" and "PG101" in got[(1, dl)]["fail_rules"]
    assert got[(1, dl)]["fail"] == len(got[(1, dl)]["fail_rules"])
    # identical trees: audited once, the second line reuses the first's result
    assert got[(1, dl)]["tree"] == got[(2, dl)]["tree"] and got[(1, dl)]["tree"]
    assert [got[(1, dl)]["reused"], got[(2, dl)]["reused"]].count(True) == 1
    assert got[(2, dl)]["fail_rules"] == got[(1, dl)]["fail_rules"]
    # nothing to audit is a SKIP line with a reason, never an error
    assert got[(3, "")]["overall"] == "SKIP" and "no record folder" in got[(3, "")]["note"]
    pic = got[(4, f"{TRACK}/2026-04-02_Pic")]
    assert pic["overall"] == "SKIP" and "nothing to audit" in pic["note"] and not pic["error"]
    gone = got[(5, f"{TRACK}/2026-03-20_Merged")]
    assert gone["overall"] == "SKIP" and "deleted" in gone["note"]
    assert got[(99, "")]["overall"] == "SKIP" and "no ref" in got[(99, "")]["note"]
    # a PR changing two folders gets two lines; the unchanged merged record is not audited for other PRs
    assert got[(6, f"{TRACK}/2026-04-03_Clean")]["overall"] == "PASS"
    assert (6, f"{TRACK}/2026-03-20_Merged") in got
    assert not any(k == (1, f"{TRACK}/2026-03-20_Merged") for k in got)
    # dates of the head commit and the PR link on every line (the dashboard filters on them)
    assert got[(1, dl)]["date"][:4].isdigit() and got[(1, dl)]["url"].endswith("/pull/1")
    assert stats.errors == 0 and stats.distinct == 4  # Download, Pic, Clean, Merged(edited)
    assert not any(x["overall"] == "ERROR" for x in got.values())


def test_scan_resumes_without_repeating(prrepo: Path, tmp_path: Path) -> None:
    out = tmp_path / "scan.jsonl"
    scan(str(prrepo), str(out), prs="1", jobs=1)
    first = out.read_text()
    # a scan killed mid-write leaves a torn line: it is dropped and the next line starts cleanly
    out.write_text(first + '{"pr": 6, "folder": "rec')
    stats = scan(str(prrepo), str(out), prs="1-2,6", jobs=1)
    lines = read_lines(out)
    keys = [(x["pr"], x["folder"]) for x in lines]
    assert len(keys) == len(set(keys))  # no (pr, folder) twice
    assert out.read_text().startswith(first)
    # PR 2 reuses PR 1's result from the earlier run: only PR 6's two folders are audited now
    assert stats.distinct == 2 and stats.resumed == 1
    two = [x for x in lines if x["pr"] == 2][0]
    assert two["reused"] and two["overall"] == "FAIL"
    again = scan(str(prrepo), str(out), prs="1-2,6", jobs=1)
    assert again.folders == 0 and again.distinct == 0


def test_scan_in_worker_processes_matches_in_process(prrepo: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    scan(str(prrepo), str(a), prs="1-6", jobs=1)
    scan(str(prrepo), str(b), prs="1-6", jobs=2)
    strip = {"seconds", "reused"}
    la = {k: {f: v for f, v in x.items() if f not in strip} for k, x in _lines(a).items()}
    lb = {k: {f: v for f, v in x.items() if f not in strip} for k, x in _lines(b).items()}
    assert la == lb


def test_unreadable_blob_and_vanished_head_and_the_scan_carries_on(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    _git(root, "config", "user.email", "t@example.com")
    _git(root, "config", "user.name", "t")
    (root / "README.md").write_text("x\n")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "init")
    main_sha = _git(root, "rev-parse", "HEAD")
    _commit_on(root, main_sha, "refs/pull/7/head", _add("2026-04-05_Broken", "clean_baseline"))
    _commit_on(root, main_sha, "refs/pull/8/head", _add("2026-04-06_Fine", "eval_download"))
    # remove the loose object of PR 7's script: git lists it but cannot read it
    blob = _git(root, "rev-parse", f"refs/pull/7/head:{TRACK}/2026-04-05_Broken/train_gpt.py")
    (root / ".git" / "objects" / blob[:2] / blob[2:]).unlink()
    # a ref whose commit is gone (a vanished PR head in a mirror): listed, but nothing behind it
    with (root / ".git" / "packed-refs").open("a") as fh:
        fh.write("1" * 40 + " refs/pull/9/head\n")
    out = tmp_path / "scan.jsonl"
    scan(str(root), str(out), jobs=1)
    got = _lines(out)
    assert got[(9, "")]["overall"] == "SKIP" and "not in the repository" in got[(9, "")]["note"]
    broken = got[(7, f"{TRACK}/2026-04-05_Broken")]
    assert broken["overall"] in ("WARN", "ERROR")  # never a PASS on a file that could not be read
    assert got[(8, f"{TRACK}/2026-04-06_Fine")]["overall"] == "FAIL"


def test_bad_git_dir_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notgit").mkdir()
    for d in (tmp_path / "missing", tmp_path / "notgit"):
        rc = main(["scan", "--git-dir", str(d), "--output", str(tmp_path / "o.jsonl")])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and "git" in err
    assert main(["scan", "--git-dir", str(tmp_path), "--prs", "a-b", "--output", "x"]) == 2


def test_cli_writes_jsonl_html_and_progress(
    prrepo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, html = tmp_path / "s.jsonl", tmp_path / "s.html"
    rc = main(
        ["scan", "--git-dir", str(prrepo), "--prs", "1-6", "--jobs", "2", "-o", str(out), "--html", str(html)]
    )
    err = capsys.readouterr().err
    assert rc == 0
    assert "scan [" in err and "100%" in err and "distinct folder trees audited" in err
    page = html.read_text()
    assert page.count('<tr class="row"') == len(read_lines(out))
    assert 'href="https://github.com/openai/parameter-golf/pull/1"' in page
    assert "<svg" in page and 'id="chart-failrate"' in page
    # self-contained: no script or stylesheet from elsewhere
    assert "src=" not in page and "<link" not in page and "@import" not in page


def test_dashboard_charts_follow_the_data() -> None:
    lines = [
        {
            "pr": 10,
            "folder": "records/t/a",
            "overall": "FAIL",
            "fail_rules": ["PG201"],
            "warn_rules": [],
            "seconds": 0.4,
            "date": "2026-03-20T10:00:00+00:00",
            "reused": False,
            "error": "",
            "note": "",
        },
        {
            "pr": 11,
            "folder": "records/t/b",
            "overall": "PASS",
            "fail_rules": [],
            "warn_rules": [],
            "seconds": 3.0,
            "date": "2026-04-20T10:00:00+00:00",
            "reused": False,
            "error": "",
            "note": "",
        },
        {
            "pr": 12,
            "folder": "records/t/b",
            "overall": "PASS",
            "fail_rules": [],
            "warn_rules": [],
            "seconds": 3.0,
            "date": "2026-04-21T10:00:00+00:00",
            "reused": True,
            "error": "",
            "note": "",
        },
    ]
    page = render_scan_html(lines)
    # heatmap: PG201 fails 1/1 in the week of Mar 16 and 0/2 in the week of Apr 20
    assert "PG201 week of 2026-03-16: 1/1 FAIL (100%)" in page
    assert "PG201 week of 2026-04-20: 0/2 FAIL (0%)" in page
    assert "<title>FAIL: 1</title>" in page and "<title>PASS: 2</title>" in page
    # the time histogram counts audits run, not reused copies
    assert "&lt;0.5s: 1 audits" in page and "&lt;5s: 1 audits" in page
    empty = render_scan_html([])
    assert "no FAIL yet" in empty and empty.count('<tr class="row"') == 0


def test_a_folder_over_its_cpu_budget_is_an_error_line_and_the_scan_goes_on(
    prrepo: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scan.jsonl"
    stats = scan(str(prrepo), str(out), prs="1,3,6", jobs=1, timeout_s=0.001)
    got = _lines(out)
    dl = got[(1, f"{TRACK}/2026-04-01_Download")]
    # the budget stops the audit itself (a rule's own error handling cannot swallow it)
    assert dl["overall"] == "ERROR" and "CPU time" in dl["error"]
    assert got[(3, "")]["overall"] == "SKIP" and stats.errors == 3  # Download, Clean, Merged: all over budget
