"""Planted payloads: every static entry point of pgolf-audit reads hostile submissions without running them.

The fixtures `fixtures/payload_*` (written by fixtures/make_payloads.py) carry code that, IF anything imported,
exec'd, eval'd, unpickled or shell-ran it, would write a marker file `CANARY_*`, connect to a local TCP port and
spawn a child process that writes another marker. Each test runs one entry point in a subprocess with a fresh HOME,
a fresh working directory, $PGOLF_CANARY_DIR/$PGOLF_CANARY_PORT pointing at a marker folder and at a listening
socket on 127.0.0.1, and asserts: no marker anywhere, no connection on the socket, and (from a CPython audit hook
installed before the auditor is imported) no process other than `git` started, no socket connected, no pickle
unpickled, no code object of a payload executed, no module imported from the submission, no file written outside
the output folder.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "fixtures"
PAYLOADS = sorted(p.name for p in FIXTURES.iterdir() if p.name.startswith("payload_") and p.is_dir())
TRACK = "records/track_10min_16mb"

# Runs inside the audited process: the hook is installed before anything of the auditor is imported, and every
# violation is appended to a file at once (so a forked worker's violations are kept too).
RUNNER = r"""
import json, os, sys
LOG = os.environ["PGOLF_HOOK_LOG"]
ROOTS = tuple(json.loads(os.environ["PGOLF_HOOK_ROOTS"]))
OUT = os.environ["PGOLF_HOOK_OUT"]
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

BUSY = []

def note(kind, detail):
    if BUSY:
        return
    BUSY.append(1)
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps([kind, str(detail)[:300]]) + "\n").encode())
    finally:
        os.close(fd)
        BUSY.pop()

def payload_code(code, depth=0):
    if "_pgolf_canary" in code.co_names or code.co_name == "_pgolf_canary":
        return True
    return depth < 20 and any(hasattr(c, "co_code") and payload_code(c, depth + 1) for c in code.co_consts)

def hook(event, args):
    if event == "subprocess.Popen":
        argv = args[1]
        first = argv.split()[0] if isinstance(argv, (str, bytes)) and argv.split() else (list(argv or [args[0]]) or [""])[0]
        exe = os.path.basename(os.fsdecode(first))
        if exe != "git":
            note("spawn", args[1])
    elif event in ("os.system", "os.exec", "os.spawn", "os.posix_spawn", "pty.spawn"):
        note("spawn", (event, args))
    elif event in ("socket.connect", "socket.sendto", "socket.getaddrinfo"):
        note("socket", (event, args[1:]))
    elif event == "pickle.find_class":
        note("unpickle", args)
    elif event == "exec" and hasattr(args[0], "co_names") and payload_code(args[0]):
        note("exec", args[0].co_filename)
    elif event == "open" and args[0] is not None and not isinstance(args[0], int):
        path, mode, flags = str(args[0]), str(args[1] or ""), int(args[2] or 0)
        if (any(c in mode for c in "wax+") or flags & WRITE) and path != LOG:
            real = os.path.realpath(path)
            if not (real.startswith(OUT + os.sep) or real == os.devnull):
                note("write", path)

sys.addaudithook(hook)
from auditor.cli import main

rcs = []
for argv in json.loads(sys.argv[1]):
    if argv[0] == "--control--":  # the harness's own check: really run a payload and expect to be caught
        import runpy
        sys.path.insert(0, os.path.dirname(argv[1]))  # as `python train_gpt.py` would
        try:
            runpy.run_path(argv[1], run_name="__main__")
        except Exception:  # the payload has fired by then; what the rest of the script does is beside the point
            pass
        continue
    try:
        rcs.append(main(argv))
    except SystemExit as exc:
        rcs.append(exc.code)
for name, mod in list(sys.modules.items()):
    where = getattr(mod, "__file__", None)
    if where and os.path.realpath(where).startswith(ROOTS):
        note("import", name + " from " + where)
print(json.dumps({"rcs": rcs}))
"""


@dataclass
class Sandbox:
    root: Path
    folders: Path  # copies of the payload fixtures
    repo: Path  # git repository: base commit, and refs/pull/1/head adding every payload folder
    base: str
    head: str
    home: Path
    cwd: Path
    canary: Path
    out: Path
    listener: socket.socket

    def snapshot(self) -> set[Path]:
        skip = {self.out, self.repo / ".git"}
        files: set[Path] = set()
        for top in (self.root,):
            for dirpath, dirnames, filenames in os.walk(top):
                dirnames[:] = [d for d in dirnames if Path(dirpath, d) not in skip]
                files.update(Path(dirpath, f) for f in filenames)
        return files

    def env(self, hook_log: Path) -> dict[str, str]:
        keep = {
            k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "SYSTEMROOT", "TMPDIR")
        }
        return {
            **keep,
            "HOME": str(self.home),
            "PGOLF_CANARY_DIR": str(self.canary),
            "PGOLF_CANARY_PORT": str(self.listener.getsockname()[1]),
            "PGOLF_HOOK_LOG": str(hook_log),
            "PGOLF_HOOK_ROOTS": json.dumps([str(self.root)]),
            "PGOLF_HOOK_OUT": os.path.realpath(self.out),
            "GIT_CONFIG_NOSYSTEM": "1",
        }


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com"}
    env.update(GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
    ).stdout.strip()


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    sb = make_sandbox(Path(os.path.realpath(tmp_path_factory.mktemp("payloads"))))
    yield sb
    sb.listener.close()


def make_sandbox(root: Path) -> Sandbox:
    folders = root / "folders"
    for name in PAYLOADS:
        shutil.copytree(FIXTURES / name, folders / name)
    repo = root / "repo"
    (repo / "records").mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("base\n")
    _git(repo, "add", "README.md")
    _git(repo, "commit", "-qm", "base")
    base = _git(repo, "rev-parse", "HEAD")
    for name in PAYLOADS:
        shutil.copytree(FIXTURES / name, repo / TRACK / f"2026-04-01_{name}")
    _git(repo, "add", "records")
    _git(repo, "commit", "-qm", "pr")
    head = _git(repo, "rev-parse", "HEAD")
    _git(repo, "update-ref", "refs/pull/1/head", head)
    _git(repo, "checkout", "-q", base)  # the work tree holds no payload: only git objects do
    _git(repo, "branch", "-f", "main", base)  # main is the PR's base
    dirs = {n: root / n for n in ("home", "cwd", "canary", "out")}
    for d in dirs.values():
        d.mkdir()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.setblocking(False)
    return Sandbox(root, folders, repo, base, head, listener=listener, **dirs)


def _connections(listener: socket.socket) -> int:
    n = 0
    while True:
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return n
        conn.close()
        n += 1


def run_entry_point(
    sb: Sandbox, commands: list[list[str]], cwd: Path | None = None, script: bool = False
) -> list[int]:
    """Run pgolf-audit commands in one fresh process; fail on any sign of submission code running."""
    hook_log = sb.root / f"hook-{len(list(sb.root.glob('hook-*')))}.jsonl"
    before = sb.snapshot()
    env = sb.env(hook_log)
    if script:  # the installed console script, exactly as a maintainer runs it
        exe = Path(sys.executable).with_name("pgolf-audit")
        assert len(commands) == 1 and exe.is_file()
        argv = [str(exe), *commands[0]]
    else:  # -I: no cwd, script dir or PYTHON* variables on sys.path; -B: no .pyc writes
        argv = [sys.executable, "-I", "-B", "-c", RUNNER, json.dumps(commands)]
    proc = subprocess.run(
        argv,
        cwd=cwd or sb.cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    new_files = sorted(str(p.relative_to(sb.root)) for p in sb.snapshot() - before if p != hook_log)
    violations = hook_log.read_text().splitlines() if hook_log.exists() else []
    assert new_files == [], f"files appeared: {new_files}"
    assert _connections(sb.listener) == 0, "a payload connected to the canary socket"
    assert violations == [], "\n".join(violations)
    if script:
        return [proc.returncode]
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])["rcs"]


FORMATS = ("text", "json", "sarif", "markdown")


@pytest.mark.parametrize("fixture", ["payload_plain", "payload_sibling"])
def test_the_harness_catches_a_payload_that_runs(tmp_path: Path, fixture: str) -> None:
    """Control: running a payload for real (runpy, in the sandboxed child) must trip the markers, the socket and
    the hook, or the tests above prove nothing."""
    sb = make_sandbox(Path(os.path.realpath(tmp_path)))
    target = sb.folders / fixture / "train_gpt.py"
    with pytest.raises(AssertionError) as caught:
        run_entry_point(sb, [["--control--", str(target)]], cwd=target.parent)
    message = str(caught.value)
    assert "CANARY_" in message  # the marker file
    sb.listener.close()
    violations = "\n".join(p.read_text() for p in sb.root.glob("hook-*.jsonl"))
    assert '"socket"' in violations and '"spawn"' in violations and '"exec"' in violations
    if fixture == "payload_sibling":  # the sibling module was imported from the submission
        assert '"import"' in violations and "canary_utils" in violations


def test_payload_fixtures_are_live(sandbox: Sandbox) -> None:
    """The fixtures are real payloads: decoded statically, every planted construct calls the canary, and the pickle
    and .npz payloads name posix.system (checked with pickletools, which never loads)."""
    import pickletools

    from auditor.submission import load_path
    from auditor.unpack import unpack_source

    for name in PAYLOADS:
        sub = load_path(sandbox.folders / name)
        texts = []
        for path in sub.code_paths:
            text = sub.read_text(path)
            assert text is not None
            texts += [u.text for u in unpack_source(path, text, read_file=sub.read_text).units]
        assert sum("_pgolf_canary(" in t for t in texts) >= 1, name
    pkl = (sandbox.folders / "payload_plain/final_model.pt").read_bytes()
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(pkl)]
    assert ("GLOBAL", "posix system") in ops and ops[-2][0] == "REDUCE"


def test_fixture_generator_is_deterministic(tmp_path: Path) -> None:
    sys.path.insert(0, str(FIXTURES))
    try:
        import make_payloads
    finally:
        sys.path.remove(str(FIXTURES))
    for path in make_payloads.write_all(tmp_path):
        rel = path.relative_to(tmp_path)
        assert path.read_bytes() == (FIXTURES / rel).read_bytes(), f"{rel} differs from the generator"


def test_audit_every_format(sandbox: Sandbox) -> None:
    commands = []
    for name in PAYLOADS:
        folder = str(sandbox.folders / name)
        for fmt in FORMATS:
            commands.append(
                ["audit", folder, "--format", fmt, "--output", str(sandbox.out / f"{name}.{fmt}")]
            )
        commands.append([folder, "-q"])  # default command, text to stdout
    rcs = run_entry_point(sandbox, commands)
    assert all(rc in (0, 1, 3) for rc in rcs), rcs
    report = json.loads((sandbox.out / "payload_packed.json").read_text())
    assert [la["codecs"] for la in report["layers"]][0] == ["base85", "lzma"], "decoded statically"


def test_audit_of_git_objects(sandbox: Sandbox) -> None:
    commands = [
        [
            "audit",
            "--git-dir",
            str(sandbox.repo),
            "--rev",
            "refs/pull/1/head",
            "--path",
            f"{TRACK}/2026-04-01_{n}",
        ]
        + ["--format", "json", "--output", str(sandbox.out / f"git_{n}.json")]
        for n in PAYLOADS
    ]
    assert all(rc in (0, 1) for rc in run_entry_point(sandbox, commands))


def test_console_script_run_inside_the_submission_folder(sandbox: Sandbox) -> None:
    """The worst working directory: the submission's own folder, where sitecustomize.py, conftest.py and a
    brotli.py shadowing a module the auditor imports lazily sit next to the process."""
    for name in ("payload_import_hooks", "payload_sibling"):
        folder = sandbox.folders / name
        out = sandbox.out / f"script_{name}.json"
        (rc,) = run_entry_point(
            sandbox, [[".", "--format", "json", "--output", str(out)]], cwd=folder, script=True
        )
        assert rc in (0, 1, 3) and json.loads(out.read_text())["overall"]


def test_rescore(sandbox: Sandbox) -> None:
    commands = [
        [
            "rescore",
            str(sandbox.folders / n),
            "--format",
            fmt,
            "--output",
            str(sandbox.out / f"rescore_{n}.{fmt}"),
        ]
        for n in PAYLOADS
        for fmt in ("text", "csv", "json")
    ]
    assert all(rc == 0 for rc in run_entry_point(sandbox, commands))


def test_bot_dry_run(sandbox: Sandbox) -> None:
    out = sandbox.out / "comment.md"
    args = ["bot", "--git-dir", str(sandbox.repo), "--base", sandbox.base, "--head", "refs/pull/1/head"]
    (rc,) = run_entry_point(sandbox, [[*args, "--dry-run", "--output", str(out)]])
    assert rc in (0, 1)
    body = out.read_text()
    assert all(n in body for n in PAYLOADS)


def test_sweep(sandbox: Sandbox) -> None:
    out = sandbox.out / "sweep.json"
    (rc,) = run_entry_point(
        sandbox,
        [
            [
                "sweep",
                "--git-dir",
                str(sandbox.repo),
                "--rev",
                "refs/pull/1/head",
                "-f",
                "json",
                "-o",
                str(out),
            ]
        ],
    )
    results = json.loads(out.read_text())
    assert rc in (0, 1) and len(results) == len(PAYLOADS)
    assert not [r for r in results if r["overall"] == "ERROR"]


def test_corpus(sandbox: Sandbox) -> None:
    labels = sandbox.out / "labels.tsv"
    rows = ["id\tpr\tverdict\trules\trepo\tcommit\tpath"]
    rows += [
        f"P{i}\t#1\tillegal\teval_io\to/r\t{sandbox.head}\t{TRACK}/2026-04-01_{n}/train_gpt.py"
        for i, n in enumerate(PAYLOADS)
    ]
    labels.write_text("\n".join(rows) + "\n")
    out = sandbox.out / "corpus.json"
    cmd = ["corpus", str(labels), "--git-dir", str(sandbox.repo), "-f", "json", "-o", str(out), "--jobs", "1"]
    (rc,) = run_entry_point(sandbox, [cmd])
    assert rc in (0, 1) and out.stat().st_size > 0


def test_scan(sandbox: Sandbox) -> None:
    helptext = subprocess.run(
        [sys.executable, "-m", "auditor.cli", "--help"], capture_output=True, text=True, cwd=REPO
    ).stdout
    if "scan" not in helptext:
        pytest.skip("this build has no `scan` command yet")
    out = sandbox.out / "scan.jsonl"
    cmd = ["scan", "--git-dir", str(sandbox.repo), "--output", str(out), "--jobs", "1"]
    (rc,) = run_entry_point(sandbox, [cmd])
    lines = [json.loads(ln) for ln in out.read_text().splitlines() if ln.strip()]
    assert rc in (0, 1) and len(lines) == len(PAYLOADS), lines
