"""Fuzzing the other readers of hostile input: submission.json (any JSON value, broken JSON, deep nesting, huge
numbers), README.md (tables, fences, run commands, numbers), the maintainers' waiver TOML, and the git-object
loader (odd, non-UTF-8, glob-like and option-like file and folder names, symlinks, submodules, empty blobs) on a
real git repository built in tmp_path.

Properties: no exception escapes (a reader returns a problem, the CLI exits 2 with one line, the engine reports
no internal error); CPU and allocation stay bounded; unusable input gives a WARN/FAIL/SKIP with a reason, never a
silent PASS of the rule that reads it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from _fuzz import MB, bounded, fuzz_settings
from hypothesis import given
from hypothesis import strategies as st

from auditor.engine import audit, select_rules
from auditor.errors import InputError
from auditor.findings import Verdict
from auditor.submission import load_git
from auditor.testing import submission_from_files
from auditor.waivers import apply_waivers, load_waivers

ENTRY = "def main():\n    pass\n\n\nif __name__ == '__main__':\n    main()\n"
LOG = "seed:42\nfinal_int8_zlib_roundtrip val_loss:2.0000 val_bpb:1.2000\n"
CLAIM_RULES = ["package", "evidence"]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=30,
)
CLAIM_KEYS = ["name", "author", "github_id", "val_bpb", "val_loss", "bytes_total", "date", "track", "seeds"]


@st.composite
def claims_texts(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["object", "any", "broken", "deep", "bignum"]))
    if kind == "object":  # the right keys with any values
        keys = draw(st.lists(st.sampled_from(CLAIM_KEYS), unique=True))
        return json.dumps({k: draw(json_values) for k in keys}, allow_nan=True)
    if kind == "any":
        return json.dumps(draw(json_values), allow_nan=True)
    if kind == "broken":
        text = json.dumps({k: draw(json_values) for k in CLAIM_KEYS[:4]}, allow_nan=True)
        cut = draw(st.integers(0, len(text)))
        return text[:cut] + draw(st.text(max_size=5))
    if kind == "deep":
        n = draw(st.integers(1, 200_000))
        return "[" * n + "]" * draw(st.integers(0, n))
    return '{"val_bpb": ' + "7" * draw(st.integers(4000, 20_000)) + "}"


def _audit(files: dict[str, str | bytes], rules: list[str] | None):  # noqa: ANN202
    selected = select_rules(rules) if rules else None
    return bounded(
        lambda: audit(submission_from_files(files), selected, time_budget_s=None),
        cpu_s=60.0,
        peak_bytes=512 * MB,
        what="audit",
    )


@fuzz_settings(150)
@given(claims_texts())
def test_submission_json(text: str) -> None:
    files = {"train_gpt.py": ENTRY, "train_seed42.log": LOG, "submission.json": text}
    sub = submission_from_files(files)
    claims, problem = sub.claims()
    assert (claims is None) == (problem is not None), (claims, problem)
    report = _audit(files, CLAIM_RULES)
    assert report.errors == []
    if claims is None:  # unreadable claims: the package rule says so, it does not pass
        (pg, *_) = [rv for rv in report.per_rule() if rv.rule_id == "PG602"]
        assert pg.verdict in (Verdict.FAIL, Verdict.WARN), problem


markdown_pieces = st.sampled_from(
    [
        "# Title\n",
        "| seed | val_bpb | val_loss |\n|---|---|---|\n| 42 | 1.2000 | 2.0000 |\n",
        "| 1 | 2 |\n|--|\n| nan | inf |\n",
        "```bash\nTTT_ENABLED=1 torchrun --nproc_per_node=8 train_gpt.py\n```\n",
        "```\n" + "x" * 5000 + "\n",  # unterminated fence
        "val_bpb: 1.1\n",
        "**val_bpb 0.9**\n",
        "RUN_ID=x SEED=$(rm -rf /) python train_gpt.py\n",
        "export EVAL_STRIDE=64 \\\n  && python3 train_gpt.py \\\n",
        "\r\n",
        "<!-- pgolf-audit:sticky -->\n",
    ]
)


@fuzz_settings(60)
@given(st.lists(st.one_of(markdown_pieces, st.text(max_size=200)), max_size=30))
def test_readme(pieces: list[str]) -> None:
    files = {"train_gpt.py": ENTRY, "train_seed42.log": LOG, "README.md": "".join(pieces)}
    report = _audit(files, None)  # every rule: the flow rules read run commands out of the README too
    assert report.errors == []


def test_readme_with_ten_megabyte_table_rows() -> None:
    """A results table whose rows are 10 MB long, one of them for a logged seed, and a seed cell of 5,000 digits
    (int() raises on it): once 46 s of CPU in the README-table check, and an internal error."""
    readme = "\n".join(
        [
            "| " + "1.0 | " * (2 * MB),
            "| 42 | " + "1.2000 | " * (MB + MB // 2),
            "| " + "4" * 5000 + " | 1.2000 |",
        ]
    )
    files = {"train_gpt.py": ENTRY, "README.md": readme, "train_seed42.log": LOG}
    report = bounded(
        lambda: audit(submission_from_files(files), time_budget_s=None),
        cpu_s=20,
        peak_bytes=512 * MB,
        what="a",
    )
    assert report.errors == []


toml_scalars = st.one_of(
    st.text(max_size=30).map(json.dumps),  # a JSON string literal is a valid TOML basic string
    st.integers(-(10**20), 10**20).map(str),
    st.sampled_from(
        ["true", "2026-12-31", "2026-13-45", "1979-05-27T07:32:00Z", "nan", "inf", "[]", "{}", "'x'"]
    ),
)
WAIVER_KEYS = ["rule", "path", "fingerprint", "reason", "approved_by", "expires", "extra"]


@st.composite
def waiver_files(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["tables", "text", "deep"]))
    if kind == "text":
        return draw(st.text(max_size=300))
    if kind == "deep":
        n = draw(st.integers(1, 100_000))
        return "a = " + "[" * n + "]" * n + "\n"
    out = []
    for _ in range(draw(st.integers(0, 4))):
        header = draw(st.sampled_from(["[[waiver]]", "[waiver]", "[[waivers]]", "[[waiver.x]]"]))
        keys = draw(st.lists(st.sampled_from(WAIVER_KEYS), unique=True))
        out.append(header + "\n" + "".join(f"{k} = {draw(toml_scalars)}\n" for k in keys))
    return "\n".join(out)


@fuzz_settings(300)
@given(text=waiver_files())
def test_waiver_toml(text: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("w") / "waivers.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        waivers = bounded(lambda: load_waivers(path), cpu_s=10.0, peak_bytes=128 * MB, what="waivers")
    except InputError as exc:
        assert str(exc) and "\n" not in str(exc).strip()
        return
    report = audit(
        submission_from_files({"train_gpt.py": ENTRY}), select_rules(["PG001"]), time_budget_s=None
    )
    apply_waivers(report, waivers)
    used = len(waivers) - len(report.unused_waivers)  # each waiver is applied or listed as unused
    assert 0 <= used <= sum(f.waived for f in report.findings)


# --- the git-object loader ------------------------------------------------------------------------------------
ODD_NAMES = [
    b"train_gpt.py",
    b"with space.py",
    b"-rf.py",
    b"--output=x.log",
    b"*.py",
    b"?",
    b"[ab].txt",
    b":(glob)x.py",
    b"\xff\xfe.py",  # not UTF-8
    "ünïcode.log".encode(),
    b"tab\there.txt",
    b"new\nline.py",
    b"back\\slash.py",
    b"trailing. ",
    b"a" * 250 + b".py",
    b"README.md",
    b"submission.json",
    b"dir/nested/deep.py",
    b"dir/../escape.py",
]


def _git(repo: Path, *args: str, data: bytes | None = None) -> bytes:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t"}
    env["GIT_COMMITTER_EMAIL"] = "t@e"
    return subprocess.run(
        ["git", "-C", str(repo), *args], input=data, check=True, capture_output=True, env=env
    ).stdout.strip()


@st.composite
def trees(draw: st.DrawFn) -> tuple[list[tuple[str, bytes, bytes]], bytes]:
    """(entries (mode, path, content), folder name) for one record folder under records/track/."""
    folder = draw(
        st.sampled_from([b"2026-04-01_x", b"with space", b"*", b"-x", b"\xc3\xa9t\xc3\xa9", b"a\nb", b"."])
    )
    names = draw(
        st.lists(st.one_of(st.sampled_from(ODD_NAMES), st.binary(min_size=1, max_size=12)), max_size=8)
    )
    entries = []
    for name in names:
        mode = draw(st.sampled_from(["100644", "100644", "100755", "120000", "160000"]))
        content = draw(st.sampled_from([ENTRY.encode(), LOG.encode(), b"", b"\x00\x01", b"{", b"x" * 1000]))
        entries.append((mode, name, content))
    return entries, folder


def _build(repo: Path, entries: list[tuple[str, bytes, bytes]], folder: bytes) -> bytes:
    """A commit whose index holds exactly these entries (built with plumbing: any byte name git accepts)."""
    lines = []
    for mode, name, content in entries:
        if mode == "160000":  # a submodule: a commit id, no object in this repository
            sha = b"1" * 40
        else:
            sha = _git(repo, "hash-object", "-w", "--stdin", data=content)
        lines.append(f"{mode} ".encode() + sha + b"\t" + b"records/track/" + folder + b"/" + name + b"\0")
    _git(repo, "read-tree", "--empty")
    for line in lines:  # one at a time: git refuses some names (.., .git, //) and that is fine
        try:
            _git(repo, "update-index", "--add", "-z", "--index-info", data=line)
        except subprocess.CalledProcessError:
            continue
    tree = _git(repo, "write-tree")
    return _git(repo, "commit-tree", tree.decode(), "-m", "x")


@pytest.fixture(scope="module")
def bare_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("git") / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "--bare")
    return repo


@fuzz_settings(60)
@given(trees())
def test_git_loader_with_odd_names(
    bare_repo: Path, tree: tuple[list[tuple[str, bytes, bytes]], bytes]
) -> None:
    entries, folder = tree
    commit = _build(bare_repo, entries, folder).decode()
    path = "records/track/" + folder.decode("utf-8", errors="surrogateescape")
    try:
        sub = bounded(
            lambda: load_git(bare_repo, commit, path), cpu_s=10, peak_bytes=128 * MB, what="load_git"
        )
    except InputError as exc:  # nothing there, or nothing to audit: one line, exit 2 at the CLI
        assert str(exc)
        return
    except UnicodeEncodeError:
        pytest.fail("a folder name that is not UTF-8 crashed the loader")
    for rel, f in sub.files.items():
        assert not rel.startswith("/") and ".." not in rel.split("/"), rel
        assert f.data is None or len(f.data) == f.size
    report = bounded(lambda: audit(sub, time_budget_s=None), cpu_s=60, peak_bytes=512 * MB, what="audit")
    assert report.errors == []


@pytest.mark.parametrize(
    "rev", ["-x", "--output=/tmp/x", "HEAD\nHEAD", " ", "HEAD:../..", "a" * 5000, "@{-1}"]
)
def test_git_loader_with_odd_revisions(bare_repo: Path, rev: str) -> None:
    with pytest.raises(InputError):
        load_git(bare_repo, rev, "records")


@pytest.mark.parametrize("path", ["--", "-x", "../..", ":(top)", ":!records", "*", "records/" + "a" * 5000])
def test_git_loader_with_odd_paths(bare_repo: Path, path: str) -> None:
    commit = _build(bare_repo, [("100644", b"train_gpt.py", ENTRY.encode())], b"r").decode()
    try:
        sub = load_git(bare_repo, commit, path)
    except InputError:
        return
    assert all(not rel.startswith(("/", "../")) for rel in sub.files)


def test_git_loader_caps_what_it_reads(bare_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The folder caps hold for git objects too: blobs stop at MAX_TOTAL_BYTES (the rest are listed, not read,
    with a problem), files beyond MAX_FILES are dropped with a problem, and a file over MAX_FILE_BYTES is not read."""
    from auditor import submission

    monkeypatch.setattr(submission, "MAX_TOTAL_BYTES", 2500)
    monkeypatch.setattr(submission, "MAX_FILE_BYTES", 1500)
    monkeypatch.setattr(submission, "MAX_FILES", 4)
    entries = [("100644", f"f{i}.log".encode(), bytes([65 + i]) * 1000) for i in range(4)]
    entries += [("100644", b"big.log", b"x" * 2000), ("100644", b"train_gpt.py", ENTRY.encode())]
    commit = _build(bare_repo, entries, b"capped").decode()
    sub = load_git(bare_repo, commit, "records/track/capped")
    assert sorted(sub.files) == ["big.log", "f0.log", "f1.log", "f2.log"]  # git lists in name order; 4 kept
    read = [p for p, f in sub.files.items() if f.data is not None]
    assert read == ["f0.log", "f1.log"] and sum(len(sub.files[p].data or b"") for p in read) <= 2500
    assert sub.files["f2.log"].error and "over 2,500 bytes" in sub.files["f2.log"].text()[1]
    assert sub.files["big.log"].data is None and sub.files["big.log"].error is None
    assert any("more than 4 files" in p for p in sub.load_problems)
    assert any("over 2,500 bytes" in p for p in sub.load_problems)
