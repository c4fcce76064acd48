"""The PR bot against GitHub's failure modes, on a real HTTP server on 127.0.0.1: rate limits (403/429 with
Retry-After or X-RateLimit-*), server errors with bounded exponential backoff, paginated comments, a sticky comment
deleted or edited by someone else, duplicates from racing runs. The bot keeps exactly one sticky comment and the
report is never lost (always in --output; on stdout when posting fails without --output)."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from auditor import github_api
from auditor.bot import run_bot
from auditor.cli import main
from auditor.errors import InputError
from auditor.github_api import GitHub
from auditor.render.markdown import STICKY_MARKER

BOT = {"login": "github-actions[bot]", "type": "Bot"}
HUMAN = {"login": "someone", "type": "User"}

# a fault: (method, path regex) -> (status, headers, body); consumed once each, in order
Fault = tuple[str, str, int, dict[str, str], Any]


class Server:
    def __init__(self, link_header: bool = True) -> None:
        self.comments: list[dict[str, Any]] = []
        self.next_id = 1000
        self.faults: list[Fault] = []
        self.log: list[tuple[str, str, int]] = []
        self.link_header = link_header
        self.on_request: Callable[[str, str], None] | None = None  # hook to act "as someone else" mid-run
        self.create_then_fail = 0  # POSTs that create the comment and still answer 502

    def add(self, body: str, user: dict[str, str] = BOT) -> dict[str, Any]:
        c = {"id": self.next_id, "body": body, "user": dict(user)}
        self.next_id += 1
        self.comments.append(c)
        return c

    def stickies(self) -> list[dict[str, Any]]:
        return [c for c in self.comments if c["body"].startswith(STICKY_MARKER)]

    def methods(self) -> list[str]:
        return [m for m, _, _ in self.log]

    def handler(self) -> type[BaseHTTPRequestHandler]:
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, code: int, payload: Any, headers: dict[str, str] | None = None) -> None:
                body = json.dumps(payload).encode() if payload is not None else b""
                srv.log.append((self.command, self.path, code))  # before answering: the client may be faster
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _fault(self) -> bool:
                if srv.on_request:
                    srv.on_request(self.command, self.path)
                for i, (method, pattern, status, headers, body) in enumerate(srv.faults):
                    if method == self.command and re.search(pattern, self.path):
                        del srv.faults[i]
                        self._send(status, body, headers)
                        return True
                return False

            def _body(self) -> dict[str, Any]:
                n = int(self.headers.get("Content-Length", "0"))
                return json.loads(self.rfile.read(n)) if n else {}

            def do_GET(self) -> None:  # noqa: N802
                if self._fault():
                    return
                url = urlparse(self.path)
                q = parse_qs(url.query)
                per_page, page = int(q.get("per_page", ["30"])[0]), int(q.get("page", ["1"])[0])
                chunk = srv.comments[(page - 1) * per_page : page * per_page]
                headers = {}
                if srv.link_header and page * per_page < len(srv.comments):
                    nxt = f"http://{self.headers['Host']}{url.path}?per_page={per_page}&page={page + 1}"
                    headers["Link"] = f'<{nxt}>; rel="next", <{nxt}>; rel="last"'
                self._send(200, chunk, headers)

            def do_POST(self) -> None:  # noqa: N802
                body = self._body()
                if self._fault():
                    return
                c = srv.add(body["body"])
                if srv.create_then_fail:
                    srv.create_then_fail -= 1
                    self._send(502, {"message": "Bad Gateway"})
                    return
                self._send(201, c)

            def _find(self) -> dict[str, Any] | None:
                cid = int(self.path.rsplit("/", 1)[1])
                return next((c for c in srv.comments if c["id"] == cid), None)

            def do_PATCH(self) -> None:  # noqa: N802
                body = self._body()
                if self._fault():
                    return
                c = self._find()
                if c is None:
                    self._send(404, {"message": "Not Found"})
                    return
                c["body"] = body["body"]
                self._send(200, c)

            def do_DELETE(self) -> None:  # noqa: N802
                if self._fault():
                    return
                c = self._find()
                if c is None:
                    self._send(404, {"message": "Not Found"})
                    return
                srv.comments.remove(c)
                self._send(204, None)

        return Handler


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), srv.handler())
    srv.url = f"http://127.0.0.1:{httpd.server_address[1]}"  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield srv
    httpd.shutdown()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits the client asks for; recorded instead of slept so the tests stay fast."""
    got: list[float] = []
    monkeypatch.setattr(github_api, "_sleep", got.append)
    return got


def client(server: Server, **kw: Any) -> GitHub:
    return GitHub("o/r", "tok", server.url, **kw)  # type: ignore[attr-defined]


BODY = f"{STICKY_MARKER}\n## pgolf-audit\nreport v2\n"


# --- rate limits and server errors ------------------------------------------------------------------------------
def test_429_with_retry_after_is_waited_out(server: Server, sleeps: list[float]) -> None:
    server.faults.append(("GET", "/comments", 429, {"Retry-After": "7"}, {"message": "slow down"}))
    assert client(server).upsert_sticky(7, BODY, STICKY_MARKER)[0] == "created"
    assert sleeps == [7.0] and server.methods() == ["GET", "GET", "POST"]


def test_403_secondary_rate_limit_with_ratelimit_reset(server: Server, sleeps: list[float]) -> None:
    reset = str(int(time.time()) + 20)
    headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}
    server.faults.append(("POST", "/comments", 403, headers, {"message": "API rate limit exceeded"}))
    server.faults.append(
        ("POST", "/comments", 403, {}, {"message": "You have exceeded a secondary rate limit"})
    )
    action, _ = client(server).upsert_sticky(7, BODY, STICKY_MARKER)
    assert action == "created" and len(server.stickies()) == 1
    assert (
        15 <= sleeps[0] <= 22 and sleeps[1] == 60.0
    )  # reset time; GitHub's documented minute without a header


def test_403_without_rate_limit_signals_fails_at_once(server: Server, sleeps: list[float]) -> None:
    server.faults.append(
        ("POST", "/comments", 403, {}, {"message": "Resource not accessible by integration"})
    )
    with pytest.raises(InputError, match="HTTP 403.*Resource not accessible"):
        client(server).upsert_sticky(7, BODY, STICKY_MARKER)
    assert sleeps == [] and server.methods() == ["GET", "POST"]


def test_retry_after_beyond_the_limit_fails_instead_of_hanging(server: Server, sleeps: list[float]) -> None:
    server.faults.append(("GET", "/comments", 429, {"Retry-After": "3600"}, None))
    with pytest.raises(InputError, match="wait 3600 s"):
        client(server, max_wait_s=300).upsert_sticky(7, BODY, STICKY_MARKER)
    assert sleeps == []


def test_server_errors_back_off_exponentially_then_succeed(server: Server, sleeps: list[float]) -> None:
    server.add(f"{STICKY_MARKER}\nold report")
    for status in (500, 502, 503):
        server.faults.append(("PATCH", "/issues/comments/", status, {}, {"message": "oops"}))
    assert client(server, backoff_s=0.5).upsert_sticky(7, BODY, STICKY_MARKER)[0] == "updated"
    assert sleeps == [0.5, 1.0, 2.0] and server.stickies()[0]["body"] == BODY


def test_server_errors_are_bounded(server: Server, sleeps: list[float]) -> None:
    for _ in range(10):
        server.faults.append(("GET", "/comments", 503, {}, None))
    with pytest.raises(InputError, match=r"HTTP 503.*gave up after 4 attempts"):
        client(server, max_retries=3, backoff_s=1, max_backoff_s=3).upsert_sticky(7, BODY, STICKY_MARKER)
    assert sleeps == [1, 2, 3] and server.methods().count("GET") == 4


def test_a_post_that_failed_but_landed_is_not_duplicated(server: Server, sleeps: list[float]) -> None:
    server.create_then_fail = 1
    action, cid = client(server).upsert_sticky(7, BODY, STICKY_MARKER)
    assert action == "updated" and len(server.stickies()) == 1 and server.stickies()[0]["id"] == cid
    assert server.methods() == ["GET", "POST", "GET", "PATCH"] and len(sleeps) == 1


def test_dropped_connection_is_retried(server: Server, sleeps: list[float]) -> None:
    gh = GitHub("o/r", "tok", "http://127.0.0.1:9", max_retries=2, backoff_s=0.1)  # nothing listens on port 9
    with pytest.raises(InputError, match="after 3 attempts"):
        gh.upsert_sticky(7, BODY, STICKY_MARKER)
    assert sleeps == [0.1, 0.2]


# --- pagination ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("link_header", [True, False])
def test_sticky_on_the_third_page_is_found(server: Server, sleeps: list[float], link_header: bool) -> None:
    server.link_header = link_header
    for i in range(230):
        server.add(f"comment {i}", HUMAN)
    sticky = server.add(f"{STICKY_MARKER}\nold")
    for i in range(5):
        server.add(f"later {i}", HUMAN)
    assert client(server).upsert_sticky(7, BODY, STICKY_MARKER) == ("updated", sticky["id"])
    assert server.methods() == ["GET", "GET", "GET", "PATCH"] and sticky["body"] == BODY


def test_exactly_one_hundred_comments_without_link_header(server: Server, sleeps: list[float]) -> None:
    server.link_header = False
    for i in range(100):
        server.add(f"comment {i}", HUMAN)
    assert client(server).upsert_sticky(7, BODY, STICKY_MARKER)[0] == "created"
    assert server.methods() == ["GET", "GET", "POST"]  # the empty second page ends the listing


# --- someone else touched the sticky ------------------------------------------------------------------------------
def test_sticky_deleted_between_listing_and_editing_is_recreated(server: Server, sleeps: list[float]) -> None:
    sticky = server.add(f"{STICKY_MARKER}\nold")

    def delete_it(method: str, path: str) -> None:
        if method == "PATCH" and sticky in server.comments:
            server.comments.remove(sticky)  # a maintainer deletes it while the bot runs

    server.on_request = delete_it
    action, cid = client(server).upsert_sticky(7, BODY, STICKY_MARKER)
    assert action == "created" and cid != sticky["id"]
    assert [c["body"] for c in server.stickies()] == [BODY]


def test_sticky_whose_marker_was_edited_away_is_left_alone(server: Server, sleeps: list[float]) -> None:
    edited = server.add("I removed the marker and wrote my own notes", BOT)
    assert client(server).upsert_sticky(7, BODY, STICKY_MARKER)[0] == "created"
    assert edited["body"].startswith("I removed") and len(server.stickies()) == 1


def test_sticky_edited_with_marker_kept_is_restored(server: Server, sleeps: list[float]) -> None:
    sticky = server.add(f"{STICKY_MARKER}\nreport v1\n\nPS from a maintainer: looks fine to me")
    assert client(server).upsert_sticky(7, BODY, STICKY_MARKER) == ("updated", sticky["id"])
    assert sticky["body"] == BODY


def test_duplicate_stickies_from_racing_runs_collapse_to_one(server: Server, sleeps: list[float]) -> None:
    first = server.add(f"{STICKY_MARKER}\nrun A")
    server.add("a human comment", HUMAN)
    server.add(f"{STICKY_MARKER}\nrun B")
    assert client(server).upsert_sticky(7, BODY, STICKY_MARKER) == ("updated", first["id"])
    assert [c["id"] for c in server.stickies()] == [first["id"]] and len(server.comments) == 2


def test_a_person_pasting_the_marker_cannot_redirect_the_bot(server: Server, sleeps: list[float]) -> None:
    pasted = server.add(f"{STICKY_MARKER}\nhaha, edit me", HUMAN)
    ours = server.add(f"{STICKY_MARKER}\nold", BOT)
    assert client(server).upsert_sticky(7, BODY, STICKY_MARKER) == ("updated", ours["id"])
    assert pasted["body"].endswith("edit me") and pasted in server.comments


def test_bot_login_restricts_whose_comments_count(server: Server, sleeps: list[float]) -> None:
    other_bot = server.add(f"{STICKY_MARKER}\nanother bot", {"login": "other[bot]", "type": "Bot"})
    gh = client(server)
    gh.login = "github-actions[bot]"
    action, cid = gh.upsert_sticky(7, BODY, STICKY_MARKER)
    assert action == "created" and other_bot["body"].endswith("another bot")


# --- end to end: run_bot and the CLI --------------------------------------------------------------------------------
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
    (repo / "README.md").write_text("base\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "base")
    base = _git(repo, "rev-parse", "HEAD")
    new = repo / "records/track_10min_16mb/2026-04-01_New"
    new.mkdir(parents=True)
    (new / "train_gpt.py").write_text("def broken(:\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "pr")
    return repo, base, _git(repo, "rev-parse", "HEAD")


def test_run_twice_through_faults_keeps_one_sticky(
    pr_repo: tuple[Path, str, str],
    server: Server,
    sleeps: list[float],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    repo, base, head = pr_repo
    monkeypatch.setenv("GITHUB_API_URL", server.url)  # type: ignore[attr-defined]
    monkeypatch.setenv("GITHUB_TOKEN", "tok")
    server.faults += [
        ("GET", "/comments", 502, {}, None),
        ("POST", "/comments", 429, {"Retry-After": "1"}, None),
    ]
    out = tmp_path / "comment.md"
    for _ in range(2):
        run_bot(str(repo), base, head, "o/r", 7, dry_run=False, output=str(out), strict=False)
        server.faults.append(("PATCH", "/issues/comments/", 503, {}, None))
    assert len(server.stickies()) == 1 and server.stickies()[0]["body"] == out.read_text()
    assert server.methods().count("POST") == 2 and sleeps == [1.0, 1.0, 1.0]  # 429'd POST, then one real POST


def test_api_failure_exits_2_and_keeps_the_report(
    pr_repo: tuple[Path, str, str],
    server: Server,
    sleeps: list[float],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo, base, head = pr_repo
    monkeypatch.setenv("GITHUB_API_URL", server.url)  # type: ignore[attr-defined]
    monkeypatch.setenv("GITHUB_TOKEN", "tok")
    args = ["bot", "--git-dir", str(repo), "--base", base, "--head", head, "--repo", "o/r", "--pr", "7"]
    server.faults += [("GET", "/comments", 401, {}, {"message": "Bad credentials"})] * 2
    out = tmp_path / "comment.md"
    assert main([*args, "--output", str(out)]) == 2
    captured = capsys.readouterr()
    assert (
        "HTTP 401" in captured.err and "Bad credentials" in captured.err and "Traceback" not in captured.err
    )
    assert out.read_text().startswith(STICKY_MARKER) and "2026-04-01_New" in out.read_text()
    assert main(args) == 2  # no --output: the report goes to stdout rather than being lost
    assert capsys.readouterr().out.startswith(STICKY_MARKER)
    assert server.comments == []
