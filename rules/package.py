"""What a record folder must contain and how submission.json must look (rules.md §A.1 item 8, §A.14, §D).

- PG601: README.md, submission.json, at least one train log and train_gpt.py present; the folder named
  `YYYY-MM-DD_description` when it lives under records/ (or is named like a record folder).
- PG602: submission.json parses, carries {author, github_id, name, date, val_bpb} and sane types.

A single .py file is not a package: both rules SKIP it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable
from pathlib import PurePosixPath

from auditor.evidence.claims import claims_of, number
from auditor.evidence.logs import logs_of
from auditor.facts import AuditContext
from auditor.findings import Basis, Confidence, EvidenceLevel, Finding, Location, Severity, Verdict
from rules.base import Case, Rule

SUBMISSION_BASIS = Basis(
    ref="openai/parameter-golf README (Submission Process)",
    date="2026-03-18",
    quote="All submissions should be made as a pull request that only adds a new folder to the appropriate "
    "`/records` subfolder and includes the following files. Submissions without the full set of requirements "
    "will not be accepted.",
    section="A.1",
)
FOLDER_NAME = re.compile(r"^(?P<date>\d{4}-\d{2}-\d{2})_(?P<desc>\S.*)$")
LOOKS_LIKE_RECORD = re.compile(r"^\d{4}-\d{2}-\d{2}")
REQUIRED_KEYS = ("author", "github_id", "name", "date")

_LOG = (
    "seed:42\nworld_size:8 grad_accum_steps:1\n"
    "stopping_early: wallclock_cap train_time:600051ms step:6901/9000\n"
    "final_int6_sliding_window_exact val_loss:1.93212054 val_bpb:1.14430897\n"
)
_JSON = (
    '{\n  "author": "A B",\n  "github_id": "ab",\n  "name": "Sliding window",\n  "date": "2026-03-25",\n'
    '  "val_bpb": 1.14430897,\n  "bytes_total": 15706984,\n  "seeds": [42]\n}\n'
)
_FULL = {"README.md": "# Sliding window\n", "submission.json": _JSON, "train_seed42.log": _LOG}


def _is_record_folder(ctx: AuditContext) -> bool:
    """Folder naming applies to a folder under records/ or one named like a record folder."""
    sub = ctx.submission
    where = f"/{sub.git_path or ''}/ {sub.root}".replace("\\", "/")
    return "/records/" in where or bool(LOOKS_LIKE_RECORD.match(sub.folder_name or ""))


class RecordPackageIncomplete(Rule):
    record_only = True
    id = "PG601"
    name = "record-package-incomplete"
    title = "Record folder missing a required file or misnamed"
    category = "package"
    severity = Severity.HIGH
    confidence = Confidence.HIGH
    evidence_level = EvidenceLevel.LOG
    rationale = (
        "A submission folder must hold README.md, submission.json, a train log produced by the script, and "
        "train_gpt.py with its dependencies; without a log there is no evidence for the claimed score at all. "
        "Record folders are named YYYY-MM-DD_description (requested by the maintainers)."
    )
    basis = SUBMISSION_BASIS
    valid = (Case(code="print('train')\n", files=_FULL, verdict=Verdict.PASS),)
    invalid = (
        Case(
            code="print('train')\n",
            files={k: v for k, v in _FULL.items() if not k.endswith(".log")},
            verdict=Verdict.FAIL,
            note="no train log: the claimed score has no evidence",
        ),
        Case(files=dict(_FULL), verdict=Verdict.FAIL, note="no code at all"),
        Case(
            code="print('train')\n",
            files={k: v for k, v in _FULL.items() if k != "README.md"},
            verdict=Verdict.WARN,
        ),
    )

    def check(self, ctx: AuditContext) -> Iterable[Finding]:
        sub = ctx.submission
        if sub.single_file:
            yield self.skip("a single script, not a record folder")
            return
        if sub.claims_path is None and not _is_record_folder(ctx):
            # No submission.json and not a records/ folder: a working directory audited as code, not a claim.
            yield self.skip("no submission.json and not a records/ folder: audited as code only")
            return
        findings: list[Finding] = []
        top = [p for p in sub.files if "/" not in p]
        if not logs_of(ctx):
            findings.append(
                self.finding(
                    Verdict.FAIL,
                    "no train log (a .log/.txt with run output): the claimed score has no evidence",
                    [Location(sub.folder_name or sub.root)],
                )
            )
        if sub.claims_path is None:
            findings.append(
                self.finding(
                    Verdict.FAIL,
                    "no submission.json (name, GitHub ID, val_bpb)",
                    [Location(sub.folder_name or sub.root)],
                )
            )
        if sub.readme is None:
            other = sorted(p for p in sub.files if p.lower().endswith(".md"))
            findings.append(
                self.finding(
                    Verdict.WARN,
                    "no README.md explaining the submission"
                    + (f" (found {', '.join(other[:3])})" if other else ""),
                    [Location(sub.folder_name or sub.root)],
                    severity=Severity.MEDIUM,
                )
            )
        if "train_gpt.py" not in top:
            code = sub.code_paths
            findings.append(
                self.finding(
                    Verdict.WARN if code else Verdict.FAIL,
                    "no train_gpt.py at the top of the folder"
                    + (
                        f"; the code is in {', '.join(code[:3])} (counted code should live in train_gpt.py)"
                        if code
                        else " and no Python code at all"
                    ),
                    [Location(sub.folder_name or sub.root)],
                    severity=Severity.MEDIUM if code else Severity.HIGH,
                )
            )
        if _is_record_folder(ctx):
            problem = _folder_name_problem(sub.folder_name or "")
            if problem:
                findings.append(
                    self.finding(
                        Verdict.WARN, problem, [Location(sub.folder_name or sub.root)], severity=Severity.LOW
                    )
                )
        yield from findings
        if not findings:
            yield self.finding(
                Verdict.PASS, "README.md, submission.json, train log(s) and train_gpt.py present"
            )


def _folder_name_problem(name: str) -> str | None:
    m = FOLDER_NAME.match(name)
    if not m:
        return f"folder name {name!r} is not YYYY-MM-DD_description"
    try:
        dt.date.fromisoformat(m["date"])
    except ValueError:
        return f"folder name {name!r} starts with {m['date']!r}, which is not a calendar date"
    return None


class SubmissionJsonMalformed(Rule):
    record_only = True
    id = "PG602"
    name = "submission-json-malformed"
    title = "submission.json unparsable, missing keys or with odd types"
    category = "package"
    severity = Severity.HIGH
    confidence = Confidence.HIGH
    evidence_level = EvidenceLevel.LOG
    rationale = (
        "submission.json carries the claim the leaderboard reads. It must parse, name the author, GitHub ID, run "
        "name and date, and give val_bpb as a number; per-seed blocks, seeds and byte counts should have the "
        "types every merged record uses so the claim can be cross-checked against the logs."
    )
    basis = Basis(
        ref="openai/parameter-golf README (Submission Process)",
        date="2026-03-18",
        quote="A `submission.json` file (see the example runs) that includes your name, GitHub ID, `val_bpb`, and "
        "related metadata.",
        section="D",
    )
    valid = (Case(code="print(1)\n", files={"submission.json": _JSON}, verdict=Verdict.PASS),)
    invalid = (
        Case(
            code="print(1)\n",
            files={"submission.json": _JSON.replace('"ab",', '"ab"')},
            verdict=Verdict.FAIL,
            line=4,
            path="submission.json",
            note="missing comma",
        ),
        Case(
            code="print(1)\n",
            files={"submission.json": _JSON.replace("1.14430897", '"1.14430897 (3-seed mean)"')},
            verdict=Verdict.FAIL,
            line=6,
            path="submission.json",
            note="val_bpb is not a number",
        ),
        Case(
            code="print(1)\n",
            files={"submission.json": _JSON.replace("1.14430897", '"1.14430897"')},
            verdict=Verdict.WARN,
            line=6,
            path="submission.json",
            note="a number written as a string: readable, but not the type every merged record uses",
        ),
        Case(
            code="print(1)\n",
            files={"submission.json": _JSON.replace('  "github_id": "ab",\n', "")},
            verdict=Verdict.WARN,
            path="submission.json",
        ),
        Case(
            code="print(1)\n",
            files={"submission.json": _JSON.replace("15706984", "15706984.5")},
            verdict=Verdict.WARN,
            line=7,
            path="submission.json",
        ),
    )

    def check(self, ctx: AuditContext) -> Iterable[Finding]:
        sub = ctx.submission
        path = sub.claims_path
        if sub.single_file or path is None:
            yield self.skip(
                "no submission.json (reported by PG601)" if not sub.single_file else "a single script"
            )
            return
        claims = claims_of(ctx)
        if claims.problem:
            line = 0
            m = re.search(r"line (\d+)", claims.problem)
            if m:
                line = int(m[1])
            text = (sub.read_text(path) or "").splitlines()
            snippet = text[line - 1].strip() if 0 < line <= len(text) else ""
            yield self.finding(Verdict.FAIL, claims.problem, [Location(path, line, snippet=snippet[:240])])
            return
        data = claims.data
        out: list[Finding] = []

        def at(key: str) -> list[Location]:
            line = claims.line_of(f'"{key}"')
            text = claims.raw_text.splitlines()
            return [Location(path, line, snippet=text[line - 1].strip()[:240] if line else "")]  # type: ignore[arg-type]

        bpb_key = next((k for k in ("val_bpb", "mean_val_bpb") if k in data), None)
        if bpb_key is None:
            out.append(
                self.finding(
                    Verdict.FAIL,
                    "no val_bpb (or mean_val_bpb): the submission claims no score",
                    [Location(path)],
                )
            )
        elif isinstance(data[bpb_key], str) and number(data[bpb_key]) is not None:
            # the claim is readable (and cross-checked as that number); only its JSON type is off
            out.append(
                self.finding(
                    Verdict.WARN,
                    f"{bpb_key} is the string {json.dumps(data[bpb_key])[:60]}: write it as a JSON number",
                    at(bpb_key),
                    severity=Severity.LOW,
                )
            )
        elif isinstance(data[bpb_key], bool) or not isinstance(data[bpb_key], (int, float)):
            out.append(
                self.finding(
                    Verdict.FAIL, f"{bpb_key} is {json.dumps(data[bpb_key])[:60]}, not a number", at(bpb_key)
                )
            )
        elif not 0.0 < data[bpb_key] < 10.0:  # compared as is: float() of a 400-digit integer overflows
            out.append(
                self.finding(
                    Verdict.WARN,
                    f"{bpb_key} = {str(data[bpb_key])[:40]} is not a plausible bits-per-byte",
                    at(bpb_key),
                    severity=Severity.MEDIUM,
                )
            )
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            out.append(
                self.finding(
                    Verdict.WARN, f"missing {', '.join(missing)}", [Location(path)], severity=Severity.MEDIUM
                )
            )
        for key in ("author", "github_id", "name"):
            if key in data and not isinstance(data[key], str):
                out.append(
                    self.finding(
                        Verdict.WARN,
                        f"{key} should be a string, not {type(data[key]).__name__}",
                        at(key),
                        severity=Severity.LOW,
                    )
                )
        if isinstance(data.get("date"), str) and not re.match(r"^\d{4}-\d{2}-\d{2}", data["date"]):
            out.append(
                self.finding(
                    Verdict.WARN,
                    f"date {data['date']!r} is not YYYY-MM-DD or ISO 8601",
                    at("date"),
                    severity=Severity.LOW,
                )
            )
        for key in ("bytes_total", "bytes_code", "artifact_bytes"):
            v = data.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                out.append(
                    self.finding(
                        Verdict.WARN,
                        f"{key} should be an integer byte count, not {v!r}",
                        at(key),
                        severity=Severity.LOW,
                    )
                )
        if "val_loss" in data and data["val_loss"] is not None and number(data["val_loss"]) is None:
            out.append(
                self.finding(
                    Verdict.WARN,
                    f"val_loss {data['val_loss']!r} is not a number",
                    at("val_loss"),
                    severity=Severity.LOW,
                )
            )
        seeds = data.get("seeds")
        if seeds is not None and not isinstance(seeds, (list, dict)):
            out.append(
                self.finding(
                    Verdict.WARN,
                    f"seeds should be a list or an object, not {seeds!r}",
                    at("seeds"),
                    severity=Severity.LOW,
                )
            )
        results = data.get("seed_results")
        if results is not None:
            if not isinstance(results, dict):
                out.append(
                    self.finding(
                        Verdict.WARN,
                        "seed_results should map seed -> {val_bpb, ...}",
                        at("seed_results"),
                        severity=Severity.LOW,
                    )
                )
            else:
                for seed, block in results.items():
                    bpb = block.get("val_bpb") if isinstance(block, dict) else None
                    if (
                        not isinstance(block, dict)
                        or isinstance(bpb, bool)
                        or not isinstance(bpb, (int, float))
                    ):
                        out.append(
                            self.finding(
                                Verdict.WARN,
                                f"seed_results[{seed!r}] has no numeric val_bpb",
                                at(str(seed)),
                                severity=Severity.LOW,
                            )
                        )
        yield from out
        if not out:
            yield self.finding(Verdict.PASS, f"{PurePosixPath(path).name} parses with the required keys")
