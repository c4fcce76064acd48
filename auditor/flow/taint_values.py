"""Abstract values of the data-origin taint analysis: provenance kinds with one witness path each.

A value's *provenance* is the set of kinds it derives from, each kept with one witness path (source -> here):

- `val-path` / `train-path`: shard *names* (patterns, file lists) before anything is read;
- `val` / `train`: shard *content* (what a reader returned) and what is copied, sliced or combined from it;
- `val-out` / `train-out`: values a model or a loss function computed from that content (logits, losses,
  metrics such as a logged `val_bpb`): they depend on the data without being the data;
- `val-stat` / `train-stat`: calibration statistics of that content (activations captured by forward hooks during a
  forward pass over it, `X^T X` second moments): what GPTQ/AWQ-style quantizers are fitted to;
- `val-fit` / `train-fit`: a value *selected* by comparing values derived from the data (`if loss < best: best_t =
  t`): a parameter tuned on it (implicit flow, tracked only through such selections).

Rules ask for the kinds they mean (auditor.flow.taint.TaintView); nothing here knows about rules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from auditor.flow import vocab

if TYPE_CHECKING:
    from auditor.flow.program import ClassInfo

VAL, TRAIN = "val", "train"  # shard *content* (what a reader returned, and everything derived from it)
VAL_PATH, TRAIN_PATH = (
    "val-path",
    "train-path",
)  # shard *names* (patterns, file lists) before anything is read
VAL_OUT, TRAIN_OUT = "val-out", "train-out"  # computed by a model / loss from the content
VAL_STAT, TRAIN_STAT = "val-stat", "train-stat"  # calibration statistics of the content
VAL_FIT, TRAIN_FIT = "val-fit", "train-fit"  # selected by comparing values derived from the content
PATH_OF = {VAL: VAL_PATH, TRAIN: TRAIN_PATH}
DATA_OF = {VAL_PATH: VAL, TRAIN_PATH: TRAIN}
OUT_OF = {VAL: VAL_OUT, TRAIN: TRAIN_OUT}
STAT_OF = {VAL: VAL_STAT, TRAIN: TRAIN_STAT, VAL_OUT: VAL_STAT, TRAIN_OUT: TRAIN_STAT}
FIT_OF = {VAL: VAL_FIT, TRAIN: TRAIN_FIT, VAL_OUT: VAL_FIT, TRAIN_OUT: TRAIN_FIT}
# every kind a data family (val / train) can take, and which of them count as "derived from the content"
FAMILY = {
    VAL: (VAL, VAL_OUT, VAL_STAT, VAL_FIT, VAL_PATH),
    TRAIN: (TRAIN, TRAIN_OUT, TRAIN_STAT, TRAIN_FIT, TRAIN_PATH),
}
CONTENT = {VAL: (VAL, VAL_OUT, VAL_STAT), TRAIN: (TRAIN, TRAIN_OUT, TRAIN_STAT)}
_MAX_PATH = 32  # long enough for data -> calibration -> quantizer -> artifact with its hand-off steps

Step = tuple[object, ast.AST, str]  # (CodeUnit, node, message)
# Step messages that mark how data was transformed (paths shown to users carry them).
HOOK_STEP = "forward pass over this data; registered forward hooks capture its activations"
GRAM_STEP = "second-moment statistics (X^T X) of this data"
FORWARD_STEP = "model forward pass over this data"
LOSS_STEP = "a loss / metric computed from this data"
FIT_STEP = "selected by comparing values derived from this data"
CALIBRATION_STEPS = (HOOK_STEP, GRAM_STEP)
_MARKERS = frozenset((HOOK_STEP, GRAM_STEP, FORWARD_STEP, LOSS_STEP, FIT_STEP))


@dataclass(frozen=True)
class AV:
    """Abstract value: kinds it derives from (each with one witness path), known fields, known tuple items."""

    kinds: tuple[tuple[str, tuple[Step, ...]], ...] = ()
    fields: tuple[tuple[str, AV], ...] = ()
    items: tuple[AV, ...] | None = None
    cls: ClassInfo | None = None

    @property
    def kind_set(self) -> frozenset[str]:
        return frozenset(k for k, _ in self.kinds)

    def path(self, kind: str) -> tuple[Step, ...] | None:
        for k, p in self.kinds:
            if k == kind:
                return p
        return None

    def field(self, name: str) -> AV | None:
        for k, v in self.fields:
            if k == name:
                return v
        return None

    def deep_kinds(self, depth: int = 3) -> frozenset[str]:
        out = set(self.kind_set)
        if depth > 0:
            for _, v in self.fields:
                out |= v.deep_kinds(depth - 1)
            for v in self.items or ():
                out |= v.deep_kinds(depth - 1)
        return frozenset(out)

    def signature(self, depth: int = 2) -> tuple:
        if depth <= 0:
            return (tuple(sorted(self.deep_kinds(2))),)
        return (
            tuple(sorted(self.kind_set)),
            tuple((k, v.signature(depth - 1)) for k, v in sorted(self.fields, key=lambda kv: kv[0])),
            tuple(v.signature(depth - 1) for v in self.items) if self.items is not None else None,
            self.cls.qualname if self.cls else None,
        )

    @property
    def empty(self) -> bool:
        return not self.kinds and not self.fields and not self.items and self.cls is None

    def with_step(self, step: Step) -> AV:
        if not self.kinds:
            return self
        kinds = tuple((k, _trim(p) + (step,)) for k, p in self.kinds)
        return AV(kinds, self.fields, self.items, self.cls)

    def flat(self) -> AV:
        """Content taint of the whole value (fields and items folded in), as when it is consumed as data."""
        if not self.fields and self.items is None and self.cls is None:
            return self  # already nothing but its kinds (the AV is immutable)
        out = AV(self.kinds)
        for _, v in self.fields:
            out = join(out, v.flat())
        for v in self.items or ():
            out = join(out, v.flat())
        return AV(out.kinds)


EMPTY = AV()


def _trim(path: tuple[Step, ...]) -> tuple[Step, ...]:
    """Bound a witness path: keep the source end and the recent steps, and every marker step (calibration,
    forward pass) in between, because rules read those."""
    if len(path) < _MAX_PATH:
        return path
    head, middle, tail = path[:3], path[3 : -(_MAX_PATH // 2)], path[-(_MAX_PATH // 2) :]
    markers = tuple(s for s in middle if s[2] in _MARKERS)[-3:]
    return head + markers + tail


def join(a: AV, b: AV) -> AV:
    if a.empty:
        return b
    if b.empty or a is b:
        return a
    kinds = dict(a.kinds)
    for k, p in b.kinds:
        if k not in kinds or len(p) < len(kinds[k]):
            kinds[k] = p
    fields = dict(a.fields)
    for k, v in b.fields:
        fields[k] = join(fields[k], v) if k in fields else v
    items = None
    if a.items is not None and b.items is not None and len(a.items) == len(b.items):
        items = tuple(join(x, y) for x, y in zip(a.items, b.items))
    elif a.items is not None or b.items is not None:
        for v in (a.items or ()) + (b.items or ()):
            kinds_v = dict(v.flat().kinds)
            for k, p in kinds_v.items():
                kinds.setdefault(k, p)
    cls = a.cls if a.cls is b.cls else (a.cls or b.cls if (a.cls is None or b.cls is None) else None)
    return AV(tuple(sorted(kinds.items(), key=lambda kv: kv[0])), tuple(sorted(fields.items())), items, cls)


def _same(a: AV, b: AV) -> bool:
    return a.signature(3) == b.signature(3)


def _with_step_deep(av: AV, step: Step, depth: int = 3) -> AV:
    """Append a step to every path in the value, fields and items included (objects passed as arguments)."""
    if av.empty:
        return av
    kinds = tuple((k, _trim(p) + (step,)) for k, p in av.kinds)
    if depth <= 0:
        return AV(kinds, av.fields, av.items, av.cls)
    fields = tuple((k, _with_step_deep(v, step, depth - 1)) for k, v in av.fields)
    items = tuple(_with_step_deep(v, step, depth - 1) for v in av.items) if av.items is not None else None
    return AV(kinds, fields, items, av.cls)


def deep_path(av: AV, kind: str) -> tuple[Step, ...] | None:
    for v in _walk_av(av):
        p = v.path(kind)
        if p is not None:
            return p
    return None


def _reroot(av: AV, callee: str, args: dict[str, AV], depth: int = 3) -> AV:
    """A context is shared by every call with the same argument taint, so the witness paths it returns may start
    at another call site; replace everything up to "passed to callee() as `p`" with this call's own path."""
    if av.empty or not args:
        return av
    prefix = f"passed to {callee}() as `"

    def fix(kind: str, path: tuple[Step, ...]) -> tuple[Step, ...]:
        for i in range(len(path) - 1, -1, -1):
            msg = path[i][2]
            if msg.startswith(prefix):
                arg = args.get(msg[len(prefix) :].rstrip("`"))
                mine = None
                if arg is not None:  # content read inside the callee starts from the name it was given
                    mine = deep_path(arg, kind) or next(
                        (q for k in family_of(kind) if (q := deep_path(arg, k)) is not None), None
                    )
                if mine is None or mine == path[: i + 1]:
                    return path
                return _trim(mine + path[i + 1 :])
        return path

    kinds = tuple((k, fix(k, p)) for k, p in av.kinds)
    if depth <= 0:
        return AV(kinds, av.fields, av.items, av.cls)
    fields = tuple((k, _reroot(v, callee, args, depth - 1)) for k, v in av.fields)
    items = tuple(_reroot(v, callee, args, depth - 1) for v in av.items) if av.items is not None else None
    return AV(kinds, fields, items, av.cls)


def _is_gram(e: ast.BinOp) -> bool:
    """`x.T @ x`, `x.t() @ x`, `x.transpose(0, 1) @ x`: second-moment statistics (GPTQ Hessian, AWQ)."""
    left, right = e.left, e.right
    inner = None
    if isinstance(left, ast.Attribute) and left.attr in ("T", "mT", "H"):
        inner = left.value
    elif (
        isinstance(left, ast.Call)
        and isinstance(left.func, ast.Attribute)
        and left.func.attr in ("t", "transpose", "permute")
    ):
        inner = left.func.value
    return inner is not None and ast.dump(inner) == ast.dump(right)


def _join_envs(envs: list[dict[str, AV]]) -> dict[str, AV]:
    out: dict[str, AV] = {}
    for env in envs:
        for k, v in env.items():
            out[k] = join(out[k], v) if k in out else v
    return out


def _element(av: AV) -> AV:
    """An element of an iterated value: its items joined, or the value's own taint."""
    if av.items:
        out = EMPTY
        for i in av.items:
            out = join(out, i)
        return join(out, AV(av.kinds))
    return AV(av.flat().kinds)


def _is_reader(site, name: str) -> bool:
    ext = getattr(site, "ext", None) or ""
    return ext in vocab.READER_CALLS or (
        name in vocab.READER_ATTRS and ext.split(".")[0] not in ("os", "re", "json")
    )


def family_of(kind: str) -> tuple[str, ...]:
    """The kinds of the data family `kind` belongs to (val or train), content first."""
    for fam in FAMILY.values():
        if kind in fam:
            return fam
    return (kind,)


def derive(av: AV, how: dict[str, str], step: Step) -> AV:
    """The same value seen as a derivation of its data (`OUT_OF`: a model/loss output, `STAT_OF`: calibration
    statistics, `FIT_OF`: a selection): each kind in `how` becomes its derived kind, the step appended (also to kinds
    already derived this way); other kinds are kept as they are."""
    flat = av.flat()
    if not flat.kinds:
        return flat
    kinds: dict[str, tuple[Step, ...]] = {}
    for k, p in flat.kinds:
        nk = how.get(k, k)
        path = _trim(p) + (step,) if nk != k or k in how.values() else p
        if nk not in kinds or len(path) < len(kinds[nk]):
            kinds[nk] = path
    return AV(tuple(sorted(kinds.items())))


def _read(av: AV, unit, node: ast.AST) -> AV:
    """A reader applied to shard names yields shard content."""
    kinds = dict(av.kinds)
    for k, p in av.kinds:
        data = DATA_OF.get(k)
        if data is not None and data not in kinds:
            kinds[data] = _trim(p) + ((unit, node, f"reads {data} shard data"),)
    return AV(tuple(sorted(kinds.items())), av.fields, av.items, av.cls)


# Shard and split names as the challenge's data pipeline writes them (rules.md section C).
SOURCE_PATTERNS = {VAL: vocab.VAL_SHARD, TRAIN: vocab.TRAIN_SHARD}


def _source(unit, node: ast.AST, text: str) -> AV:
    kinds = []
    for kind, pat in SOURCE_PATTERNS.items():
        if len(text) < 400 and pat.search(text):
            step = (unit, node, f"the string {text[:80]!r} names {kind} shards")
            kinds.append((PATH_OF[kind], (step,)))
    return AV(tuple(kinds)) if kinds else EMPTY


def split_source(unit, node: ast.AST, split: str) -> AV:
    """A dataset loader asked for a named split (`load_dataset(..., split="train")`) returns that split's content:
    a training split is training data whatever hub or folder it comes from."""
    s = split.strip().lower()
    kind = TRAIN if s.startswith("train") else VAL if s.startswith(("val", "validation")) else None
    if kind is None:
        return EMPTY
    return AV(((kind, ((unit, node, f"loads the {split!r} split of a dataset ({kind} data)"),)),))


def _short(node: ast.AST) -> str:
    try:
        text = ast.unparse(node)
    except Exception:  # pragma: no cover - unparse of odd nodes
        return type(node).__name__
    text = " ".join(text.split())
    return text if len(text) <= 90 else text[:87] + "..."


def _walk_av(av: AV, depth: int = 3) -> Iterator[AV]:
    yield av
    if depth > 0:
        for _, v in av.fields:
            yield from _walk_av(v, depth - 1)
        for v in av.items or ():
            yield from _walk_av(v, depth - 1)
