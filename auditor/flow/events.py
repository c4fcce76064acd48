"""The ordered event log of the order analysis (auditor.flow.order) and the queries rules ask of it.

An ``Event`` is one thing the interpreter saw happen to validation data along the path that runs, in execution
order (``seq``): ``score`` (an accumulation of a no-grad value into a reported sum), ``update`` (``backward()`` /
``autograd.grad`` on a loss over validation data), ``write`` (validation content stored into a table or container),
``fit`` (a prediction that depends on validation *targets* through something other than the loss itself: a logit
bias or temperature fitted on them without ``backward()``), ``select`` (``min(...)`` over several scoring
results). Each carries its location (``func`` + ``node``), its provenance ``labels`` (``val``, ``ng``, ``p:<param>``,
``rg:<tensor>``, ``tgt``, ``vl``...), its enclosing loops and ``if`` arms across the call chain, and the call chain
itself (the flow shown in findings). Position reasoning over events lives in auditor.flow.positions.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import TYPE_CHECKING

from auditor.findings import FlowStep, Location
from auditor.flow.syntax import dotted, names_in

if TYPE_CHECKING:
    from auditor.flow.order_index import FuncInfo

Labels = frozenset[str]
EMPTY: Labels = frozenset()
VAL = "val"
NG = "ng"
TGT = "tgt"  # validation target tokens (what a loss of this function is computed against), and what is built from them
VL = (
    "vl"  # a loss value over validation targets (the output of `cross_entropy(pred, y)`), and what it decides
)
LP = "lp"  # a log-probability of validation data (`np.log(p)`): summed whole, it is a scoring
HIST = "hist"  # counts per value (`np.bincount(keys)`): adding it to a table is a keyed write
FIT_SOURCES: Labels = frozenset({TGT, VL})


@dataclass(frozen=True)
class Branch:
    test: ast.expr
    taken: bool  # True: the `if` body; False: the else branch
    func: str  # key of the function the `if` lives in
    node_id: int


@dataclass
class Event:
    kind: str  # "score" | "update" | "result" (value returned by a scoring call, for min-over-passes)
    node: ast.AST  # the accumulation / backward call
    func: FuncInfo  # function it is written in
    labels: Labels
    loops: tuple[ast.AST, ...]  # enclosing loops, outermost first, across the call chain
    branches: tuple[Branch, ...]
    chain: tuple[tuple[ast.AST, FuncInfo], ...] = ()  # call sites from the root, outermost first
    seq: tuple[int, ...] = ()  # order key: positions along the call chain
    rg: Labels = EMPTY  # free requires_grad tensors the value depends on
    # update only:
    target: str = "module"  # updates: "module" | "free_tensor"; writes: the written name; deferred: the param
    # writes: the written object's name in each function of the chain, outermost first ("" where it is local)
    names: tuple[str, ...] = ()
    keyed: bool = False  # writes: at keys computed from validation content
    keys: Labels = EMPTY  # keyed writes: the labels of the keys alone (content keys carry `val` at the root)
    owner: FuncInfo | None = (
        None  # updates: the function whose local object is updated (gone when it returns)
    )
    throwaway: bool = False
    step: ast.AST | None = None  # optimizer.step() committing the update
    step_func: FuncInfo | None = None

    @property
    def is_val(self) -> bool:
        return VAL in self.labels

    def location(self) -> Location:
        return self.func.unit.location(self.node)

    def flow(self, message: str) -> list[FlowStep]:
        steps = [FlowStep(fi.unit.location(call), f"calls {_call_name(call)}()") for call, fi in self.chain]
        steps.append(FlowStep(self.location(), message))
        return steps

    def spliced(
        self,
        call: ast.AST,
        caller: FuncInfo,
        subst: dict[str, Labels],
        loops: tuple[ast.AST, ...],
        branches: tuple[Branch, ...],
        seq_head: int,
        ng: bool,
        caller_name: str = "",
    ) -> Event:
        labels = substitute(self.labels, subst)
        if self.kind == "score" and ng:
            labels = labels | {NG}
        return Event(
            kind=self.kind,
            node=self.node,
            func=self.func,
            labels=labels,
            loops=loops + self.loops,
            branches=branches + self.branches,
            chain=((call, caller), *self.chain),
            seq=(seq_head, *self.seq),
            rg=self.rg,
            target=self.target,
            throwaway=self.throwaway,
            step=self.step,
            step_func=self.step_func,
            names=(caller_name, *self.names) if self.names else (),
            keyed=self.keyed,
            keys=substitute(self.keys, subst),
        )


def _call_name(call: ast.AST) -> str:
    if isinstance(call, ast.Call):
        name = dotted(call.func)
        if name:
            return name
    return "<call>"


def substitute(labels: Labels, subst: dict[str, Labels]) -> Labels:
    """Replace the callee's parameter labels by the caller's argument labels. `p:` labels that are not the
    callee's parameters belong to an enclosing function (a closure's free variables) and are kept."""
    if not any(lab.startswith("p:") for lab in labels):
        return labels
    out = {lab for lab in labels if not lab.startswith("p:") or lab[2:] not in subst}
    for lab in labels:
        if lab.startswith("p:"):
            out |= subst.get(lab[2:], EMPTY)
    return frozenset(out)


def common_loops(a: Event, b: Event) -> list[ast.AST]:
    ids_b = {id(x) for x in b.loops}
    return [lp for lp in a.loops if id(lp) in ids_b]


def same_invocation(upd: Event, other: Event, owner: FuncInfo) -> bool:
    """Does `other` run inside the same call of `owner` as `upd` does?"""
    k = next((i for i, (_, caller) in enumerate(upd.chain) if caller is owner), len(upd.chain))
    if k == len(upd.chain) and upd.func is not owner:
        return False
    if len(other.chain) < k or any(other.chain[i][0] is not upd.chain[i][0] for i in range(k)):
        return False
    return (other.chain[k][1] is owner) if k < len(other.chain) else other.func is owner


def exclusive(a: Event, b: Event) -> bool:
    """Events on the two different arms of one `if` never both run; nor do events under `if c:` and `if not c:`
    (the same flag tested twice, e.g. TTT eval in one block and the plain eval in another)."""
    arms = {(br.node_id, br.taken) for br in a.branches}
    if any((br.node_id, not br.taken) in arms for br in b.branches):
        return True
    conds = {_polarity(br.test, br.taken) for br in a.branches}
    for br in b.branches:
        key, positive = _polarity(br.test, br.taken)
        if (key, not positive) in conds:
            return True
    return False


def _polarity(test: ast.expr, taken: bool) -> tuple[str, bool]:
    while isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        test, taken = test.operand, not taken
    return ast.dump(test), taken


def loop_var_guard(ev: Event, loop: ast.AST) -> ast.expr | None:
    """An `if` on the path to `ev` whose test reads the target of `loop` (`if epoch == epochs - 1:`)."""
    if not isinstance(loop, (ast.For, ast.AsyncFor)):
        return None
    targets = names_in(loop.target)
    for br in ev.branches:
        if names_in(br.test) & targets:
            return br.test
    return None


def divergence(a: Event, b: Event) -> tuple[Location, Location]:
    """Where the paths to two events part: the two call sites (or event sites) in their deepest common caller."""
    i = 0
    while i < min(len(a.chain), len(b.chain)) and a.chain[i][0] is b.chain[i][0]:
        i += 1
    la = a.chain[i][1].unit.location(a.chain[i][0]) if i < len(a.chain) else a.location()
    lb = b.chain[i][1].unit.location(b.chain[i][0]) if i < len(b.chain) else b.location()
    return la, lb
