"""Locate and validate the data a verifier mounts: validation / training shards, tokenizer, CaseOps byte sidecar.

Every shard is checked as strictly as the challenge's loader (`auditor.shards`). The validation set is *canonical*
when it is exactly the official first validation shard of a tokenizer family, recognised by its sha256
(`auditor.constants.OFFICIAL_VAL_SHARDS`), and the tokenizer's vocabulary fits that family. Anything else (a
subset, a re-export, the 200-document sample) is *non-canonical*: a rescore on it is informative, not a verdict on
the submission's reported number, and every report says which of the two it is.

Nothing here raises on bad data: `validate_data` returns a `DataReport` whose `problems` say what is wrong.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from auditor.constants import CASEOPS_SENTINELS, OFFICIAL_VAL_SHARDS
from pgolf_data.shards import ShardError, read_header, shard_files, validate_header

HASH_CHUNK = 1 << 22


@dataclass
class ShardInfo:
    path: str
    tokens: int = 0
    bytes: int = 0
    sha256: str | None = None  # validation shards only (training shards are too many to hash on every verify)
    official: str | None = None  # family whose official shard this is
    problem: str | None = None


@dataclass
class TokenizerInfo:
    path: str
    vocab_size: int = 0
    sha256: str | None = None
    family: str | None = None  # sp1024 | sp4096 | sp8192 | caseops_sp8192 | None (custom)
    problem: str | None = None


@dataclass
class DataReport:
    val: list[ShardInfo] = field(default_factory=list)
    train: list[ShardInfo] = field(default_factory=list)
    sidecar: list[ShardInfo] = field(default_factory=list)
    tokenizer: TokenizerInfo | None = None
    val_tokens: int = 0
    train_tokens: int = 0
    max_token_id: int | None = None
    canonical: bool = False
    family: str | None = None
    notes: list[str] = field(default_factory=list)  # why the data is (not) canonical
    problems: list[str] = field(default_factory=list)  # what makes the data unusable

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        kind = (
            f"canonical {self.family} validation data" if self.canonical else "NON-CANONICAL validation data"
        )
        return f"{kind}: {len(self.val)} shard(s), {self.val_tokens:,} tokens" + (
            f"; {'; '.join(self.notes)}" if self.notes else ""
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        d["summary"] = self.summary()
        return d


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _shard_info(path: Path, hash_it: bool) -> ShardInfo:
    info = ShardInfo(str(path))
    try:
        header = read_header(path)
        info.bytes = path.stat().st_size
        validate_header(path, header, info.bytes)
        info.tokens = header.num_tokens
    except (ShardError, OSError) as exc:
        info.problem = str(exc)
        return info
    if hash_it:
        info.sha256 = sha256_file(path)
        info.official = next((fam for fam, _, sha, _ in OFFICIAL_VAL_SHARDS if sha == info.sha256), None)
    return info


def _max_token(paths: list[Path]) -> int | None:
    from pgolf_data.shards import read_shard

    hi = None
    for p in paths:
        arr = read_shard(p)
        if arr.size:
            m = int(arr.max())
            hi = m if hi is None else max(hi, m)
    return hi


def tokenizer_info(path: str | Path) -> TokenizerInfo:
    from pgolf_data.bytes import ByteAccountingError, load_sentencepiece

    info = TokenizerInfo(str(path))
    try:
        sp = load_sentencepiece(path)
    except ByteAccountingError as exc:
        info.problem = str(exc)
        return info
    info.sha256 = sha256_file(path)
    info.vocab_size = int(sp.get_piece_size())
    pieces = (sp.id_to_piece(i) for i in range(info.vocab_size))
    caseops = any(any(s in piece for s in CASEOPS_SENTINELS) for piece in pieces)
    if caseops:
        info.family = "caseops_sp8192" if info.vocab_size == 8192 else None
    else:
        info.family = {1024: "sp1024", 4096: "sp4096", 8192: "sp8192"}.get(info.vocab_size)
    return info


def validate_data(
    val: str, tokenizer: str | Path | None = None, sidecar: str | None = None, train: str | None = None
) -> DataReport:
    """Check the mounted data; see the module docstring for what canonical means."""
    rep = DataReport()
    val_paths = shard_files(val)
    if not val_paths:
        rep.problems.append(f"no validation shard matches {val!r}")
    rep.val = [_shard_info(p, hash_it=True) for p in val_paths]
    rep.problems += [s.problem for s in rep.val if s.problem]
    rep.val_tokens = sum(s.tokens for s in rep.val)
    if train:
        train_paths = shard_files(train)
        if not train_paths:
            rep.problems.append(f"no training shard matches {train!r}")
        rep.train = [_shard_info(p, hash_it=False) for p in train_paths]
        rep.problems += [s.problem for s in rep.train if s.problem]
        rep.train_tokens = sum(s.tokens for s in rep.train)
        overlap = {Path(s.path).resolve() for s in rep.train} & {Path(s.path).resolve() for s in rep.val}
        if overlap:
            rep.problems.append(
                f"training and validation globs share {len(overlap)} file(s), e.g. {min(overlap)}"
            )
    if sidecar:
        side_paths = shard_files(sidecar, exclude_sidecars=False)
        if not side_paths:
            rep.problems.append(f"no byte sidecar matches {sidecar!r}")
        rep.sidecar = [_shard_info(p, hash_it=False) for p in side_paths]
        rep.problems += [s.problem for s in rep.sidecar if s.problem]
        side_tokens = sum(s.tokens for s in rep.sidecar)
        if side_paths and side_tokens < rep.val_tokens:
            # the challenge's load_validation_byte_sidecar refuses a sidecar shorter than the stream (rules.md §B.4)
            rep.problems.append(
                f"byte sidecar has {side_tokens:,} entries for {rep.val_tokens:,} validation tokens"
            )
    if tokenizer:
        rep.tokenizer = tokenizer_info(tokenizer)
        if rep.tokenizer.problem:
            rep.problems.append(rep.tokenizer.problem)
    if not rep.problems and val_paths:
        rep.max_token_id = _max_token(val_paths)
        vocab = rep.tokenizer.vocab_size if rep.tokenizer and not rep.tokenizer.problem else None
        if vocab and rep.max_token_id is not None and rep.max_token_id >= vocab:
            rep.problems.append(
                f"validation token id {rep.max_token_id} is outside the tokenizer's vocabulary "
                f"({vocab}): shards and tokenizer do not belong together"
            )
    if not tokenizer and not sidecar:
        rep.problems.append("no tokenizer .model and no byte sidecar: validation bytes cannot be counted")
    _judge_canonical(rep)
    return rep


def _judge_canonical(rep: DataReport) -> None:
    officials = {s.official for s in rep.val if s.official}
    tok_family = rep.tokenizer.family if rep.tokenizer else None
    if rep.problems:
        rep.notes.append("data failed validation")
        return
    if len(rep.val) != 1 or not officials:
        known = ", ".join(f"{fam} {sha[:8]}…{sha[-4:]}" for fam, _, sha, _ in OFFICIAL_VAL_SHARDS)
        got = ", ".join(f"{Path(s.path).name} {(s.sha256 or '')[:8]}…" for s in rep.val[:3])
        rep.notes.append(f"not the official validation shard (official sha256: {known}; got {got})")
        rep.family = tok_family
        return
    family = officials.pop()
    rep.family = family
    expected_tokens = next((n for fam, _, _, n in OFFICIAL_VAL_SHARDS if fam == family), None)
    if expected_tokens is not None and rep.val_tokens != expected_tokens:
        rep.notes.append(
            f"official {family} shard but {rep.val_tokens:,} tokens, expected {expected_tokens:,}"
        )
        return
    if tok_family is not None and tok_family != family and not (rep.sidecar and family == "sp8192"):
        rep.notes.append(
            f"official {family} shard but the tokenizer is {tok_family}: bytes would be miscounted"
        )
        return
    if rep.tokenizer is None and not rep.sidecar:
        return
    rep.canonical = True
    rep.notes.append(f"sha256 of {Path(rep.val[0].path).name} matches the official {family} shard")
