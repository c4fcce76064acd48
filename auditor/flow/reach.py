"""Reachability and gates over the Program: what runs under the documented configuration.

A mixin of Program (split out to keep each module readable). See API.md, "Reachability and gates".
"""

from __future__ import annotations

import ast
import re
from collections import deque
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from auditor.flow.consts import UNKNOWN, ConstEval
from auditor.flow.model import CallSite, EntryEvent, Func, Gate, Module, Reach

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


_BOOL_TEXT = {"true": "1", "false": "0", "yes": "1", "no": "0", "on": "1", "off": "0"}
_LOG_HEAD = 400_000  # hyperparameters are printed at the start of a log; the rest is step lines
_SCRIPT = re.compile(r"(?<![\w/.-])((?:\.{0,2}/)?[\w./-]*\w\.py)\b")


class ReachMixin:
    """Gates, reachability, entry order and closures; mixed into Program."""

    def _gate(self, func: Func, test: ast.AST, branch: str) -> Gate | None:
        """The Gate of one branch, decided under the defaults, each run command and the shipped logs; None when
        the test cannot be folded. A test that reads the function's own parameters becomes a parameter gate."""
        ev = ConstEval(self)
        default = ev.value(func.unit.name, test, func)
        if default is UNKNOWN:
            params = _params_read(func, test)
            if not params:
                return None
            return Gate(func.unit, test, branch, True, UNKNOWN, params=params)
        return self._decide(func, test, branch, default, ev.env_used, None)

    def _decide(
        self, func: Func, test: ast.AST, branch: str, default: Any, env_used: set[str], via: CallSite | None
    ) -> Gate:
        taken = bool(default) if branch == "body" else not bool(default)
        enabled, disabled, kept = [], [], []
        logged, evidence = None, ""
        if env_used:
            for cmd in self.run_commands:
                if not env_used & set(cmd.env_dict):
                    continue
                alt = self._fold(func, test, cmd.env_dict, via)
                if alt is UNKNOWN:
                    continue
                alt_taken = bool(alt) if branch == "body" else not bool(alt)
                if alt_taken and not taken:
                    enabled.append(cmd)
                elif taken and not alt_taken:
                    disabled.append(cmd)
                else:
                    kept.append(cmd)
            logged, evidence = self._logged(func, test, branch, env_used, via)
        return Gate(
            func.unit,
            test,
            branch,
            taken,
            default,
            tuple(sorted(env_used)),
            tuple(enabled),
            tuple(disabled),
            tuple(kept),
            logged,
            evidence,
            via=via,
        )

    def _fold(self, func: Func, test: ast.AST, env: dict[str, str] | None, via: CallSite | None) -> Any:
        ev = ConstEval(self, env=env)
        if via is not None:
            ev.params = self._bound_params(func, via, env)
        return ev.value(func.unit.name, test, func)

    def _bound_params(
        self, func: Func, via: CallSite, env: dict[str, str] | None
    ) -> dict[tuple[int, str], Any]:
        """Values of `func`'s parameters for the call `via` (its constant arguments, else the defaults)."""
        out: dict[tuple[int, str], Any] = {}
        node = func.node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return out
        a = node.args
        positional = a.posonlyargs + a.args
        defaults = dict(zip([p.arg for p in positional[len(positional) - len(a.defaults) :]], a.defaults))
        defaults.update({p.arg: d for p, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None})
        bound = func.bind(via.node, bound_self=via.is_bound_call(func))
        starred = any(isinstance(x, ast.Starred) for x in via.node.args) or any(
            k.arg is None for k in via.node.keywords
        )
        for p in func.params:
            if p in bound:
                out[(id(func), p)] = ConstEval(self, env=env).value(via.unit.name, bound[p], via.caller)
            elif p in defaults and not starred:
                out[(id(func), p)] = ConstEval(self, env=env).value(func.unit.name, defaults[p], func.parent)
        return out

    def gate_in(self, gate: Gate, via: CallSite | None) -> Gate:
        """`gate` as decided for the call `via` into its function (a parameter gate folded with that call's
        arguments); a gate that does not read parameters, or an unknown call, returns `gate` itself."""
        if not gate.params or via is None:
            return gate
        key = (id(gate), id(via.node))
        got = self._gate_cache.get(key)
        if got is None:
            func = self.enclosing_func(gate.unit, gate.test)
            got = gate
            if func is not None:
                ev = ConstEval(self)
                ev.params = self._bound_params(func, via, None)
                default = ev.value(func.unit.name, gate.test, func)
                if default is not UNKNOWN:
                    got = self._decide(func, gate.test, gate.branch, default, ev.env_used, via)
            self._gate_cache[key] = got
        return got

    def site_gate(self, site: CallSite, via: CallSite | None = None) -> Gate | None:
        """The first gate around `site` that keeps it from running under the documented configuration, or that
        only a run command / log turns on (`gate.by_command`); parameter gates decided for the call `via`."""
        return _deciding(self.gate_in(g, via) for g in site.gates)

    def _logged(
        self, func: Func, test: ast.AST, branch: str, env_used: set[str], via: CallSite | None
    ) -> tuple[bool | None, str]:
        """Log evidence: the values the shipped logs print for the gate's variables (`ttt_enabled: True`,
        `NGRAM_ENABLED=1`), folded into the test. Every log that prints them must agree."""
        env: dict[str, str] = {}
        where = ""
        for var in sorted(env_used):
            got = self._log_values(var)
            if len(got) != 1:
                return None, ""
            value, where = next(iter(got.items()))
            env[var] = value
        if not env:
            return None, ""
        alt = self._fold(func, test, env, via)
        if alt is UNKNOWN:  # printed as True/False where the code parses "1"/"0"
            alt = self._fold(func, test, {k: _BOOL_TEXT.get(v.lower(), v) for k, v in env.items()}, via)
        if alt is UNKNOWN:
            return None, ""
        return (bool(alt) if branch == "body" else not bool(alt)), where

    def _log_values(self, var: str) -> dict[str, str]:
        """value -> first "path:line: text" where a shipped log prints `var` (any case) with that value."""
        got = self._log_memo.get(var)
        if got is None:
            got = {}
            pat = re.compile(rf"(?<![\w.]){re.escape(var)}\s*[:=]\s*['\"]?([\w.\-]+)", re.IGNORECASE)
            for path, text in self._log_texts():
                for m in pat.finditer(text):
                    value = m.group(1)
                    if value not in got:
                        line = text.count("\n", 0, m.start()) + 1
                        got[value] = f"{path}:{line}: {m.group(0)[:80]}"
            self._log_memo[var] = got
        return got

    def _log_texts(self) -> list[tuple[str, str]]:
        if self._logs is None:
            self._logs = []
            sub = self.ctx.submission
            for path in sub.log_paths:
                text, _ = sub.files[path].text()
                if text:
                    self._logs.append((path, text[:_LOG_HEAD]))
        return self._logs

    def gates_at(self, func: Func, node: ast.AST) -> list[Gate]:
        pos = (getattr(node, "lineno", 0), getattr(node, "col_offset", 0))
        return [g for start, end, g in func.regions if start <= pos <= end]

    # ------------------------------------------------------------------------------------------- reachability
    @property
    def entry(self) -> Func | None:
        return self.entry_module.func if self.entry_module else None

    @property
    def entries(self) -> list[Func]:
        """The entry script's top level, then the top level of every other own script a README/*.sh command
        launches (`python eval.py`, `torchrun ... train_gpt_improved.py`): all of them run."""
        if self._entries is None:
            self._entries = [self.entry] if self.entry is not None else []
            for mod in self.launched_modules():
                if mod.func not in self._entries:
                    self._entries.append(mod.func)
        return self._entries

    def launched_modules(self) -> list[Module]:
        out: list[Module] = []
        for _path, line in self.launch_lines:
            for word in _SCRIPT.findall(line):
                name = PurePosixPath(word).name
                for mod in self.modules.values():
                    p = PurePosixPath(mod.unit.path)
                    if (p.name == name or mod.unit.path == word.lstrip("./")) and mod not in out:
                        if mod is not self.entry_module:
                            out.append(mod)
        return out

    def _compute_reach(self) -> dict[Func, Reach]:
        """Reach of every function from the entries, per calling context: a function with parameter gates is
        visited once per call site (its gates decided by that call's arguments), others once."""
        out: dict[Func, Reach] = {}
        self._contexts = {}
        roots = self.entries
        if not roots:
            return out
        Item = tuple[Func, CallSite | None, tuple[str, ...], Gate | None]
        live_items: list[Item] = []
        # pass 1: edges that run under the documented configuration; pass 2: every edge
        for mode in ("live", "gated"):
            if mode == "live":
                queue: deque[Item] = deque()
                for root in roots:
                    why = "entry point" if root is self.entry else "launched by a README/*.sh run command"
                    out[root] = Reach("live", why, None, (root.qualname,))
                    queue.append((root, None, (root.qualname,), None))
                seen: set[tuple[Func, int]] = {(r, 0) for r in roots}
            else:
                queue = deque(live_items)
            while queue:
                item = queue.popleft()
                f, via, path, gate = item
                if mode == "live":
                    live_items.append(item)
                    self._contexts.setdefault(f, []).append((via, gate))
                for target, gates, site in self._edges(f):
                    decided = [self.gate_in(g, via) for g in gates]
                    deciding = _deciding(decided)
                    if mode == "live" and deciding is not None and not deciding.runs:
                        continue
                    ctx_site = site if self._has_param_gates(target) else None
                    key = (target, id(ctx_site.node) if ctx_site is not None else 0)
                    if key in seen:
                        continue
                    seen.add(key)
                    g2 = gate or deciding
                    step = path + (target.qualname,)
                    if mode == "live":
                        reason = "reachable from the entry point"
                        if g2 is not None and g2.by_command:
                            reason = f"reachable; default-off but run by the documented configuration ({g2.describe()})"
                        old = out.get(target)
                        if old is None or (old.gate is not None and g2 is None):
                            out[target] = Reach("live", reason, g2, step)
                    elif target not in out:
                        out[target] = Reach(
                            "gated_off",
                            f"only reachable through {g2.describe()}"
                            if g2
                            else "only reachable through code that does not run",
                            g2,
                            step,
                        )
                    queue.append((target, ctx_site, step, g2))
        return out

    def _has_param_gates(self, f: Func) -> bool:
        got = self._param_gated.get(f)
        if got is None:
            got = self._param_gated[f] = any(g.params for _, _, g in f.regions)
        return got

    def contexts(self, func: Func) -> list[tuple[CallSite | None, Gate | None]]:
        """The calling contexts in which `func` runs: (the call site that decides its parameter gates or None,
        the gate on the way that only the documented configuration turns on, or None)."""
        self.func_reach(func)
        return list(self._contexts.get(func, ()))

    def _edges(self, f: Func) -> Iterator[tuple[Func, tuple[Gate, ...], CallSite | None]]:
        for site in f.calls:
            for callee in site.callees:
                yield callee, site.gates, site
            if site.constructs is not None:
                for c in site.constructs.mro():
                    for name in _PROTOCOL:
                        if name in c.methods:
                            yield c.methods[name], site.gates, None
                    yield c.body, site.gates, None
        for _, target, gates in f.refs:
            yield target, gates, None
        if f.kind == "module":
            for c in f.nested_classes.values():
                yield c.body, (), None
            for mname, _ in f.module.imported_names.values():
                other = self.module_by_name.get(mname)
                if other is not None and other is not f.module:
                    yield other.func, (), None
        if f.kind == "classbody":
            for c in f.nested_classes.values():
                yield c.body, (), None

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
        """Does `node` run? dead (its function is never called), gated_off (a branch that does not run under the
        documented configuration, in every context the function runs in), live."""
        f = func or self.enclosing_func(unit, node)
        if f is None:
            return Reach("unknown", "not inside analysed code")
        return self._reach_under(f, self.gates_at(f, node))

    def site_reach(self, site: CallSite) -> Reach:
        return self._reach_under(site.caller, site.gates)

    def _reach_under(self, f: Func, gates: list[Gate] | tuple[Gate, ...]) -> Reach:
        r = self.func_reach(f)
        if r.status in ("dead", "gated_off") or not gates:
            return r
        contexts = self._contexts.get(f) or [(None, r.gate)]
        first_off: Gate | None = None
        by_command: Gate | None = None
        for via, _ in contexts:
            off = _deciding(self.gate_in(g, via) for g in gates)
            if off is None:
                return r
            if off.runs:
                by_command = by_command or off
            elif first_off is None:
                first_off = off
        if by_command is not None:
            return Reach(
                "live",
                f"default-off but run by the documented configuration ({by_command.describe()})",
                by_command,
                r.path,
            )
        assert first_off is not None
        reason = first_off.describe()
        if len(contexts) > 1 and first_off.via is not None:
            reason += f" (and at every other call of {f.qualname} that runs)"
        return Reach("gated_off", reason, first_off, r.path)

    # ------------------------------------------------------------------------------------------- exclusivity
    def exclusive(self, a: CallSite | tuple[Any, ast.AST], b: CallSite | tuple[Any, ast.AST]) -> bool:
        """True when `a` and `b` (call sites, or (unit, node) pairs) never both run in one execution: the
        conditions on their way require one atomic condition both true and false (`if x and not y:` against
        `if y:`). Conditions are read from the enclosing `if`s of each, up through the chain of single
        callers; undecidable or unrelated conditions answer False (they may both run)."""
        la, lb = self._literals(a), self._literals(b)
        return any(lb.get(atom) is (not pol) for atom, pol in la.items() if atom in lb)

    def _literals(self, x: CallSite | tuple[Any, ast.AST]) -> dict[str, bool]:
        if isinstance(x, CallSite):
            f, node = x.caller, x.node
        else:
            f, node = self.enclosing_func(x[0], x[1]), x[1]
        out: dict[str, bool] = {}
        for _ in range(8):
            if f is None or not isinstance(f.node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Module)):
                break
            for test, branch in _enclosing_conditions(f.node, node):
                for atom, pol in _atoms(test, branch == "body"):
                    out.setdefault(atom, pol)
            callers = self._callers.get(f, [])
            if len(callers) != 1:
                break
            f, node = callers[0].caller, callers[0].node
        return out

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
                g = gate or self.site_gate(site, via[-1] if via else None)
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
                self.reachable_from(list(site.callees), include_gated, via=site) if site.callees else set()
            )
        return got

    def reachable_from(
        self, funcs: list[Func], include_gated: bool = False, via: CallSite | None = None
    ) -> set[Func]:
        """Functions transitively called from `funcs` (entered through the call `via`, when given), following only
        edges that run under the documented configuration unless `include_gated`."""
        seen: set[Func] = set(funcs)
        todo: list[tuple[Func, CallSite | None]] = [(f, via) for f in funcs]
        done: set[tuple[Func, int]] = set()
        while todo:
            f, ctx_site = todo.pop()
            key = (f, id(ctx_site.node) if ctx_site is not None and self._has_param_gates(f) else 0)
            if key in done:
                continue
            done.add(key)
            for target, gates, site in self._edges(f):
                if not include_gated:
                    off = _deciding(self.gate_in(g, ctx_site) for g in gates)
                    if off is not None and not off.runs:
                        continue
                seen.add(target)
                todo.append((target, site))
        return seen


def _deciding(gates: Iterator[Gate] | list[Gate] | tuple[Gate, ...]) -> Gate | None:
    """The first gate that keeps code from running by default or under the documented configuration."""
    return next((g for g in gates if not g.taken or not g.runs), None)


def _params_read(func: Func, test: ast.AST) -> tuple[str, ...]:
    """Parameters of `func` (not `self`) that a test reads and that the function never reassigns."""
    if func.kind != "function":
        return ()
    skip = func.params[:1] if func.cls is not None and not func.is_static else []
    # a parameter read as a value (`if use_ngram`), not as the receiver of a field (`args.x` folds by field)
    receivers = {
        id(n.value)
        for n in ast.walk(test)
        if isinstance(n, (ast.Attribute, ast.Subscript)) and n.value is not None
    }
    names = {n.id for n in ast.walk(test) if isinstance(n, ast.Name) and id(n) not in receivers}
    return tuple(sorted(p for p in func.params if p in names and p not in skip and p not in func.assigned))


def _enclosing_conditions(root: ast.AST, target: ast.AST) -> list[tuple[ast.AST, str]]:
    """(test, "body"|"orelse") of every `if` / conditional expression inside `root` that holds `target`."""
    out: list[tuple[ast.AST, str]] = []
    pos = (getattr(target, "lineno", 0), getattr(target, "col_offset", 0))

    def inside(nodes: list[ast.AST]) -> bool:
        if not nodes or not hasattr(nodes[0], "lineno") or not hasattr(nodes[-1], "end_lineno"):
            return False
        start = (nodes[0].lineno, nodes[0].col_offset)
        end = (nodes[-1].end_lineno or 0, nodes[-1].end_col_offset or 0)
        return start <= pos <= end

    node: ast.AST = root
    while True:
        nxt = None
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                continue
            if not inside([child]):
                continue
            if isinstance(child, (ast.If, ast.IfExp)):
                body = child.body if isinstance(child.body, list) else [child.body]
                orelse = child.orelse if isinstance(child.orelse, list) else [child.orelse]
                if inside(body):
                    out.append((child.test, "body"))
                elif inside(orelse):
                    out.append((child.test, "orelse"))
            nxt = child
            break
        if nxt is None or nxt is target:
            return out
        node = nxt


def _atoms(test: ast.AST, positive: bool) -> list[tuple[str, bool]]:
    """Atomic conditions a branch implies, with their polarity: the body of `if a and not b` implies a and not b,
    the else of `if a or b` implies not a and not b; anything else implies only itself."""
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return _atoms(test.operand, not positive)
    if isinstance(test, ast.BoolOp):
        conj = isinstance(test.op, ast.And) == positive
        if conj:
            return [a for v in test.values for a in _atoms(v, positive)]
        return []
    if (
        isinstance(test, ast.Compare)
        and len(test.ops) == 1
        and isinstance(test.ops[0], (ast.NotEq, ast.IsNot))
    ):
        flipped = ast.Compare(
            test.left, [ast.Eq() if isinstance(test.ops[0], ast.NotEq) else ast.Is()], test.comparators
        )
        return [(ast.unparse(flipped), not positive)]
    return [(ast.unparse(test), positive)]
