"""Implementations of the CLI subcommands (argument objects in, exit code out)."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from auditor.errors import InputError, UsageError
from auditor.exitcodes import OK, exit_code
from auditor.submission import Submission, load_git, load_path
from rules import all_rules, get_rule

if TYPE_CHECKING:
    from auditor.render.text import TextOptions


def load_submission(args: argparse.Namespace) -> Submission:
    git_dir = getattr(args, "git_dir", None)
    if git_dir:
        if not (args.rev and args.git_path):
            raise UsageError("--git-dir needs --rev and --path")
        return load_git(git_dir, args.rev, args.git_path)
    if not args.path:
        raise UsageError("give a record folder or .py file, or --git-dir/--rev/--path")
    return load_path(args.path)


def _emit(text: str, output: str | None) -> None:
    if output:
        try:
            Path(output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot write {output}: {exc.strerror}") from exc
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def run_audit(args: argparse.Namespace) -> int:
    from auditor.engine import audit, select_rules
    from auditor.render import render

    sub = load_submission(args)
    rules = select_rules(
        args.rules.split(",") if args.rules else None,
        args.skip_rules.split(",") if args.skip_rules else None,
    )
    if not rules:
        raise UsageError(f"--rules {args.rules!r} matches no rule")
    waivers = None
    if args.waivers:
        from auditor.waivers import load_waivers

        waivers = load_waivers(Path(args.waivers))
    sub.options.reference = args.reference
    sub.options.reference_values = args.reference_bpb
    report = audit(sub, rules, waivers=waivers, debug=args.debug)
    color = args.color == "always" or (args.color == "auto" and not args.output and sys.stdout.isatty())
    _emit(render(report, args.format, color=color, text_options=text_options(args)), args.output)
    return exit_code(report, strict=args.strict)


def text_options(args: argparse.Namespace) -> TextOptions:
    from auditor.render.text import TextOptions

    return TextOptions(
        verbose=bool(getattr(args, "verbose", False)),
        statistics=bool(getattr(args, "statistics", False)),
        quiet=bool(getattr(args, "quiet", False)),
        show_passing=bool(getattr(args, "show_passing", False)),
    )


def run_rescore(args: argparse.Namespace) -> int:
    from auditor.evidence.table import seed_table

    sub = load_submission(args)
    table = seed_table(sub)
    if args.format == "csv":
        text = table.to_csv()
    elif args.format == "json":
        text = json.dumps(table.to_dict(), indent=2)
    else:
        text = table.to_text()
    _emit(text, args.output)
    return OK


def list_rules(fmt: str) -> int:
    rules = all_rules()
    if fmt == "json":
        rows = [
            {
                "id": r.id,
                "name": r.name,
                "title": r.title,
                "category": r.category,
                "severity": r.severity.value,
                "evidence_level": r.evidence_level.value,
                "basis": r.basis.ref,
                "date": r.basis.date,
            }
            for r in rules
        ]
        print(json.dumps(rows, indent=2))
        return OK
    width = max((len(r.name) for r in rules), default=10)
    for r in rules:
        print(f"{r.id}  {r.name:<{width}}  {r.category:<22} {r.title}")
    return OK


def explain_rule(rule_id: str) -> int:
    rule = get_rule(rule_id)
    if rule is None:
        raise UsageError(f"unknown rule {rule_id!r}; `pgolf-audit rules` lists them")
    b = rule.basis
    out = [
        f"{rule.id} {rule.name}: {rule.title}",
        f"category: {rule.category}   severity: {rule.severity.value}   evidence: {rule.evidence_level.value}",
        "",
        textwrap.fill(rule.rationale, 100),
        "",
        f"Basis: {b.ref} ({b.date}){' [rules.md ' + b.section + ']' if b.section else ''}",
        textwrap.fill(f"  \u201c{b.quote}\u201d", 100, subsequent_indent="   "),
    ]
    for label, cases in (("Invalid (flagged)", rule.invalid), ("Valid (not flagged)", rule.valid)):
        for i, case in enumerate(cases, 1):
            out += [
                "",
                f"--- {label} example {i}: expect {case.verdict.value}"
                + (f" at line {case.line}" if case.line else "")
                + (f" ({case.note})" if case.note else ""),
            ]
            for name, content in case.materialize().items():
                text = content.decode("utf-8", errors="replace")
                if len(case.materialize()) > 1 or name != "train_gpt.py":
                    out.append(f"# {name}")
                out += [f"    {line}" for line in text.splitlines()[:40]]
    print("\n".join(out))
    return OK
