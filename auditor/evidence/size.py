"""Artifact size under the three accounting conventions of rules.md §F.

1. ``shipped``: compressed model bytes + bytes of the shipped train_gpt.py (+ any file it execs as its code).
2. ``compressed``: compressed model bytes + the compressed-code size: the length of the wrapper
   ``import lzma as L,base64 as B\\nexec(L.decompress(B.b85decode("...")))`` around ``lzma(pyminify(code))``
   with the flags ``--no-rename-locals --no-hoist-literals --remove-literal-statements``. Taken from the log's
   ``Code size (compressed)`` line when the script printed one, else estimated here with python-minifier.
3. ``with_aux``: (2) + every other code file in the folder (auxiliary modules, kernels, data-prep scripts).

Which convention is *applied* decides the verdict: the compressed-code convention counts only when the script
itself applies it (it logs ``Code size (compressed)``) or the shipped train_gpt.py is itself packed; otherwise the
shipped bytes count (PR #1809: a log total of 16,024,793 with raw code was ruled over the cap).

Nothing here executes submission code: minification parses and re-prints the text.
"""

from __future__ import annotations

import base64
import lzma
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from auditor.constants import ARTIFACT_CAP_BYTES
from auditor.evidence.claims import claims_of
from auditor.evidence.logs import ParsedLog, logs_of

if TYPE_CHECKING:
    from auditor.facts import AuditContext

CODE_FILE_SUFFIXES = {
    ".py",
    ".pyx",
    ".c",
    ".cc",
    ".cpp",
    ".cu",
    ".cuh",
    ".h",
    ".hpp",
    ".sh",
    ".js",
    ".rs",
    ".go",
}
MINIFY_FLAGS = "--no-rename-locals --no-hoist-literals --remove-literal-statements"
WRAPPER_HEAD = b'import lzma as L,base64 as B\nexec(L.decompress(B.b85decode("'
WRAPPER_TAIL = b'")))\n'


def compressed_code_size(code: str) -> tuple[int | None, str]:
    """(bytes of the lzma+b85 wrapper around the minified code, how it was obtained); None when impossible."""
    try:
        import python_minifier
    except ImportError:
        return None, "python-minifier is not installed"
    try:
        minified = python_minifier.minify(
            code, rename_locals=False, hoist_literals=False, remove_literal_statements=True
        )
    except Exception as exc:  # the minifier rejects code it cannot parse
        return None, f"python-minifier could not minify the code ({type(exc).__name__})"
    encoded = base64.b85encode(lzma.compress(minified.encode("utf-8")))
    return len(WRAPPER_HEAD) + len(encoded) + len(
        WRAPPER_TAIL
    ), f"estimated: pyminify {MINIFY_FLAGS} + lzma + b85"


@dataclass
class SizeAccount:
    """One run's (one log's, or the claims') artifact size under the three conventions."""

    source: str  # log path or "submission.json"
    line: int  # the log line the model/total came from (0 for claims)
    model_bytes: int
    model_from: str  # how model_bytes was obtained
    shipped_code: int
    compressed_code: int | None
    compressed_from: str
    aux_code: int
    aux_files: list[str] = field(default_factory=list)
    exec_files: list[str] = field(default_factory=list)
    applied: str = "shipped"  # shipped | compressed
    logged_total: int | None = None
    logged_total_line: int = 0

    @property
    def shipped(self) -> int:
        return self.model_bytes + self.shipped_code

    @property
    def compressed(self) -> int | None:
        return None if self.compressed_code is None else self.model_bytes + self.compressed_code

    @property
    def with_aux(self) -> int | None:
        base = self.compressed if self.compressed is not None else self.shipped
        return base + self.aux_code

    @property
    def accepted(self) -> int:
        if self.applied == "compressed" and self.compressed is not None:
            return self.compressed
        return self.shipped

    def table(self) -> str:
        cap = ARTIFACT_CAP_BYTES

        def row(name: str, total: int | None, how: str) -> str:
            if total is None:
                return f"  {name:<12} {'n/a':>12}   {how}"
            margin = cap - total
            state = f"{margin:,} under" if margin >= 0 else f"{-margin:,} OVER"
            return f"  {name:<12} {total:>12,}   {state}; {how}"

        lines = [
            f"model bytes {self.model_bytes:,} ({self.model_from}); cap {cap:,} (decimal)",
            row(
                "(1) shipped",
                self.shipped,
                f"+ shipped code {self.shipped_code:,} B"
                + (f" incl. exec'd {', '.join(self.exec_files)}" if self.exec_files else ""),
            ),
            row(
                "(2) compr.",
                self.compressed,
                f"+ compressed code {self.compressed_code if self.compressed_code is not None else 'n/a'} B ({self.compressed_from})",
            ),
            row(
                "(3) +aux",
                self.with_aux,
                f"+ auxiliary code {self.aux_code:,} B"
                + (
                    f" ({', '.join(self.aux_files[:6])}{'...' if len(self.aux_files) > 6 else ''})"
                    if self.aux_files
                    else ""
                ),
            ),
            f"applied convention: {self.applied}",
        ]
        if self.logged_total is not None:
            where = f"line {self.logged_total_line}" if self.logged_total_line else self.source
            lines.append(f"total stated by the submission: {self.logged_total:,} ({where})")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "model_bytes": self.model_bytes,
            "model_from": self.model_from,
            "shipped": self.shipped,
            "compressed": self.compressed,
            "with_aux": self.with_aux,
            "applied": self.applied,
            "accepted": self.accepted,
            "logged_total": self.logged_total,
            "shipped_code": self.shipped_code,
            "compressed_code": self.compressed_code,
            "aux_code": self.aux_code,
        }


@dataclass
class CodeFacts:
    entry: str | None
    entry_bytes: int
    entry_packed: bool  # shipped train_gpt.py is an exec(...) wrapper
    exec_files: list[str]
    exec_bytes: int
    aux_files: list[str]
    aux_bytes: int
    code_text: str | None = field(default=None, repr=False)
    _estimate: tuple[int | None, str] | None = field(default=None, repr=False)

    def _estimated(self) -> tuple[int | None, str]:
        # Computed on first use only: when every log prints its compressed size the ~1 s estimate is not needed.
        if self._estimate is None:
            est, how = compressed_code_size(self.code_text) if self.code_text else (None, "no readable code")
            if self.entry_packed and (est is None or est > self.entry_bytes):
                est, how = self.entry_bytes, "the shipped train_gpt.py is already packed"
            self._estimate = (est, how)
        return self._estimate

    @property
    def compressed_estimate(self) -> int | None:
        return self._estimated()[0]

    @property
    def compressed_how(self) -> str:
        return self._estimated()[1]


def code_facts(ctx: AuditContext) -> CodeFacts:
    """What counts as code in the folder, memoized per audit (the minifier estimate costs ~1 s on big scripts)."""
    return ctx.memo("size_code_facts", lambda: _code_facts(ctx))


def _code_facts(ctx: AuditContext) -> CodeFacts:
    sub = ctx.submission
    entry = sub.entry
    entry_bytes = sub.files[entry].size if entry else 0
    entry_text = sub.read_text(entry) if entry else None
    # Packed: the entry decodes its own payload (b85/lzma...). A layer read from another file is a loader shim.
    layers = [u.layer for u in ctx.units if u.path == entry and u.layer is not None]
    packed = any(not any(c.startswith("file:") for c in layer.codecs) for layer in layers)
    shim_targets = {c[len("file:") :] for layer in layers for c in layer.codecs if c.startswith("file:")}
    # A loader shim (`exec(open("train_gpt_decode.py").read())`) makes the named file the code that runs.
    exec_files: list[str] = sorted(
        p
        for p in sub.files
        if p != entry
        and (p in shim_targets or any(PurePosixPath(p).name == PurePosixPath(t).name for t in shim_targets))
    )
    if entry_text and "exec(" in entry_text:
        for p in sub.files:
            if (
                p != entry
                and p not in exec_files
                and PurePosixPath(p).suffix == ".py"
                and re.search(rf"[\"']{re.escape(PurePosixPath(p).name)}[\"']", entry_text)
            ):
                exec_files.append(p)
    exec_bytes = sum(sub.files[p].size for p in exec_files)
    aux = sorted(
        p
        for p, f in sub.files.items()
        if p != entry and p not in exec_files and PurePosixPath(p).suffix.lower() in CODE_FILE_SUFFIXES
    )
    aux_bytes = sum(sub.files[p].size for p in aux)
    # The code the compressed convention would wrap: the innermost decoded layer, or the exec'd file.
    code = None
    if exec_files:
        code = "\n".join(filter(None, (sub.read_text(p) for p in exec_files)))
    elif ctx.entry_unit is not None:
        code = ctx.entry_unit.text
    return CodeFacts(entry, entry_bytes, packed, exec_files, exec_bytes, aux, aux_bytes, code)


def account_for_log(log: ParsedLog, facts: CodeFacts) -> SizeAccount | None:
    """The three conventions for one run log; None when the log states no artifact or model size."""
    total = log.artifact_size
    model = log.model_size
    raw_code = log.code_size("uncompressed") or log.code_size("raw")
    logged_compressed = log.code_size("compressed")
    if model is not None:
        m_bytes, m_from, line = (
            model.bytes,
            f"log line {model.line_no}: {model.label} {model.codec}",
            model.line_no,
        )
    elif total is not None:
        code_in_total = logged_compressed or raw_code
        sub = code_in_total.bytes if code_in_total else facts.entry_bytes + facts.exec_bytes
        m_bytes = total.bytes - sub
        m_from = f"log line {total.line_no} total minus {sub:,} B of code"
        line = total.line_no
    else:
        return None
    applied = "compressed" if (logged_compressed is not None or facts.entry_packed) else "shipped"
    shipped_code = facts.entry_bytes + facts.exec_bytes
    if facts.entry is None and raw_code is not None:
        shipped_code = raw_code.bytes  # no train_gpt.py shipped: the code size the run logged is all we have
    if logged_compressed is not None:
        comp, comp_from = (
            logged_compressed.bytes,
            f"log line {logged_compressed.line_no}: Code size (compressed)",
        )
    elif m_bytes + shipped_code + facts.aux_bytes <= ARTIFACT_CAP_BYTES and (
        total is None or total.bytes <= ARTIFACT_CAP_BYTES
    ):
        # Every convention fits already; the ~1 s minifier estimate could not change anything.
        comp, comp_from = None, "not estimated: the shipped bytes already fit"
    else:
        comp, comp_from = facts.compressed_estimate, facts.compressed_how
    return SizeAccount(
        source=log.path,
        line=line,
        model_bytes=m_bytes,
        model_from=m_from,
        shipped_code=shipped_code,
        compressed_code=comp,
        compressed_from=comp_from,
        aux_code=facts.aux_bytes,
        aux_files=facts.aux_files,
        exec_files=facts.exec_files,
        applied=applied,
        logged_total=total.bytes if total else None,
        logged_total_line=total.line_no if total else 0,
    )


def account_from_claims(ctx: AuditContext, facts: CodeFacts) -> list[SizeAccount]:
    """Fallback when no log states a size: submission.json bytes_total / per-seed artifact_bytes."""
    claims = claims_of(ctx)
    code = claims.bytes_code if claims.bytes_code is not None else facts.entry_bytes + facts.exec_bytes
    totals: list[tuple[str, int]] = []
    for _, blocks in sorted(claims.seeds.items()):
        for b in blocks:
            if b.artifact_bytes is not None:
                totals.append((f"submission.json {b.source}.artifact_bytes", b.artifact_bytes))
    if not totals and claims.bytes_total is not None:
        totals.append(("submission.json bytes_total", claims.bytes_total))
    out = []
    for where, total in totals:
        out.append(
            SizeAccount(
                source="submission.json",
                line=0,
                model_bytes=total - code,
                model_from=f"{where} {total:,} minus {code:,} B of code",
                shipped_code=facts.entry_bytes + facts.exec_bytes,
                compressed_code=facts.compressed_estimate,
                compressed_from=facts.compressed_how,
                aux_code=facts.aux_bytes,
                aux_files=facts.aux_files,
                exec_files=facts.exec_files,
                applied="compressed" if facts.entry_packed else "shipped",
                logged_total=total,
            )
        )
    return out


def size_accounts(ctx: AuditContext) -> list[SizeAccount]:
    def compute() -> list[SizeAccount]:
        facts = code_facts(ctx)
        found = [a for a in (account_for_log(lg, facts) for lg in logs_of(ctx)) if a is not None]
        return found or account_from_claims(ctx, facts)

    return ctx.memo("size_accounts", compute)
