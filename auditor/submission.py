"""Loading a submission: a record folder, a single .py file, or a folder inside a git object (no checkout).

Loading reads bytes only. Nothing here imports, executes or evaluates submission code.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from auditor.errors import InputError
from auditor.options import AuditOptions

MAX_FILE_BYTES = 64 * 1024 * 1024  # a single file larger than this is not read (reported instead)
MAX_TOTAL_BYTES = 512 * 1024 * 1024
MAX_FILES = 5000
# Python files beyond these are not parsed (a WARN says so): parsing cost and memory grow with the token count,
# and a dense 5 MB one-liner takes minutes and gigabytes in `ast`. The largest real record script is ~150 KB and
# ~30,000 tokens, so both limits leave a wide margin.
MAX_CODE_BYTES = 8 * 1024 * 1024
MAX_CODE_TOKENS = 300_000

CODE_SUFFIXES = {".py"}
LOG_SUFFIXES = {".log", ".txt"}
NOT_LOGS = re.compile(r"(^|/)(requirements[^/]*|readme[^/]*|license[^/]*|notice[^/]*)\.txt$", re.I)
SKIP_DIRS = {".git", "__pycache__", ".venv", "node_modules"}


_STRINGS_AND_COMMENTS = re.compile(
    r'''(?:"""(?:[^"\\]|\\.|"(?!""))*+"""|\'\'\'(?:[^'\\]|\\.|'(?!\'\'))*+\'\'\''''
    r"""|"(?:[^"\\\n]|\\.)*+"|'(?:[^'\\\n]|\\.)*+'|\#[^\n]*+)""",
    re.S,
)
_WORD = re.compile(r"\w+")
_SPACE = re.compile(r"\s+")


def estimate_tokens(text: str) -> int:
    """Roughly the number of Python tokens (a string literal or comment counts once), at regex speed."""
    stripped = _STRINGS_AND_COMMENTS.sub("0", text)
    rest, words = _WORD.subn("", stripped)
    return words + len(_SPACE.sub("", rest))


def code_limit_problem(name: str, text: str) -> str | None:
    """Why `text` is too big to parse safely, or None. Shared with the unpacker for decoded layers."""
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > MAX_CODE_BYTES:
        return f"{name}: {size:,} bytes of Python is over the {MAX_CODE_BYTES:,}-byte analysis limit; not analysed"
    if len(text) > MAX_CODE_TOKENS:  # tokens <= characters, so only big texts need counting
        tokens = estimate_tokens(text)
        if tokens > MAX_CODE_TOKENS:
            return (
                f"{name}: about {tokens:,} tokens of Python is over the {MAX_CODE_TOKENS:,}-token analysis "
                "limit; not analysed"
            )
    return None


@dataclass
class SubmissionFile:
    path: str  # POSIX path relative to the submission root
    data: bytes | None  # None when the file was too large (or failed) to read
    size: int
    error: str | None = None  # why the file could not be read, when it could not

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.path).suffix.lower()

    def text(self) -> tuple[str | None, str | None]:
        """(text, problem): UTF-8 text, or None and a message saying why not."""
        if self.data is None:
            if self.error:
                return None, f"{self.path}: not read ({self.error})"
            return (
                None,
                f"{self.path}: not read ({self.size:,} bytes is over the {MAX_FILE_BYTES:,}-byte limit)",
            )
        if b"\x00" in self.data[:8192]:
            return None, f"{self.path}: binary file (NUL bytes), not analysed"
        try:
            text = self.data.decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, f"{self.path}: not valid UTF-8 at byte {exc.start}; not analysed"
        if self.suffix in CODE_SUFFIXES:
            problem = code_limit_problem(self.path, text)
            if problem:
                return None, problem
        return text, None


@dataclass
class Submission:
    root: str  # display root (folder path, file path or git rev:path)
    files: dict[str, SubmissionFile] = field(default_factory=dict)
    git_rev: str | None = None
    git_path: str | None = None
    single_file: bool = False
    load_problems: list[str] = field(default_factory=list)
    # run options that some checks read (a reference record for significance tests, verifier results)
    options: AuditOptions = field(default_factory=AuditOptions)

    # -- classification ---------------------------------------------------------------------------------------
    @property
    def code_paths(self) -> list[str]:
        return sorted(p for p, f in self.files.items() if f.suffix in CODE_SUFFIXES)

    @property
    def log_paths(self) -> list[str]:
        return sorted(
            p
            for p, f in self.files.items()
            if f.suffix in LOG_SUFFIXES and not NOT_LOGS.search(p) and f.data is not None
        )

    @property
    def entry(self) -> str | None:
        """train_gpt.py (shallowest wins), else the single .py with a __main__ guard, else the only .py."""
        code = self.code_paths
        named = sorted(
            (p for p in code if PurePosixPath(p).name == "train_gpt.py"), key=lambda p: p.count("/")
        )
        if named:
            return named[0]
        mains = [p for p in code if self.files[p].data and b"__main__" in (self.files[p].data or b"")]
        if len(mains) >= 1:
            return sorted(mains, key=lambda p: (p.count("/"), p))[0]
        return code[0] if len(code) == 1 else None

    def read_text(self, path: str) -> str | None:
        f = self.files.get(path)
        if f is None:
            return None
        text, _ = f.text()
        return text

    @property
    def readme(self) -> str | None:
        for p in sorted(self.files, key=lambda p: (p.count("/"), p)):
            if PurePosixPath(p).name.lower() == "readme.md":
                return self.read_text(p)
        return None

    @property
    def claims_path(self) -> str | None:
        if "submission.json" in self.files:
            return "submission.json"
        others = sorted(p for p in self.files if "/" not in p and re.fullmatch(r"submission[\w-]*\.json", p))
        return others[0] if others else None

    def claims(self) -> tuple[dict[str, Any] | None, str | None]:
        """(parsed submission.json, problem)."""
        path = self.claims_path
        if path is None:
            return None, None
        text = self.read_text(path)
        if text is None:
            return None, f"{path}: unreadable"
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            return None, f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        except RecursionError:  # `[[[[...]]]]` nested deeper than the decoder's stack: hostile, not a crash
            return None, f"{path}: JSON nested too deeply to read"
        except ValueError as exc:  # an integer over Python's 4,300-digit conversion limit
            return None, f"{path}: unreadable JSON value: {str(exc)[:80]}"
        if not isinstance(data, dict):
            return None, f"{path}: top level is {type(data).__name__}, expected an object"
        return data, None

    @property
    def folder_name(self) -> str:
        if self.git_path:
            return PurePosixPath(self.git_path).name
        return Path(self.root).name


# ---------------------------------------------------------------------------------------------------------------
def load_path(path: str | Path) -> Submission:
    p = Path(path)
    if not p.exists():
        raise InputError(f"no such file or folder: {p}")
    if p.is_file():
        return _load_single(p)
    if p.is_dir():
        return _load_folder(p)
    raise InputError(f"not a regular file or folder: {p}")


def _read_capped(p: Path) -> SubmissionFile:
    try:
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            return SubmissionFile(p.name, None, size)
        return SubmissionFile(p.name, p.read_bytes(), size)
    except OSError as exc:  # permissions, a file removed while reading, an unreadable mount...
        return SubmissionFile(p.name, None, 0, error=exc.strerror or type(exc).__name__)


def _check_auditable(sub: Submission) -> None:
    """Refuse input with nothing to audit (exit 2); say so (WARN) when the code part is missing."""
    has_claims = sub.claims_path is not None
    has_readme = any(PurePosixPath(p).name.lower() == "readme.md" for p in sub.files)
    if not (sub.code_paths or sub.log_paths or has_claims or has_readme):
        names = ", ".join(sorted(sub.files)[:5]) + (", ..." if len(sub.files) > 5 else "")
        raise InputError(
            f"{sub.root}: nothing to audit: no .py script, run log, README.md or submission.json "
            f"(found {len(sub.files)} other file{'s' if len(sub.files) != 1 else ''}: {names})"
        )
    if not sub.code_paths:
        sub.load_problems.append(
            "no Python code in the submission (train_gpt.py is required): only logs and metadata were audited"
        )
    elif sub.entry is None:
        sub.load_problems.append(
            f"no entry script: no train_gpt.py and none of the {len(sub.code_paths)} .py files has a __main__ "
            "guard, so rules that follow the entry script could not run"
        )


def _load_single(p: Path) -> Submission:
    if p.suffix.lower() not in CODE_SUFFIXES:
        raise InputError(f"{p}: a single file must be a .py script (got {p.suffix or 'no suffix'})")
    f = _read_capped(p)
    if f.error:
        raise InputError(f"{p}: cannot read: {f.error}")
    return Submission(root=str(p), files={p.name: f}, single_file=True)


def _walk_files(root: Path):
    """Regular files under root in sorted order; symlinks and SKIP_DIRS are not followed. Lazy, so a huge tree
    (someone pointing at /) stops after MAX_FILES instead of being listed in full first."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False, onerror=None):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            fp = Path(dirpath, name)
            if fp.is_symlink() or not fp.is_file():
                continue  # links, FIFOs, sockets, devices
            yield fp


def _load_folder(root: Path) -> Submission:
    sub = Submission(root=str(root))
    total = 0
    for fp in _walk_files(root):
        if len(sub.files) >= MAX_FILES:
            sub.load_problems.append(f"more than {MAX_FILES} files; the rest were not read")
            break
        rel = fp.relative_to(root).as_posix()
        f = _read_capped(fp)
        f.path = rel
        total += f.size if f.data is not None else 0
        if total > MAX_TOTAL_BYTES:
            sub.load_problems.append(f"folder is over {MAX_TOTAL_BYTES:,} bytes; stopped reading at {rel}")
            break
        if f.error:
            sub.load_problems.append(f"{rel}: not read ({f.error})")
        sub.files[rel] = f
    if not sub.files:
        raise InputError(f"{root}: empty folder, nothing to audit")
    _check_auditable(sub)
    return sub


def git_command(git_dir: str | Path) -> list[str]:
    """`git` pointed at a repository: a bare one (or a .git folder) by --git-dir, a work tree by -C."""
    git_dir = str(git_dir)
    return ["git", f"--git-dir={git_dir}"] if Path(git_dir, "HEAD").exists() else ["git", "-C", git_dir]


def load_git(git_dir: str | Path, rev: str, path: str) -> Submission:
    """Read every blob under `rev:path` with git plumbing; nothing is checked out."""
    git_dir = str(git_dir)
    path = path.strip("/")
    if not Path(git_dir).is_dir():
        raise InputError(f"no such git repository: {git_dir}")
    if rev.startswith("-") or "\n" in rev or not rev.strip():
        raise InputError(f"not a git revision: {rev!r}")
    base = git_command(git_dir)
    try:
        ls = subprocess.run(
            [*base, "ls-tree", "-r", "-l", "-z", rev, "--", path],
            capture_output=True,
            check=False,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InputError(f"cannot run git on {git_dir}: {exc}") from exc
    if ls.returncode != 0:
        raise InputError(f"git ls-tree {rev} -- {path} failed: {ls.stderr.decode(errors='replace').strip()}")
    entries: list[tuple[str, str, int]] = []
    for rec in ls.stdout.split(b"\x00"):
        if not rec:
            continue
        meta, _, name = rec.partition(b"\t")
        parts = meta.split()
        if len(parts) < 4 or parts[1] != b"blob":
            continue
        size = int(parts[3]) if parts[3].isdigit() else 0
        entries.append((parts[2].decode(), name.decode("utf-8", errors="replace"), size))
    if not entries:
        raise InputError(f"nothing at {rev}:{path} in {git_dir}")
    if len(entries) == 1 and entries[0][1] == path:
        prefix = str(PurePosixPath(path).parent)
        prefix = "" if prefix == "." else prefix
    else:
        prefix = path
    sub = Submission(root=f"{rev}:{path}", git_rev=rev, git_path=path)
    wanted = [(sha, name, size) for sha, name, size in entries[:MAX_FILES]]
    if len(entries) > MAX_FILES:
        sub.load_problems.append(f"more than {MAX_FILES} files; the rest were not read")
    # The same caps as a folder on disk: a file over MAX_FILE_BYTES is not read, and blobs stop once the folder
    # holds MAX_TOTAL_BYTES (git cat-file's output is held in memory: a PR of 60 MB blobs must not take gigabytes).
    read: set[str] = set()
    total, over = 0, f"the folder is over {MAX_TOTAL_BYTES:,} bytes"
    for sha, _name, size in wanted:
        if size > MAX_FILE_BYTES:
            continue
        if total + size > MAX_TOTAL_BYTES:
            if over not in sub.load_problems:
                sub.load_problems.append(over)
            continue
        read.add(sha)
        total += size
    blobs = _cat_blobs(base, sorted(read))
    for sha, name, size in wanted:
        rel = (
            name[len(prefix) + 1 :] if prefix and name.startswith(prefix + "/") else PurePosixPath(name).name
        )
        error = None if sha in read or size > MAX_FILE_BYTES else over
        sub.files[rel] = SubmissionFile(rel, blobs.get(sha) if sha in read else None, size, error=error)
    sub.single_file = len(entries) == 1 and entries[0][1] == path
    if not sub.single_file:
        _check_auditable(sub)
    return sub


def _cat_blobs(base: list[str], shas: list[str]) -> dict[str, bytes]:
    if not shas:
        return {}
    try:
        proc = subprocess.run(
            [*base, "cat-file", "--batch"],
            input="".join(s + "\n" for s in shas).encode(),
            capture_output=True,
            check=False,
            timeout=300,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InputError(f"cannot read blobs with git: {exc}") from exc
    if proc.returncode != 0:
        raise InputError(f"git cat-file failed: {proc.stderr.decode(errors='replace').strip()}")
    out: dict[str, bytes] = {}
    buf = proc.stdout
    pos = 0
    while pos < len(buf):
        nl = buf.find(b"\n", pos)
        if nl < 0:
            break
        header = buf[pos:nl].split()
        pos = nl + 1
        if len(header) < 3:
            continue
        if not header[2].isdigit():  # "<sha> missing": nothing follows
            continue
        sha, size = header[0].decode(), int(header[2])
        out[sha] = buf[pos : pos + size]
        pos += size + 1
    return out
