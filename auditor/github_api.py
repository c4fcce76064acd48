"""The few GitHub REST calls the PR bot makes, hardened against the API's failure modes.

- Rate limits: 429, and 403 carrying `Retry-After`, `X-RateLimit-Remaining: 0` (+ `X-RateLimit-Reset`) or a
  "secondary rate limit" message, are waited out as the server asks (a secondary limit without a header: one
  minute, GitHub's documented minimum) and retried; a wait longer than `max_wait_s` is not slept through in CI, it
  fails with a message saying how long GitHub asked for. A 403 without those signals (no permission) fails at once.
- Server errors (5xx) and dropped connections: bounded retries with exponential backoff (`backoff_s` · 2^n,
  capped at `max_backoff_s`). Only idempotent requests (GET/PATCH/DELETE) are retried blindly; a POST that failed
  with a server error may still have created the comment, so `upsert_sticky` lists the comments again before it
  posts again.
- Pagination follows the `Link: <...>; rel="next"` header (a short page ends it when the header is missing).
- The sticky comment is the oldest comment whose body starts with the marker, written by the bot itself: with
  PGOLF_BOT_LOGIN set only that login's comments count; otherwise, when any marked comment is by a Bot account,
  marked comments by people are left alone (a person pasting the marker cannot make the bot edit their comment).
  Extra marked comments (left by two runs racing) are deleted, so exactly one remains. A sticky deleted by someone
  else between listing and editing (PATCH → 404) is re-created; one whose marker someone edited away is no longer
  the bot's, and a new one is posted.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from auditor.errors import InputError

RETRIABLE_STATUS = frozenset({500, 502, 503, 504})
_NEXT_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')


def _sleep(seconds: float) -> None:  # one place to stub in tests; production sleeps for real
    time.sleep(seconds)


class ApiError(InputError):
    """A GitHub API request that failed for good (after the retries it deserved)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class GitHub:
    repo: str  # owner/name
    token: str
    api: str = "https://api.github.com"
    max_retries: int = 4  # retries after the first attempt, for rate limits and server errors alike
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    max_wait_s: float = (
        300.0  # longest rate-limit wait honoured; beyond it the run fails instead of hanging CI
    )
    timeout_s: float = 30.0
    login: str | None = None  # the bot's own login, when known (PGOLF_BOT_LOGIN)
    waits: list[float] = field(default_factory=list)  # every sleep taken, for logs and tests

    # -- transport -----------------------------------------------------------------------------------------------
    def _open(self, method: str, url: str, payload: dict[str, Any] | None) -> tuple[Any, dict[str, str]]:
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(
            url,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
                "Content-Type": "application/json",
                "User-Agent": "pgolf-audit-bot",
            },
        )
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
            body = resp.read()
            headers = {k.lower(): v for k, v in resp.headers.items()}
        return (json.loads(body) if body else None), headers

    def request(
        self, method: str, path: str, payload: dict[str, Any] | None = None, retry_server_errors: bool = True
    ) -> tuple[Any, dict[str, str]]:
        """(decoded JSON body, lower-cased headers). `path` may be a full URL (pagination links)."""
        url = path if path.startswith(("http://", "https://")) else f"{self.api.rstrip('/')}{path}"
        shown = path if not path.startswith("http") else re.sub(r"^https?://[^/]+", "", path)
        attempt = 0
        while True:
            try:
                return self._open(method, url, payload)
            except urllib.error.HTTPError as exc:
                headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
                detail = _error_text(exc)
                wait = _rate_limit_wait(exc.code, headers, detail)
                what = f"GitHub API {method} {shown}: HTTP {exc.code} {exc.reason}"
                if wait is not None:
                    if wait > self.max_wait_s:
                        raise ApiError(
                            f"{what}: rate limited; GitHub asks to wait {wait:.0f} s, over the "
                            f"{self.max_wait_s:.0f}-s limit of this run",
                            exc.code,
                        ) from exc
                elif exc.code in RETRIABLE_STATUS and retry_server_errors:
                    wait = min(self.max_backoff_s, self.backoff_s * 2**attempt)
                else:
                    raise ApiError(f"{what}{': ' + detail if detail else ''}", exc.code) from exc
                if attempt >= self.max_retries:
                    raise ApiError(f"{what} (gave up after {attempt + 1} attempts)", exc.code) from exc
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                reason = getattr(exc, "reason", exc)
                what = f"GitHub API {method} {shown}: {reason}"
                if not retry_server_errors or attempt >= self.max_retries:
                    raise ApiError(f"{what} (after {attempt + 1} attempts)") from exc
                wait = min(self.max_backoff_s, self.backoff_s * 2**attempt)
            self.waits.append(wait)
            _sleep(wait)
            attempt += 1

    # -- comments --------------------------------------------------------------------------------------------------
    def comments(self, pr: int) -> list[dict[str, Any]]:
        """Every comment of the issue/PR, oldest first, following pagination."""
        out: list[dict[str, Any]] = []
        url: str | None = f"/repos/{self.repo}/issues/{pr}/comments?per_page=100"
        pages = 0
        while url and pages < 1000:  # 100,000 comments: a loop guard, not a limit anyone reaches
            page, headers = self.request("GET", url)
            pages += 1
            if not isinstance(page, list):
                raise ApiError(f"GitHub API GET {url}: expected a list of comments")
            out.extend(c for c in page if isinstance(c, dict))
            m = _NEXT_LINK.search(headers.get("link", ""))
            if m:
                url = m.group(1)
            elif "link" not in headers and len(page) == 100:
                url = f"/repos/{self.repo}/issues/{pr}/comments?per_page=100&page={pages + 1}"
            else:
                url = None
        return out

    def stickies(self, pr: int, marker: str) -> list[dict[str, Any]]:
        """The bot's marked comments, oldest first (see the module docstring for whose comments count)."""
        marked = [c for c in self.comments(pr) if str(c.get("body") or "").lstrip().startswith(marker)]
        if self.login:
            return [c for c in marked if (c.get("user") or {}).get("login") == self.login]
        bots = [c for c in marked if (c.get("user") or {}).get("type") == "Bot"]
        return bots or marked

    def upsert_sticky(self, pr: int, body: str, marker: str) -> tuple[str, int]:
        """Create or update the one sticky comment; ("created" | "updated", comment id)."""
        for attempt in range(self.max_retries + 1):
            found = self.stickies(pr, marker)
            if found:
                keep, extra = found[0], found[1:]
                cid = int(keep["id"])
                try:
                    self.request("PATCH", f"/repos/{self.repo}/issues/comments/{cid}", {"body": body})
                except ApiError as exc:
                    if exc.status == 404:  # deleted by someone else since we listed it: list again
                        continue
                    raise
                for c in extra:  # duplicates from racing runs: one sticky only
                    try:
                        self.request("DELETE", f"/repos/{self.repo}/issues/comments/{int(c['id'])}")
                    except ApiError as exc:
                        if exc.status != 404:
                            raise
                return "updated", cid
            try:
                created, _ = self.request(
                    "POST",
                    f"/repos/{self.repo}/issues/{pr}/comments",
                    {"body": body},
                    retry_server_errors=False,
                )
            except ApiError as exc:
                # a server error or dropped connection may hide a comment that was created: list again first
                if (exc.status is None or exc.status in RETRIABLE_STATUS) and attempt < self.max_retries:
                    wait = min(self.max_backoff_s, self.backoff_s * 2**attempt)
                    self.waits.append(wait)
                    _sleep(wait)
                    continue
                raise
            return "created", int(created["id"])
        raise ApiError(f"GitHub API: the sticky comment on #{pr} kept disappearing; gave up")


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        raw = exc.read()
    except Exception:  # a body that cannot be read says nothing more than the status
        return ""
    try:
        data = json.loads(raw)
        return str(data.get("message", ""))[:200] if isinstance(data, dict) else ""
    except ValueError:
        return raw.decode("utf-8", errors="replace")[:200]


def _rate_limit_wait(status: int, headers: dict[str, str], detail: str) -> float | None:
    """Seconds to wait before retrying, when the response is a rate limit; None otherwise."""
    if status not in (403, 429):
        return None
    retry_after = headers.get("retry-after")
    if retry_after is not None:
        retry_after = retry_after.strip()
        if retry_after.isdigit():
            return float(retry_after)
        try:
            when = email.utils.parsedate_to_datetime(retry_after)
            return max(0.0, when.timestamp() - time.time())
        except (TypeError, ValueError):
            return 60.0
    if headers.get("x-ratelimit-remaining") == "0":
        reset = headers.get("x-ratelimit-reset", "")
        return max(0.0, float(reset) - time.time()) + 1.0 if reset.isdigit() else 60.0
    if status == 429 or "rate limit" in detail.lower():
        return 60.0  # GitHub: "wait at least one minute" when no header says how long
    return None
