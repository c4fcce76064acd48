"""Shared settings and resource bounds for the fuzz tests (tests/test_fuzz_*.py).

CI runs a few hundred derandomized examples per property (reproducible, fast). For a longer, random run:

    PGOLF_FUZZ_EXAMPLES=5000 .venv/bin/pytest -q tests/test_fuzz_*.py

Bounds are explicit: CPU time per call (process time, so a busy shared machine does not make a test flaky), peak
Python allocation per call (tracemalloc), and for whole-CLI runs an address-space and CPU rlimit on the child.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir

# Hypothesis writes example databases and failure patches under .hypothesis/; keep the work tree clean.
set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), f"pgolf-audit-hypothesis-{os.getuid()}"))

T = TypeVar("T")
EXAMPLES = int(os.environ.get("PGOLF_FUZZ_EXAMPLES", "0") or 0)
MB = 1024 * 1024


def fuzz_settings(default_examples: int) -> settings:
    return settings(
        max_examples=EXAMPLES or default_examples,
        deadline=None,  # wall-clock deadlines flake on a shared 2-core machine; bounded() checks CPU time instead
        derandomize=not EXAMPLES,  # CI: the same examples every run; a long run explores
        database=None,  # nothing written into the work tree
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
        print_blob=True,
    )


def bounded(fn: Callable[[], T], cpu_s: float, peak_bytes: int, what: str = "") -> T:
    """Run fn; fail if it used more than cpu_s of CPU or allocated more than peak_bytes at its peak."""
    tracemalloc.start()
    t0 = time.process_time()
    try:
        result = fn()
    finally:
        cpu = time.process_time() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert cpu <= cpu_s, f"{what}: {cpu:.1f} s of CPU (bound {cpu_s} s)"
    assert peak <= peak_bytes, f"{what}: peak allocation {peak / MB:.0f} MB (bound {peak_bytes / MB:.0f} MB)"
    return result


def run_limited(
    argv: list[str], cpu_s: int, address_space: int, cwd: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command with hard limits (RLIMIT_CPU, RLIMIT_AS): a runaway is killed, and the test sees it."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    child_env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        argv,
        cwd=cwd,
        env=child_env,
        capture_output=True,
        text=True,
        preexec_fn=limit,
        timeout=cpu_s * 4 + 60,  # wall backstop on a loaded machine; the CPU limit is the real bound
        stdin=subprocess.DEVNULL,
    )


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "auditor.cli", *args]


def peak_rss_mb(usage: Any) -> float:
    return usage.ru_maxrss / 1024.0  # Linux reports KiB
