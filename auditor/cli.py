"""Command line: `pgolf-audit PATH`, plus `rules`, `explain`, `rescore`, `corpus`, `reference`.

The CLI wires the stages and owns exit codes (auditor.exitcodes). User-caused errors are one-line messages with
exit 2; our own bugs show a traceback only with --debug.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from auditor import RULESET_VERSION, __version__
from auditor.errors import InputError, UsageError
from auditor.exitcodes import ERROR

FORMATS = ("text", "json", "sarif", "markdown")
SUBCOMMANDS = (
    "audit",
    "rules",
    "explain",
    "rescore",
    "corpus",
    "sweep",
    "scan",
    "reference",
    "bot",
    "verify",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 already; keep the message short and ours
        raise UsageError(f"{self.prog}: {message}")


def add_text_flags(p: argparse.ArgumentParser) -> None:
    """The terminal report's detail (text format only; exit codes are the same whatever is shown)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "-v", "--verbose", action="store_true", help="also paths, rulings, per-rule table and notes"
    )
    g.add_argument("-q", "--quiet", action="store_true", help="the summary line only (for CI)")
    p.add_argument("--show-passing", action="store_true", help="the per-rule table, passing rules included")
    p.add_argument("--statistics", action="store_true", help="count the FAIL/WARN findings per rule")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pgolf-audit", description="Audit Parameter Golf submissions for rule compliance.")
    p.add_argument(
        "--version", action="version", version=f"pgolf-audit {__version__} (rules {RULESET_VERSION})"
    )
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    a = sub.add_parser("audit", help="audit a record folder, a .py file, or a git object (default command)")
    a.add_argument("path", nargs="?", help="record folder or .py file (omit with --git-dir/--rev/--path)")
    a.add_argument(
        "--git-dir", help="a git repository (bare or not) to read blobs from; nothing is checked out"
    )
    a.add_argument("--rev", help="commit, branch or ref (e.g. refs/pull/1234/head)")
    a.add_argument(
        "--path", dest="git_path", help="folder or file inside --rev, e.g. records/track_10min_16mb/X"
    )
    a.add_argument("--format", "-f", choices=FORMATS, default="text")
    a.add_argument("--output", "-o", help="write the report here instead of stdout")
    a.add_argument("--strict", action="store_true", help="WARN counts as failure (exit 3)")
    a.add_argument("--waivers", help="maintainer-side waiver TOML (rule id + path + fingerprint + reason)")
    a.add_argument("--rules", help="comma-separated rule ids, names or categories to run (default: all)")
    a.add_argument("--skip-rules", help="comma-separated rule ids or names not to run")
    a.add_argument("--reference", help="previous record folder, for significance tests")
    a.add_argument("--reference-bpb", help="comma-separated per-seed val_loss (nats) of the previous record")
    a.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    a.add_argument("--debug", action="store_true", help="show tracebacks for internal errors")
    add_text_flags(a)

    sub.add_parser("rules", help="list all rules").add_argument(
        "--format", choices=("text", "json"), default="text"
    )
    e = sub.add_parser("explain", help="print one rule with its basis and examples")
    e.add_argument("rule", help="rule id (PG101) or name")

    r = sub.add_parser("rescore", help="per-seed table from the logs (score, loss, tokens, times, bytes)")
    r.add_argument("path", nargs="?")
    r.add_argument("--git-dir")
    r.add_argument("--rev")
    r.add_argument("--path", dest="git_path")
    r.add_argument("--format", "-f", choices=("text", "csv", "json"), default="text")
    r.add_argument("--output", "-o")

    c = sub.add_parser("corpus", help="evaluate the rules on a labelled corpus (confusion table per rule)")
    c.add_argument("labels", help="labels TSV (id, pr, verdict, rules, repo, commit, path, ...)")
    c.add_argument("--git-dir", required=True, help="local clone of the labelled repository")
    c.add_argument("--format", "-f", choices=("text", "json"), default="text")
    c.add_argument("--output", "-o")
    c.add_argument(
        "--jobs", "-j", type=int, default=0, help="worker processes for a review table (default: CPUs)"
    )

    sw = sub.add_parser("sweep", help="audit every record folder under a tree at a revision; one line each")
    sw.add_argument("--git-dir", required=True)
    sw.add_argument("--rev", default="HEAD")
    sw.add_argument("--root", default="records", help="folder holding <track>/<record> folders")
    sw.add_argument("--rules", help="comma-separated rule ids, names or categories (default: all)")
    sw.add_argument("--format", "-f", choices=("text", "json"), default="text")
    sw.add_argument("--output", "-o")

    sc = sub.add_parser(
        "scan", help="audit the record folders every refs/pull/*/head adds or changes (JSON lines)"
    )
    sc.add_argument("--git-dir", required=True, help="repository with refs/pull/N/head refs (bare is fine)")
    sc.add_argument("--prs", help="PR numbers and ranges, e.g. 100-200,1517 (default: every PR head)")
    sc.add_argument("--jobs", "-j", type=int, default=0, help="worker processes (default: CPUs)")
    sc.add_argument("--output", "-o", required=True, help="JSON lines; an existing file is resumed")
    sc.add_argument("--html", help="also write a static dashboard (one HTML file, no network)")
    sc.add_argument("--base", help="main branch to diff against (default: refs/heads/main, else HEAD)")
    sc.add_argument("--rules", help="comma-separated rule ids, names or categories (default: all)")
    sc.add_argument("--timeout", type=float, default=300.0, help="CPU seconds per distinct folder (0: none)")

    b = sub.add_parser("bot", help="audit the record folders a PR changes and upsert one sticky PR comment")
    b.add_argument(
        "--git-dir", required=True, help="repository holding both revisions (PR files are never checked out)"
    )
    b.add_argument("--base", required=True, help="base revision (e.g. origin/main)")
    b.add_argument("--head", required=True, help="PR head revision (e.g. refs/pull/123/head)")
    b.add_argument("--repo", help="owner/name for the GitHub API (with --pr; token from GITHUB_TOKEN)")
    b.add_argument("--pr", type=int, help="pull request number")
    b.add_argument("--dry-run", action="store_true", help="print the comment instead of posting it")
    b.add_argument("--output", "-o", help="also write the comment body here")
    b.add_argument("--sarif", help="also write one SARIF file for code scanning (repository-relative paths)")
    b.add_argument("--strict", action="store_true")

    from auditor.harness.cli import add_verify_parser

    add_verify_parser(sub)

    ref = sub.add_parser("reference", help="reference model: train | eval | tokenize | bench")
    ref.add_argument("args", nargs=argparse.REMAINDER)
    return p


def _tsv_header(path: Path) -> list[str]:
    """First line of a TSV, split; an unreadable file is left to the reader, which says why."""
    try:
        with path.open(encoding="utf-8") as fh:
            return fh.readline().rstrip("\r\n").split("\t")
    except (OSError, UnicodeDecodeError):
        return []


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] not in SUBCOMMANDS and not args_list[0].startswith("-"):
        args_list.insert(0, "audit")
    elif args_list and args_list[0].startswith("--") and args_list[0] not in ("--help", "--version", "-h"):
        args_list.insert(0, "audit")
    if args_list and args_list[0] == "reference":
        # Everything after `reference` belongs to the reference model's own CLI (including --help).
        from reference_model.cli import main as reference_main

        return reference_main(args_list[1:])
    debug = "--debug" in args_list
    try:
        parser = build_parser()
        if not args_list:
            parser.print_help(sys.stderr)
            return ERROR
        args = parser.parse_args(args_list)
        return _dispatch(args)
    except InputError as exc:
        print(f"pgolf-audit: error: {exc}", file=sys.stderr)
        return ERROR
    except KeyboardInterrupt:
        print("pgolf-audit: interrupted", file=sys.stderr)
        return ERROR
    except Exception as exc:  # our bug: short message unless --debug
        if debug:
            raise
        print(
            f"pgolf-audit: internal error: {type(exc).__name__}: {exc} (rerun with --debug)", file=sys.stderr
        )
        return ERROR


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "rules":
        from auditor.commands import list_rules

        return list_rules(args.format)
    if args.command == "explain":
        from auditor.commands import explain_rule

        return explain_rule(args.rule)
    if args.command == "audit":
        from auditor.commands import run_audit

        return run_audit(args)
    if args.command == "rescore":
        from auditor.commands import run_rescore

        return run_rescore(args)
    if args.command == "corpus":
        from auditor.corpus import run_corpus
        from auditor.reviews import is_review_table, run_reviews

        header = _tsv_header(Path(args.labels))
        if is_review_table(header):
            return run_reviews(Path(args.labels), Path(args.git_dir), args.format, args.output, args.jobs)
        return run_corpus(Path(args.labels), Path(args.git_dir), args.format, args.output)
    if args.command == "sweep":
        from auditor.sweep import run_sweep

        rules = args.rules.split(",") if args.rules else None
        return run_sweep(args.git_dir, args.rev, args.root, rules, args.format, args.output)
    if args.command == "scan":
        from auditor.scan import run_scan

        rules = args.rules.split(",") if args.rules else None
        return run_scan(
            args.git_dir, args.output, args.prs, args.jobs, args.html, args.base, rules, args.timeout
        )
    if args.command == "bot":
        from auditor.bot import run_bot

        return run_bot(
            args.git_dir,
            args.base,
            args.head,
            args.repo,
            args.pr,
            args.dry_run,
            args.output,
            args.strict,
            sarif=args.sarif,
        )
    if args.command == "verify":
        from auditor.harness.cli import run_verify

        return run_verify(args)
    if args.command == "reference":
        from reference_model.cli import main as reference_main

        return reference_main(args.args)
    raise UsageError("no command given")


if __name__ == "__main__":
    raise SystemExit(main())
