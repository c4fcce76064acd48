"""Static unpacking of `exec(<codec>.decompress(<b85/b64...>decode("...")))` shims, without executing anything.

INTERFACE
    unpack_source(path, text, read_file=None) -> UnpackOutcome
      .units    all CodeUnits for this file: the shipped text first, then each decoded layer (depth-first in the
                order the exec calls appear, so for a single chain the innermost layer is last)
      .layers   one UnpackedLayer per decoded layer; `line` is the exec in the parent layer, or, for code that
                reaches exec through a function parameter (`def install(src): exec(src)`), the call passing it
      .problems (line, message) for exec/eval calls whose argument could not be decoded (callers turn them into
                WARN findings). `line` is in the shipped file; messages name the decoded layer when deeper.

HOW: every `exec(...)` / `eval(...)` call is found in the AST and its first argument is evaluated by a tiny
interpreter that only knows pure, bounded operations: str/bytes/int literals, names bound by plain assignments
(the binding in force at the call), `+` and `|` on literals, lists/tuples/dicts of literals, `"".join(...)`,
`.decode/.encode/.replace/.strip`, the whitelisted decoders of base64/binascii/codecs and the decompressors of
lzma (incl. FORMAT_RAW + filters)/zlib/gzip/bz2/brotli, reached through any import alias or from-import,
`compile(src, ...)`, and `open(<sibling>).read()` / `Path(...).read_text()` where the sibling is a file of the
submission (given by `read_file`). A parameter of the enclosing function is followed to the function's call
sites in the same file. Nothing else is callable, so submission code is never imported, executed or evaluated.

LIMITS (a decompression bomb must neither allocate nor hang): every decompressor runs incrementally with an
output cap, so no single layer and no file in total may decode to more than MAX_DECODED_BYTES; lzma headers may
not ask for more than LZMA_MEMLIMIT of dictionary; layers nest at most MAX_DEPTH deep and number at most
MAX_LAYERS per file; one file gets TIME_BUDGET_S seconds of decoding; a decoded layer over the parse limits of
auditor.submission (bytes, tokens) is not analysed. Anything over a limit is a problem, never silence.

Python 3.12 f-strings (PEP 701) that reuse their quote inside a replacement field do not parse on 3.11; such
texts get their inner literals re-quoted (same lines and columns) so they can still be analysed.
"""

from __future__ import annotations

import ast
import base64
import binascii
import builtins
import bz2
import codecs
import hashlib
import lzma
import posixpath
import re
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from auditor.facts import CodeUnit
from auditor.findings import UnpackedLayer
from auditor.flow.nodeindex import child_nodes
from auditor.submission import code_limit_problem

MAX_DECODED_BYTES = 20 * 1024 * 1024  # per layer and per shipped file in total
MAX_DEPTH = 8
MAX_LAYERS = 64  # decoded layers per shipped file
TIME_BUDGET_S = 10.0  # decoding time per shipped file
LZMA_MEMLIMIT = 256 * 1024 * 1024  # decoder memory (dictionary) an lzma stream may ask for
CHUNK = 1024 * 1024  # decompressor output granularity (limits and time are checked between chunks)

ReadFile = Callable[[str], "str | None"]


@dataclass
class UnpackOutcome:
    units: list[CodeUnit] = field(default_factory=list)
    layers: list[UnpackedLayer] = field(default_factory=list)
    problems: list[tuple[int, str]] = field(default_factory=list)


class Undecodable(Exception):
    """The argument of an exec/eval cannot be decoded statically; the message says why."""


class ParameterNeeded(Undecodable):
    """The code is a parameter of the enclosing function: decode it at the function's call sites instead."""

    def __init__(self, name: str, scope: _Scope) -> None:
        super().__init__(
            f"'{name}' is a parameter of {scope.func.name if scope.func else '?'}() whose call sites "
            "pass nothing decodable"
        )
        self.name = name
        self.scope = scope


Pos = tuple[int, int]  # (line, column) of a statement or call
END: Pos = (1 << 30, 0)


# --- values of the little expression language ---------------------------------------------------------------
@dataclass(frozen=True)
class Module:
    name: str  # e.g. "lzma", "os.path"


@dataclass(frozen=True)
class Func:
    name: str  # qualified, e.g. "lzma.decompress"


@dataclass(frozen=True)
class BoundMethod:
    obj: Any
    name: str


@dataclass(frozen=True)
class PathValue:
    path: str  # POSIX path relative to the submission root


@dataclass(frozen=True)
class FileHandle:
    path: str


@dataclass
class Decoded:
    """A value with the codecs that produced it (outermost first once reversed)."""

    value: Any
    codecs: tuple[str, ...] = ()


# Module-level constants a shim may pass as keyword arguments (format=L.FORMAT_RAW, filters=[{"id": ...}]).
_CONSTANTS: dict[str, Any] = {
    f"lzma.{n}": getattr(lzma, n) for n in dir(lzma) if n.isupper() and isinstance(getattr(lzma, n), int)
}
_CONSTANTS.update({"zlib.MAX_WBITS": zlib.MAX_WBITS})

_INT_OPS: dict[type, Callable[[int, int], int]] = {
    ast.BitOr: lambda a, b: a | b,
    ast.BitAnd: lambda a, b: a & b,
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.LShift: lambda a, b: a << min(b, 64),
}

_B64_FUNCS = {
    "base64.b85decode": ("base85", base64.b85decode),
    "base64.a85decode": ("ascii85", base64.a85decode),
    "base64.b64decode": ("base64", base64.b64decode),
    "base64.standard_b64decode": ("base64", base64.standard_b64decode),
    "base64.urlsafe_b64decode": ("base64url", base64.urlsafe_b64decode),
    "base64.decodebytes": ("base64", base64.decodebytes),
    "base64.b32decode": ("base32", base64.b32decode),
    "base64.b32hexdecode": ("base32hex", base64.b32hexdecode),
    "base64.b16decode": ("base16", base64.b16decode),
    "binascii.a2b_base64": ("base64", binascii.a2b_base64),
    "binascii.a2b_hex": ("hex", binascii.a2b_hex),
    "binascii.unhexlify": ("hex", binascii.unhexlify),
    "bytes.fromhex": ("hex", bytes.fromhex),
}
_DECOMPRESSORS = {
    "lzma.decompress",
    "zlib.decompress",
    "gzip.decompress",
    "bz2.decompress",
    "brotli.decompress",
}
_KNOWN_MODULES = {
    "base64",
    "binascii",
    "codecs",
    "lzma",
    "zlib",
    "gzip",
    "bz2",
    "brotli",
    "os",
    "os.path",
    "pathlib",
    "builtins",
    "importlib",
    "marshal",
    "pickle",
    "zipfile",
    "tarfile",
    "io",
}
_OPAQUE = {"marshal.loads": "marshal bytecode", "pickle.loads": "a pickle", "zipimport": "a zip archive"}
_BUILTIN_NAMES = frozenset(dir(builtins))


class _Budget:
    def __init__(self, seconds: float, total_bytes: int) -> None:
        self.deadline = time.monotonic() + seconds
        self.seconds = seconds
        self.left = total_bytes

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise Undecodable(f"decoding took longer than the {self.seconds:g} s budget")


# --- bounded decompression --------------------------------------------------------------------------------------
def _cap_error(limit: int) -> Undecodable:
    return Undecodable(f"decompresses to more than {limit:,} bytes (limit); treated as a decompression bomb")


def _drain_stream(make: Callable[[], Any], data: bytes, limit: int, budget: _Budget, multi: bool) -> bytes:
    """Run lzma/bz2-style decompressor objects (decompress(data, max_length), eof, needs_input, unused_data)."""
    out = bytearray()
    pending = data
    while True:
        dec = make()
        chunk = dec.decompress(pending, max_length=CHUNK)
        while True:
            out += chunk
            if len(out) > limit:
                raise _cap_error(limit)
            budget.tick()
            if dec.eof or dec.needs_input:
                break
            chunk = dec.decompress(b"", max_length=CHUNK)
        if not dec.eof:
            raise Undecodable("compressed data is corrupt or truncated (end of stream not reached)")
        pending = dec.unused_data
        if not (multi and pending):
            return bytes(out)


def _zlib_bounded(data: bytes, wbits: int, limit: int, budget: _Budget, multi: bool) -> bytes:
    out = bytearray()
    pending = data
    while True:
        dec = zlib.decompressobj(wbits)
        chunk = dec.decompress(pending, CHUNK)
        while True:
            out += chunk
            if len(out) > limit:
                raise _cap_error(limit)
            budget.tick()
            # more output is pending while input is left over or the last call filled its whole chunk
            if dec.eof or not (dec.unconsumed_tail or len(chunk) == CHUNK):
                break
            chunk = dec.decompress(dec.unconsumed_tail, CHUNK)
        if not dec.eof:
            raise Undecodable("compressed data is corrupt or truncated (end of stream not reached)")
        pending = dec.unused_data
        if not (multi and pending):
            return bytes(out)


def _brotli_bounded(data: bytes, limit: int, budget: _Budget) -> bytes:
    try:
        import brotli  # optional dependency (gpu extra)
    except ImportError as exc:
        raise Undecodable("brotli-compressed layer, but the brotli package is not installed") from exc
    dec = brotli.Decompressor()
    out = bytearray(dec.process(data, output_buffer_limit=CHUNK))
    while not dec.is_finished():
        if len(out) > limit:
            raise _cap_error(limit)
        budget.tick()
        # All input was given at once, so a call that yields nothing while the stream is unfinished means the
        # stream ended early. (can_accept_more_data() cannot tell this: brotli >= 1.2 reports True while output
        # is still pending, which made every stream over one chunk look truncated.)
        chunk = dec.process(b"", output_buffer_limit=CHUNK)
        if not chunk and not dec.is_finished():
            raise Undecodable("compressed data is corrupt or truncated (end of stream not reached)")
        out += chunk
    if len(out) > limit:
        raise _cap_error(limit)
    return bytes(out)


def _check_raw_filters(filters: Any) -> None:
    if not isinstance(filters, list) or not all(isinstance(f, dict) and "id" in f for f in filters):
        raise Undecodable("lzma FORMAT_RAW needs a literal filters=[{'id': ...}] list")
    for f in filters:
        if int(f.get("dict_size", 0)) > LZMA_MEMLIMIT:
            raise Undecodable(
                f"lzma filter asks for a {f['dict_size']:,}-byte dictionary (over the memory limit)"
            )


def decompress_bounded(codec: str, data: bytes, kwargs: dict[str, Any], limit: int, budget: _Budget) -> bytes:
    """Decompress like `<codec>.decompress(data, **kwargs)` but never produce more than `limit` bytes."""
    try:
        if codec == "lzma":
            fmt = kwargs.get("format", lzma.FORMAT_AUTO)
            filters = kwargs.get("filters")
            if fmt == lzma.FORMAT_RAW:
                _check_raw_filters(filters)
                make = lambda: lzma.LZMADecompressor(format=fmt, filters=filters)  # noqa: E731
            else:  # the memory limit stops a header that asks for a huge dictionary
                make = lambda: lzma.LZMADecompressor(format=fmt, memlimit=LZMA_MEMLIMIT)  # noqa: E731
            return _drain_stream(make, data, limit, budget, multi=True)
        if codec == "bz2":
            return _drain_stream(bz2.BZ2Decompressor, data, limit, budget, multi=True)
        if codec == "zlib":
            wbits = kwargs.get("wbits", zlib.MAX_WBITS)
            return _zlib_bounded(data, int(wbits), limit, budget, multi=False)
        if codec == "gzip":
            return _zlib_bounded(data, 16 + zlib.MAX_WBITS, limit, budget, multi=True)
        if codec == "brotli":
            return _brotli_bounded(data, limit, budget)
    except Undecodable:
        raise
    except (lzma.LZMAError, zlib.error, OSError, EOFError, ValueError, TypeError, MemoryError) as exc:
        raise Undecodable(f"{codec} data is corrupt: {exc}") from exc
    except Exception as exc:  # brotli.error and friends
        raise Undecodable(f"{codec} data is corrupt: {type(exc).__name__}: {exc}") from exc
    raise Undecodable(f"unknown compressor {codec}")


# --- scopes: which names are bound to what --------------------------------------------------------------------
class _Scope:
    """Bindings of one module or function body. A name is usable only if every binding is a plain top-level
    assignment (or import); the binding in force at an exec is the last one before it."""

    def __init__(
        self, body: list[ast.stmt], parent: _Scope | None, func: ast.FunctionDef | None = None
    ) -> None:
        is_function = func is not None
        self.parent = parent
        self.func = func  # the function whose body this is (for following a parameter to its call sites)
        self.simple: dict[str, list[tuple[Pos, Any]]] = {}  # name -> [(position, ast.expr | value)]
        self.dynamic: set[str] = set()
        self.params: dict[str, int | None] = {}  # parameter -> positional index (None: keyword-only)
        if func is not None:
            a = func.args
            positional = [*a.posonlyargs, *a.args]
            self.params = {arg.arg: i for i, arg in enumerate(positional)}
            self.params.update({arg.arg: None for arg in a.kwonlyargs})
            self.dynamic.update(x.arg for x in (a.vararg, a.kwarg) if x is not None)
        top_level = set()
        for stmt in body:
            top_level.add(id(stmt))
            self._bind_simple(stmt)
        for stmt in body:  # one walk: names bound below the top level, and (functions) global/nonlocal names
            for node in _walk_scope(stmt):
                if is_function and isinstance(node, ast.Global | ast.Nonlocal):
                    self.dynamic.update(node.names)
                if id(node) in top_level or not isinstance(node, _BINDERS):
                    continue
                for name in _bound_names(node):
                    self.dynamic.add(name)

    def _bind_simple(self, stmt: ast.stmt) -> None:
        line = (stmt.lineno, stmt.col_offset)
        if isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                if isinstance(target, ast.Name):
                    self.simple.setdefault(target.id, []).append((line, stmt.value))
                else:
                    for name in _target_names(target):
                        self.dynamic.add(name)
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            self.simple.setdefault(stmt.target.id, []).append((line, stmt.value))
        elif isinstance(stmt, ast.Import):
            for alias in stmt.names:
                if alias.asname:
                    self.simple.setdefault(alias.asname, []).append((line, Module(alias.name)))
                else:
                    top = alias.name.split(".")[0]
                    self.simple.setdefault(top, []).append((line, Module(top)))
        elif isinstance(stmt, ast.ImportFrom) and stmt.level == 0 and stmt.module:
            for alias in stmt.names:
                qual = f"{stmt.module}.{alias.name}"
                value: Any = Module(qual) if qual in _KNOWN_MODULES else _CONSTANTS.get(qual, Func(qual))
                self.simple.setdefault(alias.asname or alias.name, []).append((line, value))
        else:
            for name in _bound_names(stmt):
                self.dynamic.add(name)

    def lookup(self, name: str, line: Pos) -> tuple[Any, _Scope] | None:
        """(binding, scope) in force at position `line`, or None if unbound here and in every enclosing scope."""
        if name in self.dynamic:
            raise Undecodable(f"'{name}' is reassigned in a way that cannot be followed statically")
        if name in self.params and name not in self.simple:
            raise ParameterNeeded(name, self)
        if name in self.params:
            raise Undecodable(f"parameter '{name}' is reassigned inside its function")
        if name in self.simple:
            before = [b for ln, b in self.simple[name] if ln < line]
            if not before:
                raise Undecodable(f"'{name}' is used before it is assigned")
            return before[-1], self
        if self.parent is not None:
            return self.parent.lookup(name, END)  # enclosing scope: its final binding
        return None


_OTHER_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
# the nodes _bound_names can return a name for
_BINDERS = (
    ast.Assign,
    ast.AugAssign,
    ast.AnnAssign,
    ast.For,
    ast.AsyncFor,
    ast.NamedExpr,
    ast.withitem,
    ast.Import,
    ast.ImportFrom,
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.ExceptHandler,
    ast.Delete,
)


def _walk_scope(node: ast.AST):
    """ast.walk that does not descend into nested function/class/lambda bodies (they are other scopes)."""
    if isinstance(node, _OTHER_SCOPES):
        yield node
        return
    stack = [node]
    while stack:
        cur = stack.pop()
        yield cur
        for child in child_nodes(cur):
            if isinstance(child, _OTHER_SCOPES):
                if not isinstance(child, ast.Lambda):
                    yield child  # its name is bound in this scope
                continue
            stack.append(child)


def _target_names(target: ast.AST) -> list[str]:
    return [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]


def _bound_names(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Assign):
        return [n for t in node.targets for n in _target_names(t)]
    if isinstance(node, ast.AugAssign | ast.AnnAssign | ast.For | ast.AsyncFor):
        return _target_names(node.target)
    if isinstance(node, ast.NamedExpr):
        return _target_names(node.target)
    if isinstance(node, ast.withitem) and node.optional_vars is not None:
        return _target_names(node.optional_vars)
    if isinstance(node, ast.comprehension):
        return []  # comprehension targets live in their own scope
    if isinstance(node, ast.Import | ast.ImportFrom):
        return [(a.asname or a.name).split(".")[0] for a in node.names]
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [node.name]
    if isinstance(node, ast.ExceptHandler) and node.name:
        return [node.name]
    if isinstance(node, ast.Delete):
        return [n for t in node.targets for n in _target_names(t)]
    return []


# --- the evaluator ------------------------------------------------------------------------------------------------
class _Evaluator:
    def __init__(
        self,
        path: str,
        scope: _Scope,
        line: Pos,
        read_file: ReadFile | None,
        budget: _Budget,
        params: dict[str, Decoded] | None = None,
    ) -> None:
        self.path = path
        self.scope = scope
        self.line = line
        self.exec_scope = scope
        self.params = params or {}
        self.read_file = read_file
        self.budget = budget
        self.depth = 0

    def eval(self, node: ast.expr) -> Decoded:
        self.depth += 1
        try:
            if self.depth > 60:
                raise Undecodable("expression nests too deeply")
            self.budget.tick()
            return self._eval(node)
        finally:
            self.depth -= 1

    def _eval(self, node: ast.expr) -> Decoded:
        if isinstance(node, ast.Constant):
            return Decoded(node.value)
        if isinstance(node, ast.Name):
            return self._name(node.id)
        if isinstance(node, ast.Attribute):
            return self._attribute(node)
        if isinstance(node, ast.List | ast.Tuple):
            items = [self.eval(e) for e in node.elts]
            return Decoded([i.value for i in items], _merge(items))
        if isinstance(node, ast.Dict):
            if any(k is None for k in node.keys):
                raise Undecodable("dict unpacking (**) in a shim argument")
            keys = [self.eval(k).value for k in node.keys]  # type: ignore[arg-type]
            vals = [self.eval(v).value for v in node.values]
            return Decoded(dict(zip(keys, vals)))
        if isinstance(node, ast.BinOp):
            return self._binop(node)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd | ast.Invert):
            operand = self.eval(node.operand).value
            if type(operand) is int:
                return Decoded(
                    -operand
                    if isinstance(node.op, ast.USub)
                    else ~operand
                    if isinstance(node.op, ast.Invert)
                    else operand
                )
            raise Undecodable(f"unary operator on a {type(operand).__name__} value")
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, ast.JoinedStr):
            raise Undecodable("an f-string built at run time")
        raise Undecodable(
            f"{type(node).__name__} expression ({_short(node)}) is not a literal or known codec"
        )

    # names and attributes
    def _name(self, name: str) -> Decoded:
        if name == "__file__":
            return Decoded(self.path)
        if self.scope is self.exec_scope and name in self.params:
            return self.params[name]
        found = self.scope.lookup(name, self.line)
        if found is None:
            if name in _BUILTIN_NAMES:
                return Decoded(Func(name))
            raise Undecodable(f"'{name}' is not bound to a literal in this file")
        binding, scope = found
        if isinstance(binding, ast.expr):
            saved = (self.scope, self.line)
            self.scope, self.line = scope, _binding_pos(scope, name, binding)
            try:
                return self.eval(binding)
            finally:
                self.scope, self.line = saved
        return Decoded(binding)

    def _attribute(self, node: ast.Attribute) -> Decoded:
        base = self.eval(node.value)
        obj = base.value
        if isinstance(obj, Module):
            qual = f"{obj.name}.{node.attr}"
            if qual in _CONSTANTS:
                return Decoded(_CONSTANTS[qual])
            if qual in _KNOWN_MODULES:
                return Decoded(Module(qual))
            return Decoded(Func(qual))
        if isinstance(obj, Func):  # bytes.fromhex, sys.stdin.read...: named so a problem can say which
            return Decoded(Func(f"{obj.name}.{node.attr}"))
        if isinstance(obj, PathValue) and node.attr == "parent":
            return Decoded(PathValue(_dirname(obj.path)), base.codecs)
        if isinstance(obj, PathValue) and node.attr == "name":
            return Decoded(posixpath.basename(obj.path), base.codecs)
        if isinstance(obj, str | bytes | PathValue | FileHandle):
            return Decoded(BoundMethod(obj, node.attr), base.codecs)
        raise Undecodable(f"attribute .{node.attr} of a {type(obj).__name__} value")

    def _binop(self, node: ast.BinOp) -> Decoded:
        left, right = self.eval(node.left), self.eval(node.right)
        a, b = left.value, right.value
        if isinstance(node.op, ast.Add) and type(a) is type(b) and isinstance(a, str | bytes | list):
            self._check_size(len(a) + len(b))
            return Decoded(a + b, _merge([left, right]))
        if type(a) is int and type(b) is int and type(node.op) in _INT_OPS:
            if abs(a) > 1 << 40 or abs(b) > 1 << 40:
                raise Undecodable("integer arithmetic on huge numbers")
            return Decoded(_INT_OPS[type(node.op)](a, b))
        if isinstance(node.op, ast.Div) and isinstance(a, PathValue) and isinstance(b, str):
            return Decoded(PathValue(posixpath.normpath(posixpath.join(a.path, b))))
        raise Undecodable(f"operator {type(node.op).__name__} on {type(a).__name__} and {type(b).__name__}")

    def _check_size(self, n: int) -> None:
        if n > MAX_DECODED_BYTES:
            raise _cap_error(MAX_DECODED_BYTES)

    # calls
    def _call(self, node: ast.Call) -> Decoded:
        fn_decoded = self.eval(node.func)
        fn = fn_decoded.value
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            raise Undecodable("*args/**kwargs in a shim call")
        if isinstance(fn, Func) and fn.name == "compile":
            if not node.args:
                raise Undecodable("compile() without a source argument")
            return self.eval(node.args[0])  # filename and mode do not change the source
        args = [self.eval(a) for a in node.args]
        kwargs = {k.arg: self.eval(k.value).value for k in node.keywords if k.arg}
        values = [a.value for a in args]
        codecs_in = _merge([fn_decoded, *args])  # a method call keeps the codecs of its object
        if isinstance(fn, BoundMethod):
            return self._method(fn, values, kwargs, codecs_in)
        if not isinstance(fn, Func):
            raise Undecodable(f"call of a {type(fn).__name__} value")
        name = fn.name
        if name in _OPAQUE:
            raise Undecodable(f"{name}() loads {_OPAQUE[name]}, which cannot be analysed as source")
        if name in _B64_FUNCS:
            label, func = _B64_FUNCS[name]
            data: Any = _as_bytes(_first(values, name), name, ascii_only=True)
            if name == "bytes.fromhex":
                data = data.decode("ascii")  # the one decoder that wants str
            try:
                if name == "base64.b85decode" and not values[1:] and not kwargs:
                    return Decoded(self._b85_chunked(data), (label, *codecs_in))
                return Decoded(func(data, *values[1:], **kwargs), (label, *codecs_in))
            except (ValueError, binascii.Error, TypeError) as exc:
                raise Undecodable(f"{name}: corrupt input: {exc}") from exc
        if name in _DECOMPRESSORS:
            codec = name.split(".")[0]
            data = _as_bytes(_first(values, name), name)
            if codec == "lzma" and len(values) > 1:
                kwargs.setdefault("format", values[1])
            if codec == "zlib" and len(values) > 1:
                kwargs.setdefault("wbits", values[1])
            limit = min(MAX_DECODED_BYTES, self.budget.left)
            out = decompress_bounded(codec, data, kwargs, limit, self.budget)
            label = codec + ("-raw" if codec == "lzma" and kwargs.get("format") == lzma.FORMAT_RAW else "")
            return Decoded(out, (label, *codecs_in))
        if name == "codecs.decode":
            return self._codecs_decode(values, kwargs, codecs_in)
        if name in ("bytes", "bytearray", "str"):
            return self._convert(name, values, kwargs, codecs_in)
        if name in ("__import__", "importlib.import_module"):
            mod = _first(values, name)
            if isinstance(mod, str) and mod in _KNOWN_MODULES:
                return Decoded(Module(mod))
            raise Undecodable(f"{name}({mod!r}) of a module the unpacker does not model")
        if name in ("open", "io.open"):
            return Decoded(FileHandle(self._sibling_path(_first(values, name))))
        if name in ("pathlib.Path", "pathlib.PurePath", "pathlib.PosixPath", "Path"):
            return Decoded(PathValue(self._normalise(_first(values, name))))
        if name in ("os.path.join", "posixpath.join"):
            parts = [_path_str(v) for v in values]
            return Decoded(posixpath.normpath(posixpath.join(*parts)))
        if name in ("os.path.dirname",):
            return Decoded(_dirname(_path_str(_first(values, name))))
        if name in ("os.path.abspath", "os.path.realpath", "os.path.normpath", "os.fspath"):
            return Decoded(_path_str(_first(values, name)))
        raise Undecodable(f"call of {name}(), which the unpacker does not model (unknown codec?)")

    def _b85_chunked(self, data: bytes) -> bytes:
        """base64.b85decode is pure Python (~1 s per 2.5 MB): decode 5-character groups in slices so the time
        budget is checked between them."""
        step = 5 * 100_000
        if len(data) <= step:
            return base64.b85decode(data)
        out = bytearray()
        for start in range(0, len(data), step):
            self.budget.tick()
            out += base64.b85decode(data[start : start + step])
        return bytes(out)

    def _method(
        self, fn: BoundMethod, values: list[Any], kwargs: dict[str, Any], codecs_in: tuple[str, ...]
    ) -> Decoded:
        obj, name = fn.obj, fn.name
        try:
            if isinstance(obj, FileHandle | PathValue) and name in ("read", "read_text", "read_bytes"):
                return self._read_sibling(obj.path, as_bytes=name == "read_bytes")
            if isinstance(obj, PathValue) and name in ("resolve", "absolute"):
                return Decoded(obj)
            if isinstance(obj, PathValue) and name == "with_name":
                return Decoded(PathValue(posixpath.join(_dirname(obj.path), values[0])))
            if isinstance(obj, bytes | str):
                if name == "decode" and isinstance(obj, bytes):
                    enc = (values[0] if values else kwargs.get("encoding", "utf-8")) or "utf-8"
                    if codecs.lookup(enc).name not in ("utf-8", "ascii", "latin-1", "iso8859-1"):
                        raise Undecodable(f".decode({enc!r}) is not a text encoding the unpacker models")
                    return Decoded(obj.decode(enc), codecs_in)
                if name == "encode" and isinstance(obj, str):
                    enc = (values[0] if values else kwargs.get("encoding", "utf-8")) or "utf-8"
                    return Decoded(obj.encode(enc), codecs_in)
                if name in ("strip", "lstrip", "rstrip"):
                    return Decoded(getattr(obj, name)(*values), codecs_in)
                if name == "replace" and len(values) >= 2:
                    old, new = values[0], values[1]
                    count = obj.count(old) if old else len(obj) + 1
                    self._check_size(len(obj) + count * max(0, len(new) - len(old)))
                    return Decoded(obj.replace(*values), codecs_in)
                if name == "join" and len(values) == 1 and isinstance(values[0], list | str | bytes):
                    parts = values[0] if isinstance(values[0], list) else _pieces(values[0])
                    self._check_size(sum(len(p) for p in parts) + len(obj) * len(parts))
                    return Decoded(obj.join(parts), codecs_in)
        except (TypeError, ValueError, LookupError, UnicodeError) as exc:
            raise Undecodable(f".{name}() failed: {exc}") from exc
        raise Undecodable(f".{name}() on a {type(obj).__name__} value is not modelled")

    def _codecs_decode(
        self, values: list[Any], kwargs: dict[str, Any], codecs_in: tuple[str, ...]
    ) -> Decoded:
        data = _first(values, "codecs.decode")
        enc = values[1] if len(values) > 1 else kwargs.get("encoding", "utf-8")
        norm = str(enc).lower().replace("-", "_")
        if norm in ("rot13", "rot_13") and isinstance(data, str):
            return Decoded(codecs.decode(data, "rot13"), ("rot13", *codecs_in))
        if norm in ("base64", "base_64", "hex", "hex_codec", "base64_codec"):
            label = "hex" if "hex" in norm else "base64"
            try:
                return Decoded(codecs.decode(_as_bytes(data, "codecs.decode"), norm), (label, *codecs_in))
            except (ValueError, binascii.Error) as exc:
                raise Undecodable(f"codecs.decode(..., {enc!r}): corrupt input: {exc}") from exc
        if norm in ("zlib", "zlib_codec", "bz2", "bz2_codec"):
            codec = norm.split("_")[0]
            limit = min(MAX_DECODED_BYTES, self.budget.left)
            out = decompress_bounded(codec, _as_bytes(data, "codecs.decode"), {}, limit, self.budget)
            return Decoded(out, (codec, *codecs_in))
        if norm in ("utf_8", "utf8", "ascii", "latin_1") and isinstance(data, bytes):
            return Decoded(data.decode(norm), codecs_in)
        raise Undecodable(f"codecs.decode(..., {enc!r}) is not a codec the unpacker models")

    def _convert(
        self, name: str, values: list[Any], kwargs: dict[str, Any], codecs_in: tuple[str, ...]
    ) -> Decoded:
        data = _first(values, name)
        enc = values[1] if len(values) > 1 else kwargs.get("encoding", "utf-8")
        if name in ("bytes", "bytearray") and isinstance(data, str):
            return Decoded(data.encode(enc), codecs_in)
        if name in ("bytes", "bytearray") and isinstance(data, bytes):
            return Decoded(bytes(data), codecs_in)
        if name == "str" and isinstance(data, bytes) and len(values) + len(kwargs) > 1:
            return Decoded(data.decode(enc), codecs_in)
        if name == "str" and isinstance(data, str | PathValue):
            return Decoded(_path_str(data) if isinstance(data, PathValue) else data, codecs_in)
        raise Undecodable(f"{name}() of a {type(data).__name__} value")

    # files of the submission
    def _normalise(self, p: Any) -> str:
        p = _path_str(p)
        return posixpath.normpath(p) if p else "."

    def _sibling_path(self, p: Any) -> str:
        p = _path_str(p)
        base = _dirname(self.path)
        # a relative path is read from the working directory, which is the record folder when it runs
        joined = p if p.startswith("/") or not base or p.startswith(base + "/") else posixpath.join(base, p)
        return posixpath.normpath(joined)

    def _read_sibling(self, path: str, as_bytes: bool) -> Decoded:
        path = posixpath.normpath(path)
        if path.startswith(("/", "../")) or path == "..":
            raise Undecodable(f"reads file {path!r} from outside the submission")
        if self.read_file is None:
            raise Undecodable(f"reads file {path!r} at run time")
        text = self.read_file(path)
        if text is None:
            raise Undecodable(f"reads file {path!r}, which is not a readable text file of the submission")
        return Decoded(text.encode("utf-8") if as_bytes else text, (f"file:{path}",))


def _binding_pos(scope: _Scope, name: str, binding: ast.expr) -> Pos:
    for pos, value in scope.simple.get(name, []):
        if value is binding:
            return pos
    return (binding.lineno, binding.col_offset)


def _pieces(value: str | bytes) -> list[Any]:
    return list(value) if isinstance(value, str) else [bytes([b]) for b in value]


def _merge(items: list[Decoded]) -> tuple[str, ...]:
    out: tuple[str, ...] = ()
    for item in items:
        if len(item.codecs) > len(out):
            out = item.codecs
    return out


def _first(values: list[Any], name: str) -> Any:
    if not values:
        raise Undecodable(f"{name}() without arguments")
    return values[0]


def _as_bytes(value: Any, name: str, ascii_only: bool = False) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        try:
            return value.encode("ascii" if ascii_only else "latin-1")
        except UnicodeEncodeError as exc:
            raise Undecodable(f"{name}: non-ASCII text input") from exc
    raise Undecodable(f"{name}() of a {type(value).__name__} value")


def _path_str(value: Any) -> str:
    if isinstance(value, PathValue):
        return value.path
    if isinstance(value, str):
        return value
    raise Undecodable(f"a path that is a {type(value).__name__} value")


def _dirname(p: str) -> str:
    d = posixpath.dirname(p)
    return d


def _short(node: ast.AST) -> str:
    try:
        text = ast.unparse(node)
    except Exception:  # ast.unparse on odd trees
        return type(node).__name__
    return text if len(text) <= 60 else text[:57] + "..."


# --- finding exec/eval calls ------------------------------------------------------------------------------------
@dataclass
class _ExecSite:
    call: ast.Call
    scope: _Scope
    kind: str  # "exec" or "eval"


@dataclass
class _Sites:
    execs: list[_ExecSite] = field(default_factory=list)
    calls: dict[str, list[tuple[ast.Call, _Scope]]] = field(default_factory=dict)  # f(...) by name


def _exec_sites(tree: ast.Module) -> _Sites:
    sites = _Sites()
    _collect_sites(tree.body, _Scope(tree.body, None), sites)
    sites.execs.sort(key=lambda s: (s.call.lineno, s.call.col_offset))
    return sites


def _collect_sites(nodes: list[ast.stmt], scope: _Scope, sites: _Sites) -> None:
    stack: list[ast.AST] = list(nodes)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args
            stack.extend([*node.decorator_list, *args.defaults, *(d for d in args.kw_defaults if d)])
            _collect_sites(node.body, _Scope(node.body, scope, func=node), sites)  # type: ignore[arg-type]
            continue
        if isinstance(node, ast.ClassDef):
            stack.extend([*node.decorator_list, *node.bases])
            _collect_sites(node.body, _Scope(node.body, scope), sites)
            continue
        if isinstance(node, ast.Call):
            kind = _exec_kind(node, scope)
            if kind:
                sites.execs.append(_ExecSite(node, scope, kind))
            elif isinstance(node.func, ast.Name):
                sites.calls.setdefault(node.func.id, []).append((node, scope))
        stack.extend(child_nodes(node))


def _exec_kind(call: ast.Call, scope: _Scope) -> str | None:
    func = call.func
    if isinstance(func, ast.Name) and func.id in ("exec", "eval"):
        try:
            if scope.lookup(func.id, END) is not None:
                return None  # the module defines its own exec/eval
        except Undecodable:
            return None
        return func.id
    if (
        isinstance(func, ast.Attribute)
        and func.attr in ("exec", "eval")
        and isinstance(func.value, ast.Name)
        and func.value.id in ("builtins", "__builtins__")
    ):
        return func.attr
    return None


# --- driver -----------------------------------------------------------------------------------------------------
_EXEC_HINT = re.compile(r"(?<![\w.])(?:exec|eval)\s*\(|builtins(?:__)?\s*\.\s*(?:exec|eval)\b")


# A string literal inside a replacement field of a same-quoted f-string: legal only from Python 3.12 (PEP 701).
_PEP701_HINT = re.compile(r"""f"[^"\n]*\{[^}"\n]*"|f'[^'\n]*\{[^}'\n]*'""", re.I)


def pep701_compat(text: str) -> str:
    """`text`, made parsable by Python 3.11 when it only fails on Python 3.12 f-strings that reuse their own
    quote inside a replacement field (f"{"a" if x else "b"}", as python-minifier on 3.12 writes them). The inner
    literals switch to the other quote, so every line and column stays where it was; unchanged otherwise."""
    if sys.version_info >= (3, 12) or not _PEP701_HINT.search(text):
        return text
    try:
        ast.parse(text)
        return text
    except SyntaxError as exc:
        if "f-string" not in str(exc.msg):
            return text
    except (ValueError, RecursionError, MemoryError):
        return text
    for rewrite in (_requote_scan, _requote_libcst):  # a fast scanner first; libcst (slow, exact) if needed
        try:
            fixed = rewrite(text)
            ast.parse(fixed)
            return fixed
        except Exception:  # the rewrite could not handle it: try the next, else keep the original
            continue
    return text


def _requote_libcst(text: str) -> str:
    import libcst

    return libcst.parse_module(text).visit(_FlipNestedQuotes()).code


def _requote_scan(text: str) -> str:
    """Character scanner: inside each single-quoted f-string's replacement fields, re-quote string literals that
    use the f-string's own quote. Same length, same lines."""
    out = list(text)
    n = len(text)

    def token_at(i: int) -> tuple[int, tuple[int, str, bool] | None]:
        """(index after the token at i, (quote start, quote, is_f) when it is a string literal). Identifiers are
        skipped whole, so the `f` of `if'x'in y` is not taken for an f-string prefix."""
        c = text[i]
        j = i
        if c.isalnum() or c == "_":
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            prefix = text[i:j].lower()
            if not (
                j < n
                and text[j] in "\"'"
                and len(prefix) <= 2
                and set(prefix) <= set("rbuf")
                and len(set(prefix)) == len(prefix)
                and not ("b" in prefix and "f" in prefix)
            ):
                return j, None
        elif c not in "\"'":
            return i + 1, None
        quote = text[j] * 3 if text.startswith(text[j] * 3, j) else text[j]
        return j, (j, quote, "f" in text[i:j].lower())

    def skip_plain(j: int, quote: str) -> int:
        """Index just past the literal whose opening quote starts at j."""
        k = j + len(quote)
        while k < n:
            if text[k] == "\\":
                k += 2
                continue
            if text.startswith(quote, k):
                return k + len(quote)
            if len(quote) == 1 and text[k] == "\n":
                raise ValueError("unterminated string")
            k += 1
        raise ValueError("unterminated string")

    def scan_fstring(j: int, quote: str) -> int:
        k = j + len(quote)
        while k < n:
            c = text[k]
            if c == "\\":
                k += 2
            elif text.startswith(quote, k):
                return k + len(quote)
            elif c == "{" and text.startswith("{{", k):
                k += 2
            elif c == "{":
                k = scan_field(k + 1, quote)
            else:
                k += 1
        raise ValueError("unterminated f-string")

    def scan_field(k: int, outer: str) -> int:
        """From just inside `{` to just past its `}`; re-quotes literals that collide with `outer`."""
        depth = 0
        while k < n:
            c = text[k]
            after, found = token_at(k)
            if found is not None:
                j, quote, is_f = found
                end = scan_fstring(j, quote) if is_f else skip_plain(j, quote)
                if len(outer) == 1 and quote == outer:
                    other = "'" if outer == '"' else '"'
                    body = text[j + 1 : end - 1]
                    if other in body or "\\" in body:
                        raise ValueError("cannot re-quote")
                    out[j] = out[end - 1] = other
                k = end
                continue
            if after > k + 1:  # an identifier or number
                k = after
                continue
            if c in "([{":
                depth += 1
            elif c in ")]":
                depth -= 1
            elif c == "}":
                if depth == 0:
                    return k + 1
                depth -= 1
            elif c == ":" and depth == 0 and not text.startswith(":=", k):
                return scan_spec(k + 1, outer)
            k += 1
        raise ValueError("unterminated replacement field")

    def scan_spec(k: int, outer: str) -> int:
        while k < n:
            if text[k] == "{":
                k = scan_field(k + 1, outer)
            elif text[k] == "}":
                return k + 1
            else:
                k += 1
        raise ValueError("unterminated format spec")

    i = 0
    while i < n:
        c = text[i]
        if c == "#":
            nl = text.find("\n", i)
            i = n if nl < 0 else nl
            continue
        after, found = token_at(i)
        if found is None:
            i = after
            continue
        j, quote, is_f = found
        i = scan_fstring(j, quote) if is_f else skip_plain(j, quote)
    return "".join(out)


def _flip_quotes(literal: str, outer: str) -> str | None:
    """The literal with `outer` quotes swapped for the other kind, or None if its body needs them."""
    prefix_len = len(literal) - len(literal.lstrip("rRbBuUfF"))
    prefix, rest = literal[:prefix_len], literal[prefix_len:]
    if rest[:3] in ('"""', "'''") or not rest.startswith(outer):
        return None
    other = "'" if outer == '"' else '"'
    body = rest[1:-1]
    if other in body or "\\" in body:
        return None
    return f"{prefix}{other}{body}{other}"


class _FlipNestedQuotes:
    """libcst transformer (built lazily so importing this module does not import libcst)."""

    def __new__(cls):  # type: ignore[misc]
        import libcst as cst

        class Flip(cst.CSTTransformer):
            def __init__(self) -> None:
                self.quotes: list[str] = []

            def visit_FormattedString(self, node: cst.FormattedString) -> None:
                self.quotes.append(node.end)

            def leave_FormattedString(self, original_node, updated_node):  # noqa: ANN001, ANN202
                self.quotes.pop()
                if self.quotes and self.quotes[-1] == updated_node.end and len(updated_node.end) == 1:
                    other = "'" if updated_node.end == '"' else '"'
                    raw = cst.Module(body=[]).code_for_node(updated_node)
                    if other not in raw[len(updated_node.start) : -1]:
                        return updated_node.with_changes(start=updated_node.start[:-1] + other, end=other)
                return updated_node

            def leave_SimpleString(self, original_node, updated_node):  # noqa: ANN001, ANN202
                if self.quotes and len(self.quotes[-1]) == 1:
                    flipped = _flip_quotes(updated_node.value, self.quotes[-1])
                    if flipped is not None:
                        return updated_node.with_changes(value=flipped)
                return updated_node

        return Flip()


def _parse(text: str) -> ast.Module | None:
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None  # facts.parse_unit reports parse errors of every unit


class _Unpacker:
    def __init__(self, path: str, read_file: ReadFile | None) -> None:
        self.path = path
        self.read_file = read_file
        self.outcome = UnpackOutcome()
        self.budget = _Budget(TIME_BUDGET_S, MAX_DECODED_BYTES)
        self.stopped = False  # a file-wide limit was hit: report once, decode no further

    def layer(self, name: str, text: str, depth: int, root_line: int | None, seen: frozenset[str]) -> None:
        from auditor.facts import MAX_PARSE_BYTES

        if len(text) > MAX_PARSE_BYTES or not _EXEC_HINT.search(text):
            return  # no exec/eval call anywhere: nothing to decode, no need to parse here
        tree = _parse(text)
        if tree is None:
            return  # facts.parse_unit reports the parse error of this unit
        for (
            unit
        ) in self.outcome.units:  # hand the tree on: facts.parse_unit need not parse the same text again
            if unit.name == name and unit.tree is None and unit.text == text:
                unit.tree = tree
        sites = _exec_sites(tree)
        for site in sites.execs:
            if self.stopped:
                return
            if site.call.args:
                self.site(name, site, sites, depth, root_line, seen)

    def site(
        self,
        name: str,
        site: _ExecSite,
        sites: _Sites,
        depth: int,
        root_line: int | None,
        seen: frozenset[str],
    ) -> None:
        line = site.call.lineno
        pos = (line, site.call.col_offset)
        try:
            try:
                decoded = _Evaluator(self.path, site.scope, pos, self.read_file, self.budget).eval(
                    site.call.args[0]
                )
                self.add_layer(name, decoded, line, depth, root_line, seen)
            except ParameterNeeded as need:
                if need.scope is not site.scope or site.scope.func is None:
                    raise
                self.through_calls(name, site, sites, need, depth, root_line, seen)
        except Undecodable as exc:
            self.problem(name, line, root_line, site.kind, str(exc))
        except RecursionError:
            self.problem(name, line, root_line, site.kind, "expression nests too deeply")

    def through_calls(
        self,
        name: str,
        site: _ExecSite,
        sites: _Sites,
        need: ParameterNeeded,
        depth: int,
        root_line: int | None,
        seen: frozenset[str],
    ) -> None:
        """`def install(src): exec(src)` called as `install("...")`: decode what each call site passes."""
        func = site.scope.func
        assert func is not None
        index = site.scope.params.get(need.name)
        calls = sorted(sites.calls.get(func.name, []), key=lambda c: (c[0].lineno, c[0].col_offset))
        if not calls:
            raise Undecodable(f"'{need.name}' is a parameter of {func.name}(), which is never called by name")
        for call, scope in calls:
            try:
                arg = _argument(call, need.name, index)
                if arg is None:
                    raise Undecodable(f"the call of {func.name}() passes no '{need.name}'")
                call_pos = (call.lineno, call.col_offset)
                value = _Evaluator(self.path, scope, call_pos, self.read_file, self.budget).eval(arg)
                evaluator = _Evaluator(
                    self.path,
                    site.scope,
                    (site.call.lineno, site.call.col_offset),
                    self.read_file,
                    self.budget,
                    params={need.name: value},
                )
                decoded = evaluator.eval(site.call.args[0])
                self.add_layer(name, decoded, call.lineno, depth, root_line, seen)
            except ParameterNeeded as exc:
                self.problem(
                    name,
                    call.lineno,
                    root_line,
                    site.kind,
                    f"{func.name}() passes on parameter '{exc.name}', which is not followed further",
                )
            except Undecodable as exc:
                self.problem(name, call.lineno, root_line, site.kind, f"via {func.name}(): {exc}")
            if self.stopped:
                return

    def add_layer(
        self,
        parent: str,
        decoded: Decoded,
        line: int,
        depth: int,
        root_line: int | None,
        seen: frozenset[str],
    ) -> None:
        if len(self.outcome.layers) >= MAX_LAYERS:
            self.stopped = True
            raise Undecodable(f"more than {MAX_LAYERS} decoded layers in one file")
        if depth + 1 > MAX_DEPTH:
            raise Undecodable(f"layers nest more than {MAX_DEPTH} deep")
        source = _as_source(decoded.value)
        data = source.encode("utf-8")
        if len(data) > MAX_DECODED_BYTES:
            raise _cap_error(MAX_DECODED_BYTES)
        self.budget.left -= len(data)
        if self.budget.left < 0:
            self.stopped = True
            raise Undecodable(f"decoded layers of this file total more than {MAX_DECODED_BYTES:,} bytes")
        too_big = code_limit_problem(f"{self.path}#L{len(self.outcome.layers) + 1}", source)
        if too_big:
            raise Undecodable(f"decoded, but {too_big}")
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:
            raise Undecodable("the decoded code is one of its own enclosing layers (it executes itself)")
        layer_name = f"{self.path}#L{len(self.outcome.layers) + 1}"
        codec_chain = tuple(reversed(decoded.codecs)) if decoded.codecs else ("literal",)
        layer = UnpackedLayer(
            path=self.path,
            name=layer_name,
            codecs=codec_chain,
            line=line,
            decoded_bytes=len(data),
            sha256=digest,
        )
        self.outcome.layers.append(layer)
        self.outcome.units.append(
            CodeUnit(path=self.path, name=layer_name, text=pep701_compat(source), layer=layer)
        )
        shipped_line = root_line if root_line is not None else line
        self.layer(layer_name, source, depth + 1, shipped_line, seen | {digest})

    def problem(self, name: str, line: int, root_line: int | None, kind: str, message: str) -> None:
        where = "" if name == self.path else f"{name} line {line}: "
        shipped_line = root_line if root_line is not None else line
        self.outcome.problems.append(
            (shipped_line, f"{where}{kind}() of code that cannot be decoded statically: {message}")
        )


def _argument(call: ast.Call, name: str, index: int | None) -> ast.expr | None:
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    if index is not None and index < len(call.args):
        if any(isinstance(a, ast.Starred) for a in call.args[: index + 1]):
            raise Undecodable("*args at the call site")
        return call.args[index]
    return None


def unpack_source(path: str, text: str, read_file: ReadFile | None = None) -> UnpackOutcome:
    """Decode every exec/eval shim in `text` (a shipped file at `path`), recursively, without running anything.

    `read_file(relpath)` returns the text of another file of the submission (for `exec(open(...).read())`).
    """
    unpacker = _Unpacker(path, read_file)
    unpacker.outcome.units.append(CodeUnit(path=path, name=path, text=pep701_compat(text)))
    digest = hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()
    unpacker.layer(path, text, 0, None, frozenset({digest}))
    return unpacker.outcome


def _as_source(value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, bytes | bytearray):
        try:
            text = bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Undecodable(
                f"decoded bytes are not UTF-8 text (byte {exc.start}); not Python source"
            ) from exc
    else:
        raise Undecodable(f"the argument is a {type(value).__name__}, not source text")
    return text.removeprefix("\ufeff")
