"""What a submission claims: per-seed and headline numbers out of submission.json (rules.md §D) and README.md.

submission.json has no enforced schema, so this reads every shape seen in merged records: ``seed_results``
(seed -> {val_bpb, val_loss, artifact_bytes, ...}), the dict form of ``seeds``, ``compliance_rerun.seed_results``,
``seed_results_all_runs_disclosure`` (seed -> bpb) and a plain ``seeds`` list. Numbers are kept with the decimals
they were written with, because the tolerance of a cross-check is the rounding of the printed precision.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

SEED_DICT_KEYS = ("seed_results", "seeds")


@dataclass(frozen=True)
class Number:
    """A number as written: value and the decimals it was printed with (the rounding it implies)."""

    value: float
    decimals: int

    @property
    def half_ulp(self) -> float:
        return 0.5 * 10.0**-self.decimals

    def agrees(self, other: float, other_decimals: int | None = None) -> bool:
        """Equal within the rounding of both printed precisions (plus float noise)."""
        tol = self.half_ulp + (0.5 * 10.0**-other_decimals if other_decimals is not None else 0.0)
        return abs(self.value - other) <= tol + 1e-12


@dataclass
class ClaimedSeed:
    seed: int
    source: str  # JSON path the values came from, e.g. "seed_results.42"
    val_bpb: Number | None = None
    val_loss: Number | None = None
    artifact_bytes: int | None = None
    train_time_s: float | None = None
    eval_time_s: float | None = None
    steps: int | None = None


@dataclass
class Claims:
    path: str | None
    data: dict[str, Any] = field(default_factory=dict)
    seeds: dict[int, list[ClaimedSeed]] = field(default_factory=dict)  # every per-seed block, main one first
    seed_list: list[int] = field(default_factory=list)  # seeds named anywhere (list, dict keys)
    val_bpb: Number | None = None  # headline (mean for multi-seed)
    val_bpb_key: str | None = None
    val_loss: Number | None = None
    bytes_total: int | None = None
    bytes_code: int | None = None
    track: str | None = None
    problem: str | None = None
    raw_text: str = ""

    def main_seed(self, seed: int) -> ClaimedSeed | None:
        blocks = self.seeds.get(seed) or []
        return blocks[0] if blocks else None

    def line_of(self, needle: str) -> int:
        """1-based line of the first occurrence of `needle` in the JSON text (0 when absent)."""
        idx = self.raw_text.find(needle)
        return self.raw_text.count("\n", 0, idx) + 1 if idx >= 0 else 0


_FLOAT_TOKEN = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _decimals_of(value: float, text: str | None = None) -> int:
    token = text if text is not None else repr(value)
    mantissa = token.lower().split("e")[0]
    dec = len(mantissa.split(".")[1]) if "." in mantissa else 0
    if "e" in token.lower():
        dec -= int(token.lower().split("e")[1])
    return max(dec, 0)


def number(value: Any) -> Number | None:
    """A Number from a JSON value (floats keep their printed decimals; numeric strings are accepted)."""
    if isinstance(value, bool) or value is None:
        return None
    try:  # a 400-digit integer overflows float(); a 5,000-digit exponent overflows int(): not a number to us
        if isinstance(value, (int, float)):
            return Number(float(value), _decimals_of(float(value)) if isinstance(value, float) else 0)
        if isinstance(value, str) and _FLOAT_TOKEN.fullmatch(value.strip()):
            return Number(float(value), _decimals_of(0.0, value.strip()))
    except (OverflowError, ValueError):
        return None
    return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 4000:
        return int(value.strip())  # (over CPython's 4,300-digit limit int() raises)
    return None


def _seed_key(key: Any) -> int | None:
    k = str(key).strip()
    k = k[len("seed") :].lstrip("_-") if k.lower().startswith("seed") else k
    return int(k) if k.isdigit() else None


def _read_seed_block(seed: int, source: str, block: Any) -> ClaimedSeed:
    out = ClaimedSeed(seed=seed, source=source)
    if not isinstance(block, dict):
        out.val_bpb = number(block)
        return out
    out.val_bpb = number(block.get("val_bpb", block.get("bpb")))
    out.val_loss = number(block.get("val_loss", block.get("val_loss_nats")))
    out.artifact_bytes = _int(
        block.get("artifact_bytes", block.get("bytes_total", block.get("artifact_size_bytes")))
    )
    t = number(block.get("train_time_s"))
    if t is None and number(block.get("train_time_ms")) is not None:
        t = Number(number(block.get("train_time_ms")).value / 1000.0, 3)  # type: ignore[union-attr]
    out.train_time_s = t.value if t else None
    e = number(block.get("eval_time_s", block.get("ttt_eval_time_s")))
    if e is None and number(block.get("eval_time_ms")) is not None:
        e = Number(number(block.get("eval_time_ms")).value / 1000.0, 3)  # type: ignore[union-attr]
    out.eval_time_s = e.value if e else None
    out.steps = _int(block.get("steps", block.get("step_stop")))
    return out


def parse_claims(
    data: dict[str, Any] | None, path: str | None = None, raw_text: str = "", problem: str | None = None
) -> Claims:
    claims = Claims(path=path, data=data or {}, problem=problem, raw_text=raw_text)
    if not data:
        return claims
    for key in ("val_bpb", "mean_val_bpb", "mean_bpb"):
        n = number(data.get(key))
        if n is not None:
            claims.val_bpb, claims.val_bpb_key = n, key
            break
    claims.val_loss = number(data.get("val_loss", data.get("mean_val_loss", data.get("mean_val_loss_nats"))))
    claims.bytes_total = _int(
        data.get("bytes_total", data.get("artifact_bytes", data.get("artifact_size_bytes")))
    )
    claims.bytes_code = _int(data.get("bytes_code", data.get("code_bytes")))
    track = data.get("track")
    claims.track = str(track) if isinstance(track, str) else None

    blocks: list[tuple[str, dict[Any, Any]]] = []
    for key in SEED_DICT_KEYS:
        if isinstance(data.get(key), dict):
            blocks.append((key, data[key]))
    rerun = data.get("compliance_rerun")
    if isinstance(rerun, dict) and isinstance(rerun.get("seed_results"), dict):
        blocks.append(("compliance_rerun.seed_results", rerun["seed_results"]))
    disclosure = data.get("seed_results_all_runs_disclosure")
    if isinstance(disclosure, dict):
        for sub_key, sub in disclosure.items():
            if isinstance(sub, dict) and sub and all(_seed_key(k) is not None for k in sub):
                blocks.append((f"seed_results_all_runs_disclosure.{sub_key}", sub))
    for source, block in blocks:
        for key, value in block.items():
            seed = _seed_key(key)
            if seed is None:
                continue
            claims.seeds.setdefault(seed, []).append(_read_seed_block(seed, f"{source}.{key}", value))
    listed = data.get("seeds")
    if isinstance(listed, list):
        claims.seed_list = [s for s in (_int(x) for x in listed) if s is not None]
    elif _int(data.get("seed")) is not None:
        claims.seed_list = [_int(data.get("seed"))]  # type: ignore[list-item]
    for seed in claims.seeds:
        if seed not in claims.seed_list:
            claims.seed_list.append(seed)
    return claims


def claims_of_submission(sub: Any) -> Claims:
    """Claims of a loaded Submission (parse problems are kept, never raised)."""
    path = sub.claims_path
    data, problem = sub.claims()
    raw = sub.read_text(path) if path else ""
    return parse_claims(data, path, raw or "", problem)


def claims_of(ctx: Any) -> Claims:
    return ctx.memo("claims", lambda: claims_of_submission(ctx.submission))


# -- README headline numbers -------------------------------------------------------------------------------------
README_BPB = re.compile(
    r"(?:val_bpb|val bpb|bpb|BPB)[^0-9\n]{0,40}?(?P<n>[01]\.\d{3,8})|(?P<m>[01]\.\d{3,8})\s*(?:val_)?(?:bpb|BPB)"
)


def readme_bpb_numbers(text: str) -> list[tuple[int, Number]]:
    """(line, number) for every BPB-looking number in a README (a value in [0, 2) with 3+ decimals next to 'bpb')."""
    out: list[tuple[int, Number]] = []
    for i, line in enumerate(text.splitlines(), 1):
        for m in README_BPB.finditer(line):
            token = m["n"] or m["m"]
            out.append((i, Number(float(token), _decimals_of(0.0, token))))
    return out


def json_dumps_short(value: Any) -> str:
    return json.dumps(value, default=str)[:200]


# -- track --------------------------------------------------------------------------------------------------------
def track_of(sub: Any, claims: Claims) -> str | None:
    """ "record" | "non-record" | None (unknown), from the folder's track dir, else submission.json."""
    where = " ".join(x for x in (sub.git_path or "", str(sub.root)) if x).lower()
    if "track_non_record" in where:
        return "non-record"
    if "track_10min_16mb" in where:
        return "record"
    track = (claims.track or "").lower()
    if "non" in track and "record" in track or claims.data.get("non_record_reason"):
        return "non-record"
    if "10min" in track:
        return "record"
    return None


_DATE = re.compile(r"(20\d\d-[01]\d-[0-3]\d)")


def submission_date(sub: Any, claims: Claims) -> str | None:
    """ISO date of the submission: submission.json `date`, else the record folder's `YYYY-MM-DD_` prefix."""
    value = claims.data.get("date")
    if isinstance(value, str):
        m = _DATE.search(value)
        if m:
            return m[1]
    m = _DATE.match(sub.folder_name or "")
    return m[1] if m else None
