"""Bad input never produces a traceback or a hang: a clear one-line error and exit 2 when there is nothing to
audit, or a WARN finding (PG001) naming the file when one part of an otherwise auditable submission is bad."""

from __future__ import annotations

import base64
import json
import lzma
import os
import subprocess
import time
from pathlib import Path

import pytest

from auditor import submission as submission_module
from auditor.cli import main
from auditor.exitcodes import ERROR

CLEAN = 'import torch\n\ndef main():\n    print("ok")\n\nif __name__ == "__main__":\n    main()\n'


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def audit_json(capsys: pytest.CaptureFixture[str], target: Path, *extra: str) -> tuple[int, dict]:
    rc, out, err = run_cli(capsys, str(target), "--format", "json", *extra)
    assert rc in (0, 1), err
    return rc, json.loads(out)


def pg001(report: dict) -> list[dict]:
    return [f for f in report["findings"] if f["rule_id"] == "PG001"]


def make(folder: Path, files: dict[str, str | bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return folder


# --- nothing to audit: exit 2 with one line --------------------------------------------------------------------
def test_nonexistent_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, out, err = run_cli(capsys, str(tmp_path / "nope"))
    assert (
        rc == ERROR and out == "" and "no such file or folder" in err and len(err.strip().splitlines()) == 1
    )


def test_empty_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, _, err = run_cli(capsys, str(make(tmp_path / "empty", {})))
    assert rc == ERROR and "empty folder" in err


def test_folder_with_nothing_auditable(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    folder = make(tmp_path / "blobs", {"final_model.int6.ptz": b"\x00\x01" * 100, "notes.bin": b"\xff"})
    rc, _, err = run_cli(capsys, str(folder))
    assert rc == ERROR and "nothing to audit" in err and "final_model.int6.ptz" in err


def test_single_file_that_is_not_python(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    make(tmp_path, {"model.bin": b"\x00"})
    rc, _, err = run_cli(capsys, str(tmp_path / "model.bin"))
    assert rc == ERROR and "must be a .py script" in err


# --- git input ----------------------------------------------------------------------------------------------------
@pytest.fixture()
def tiny_repo(tmp_path: Path) -> Path:
    repo = make(tmp_path / "repo", {"records/r1/train_gpt.py": CLEAN, "records/r1/README.md": "# r1\n"})
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "r1"]):
        subprocess.run(["git", "-C", str(repo), *cmd], check=True, env=env, capture_output=True)
    return repo


def test_bad_git_rev(capsys: pytest.CaptureFixture[str], tiny_repo: Path) -> None:
    rc, _, err = run_cli(capsys, "--git-dir", str(tiny_repo), "--rev", "no-such-rev", "--path", "records/r1")
    assert rc == ERROR and "no-such-rev" in err and len(err.strip().splitlines()) == 1


def test_git_rev_that_looks_like_an_option(capsys: pytest.CaptureFixture[str], tiny_repo: Path) -> None:
    rc, _, err = run_cli(capsys, "--git-dir", str(tiny_repo), "--rev=--output=/tmp/x", "--path", "records/r1")
    assert rc == ERROR and "not a git revision" in err


def test_missing_git_dir_and_missing_path(capsys: pytest.CaptureFixture[str], tiny_repo: Path) -> None:
    rc, _, err = run_cli(
        capsys, "--git-dir", str(tiny_repo / "nope"), "--rev", "HEAD", "--path", "records/r1"
    )
    assert rc == ERROR and "no such git repository" in err
    rc, _, err = run_cli(capsys, "--git-dir", str(tiny_repo), "--rev", "HEAD", "--path", "records/absent")
    assert rc == ERROR and "nothing at HEAD:records/absent" in err


def test_good_git_input_still_audits(capsys: pytest.CaptureFixture[str], tiny_repo: Path) -> None:
    rc, out, _ = run_cli(
        capsys, "--git-dir", str(tiny_repo), "--rev", "HEAD", "--path", "records/r1", "--format", "json"
    )
    assert rc in (0, 1) and json.loads(out)["submission"]["entry"] == "train_gpt.py"


# --- one bad file in an auditable submission: a WARN naming it ----------------------------------------------------
def test_unparsable_python(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _, report = audit_json(capsys, make(tmp_path / "r", {"train_gpt.py": "import os\ndef f(:\n    pass\n"}))
    [finding] = pg001(report)
    assert finding["verdict"] == "WARN" and "cannot parse" in finding["message"]
    assert finding["locations"][0]["path"] == "train_gpt.py" and finding["locations"][0]["line"] == 2
    assert report["overall"] != "PASS"


def test_non_utf8_python(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    folder = make(tmp_path / "r", {"train_gpt.py": CLEAN, "helper.py": b"x = '\xff\xfe'\n"})
    _, report = audit_json(capsys, folder)
    assert [(f["verdict"], f["locations"][0]["path"]) for f in pg001(report)] == [("WARN", "helper.py")]
    assert "not valid UTF-8" in pg001(report)[0]["message"]


def test_binary_file_named_py(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _, report = audit_json(capsys, make(tmp_path / "r", {"train_gpt.py": b"\x7fELF\x00\x00\x01" * 50}))
    assert "binary file" in pg001(report)[0]["message"]


def test_logs_without_code_are_audited_with_a_warning(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = make(
        tmp_path / "r", {"train.log": "step:10/10 val_loss:2.0 val_bpb:1.2\n", "README.md": "# x\n"}
    )
    _, report = audit_json(capsys, folder)
    assert report["submission"]["entry"] is None
    assert any("no Python code" in f["message"] and f["verdict"] == "WARN" for f in pg001(report))
    assert report["overall"] != "PASS"


def test_code_without_an_entry_script(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    folder = make(tmp_path / "r", {"a.py": "x = 1\n", "b.py": "y = 2\n", "README.md": "# x\n"})
    _, report = audit_json(capsys, folder)
    assert any("no entry script" in f["message"] for f in pg001(report))


def test_decompression_bomb_is_a_warn_and_fast(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bomb = base64.b85encode(lzma.compress(bytes(16 << 20)) * 64).decode()  # 1 GiB of zeros, 64 xz streams
    shim = f'import lzma as L,base64 as B\nexec(L.decompress(B.b85decode("{bomb}")))\n'
    t0 = time.perf_counter()
    _, report = audit_json(capsys, make(tmp_path / "r", {"train_gpt.py": shim}))
    assert time.perf_counter() - t0 < 30
    [finding] = pg001(report)
    assert (
        finding["verdict"] == "WARN" and "bomb" in finding["message"] and finding["locations"][0]["line"] == 2
    )


def test_ten_megabyte_single_line_file_does_not_hang(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = make(tmp_path / "r", {"train_gpt.py": "x = [" + "1," * (5 << 20) + "]\n"})
    t0 = time.perf_counter()
    _, report = audit_json(capsys, folder)
    assert time.perf_counter() - t0 < 30
    [finding] = pg001(report)
    assert finding["verdict"] == "WARN" and "analysis limit" in finding["message"]


def test_dense_one_liner_under_the_byte_limit_is_refused_by_token_count(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = make(tmp_path / "r", {"train_gpt.py": "x = [" + "1," * 400_000 + "]\n"})
    t0 = time.perf_counter()
    _, report = audit_json(capsys, folder)
    assert time.perf_counter() - t0 < 20
    assert "token analysis limit" in pg001(report)[0]["message"]


def test_large_string_literal_is_still_analysed(tmp_path: Path) -> None:
    # a packed script is one long string literal: few tokens, so it is parsed (and unpacked) normally
    text = 'BLOB = "' + "a" * 3_000_000 + '"\n'
    assert submission_module.code_limit_problem("train_gpt.py", text) is None


def test_unreadable_file_is_reported(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = make(tmp_path / "r", {"train_gpt.py": CLEAN, "secret.py": "x = 1\n"})
    real = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self.name == "secret.py":
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    _, report = audit_json(capsys, folder)
    assert any("secret.py" in f["message"] and "Permission denied" in f["message"] for f in pg001(report))


def test_symlink_loop_and_special_files_are_skipped(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = make(tmp_path / "r", {"train_gpt.py": CLEAN})
    (folder / "loop").symlink_to(folder, target_is_directory=True)
    os.mkfifo(folder / "pipe")
    t0 = time.perf_counter()
    _, report = audit_json(capsys, folder)
    assert time.perf_counter() - t0 < 20 and report["submission"]["entry"] == "train_gpt.py"


def test_file_limit_stops_reading(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(submission_module, "MAX_FILES", 3)
    folder = make(tmp_path / "r", {"train_gpt.py": CLEAN, **{f"data/{i}.txt": "x\n" for i in range(10)}})
    _, report = audit_json(capsys, folder)
    assert any("more than 3 files" in f["message"] for f in pg001(report))
