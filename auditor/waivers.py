"""Maintainer-side waivers (TOML). Only a waiver file passed with --waivers can clear a finding; nothing inside a
submission (comments, config, submission.json) can. Waived findings stay in the report, in their own section.

    [[waiver]]
    rule = "PG201"                          # rule id
    path = "train_gpt.py"                   # file relative to the submission (or the repo path of a git object)
    fingerprint = "3f2a9c0d1e7b4a55"        # from the report; stable across line shifts
    reason = "compile warmup on a throwaway LoRA; ruled within variance (PR #1530)"   # mandatory
    approved_by = "maintainer-handle"       # optional
    expires = "2026-12-31"                  # optional ISO date; expired waivers no longer apply
"""

from __future__ import annotations

import datetime as dt
import tomllib
from dataclasses import dataclass
from pathlib import Path

from auditor.errors import InputError
from auditor.findings import Finding, Report


@dataclass(frozen=True)
class Waiver:
    rule: str
    path: str
    fingerprint: str
    reason: str
    approved_by: str = ""
    expires: dt.date | None = None
    origin: str = ""  # "waivers.toml#3" for messages

    def active(self, today: dt.date | None = None) -> bool:
        return self.expires is None or (today or dt.date.today()) <= self.expires

    def matches(self, f: Finding, repo_prefix: str | None) -> bool:
        if f.rule_id != self.rule or f.fingerprint != self.fingerprint:
            return False
        loc = f.primary
        paths = {loc.path, loc.display_path} if loc else {""}
        if repo_prefix and loc:
            paths |= {f"{repo_prefix.rstrip('/')}/{p}" for p in list(paths)}
        return self.path.strip("/") in {p.strip("/") for p in paths}


def load_waivers(path: Path) -> list[Waiver]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read waiver file {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from exc
    except RecursionError as exc:  # arrays/tables nested deeper than the parser's stack
        raise InputError(f"{path}: TOML nested too deeply to read") from exc
    entries = data.get("waiver", [])
    if not isinstance(entries, list):
        raise InputError(f"{path}: expected [[waiver]] tables")
    out: list[Waiver] = []
    for i, e in enumerate(entries, 1):
        where = f"{path.name} waiver #{i}"
        if not isinstance(e, dict):
            raise InputError(f"{where}: expected a table")
        missing = [k for k in ("rule", "path", "fingerprint", "reason") if not str(e.get(k, "")).strip()]
        if missing:
            raise InputError(
                f"{where}: missing {', '.join(missing)} (a waiver needs rule, path, fingerprint and a reason)"
            )
        expires = e.get("expires")
        if isinstance(expires, str):
            try:
                expires = dt.date.fromisoformat(expires)
            except ValueError as exc:
                raise InputError(f"{where}: expires {expires!r} is not an ISO date") from exc
        elif isinstance(expires, dt.datetime):
            expires = expires.date()
        elif expires is not None and not isinstance(expires, dt.date):
            raise InputError(f"{where}: expires must be a date")
        out.append(
            Waiver(
                rule=str(e["rule"]).strip().upper(),
                path=str(e["path"]).strip(),
                fingerprint=str(e["fingerprint"]).strip(),
                reason=str(e["reason"]).strip(),
                approved_by=str(e.get("approved_by", "")),
                expires=expires,
                origin=where,
            )
        )
    return out


def apply_waivers(report: Report, waivers: list[Waiver], today: dt.date | None = None) -> None:
    used: set[int] = set()
    prefix = report.submission.git_path
    for f in report.findings:
        for i, w in enumerate(waivers):
            if w.active(today) and w.matches(f, prefix):
                f.waived = True
                f.waiver_reason = w.reason + (f" (approved by {w.approved_by})" if w.approved_by else "")
                used.add(i)
                break
    for i, w in enumerate(waivers):
        if i not in used:
            state = "expired" if not w.active(today) else "matched nothing"
            report.unused_waivers.append(f"{w.origin}: {w.rule} {w.path} {w.fingerprint} ({state})")
