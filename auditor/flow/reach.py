"""Reachability and gates over the Program: what runs under the documented configuration.

A mixin of Program (split out to keep each module readable). See API.md, "Reachability and gates".
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING

from auditor.flow.consts import UNKNOWN, ConstEval
from auditor.flow.model import CallSite, EntryEvent, Func, Gate, Reach

if TYPE_CHECKING:
    from auditor.facts import CodeUnit

_PROTOCOL = (
    "__init__",
    "__call__",
    "forward",
    "__enter__",
    "__exit__",
    "__iter__",
    "__next__",
    "__len__",
    "__getitem__",
    "__post_init__",
)


class ReachMixin:
    """Gates, reachability, entry order and closures; mixed into Program."""

    def _gate(self, func: Func, test: ast.AST, branch: str) -> Gate | None:
        ev = ConstEval(self)
        default = ev.value(func.unit.name, test, func)
        if default is UNKNOWN:
            return None
        taken = bool(default) if branch == "body" else not bool(default)
        enabled, disabled = [], []
        if ev.env_used:
            for cmd in self.run_commands:
                if not ev.env_used & set(cmd.env_dict):
                    continue
                alt = ConstEval(self, env=cmd.env_dict).value(func.unit.name, test, func)
                if alt is UNKNOWN:
                    continue
                alt_taken = bool(alt) if branch == "body" else not bool(alt)
                if alt_taken and not taken:
                    enabled.append(cmd)
                elif taken and not alt_taken:
                    disabled.append(cmd)
        return Gate(
            func.unit,
            test,
            branch,
            taken,
            default,
            tuple(sorted(ev.env_used)),
            tuple(enabled),
            tuple(disabled),
        )

    def gates_at(self, func: Func, node: ast.AST) -> list[Gate]:
        pos = (getattr(node, "lineno", 0), getattr(node, "col_offset", 0))
        return [g for start, end, g in func.regions if start <= pos <= end]

    # ------------------------------------------------------------------------------------------- reachability
    @property
    def entry(self) -> Func | None:
        return self.entry_module.func if self.entry_module else None

    def _compute_reach(self) -> dict[Func, Reach]:
        out: dict[Func, Reach] = {}
        root = self.entry
        if root is None:
            return out
        # pass 1: edges that run by default (or are turned on by a run command); pass 2: every edge
        for mode in ("live", "gated"):
            queue: deque[tuple[Func, tuple[str, ...], Gate | None]] = deque([(root, (root.qualname,), None)])
            seen: set[Func] = set(out) if mode == "gated" else set()
            if mode == "gated":
                queue = deque((f, r.path, r.gate) for f, r in out.items())
            else:
                seen.add(root)
                out[root] = Reach("live", "entry point", None, (root.qualname,))
            while queue:
                f, path, gate = queue.popleft()
                for target, gates in self._edges(f):
                    deciding = next((g for g in gates if not g.taken), None)
                    if mode == "live" and deciding is not None and not deciding.enabled_by:
                        continue
                    if target in seen:
                        continue
                    seen.add(target)
                    g2 = gate or deciding or next((g for g in gates if g.enabled_by), None)
                    if mode == "live":
                        reason = "reachable from the entry point"
                        if g2 is not None and g2.enabled_by:
                            reason = f"reachable; default-off but enabled by a run command ({g2.describe()})"
                        out[target] = Reach("live", reason, g2, path + (target.qualname,))
                    else:
                        out[target] = Reach(
                            "gated_off",
                            f"only reachable through {g2.describe()}"
                            if g2
                            else "only reachable through default-off code",
                            g2,
                            path + (target.qualname,),
                        )
                    queue.append((target, path + (target.qualname,), g2 if mode == "gated" else g2))
        return out

    def _edges(self, f: Func) -> Iterator[tuple[Func, tuple[Gate, ...]]]:
        for site in f.calls:
            for callee in site.callees:
                yield callee, site.gates
            if site.constructs is not None:
                for c in site.constructs.mro():
                    for name in _PROTOCOL:
                        if name in c.methods:
                            yield c.methods[name], site.gates
                    yield c.body, site.gates
        for _, target, gates in f.refs:
            yield target, gates
        if f.kind == "module":
            for c in f.nested_classes.values():
                yield c.body, ()
            for mname, _ in f.module.imported_names.values():
                other = self.module_by_name.get(mname)
                if other is not None and other is not f.module:
                    yield other.func, ()
        if f.kind == "classbody":
            for c in f.nested_classes.values():
                yield c.body, ()

    def func_reach(self, func: Func) -> Reach:
        if self._reach is None:
            self._reach = self._compute_reach()
        got = self._reach.get(func)
        if got is not None:
            return got
        if self.entry is None:
            return Reach("unknown", "no entry script could be analysed")
        if func.kind == "classbody" and func.cls is not None:
            return Reach("dead", f"class {func.cls.name} is never used")
        if self._dispatch_defeated_live is None:
            # Only defeats inside code the entry reaches count. Asking func_reach() of the defeating function
            # itself would recurse without end when that function is unreachable too.
            self._dispatch_defeated_live = any(
                reason for _, reason, g in self.defeated if (r := self._reach.get(g)) is not None and r.live
            )
        if self._dispatch_defeated_live:
            return Reach(
                "unknown",
                f"{func.qualname} is not called directly, but dynamic dispatch elsewhere may reach it",
            )
        return Reach("dead", f"{func.qualname} is never called from the entry point")

    def reach(self, unit: CodeUnit | str, node: ast.AST, func: Func | None = None) -> Reach:
        """Does `node` run? dead (its function is never called), gated_off (a default-off branch), live."""
        f = func or self.enclosing_func(unit, node)
        if f is None:
            return Reach("unknown", "not inside analysed code")
        r = self.func_reach(f)
        if r.status in ("dead", "gated_off"):
            return r
        gates = self.gates_at(f, node)
        off = next((g for g in gates if not g.taken), None)
        if off is not None:
            if off.enabled_by:
                return Reach(
                    "live", f"default-off but enabled by a run command ({off.describe()})", off, r.path
                )
            return Reach("gated_off", off.describe(), off, r.path)
        return r

    def site_reach(self, site: CallSite) -> Reach:
        r = self.func_reach(site.caller)
        if r.status in ("dead", "gated_off"):
            return r
        off = site.deciding_gate
        if off is not None:
            if off.enabled_by:
                return Reach(
                    "live", f"default-off but enabled by a run command ({off.describe()})", off, r.path
                )
            return Reach("gated_off", off.describe(), off, r.path)
        return r

    # ------------------------------------------------------------------------------------------- entry order
    def entry_sequence(self, max_depth: int = 6) -> list[EntryEvent]:
        """Top-level call sites of the entry flow in execution order; driver functions are inlined.

        A driver is an own function called from exactly one call site of the program (e.g. `main()`, and
        `train_and_eval(h)` called from main): its call is listed, followed by its own call sites.
        """
        if self._entry_seq is not None and max_depth == 6:
            return self._entry_seq
        root = self.entry
        if root is None:
            return []
        out: list[EntryEvent] = []

        def expand(
            f: Func,
            via: tuple[CallSite, ...],
            loops: tuple[ast.AST, ...],
            gate: Gate | None,
            active: set[Func],
        ) -> None:
            for site in sorted(f.calls, key=lambda s: s.order):
                g = gate or site.deciding_gate
                all_loops = loops + site.loops
                out.append(EntryEvent(len(out), site, via, all_loops, g))
                if len(via) >= max_depth:
                    continue
                for callee in site.callees:
                    if callee in active or site.constructs is not None:
                        continue
                    if len(self._callers.get(callee, [])) == 1 and callee.kind == "function":
                        expand(callee, via + (site,), all_loops, g, active | {callee})

        expand(root, (), (), None, {root})
        if max_depth == 6:
            self._entry_seq = out
        return out

    def inlined_driver_sites(self) -> set[int]:
        """ids of the call nodes whose callee is inlined into the entry sequence (drivers)."""
        if self._driver_ids is None:
            self._driver_ids = {id(s.node) for e in self.entry_sequence() for s in e.via}
        return self._driver_ids

    # ------------------------------------------------------------------------------------------- closure
    def called_under(self, site: CallSite, include_gated: bool = False) -> set[Func]:
        """Functions that run when `site` runs (its callees and everything they call); cached per site."""
        key = (id(site.node), include_gated)
        got = self._under.get(key)
        if got is None:
            got = self._under[key] = (
                self.reachable_from(list(site.callees), include_gated) if site.callees else set()
            )
        return got

    def reachable_from(self, funcs: list[Func], include_gated: bool = False) -> set[Func]:
        """Functions transitively called from `funcs` (edges through default-off gates only if asked)."""
        seen: set[Func] = set(funcs)
        todo = list(funcs)
        while todo:
            f = todo.pop()
            for target, gates in self._edges(f):
                if not include_gated and any(not g.taken and not g.enabled_by for g in gates):
                    continue
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        return seen
