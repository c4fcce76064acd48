"""Static values of gate expressions: env-var defaults, Hyperparameters-style class attributes, module constants.

Nothing is executed: a tiny evaluator folds the shapes that submissions use for feature flags
(`bool(int(os.environ.get("TTT_ENABLED", "1")))`, `os.getenv("X", "0") == "1"`, `args.ttt_enabled and not y`)
and answers UNKNOWN for anything else. Run commands found in README.md / *.sh give alternative environments.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from auditor.flow.program import Func, Program


class _Unknown:
    _instance: _Unknown | None = None

    def __new__(cls) -> _Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNKNOWN"

    def __bool__(self) -> bool:  # never let UNKNOWN silently read as False
        raise TypeError("UNKNOWN has no truth value; compare with `is UNKNOWN`")


UNKNOWN: Any = _Unknown()

_ENV_GETTERS = {"os.environ.get", "os.getenv", "environ.get", "getenv"}
_MAX_DEPTH = 24
_CONVERTERS = {"int": int, "float": float, "bool": bool, "str": str}
# Set by the launcher (torchrun / SLURM), not by the submission: their "defaults" say nothing about a real run.
RUNTIME_ENV = frozenset(
    {
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
        "GROUP_RANK",
        "NODE_RANK",
        "SLURM_PROCID",
        "SLURM_NTASKS",
        "CUDA_VISIBLE_DEVICES",
    }
)


@dataclass(frozen=True)
class RunCommand:
    """One way the folder says to run the script: env assignments on a launch line (plus earlier exports)."""

    path: str
    line: int
    text: str
    env: tuple[tuple[str, str], ...]

    @property
    def env_dict(self) -> dict[str, str]:
        return dict(self.env)


_ASSIGN = re.compile(r"(?:(?<=\s)|^)([A-Z_][A-Z0-9_]*)=(\"[^\"]*\"|'[^']*'|[^\s;&|]*)")
_LAUNCH = re.compile(r"\b(torchrun|python3?|accelerate|deepspeed|srun|bash|sh)\b|\.py\b")
# a launcher word followed (options between) by a Python script: prose that merely names a .py file is not a command
_LAUNCHER = re.compile(r"\b(?:python3?|torchrun|accelerate\s+launch|deepspeed|srun)\b[^|;&#]*?\.py\b")
_EXPORT = re.compile(r"^\s*export\s+([A-Z_][A-Z0-9_]*)=(\"[^\"]*\"|'[^']*'|\S*)")


def parse_run_commands(files: dict[str, str]) -> list[RunCommand]:
    """Launch lines in README.md / *.sh: `VAR=1 OTHER=x torchrun ... train_gpt.py`, with `export VAR=...` before."""
    out: list[RunCommand] = []
    for path, text in sorted(files.items()):
        exports: dict[str, str] = {}
        logical: list[tuple[int, str]] = []
        buf, start = "", 0
        for i, raw in enumerate(text.splitlines(), 1):
            line = raw.strip().strip("`")
            if not buf:
                start = i
            if line.endswith("\\"):
                buf += line[:-1] + " "
                continue
            logical.append((start, buf + line))
            buf = ""
        for lineno, line in logical:
            m = _EXPORT.match(line)
            if m:  # `export A=1 B=2`: every assignment on the line
                for k, v in _ASSIGN.findall(line.split("export", 1)[1]):
                    exports[k] = v.strip("\"'")
                continue
            if not _LAUNCH.search(line):
                continue
            inline = {
                k: v.strip("\"'") for k, v in _ASSIGN.findall(line.split("torchrun")[0].split("python")[0])
            }
            if not inline and not exports:
                continue
            env = {**exports, **inline}
            out.append(RunCommand(path, lineno, line[:240], tuple(sorted(env.items()))))
    return out


def launch_lines(files: dict[str, str]) -> list[tuple[str, str]]:
    """(path, logical line) of every line in README*/*.sh that launches a Python script (`python eval.py`,
    `torchrun --nproc_per_node=8 train_gpt.py`, `bash run.sh`), continuation lines joined."""
    out: list[tuple[str, str]] = []
    for path, text in sorted(files.items()):
        buf = ""
        for raw in text.splitlines():
            line = raw.strip().strip("`")
            if line.endswith("\\"):
                buf += line[:-1] + " "
                continue
            line, buf = buf + line, ""
            if _LAUNCHER.search(line) and not line.lstrip().startswith("#"):
                out.append((path, line[:400]))
    return out


@dataclass
class ConstEval:
    """Folds an expression to a Python value under an environment (None = defaults only)."""

    prog: Program
    env: dict[str, str] | None = None
    env_used: set[str] = field(default_factory=set)
    _frames: list[tuple[Any, dict[str, Any]]] = field(default_factory=list)  # inlined helper calls
    # values of function parameters for one call (`(id(Func), name) -> value`): a parameter gate decided per call
    params: dict[tuple[int, str], Any] | None = None

    def value(self, unit_name: str, expr: ast.AST, func: Func | None, depth: int = 0) -> Any:
        if depth > _MAX_DEPTH:
            return UNKNOWN
        # memo per (expression, scope): folding Hyperparameters-style classes revisits the same attributes
        # many times; shared across evaluators with the same environment (see Program._const_memo)
        if self._frames:  # inside an inlined helper: values depend on its arguments, no memo
            try:
                return self._value(unit_name, expr, func, depth + 1)
            except (
                TypeError,
                ValueError,
                ZeroDivisionError,
                OverflowError,
                AttributeError,
                KeyError,
                IndexError,
            ):
                return UNKNOWN
        key = (id(expr), id(func), unit_name)
        memo = self.prog.const_memo(self.env, self.params)
        if key in memo:
            got, used = memo[key]
            self.env_used |= used
            return got
        memo[key] = (UNKNOWN, frozenset())  # a cycle reads as UNKNOWN
        outer_used = self.env_used
        self.env_used = set()
        try:
            got = self._value(unit_name, expr, func, depth + 1)
        except (
            TypeError,
            ValueError,
            ZeroDivisionError,
            OverflowError,
            AttributeError,
            KeyError,
            IndexError,
        ):
            got = UNKNOWN
        finally:
            used = frozenset(self.env_used)
            self.env_used = outer_used | used
        memo[key] = (got, used)
        return got

    # ----------------------------------------------------------------------------------------------------------
    def _env(self, key: Any, default: Any) -> Any:
        if not isinstance(key, str) or key in RUNTIME_ENV:
            return UNKNOWN
        self.env_used.add(key)
        if self.env is not None and key in self.env:
            return self.env[key]
        return default

    def _value(self, un: str, e: ast.AST, func: Func | None, d: int) -> Any:  # noqa: C901 - one dispatch table
        v = self.value
        if isinstance(e, ast.Constant):
            return e.value
        if isinstance(e, (ast.Tuple, ast.List, ast.Set)):
            items = [v(un, x, func, d) for x in e.elts]
            return UNKNOWN if any(x is UNKNOWN for x in items) else tuple(items)
        if isinstance(e, ast.UnaryOp):
            x = v(un, e.operand, func, d)
            if x is UNKNOWN:
                return UNKNOWN
            if isinstance(e.op, ast.Not):
                return not x
            if isinstance(e.op, ast.USub):
                return -x
            if isinstance(e.op, ast.UAdd):
                return +x
            return UNKNOWN
        if isinstance(e, ast.BoolOp):
            is_and = isinstance(e.op, ast.And)
            saw_unknown = False
            last: Any = None
            for item in e.values:
                x = v(un, item, func, d)
                if x is UNKNOWN:
                    saw_unknown = True
                    continue
                last = x
                if is_and and not x:
                    return x  # one false operand decides an `and`
                if not is_and and x:
                    return x
            return UNKNOWN if saw_unknown else last
        if isinstance(e, ast.Compare):
            left = v(un, e.left, func, d)
            for op, right_node in zip(e.ops, e.comparators):
                right = v(un, right_node, func, d)
                if left is UNKNOWN or right is UNKNOWN:
                    if isinstance(op, (ast.In, ast.NotIn)) and _is_environ(right_node):
                        key = left
                        if key is UNKNOWN or key in RUNTIME_ENV:
                            return UNKNOWN
                        present = self.env is not None and key in self.env
                        self.env_used.add(key)
                        if not present:
                            ok = isinstance(op, ast.NotIn)
                        else:
                            ok = isinstance(op, ast.In)
                        if not ok:
                            return False
                        left = right
                        continue
                    return UNKNOWN
                ok = _compare(op, left, right)
                if ok is UNKNOWN:
                    return UNKNOWN
                if not ok:
                    return False
                left = right
            return True
        if isinstance(e, ast.BinOp):
            a, b = v(un, e.left, func, d), v(un, e.right, func, d)
            if a is UNKNOWN or b is UNKNOWN:
                return UNKNOWN
            return _binop(e.op, a, b)
        if isinstance(e, ast.IfExp):
            t = v(un, e.test, func, d)
            if t is UNKNOWN:
                return UNKNOWN
            return v(un, e.body if t else e.orelse, func, d)
        if isinstance(e, ast.Call):
            return self._call(un, e, func, d)
        if isinstance(e, ast.Name):
            return self._name(un, e.id, func, d)
        if isinstance(e, ast.Attribute):
            return self._attr(un, e, func, d)
        if isinstance(e, ast.Subscript) and _is_environ(e.value):
            key = v(un, e.slice, func, d)
            got = self._env(key, UNKNOWN)
            return got
        if isinstance(e, ast.JoinedStr):
            parts = []
            for p in e.values:
                if isinstance(p, ast.Constant):
                    parts.append(str(p.value))
                elif isinstance(p, ast.FormattedValue):
                    x = v(un, p.value, func, d)
                    if x is UNKNOWN:
                        return UNKNOWN
                    parts.append(str(x))
            return "".join(parts)
        return UNKNOWN

    def _call(self, un: str, e: ast.Call, func: Func | None, d: int) -> Any:
        name = self.prog.dotted(un, e.func, func)
        args = e.args
        if name in _ENV_GETTERS or (name or "").endswith("environ.get"):
            if not args:
                return UNKNOWN
            key = self.value(un, args[0], func, d)
            default = self.value(un, args[1], func, d) if len(args) > 1 else None
            for kw in e.keywords:
                if kw.arg == "default":
                    default = self.value(un, kw.value, func, d)
            return self._env(key, default)
        conv = name if name in _CONVERTERS else None
        if conv is None and isinstance(e.func, ast.Name):
            # `t(v)` with a converter passed as an argument, or `C = int` aliases (minified code)
            held = self._name(un, e.func.id, func, d)
            conv = next((k for k, v in _CONVERTERS.items() if v is held), None)
        if conv is not None and len(args) == 1 and not e.keywords:
            x = self.value(un, args[0], func, d)
            if x is UNKNOWN:
                return UNKNOWN
            return _CONVERTERS[conv](x)
        if isinstance(e.func, ast.Name) and func is not None:
            target = self.prog.lookup_name(func, e.func.id)
            from auditor.flow.program import Func as _Func

            if isinstance(target, _Func) and len(self._frames) < 4:
                return self._inline(un, target, e, func, d)
        if name in ("os.path.join",):
            parts = [self.value(un, a, func, d) for a in args]
            if any(p is UNKNOWN or not isinstance(p, str) for p in parts):
                return UNKNOWN
            import posixpath

            return posixpath.join(*parts)
        if isinstance(e.func, ast.Attribute) and e.func.attr in ("lower", "upper", "strip") and not args:
            x = self.value(un, e.func.value, func, d)
            if isinstance(x, str):
                return getattr(x, e.func.attr)()
            return UNKNOWN
        return UNKNOWN

    def _inline(self, un: str, callee: Any, call: ast.Call, func: Func | None, d: int) -> Any:
        """Fold a small helper (`def _e(k, d, t=str): v = os.environ.get(k, str(d)); return t(v)`) for these
        arguments: straight-line assignments, ifs and returns only."""
        node = callee.node
        if (
            not isinstance(node, (ast.FunctionDef,))
            or len(node.body) > 10
            or any(not isinstance(x, (ast.Assign, ast.If, ast.Return, ast.Expr)) for x in node.body)
        ):
            return UNKNOWN
        a = node.args
        params = [p.arg for p in a.posonlyargs + a.args]
        defaults = dict(zip(params[len(params) - len(a.defaults) :], a.defaults))
        frame: dict[str, Any] = {}
        for i, p in enumerate(params):
            if i < len(call.args):
                frame[p] = self.value(un, call.args[i], func, d)
            elif any(k.arg == p for k in call.keywords):
                frame[p] = self.value(un, next(k.value for k in call.keywords if k.arg == p), func, d)
            elif p in defaults:
                frame[p] = self.value(callee.unit.name, defaults[p], None, d)
            else:
                return UNKNOWN
        self._frames.append((callee, frame))
        try:
            got = self._exec(callee, node.body, d)
        finally:
            self._frames.pop()
        return got[1] if got is not None else UNKNOWN

    def _exec(self, callee: Any, body: list[ast.stmt], d: int) -> tuple[str, Any] | None:
        frame = self._frames[-1][1]
        un = callee.unit.name
        for s in body:
            if isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant):
                continue
            if isinstance(s, ast.Assign) and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name):
                frame[s.targets[0].id] = self.value(un, s.value, callee, d)
            elif isinstance(s, ast.If):
                t = self.value(un, s.test, callee, d)
                if t is UNKNOWN:
                    return ("return", UNKNOWN)
                got = self._exec(callee, s.body if t else s.orelse, d)
                if got is not None:
                    return got
            elif isinstance(s, ast.Return):
                return ("return", self.value(un, s.value, callee, d) if s.value is not None else None)
            else:
                return ("return", UNKNOWN)
        return None

    def _name(self, un: str, name: str, func: Func | None, d: int) -> Any:
        if self._frames and self._frames[-1][0] is func and name in self._frames[-1][1]:
            return self._frames[-1][1][name]
        if name in ("True", "False", "None"):
            return {"True": True, "False": False, "None": None}[name]
        if name in _CONVERTERS:
            return _CONVERTERS[name]
        if name == "__name__" and func is not None and func.kind == "module":
            # the entry script, and every script a run command launches, runs as __main__
            if any(e.unit.name == un for e in self.prog.entries):
                return "__main__"
            return func.module.name
        scope = func
        while scope is not None:
            exprs = scope.assigned.get(name)
            if exprs is not None:
                if name in scope.params:
                    return UNKNOWN
                return self._single(scope.unit.name, exprs, scope, d)
            if name in scope.params:
                if self.params is not None and (id(scope), name) in self.params:
                    return self.params[(id(scope), name)]
                if scope.name in ("__init__", "__post_init__") and not self._frames:
                    return self._ctor_arg(scope, name, d)
                return UNKNOWN
            scope = scope.parent
        mod = self.prog.modules.get(un)
        if mod is None:
            return UNKNOWN
        exprs = mod.func.assigned.get(name)
        if exprs is not None:
            return self._single(un, exprs, mod.func, d)
        target = mod.imported_names.get(name)
        if target is not None:
            other_mod, other_name = target
            other = self.prog.module_by_name.get(other_mod)
            if other is not None and other_name:
                return self._name(other.unit.name, other_name, None, d)
        return UNKNOWN

    def _ctor_arg(self, ctor: Func, name: str, d: int) -> Any:
        """A constructor parameter (`self.enabled = enabled`) folded over every construction of its class: the
        value when all of them agree (`BigramMixer(n, args.mixer_enabled)` with the flag off), else UNKNOWN."""
        if ctor.cls is None:
            return UNKNOWN
        sites = self.prog.construction_sites(ctor.cls)  # syntactic: gates are folded while the index is built
        if not sites or len(sites) > 8:
            return UNKNOWN
        node = ctor.node
        a = node.args
        positional = a.posonlyargs + a.args
        defaults = dict(zip([p.arg for p in positional[len(positional) - len(a.defaults) :]], a.defaults))
        defaults.update({p.arg: x for p, x in zip(a.kwonlyargs, a.kw_defaults) if x is not None})
        vals = []
        for unit, call, caller in sites:
            arg = ctor.bind(call, bound_self=True).get(name)
            if arg is not None:
                vals.append(self.value(unit.name, arg, caller, d))
            elif name in defaults:
                vals.append(self.value(ctor.unit.name, defaults[name], ctor.parent, d))
            else:
                return UNKNOWN
        if any(v is UNKNOWN for v in vals):
            return UNKNOWN
        return vals[0] if all(v == vals[0] for v in vals[1:]) else UNKNOWN

    def _single(self, un: str, exprs: list[ast.AST], func: Func | None, d: int) -> Any:
        vals = [self.value(un, x, func, d) for x in exprs]
        if not vals or any(x is UNKNOWN for x in vals):
            return UNKNOWN
        first = vals[0]
        return first if all(x == first for x in vals[1:]) else UNKNOWN

    def _attr(self, un: str, e: ast.Attribute, func: Func | None, d: int) -> Any:
        # module constant of another own module: `cfg.FLAG`
        if isinstance(e.value, ast.Name):
            mod = self.prog.modules.get(un)
            target = mod.imported_names.get(e.value.id) if mod else None
            if target is not None and target[1] == "":
                other = self.prog.module_by_name.get(target[0])
                if other is not None:
                    return self._name(other.unit.name, e.attr, None, d)
        if e.attr in self.prog.runtime_attrs:  # a counter / buffer the code changes while it runs
            return UNKNOWN
        cls = self.prog.type_of(un, e.value, func)
        candidates = [cls] if cls is not None else self.prog.classes_defining(e.attr)
        vals = []
        for c in candidates:
            exprs = c.attr_exprs(e.attr)
            if not exprs:
                continue
            vals.append(self._single(c.unit.name, [x for x, _ in exprs], exprs[0][1], d))
        if vals:  # assignments outside constructors are other values the attribute takes at run time
            vals += [self.value(f.unit.name, x, f, d) for x, f in self.prog.late_attr_assigns.get(e.attr, [])]
        if not vals or any(x is UNKNOWN for x in vals):
            return UNKNOWN
        return vals[0] if all(x == vals[0] for x in vals[1:]) else UNKNOWN


def _is_environ(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id == "environ"
    )


def _compare(op: ast.cmpop, a: Any, b: Any) -> Any:
    table = {
        ast.Eq: lambda: a == b,
        ast.NotEq: lambda: a != b,
        ast.Lt: lambda: a < b,
        ast.LtE: lambda: a <= b,
        ast.Gt: lambda: a > b,
        ast.GtE: lambda: a >= b,
        ast.In: lambda: a in b,
        ast.NotIn: lambda: a not in b,
        ast.Is: lambda: a is b,
        ast.IsNot: lambda: a is not b,
    }
    fn = table.get(type(op))
    return UNKNOWN if fn is None else bool(fn())


def _binop(op: ast.operator, a: Any, b: Any) -> Any:
    table = {
        ast.Add: lambda: a + b,
        ast.Sub: lambda: a - b,
        ast.Mult: lambda: a * b,
        ast.Div: lambda: a / b,
        ast.FloorDiv: lambda: a // b,
        ast.Mod: lambda: a % b if not isinstance(a, str) else UNKNOWN,
        ast.Pow: lambda: a**b if abs(b) < 64 else UNKNOWN,
        ast.BitAnd: lambda: a & b,
        ast.BitOr: lambda: a | b,
    }
    fn = table.get(type(op))
    return UNKNOWN if fn is None else fn()
