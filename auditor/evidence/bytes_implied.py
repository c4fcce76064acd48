"""The byte denominator a log implies, and whether it is the canonical one for its tokenizer family.

A score line prints val_loss (nats/token) and val_bpb (bits/byte) of the same evaluation, so

    bytes = tokens * val_loss / (val_bpb * ln 2)

recovers the denominator the run divided by (rules.md §0 "Implied-denominator method", §B.3). With 8 decimals it is
exact to a few bytes. Every lossless tokenizer must land on the UTF-8 size of the same 50k validation documents
(≈151.07–151.08 MB); each family's value for its canonical token count is in `auditor.constants.CANONICAL_EVALS`.
A different value means the run divided by something else — piece bytes of a case-transformed text (CaseOps
without its sidecar: 164,594,398), byte-fallback pieces counted as 3 bytes (Scylla), a double-counted space — and
the reported BPB is off by the ratio. Too few tokens means a truncated or foreign validation set.

Pure numbers in, verdict data out: the rule in rules/byte_denominator.py turns these into Findings.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from auditor.constants import (
    CANONICAL_EVALS,
    CASEOPS_CANONICAL_TRAIN_SHARDS,
    CASEOPS_LEAKY_VAL_TOKENS,
    DENOMINATOR_TAIL_TOLERANCE_BYTES,
    MAX_BYTES_PER_TOKEN_MARGIN,
    MAX_TRUNCATION_TAIL_TOKENS,
    PARTIAL_VAL_FRACTION,
    UNKNOWN_FAMILY_RELATIVE_TOLERANCE,
    VAL_TEXT_BYTES_MAX,
    VAL_TEXT_BYTES_MIN,
)

if TYPE_CHECKING:
    from auditor.evidence.logs import ParsedLog

LN2 = math.log(2.0)


@dataclass(frozen=True)
class CanonicalEval:
    family: str
    val_tokens: int
    denominator: int
    source: str

    @property
    def bytes_per_token(self) -> float:
        return self.denominator / self.val_tokens


def canonical_evals(family: str | None = None) -> list[CanonicalEval]:
    rows = [CanonicalEval(*row) for row in CANONICAL_EVALS]
    return [r for r in rows if family is None or r.family == family]


def canonical_token_counts() -> dict[int, str]:
    """val_tokens -> family, for recognising a family from its logged token count alone."""
    return {r.val_tokens: r.family for r in canonical_evals()}


# ---------------------------------------------------------------------------------------------------------------
def implied_bytes(tokens: int, val_loss: float, val_bpb: float) -> float:
    """The denominator behind a (val_loss, val_bpb) pair over `tokens` scored targets."""
    if tokens <= 0 or val_loss <= 0 or val_bpb <= 0:
        raise ValueError("tokens, val_loss and val_bpb must be positive")
    return tokens * val_loss / (val_bpb * LN2)


def implied_uncertainty(tokens: int, val_loss: float, val_bpb: float, decimals: int) -> float:
    """Worst-case error of `implied_bytes` from printing both values rounded to `decimals` places."""
    half_ulp = 0.5 * 10.0 ** (-decimals)
    rel = half_ulp / val_loss + half_ulp / val_bpb
    return implied_bytes(tokens, val_loss, val_bpb) * rel


def corrected_bpb(val_bpb: float, implied: float, canonical: float) -> float:
    """The BPB the same total loss gives over the canonical denominator."""
    return val_bpb * implied / canonical


# ---------------------------------------------------------------------------------------------------------------
@dataclass
class TokenizerFacts:
    """What a log says about its tokenizer and data (each with the 1-based line it came from)."""

    vocab_size: int | None = None
    tokenizer_path: str | None = None
    tokenizer_kind: str | None = None
    sidecar_enabled: bool = False
    sidecar_files: str | None = None  # a `val_bytes_files` hyperparameter (names the sidecar glob)
    caseops_enabled: bool | None = None
    data_paths: list[str] = field(default_factory=list)
    val_tokens: int | None = None
    train_shards: int | None = None
    lines: dict[str, int] = field(default_factory=dict)

    @property
    def mentions_caseops(self) -> bool:
        text = " ".join([self.tokenizer_path or "", *self.data_paths]).lower()
        return "caseops" in text or "lossless_caps" in text

    @property
    def doubled_datasets_path(self) -> str | None:
        for p in self.data_paths:
            if "datasets/datasets" in p:
                return p
        return None


_KV = r"[:=]\s*"
_FACT_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("sidecar", re.compile(r"^val_bpb:byte_sidecar:enabled\b")),
    ("tokenizer_path", re.compile(r"^\s*(?:val_bpb:enabled .*?)?tokenizer_path" + _KV + r"(?P<v>\S+)")),
    ("tokenizer_kind", re.compile(r"(?:^|\s)(?:tokenizer_kind=|tokenizer: kind=)(?P<v>\w+)")),
    ("vocab_size", re.compile(r"^\s*vocab_size" + _KV + r"(?P<v>\d+)")),
    ("tokenizer_vocab", re.compile(r"^tokenizer: .*\bvocab=(?P<v>\d+)")),
    ("caseops_enabled", re.compile(r"^\s*caseops_enabled" + _KV + r"(?P<v>\w+)")),
    ("sidecar_files", re.compile(r"^\s*val_bytes_files" + _KV + r"(?P<v>\S+)")),
    ("data_path", re.compile(r"^\s*(?:data_path|datasets_dir|train_files|val_files)" + _KV + r"(?P<v>\S+)")),
    ("data_path", re.compile(r"^(?:train_loader:dataset:|val_loader:shards pattern=)(?P<v>\S+)")),
    ("train_shards", re.compile(r"^(?:train_shards: ?|train_loader:dataset:\S+ train_shards:)(?P<v>\d+)")),
    (
        "val_tokens",
        re.compile(
            r"^(?:val_tokens: ?|val_loader:(?:shards pattern=\S+ | )tokens:|Validation tokens: )"
            r"(?P<v>\d[\d,]*)"
        ),
    ),
)


def tokenizer_facts(log: ParsedLog) -> TokenizerFacts:
    """Read tokenizer/data facts from a parsed log's own lines (never from its embedded source code)."""
    facts = TokenizerFacts(val_tokens=log.val_tokens, train_shards=log.train_shards)
    if log.val_tokens_line:
        facts.lines["val_tokens"] = log.val_tokens_line
    skip = range(0)
    if log.embedded_source is not None:
        skip = range(log.embedded_source.start_line, log.embedded_source.end_line + 1)
    for no, raw in enumerate(log.lines, 1):
        if no in skip:
            continue
        line = re.sub(r"^\d{9,11}\.\d+ ", "", raw)
        for key, pat in _FACT_PATTERNS:
            m = pat.search(line)
            if not m:
                continue
            value = m.groupdict().get("v")
            if key == "sidecar":
                facts.sidecar_enabled = True
            elif key == "tokenizer_path":
                facts.tokenizer_path = value
            elif key == "tokenizer_kind":
                facts.tokenizer_kind = value
            elif key in ("vocab_size", "tokenizer_vocab") and value:
                facts.vocab_size = int(value)
            elif key == "caseops_enabled" and value:
                facts.caseops_enabled = value.lower() in ("true", "1", "yes")
            elif key == "sidecar_files":
                facts.sidecar_files = value
            elif key == "data_path" and value:
                facts.data_paths.append(value)
            elif key == "train_shards" and value and facts.train_shards is None:
                facts.train_shards = int(value)
            elif key == "val_tokens" and value and facts.val_tokens is None:
                facts.val_tokens = int(value.replace(",", ""))
            facts.lines.setdefault(key, no)
    return facts


@dataclass(frozen=True)
class FamilyGuess:
    family: str | None  # one of constants.TOKENIZER_FAMILIES, or None (custom / unknown tokenizer)
    reason: str
    line: int = 0


def family_of(facts: TokenizerFacts) -> FamilyGuess:
    """The tokenizer family a run used, from the strongest evidence the log has."""
    if facts.sidecar_enabled:
        return FamilyGuess("caseops_sp8192", "`val_bpb:byte_sidecar:enabled`", facts.lines.get("sidecar", 0))
    if facts.mentions_caseops or facts.caseops_enabled:
        line = (
            facts.lines.get("tokenizer_path")
            or facts.lines.get("data_path")
            or facts.lines.get("caseops_enabled", 0)
        )
        return FamilyGuess("caseops_sp8192", "CaseOps tokenizer/data path", line)
    kind = (facts.tokenizer_kind or "").lower()
    if kind and kind not in ("sentencepiece", "byte"):
        return FamilyGuess(
            None, f"custom tokenizer kind `{facts.tokenizer_kind}`", facts.lines.get("tokenizer_kind", 0)
        )
    path = (facts.tokenizer_path or "").lower()
    m = re.search(r"fineweb_(\d+)_bpe\.model$", path)
    if m and f"sp{m.group(1)}" in _families():
        return FamilyGuess(
            f"sp{m.group(1)}", f"tokenizer `{facts.tokenizer_path}`", facts.lines.get("tokenizer_path", 0)
        )
    if kind == "byte" or "byte260" in path or any("byte260" in p for p in facts.data_paths):
        return FamilyGuess("byte260", "byte tokenizer", facts.lines.get("tokenizer_kind", 0))
    if path and not path.endswith(".model"):
        return FamilyGuess(
            None,
            f"tokenizer `{facts.tokenizer_path}` is not a SentencePiece model",
            facts.lines.get("tokenizer_path", 0),
        )
    for p in facts.data_paths:
        m = re.search(r"fineweb10B_sp(\d+)(?:/|$)", p)
        if m and f"sp{m.group(1)}" in _families():
            return FamilyGuess(f"sp{m.group(1)}", f"dataset `{p}`", facts.lines.get("data_path", 0))
    if facts.vocab_size and f"sp{facts.vocab_size}" in _families():
        return FamilyGuess(
            f"sp{facts.vocab_size}", f"vocab_size {facts.vocab_size}", facts.lines.get("vocab_size", 0)
        )
    if facts.val_tokens in canonical_token_counts():
        fam = canonical_token_counts()[facts.val_tokens]
        return FamilyGuess(fam, f"val_tokens {facts.val_tokens:,}", facts.lines.get("val_tokens", 0))
    return FamilyGuess(None, "no tokenizer named in the log", 0)


def _families() -> set[str]:
    return {r.family for r in canonical_evals()}


# ---------------------------------------------------------------------------------------------------------------
@dataclass
class DenominatorCheck:
    """One score line's implied denominator against the canonical one."""

    status: str  # match | mismatch | truncated | unknown
    implied: float
    uncertainty: float
    tokens: int
    tokens_assumed: bool
    val_loss: float
    val_bpb: float
    family: str | None
    canonical: CanonicalEval | None = None
    expected: float | None = None  # canonical denominator adjusted for a truncation tail
    tolerance: float = 0.0
    corrected_bpb: float | None = None

    @property
    def delta(self) -> float | None:
        return None if self.expected is None else self.implied - self.expected

    @property
    def ratio(self) -> float | None:
        return None if not self.expected else self.implied / self.expected

    def to_dict(self) -> dict[str, object]:
        return {
            "status": self.status,
            "family": self.family,
            "tokens": self.tokens,
            "tokens_assumed": self.tokens_assumed,
            "val_loss": self.val_loss,
            "val_bpb": self.val_bpb,
            "implied": round(self.implied, 1),
            "uncertainty": round(self.uncertainty, 1),
            "canonical": self.canonical.denominator if self.canonical else None,
            "canonical_tokens": self.canonical.val_tokens if self.canonical else None,
            "expected": round(self.expected, 1) if self.expected is not None else None,
            "delta": round(self.delta, 1) if self.delta is not None else None,
            "tolerance": round(self.tolerance, 1),
            "corrected_bpb": self.corrected_bpb,
        }


def check_denominator(
    val_loss: float, val_bpb: float, decimals: int, family: str | None, tokens: int | None
) -> DenominatorCheck | None:
    """Judge one (val_loss, val_bpb) pair. None when there is nothing to compute (no token count at all)."""
    rows = canonical_evals(family) if family else []
    assumed = tokens is None
    if tokens is None:
        if not rows:
            return None
        tokens = rows[0].val_tokens  # a full-coverage eval of the family's canonical stream
    implied = implied_bytes(tokens, val_loss, val_bpb)
    unc = implied_uncertainty(tokens, val_loss, val_bpb, decimals)
    check = DenominatorCheck("unknown", implied, unc, tokens, assumed, val_loss, val_bpb, family)
    if not rows:
        _against_text(check)
        if check.status == "mismatch" and implied < PARTIAL_VAL_FRACTION * VAL_TEXT_BYTES_MIN:
            # far less text than the validation set: a partial evaluation, not a miscount (PG702's finding)
            check.status = "truncated"
            check.corrected_bpb = None
        return check
    canon = min(rows, key=lambda r: (abs(r.val_tokens - tokens), abs(r.denominator - implied)))
    # several canonical values share a token count (e.g. float32 accumulation differences): take the closest
    same = [r for r in rows if r.val_tokens == canon.val_tokens]
    canon = min(same, key=lambda r: abs(r.denominator - implied))
    check.canonical = canon
    deficit = canon.val_tokens - tokens
    if deficit < 0 or deficit > MAX_TRUNCATION_TAIL_TOKENS:
        # not the canonical stream (another export or tokenizer model of the family, or a cut-down val set): the
        # size of the validation text itself is the only fair reference. Far fewer targets AND far fewer bytes
        # than the text means the score covers part of the validation set.
        _against_text(check)
        if (
            check.status == "mismatch"
            and deficit > MAX_TRUNCATION_TAIL_TOKENS
            and check.implied < VAL_TEXT_BYTES_MIN
        ):
            check.status = "truncated"
            check.corrected_bpb = None
        return check
    # the canonical stream cut to a longer eval seq_len: the missing tail targets take their bytes with them
    check.expected = canon.denominator - deficit * canon.bytes_per_token
    check.tolerance = (
        DENOMINATOR_TAIL_TOLERANCE_BYTES + deficit * MAX_BYTES_PER_TOKEN_MARGIN + check.uncertainty
    )
    _settle(check)
    return check


def _against_text(check: DenominatorCheck) -> DenominatorCheck:
    """Compare with the UTF-8 size of the validation text, which every lossless tokenizer must reproduce."""
    slack = UNKNOWN_FAMILY_RELATIVE_TOLERANCE * VAL_TEXT_BYTES_MAX + check.uncertainty
    check.expected = min(max(check.implied, VAL_TEXT_BYTES_MIN), VAL_TEXT_BYTES_MAX)
    check.tolerance = slack
    _settle(check)
    return check


def _settle(check: DenominatorCheck) -> None:
    assert check.expected is not None
    if abs(check.implied - check.expected) <= check.tolerance:
        check.status = "match"
    else:
        check.status = "mismatch"
        check.corrected_bpb = corrected_bpb(check.val_bpb, check.implied, check.expected)


# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OverlapSign:
    """A fingerprint of the CaseOps train/val overlap (rules.md §A.8) seen in a log."""

    kind: str  # "leaky_val_tokens" | "local_train_shards" | "doubled_datasets_path"
    message: str
    line: int
    decisive: bool  # enough on its own for a FAIL


def caseops_overlap_signs(facts: TokenizerFacts, family: str | None) -> list[OverlapSign]:
    signs: list[OverlapSign] = []
    if facts.val_tokens == CASEOPS_LEAKY_VAL_TOKENS:
        signs.append(
            OverlapSign(
                "leaky_val_tokens",
                f"val_tokens {facts.val_tokens:,} is the 10k-document CaseOps validation set made by "
                "prepare_caseops_data.py's --val-docs=10000 default: training started at doc 10,000, so 40,000 of the "
                "50,000 canonical validation docs were trained on",
                facts.lines.get("val_tokens", 0),
                True,
            )
        )
    if (
        family == "caseops_sp8192"
        and facts.train_shards is not None
        and facts.train_shards > CASEOPS_CANONICAL_TRAIN_SHARDS
    ):
        signs.append(
            OverlapSign(
                "local_train_shards",
                f"train_shards: {facts.train_shards} instead of {CASEOPS_CANONICAL_TRAIN_SHARDS}: locally prepared "
                "10M-token CaseOps shards (prepare_caseops_data.py, default --val-docs=10000), whose training split "
                "contains validation documents",
                _train_shards_line(facts),
                True,
            )
        )
    doubled = facts.doubled_datasets_path
    if doubled and family == "caseops_sp8192":
        signs.append(
            OverlapSign(
                "doubled_datasets_path",
                f"data path `{doubled}` has the doubled `datasets/datasets` of a local prepare_caseops_data.py run "
                "(corroborating only: the clean Hugging Face export can produce it too)",
                facts.lines.get("data_path", 0),
                False,
            )
        )
    return signs


def _train_shards_line(facts: TokenizerFacts) -> int:
    return facts.lines.get("train_shards", 0)
