"""The maintainer commands on a real git repository built from our fixtures: `corpus` (confusion table against
labels) and `sweep` (every record folder at a revision)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from auditor.cli import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("pg")
    _git(root, "init", "-q", "-b", "main")
    _git(root, "config", "user.email", "t@example.com")
    _git(root, "config", "user.name", "t")
    track = root / "records" / "track_10min_16mb"
    for name in ("clean_baseline", "eval_download", "calib_on_val"):
        shutil.copytree(FIXTURES / name, track / f"2026-04-01_{name}")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "records")
    return root, _git(root, "rev-parse", "HEAD")


def _labels(tmp: Path, commit: str, rows: list[tuple[str, str, str, str]]) -> Path:
    lines = ["id\tpr\tverdict\trules\trepo\tcommit\tpath\twhere_to_look\tverdict_source"]
    for rid, verdict, rules, name in rows:
        path = f"records/track_10min_16mb/2026-04-01_{name}/train_gpt.py"
        lines.append(f"{rid}\t#1\t{verdict}\t{rules}\tx/y\t{commit}\t{path}\t-\t-")
    p = tmp / "labels.tsv"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_corpus_confusion_table(
    repo: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, commit = repo
    labels = _labels(
        tmp_path,
        commit,
        [
            ("T-1", "clean", "", "clean_baseline"),
            ("T-2", "illegal", "eval_io", "eval_download"),
            ("T-3", "illegal", "calib_on_val", "calib_on_val"),
        ],
    )
    assert main(["corpus", str(labels), "--git-dir", str(root), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["ok"] for r in data["rows"]] == [True, True, True]
    assert "PG101" in data["rows"][1]["failed_rules"] and data["rows"][0]["failed_rules"] == {}
    assert data["confusion"]["PG402"]["tp"] == 1 and data["confusion"]["PG402"]["fp"] == 0
    assert data["confusion"]["PG101"]["tn"] == 2


def test_corpus_reports_a_mislabelled_row(
    repo: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, commit = repo
    labels = _labels(tmp_path, commit, [("T-9", "illegal", "slot", "clean_baseline")])
    assert main(["corpus", str(labels), "--git-dir", str(root)]) == 1
    out = capsys.readouterr().out
    assert "T-9" in out and "NO" in out and "0/1 rows as labelled" in out


def test_sweep_lists_every_record_folder(repo: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = repo
    assert main(["sweep", "--git-dir", str(root), "--format", "json"]) == 1
    rows = {Path(r["path"]).name: r for r in json.loads(capsys.readouterr().out)}
    assert rows["2026-04-01_clean_baseline"]["overall"] == "PASS"
    assert "PG101" in rows["2026-04-01_eval_download"]["fails"]
    assert "PG402" in rows["2026-04-01_calib_on_val"]["fails"]
