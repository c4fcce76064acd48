"""PG303: an op that mixes position t-1 into t without a document mask, in a model that packs isolated documents.

SmearGate (`x[:, 1:] += g * x[:, :-1]`), token shift (`cat([0, x[:, :-1]])`, `F.pad(x[:, :-1], ...)`,
`roll(x, 1)`), a left-padded causal convolution and a bigram hash of (x[t-1], x[t]) all carry the previous
position into the current one. Judged by the data the op sees, not by the date:

- rows that pack several documents whose attention is isolated per document (varlen attention with `cu_seqlens`
  built from BOS positions, block-diagonal masks): the op still crosses the boundary inside the row, so the BOS
  position of document N+1 sees the last token of document N (with documents packed in an order other than stream
  order, a token outside its strict prefix): the bug fixed in PR #1851 by zeroing the gate where the current input
  token is BOS;
- one document per row starting at its BOS (a per-document loop that slices each document out) or windows that
  simply follow the stream: position 0 gets a zero pad or the stream's own prefix, nothing leaks.

Verdicts: masked (a comparison of the token ids, e.g. `== bos`, feeds the mixed value) -> PASS; no packed
doc-isolated rows -> PASS with an info note; unmasked with packed doc-isolated rows -> FAIL for smear/shift/conv.
A bigram *hash embedding* of input ids is WARN only: the reviews that cleared it (PR #267 / #525) judged causality,
and no ruling covers it at document boundaries. A leak in a submission dated before the BOS-fix ruling is WARN (the
leaderboard kept the PR #1667 row of this shape).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass

from auditor.facts import AuditContext
from auditor.findings import Basis, Confidence, Finding, Location, Severity, Verdict
from auditor.flow import vocab
from auditor.flow.nodeindex import walk
from auditor.flow.targets import Scope, call_name, index_parts, reach_of, store_root, target_facts, var_key
from rules.base import Case, Rule

# PR #1851 (BOS fix) record date; leaderboard PR #1900 followed on 2026-04-28. A leak found in the data of a
# submission dated before it is a WARN: the leaderboard kept the PR #1667 row of this shape (policy, not analysis).
RULING_DATE = "2026-04-27"

_MIX_OPS = (ast.Add, ast.Sub, ast.Mult, ast.BitXor, ast.Mod, ast.BitOr, ast.BitAnd)
_MIX_CALLS = {"bitwise_xor", "lerp", "addcmul", "add", "mul", "where", "cat", "concatenate", "stack"}
_HASH_OPS = (ast.BitXor, ast.Mod)

_DOC_EVAL = """
import torch
import torch.nn.functional as F
from flash_attn_interface import flash_attn_varlen_func

BOS_ID = 1

class Model(torch.nn.Module):
    def forward_logits(self, input_ids, cu_seqlens, max_seqlen):
        x = self.tok_emb(input_ids)
        g = self.lam * torch.sigmoid(self.gate(x[:, 1:, :12]))
{mask}        x = torch.cat([x[:, :1], x[:, 1:] + g * x[:, :-1]], dim=1)
        q, k, v = self.qkv(x)
        y = flash_attn_varlen_func(q, k, v, cu_seqlens_q=cu_seqlens, cu_seqlens_k=cu_seqlens,
                                   max_seqlen_q=max_seqlen, max_seqlen_k=max_seqlen, causal=True)
        return self.head(y)

def eval_val(model, tokens):
    x, y = tokens[:-1], tokens[1:]
    starts = (x == BOS_ID).nonzero(as_tuple=True)[0]
    cu = torch.cat([starts, torch.tensor([x.numel()])]).int()
    logits = model.forward_logits(x[None], cu, 2048)
    return F.cross_entropy(logits[0], y)

if __name__ == "__main__":
    eval_val(Model(), torch.load("val.pt"))
"""

_WINDOW_EVAL = """
import torch
import torch.nn.functional as F

class Model(torch.nn.Module):
    def forward(self, input_ids):
        x = self.tok_emb(input_ids)
        g = torch.sigmoid(self.gate)
        x_prev = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)
        x = (1 - g) * x + g * x_prev
        return self.head(self.blocks(x))

def eval_val(model, tokens, seq_len):
    total = 0.0
    for s in range(0, tokens.numel() - seq_len, seq_len):
        chunk = tokens[s:s + seq_len + 1]
        total += F.cross_entropy(model(chunk[None, :-1])[0], chunk[1:])
    return total

if __name__ == "__main__":
    eval_val(Model(), torch.load("val.pt"), 1024)
"""


_PER_DOC_EVAL = """
import torch
import torch.nn.functional as F

BOS_ID = 1

class Model(torch.nn.Module):
    def forward(self, input_ids):
        x = self.tok_emb(input_ids)
        x_prev = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)
        x = x + torch.sigmoid(self.mix) * x_prev
        return self.head(self.blocks(x))

def eval_val(model, tokens):
    starts = (tokens == BOS_ID).nonzero(as_tuple=True)[0].tolist() + [tokens.numel() - 1]
    total = 0.0
    for a, b in zip(starts[:-1], starts[1:]):
        doc = tokens[a:b + 1]
        total += F.cross_entropy(model(doc[None, :-1])[0], doc[1:])
    return total

if __name__ == "__main__":
    eval_val(Model(), torch.load("val.pt"))
"""


# Two evals of one model after the artifact round trip: a packed, document-isolated pass (varlen attention over
# BOS positions) and a per-document pass (one document per row from its BOS). The last pass is the reported score:
# only a packed reported pass lets the smear carry document N's last token into document N+1's BOS position.
_TWO_PASSES = """\
import glob, io, zlib
import numpy as np
import torch
import torch.nn.functional as F
from flash_attn_interface import flash_attn_varlen_func

BOS_ID = 1
TRAIN_FILES = "./data/fineweb_train_*.bin"
VAL_FILES = "./data/fineweb_val_*.bin"


def load_tokens(pattern):
    return torch.cat([torch.from_numpy(np.fromfile(f, dtype=np.uint16).astype(np.int64))
                      for f in sorted(glob.glob(pattern))])


class Model(torch.nn.Module):
    def forward_logits(self, input_ids, cu_seqlens=None, max_seqlen=0):
        x = self.tok_emb(input_ids)
        g = self.lam * torch.sigmoid(self.gate(x[:, 1:, :12]))
        x = torch.cat([x[:, :1], x[:, 1:] + g * x[:, :-1]], dim=1)
        q, k, v = self.qkv(x)
        if cu_seqlens is not None:
            y = flash_attn_varlen_func(q, k, v, cu_seqlens_q=cu_seqlens, cu_seqlens_k=cu_seqlens,
                                       max_seqlen_q=max_seqlen, max_seqlen_k=max_seqlen, causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.head(y)


def eval_packed(model, tokens):
    x, y = tokens[:-1], tokens[1:]
    starts = (x == BOS_ID).nonzero(as_tuple=True)[0]
    cu = torch.cat([starts, torch.tensor([x.numel()])]).int()
    with torch.no_grad():
        logits = model.forward_logits(x[None], cu, 2048)
    return F.cross_entropy(logits[0], y).item()


def eval_per_doc(model, tokens):
    starts = (tokens == BOS_ID).nonzero(as_tuple=True)[0].tolist() + [tokens.numel() - 1]
    total = 0.0
    with torch.no_grad():
        for a, b in zip(starts[:-1], starts[1:]):
            doc = tokens[a:b + 1]
            total += F.cross_entropy(model.forward_logits(doc[None, :-1])[0], doc[1:]).item()
    return total


def main():
    train_tokens = load_tokens(TRAIN_FILES)
    model = Model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(100):
        x = train_tokens[step * 64:(step + 1) * 64 + 1]
        loss = F.cross_entropy(model.forward_logits(x[None, :-1])[0], x[1:])
        loss.backward()
        opt.step()
        opt.zero_grad()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    blob = zlib.compress(buf.getvalue())
    with open("final_model.ptz", "wb") as f:
        f.write(blob)
    model.load_state_dict(torch.load(io.BytesIO(zlib.decompress(blob))))
    val_tokens = load_tokens(VAL_FILES)
    diagnostic = FIRST(model, val_tokens)
    print(f"diagnostic val_loss:{diagnostic:.4f}")
    reported = LAST(model, val_tokens)
    print(f"final val_loss:{reported:.4f}")


if __name__ == "__main__":
    main()
"""
SCORED_PER_DOC = _TWO_PASSES.replace("FIRST", "eval_packed").replace("LAST", "eval_per_doc")
SCORED_PACKED = _TWO_PASSES.replace("FIRST", "eval_per_doc").replace("LAST", "eval_packed")


def _line_of(code: str, marker: str) -> int:
    return next(i for i, t in enumerate(code.splitlines(), 1) if marker in t)


@dataclass
class Shift:
    node: ast.AST
    scope: Scope
    kind: str  # "smear" | "shift" | "conv" | "hash"
    masked: bool
    mask: ast.AST | None = None


class DocBoundaryLeak(Rule):
    id = "PG303"
    name = "doc-boundary-leak"
    title = "Previous-position mixing crosses document boundaries in a doc-isolated eval"
    category = "doc_boundary"
    severity = Severity.HIGH
    confidence = Confidence.MEDIUM
    rationale = (
        "A model whose eval isolates documents must not let document N's last token reach document N+1's BOS "
        "position. Smear gates, token shifts and causal convolutions need a BOS/document mask (PR #1851 zeroes "
        "the gate where the current input token is BOS, in both the eval and the TTT forward)."
    )
    basis = Basis(
        ref="PR #1851 README (SmearGate BOS fix) and leaderboard PR #1900 (cocohearts), as summarized in rules.md",
        date="2026-04-28",
        quote=(
            "The smear was not masked at BOS, so the last token of document N was mixed into the BOS position "
            "of document N+1; the fix zeroes the gate wherever the current input token is BOS."
        ),
        url="https://github.com/openai/parameter-golf/pull/1851",
        section="A.11",
    )
    valid = (
        Case(
            code=_DOC_EVAL.replace(
                "{mask}", "        g = g.masked_fill((input_ids[:, 1:] == BOS_ID)[..., None], 0.0)\n"
            ),
            verdict=Verdict.PASS,
            note="BOS-masked smear",
        ),
        Case(code=_WINDOW_EVAL, verdict=Verdict.PASS, note="unmasked smear, windows cross documents"),
        Case(
            code=_PER_DOC_EVAL,
            verdict=Verdict.PASS,
            note="zero-pad shift, one document per row from its BOS: the BOS position sees only the pad",
        ),
    )
    invalid = (
        Case(code=_DOC_EVAL.replace("{mask}", ""), verdict=Verdict.FAIL, line=11),
        Case(
            code=SCORED_PACKED,
            verdict=Verdict.FAIL,
            line=_line_of(SCORED_PACKED, "x[:, 1:] + g * x[:, :-1]"),
            note="unmasked smear, the reported (last) pass packs documents with varlen attention",
        ),
        Case(
            code=SCORED_PER_DOC,
            verdict=Verdict.WARN,
            line=_line_of(SCORED_PER_DOC, "x[:, 1:] + g * x[:, :-1]"),
            note="unmasked smear; documents packed only in a diagnostic pass, the reported pass is per document: "
            "no leak in the score, WARN for the audited construct",
        ),
    )

    def check(self, ctx: AuditContext) -> Iterable[Finding]:
        facts = target_facts(ctx)
        shifts: list[Shift] = []
        for scope in facts.scopes:
            shifts.extend(find_shifts(scope))
        if not shifts:
            return
        isolation = doc_isolation(ctx, facts.scopes)
        # packed doc-isolated rows outside the reported pass (training loader, diagnostic evals)
        elsewhere = [] if isolation else doc_isolation(ctx, facts.scopes, scored_only=False)
        date = _claimed_date(ctx)
        for sh in shifts:
            yield self._judge(ctx, sh, isolation, date, elsewhere)

    def _judge(
        self,
        ctx: AuditContext,
        sh: Shift,
        isolation: list[Location],
        date: str | None,
        elsewhere: list[Location] = (),
    ) -> Finding:
        unit = sh.scope.unit
        loc = unit.location(sh.node)
        what = {
            "smear": "smear (t-1 mixed into t)",
            "shift": "token shift",
            "conv": "left-padded causal conv",
            "hash": "bigram/n-gram hash of input ids (x[t-1], x[t])",
        }[sh.kind]
        head = f"in `{sh.scope.name}` a {what} `{_short(sh.node)}`"
        if sh.masked:
            mask_loc = [unit.location(sh.mask)] if sh.mask is not None else []
            return self.info(
                f"{head} is masked at document boundaries (`{_short(sh.mask)}`)", [loc], related=mask_loc
            )
        if not isolation and elsewhere and sh.kind != "hash" and reach_of(ctx, unit, sh.node)[0]:
            # no leak in the reported score, but the construct the BOS-fix audit had masked (and its stacks
            # rebanked) runs unmasked where rows do pack documents: for a person to confirm, not a FAIL
            return self.finding(
                Verdict.WARN,
                f"{head} has no BOS/document mask; rows pack several documents with per-document attention "
                f"outside the pass that produces the reported score (BOS positions at {elsewhere[0]}, segment "
                f"attention at {elsewhere[-1]}: training or a diagnostic eval), while the reported pass holds one "
                "document per row from its BOS, so no leak reaches the reported score. The BOS-fix audit had this "
                "construct masked in its stacks: confirm which pass the claimed number comes from",
                [loc],
                related=elsewhere,
                severity=Severity.MEDIUM,
                confidence=Confidence.LOW,
            )
        if not isolation:
            return self.info(
                f"{head} has no BOS/document mask, but no row packs several documents with per-document attention "
                "(no varlen/segment attention over BOS positions): rows either hold one document from its BOS or "
                "follow the stream, so the previous position is always in the strict prefix, which C1 allows",
                [loc],
            )
        live, why = reach_of(ctx, unit, sh.node)
        message = (
            f"{head} has no BOS/document mask while rows pack several documents with per-document attention "
            f"(BOS positions at {isolation[0]}, segment attention at {isolation[-1]}): the last token of each "
            "packed document leaks into the next document's BOS position"
        )
        if not live:
            return self.info(f"{message}. Not run by default ({why})", [loc], related=isolation)
        if sh.kind == "hash":
            return self.finding(
                Verdict.WARN,
                f"{message}. A bigram hash of input ids is causal (PR #267/#525 reviews) and no ruling covers it "
                "at document boundaries; mask the previous id at BOS to be safe",
                [loc],
                related=isolation,
                severity=Severity.MEDIUM,
                confidence=Confidence.LOW,
            )
        if date is not None and date < RULING_DATE:
            return self.finding(
                Verdict.WARN,
                f"{message}. The submission is dated {date}, before the BOS-fix ruling ({RULING_DATE}); the "
                "leaderboard kept the PR #1667 row of this shape, later stacks were blocked",
                [loc],
                related=isolation,
                severity=Severity.MEDIUM,
            )
        return self.finding(
            Verdict.FAIL, message, [loc], related=isolation, evidence=ast.unparse(sh.node)[:300]
        )


# ---------------------------------------------------------------------------------------------------------------
def _time_slice(sub: ast.AST) -> tuple[str, int, int] | None:
    """(base, axis, k) for `X[:, :-k]` (k < 0: previous-position view) / `X[:, k:]` (k > 0: current view) on a
    batched tensor (time axis after a leading `:` or `...`); None otherwise."""
    if not isinstance(sub, ast.Subscript) or not isinstance(sub.ctx, ast.Load):
        return None
    parts = index_parts(sub)
    if len(parts) < 2:
        return None
    for axis, p in enumerate(parts):
        if axis == 0:
            if not (isinstance(p, ast.Slice) and p.lower is None and p.upper is None) and not (
                isinstance(p, ast.Constant) and p.value is Ellipsis
            ):
                return None
            continue
        if not isinstance(p, ast.Slice) or p.step is not None:
            return None
        lo, up = p.lower, p.upper
        if lo is None and up is None:
            continue
        if (
            lo is None
            and isinstance(up, ast.UnaryOp)
            and isinstance(up.op, ast.USub)
            and isinstance(up.operand, ast.Constant)
        ):
            return (ast.dump(sub.value), axis, -int(up.operand.value))
        if up is None and isinstance(lo, ast.Constant) and isinstance(lo.value, int) and lo.value > 0:
            return (ast.dump(sub.value), axis, int(lo.value))
        return None
    return None


def _parents(root: ast.AST) -> dict[int, ast.AST]:
    out: dict[int, ast.AST] = {}
    for n in ast.walk(root):
        for c in ast.iter_child_nodes(n):
            out[id(c)] = n
    return out


def find_shifts(scope: Scope) -> list[Shift]:
    out: list[Shift] = []
    seen_lines: set[int] = set()
    for stmt in scope.nodes:
        if not isinstance(stmt, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Return, ast.Expr)):
            continue
        value = stmt.value
        if value is None:
            continue
        for node, kind, base in _shifts_in(value, stmt, scope):
            if node.lineno in seen_lines:  # type: ignore[attr-defined]
                continue
            seen_lines.add(node.lineno)  # type: ignore[attr-defined]
            mask = _mask_for(scope, stmt, base)
            if kind != "hash" and _feeds_hash(scope, stmt):
                kind = "hash"
            out.append(Shift(node=node, scope=scope, kind=kind, masked=mask is not None, mask=mask))
    return out


def _shifts_in(value: ast.AST, stmt: ast.AST, scope: Scope) -> list[tuple[ast.AST, str, ast.AST | None]]:
    """(node, kind, the tensor being shifted) for each previous-position mixing op in one statement."""
    found: list[tuple[ast.AST, str, ast.AST | None]] = []
    views: dict[tuple[str, int], list[tuple[ast.AST, int]]] = {}
    calls: list[ast.Call] = []
    for n in walk(value):  # the fast equivalent of ast.walk: this runs over every statement of every scope
        if isinstance(n, ast.Subscript):
            ts = _time_slice(n)
            if ts is not None:
                views.setdefault((ts[0], ts[1]), []).append((n, ts[2]))
        elif isinstance(n, ast.Call) and call_name(n) in {"cat", "concatenate", "pad", "roll"}:
            calls.append(n)
    # S1: previous and current views of one tensor combined arithmetically
    parents: dict[int, ast.AST] | None = None
    for vs in views.values():
        prevs = [v for v, k in vs if k < 0]
        curs = [v for v, k in vs if k > 0]
        if not prevs or not curs:
            continue
        parents = parents if parents is not None else _parents(stmt)
        for p in prevs:
            anc = _common_mixing_ancestor(p, curs, parents)
            if anc is not None:
                kind = "hash" if _is_hashy(anc, parents) else "smear"
                found.append((anc, kind, p.value))  # type: ignore[attr-defined]
                break
    # S2..S4: a previous-position view padded back to full length (cat / pad), roll, left-padded conv input
    for n in calls:
        name = call_name(n)
        if name in {"cat", "concatenate"} and n.args and isinstance(n.args[0], (ast.List, ast.Tuple)):
            elts = n.args[0].elts
            if len(elts) >= 2:
                last = _time_slice(elts[-1])
                firsts = [_time_slice(e) for e in elts[:-1]]
                if last is not None and last[2] < 0 and not any(f is not None and f[2] > 0 for f in firsts):
                    found.append((n, "shift", elts[-1].value))  # type: ignore[attr-defined]
        elif name == "pad" and n.args:
            arg = _time_slice(n.args[0])
            spec = n.args[1] if len(n.args) > 1 else None
            if arg is not None and arg[2] < 0:
                found.append((n, "shift", n.args[0].value))  # type: ignore[attr-defined]
            elif (
                isinstance(spec, (ast.Tuple, ast.List))
                and _left_pad_only(spec)
                and not _hashed(scope, n.args[0])
            ):
                found.append((n, "conv", n.args[0]))
        elif name == "roll" and _positive_shift(n):
            recv = (
                n.args[0]
                if isinstance(n.func, ast.Name)
                or (
                    isinstance(n.func, ast.Attribute)
                    and isinstance(n.func.value, ast.Name)
                    and n.func.value.id in {"torch", "np", "numpy"}
                )
                else getattr(n.func, "value", None)
            )
            found.append((n, "shift", recv))
    return found


def _common_mixing_ancestor(p: ast.AST, curs: list[ast.AST], parents: dict[int, ast.AST]) -> ast.AST | None:
    chain: list[ast.AST] = []
    n: ast.AST | None = parents.get(id(p))
    while n is not None:
        chain.append(n)
        n = parents.get(id(n))
    for c in curs:
        anc_ids = set()
        m: ast.AST | None = parents.get(id(c))
        while m is not None:
            anc_ids.add(id(m))
            m = parents.get(id(m))
        for a in chain:
            if id(a) in anc_ids:
                if isinstance(a, ast.BinOp) and isinstance(a.op, _MIX_OPS):
                    return a
                if isinstance(a, ast.Call) and call_name(a) in _MIX_CALLS - {"cat", "concatenate", "stack"}:
                    return a
                break  # lowest common ancestor is a tuple / list / statement: two separate views (x, y split)
    return None


def _is_hashy(node: ast.AST, parents: dict[int, ast.AST]) -> bool:
    n: ast.AST | None = node
    while n is not None and not isinstance(n, ast.stmt):
        if isinstance(n, ast.BinOp) and isinstance(n.op, _HASH_OPS):
            return True
        if isinstance(n, ast.Call) and call_name(n) == "bitwise_xor":
            return True
        n = parents.get(id(n))
    return False


def _hashed(scope: Scope, expr: ast.AST) -> bool:
    """Is `expr` an already-hashed id tensor? Re-padding a bigram hash back to full length is part of the hash,
    not a separate shift."""
    return any(
        (isinstance(n, ast.BinOp) and isinstance(n.op, _HASH_OPS))
        or (isinstance(n, ast.Call) and call_name(n) == "bitwise_xor")
        for n in scope.closure(expr)
    )


def _feeds_hash(scope: Scope, stmt: ast.AST) -> bool:
    """Is the shifted value (e.g. `prev_ids`) combined into a hash later in the scope?"""
    targets = [
        store_root(t) for t in getattr(stmt, "targets", [getattr(stmt, "target", None)]) if t is not None
    ]
    keys = {k for k in targets if k}
    if not keys:
        return False
    for n in scope.nodes:
        if (isinstance(n, ast.BinOp) and isinstance(n.op, _HASH_OPS)) or (
            isinstance(n, ast.Call) and call_name(n) == "bitwise_xor"
        ):
            if keys & scope.loaded_vars(ast.walk(n)):
                return True
    return False


def _left_pad_only(spec: ast.Tuple | ast.List) -> bool:
    """(L, 0) or (0, 0, L, 0) with L not a literal 0: padding on the left of the time axis only."""
    e = spec.elts
    if len(e) == 2:
        left, right = e
    elif len(e) == 4 and _is_zero(e[0]) and _is_zero(e[1]):
        left, right = e[2], e[3]
    else:
        return False
    return _is_zero(right) and not _is_zero(left)


def _is_zero(n: ast.AST) -> bool:
    return isinstance(n, ast.Constant) and n.value == 0


def _positive_shift(call: ast.Call) -> bool:
    shift = next((k.value for k in call.keywords if k.arg == "shifts"), None)
    if shift is None:
        args = (
            call.args[1:]
            if isinstance(call.func, ast.Name)
            or (
                isinstance(call.func, ast.Attribute)
                and isinstance(call.func.value, ast.Name)
                and call.func.value.id in {"torch", "np", "numpy"}
            )
            else call.args
        )
        shift = args[0] if args else None
    return isinstance(shift, ast.Constant) and isinstance(shift.value, int) and shift.value > 0


def _mask_for(scope: Scope, stmt: ast.AST, base: ast.AST | None) -> ast.AST | None:
    """An equality test of token ids (`ids == bos`, `ids != BOS_ID`) that feeds the mixed value or is applied to
    the shifted variable elsewhere in the scope."""
    skip: set[str] = set()
    key = var_key(base) if base is not None else None
    if key:
        skip.add(key)
    nodes = list(scope.closure(stmt.value, mode="all", skip=frozenset(skip)))  # type: ignore[attr-defined]
    targets = [
        store_root(t) for t in getattr(stmt, "targets", [getattr(stmt, "target", None)]) if t is not None
    ]
    for k in targets:
        if k and k not in skip:
            for d in scope.defs.get(k, ()):
                if d is not stmt.value:  # type: ignore[attr-defined]
                    nodes.extend(scope.closure(d, mode="all", skip=frozenset(skip | {k})))
    for n in nodes:
        if isinstance(n, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in n.ops):
            others = [n.left, *n.comparators]
            if any(
                isinstance(o, ast.Constant) and (o.value is None or isinstance(o.value, str)) for o in others
            ):
                continue
            return n
    return None


def doc_isolation(ctx: AuditContext, scopes: list[Scope], scored_only: bool = True) -> list[Location]:
    """Rows that pack several documents with per-document attention: where the code finds BOS positions and where
    a segment attention (varlen `cu_seqlens`, block-diagonal mask) runs, both by default. Empty when documents
    are fed one per row or the rows follow the stream. [BOS finders..., segment attention calls...]."""
    prog = _program(ctx)
    scored = _reported_pass(ctx, prog) if prog is not None and scored_only else None
    finders: list[Location] = []
    segments: list[Location] = []
    for scope in scopes:
        for n in scope.nodes:
            if _is_bos_finder(n) and reach_of(ctx, scope.unit, n)[0]:
                if scored is not None and not _packs_in_scored_pass(prog, scored, scope.unit, n):
                    continue  # BOS positions found outside the scored pass (training loader, a diagnostic eval)
                finders.append(scope.unit.location(n))
            elif _is_segment_attention(prog, n) and reach_of(ctx, scope.unit, n)[0]:
                segments.append(scope.unit.location(n))
    return finders + segments if finders and segments else []


def _reported_pass(ctx: AuditContext, prog) -> set | None:
    """The functions the reported score runs: those of the last evaluation-phase pass that reads validation
    tokens (earlier passes are diagnostics printed along the way; the last one is what the submission reports).
    Functions handed to a timing/driver wrapper as values count as run by it. None when no such pass is
    recognised (then every pass counts)."""
    try:
        from auditor.flow.phases import phases_of
        from auditor.flow.taint import VAL, val_taint

        ph = phases_of(ctx)
        raw = val_taint(ctx).only(VAL)
    except Exception:  # the shared layer failing must not hide a leak: fall back to every pass
        return None
    evals = ph.eval_events
    for ev in reversed(evals):
        site = ev.site
        drv = site.caller
        if ev.via and all(ph.phase_of(e) == "evaluation" for e in ph.events if e.site.caller is drv):
            # an inlined eval function (called once): the pass is that function, not one of its calls
            funcs = {drv} | prog.reachable_from([drv])
        else:
            funcs = set(prog.called_under(site))
            args = {id(a) for a in site.node.args} | {id(k.value) for k in site.node.keywords}
            for node, f, _ in drv.refs:
                if id(node) in args:
                    funcs |= {f} | prog.reachable_from([f])
        if any(raw.is_tainted(f.unit, c.node, f) for f in funcs for c in f.calls[:80]):
            return funcs
    return None


def _packs_in_scored_pass(prog, scored: set, unit, finder: ast.AST) -> bool:
    """A BOS finder builds packed, document-isolated rows of the scored pass: its function runs in that pass,
    does not update weights (an adaptation step on already-scored documents is not what is scored), and hands
    segment bounds on (a `cu_seqlens*` argument, by keyword or by the callee's parameter name)."""
    from auditor.flow.phases import is_update

    func = prog.enclosing_func(unit, finder)
    if func is None:
        return True  # module-level code: cannot tell, keep it
    if func not in scored or any(is_update(s) for s in func.calls):
        return False
    for site in func.calls:
        if call_name(site.node) in vocab.SEGMENT_ATTENTION_CALLS:
            return True
        for k in site.node.keywords:
            if k.arg and k.arg.startswith(vocab.SEGMENT_KEYWORD_PREFIX) and not _is_none(k.value):
                return True
        for callee in site.callees[:3]:
            try:
                bound = callee.bind(site.node, bound_self=site.is_bound_call(callee))
            except Exception:
                continue
            if any(p.startswith(vocab.SEGMENT_KEYWORD_PREFIX) and not _is_none(e) for p, e in bound.items()):
                return True
    return False


def _is_none(e: ast.AST) -> bool:
    return isinstance(e, ast.Constant) and e.value is None


def _is_segment_attention(prog, n: ast.AST) -> bool:
    """A library attention over packed documents: a varlen kernel / block-diagonal mask by name, or any library call
    (not one of the submission's own functions, which only pass the bounds on) given non-None `cu_seqlens*`."""
    if not isinstance(n, ast.Call):
        return False
    if call_name(n) in vocab.SEGMENT_ATTENTION_CALLS:
        return True
    if not any(
        k.arg is not None
        and k.arg.startswith(vocab.SEGMENT_KEYWORD_PREFIX)
        and not (isinstance(k.value, ast.Constant) and k.value.value is None)
        for k in n.keywords
    ):
        return False
    site = prog.site_of(n) if prog is not None else None
    return site is None or not site.callees


def _program(ctx: AuditContext):
    try:
        from auditor.flow.program import program_of

        return program_of(ctx)
    except Exception:  # the shared layer failing must not hide a segment attention: names still match
        return None


def _is_bos_finder(n: ast.AST) -> bool:
    if not isinstance(n, ast.Call):
        return False
    name = call_name(n)
    if name not in {"nonzero", "where", "flatnonzero", "argwhere"}:
        return False
    operands = list(n.args[:1])
    if isinstance(n.func, ast.Attribute) and not n.args:
        operands.append(n.func.value)
    if name == "where" and len(n.args) != 1:
        return False
    for o in operands:
        if isinstance(o, ast.Compare) and len(o.ops) == 1 and isinstance(o.ops[0], ast.Eq):
            right = o.comparators[0]
            if isinstance(right, ast.Constant) and not isinstance(right.value, int):
                continue
            return True
    return False


def _claimed_date(ctx: AuditContext) -> str | None:
    claims, _ = ctx.submission.claims()
    date = (claims or {}).get("date")
    return str(date)[:10] if isinstance(date, str) and len(date) >= 10 else None


def _short(node: ast.AST | None) -> str:
    if node is None:
        return ""
    text = ast.unparse(node)
    return text if len(text) <= 90 else text[:87] + "..."
