"""Run submission code in a sandbox: allow-listed environment, scratch HOME, read-only data, no network, hard limit.

What the child gets and does not get:
- Environment: only `ALLOWED_ENV` names and prefixes from the parent (PATH, locale, CUDA/NCCL/Torch/Triton knobs,
  PYTHONPATH...), plus what the harness sets (data paths, SEED, RUN_ID, the verifier's ``--env`` pairs); never a
  name that looks like a credential (`SECRET_NAME`), whichever list it came from. HOME, TMPDIR and the XDG caches
  point into the run's own scratch directory.
- Network: a new network namespace (``unshare --net``) where the machine allows one; only its own loopback is up,
  so torchrun's rendezvous on localhost works while nothing outside (the host's 127.0.0.1 included) is reachable.
  Where no namespace can be made the run goes ahead and the result says the network was NOT isolated.
- Data: the directories holding the shards and the tokenizer are bind-mounted read-only onto themselves inside a
  new mount namespace (``unshare --mount``), so the run reads the verifier's data but cannot alter it. Without a
  mount namespace this is not enforced, and the result says so.
- Processes: a new PID namespace when available (killing its first process ends every process in it, a daemonised
  grandchild included) and always a new session / process group; at the limit the group gets SIGTERM, then
  SIGKILL after a grace period.
- Output: stdout and stderr are captured through a pipe into the log up to `max_output_bytes`; the rest is counted
  and dropped (a run cannot fill the verifier's disk). Each line's arrival time is kept for the markers that split
  the wall clock into training, serialization and evaluation (`PhaseClock`).

Linux only (util-linux ``unshare``); elsewhere the run is unisolated and says so.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KILL_GRACE_S = 10.0
DEFAULT_MAX_OUTPUT = 64 * 1024 * 1024
ALLOWED_ENV = frozenset(
    {
        "PATH",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TERM",
        "PYTHONPATH",
        "VIRTUAL_ENV",
        "LD_LIBRARY_PATH",
        "USER",
        "LOGNAME",
    }
)
ALLOWED_PREFIXES = (
    "LC_",
    "CUDA_",
    "NCCL_",
    "NVIDIA_",
    "TORCH_",
    "TORCHINDUCTOR_",
    "TRITON_",
    "CUBLAS_",
    "CUDNN_",
    "OMP_",
    "MKL_",
    "PYTORCH_",
)
SECRET_NAME = re.compile(
    r"(^|_)(TOKEN|TOKENS|SECRET|SECRETS|PASSWORD|PASSWD|PASS|CREDENTIALS?|APIKEY|API_KEY|KEY|ACCESS_KEY|PRIVATE_KEY|"
    r"AUTH|COOKIE|SESSION)(_|$)|^(AWS|GH|GITHUB|HF|HUGGING_FACE|HUGGINGFACE|WANDB|OPENAI|ANTHROPIC|SSH|GOOGLE|AZURE)_",
    re.I,
)

# Runs inside the namespaces before the submission: loopback up, data read-only, then exec. Only stdlib + libc.
_INIT = r"""
import ctypes, fcntl, os, socket, struct, sys
args = sys.argv[1:]
sep = args.index("--")
ro, cmd = args[:sep], args[sep + 1:]
notes = []
try:  # SIOCSIFFLAGS(lo, IFF_UP | IFF_RUNNING): torchrun's rendezvous needs localhost inside the namespace
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", 0x1 | 0x40))
    s.close()
except OSError as exc:
    notes.append(f"loopback not up ({exc.strerror})")
libc = ctypes.CDLL(None, use_errno=True)
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC = 1, 32, 4096, 16384
for d in ro:
    b = d.encode()
    if libc.mount(b, b, None, MS_BIND | MS_REC, None) != 0 or \
       libc.mount(None, b, None, MS_REMOUNT | MS_BIND | MS_RDONLY, None) != 0:
        notes.append(f"{d} not read-only ({os.strerror(ctypes.get_errno())})")
        sys.stderr.write(f"[pgolf-audit sandbox] {notes[-1]}\n")
if notes:
    sys.stderr.write("[pgolf-audit sandbox] " + "; ".join(notes) + "\n")
sys.stderr.flush()
os.execvp(cmd[0], cmd)
"""


@dataclass
class Isolation:
    network: bool = False
    mounts: bool = False
    pids: bool = False
    prefix: list[str] = field(default_factory=list)  # the unshare command line
    reason: str = ""  # why something is not isolated

    def describe(self) -> str:
        parts = [
            "network isolated (new network namespace)" if self.network else "network NOT isolated",
            "data read-only (bind mounts)" if self.mounts else "data NOT read-only-enforced",
            "own PID namespace" if self.pids else "process group only",
        ]
        return "; ".join(parts) + (f" ({self.reason})" if self.reason else "")


_PROBED: Isolation | None = None


def probe_isolation() -> Isolation:
    """Which namespaces this machine lets us make (probed once per process, with `true` as the child)."""
    global _PROBED
    if _PROBED is not None:
        return _PROBED
    iso = Isolation()
    unshare = shutil.which("unshare")
    if not sys.platform.startswith("linux") or unshare is None:
        iso.reason = "no util-linux unshare on this machine"
        _PROBED = iso
        return iso
    user = [] if os.geteuid() == 0 else ["--map-root-user"]
    for flags, net, mnt, pid in (
        (["--net", "--mount", "--pid", "--fork", "--kill-child"], True, True, True),
        (["--net", "--mount"], True, True, False),
        (["--net"], True, False, False),
    ):
        cmd = [unshare, *user, *flags]
        try:
            ok = subprocess.run([*cmd, "true"], capture_output=True, timeout=20).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            iso.network, iso.mounts, iso.pids, iso.prefix = net, mnt, pid, cmd
            break
    if not iso.network:
        iso.reason = "unshare cannot create namespaces here (no privileges or no user namespaces)"
    _PROBED = iso
    return iso


def sandbox_env(
    parent: Mapping[str, str], set_by_harness: Mapping[str, str], home: Path
) -> tuple[dict, list]:
    """(child environment, names dropped as credentials). See the module docstring."""
    env: dict[str, str] = {}
    for key, value in parent.items():
        if (key in ALLOWED_ENV or key.startswith(ALLOWED_PREFIXES)) and not SECRET_NAME.search(key):
            env[key] = value
    dropped = sorted(k for k in set_by_harness if SECRET_NAME.search(k))
    env.update({k: v for k, v in set_by_harness.items() if not SECRET_NAME.search(k)})
    for key, sub in (
        ("HOME", ""),
        ("TMPDIR", "tmp"),
        ("XDG_CACHE_HOME", ".cache"),
        ("XDG_CONFIG_HOME", ".config"),
    ):
        path = home / sub if sub else home
        path.mkdir(parents=True, exist_ok=True)
        env[key] = str(path)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PATH", os.defpath)
    return env, dropped


# Lines that mark the end of training, the artifact written, and a score (the records' log shapes, rules.md §E).
TRAIN_END = re.compile(r"stopping_early:|^peak memory allocated|ema:applying|^Serialized model")
ARTIFACT_DONE = re.compile(r"^Total submission size|^Serialized model \S+: \d+ bytes")
SCORE = re.compile(r"val_loss[:=]\s*[\d.]+\s+val_bpb[:=]\s*[\d.]+")


@dataclass
class PhaseClock:
    """Seconds since launch at which the output first showed each marker (measured outside the run)."""

    train_end_s: float | None = None
    artifact_s: float | None = None
    last_score_s: float | None = None

    def see(self, line: str, t: float) -> None:
        text = line.strip()
        if self.train_end_s is None and TRAIN_END.search(text):
            self.train_end_s = t
        if ARTIFACT_DONE.search(text):
            self.artifact_s = t
        if SCORE.search(text) and self.train_end_s is not None:
            self.last_score_s = t

    def to_dict(self, total_s: float) -> dict[str, float | None]:
        eval_s = (
            self.last_score_s - (self.artifact_s or self.train_end_s or 0.0)
            if self.last_score_s is not None
            else None
        )
        return {
            "launch_to_train_end_s": self.train_end_s,
            "train_end_to_artifact_s": (
                self.artifact_s - self.train_end_s
                if self.artifact_s is not None and self.train_end_s is not None
                else None
            ),
            "eval_s": eval_s,
            "total_s": total_s,
        }


@dataclass
class SandboxResult:
    returncode: int | None = None
    timed_out: bool = False
    wall_s: float = 0.0
    output_bytes: int = 0
    dropped_bytes: int = 0
    isolation: str = ""
    network_isolated: bool = False
    data_read_only: bool = False
    dropped_env: list[str] = field(default_factory=list)
    phases: dict[str, float | None] = field(default_factory=dict)
    error: str | None = None


def _pump(pipe: Any, log: Any, limit: int, res: SandboxResult, clock: PhaseClock, t0: float) -> None:
    pending = b""
    while True:
        chunk = pipe.read1(65536) if hasattr(pipe, "read1") else pipe.read(65536)
        if not chunk:
            break
        room = limit - res.output_bytes
        if room > 0:
            log.write(chunk[:room])
            log.flush()
        res.output_bytes += min(len(chunk), max(room, 0))
        res.dropped_bytes += max(len(chunk) - max(room, 0), 0)
        pending += chunk
        *lines, pending = pending.split(b"\n")
        pending = pending[-65536:]  # a line without newlines cannot grow without bound
        now = time.monotonic() - t0
        for line in lines:
            clock.see(line.decode("utf-8", "replace"), now)
    if pending:
        clock.see(pending.decode("utf-8", "replace"), time.monotonic() - t0)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the run's process group (its own session), then SIGKILL after a grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=KILL_GRACE_S)
            return
        except subprocess.TimeoutExpired:
            continue


def run_sandboxed(
    command: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    log_path: Path,
    timeout_s: float,
    read_only: list[Path] | None = None,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT,
    isolate: bool = True,
) -> SandboxResult:
    """Run `command` under the sandbox of the module docstring; never raises for a failed run."""
    res = SandboxResult()
    iso = probe_isolation() if isolate else Isolation(reason="isolation switched off by the caller")
    res.isolation, res.network_isolated, res.data_read_only = iso.describe(), iso.network, iso.mounts
    full = list(command)
    if iso.network:
        dirs = sorted({str(p.resolve()) for p in (read_only or []) if p.exists()}) if iso.mounts else []
        full = [*iso.prefix, sys.executable, "-c", _INIT, *dirs, "--", *command]
        res.data_read_only = iso.mounts and bool(dirs)
    clock = PhaseClock()
    t0 = time.monotonic()
    with log_path.open("wb") as log:
        try:
            proc = subprocess.Popen(
                full,
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            res.error = f"cannot start {command[0]}: {exc.strerror or exc}"
            return res
        pump = threading.Thread(
            target=_pump, args=(proc.stdout, log, max_output_bytes, res, clock, t0), daemon=True
        )
        pump.start()
        try:
            res.returncode = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            res.timed_out = True
            _kill(proc)
            res.returncode = proc.returncode
        finally:
            if proc.poll() is None:  # interrupted (Ctrl-C): never leave the run behind
                _kill(proc)
        # the pipe closes when every holder exits; a daemonised grandchild outside a PID namespace may keep it
        pump.join(timeout=KILL_GRACE_S)
        if pump.is_alive():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            pump.join(timeout=2.0)
    res.wall_s = time.monotonic() - t0
    res.phases = clock.to_dict(res.wall_s)
    if res.dropped_bytes:
        with log_path.open("ab") as log:
            log.write(
                f"\n[pgolf-audit harness] output capped at {max_output_bytes:,} bytes; "
                f"{res.dropped_bytes:,} bytes dropped\n".encode()
            )
    return res
