"""How the code counts bytes per token: the static side of the byte-denominator checks (rules.md §B.1, §B.4, §A.10).

The challenge's LUT: base bytes 0 for control/unknown/unused ids, 1 for byte-fallback ids, else the UTF-8 length of
the piece without its leading "▁"; plus one byte for a leading "▁" unless the previous token is a boundary. The rules
here find code that departs from it — byte-fallback pieces measured as text, the space counted twice, piece bytes of
case-transformed text without the byte sidecar, a LUT read from a side file — by structure, not by names
(auditor/evidence/byte_lut_code.py). The log side is rules/byte_denominator.py.
"""

from __future__ import annotations

from collections.abc import Iterable

from auditor.evidence.byte_lut_code import LutBuilder, analyse_byte_code
from auditor.evidence.byte_lut_files import check_lut_files
from auditor.facts import AuditContext
from auditor.findings import Basis, Confidence, Finding, Location, Severity, Verdict
from rules.base import Case, Rule

_GOOD_LUT = """
import numpy as np
def build_luts(sp, vocab_size):
    base = np.zeros(vocab_size, dtype=np.int16)
    space = np.zeros(vocab_size, dtype=np.bool_)
    for i in range(sp.vocab_size()):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        if sp.is_byte(i):
            base[i] = 1
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith("\u2581"):
            space[i] = True
            piece = piece[1:]
        base[i] = len(piece.encode("utf-8"))
    return base, space
"""

_NO_IS_BYTE = """
import numpy as np
def make_tables(tok, n):
    out = np.zeros(n, dtype=np.int16)
    lead = np.zeros(n, dtype=np.bool_)
    for t in range(tok.vocab_size()):
        if tok.is_control(t):
            continue
        s = tok.id_to_piece(t)
        if s.startswith("\u2581"):
            lead[t] = True
            s = s[1:]
        out[t] = len(s.encode("utf-8"))
    return out, lead
"""

_DOUBLE_SPACE = """
import numpy as np
def tables(m, n):
    b = np.zeros(n, dtype=np.int16)
    sp_flag = np.zeros(n, dtype=np.bool_)
    for k in range(m.vocab_size()):
        if m.is_byte(k):
            b[k] = 1
            continue
        w = m.id_to_piece(k)
        sp_flag[k] = w.startswith("\u2581")
        b[k] = len(w.encode("utf-8"))
    return b, sp_flag
"""

_PLUS_ONE = """
import torch
def luts(sp, vocab_size, device):
    base = torch.zeros(vocab_size, dtype=torch.float32, device=device)
    lead = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    for i in range(vocab_size):
        if sp.is_byte(i):
            base[i] = 1
            continue
        p = sp.id_to_piece(i)
        base[i] = len(p.encode("utf-8"))
        if p.startswith("\u2581"):
            lead[i] = True
            base[i] = len(p[1:].encode("utf-8")) + 1
    return base, lead
"""

_CASEOPS_NO_SIDECAR = (
    """
import os
TOKENIZER = os.environ.get("TOKENIZER_PATH", "./tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model")
VAL = os.environ.get("VAL_FILES", "./data/fineweb10B_sp8192_caseops/fineweb_val_*.bin")
"""
    + _GOOD_LUT
)

_CASEOPS_SIDECAR = (
    _CASEOPS_NO_SIDECAR
    + """
VAL_BYTES = os.environ.get("VAL_BYTES_FILES", "./data/fineweb10B_sp8192_caseops/fineweb_val_bytes_*.bin")
"""
)

_SIDE_FILE = """
import numpy as np
def load_luts(path):
    with np.load(path, allow_pickle=False) as meta:
        return meta["base_bytes"], meta["has_leading_space"], meta["is_boundary_token"]
"""

_SCYLLA_BASIS = Basis(
    ref="Community review of the Scylla records (MatoTeziTanka, PR #1184 lineage); commit 6c808fcf1",
    date="2026-04-26",
    quote="Remove invalid Scylla record",
    section="A.10",
)
_README_TOKENIZER = Basis(
    ref="openai/parameter-golf README (Submission Process, rule 2); baseline train_gpt.py build_sentencepiece_luts",
    date="2026-03-18",
    quote="Submissions that edit the tokenizer will be examined much more carefully, since bugs may unjustly "
    "improve your score.",
    section="B.1",
)


def _builders(ctx: AuditContext) -> list[LutBuilder]:
    return analyse_byte_code(ctx).builders


def _loc(b: LutBuilder) -> Location:
    return b.unit.location(b.length_calls[0]) if b.length_calls else b.unit.location(b.scope)


class ByteFallbackCountedAsText(Rule):
    id = "PG711"
    name = "byte-fallback-counted-as-piece-text"
    title = "Byte-fallback tokens measured by their piece text instead of as one byte"
    category = "byte_denominator"
    severity = Severity.HIGH
    confidence = Confidence.MEDIUM
    rationale = (
        'A byte-fallback id stands for one source byte, but its piece is the text "<0xC3>" (6 UTF-8 bytes) or, '
        "decoded alone, U+FFFD (3 bytes). A byte LUT built from len(piece.encode()) without a byte-fallback branch "
        "(sp.is_byte) over-counts every such token and deflates BPB; the Scylla record was removed for exactly this "
        "(27 byte tokens at 3 bytes, +4.13% denominator)."
    )
    basis = _SCYLLA_BASIS
    valid = (Case(code=_GOOD_LUT, verdict=Verdict.PASS),)
    invalid = (Case(code=_NO_IS_BYTE, verdict=Verdict.FAIL, line=12),)

    def check(self, ctx: AuditContext) -> Iterable[Finding]:
        builders = _builders(ctx)
        if not builders:
            yield self.skip("no byte LUT built from tokenizer pieces in the code")
            return
        for b in builders:
            if b.byte_tests:
                yield self.finding(
                    Verdict.PASS,
                    f"`{b.name}` special-cases byte-fallback ids before measuring piece text",
                    [_loc(b)],
                )
            else:
                yield self.finding(
                    Verdict.FAIL,
                    f"`{b.name}` measures every piece with len(<piece>.encode()) and never tests for byte-fallback "
                    'ids (no is_byte / "<0x" branch): each byte-fallback token is charged 6 bytes ("<0xNN>") or '
                    "3 (U+FFFD) instead of the 1 source byte it encodes, inflating the denominator",
                    [_loc(b)],
                    related=[b.unit.location(c) for c in b.piece_calls[:3]],
                )


class LeadingSpaceCountedTwice(Rule):
    id = "PG712"
    name = "leading-space-counted-twice"
    title = 'The leading "▁" is counted in the piece bytes and again as a space'
    category = "byte_denominator"
    severity = Severity.HIGH
    confidence = Confidence.MEDIUM
    rationale = (
        'SentencePiece marks a word-initial space with "▁" (U+2581, 3 bytes in UTF-8). The challenge\'s LUT strips '
        'it from the piece and charges one byte through has_leading_space. Measuring the piece with its "▁" '
        "while also adding the leading-space byte (or measuring it unstripped with no leading-space table at all) "
        "charges 3-4 bytes for one space and deflates BPB."
    )
    basis = _README_TOKENIZER
    valid = (Case(code=_GOOD_LUT, verdict=Verdict.PASS),)
    invalid = (
        Case(code=_DOUBLE_SPACE, verdict=Verdict.FAIL, line=11),
        Case(
            code=_PLUS_ONE,
            verdict=Verdict.FAIL,
            line=13,
            note="the space added by hand and again by the eval",
        ),
    )

    def check(self, ctx: AuditContext) -> Iterable[Finding]:
        builders = [b for b in _builders(ctx) if b.measures_raw_piece]
        if not builders:
            yield self.skip("no byte LUT that measures raw tokenizer pieces (id_to_piece) in the code")
            return
        for b in builders:
            if b.leading_space_tests and b.space_to_blank and not b.strips:
                yield self.finding(
                    Verdict.FAIL,
                    f'`{b.name}` replaces "▁" by a space in the measured piece and '
                    "also flags a leading space: the space is counted twice",
                    [_loc(b)],
                    related=[b.unit.location(n) for n in b.space_to_blank[:2]],
                )
            elif b.leading_space_tests and b.plus_constant:
                yield self.finding(
                    Verdict.FAIL,
                    f"`{b.name}` adds a byte by hand to the stripped piece length (`len(...) + 1`) and also flags the "
                    "leading space, which the eval charges again (has_leading_space): the space is counted twice",
                    [b.unit.location(b.plus_constant[0])],
                    related=[b.unit.location(n) for n in b.leading_space_tests[:2]],
                )
            elif b.leading_space_tests and not b.strips:
                yield self.finding(
                    Verdict.FAIL,
                    f'`{b.name}` flags pieces that start with "▁" (the leading-space byte) but measures the piece '
                    "without stripping it: the space is charged 3 bytes in the base count plus 1 more",
                    [_loc(b)],
                    related=[b.unit.location(n) for n in b.leading_space_tests[:2]],
                )
            elif not b.leading_space_tests and not b.strips and not b.mentions_leading_space:
                yield self.finding(
                    Verdict.FAIL,
                    f'`{b.name}` measures id_to_piece text as is: a word-initial "▁" is charged as its 3-byte '
                    "UTF-8 encoding instead of one space byte",
                    [_loc(b)],
                    confidence=Confidence.LOW,
                )
            else:
                yield self.finding(
                    Verdict.PASS, f'`{b.name}` strips the leading "▁" before measuring pieces', [_loc(b)]
                )


class CaseOpsPieceBytes(Rule):
    id = "PG713"
    name = "caseops-piece-bytes-without-sidecar"
    title = "Case-transformed (CaseOps) text scored on tokenizer piece bytes instead of the byte sidecar"
    category = "byte_denominator"
    severity = Severity.CRITICAL
    confidence = Confidence.MEDIUM
    rationale = (
        "CaseOps tokenizes a transformed text whose case markers are private-use characters (3 UTF-8 bytes each) "
        "and whose letters are lowercased. Its piece bytes are not the original text's bytes; the accepted design "
        "charges each token the original bytes from a per-token sidecar (fineweb_val_bytes_*.bin). Without it the "
        "denominator is ≈164.6 MB instead of ≈151.07 MB and BPB is ≈8.9% too low."
    )
    basis = Basis(
        ref="openai/parameter-golf README leaderboard, PR #1729 row (romeerp); CaseOps submission errata",
        date="2026-04-19",
        quote="lossless CaseOps bijective case transform with validation byte sidecars",
        section="B.4",
    )
    valid = (
        Case(code=_CASEOPS_SIDECAR, verdict=Verdict.PASS),
        Case(code=_GOOD_LUT, verdict=Verdict.SKIP, note="not a CaseOps submission"),
    )
    invalid = (Case(code=_CASEOPS_NO_SIDECAR, verdict=Verdict.FAIL, line=19),)

    def check(self, ctx: AuditContext) -> Iterable[Finding]:
        facts = analyse_byte_code(ctx)
        if not facts.caseops_marks:
            yield self.skip("no CaseOps (case-transformed) data or tokenizer referenced in the code")
            return
        unit, node, text = facts.caseops_marks[0]
        mark = unit.location(node)
        if facts.sidecar_marks:
            su, sn, stext = facts.sidecar_marks[0]
            yield self.finding(
                Verdict.PASS,
                f"CaseOps data with byte-sidecar support (`{stext}`); a run that used it "
                "logs `val_bpb:byte_sidecar:enabled` (PG701 checks the denominator)",
                [su.location(sn)],
                related=[mark],
            )
            return
        if not facts.builders:
            yield self.finding(
                Verdict.WARN,
                f"CaseOps data (`{text}`) but neither a byte sidecar nor a recognisable "
                "byte LUT: the byte denominator cannot be verified from the code",
                [mark],
                confidence=Confidence.LOW,
            )
            return
        b = facts.builders[0]
        yield self.finding(
            Verdict.FAIL,
            f"the code uses CaseOps data (`{text}`) and counts bytes from tokenizer pieces in `{b.name}`, with no "
            "per-token byte sidecar: case markers count 3 bytes each and the denominator is the transformed "
            "text's, not the original's (≈164.6 MB instead of ≈151.07 MB)",
            [_loc(b)],
            related=[mark],
        )


class ByteLutFromSideFile(Rule):
    id = "PG714"
    name = "byte-lut-from-side-file"
    title = "The byte LUT is loaded from a data file instead of being derived from the tokenizer"
    category = "byte_denominator"
    severity = Severity.HIGH
    confidence = Confidence.MEDIUM
    rationale = (
        "Byte counts read from a shipped file (npz/json metadata) are whatever the file says. When the tokenizer "
        "ships with it the entries are checked here (a SentencePiece model: rebuilt LUT compared entry by entry; "
        "a TokenMonster vocab: byte-fallback tokens must be 1 byte); otherwise the LUT cannot be verified "
        "statically and the logs' implied denominator (PG701) is the remaining evidence."
    )
    basis = _SCYLLA_BASIS
    valid = (Case(code=_GOOD_LUT, verdict=Verdict.SKIP, note="LUT derived from the tokenizer"),)
    invalid = (Case(code=_SIDE_FILE, verdict=Verdict.WARN, line=3),)

    def check(self, ctx: AuditContext) -> Iterable[Finding]:
        side = analyse_byte_code(ctx).side_files
        if not side:
            yield self.skip("no byte LUT read from a data file")
            return
        checks = check_lut_files(ctx.submission)
        wrong = [c for c in checks if c.status == "wrong"]
        first = side[0]
        where = first.unit.location(first.call)
        keys = ", ".join(sorted({k for s in side for k in s.keys}))
        if wrong:
            for c in wrong:
                yield self.finding(
                    Verdict.FAIL,
                    f"the byte LUT ({keys}) is loaded from a data file; {c.message}",
                    [where],
                    related=[Location(path=c.path)],
                    confidence=Confidence.HIGH,
                    data={
                        "file": c.path,
                        "tokenizer": c.tokenizer,
                        "bad_ids": c.bad_ids,
                        "bad_values": c.bad_values,
                    },
                )
            return
        agrees = [c for c in checks if c.status == "agrees"]
        if agrees:
            yield self.finding(
                Verdict.PASS,
                f"the byte LUT ({keys}) is loaded from a data file; " + "; ".join(c.message for c in agrees),
                [where],
                confidence=Confidence.MEDIUM,
            )
            return
        why = "; ".join(c.message for c in checks) or "the file is not in the submission folder"
        yield self.finding(
            Verdict.WARN,
            f"the byte LUT ({keys}) is loaded from a data file and cannot be verified "
            f"statically ({why}); rely on the implied denominator of the logs (PG701)",
            [where],
        )
