"""Rerun a submission's own train_gpt.py on the verifier's machine, under a hard wall-clock limit.

This executes submission code, so it happens only when a verifier asks for it (`pgolf-audit verify --rerun`) and
only in a scratch copy of the record folder. The steps:

1. Copy the record folder into a scratch directory (the original is never written to).
2. Lay out the data the way the challenge's scripts expect it: one directory (DATA_PATH) holding
   ``fineweb_train_*.bin`` / ``fineweb_val_*.bin`` (and ``fineweb_val_bytes_*.bin`` sidecars), as symlinks to the
   user's shards, so any glob the user gave works with scripts that join DATA_PATH with the canonical names;
   and a DATA_DIR root (``datasets/fineweb10B_sp<V>``, ``tokenizers/fineweb_<V>_bpe.model``) for the newer
   scripts that build those paths themselves.
3. Run ``python train_gpt.py`` (one process) or ``python -m torch.distributed.run --standalone
   --nproc_per_node=N train_gpt.py`` (torchrun's module form, so no PATH lookup) with DATA_PATH, TOKENIZER_PATH,
   SEED and RUN_ID set, inside `auditor.harness.sandbox`: allow-listed environment (no credentials), scratch HOME,
   the data directories read-only, no network where a namespace can be made, output captured up to a cap into
   ``rerun_seed<N>.log`` with the wall clock of training / serialization / evaluation measured from outside.
4. Kill the whole run (its PID namespace, else its process group) when the hard limit passes: 600 s training +
   600 s evaluation + `RERUN_MARGIN_S` (auditor.constants documents what the margin covers).

`attach_reruns` then adds each log to the loaded Submission (as ``rerun_seed<N>.log``) and records the run under
``sub.options.harness["rerun"]``, so the existing log rules audit the rerun's numbers and PG802 compares them
with the claims. `mark_rerun_evidence` sets evidence_level `rerun` on findings located in a rerun log.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from auditor.constants import EVAL_LIMIT_MS, RERUN_MARGIN_S, TRAIN_LIMIT_MS
from auditor.findings import EvidenceLevel, Report, Severity, Verdict
from auditor.harness.sandbox import DEFAULT_MAX_OUTPUT, run_sandboxed, sandbox_env
from auditor.submission import Submission, SubmissionFile
from pgolf_data.shards import shard_files

DEFAULT_TIMEOUT_S = (TRAIN_LIMIT_MS + EVAL_LIMIT_MS) / 1000 + RERUN_MARGIN_S
KILL_GRACE_S = 10.0
COPY_IGNORE = shutil.ignore_patterns(".git", "__pycache__", ".venv", "*.ptz", "*.pt")


@dataclass
class RerunResult:
    seed: int
    gpus: int
    command: list[str]
    workdir: str
    log: str  # the log's name inside the audited submission, e.g. rerun_seed42.log
    log_path: str  # where it is on disk
    timeout_s: float
    returncode: int | None = None
    timed_out: bool = False
    wall_s: float = 0.0
    cuda: bool = False
    canonical: bool = False  # the data was the official validation set
    data_summary: str = ""
    env: dict[str, str] = field(default_factory=dict)  # what the harness set (not the inherited environment)
    artifacts: list[str] = field(
        default_factory=list
    )  # model files the run wrote (*.ptz, *.pt), kept in workdir
    isolation: str = ""  # what the sandbox enforced (network, read-only data, PID namespace)
    network_isolated: bool = False
    data_read_only: bool = False
    dropped_env: list[str] = field(default_factory=list)  # --env names refused as credentials
    output_bytes: int = 0
    dropped_output_bytes: int = 0
    phases: dict[str, float | None] = field(default_factory=dict)  # wall clock measured outside the run
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.error is None and not self.timed_out and self.returncode == 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["finished"] = self.finished
        return d


def stage_data(dest: Path, train: str | None, val: str, sidecar: str | None) -> Path:
    """A DATA_PATH directory with the user's shards linked under the challenge's file names."""
    dest.mkdir(parents=True, exist_ok=True)
    groups = (
        ("fineweb_train", shard_files(train) if train else []),
        ("fineweb_val", shard_files(val)),
        ("fineweb_val_bytes", shard_files(sidecar, exclude_sidecars=False) if sidecar else []),
    )
    for prefix, files in groups:
        for i, src in enumerate(files):
            link = dest / f"{prefix}_{i:06d}.bin"
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(Path(src).resolve())
    return dest


def stage_data_dir(root: Path, data_path: Path, tokenizer: str | Path | None, vocab_size: int | None) -> Path:
    """A DATA_DIR root for the newer scripts, which build `DATA_DIR/datasets/fineweb10B_sp<V>` and
    `DATA_DIR/tokenizers/fineweb_<V>_bpe.model` themselves (19 merged records read DATA_DIR, not DATA_PATH)."""
    (root / "datasets").mkdir(parents=True, exist_ok=True)
    (root / "tokenizers").mkdir(parents=True, exist_ok=True)
    if vocab_size:
        links = [(root / "datasets" / f"fineweb10B_sp{vocab_size}", data_path.resolve())]
        if tokenizer:
            links.append((root / "tokenizers" / f"fineweb_{vocab_size}_bpe.model", Path(tokenizer).resolve()))
        for link, target in links:
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(target)
    return root


def launch_command(entry: str, gpus: int, python: str = sys.executable) -> list[str]:
    if gpus <= 1:
        return [python, entry]
    return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}", entry]


def rerun(
    record_dir: str | Path,
    *,
    val: str,
    tokenizer: str | Path | None,
    seed: int,
    train: str | None = None,
    sidecar: str | None = None,
    gpus: int = 1,
    timeout_s: float | None = None,
    scratch: str | Path | None = None,
    entry: str = "train_gpt.py",
    extra_env: dict[str, str] | None = None,
    python: str = sys.executable,
    canonical: bool = False,
    data_summary: str = "",
    vocab_size: int | None = None,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT,
    isolate: bool = True,
) -> RerunResult:
    """Run the record's entry script once for `seed`; see the module docstring. Never raises on a failed run."""
    record = Path(record_dir)
    work = Path(scratch) if scratch else Path(tempfile.mkdtemp(prefix="pgolf-rerun-"))
    run_dir = work / f"seed{seed}" / record.name
    log_name = f"rerun_seed{seed}.log"
    log_path = work / f"seed{seed}" / log_name
    limit = float(timeout_s if timeout_s is not None else DEFAULT_TIMEOUT_S)
    command = launch_command(entry, gpus, python)
    res = RerunResult(
        seed,
        gpus,
        command,
        str(run_dir),
        log_name,
        str(log_path),
        limit,
        canonical=canonical,
        data_summary=data_summary,
        cuda=_cuda_available(),
    )
    if not (record / entry).is_file():
        res.error = f"{record / entry}: no such entry script to rerun"
        return res
    if run_dir.exists():
        shutil.rmtree(run_dir)
    shutil.copytree(record, run_dir, ignore=COPY_IGNORE, symlinks=False)
    data_path = stage_data(work / f"seed{seed}" / "data", train, val, sidecar)
    data_dir = stage_data_dir(work / f"seed{seed}" / "data_root", data_path, tokenizer, vocab_size)
    res.env = {
        "DATA_PATH": str(data_path),
        "DATA_DIR": str(data_dir),
        "SEED": str(seed),
        "RUN_ID": f"rerun_seed{seed}",
        **({"TOKENIZER_PATH": str(Path(tokenizer).resolve())} if tokenizer else {}),
        **(extra_env or {}),
    }
    env, res.dropped_env = sandbox_env(os.environ, res.env, work / f"seed{seed}" / "home")
    for key in res.dropped_env:
        res.env.pop(key, None)
    # the verifier's data, read-only inside the run (never a directory that holds the run's own scratch)
    sources = [
        Path(p).resolve() for g in (train, val, sidecar) if g for p in shard_files(g, exclude_sidecars=False)
    ]
    if tokenizer:
        sources.append(Path(tokenizer).resolve())
    scratch_root = work.resolve()
    read_only = sorted({p.parent for p in sources if not scratch_root.is_relative_to(p.parent)}, key=str)
    box = run_sandboxed(
        command,
        cwd=run_dir,
        env=env,
        log_path=log_path,
        timeout_s=limit,
        read_only=read_only,
        max_output_bytes=max_output_bytes,
        isolate=isolate,
    )
    res.returncode, res.timed_out, res.wall_s = box.returncode, box.timed_out, box.wall_s
    res.isolation, res.network_isolated, res.data_read_only = (
        box.isolation,
        box.network_isolated,
        box.data_read_only,
    )
    res.output_bytes, res.dropped_output_bytes, res.phases = box.output_bytes, box.dropped_bytes, box.phases
    if box.error:
        res.error = box.error
        return res
    res.artifacts = sorted(str(p) for pattern in ("*.ptz", "*.pt") for p in run_dir.rglob(pattern))
    if res.timed_out:
        with log_path.open("ab") as log:
            log.write(f"\n[pgolf-audit harness] killed after {limit:.0f}s (hard limit)\n".encode())
    return res


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # no torch at all: a CPU machine
        return False


def attach_reruns(sub: Submission, results: list[RerunResult]) -> None:
    """Add each rerun log to the submission and record the runs for PG802 (see the module docstring)."""
    harness = sub.options.harness
    runs = harness.setdefault("rerun", [])
    for res in results:
        path = Path(res.log_path)
        data = path.read_bytes() if path.is_file() else b""
        name = res.log
        while name in sub.files and name not in {r.get("log") for r in runs}:
            name = "harness_" + name  # never shadow a file the submission ships
        res.log = name
        sub.files[name] = SubmissionFile(name, data, len(data))
        runs.append(res.to_dict())


def mark_rerun_evidence(report: Report, sub: Submission) -> None:
    """Findings that rest on a rerun log are rerun evidence, whichever rule produced them.

    A rerun on non-canonical data (the verifier's own subset, say) describes that data, not the submission: its
    findings stay in the report but no longer gate (severity info), as a rescore on such data is informative only.
    """
    runs = {r.get("log"): r for r in sub.options.harness.get("rerun", [])}
    for f in report.findings:
        run = runs.get(f.primary.path) if f.primary is not None else None
        if run is None or f.evidence_level is EvidenceLevel.RERUN:
            continue  # PG802 judges canonical-ness itself (a claim on the same stream still compares)
        f.evidence_level = EvidenceLevel.RERUN
        if not run.get("canonical") and f.gating and f.verdict in (Verdict.WARN, Verdict.FAIL):
            f.severity = Severity.INFO
            f.message = f"rerun on non-canonical data, informative only: {f.message}"
