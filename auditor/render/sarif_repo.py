"""One SARIF file for GitHub code scanning from the reports of every record folder a pull request touches.

`auditor.render.sarif` writes one run per report with paths relative to the submission (`train_gpt.py`). Code
scanning needs something else: paths relative to the repository root (so the alert lands on the PR's diff), and one
run per tool and category per upload (GitHub rejects files with several runs of the same tool and category). This
module merges the runs, prefixes each path with the folder the report was read from, and maps findings in decoded
layers (`train_gpt.py#L1`, decoded coordinates) onto the shipped line that holds the packed blob, keeping the
decoded position in the result's properties.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from auditor.findings import Report, SubmissionIdentity
from auditor.render.sarif import to_sarif

_LAYER = re.compile(r"^(?P<file>.+?)#L(?P<line>\d+)")


def _repo_location(loc: dict[str, Any], folder: str) -> None:
    """Rewrite one SARIF location in place to a repository-relative path."""
    phys = loc.get("physicalLocation")
    if not phys:
        return
    art = phys.get("artifactLocation", {})
    uri = str(art.get("uri", ""))
    m = _LAYER.match(uri)
    if m:
        # Decoded coordinates mean nothing on the diff: point at the shipped line of the packed blob instead.
        decoded = phys.get("region")
        phys["region"] = {"startLine": int(m.group("line"))}
        props = loc.setdefault("properties", {})
        props["decodedLayer"] = uri
        if decoded:
            props["decodedRegion"] = decoded
        uri = m.group("file")
    art.pop("uriBaseId", None)
    art["uri"] = f"{folder}/{uri}" if folder and uri else (uri or folder)
    phys["artifactLocation"] = art


def _rewrite(result: dict[str, Any], folder: str) -> None:
    for loc in result.get("locations", []):
        _repo_location(loc, folder)
    for loc in result.get("relatedLocations", []):
        _repo_location(loc, folder)
    for flow in result.get("codeFlows", []):
        for thread in flow.get("threadFlows", []):
            for step in thread.get("locations", []):
                if "location" in step:
                    _repo_location(step["location"], folder)
    if not result.get("locations") and folder:
        # Code scanning drops results without a location; a folder-level finding (a missing file, a claim)
        # is anchored on the folder's submission.json or README.md by the caller's folder path.
        result["locations"] = [{"physicalLocation": {"artifactLocation": {"uri": folder}}}]


def combined_sarif(reports: list[Report]) -> dict[str, Any]:
    """One SARIF 2.1.0 log, one run: every report's gating FAIL/WARN results with repository-relative paths."""
    if not reports:
        # No record folder: an empty run still replaces the PR's previous alerts (they are fixed or gone).
        from auditor import RULESET_VERSION, __version__
        from auditor.engine import select_rules

        empty = Report(SubmissionIdentity(path="", entry=None), __version__, RULESET_VERSION)
        empty.rules_run = [(r.id, r.name, r.category) for r in select_rules(None)]
        doc = to_sarif(empty)
        doc["runs"][0].pop("originalUriBaseIds", None)
        doc["runs"][0]["properties"] = {"folders": []}
        return doc
    docs = [to_sarif(r) for r in reports]
    base = copy.deepcopy(docs[0])
    run = base["runs"][0]
    rules: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    results: list[dict[str, Any]] = []
    notifications: list[dict[str, Any]] = []
    folders: list[dict[str, Any]] = []
    for report, doc in zip(reports, docs, strict=True):
        src = doc["runs"][0]
        folder = (report.submission.git_path or "").strip("/")
        for rule in src["tool"]["driver"]["rules"]:
            if rule["id"] not in index:
                index[rule["id"]] = len(rules)
                rules.append(rule)
        for res in src["results"]:
            if res.get("level") not in ("error", "warning") or res.get("suppressions"):
                # Code scanning turns every result into an alert: passing rules, informational notes and
                # waived findings stay in the JSON report and the comment, not on the diff.
                continue
            res = copy.deepcopy(res)
            if res.get("ruleId") in index:
                res["ruleIndex"] = index[res["ruleId"]]
            _rewrite(res, folder)
            res.setdefault("properties", {})["folder"] = folder
            results.append(res)
        for inv in src.get("invocations", []):
            notifications += inv.get("toolExecutionNotifications", [])
        folders.append({"folder": folder, "overall": src["properties"]["overall"]})
    run["tool"]["driver"]["rules"] = rules
    run["results"] = results
    run.pop("originalUriBaseIds", None)
    run["invocations"] = [
        {"executionSuccessful": not notifications, "toolExecutionNotifications": notifications}
    ]
    run["properties"] = {"folders": folders}
    return base
