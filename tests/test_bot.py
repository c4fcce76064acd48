"""The PR bot against a real HTTP server on 127.0.0.1 and a real git repository: it audits only the record
folders the PR changes, from git objects, and keeps exactly one sticky comment."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from auditor.bot import changed_record_folders, run_bot
from auditor.engine import audit
from auditor.exitcodes import exit_code
from auditor.render.markdown import STICKY_MARKER
from auditor.submission import load_git


class FakeGitHub:
    def __init__(self) -> None:
        self.comments: list[dict[str, Any]] = [{"id": 1, "body": "thanks for the PR!"}]
        self.requests: list[tuple[str, str, str]] = []

    def handler(self) -> type[BaseHTTPRequestHandler]:
        gh = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, code: int, payload: Any) -> None:
                body = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _body(self) -> dict[str, Any]:
                n = int(self.headers.get("Content-Length", "0"))
                return json.loads(self.rfile.read(n)) if n else {}

            def do_GET(self) -> None:  # noqa: N802
                gh.requests.append(("GET", self.path, self.headers.get("Authorization", "")))
                page = 1 if "page=1" in self.path else 2
                self._send(200, gh.comments if page == 1 else [])

            def do_POST(self) -> None:  # noqa: N802
                body = self._body()
                gh.requests.append(("POST", self.path, self.headers.get("Authorization", "")))
                comment = {"id": 100 + len(gh.comments), "body": body["body"]}
                gh.comments.append(comment)
                self._send(201, comment)

            def do_PATCH(self) -> None:  # noqa: N802
                body = self._body()
                gh.requests.append(("PATCH", self.path, self.headers.get("Authorization", "")))
                cid = int(self.path.rsplit("/", 1)[1])
                for c in gh.comments:
                    if c["id"] == cid:
                        c["body"] = body["body"]
                self._send(200, {"id": cid})

        return Handler


@pytest.fixture
def github(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    gh = FakeGitHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), gh.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("GITHUB_API_URL", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("GITHUB_TOKEN", "test-token")
    yield gh
    server.shutdown()


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def pr_repo(tmp_path: Path) -> tuple[Path, str, str]:
    repo = tmp_path / "pg"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "t@example.com")
    _git(repo, "config", "user.name", "t")
    old = repo / "records/track_10min_16mb/2026-03-01_Old"
    old.mkdir(parents=True)
    (old / "train_gpt.py").write_text("print('old')\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "base")
    base = _git(repo, "rev-parse", "HEAD")
    new = repo / "records/track_10min_16mb/2026-04-01_New"
    new.mkdir(parents=True)
    (new / "train_gpt.py").write_text("def broken(:\n")  # analysis defeated -> WARN, and never executed
    (repo / "README.md").write_text("not a record\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "pr")
    return repo, base, _git(repo, "rev-parse", "HEAD")


def test_only_changed_record_folders(pr_repo: tuple[Path, str, str]) -> None:
    repo, base, head = pr_repo
    assert changed_record_folders(str(repo), base, head) == ["records/track_10min_16mb/2026-04-01_New"]


def test_sticky_comment_created_then_updated(
    pr_repo: tuple[Path, str, str], github: FakeGitHub, capsys: pytest.CaptureFixture[str]
) -> None:
    repo, base, head = pr_repo
    folder = "records/track_10min_16mb/2026-04-01_New"
    expected = exit_code(audit(load_git(str(repo), head, folder)), strict=True)
    assert expected != 0  # the broken script alone makes it at least a WARN
    assert run_bot(str(repo), base, head, "o/r", 7, dry_run=False, output=None, strict=False) in (0, 1)
    assert run_bot(str(repo), base, head, "o/r", 7, dry_run=False, output=None, strict=True) == expected
    sticky = [c for c in github.comments if c["body"].startswith(STICKY_MARKER)]
    assert len(sticky) == 1  # second run edited the same comment
    assert "2026-04-01_New" in sticky[0]["body"] and "| Rule |" in sticky[0]["body"]
    methods = [m for m, _, _ in github.requests]
    assert methods.count("POST") == 1 and methods.count("PATCH") == 1
    assert all(auth == "Bearer test-token" for _, _, auth in github.requests)
    assert "created comment" in capsys.readouterr().out


def test_dry_run_prints_without_posting(
    pr_repo: tuple[Path, str, str], github: FakeGitHub, capsys: pytest.CaptureFixture[str]
) -> None:
    repo, base, head = pr_repo
    run_bot(str(repo), base, head, "o/r", 7, dry_run=True, output=None, strict=False)
    assert capsys.readouterr().out.startswith(STICKY_MARKER)
    assert github.requests == []
