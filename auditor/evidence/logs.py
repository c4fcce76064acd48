"""The grammar of Parameter Golf training logs: one `ParsedLog` per log file (rules.md §E).

The parser is tolerant by design: unknown lines are ignored, an optional Unix-timestamp prefix
(``1776143501.933 ...``) is stripped, CRLF and bare-CR progress bars are handled, and the source code that many
logs embed (baseline ``log0(code)`` at the top, newer ``Source code:`` blocks) is located first and never read as
log lines, so an f-string template such as ``log0(f"final_int8_zlib_roundtrip val_loss:{x}")`` inside it can never
become a score. Only lines that start at column 0 are recognised; indented or minified source lines outside an
embedded block do not match the anchored patterns because they carry ``{...}`` placeholders, not numbers.

`ParsedLog` fields (line numbers are 1-based in the file as shipped):

- ``path``, ``n_lines``, ``timestamped`` (lines carry a Unix-time prefix)
- ``seed`` / ``seed_source`` ("log" from ``seed:N`` or the ``  seed: N`` hyperparameter dump, "filename" from
  ``train_seed42.log``-style names), ``seed_line``, ``filename_seed`` (what the name says; may disagree)
- ``hparams``: the ``Hyperparameters:`` dump (``  key: value``), raw strings
- ``world_size`` (+ ``world_size_line``), ``grad_accum_steps``, ``iterations``, ``max_wallclock_seconds``
- ``score_lines``: every ``<label> val_loss:F val_bpb:F [...]`` evaluation line as `ScoreLine` (periodic
  in-training validation lines are in ``periodic_val`` instead)
- ``final_score`` (property): the scored line, see `select_final_score`
- ``val_tokens`` (+ ``val_tokens_line``), ``train_shards``
- ``stop``: `StopLine` from ``stopping_early: wallclock_cap train_time:Nms step:N/N``
- ``steps``: `StepLine` per ``step:N/N train_loss:... train_time:Nms step_avg:Fms`` (old) and
  ``N/N train_loss: F train_time: F m ...`` (new, minutes with one decimal: ``train_ms`` is coarse there)
- ``gptq``: `GptqInfo` (``GPTQ:collected N Hessians in Fs``, ``gptq:reserving Fs, effective=Nms``)
- ``total_eval_time_s`` (+ line), ``ttt_compile_warmup_s`` (+ line), ``eval_timer_line`` (``beginning TTT eval
  timer``), ``artifact_production_wallclock_s``
- ``sizes``: `SizeLine` for ``Total submission size[ codec]: N bytes``, ``Serialized model[ codec]: N bytes``,
  ``artifact_bytes: N``; ``is_artifact`` is True only for lines that state the artifact (code + compressed model)
- ``code_sizes``: `CodeSizeLine` (kind "raw" | "uncompressed" | "compressed")
- ``peak_memory``: (allocated MiB, reserved MiB, line)
- ``torch_version``, ``python_version``, ``gpus`` (`GpuLine` from embedded ``nvidia-smi`` tables)
- ``embedded_source``: `EmbeddedSource` (text, start_line, end_line, marker) or None
- ``ttp``: `Progress` of phased-TTT batches (``ttp: bN/782``), ``ttt_progress``: `Progress` of LoRA TTT batches
- ``ttt_phased_total_docs``
- ``truncated`` / ``truncation_reason``: the log ends before the final scored evaluation
- ``problems``: things the parser noticed (e.g. two different seeds)
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from auditor.findings import Location

if TYPE_CHECKING:
    from auditor.facts import AuditContext

# -- line grammar ------------------------------------------------------------------------------------------------
TIMESTAMP = re.compile(r"^\d{9,11}\.\d+ ")
NUM = r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
SCORE = re.compile(
    rf"^(?P<label>[A-Za-z_][\w\-:.+/]*(?: [\w\-:.+/=]+)*?)\s+(?P<qual>sliding )?val_loss[:=]\s*(?P<loss>{NUM})"
    rf"\s+(?:sliding )?val_bpb[:=]\s*(?P<bpb>{NUM})(?P<rest>.*)$"
)
PERIODIC_LABEL = re.compile(r"^(?:step:)?\d+/\d+$")
EVAL_MS = re.compile(r"\b(?:eval_time|time):\s*(\d+(?:\.\d+)?)ms")
# a timer named for the pass it times (`ngram_eval_time:895349ms`, `ttt_eval_time:`): used when the line has no plain
# `eval_time:` (the headline n-gram pass of some records is timed only this way)
PASS_EVAL_MS = re.compile(r"(?<![\w])[A-Za-z]\w*_eval_time:\s*(\d+(?:\.\d+)?)ms")
ELAPSED_S = re.compile(r"\belapsed=(\d+(?:\.\d+)?)s")
KEYVAL = re.compile(r"(\w+)[:=]\s*([\w.\-]+)")
STOP = re.compile(
    r"^stopping_early: wallclock_cap train_time: ?(?P<ms>\d+(?:\.\d+)?)ms(?: step: ?(?P<s>\d+)/(?P<it>\d+))?"
)
STEP_OLD = re.compile(
    r"^step:(?P<s>\d+)/(?P<it>\d+) train_loss:\S+ train_time:(?P<ms>\d+(?:\.\d+)?)ms"
    r"(?: step_avg:(?P<avg>\d+(?:\.\d+)?)ms)?"
)
STEP_NEW = re.compile(r"^(?P<s>\d+)/(?P<it>\d+) train_loss: \S+ train_time: (?P<min>\d+(?:\.\d+)?)m\b")
GPTQ_COLLECTED = re.compile(r"^GPTQ:collected (?P<n>\d+) Hessians in (?P<s>\d+(?:\.\d+)?) ?s")
GPTQ_RESERVE = re.compile(r"^gptq:reserving (?P<s>\d+(?:\.\d+)?)s(?:, effective=(?P<ms>\d+(?:\.\d+)?)ms)?")
TOTAL_EVAL = re.compile(r"^total_eval_time: ?(?P<s>\d+(?:\.\d+)?) ?s")
COMPILE_WARMUP = re.compile(r"^ttt_lora:compile warmup done \((?P<s>\d+(?:\.\d+)?)s\)")
EVAL_TIMER = re.compile(r"^beginning TTT eval timer")
ARTIFACT_WALL = re.compile(r"^artifact_production_wallclock: (?P<s>\d+(?:\.\d+)?)s")
TOTAL_SIZE = re.compile(r"^Total submission size(?: (?P<codec>[^:\s]+))?: (?P<n>\d+) bytes")
MODEL_SIZE = re.compile(r"^Serialized model(?: (?P<codec>[^:\s]+))?: (?P<n>\d+) bytes")
SUMMARY_ARTIFACT = re.compile(r"^artifact_bytes: +(?P<n>\d+)\s*$")
CODE_SIZE = re.compile(r"^Code size(?: \((?P<kind>uncompressed|compressed)\))?: (?P<n>\d+) bytes")
PEAK_MEM = re.compile(r"^peak memory allocated: (?P<a>\d+) MiB reserved: (?P<r>\d+) MiB")
TORCH = re.compile(r"^Running PyTorch (?P<v>\S+)")
PYTHON = re.compile(r"^Running Python (?P<v>\S+)")
GPU_TABLE = re.compile(r"^\|\s+(?P<i>\d+)\s+(?P<name>NVIDIA .+?|Tesla .+?|AMD .+?)\s{2,}(?:On|Off)\s+\|")
GPU_LIST = re.compile(r"^GPU (?P<i>\d+): (?P<name>.+?)(?: \(UUID: .*\))?$")
SEED_OLD = re.compile(r"^seed:\s*(?P<n>\d+)\s*$")
HPARAM = re.compile(r"^  (?P<k>[A-Za-z_]\w*): (?P<v>.*)$")
WORLD = re.compile(r"^world_size:(?P<w>\d+)(?: grad_accum_steps:(?P<g>\d+))?")
BATCH_LINE = re.compile(
    r"^train_batch_tokens:\d+ .*?iterations:(?P<it>\d+).*?max_wallclock_seconds:(?P<mw>[\d.]+)"
)
VAL_TOKENS = re.compile(r"^(?:val_tokens: ?(?P<a>\d+)|val_loader:shards pattern=\S+ tokens:(?P<b>\d+))")
TRAIN_SHARDS = re.compile(r"^(?:train_shards: ?(?P<a>\d+)|train_loader:dataset:\S+ train_shards:(?P<b>\d+))")
TTP = re.compile(r"^ttp: b(?P<i>\d+)/(?P<n>\d+)\b")
TTT_PROGRESS = re.compile(r"^ttt_progress: batch (?P<i>\d+)/(?P<n>\d+)\b")
TTT_PHASED = re.compile(r"^ttt_phased: total_docs:(?P<d>\d+)")
# Lines that say a scored evaluation pass has begun (a score line must follow them).
EVAL_BEGIN = re.compile(
    r"^(?:beginning TTT eval timer|ttt_phased: |ttt_sliding:start|ttt:start|ttt_lora:docs:)"
)
SEPARATOR = re.compile(r"^={20,}\s*$")
CODE_START = re.compile(r"^(?:[rbuRBU]?[\"']|import \w|from [\w.]+ import |#!|# -\*-)")  # docstring, imports
# "train_seed42.log", "log_10mins_seed-1337.txt", "ternary_log_42.txt", "..._s1337.txt"; not "eggroll_3-last".
SEED_IN_NAME = (
    re.compile(r"seed[_\-]?(\d{1,9})", re.I),
    re.compile(r"(?:^|[_\-])s(\d{2,9})(?=[._\-])", re.I),
    re.compile(r"[_\-](\d{1,9})\.(?:log|txt)$", re.I),
)


# -- records -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScoreLine:
    label: str
    val_loss: float
    val_bpb: float
    eval_ms: float | None
    decimals: int  # min of the printed decimals of val_loss and val_bpb
    line_no: int
    is_diagnostic: bool  # "diagnostic ..." / "DIAGNOSTIC ..." lines: not the score, partial coverage
    text: str = ""
    is_prequant: bool = False  # pre-quantization / post-EMA float model: never the submitted score
    extras: tuple[tuple[str, str], ...] = ()  # stride:64, T=0.9, ...

    @property
    def rank(self) -> int | None:
        return score_rank(self.label) if not (self.is_diagnostic or self.is_prequant) else None


@dataclass(frozen=True)
class StopLine:
    train_ms: float
    step: int | None
    iterations: int | None
    line_no: int
    text: str = ""


@dataclass(frozen=True)
class StepLine:
    step: int
    iterations: int
    train_ms: float
    step_avg_ms: float | None
    line_no: int
    coarse: bool = False  # new-style line: train_time printed in minutes with one decimal


@dataclass(frozen=True)
class GptqInfo:
    hessians: int | None = None
    collect_s: float | None = None
    collect_line: int = 0
    reserve_s: float | None = None
    effective_ms: float | None = None
    reserve_line: int = 0


@dataclass(frozen=True)
class SizeLine:
    label: str  # "Total submission size" | "Serialized model" | "artifact_bytes"
    codec: str | None
    bytes: int
    line_no: int
    is_artifact: bool  # states code + compressed model (the capped quantity)
    text: str = ""

    @property
    def is_model(self) -> bool:
        """Compressed model payload only (no code)."""
        return self.label == "Serialized model" and self.codec is not None


@dataclass(frozen=True)
class CodeSizeLine:
    kind: str  # raw | uncompressed | compressed
    bytes: int
    line_no: int


@dataclass(frozen=True)
class GpuLine:
    index: int
    name: str
    line_no: int


@dataclass(frozen=True)
class EmbeddedSource:
    text: str
    start_line: int  # first source line (1-based, inclusive)
    end_line: int  # last source line (inclusive)
    marker: str  # "Source code:" or "top"


@dataclass(frozen=True)
class Progress:
    seen: int  # progress lines seen
    max_index: int  # highest batch index seen
    total: int  # declared total
    line_no: int  # last progress line


@dataclass
class ParsedLog:
    path: str
    n_lines: int = 0
    timestamped: bool = False
    seed: int | None = None
    seed_source: str | None = None
    seed_line: int = 0
    filename_seed: int | None = None  # seed named by the file name, when it names one
    hparams: dict[str, str] = field(default_factory=dict)
    world_size: int | None = None
    world_size_line: int = 0
    grad_accum_steps: int | None = None
    iterations: int | None = None
    max_wallclock_seconds: float | None = None
    score_lines: list[ScoreLine] = field(default_factory=list)
    periodic_val: list[ScoreLine] = field(default_factory=list)
    val_tokens: int | None = None
    val_tokens_line: int = 0
    train_shards: int | None = None
    stop: StopLine | None = None
    steps: list[StepLine] = field(default_factory=list)
    gptq: GptqInfo = field(default_factory=GptqInfo)
    total_eval_time_s: float | None = None
    total_eval_time_line: int = 0
    ttt_compile_warmup_s: float | None = None
    ttt_compile_warmup_line: int = 0
    eval_timer_line: int = 0
    artifact_production_wallclock_s: float | None = None
    sizes: list[SizeLine] = field(default_factory=list)
    code_sizes: list[CodeSizeLine] = field(default_factory=list)
    peak_memory: tuple[int, int, int] | None = None
    torch_version: str | None = None
    python_version: str | None = None
    gpus: list[GpuLine] = field(default_factory=list)
    embedded_source: EmbeddedSource | None = None
    ttp: Progress | None = None
    ttt_progress: Progress | None = None
    ttt_phased_total_docs: int | None = None
    eval_begin_line: int = 0
    truncated: bool = False
    truncation_reason: str = ""
    problems: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list, repr=False)  # as shipped, minus line endings

    # -- derived -------------------------------------------------------------------------------------------------
    @property
    def final_score(self) -> ScoreLine | None:
        return select_final_score(self.score_lines)

    def answers_to_seed(self, seed: int) -> bool:
        """The log is for `seed` by its own record or by its file name."""
        return seed in (self.seed, self.filename_seed)

    @property
    def is_run_log(self) -> bool:
        """True when anything of a training/eval run was recognised (a notes .txt is not a run log)."""
        return bool(
            self.score_lines
            or self.periodic_val
            or self.stop
            or self.steps
            or self.sizes
            or self.hparams
            or self.world_size
            or self.seed_source == "log"
            or self.val_tokens
            or self.embedded_source
        )

    @property
    def artifact_size(self) -> SizeLine | None:
        """The last line stating the artifact total (code + compressed model)."""
        arts = [s for s in self.sizes if s.is_artifact and s.label == "Total submission size"]
        arts = arts or [s for s in self.sizes if s.is_artifact]
        return arts[-1] if arts else None

    @property
    def model_size(self) -> SizeLine | None:
        models = [s for s in self.sizes if s.is_model]
        return models[-1] if models else None

    def code_size(self, kind: str) -> CodeSizeLine | None:
        found = [c for c in self.code_sizes if c.kind == kind]
        return found[-1] if found else None

    @property
    def last_step(self) -> StepLine | None:
        return self.steps[-1] if self.steps else None

    def line(self, line_no: int) -> str:
        return self.lines[line_no - 1] if 0 < line_no <= len(self.lines) else ""

    def location(self, line_no: int) -> Location:
        """A Location on a log line, with the line (as shipped) as snippet."""
        text = self.line(line_no)
        return Location(
            path=self.path,
            line=line_no,
            col=1 if line_no else 0,
            end_line=line_no,
            end_col=len(text) + 1 if line_no else 0,
            snippet=text.strip()[:240],
        )


# -- score selection ---------------------------------------------------------------------------------------------
def score_rank(label: str) -> int | None:
    """How specific an evaluation label is as the submitted score (higher wins); None: never the score.

    Mirrors the mapping of rules.md §E (established by matching per-seed val_bpb in merged records): phased TTT >
    other legal TTT > n-gram cache/mixer pass > sliding window > quantized round-trip > plain quantized eval.
    """
    low = label.lower()
    if (
        low.startswith("diagnostic")
        or "pre-quant" in low
        or "prequant" in low
        or "post_ema" in low
        or "post-ema" in low
    ):
        return None
    if "ttt" in low and "phased" in low:
        return 60
    if "ttt" in low:
        return 50
    if "ngram" in low or "n-gram" in low:
        return 45  # an n-gram cache/mixer layered on the model's output: the last stage when present
    if "sliding" in low:
        return 40
    if "temped" in low:
        return 35
    if "roundtrip" in low:
        return 30
    if low.startswith(("final", "quantized")):
        return 20
    return None


def select_final_score(lines: Iterable[ScoreLine]) -> ScoreLine | None:
    """The scored line: the most specific score-bearing label; among equals the most decimals, then the last."""
    best: ScoreLine | None = None
    best_key: tuple[int, int, int] | None = None
    for s in lines:
        rank = s.rank
        if rank is None:
            continue
        key = (rank, s.decimals, s.line_no)
        if best_key is None or key > best_key:
            best, best_key = s, key
    return best


# -- parsing -----------------------------------------------------------------------------------------------------
def _decimals(token: str) -> int:
    mantissa = token.lower().split("e")[0]
    return len(mantissa.split(".")[1]) if "." in mantissa else 0


def _split_lines(text: str) -> list[str]:
    # Split on \n only so line numbers match editors and `grep -n`; drop the \r of CRLF files.
    return [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")]


def _logical(raw: str) -> tuple[str, bool]:
    """The parseable part of a line: after the last bare CR (progress bars), without a timestamp prefix."""
    if "\r" in raw:
        raw = raw.rsplit("\r", 1)[-1]
    m = TIMESTAMP.match(raw)
    if m:
        return raw[m.end() :], True
    return raw, False


def find_embedded_source(lines: list[str]) -> EmbeddedSource | None:
    """The script text a log embeds: a `Source code:` block, or `log0(code)` output at the top of the log.

    Both forms end at the next ``=====`` separator line written by the script after the code.
    """
    logical = [_logical(ln)[0] for ln in lines]
    for i, ln in enumerate(logical):
        if ln.strip() == "Source code:":
            start = i + 1
            if start < len(logical) and SEPARATOR.match(logical[start]):
                start += 1
            end = _block_end(logical, start)
            if end > start:
                return EmbeddedSource("\n".join(logical[start:end]) + "\n", start + 1, end, "Source code:")
            return None
    # Baseline style: the code is logged before any run output. Look for the first code-looking line that comes
    # before the first separator/run line, after optional launcher noise or a hyperparameter dump.
    for i, ln in enumerate(logical[:400]):
        if CODE_START.match(ln):
            end = _block_end(logical, i)
            if end - i >= 5:
                return EmbeddedSource("\n".join(logical[i:end]) + "\n", i + 1, end, "top")
            return None
        if len(ln) > MAX_LINE_CHARS:
            continue
        if STOP.match(ln) or SCORE.match(ln) or STEP_OLD.match(ln) or STEP_NEW.match(ln):
            return None
    return None


def _block_end(logical: list[str], start: int) -> int:
    """Index (exclusive) of the separator closing a code block, or the end of the log when none closes it.

    A `=====` line inside a docstring (an underlined title) does not close the block: the closing separator is
    the first one outside any triple-quoted string.
    """
    open_dq = open_sq = False
    for j in range(start, len(logical)):
        line = logical[j]
        if SEPARATOR.match(line) and not (open_dq or open_sq):
            return j
        if line.count('"""') % 2:
            open_dq = not open_dq
        if line.count("'''") % 2:
            open_sq = not open_sq
    return len(logical)


MAX_LINE_CHARS = 65_536  # longer lines are not run output (the longest real log line is a few KB)
_MAX_INT_DIGITS = 4000  # below CPython's int-from-str limit (4,300 digits); no real log prints such a number
_DIGIT_RUN = re.compile(r"\d+")


def _has_huge_number(line: str) -> bool:
    return any(m.end() - m.start() > _MAX_INT_DIGITS for m in _DIGIT_RUN.finditer(line))


def parse_log(text: str, path: str) -> ParsedLog:
    """Parse one log file's text; never raises on odd input."""
    lines = _split_lines(text)
    if lines and lines[-1] == "":
        lines.pop()
    log = ParsedLog(path=path, n_lines=len(lines), lines=lines)
    log.embedded_source = find_embedded_source(lines)
    src = log.embedded_source
    in_hparams = False
    ttp_seen = ttt_seen = 0
    ttp_max = ttt_max = ttp_total = ttt_total = ttp_line = ttt_line = 0
    gptq: dict[str, float | int | None] = {}
    seeds_seen: dict[int, int] = {}
    stamped = 0

    for idx, raw in enumerate(lines):
        n = idx + 1
        if src and src.start_line <= n <= src.end_line:
            continue
        ln, has_ts = _logical(raw)
        stamped += has_ts
        if not ln:
            in_hparams = False
            continue
        if len(ln) > _MAX_INT_DIGITS and _has_huge_number(ln):  # int() would raise on it (4,300-digit limit)
            log.problems.append(f"line {n}: a number over {_MAX_INT_DIGITS:,} digits; line ignored")
            continue
        if len(ln) > MAX_LINE_CHARS:  # regex backtracking state grows with the line (10 MB: 14 s, 0.7 GB)
            log.problems.append(f"line {n}: {len(ln):,} characters (limit {MAX_LINE_CHARS:,}); not parsed")
            continue
        first = ln[0]
        if ln.startswith("Hyperparameters:"):
            in_hparams = True
            continue
        if first == " ":
            m = HPARAM.match(ln)
            if m and in_hparams:
                log.hparams[m["k"]] = m["v"].strip()
                if m["k"] == "seed" and m["v"].strip().isdigit():
                    seeds_seen.setdefault(int(m["v"]), n)
            continue  # indented lines are never run output
        if first == "|":
            g = GPU_TABLE.match(ln)
            if g:
                log.gpus.append(GpuLine(int(g["i"]), g["name"].strip(), n))
            continue
        in_hparams = False if not SEPARATOR.match(ln) else in_hparams

        if first == "t" and ln.startswith(("ttp:", "ttt_progress:")):
            m = TTP.match(ln)
            if m:
                ttp_seen += 1
                ttp_max, ttp_total, ttp_line = max(ttp_max, int(m["i"])), int(m["n"]), n
                continue
            m = TTT_PROGRESS.match(ln)
            if m:
                ttt_seen += 1
                ttt_max, ttt_total, ttt_line = max(ttt_max, int(m["i"])), int(m["n"]), n
                continue
        if first == "t" and ln.startswith("tttg:"):
            continue

        m = SCORE.match(ln) if "val_bpb" in ln else None  # a substring test first: SCORE needs it anyway
        if m:
            _add_score(log, m, n, ln)
            continue
        m = STEP_OLD.match(ln)
        if m:
            log.steps.append(
                StepLine(int(m["s"]), int(m["it"]), float(m["ms"]), float(m["avg"]) if m["avg"] else None, n)
            )
            continue
        m = STEP_NEW.match(ln)
        if m:
            log.steps.append(
                StepLine(int(m["s"]), int(m["it"]), float(m["min"]) * 60_000.0, None, n, coarse=True)
            )
            continue
        m = STOP.match(ln)
        if m:
            log.stop = StopLine(
                float(m["ms"]), int(m["s"]) if m["s"] else None, int(m["it"]) if m["it"] else None, n, ln
            )
            continue
        if _parse_sizes(log, ln, n):
            continue
        m = GPTQ_COLLECTED.match(ln)
        if m:
            gptq.update(hessians=int(m["n"]), collect_s=float(m["s"]), collect_line=n)
            continue
        m = GPTQ_RESERVE.match(ln)
        if m:
            gptq.update(
                reserve_s=float(m["s"]), effective_ms=float(m["ms"]) if m["ms"] else None, reserve_line=n
            )
            continue
        m = TOTAL_EVAL.match(ln)
        if m:
            log.total_eval_time_s, log.total_eval_time_line = float(m["s"]), n
            continue
        m = COMPILE_WARMUP.match(ln)
        if m:
            log.ttt_compile_warmup_s, log.ttt_compile_warmup_line = float(m["s"]), n
            continue
        if EVAL_BEGIN.match(ln):
            log.eval_begin_line = n
            if EVAL_TIMER.match(ln):
                log.eval_timer_line = n
            m = TTT_PHASED.match(ln)
            if m:
                log.ttt_phased_total_docs = int(m["d"])
            continue
        m = ARTIFACT_WALL.match(ln)
        if m:
            log.artifact_production_wallclock_s = float(m["s"])
            continue
        m = SEED_OLD.match(ln)
        if m:
            seeds_seen.setdefault(int(m["n"]), n)
            continue
        m = WORLD.match(ln)
        if m:
            log.world_size, log.world_size_line = int(m["w"]), n
            log.grad_accum_steps = int(m["g"]) if m["g"] else None
            continue
        m = BATCH_LINE.match(ln)
        if m:
            log.iterations, log.max_wallclock_seconds = int(m["it"]), float(m["mw"])
            continue
        m = VAL_TOKENS.match(ln)
        if m:
            log.val_tokens, log.val_tokens_line = int(m["a"] or m["b"]), n
            continue
        m = TRAIN_SHARDS.match(ln)
        if m:
            log.train_shards = int(m["a"] or m["b"])
            continue
        m = PEAK_MEM.match(ln)
        if m:
            log.peak_memory = (int(m["a"]), int(m["r"]), n)
            continue
        m = TORCH.match(ln)
        if m:
            log.torch_version = m["v"]
            continue
        m = PYTHON.match(ln)
        if m:
            log.python_version = m["v"]
            continue
        m = GPU_LIST.match(ln)
        if m and ("NVIDIA" in m["name"] or "H100" in m["name"]):
            log.gpus.append(GpuLine(int(m["i"]), m["name"].strip(), n))

    log.timestamped = (
        stamped > 0 and stamped >= (len(lines) - (src.end_line - src.start_line + 1 if src else 0)) // 2
    )
    log.gptq = GptqInfo(**gptq)  # type: ignore[arg-type]
    if ttp_seen:
        log.ttp = Progress(ttp_seen, ttp_max, ttp_total, ttp_line)
    if ttt_seen:
        log.ttt_progress = Progress(ttt_seen, ttt_max, ttt_total, ttt_line)
    _fill_hparams(log)
    _assign_seed(log, seeds_seen)
    _merge_exact_eval_times(log)
    _judge_truncation(log)
    return log


def _add_score(log: ParsedLog, m: re.Match[str], n: int, ln: str) -> None:
    label_full = m["label"].strip()
    extras: list[tuple[str, str]] = []
    words = []
    for tok in label_full.split(" "):
        kv = KEYVAL.fullmatch(tok)
        if kv and not words:
            words.append(tok)  # a label such as "ttt_sliding:done" keeps its first token whole
        elif kv:
            extras.append((kv[1], kv[2]))
        else:
            words.append(tok)
    if m["qual"]:
        words.append(
            "sliding"
        )  # "final_int8_zlib_roundtrip_exact sliding val_loss:..": a sliding-window eval
    label = " ".join(words)
    rest = m["rest"]
    extras += [
        (k, v)
        for k, v in KEYVAL.findall(rest)
        if k not in ("eval_time", "time", "elapsed") and not k.endswith("_eval_time")
    ]
    ms: float | None = None
    em = EVAL_MS.search(rest) or PASS_EVAL_MS.search(rest)
    if em:
        ms = float(em[1])
    else:
        es = ELAPSED_S.search(rest)
        if es:
            ms = float(es[1]) * 1000.0
    try:
        loss, bpb = float(m["loss"]), float(m["bpb"])
    except ValueError:
        return
    low = label.lower()
    line = ScoreLine(
        label=label,
        val_loss=loss,
        val_bpb=bpb,
        eval_ms=ms,
        decimals=min(_decimals(m["loss"]), _decimals(m["bpb"])),
        line_no=n,
        is_diagnostic=low.startswith("diagnostic"),
        text=ln,
        is_prequant=("pre-quant" in low or "prequant" in low or "post_ema" in low or "post-ema" in low),
        extras=tuple(extras),
    )
    if PERIODIC_LABEL.match(label):
        log.periodic_val.append(line)
    else:
        log.score_lines.append(line)


def _parse_sizes(log: ParsedLog, ln: str, n: int) -> bool:
    m = TOTAL_SIZE.match(ln)
    if m:
        # Without a codec the line is raw fp model + code (~67 MB), not the artifact (rules.md §E).
        log.sizes.append(
            SizeLine("Total submission size", m["codec"], int(m["n"]), n, m["codec"] is not None, ln)
        )
        return True
    m = MODEL_SIZE.match(ln)
    if m:
        log.sizes.append(SizeLine("Serialized model", m["codec"], int(m["n"]), n, False, ln))
        return True
    m = SUMMARY_ARTIFACT.match(ln)
    if m:
        log.sizes.append(SizeLine("artifact_bytes", None, int(m["n"]), n, True, ln))
        return True
    m = CODE_SIZE.match(ln)
    if m:
        log.code_sizes.append(CodeSizeLine(m["kind"] or "raw", int(m["n"]), n))
        return True
    return False


def _fill_hparams(log: ParsedLog) -> None:
    hp = log.hparams
    if log.world_size is None and hp.get("world_size", "").isdigit():
        log.world_size = int(hp["world_size"])
    if log.iterations is None and hp.get("iterations", "").isdigit():
        log.iterations = int(hp["iterations"])
    if log.max_wallclock_seconds is None and "max_wallclock_seconds" in hp:
        try:
            log.max_wallclock_seconds = float(hp["max_wallclock_seconds"])
        except ValueError:
            pass


def seed_from_filename(path: str) -> int | None:
    name = PurePosixPath(path).name
    for pattern in SEED_IN_NAME:
        m = pattern.search(name)
        if m:
            return int(m[1])
    return None


def _assign_seed(log: ParsedLog, seeds_seen: dict[int, int]) -> None:
    log.filename_seed = seed_from_filename(log.path)
    if seeds_seen:
        (seed, line), *others = seeds_seen.items()
        log.seed, log.seed_source, log.seed_line = seed, "log", line
        if others:
            log.problems.append(f"several seeds logged: {sorted(seeds_seen)}; using {seed}")
        return
    if log.filename_seed is not None:
        log.seed, log.seed_source = log.filename_seed, "filename"


def _merge_exact_eval_times(log: ParsedLog) -> None:
    """`X_exact` lines repeat the value of the preceding `X` line to 8 decimals but without its eval time."""
    out: list[ScoreLine] = []
    for s in log.score_lines:
        if s.eval_ms is None and "_exact" in s.label:
            base = s.label.replace("_exact", "", 1)
            twin = next(
                (
                    p
                    for p in reversed(out)
                    if p.label == base
                    and p.eval_ms is not None
                    and abs(p.val_bpb - s.val_bpb) <= 0.5 * 10**-p.decimals + 1e-12
                ),
                None,
            )
            if twin is not None:
                s = ScoreLine(
                    s.label,
                    s.val_loss,
                    s.val_bpb,
                    twin.eval_ms,
                    s.decimals,
                    s.line_no,
                    s.is_diagnostic,
                    s.text,
                    s.is_prequant,
                    s.extras,
                )
        out.append(s)
    log.score_lines = out


def _judge_truncation(log: ParsedLog) -> None:
    final = log.final_score
    if log.eval_begin_line and (final is None or final.line_no < log.eval_begin_line):
        log.truncated = True
        log.truncation_reason = (
            f"a scored evaluation starts at line {log.eval_begin_line} "
            f"({log.line(log.eval_begin_line).strip()[:80]!r}) but no score line follows it"
        )
        if log.ttp and log.ttp.total and log.ttp.max_index < log.ttp.total:
            log.truncation_reason += (
                f"; phased TTT progress stops at batch {log.ttp.max_index}/{log.ttp.total}"
            )
        return
    if final is None and (log.stop or log.steps):
        log.truncated = True
        last = log.stop.line_no if log.stop else log.steps[-1].line_no
        log.truncation_reason = f"training output ends at line {last} and no final evaluation score follows"


# -- audit context -----------------------------------------------------------------------------------------------
def parse_submission_logs(paths: Iterable[str], read: object) -> list[ParsedLog]:
    out: list[ParsedLog] = []
    for p in paths:
        text = read(p)  # type: ignore[operator]
        if text is None:
            continue
        parsed = parse_log(text, p)
        if parsed.is_run_log:
            out.append(parsed)
    return out


def read_log_text(sub: object, path: str) -> str | None:
    """A log's text; bytes that are not UTF-8 (progress bars, a stray byte) are replaced, not fatal."""
    f = sub.files.get(path)  # type: ignore[attr-defined]
    if f is None or f.data is None:
        return None
    return f.data.decode("utf-8", errors="replace")


def logs_of(ctx: AuditContext) -> list[ParsedLog]:
    """Every run log of the submission, parsed once per audit (files that show no run output are left out)."""
    sub = ctx.submission
    return ctx.memo(
        "parsed_logs", lambda: parse_submission_logs(sub.log_paths, lambda p: read_log_text(sub, p))
    )
