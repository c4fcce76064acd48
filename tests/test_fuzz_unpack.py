"""Fuzzing the static unpacker: generated exec shims (every codec and text encoding, four import/wrapping styles,
up to three nested layers) with their compressed streams and text blobs truncated, bit-flipped, padded with junk or
given huge declared sizes, mutations of the real packed fixtures, and arbitrary text.

Properties: nothing raises; CPU time and peak allocation stay under explicit bounds; every exec/eval call of the
shipped file is accounted for (a decoded layer or a problem naming its line — never silence); an unmutated shim
round-trips to its source; through the engine, a shim that cannot be decoded makes PG001 WARN with the reason.
"""

from __future__ import annotations

import ast
import base64
import bz2
import gzip
import lzma
import struct
import zlib
from pathlib import Path

from _fuzz import MB, bounded, cli, fuzz_settings, run_limited
from hypothesis import event, given
from hypothesis import strategies as st

from auditor.engine import audit, select_rules
from auditor.findings import Verdict
from auditor.testing import submission_from_files
from auditor.unpack import unpack_source

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PACKED = sorted(
    (p / "train_gpt.py").read_text()
    for p in FIXTURES.iterdir()
    if p.name.startswith(("packed_", "payload_p"))
)
SNIPPETS = [
    "import torch\n\n\ndef main():\n    print('ok')\n\n\nif __name__ == '__main__':\n    main()\n",
    "x = 1\n" * 50,
    "def f(a, b=2):\n    return [a * i for i in range(b)]\n",
    "",
]
CODECS = ("lzma", "lzma_raw", "lzma_alone", "zlib", "bz2", "gzip")
TEXTS = ("b85", "b64", "b32", "hex", "a85")
# "none" weighted so that about half the shims decode at least one layer and a fair share decode completely
MUTATIONS = ("none",) * 6 + ("truncate", "flip", "junk_tail", "huge_size", "empty")
BLOB_MUTATIONS = ("none",) * 8 + ("truncate", "bad_char", "non_ascii")
STYLES = ("alias", "from", "dunder", "variable", "compile_decode")
RAW_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 6}]


def compress(codec: str, data: bytes) -> bytes:
    if codec == "lzma":
        return lzma.compress(data)
    if codec == "lzma_raw":
        return lzma.compress(data, format=lzma.FORMAT_RAW, filters=RAW_FILTERS)
    if codec == "lzma_alone":
        return lzma.compress(data, format=lzma.FORMAT_ALONE)
    if codec == "zlib":
        return zlib.compress(data)
    if codec == "bz2":
        return bz2.compress(data)
    return gzip.compress(data, mtime=0)


def mutate(codec: str, data: bytes, how: str, at: int) -> bytes:
    if how == "truncate":
        return data[: at % max(1, len(data))]
    if how == "flip" and data:
        i = at % len(data)
        return data[:i] + bytes([data[i] ^ 0x5A]) + data[i + 1 :]
    if how == "junk_tail":
        return data + bytes(range(7, 7 + at % 200))
    if how == "huge_size":  # a header or trailer that declares an enormous output
        if codec == "lzma_alone" and len(data) >= 13:
            return data[:5] + struct.pack("<Q", 2**62) + data[13:]
        if codec == "gzip" and len(data) >= 8:
            return data[:-4] + struct.pack("<I", 0xFFFFFFFF)
        if codec == "lzma" and len(data) >= 12:  # xz: the stream header's flags/CRC, then a bogus block size
            return data[:12] + b"\xff" + data[13:]
        return data
    if how == "empty":
        return b""
    return data


def encode(text: str, data: bytes) -> tuple[str, str]:
    """(blob, decoder expression with {m} for the base64 module alias)."""
    if text == "b85":
        return base64.b85encode(data).decode(), "{m}.b85decode"
    if text == "b64":
        return base64.b64encode(data).decode(), "{m}.b64decode"
    if text == "b32":
        return base64.b32encode(data).decode(), "{m}.b32decode"
    if text == "a85":
        return base64.a85encode(data).decode(), "{m}.a85decode"
    return data.hex(), "bytes.fromhex"


def mutate_blob(blob: str, how: str, at: int) -> str:
    if how == "truncate":
        return blob[: at % max(1, len(blob))]
    if how == "bad_char" and blob:
        i = at % len(blob)
        return blob[:i] + "~" + blob[i + 1 :]
    if how == "non_ascii":
        return blob + "\u00e9"
    return blob


def decompress_call(codec: str, mod: str, arg: str) -> str:
    if codec == "lzma_raw":
        return f"{mod}.decompress({arg}, format={mod}.FORMAT_RAW, filters=[{{'id': {mod}.FILTER_LZMA2}}])"
    return f"{mod}.decompress({arg})"


def render(style: str, codec: str, text: str, blob: str) -> str:
    cmod = {"lzma_raw": "lzma", "lzma_alone": "lzma"}.get(codec, codec)
    _, dec = encode(text, b"")
    if style == "alias":
        d = dec.format(m="B")
        return f"import {cmod} as Z, base64 as B\nexec({decompress_call(codec, 'Z', f'{d}({blob!r})')})\n"
    if style == "from":
        d = dec.format(m="base64")
        return (
            f"import base64\nfrom {cmod} import decompress as D\n"
            + (f"import {cmod}\n" if codec == "lzma_raw" else "")
            + (
                f"exec({decompress_call(codec, cmod, f'{d}({blob!r})')})\n"
                if codec == "lzma_raw"
                else f"exec(D({d}({blob!r})))\n"
            )
        )
    if style == "dunder":
        d = dec.format(m="__import__('base64')")
        return f"exec({decompress_call(codec, f'__import__({cmod!r})', f'{d}({blob!r})')})\n"
    if style == "variable":
        d = dec.format(m="base64")
        return f"import base64, {cmod}\nBLOB = {blob!r}\nexec({decompress_call(codec, cmod, f'{d}(BLOB)')})\n"
    d = dec.format(m="base64")
    inner = decompress_call(codec, cmod, f"{d}({blob!r})")
    return f"import base64, {cmod}\nexec(compile({inner}.decode(), '<x>', 'exec'))\n"


@st.composite
def shims(draw: st.DrawFn) -> tuple[str, str, bool]:
    """(shim text, innermost source, whether every layer was left intact)."""
    source = draw(st.one_of(st.sampled_from(SNIPPETS), st.text(max_size=200)))
    text = source
    intact = True
    for _ in range(draw(st.integers(1, 3))):
        codec, enc = draw(st.sampled_from(CODECS)), draw(st.sampled_from(TEXTS))
        how, blob_how = draw(st.sampled_from(MUTATIONS)), draw(st.sampled_from(BLOB_MUTATIONS))
        at = draw(st.integers(0, 10_000))
        data = mutate(codec, compress(codec, text.encode("utf-8", "surrogatepass")), how, at)
        blob, _ = encode(enc, data)
        blob = mutate_blob(blob, blob_how, at)
        intact = intact and how == "none" and blob_how == "none"
        text = render(draw(st.sampled_from(STYLES)), codec, enc, blob)
    return text, source, intact


def exec_lines(text: str) -> set[int]:
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return set()
    return {
        n.lineno
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Name)
        and n.func.id in ("exec", "eval")
        and n.args
    }


def unpack_bounded(text: str):  # noqa: ANN201
    return bounded(
        lambda: unpack_source("train_gpt.py", text), cpu_s=15.0, peak_bytes=256 * MB, what="unpack"
    )


@fuzz_settings(300)
@given(shims())
def test_generated_and_corrupted_shims(case: tuple[str, str, bool]) -> None:
    text, source, intact = case
    outcome = unpack_bounded(text)
    event(f"layers={len(outcome.layers)} problems={bool(outcome.problems)}")
    accounted = {la.line for la in outcome.layers} | {line for line, _ in outcome.problems}
    assert exec_lines(text) <= accounted, (outcome.layers, outcome.problems)
    assert all(isinstance(m, str) and m for _, m in outcome.problems)
    if intact and source in SNIPPETS:
        assert outcome.units[-1].text == source.removeprefix("\ufeff")
        assert not outcome.problems


@fuzz_settings(200)
@given(st.sampled_from(PACKED), st.lists(st.tuples(st.integers(0, 10**6), st.text(max_size=8)), max_size=6))
def test_mutated_real_shims(original: str, edits: list[tuple[int, str]]) -> None:
    text = original
    for at, repl in edits:  # replace a short span at a random place: breaks blobs, quotes, calls, names
        i = at % max(1, len(text))
        text = text[:i] + repl + text[i + len(repl) + 1 :]
    outcome = unpack_bounded(text)
    assert exec_lines(text) <= {la.line for la in outcome.layers} | {line for line, _ in outcome.problems}


@fuzz_settings(200)
@given(st.one_of(st.text(max_size=2000), st.binary(max_size=2000).map(lambda b: b.decode("latin-1"))))
def test_arbitrary_text(text: str) -> None:
    unpack_bounded(text)


@fuzz_settings(40)
@given(shims())
def test_undecodable_shims_warn_through_the_engine(case: tuple[str, str, bool]) -> None:
    text, _, _ = case
    report = audit(submission_from_files({"train_gpt.py": text}), select_rules(["PG001"]), time_budget_s=None)
    assert report.errors == []
    outcome = unpack_source("train_gpt.py", text)
    parsed = all(u.text == "" or _parses(u.text) for u in outcome.units)
    (pg001,) = [rv for rv in report.per_rule() if rv.rule_id == "PG001"]
    if outcome.problems or not parsed:
        assert pg001.verdict is Verdict.WARN
        assert all(f.message for f in report.findings if f.rule_id == "PG001")


def _parses(text: str) -> bool:
    try:
        ast.parse(text)
        return True
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False


def test_nested_bomb_under_rlimits(tmp_path: Path) -> None:
    """A 128 MB zero-filled stream (6x the per-layer cap) inside three layers of shims, audited by the CLI in a
    child limited to 2 GB of address space and 120 s of CPU: it finishes, and PG001 WARNs that the layer is a decompression bomb."""
    bomb = base64.b85encode(lzma.compress(b"\0" * (128 * MB), preset=1)).decode()
    text = f"import lzma, base64\nexec(lzma.decompress(base64.b85decode({bomb!r})))\n"
    for _ in range(2):
        text = render("alias", "zlib", "b64", base64.b64encode(zlib.compress(text.encode())).decode())
    (tmp_path / "train_gpt.py").write_text(text)
    out = tmp_path / "report.json"
    proc = run_limited(cli(str(tmp_path), "-f", "json", "-o", str(out)), cpu_s=120, address_space=2048 * MB)
    assert proc.returncode in (0, 1, 3), proc.stderr[-2000:]
    import json

    report = json.loads(out.read_text())
    messages = [f["message"] for f in report["findings"] if f["rule_id"] == "PG001"]
    assert any("decompression bomb" in m for m in messages), messages
    assert report["overall"] != "PASS"
