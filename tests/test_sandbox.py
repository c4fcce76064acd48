"""The rerun sandbox (auditor/harness/sandbox.py): what a submission's code can and cannot reach.

Each test runs a small script written here as the "submission": it reads a planted secret, connects to a server
the test holds on the host's 127.0.0.1, writes into the data directory, overruns its limit with children that
keep beating, floods stdout. Isolation that the machine cannot provide is skipped with the reason, never passed.
"""

from __future__ import annotations

import os
import socket
import sys
import textwrap
import time
from pathlib import Path

import pytest

from auditor.harness.sandbox import probe_isolation, run_sandboxed, sandbox_env

ISO = probe_isolation()
needs_netns = pytest.mark.skipif(not ISO.network, reason=f"no network namespace here: {ISO.reason}")
needs_mountns = pytest.mark.skipif(not ISO.mounts, reason=f"no mount namespace here: {ISO.reason}")


def _run(tmp_path: Path, code: str, timeout: float = 30.0, **kw):
    script = tmp_path / "sub.py"
    script.write_text(textwrap.dedent(code))
    env, dropped = sandbox_env(os.environ, kw.pop("harness_env", {}), tmp_path / "home")
    log = tmp_path / "out.log"
    res = run_sandboxed(
        [sys.executable, str(script)], cwd=tmp_path, env=env, log_path=log, timeout_s=timeout, **kw
    )
    return res, log.read_text(errors="replace"), dropped


def test_planted_secret_is_not_visible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGOLF_PLANTED_SECRET", "s3cret-value")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_planted")
    monkeypatch.setenv("SOME_UNLISTED_VAR", "unlisted")
    res, out, dropped = _run(
        tmp_path,
        """
        import os
        print("ENV", sorted(os.environ))
        print("VALUES", "|".join(os.environ.values()))
        print("HOME", os.environ["HOME"])
        """,
        harness_env={"SEED": "42", "TOKENIZER_PATH": "/x/tok.model", "HF_TOKEN": "hf_from_env_flag"},
    )
    assert res.returncode == 0, out
    assert "s3cret-value" not in out and "ghp_planted" not in out and "unlisted" not in out
    assert "hf_from_env_flag" not in out and dropped == ["HF_TOKEN"]  # an --env credential is refused too
    assert "'SEED'" in out and "'TOKENIZER_PATH'" in out  # what the harness sets does arrive
    assert f"HOME {tmp_path / 'home'}" in out


@needs_netns
def test_socket_to_host_loopback_fails(tmp_path: Path) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    res, out, _ = _run(
        tmp_path,
        f"""
        import socket
        s = socket.socket()
        s.settimeout(3)
        try:
            s.connect(("127.0.0.1", {port}))
            print("CONNECTED")
        except OSError as exc:
            print("REFUSED", exc)
        """,
    )
    try:
        accepted = server.accept()[0]
        accepted.close()
    except TimeoutError:
        accepted = None
    server.close()
    assert res.network_isolated and "network isolated" in res.isolation
    assert "REFUSED" in out and "CONNECTED" not in out and accepted is None


def test_without_isolation_the_same_socket_connects_and_the_result_says_so(tmp_path: Path) -> None:
    """The control: the network test above fails for the sandbox's reason, not because the script is broken."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    res, out, _ = _run(
        tmp_path,
        f"""
        import socket
        socket.create_connection(("127.0.0.1", {port}), timeout=3)
        print("CONNECTED")
        """,
        isolate=False,
    )
    server.close()
    assert "CONNECTED" in out and not res.network_isolated and "network NOT isolated" in res.isolation


@needs_mountns
def test_data_directory_is_read_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "fineweb_val_000000.bin").write_bytes(b"tokens")
    work = tmp_path / "work"
    work.mkdir()
    res, out, _ = _run(
        work,
        f"""
        from pathlib import Path
        d = Path({str(data)!r})
        print("READ", (d / "fineweb_val_000000.bin").read_bytes())
        for name in ("fineweb_val_000000.bin", "planted.bin"):
            try:
                (d / name).write_bytes(b"overwritten")
                print("WROTE", name)
            except OSError as exc:
                print("DENIED", name, exc.errno)
        Path("scratch_ok.txt").write_text("fine")
        """,
        read_only=[data],
    )
    assert res.returncode == 0 and res.data_read_only, out
    assert "READ b'tokens'" in out and "WROTE" not in out and out.count("DENIED") == 2
    assert (data / "fineweb_val_000000.bin").read_bytes() == b"tokens" and not (data / "planted.bin").exists()
    assert (work / "scratch_ok.txt").read_text() == "fine"  # the run's own directory stays writable


def _beating(path: Path, wait: float = 1.0) -> bool:
    """Whether the file at `path` is still being rewritten."""
    before = path.read_text() if path.exists() else ""
    time.sleep(wait)
    return path.exists() and path.read_text() != before


def test_overrun_is_killed_with_its_children(tmp_path: Path) -> None:
    beat = "import sys, time\nn = 0\nwhile True:\n    n += 1\n    open(sys.argv[1], 'w').write(str(n))\n    time.sleep(0.05)\n"
    res, out, _ = _run(
        tmp_path,
        f"""
        import os, subprocess, sys, time
        code = {beat!r}
        subprocess.Popen([sys.executable, "-c", code, {str(tmp_path / "child.beat")!r}])
        subprocess.Popen([sys.executable, "-c", code, {str(tmp_path / "daemon.beat")!r}], start_new_session=True)
        print("started", flush=True)
        time.sleep(300)
        """,
        timeout=3.0,
    )
    assert res.timed_out and res.wall_s < 20 and "started" in out
    assert (tmp_path / "child.beat").exists() and (tmp_path / "daemon.beat").exists()  # both ran
    assert not _beating(tmp_path / "child.beat")  # the child died with the run's process group
    if ISO.pids:  # a grandchild that left the process group dies with the PID namespace
        assert not _beating(tmp_path / "daemon.beat")


def test_output_is_capped(tmp_path: Path) -> None:
    res, out, _ = _run(
        tmp_path,
        """
        import sys
        for _ in range(200):
            sys.stdout.write("x" * 9999 + "\\n")
        print("quantized_ttt val_loss:2.0 val_bpb:1.0 eval_time:1ms")
        """,
        max_output_bytes=50_000,
    )
    assert res.returncode == 0
    assert res.output_bytes == 50_000 and res.dropped_bytes > 1_900_000
    assert "output capped at 50,000 bytes" in out and len(out) < 50_200


def test_phase_clock_measures_training_and_evaluation_from_outside(tmp_path: Path) -> None:
    res, _, _ = _run(
        tmp_path,
        """
        import time
        print("step:1/10 train_loss:5.0", flush=True); time.sleep(0.6)
        print("stopping_early: wallclock_cap train_time: 600ms step: 1/10", flush=True); time.sleep(0.4)
        print("Total submission size quantized+brotli: 123 bytes", flush=True); time.sleep(0.6)
        print("quantized_ttt val_loss:2.00000000 val_bpb:1.00000000 eval_time:600ms", flush=True)
        """,
    )
    ph = res.phases
    assert ph["launch_to_train_end_s"] is not None and ph["launch_to_train_end_s"] >= 0.55
    assert 0.3 <= ph["train_end_to_artifact_s"] <= 2.0 and 0.5 <= ph["eval_s"] <= 2.5
    assert ph["total_s"] >= ph["launch_to_train_end_s"] + ph["eval_s"]
