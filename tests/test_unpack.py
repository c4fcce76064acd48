"""Static unpacking of exec(...) shims: every codec shape, limits, and the coordinates of decoded layers."""

from __future__ import annotations

import ast
import base64
import binascii
import bz2
import codecs
import gzip
import lzma
import os
import subprocess
import time
import tracemalloc
import zlib
from pathlib import Path

import pytest

from auditor import unpack
from auditor.engine import audit
from auditor.facts import build_context, parse_unit
from auditor.findings import Verdict
from auditor.submission import load_path
from auditor.unpack import MAX_DECODED_BYTES, MAX_DEPTH, unpack_source
from rules import get_rule

SOURCE = 'import torch\n\ndef eval_val(model):\n    return model.score()\n\nprint("hello")\n'
B = SOURCE.encode()


def b85(data: bytes) -> str:
    return base64.b85encode(data).decode()


def one_layer(text: str, **kw) -> unpack.UnpackOutcome:
    out = unpack_source("train_gpt.py", text, **kw)
    assert out.problems == []
    assert len(out.layers) == 1
    return out


def decoded_text(text: str, **kw) -> str:
    return one_layer(text, **kw).units[-1].text


# --- codecs -------------------------------------------------------------------------------------------------------
CODEC_SHIMS = {
    "lzma+b85": f'import lzma as L,base64 as B\nexec(L.decompress(B.b85decode("{b85(lzma.compress(B))}")))\n',
    "lzma+b64": f'import lzma,base64\nexec(lzma.decompress(base64.b64decode(b"{base64.b64encode(lzma.compress(B)).decode()}")))\n',
    "zlib+a85": f"import zlib as z,base64 as q\nexec(z.decompress(q.a85decode({base64.a85encode(zlib.compress(B)).decode()!r})))\n",
    "zlib-raw+b64": (
        "import zlib,base64\n"
        f'exec(zlib.decompress(base64.b64decode("{base64.b64encode(zlib.compress(B)[2:-4]).decode()}"), -15))\n'
    ),
    "gzip+b32": f'import gzip,base64\nexec(gzip.decompress(base64.b32decode("{base64.b32encode(gzip.compress(B, mtime=0)).decode()}")))\n',
    "bz2+b16": f'import bz2,base64\nexec(bz2.decompress(base64.b16decode("{base64.b16encode(bz2.compress(B)).decode()}")))\n',
    "lzma+hex": f'import lzma,binascii\nexec(lzma.decompress(binascii.unhexlify("{lzma.compress(B).hex()}")))\n',
    "bytes.fromhex": f'exec(bytes.fromhex("{B.hex()}").decode())\n',
    "urlsafe-b64": f'import base64\nexec(base64.urlsafe_b64decode("{base64.urlsafe_b64encode(B).decode()}"))\n',
    "codecs-rot13": f"import codecs\nexec(codecs.decode({codecs.encode(SOURCE, 'rot13')!r}, 'rot13'))\n",
    "literal-string": f"exec({SOURCE!r})\n",
    "lzma-alone": (
        "import lzma as L,base64 as B\n"
        f'exec(L.decompress(B.b85decode("{b85(lzma.compress(B, format=lzma.FORMAT_ALONE))}"), format=L.FORMAT_ALONE))\n'
    ),
}


@pytest.mark.parametrize("shape", sorted(CODEC_SHIMS))
def test_every_codec_shape_decodes_to_the_source(shape: str) -> None:
    assert decoded_text(CODEC_SHIMS[shape]) == SOURCE


def test_brotli_shim() -> None:
    brotli = pytest.importorskip("brotli")
    text = f'import brotli as B,base64 as b\nexec(B.decompress(b.b85decode("{b85(brotli.compress(B))}")))\n'
    out = one_layer(text)
    assert out.units[-1].text == SOURCE and out.layers[0].codecs == ("base85", "brotli")


def test_layer_metadata_names_codecs_outermost_first_and_the_exec_line() -> None:
    out = one_layer("# packed\n" + CODEC_SHIMS["lzma+b85"])
    layer = out.layers[0]
    assert (layer.name, layer.codecs, layer.line, layer.decoded_bytes) == (
        "train_gpt.py#L1",
        ("base85", "lzma"),
        3,
        len(B),
    )
    assert [u.name for u in out.units] == ["train_gpt.py", "train_gpt.py#L1"]
    assert out.units[1].layer is layer


def test_from_imports_with_aliases() -> None:
    text = (
        "from lzma import decompress as unz\nfrom base64 import b85decode\n"
        f'exec(unz(b85decode("{b85(lzma.compress(B))}")))\n'
    )
    assert decoded_text(text) == SOURCE


def test_dunder_import_and_builtins_exec() -> None:
    text = f'import builtins\nbuiltins.exec(__import__("zlib").decompress(b"{zlib.compress(B).hex()}".fromhex()))\n'
    # bytes has no .fromhex() method on an instance in the model: decoding must report, not guess
    out = unpack_source("t.py", text)
    assert out.layers == [] and len(out.problems) == 1
    text = f'import builtins\nbuiltins.exec(__import__("zlib").decompress(bytes.fromhex("{zlib.compress(B).hex()}")))\n'
    assert decoded_text(text) == SOURCE


def test_raw_lzma2_with_filters_and_preset_arithmetic() -> None:
    filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
    raw = lzma.compress(B, format=lzma.FORMAT_RAW, filters=filters)
    text = (
        "import lzma as L,base64 as B\n"
        f'exec(L.decompress(B.b85decode("{b85(raw)}"),format=L.FORMAT_RAW,'
        'filters=[{"id":L.FILTER_LZMA2,"preset":9|L.PRESET_EXTREME}]))\n'
    )
    out = one_layer(text)
    assert out.units[-1].text == SOURCE and out.layers[0].codecs == ("base85", "lzma-raw")


def test_raw_lzma2_without_literal_filters_is_a_problem() -> None:
    raw = lzma.compress(B, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}])
    text = f'import lzma as L,base64 as B,os\nexec(L.decompress(B.b85decode("{b85(raw)}"),format=L.FORMAT_RAW,filters=os.F))\n'
    out = unpack_source("t.py", text)
    assert out.layers == [] and len(out.problems) == 1


def test_compile_wrapper_decode_and_variable_held_blob() -> None:
    blob = b85(lzma.compress(B))
    half = len(blob) // 2
    text = (
        "import lzma as L,base64 as B,linecache as C\n"
        f'_DATA = ["{blob[:half]}",\n "{blob[half:]}"]\n'
        'S=L.decompress(B.b85decode("".join(_DATA))).decode()\n'
        "F=__file__+'.__decompressed__.py'\n"
        "C.cache[F]=(len(S),None,S.splitlines(True),F)\n"
        "exec(compile(S,F,'exec'))\n"
    )
    out = one_layer(text)
    assert out.units[-1].text == SOURCE and out.layers[0].line == 7


def test_blob_with_newlines_replaced_and_implicit_concatenation() -> None:
    blob = b85(lzma.compress(B))
    wrapped = "\n".join(blob[i : i + 40] for i in range(0, len(blob), 40))
    text = f'import lzma,base64\n_b=b"""\n{wrapped}\n"""\nexec(lzma.decompress(base64.b85decode(_b.replace(b"\\n",b""))).decode("utf-8"))\n'
    assert decoded_text(text) == SOURCE
    pieces = " ".join(f'"{blob[i : i + 30]}"' for i in range(0, len(blob), 30))
    assert decoded_text(f"import lzma as L,base64 as B;exec(L.decompress(B.b85decode({pieces})))\n") == SOURCE


def test_exec_of_a_sibling_file_read_at_run_time() -> None:
    files = {"train_gpt_decode.py": SOURCE}
    text = 'exec(open(__file__.replace("train_gpt.py","train_gpt_decode.py")).read())\n'
    out = one_layer(text, read_file=files.get)
    assert out.units[-1].text == SOURCE and out.layers[0].codecs == ("file:train_gpt_decode.py",)
    text = 'import os\nexec(open(os.path.join(os.path.dirname(__file__), "missing.py")).read())\n'
    out = unpack_source("train_gpt.py", text, read_file=files.get)
    assert out.layers == [] and "missing.py" in out.problems[0][1]


def test_parameter_of_an_installer_function_is_followed_to_its_call_sites() -> None:
    text = (
        "import sys, types\n"
        "def install(name, source):\n"
        "    module = types.ModuleType(name)\n"
        "    exec(compile(source, name, 'exec'), module.__dict__)\n"
        "    sys.modules[name] = module\n"
        f"install('helpers', {SOURCE!r})\n"
        "install('other', source='x = 1\\n')\n"
    )
    out = unpack_source("train_gpt.py", text)
    assert out.problems == []
    assert [(lay.line, u.text) for lay, u in zip(out.layers, out.units[1:])] == [(6, SOURCE), (7, "x = 1\n")]


def test_nested_layers_are_numbered_innermost_last() -> None:
    inner = f'import zlib as Z, base64 as b\nexec(compile(Z.decompress(b.b64decode("{base64.b64encode(zlib.compress(B)).decode()}")), "x", "exec"))\n'
    text = f'import lzma, base64\nexec(lzma.decompress(base64.b85decode("{b85(lzma.compress(inner.encode()))}")).decode())\n'
    out = unpack_source("train_gpt.py", text)
    assert out.problems == []
    assert [(lay.name, lay.codecs, lay.line) for lay in out.layers] == [
        ("train_gpt.py#L1", ("base85", "lzma"), 2),
        ("train_gpt.py#L2", ("base64", "zlib"), 2),
    ]
    assert out.units[-1].text == SOURCE


# --- what cannot be decoded is a problem, never silence -----------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            'import lzma as L,base64 as B,os\nexec(L.decompress(B.b85decode(os.environ["PAYLOAD"])))\n',
            "payload",
        ),
        ("import sys\nexec(sys.stdin.read())\n", "sys.stdin.read"),
        ("def run(code):\n    exec(code)\n", "never called"),
        ("src = input()\nexec(src)\n", "input()"),
        ("name = 'm'\nexec(f'import {name}')\n", "f-string"),
        ("import marshal\nexec(marshal.loads(b'\\xe3'))\n", "marshal"),
        ("import lzma\nexec(lzma.decompress(b'not lzma at all'))\n", "corrupt"),
        ('import lzma\nexec(lzma.decompress(bytes.fromhex("fd377a585a00")))\n', "corrupt"),
        ("import zlib\nexec(zlib.decompress(b'x\\x9c\\xcb'))\n", "truncated"),
        ("import base64\nexec(base64.b85decode('~~~~'))\n", "corrupt"),
        ("import base64\nexec(base64.b64decode('/w=='))\n", "utf-8"),
        ("for s in ['a=1']:\n    pass\nexec(s)\n", "reassigned"),
        ("exec(1234)\n", "int"),
    ],
)
def test_undecodable_shims_are_reported(text: str, needle: str) -> None:
    out = unpack_source("train_gpt.py", text)
    assert out.layers == []
    assert len(out.problems) == 1, out.problems
    line, message = out.problems[0]
    assert line == text.count("\n", 0, text.index("exec(")) + 1
    assert "cannot be decoded statically" in message and needle.lower() in message.lower(), message


def test_plain_code_is_passed_through_without_problems() -> None:
    text = "import torch\nmodel = torch.nn.Linear(2, 2)\nmodel.eval()\ndef eval_val():\n    pass\n"
    out = unpack_source("train_gpt.py", text)
    assert (len(out.units), out.layers, out.problems) == (1, [], [])


def test_a_module_that_defines_its_own_exec_is_not_a_shim() -> None:
    text = "def exec(cmd):\n    return cmd.upper()\nexec(input())\n"
    assert unpack_source("t.py", text).problems == []


def test_self_executing_file_is_a_problem_not_a_loop() -> None:
    text = "exec(open(__file__).read())\n"
    out = unpack_source("train_gpt.py", text, read_file={"train_gpt.py": text}.get)
    assert out.layers == [] and "own enclosing layers" in out.problems[0][1]


# --- limits -------------------------------------------------------------------------------------------------------
def _multistream_bomb(compress, total: int = 1 << 30, piece: int = 16 << 20) -> bytes:
    """`total` bytes of zeros as concatenated compressed streams (decompress() joins them all)."""
    return compress(bytes(piece)) * (total // piece)


@pytest.mark.parametrize(
    ("module", "compress"),
    [("lzma", lzma.compress), ("bz2", bz2.compress), ("gzip", lambda d: gzip.compress(d, mtime=0))],
)
def test_gigabyte_bomb_is_refused_fast(module: str, compress) -> None:
    bomb = _multistream_bomb(compress)
    text = f'import {module},base64\nexec({module}.decompress(base64.b85decode("{b85(bomb)}")))\n'
    t0 = time.perf_counter()
    out = unpack_source("train_gpt.py", text)
    elapsed = time.perf_counter() - t0
    assert out.layers == [] and "bomb" in out.problems[0][1]
    assert elapsed < 10, elapsed


def test_gigabyte_bomb_memory_stays_bounded() -> None:
    text = f'import lzma,base64\nexec(lzma.decompress(base64.b85decode("{b85(_multistream_bomb(lzma.compress))}")))\n'
    tracemalloc.start()
    try:
        out = unpack_source("train_gpt.py", text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "bomb" in out.problems[0][1]
    assert peak < 3 * MAX_DECODED_BYTES, peak  # 1 GiB was never materialised


def test_huge_base85_literal_is_bounded_by_the_time_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unpack, "TIME_BUDGET_S", 0.3)
    text = f'import base64\nexec(base64.b85decode("{b85(bytes(8 << 20))}"))\n'
    t0 = time.perf_counter()
    out = unpack_source("train_gpt.py", text)
    assert time.perf_counter() - t0 < 3
    assert "budget" in out.problems[0][1]


def test_zlib_single_stream_bomb_over_the_cap() -> None:
    bomb = zlib.compress(bytes(MAX_DECODED_BYTES + (1 << 20)), 9)
    text = f'import zlib,base64\nexec(zlib.decompress(base64.b85decode("{b85(bomb)}")))\n'
    out = unpack_source("train_gpt.py", text)
    assert out.layers == [] and "bomb" in out.problems[0][1]


def test_lzma_header_asking_for_a_huge_dictionary_is_refused() -> None:
    text = (
        "import lzma as L\n"
        "exec(L.decompress(b'\\x00', format=L.FORMAT_RAW, filters=[{'id': L.FILTER_LZMA2, 'dict_size': 1 << 31}]))\n"
    )
    out = unpack_source("train_gpt.py", text)
    assert out.layers == [] and "dictionary" in out.problems[0][1]


def test_depth_limit() -> None:
    text = SOURCE
    for _ in range(MAX_DEPTH + 2):
        text = f'import zlib,base64\nexec(zlib.decompress(base64.b64decode("{base64.b64encode(zlib.compress(text.encode())).decode()}")))\n'
    out = unpack_source("train_gpt.py", text)
    assert len(out.layers) == MAX_DEPTH
    assert len(out.problems) == 1 and "nest more than" in out.problems[0][1]
    assert out.problems[0][0] == 2  # reported at the exec of the shipped file
    assert out.problems[0][1].startswith(f"train_gpt.py#L{MAX_DEPTH} line 2:")


def test_time_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unpack, "TIME_BUDGET_S", 0.0)
    out = unpack_source("train_gpt.py", CODEC_SHIMS["lzma+b85"])
    assert out.layers == [] and "budget" in out.problems[0][1]


def test_total_decoded_size_across_layers_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unpack, "MAX_DECODED_BYTES", 3 * len(B))
    text = "\n".join(f"exec({SOURCE!r})" for _ in range(5)) + "\n"
    out = unpack_source("train_gpt.py", text)
    assert len(out.layers) == 3 and "total more than" in out.problems[0][1]


# --- decoded coordinates --------------------------------------------------------------------------------------------
def test_locations_in_a_decoded_layer_use_the_layer_name_and_decoded_lines() -> None:
    out = one_layer("\n\n" + CODEC_SHIMS["lzma+b85"])
    unit = out.units[-1]
    parse_unit(unit)
    assert unit.tree is not None
    func = next(n for n in ast.walk(unit.tree) if isinstance(n, ast.FunctionDef))
    loc = unit.location(func)
    assert (loc.path, loc.layer, loc.line, loc.col) == ("train_gpt.py", "train_gpt.py#L1", 3, 1)
    assert loc.snippet == "def eval_val(model):"
    assert str(loc) == "train_gpt.py#L1:3:1"


# --- through the whole pipeline -----------------------------------------------------------------------------------
def test_packed_fixtures_decode(fixtures_dir: Path) -> None:
    expect = {
        "packed_lzma_b85": [("base85", "lzma")],
        "packed_lzma_raw": [("base85", "lzma-raw")],
        "packed_nested": [("base85", "lzma"), ("base64", "zlib")],
        "packed_eval_download": [("base85", "lzma")],
    }
    for name, codecs_ in expect.items():
        ctx = build_context(load_path(fixtures_dir / name))
        assert [lay.codecs for lay in ctx.layers] == codecs_, name
        assert ctx.problems == [], name
        entry = ctx.entry_unit
        assert entry is not None and entry.tree is not None and entry.name == f"train_gpt.py#L{len(codecs_)}"
        names = {n.name for n in ast.walk(entry.tree) if isinstance(n, ast.FunctionDef)}
        assert {"main", "eval_val"} <= names
    download = build_context(load_path(fixtures_dir / "packed_eval_download")).entry_unit
    assert download is not None and "urllib.request.urlopen" in download.text


def test_undecodable_fixture_is_a_warn_not_a_pass(fixtures_dir: Path) -> None:
    rule = get_rule("PG001")
    assert rule is not None
    report = audit(load_path(fixtures_dir / "packed_undecodable"), [rule])
    findings = [f for f in report.findings if f.rule_id == "PG001"]
    assert [f.verdict for f in findings] == [Verdict.WARN]
    shipped = (fixtures_dir / "packed_undecodable" / "train_gpt.py").read_text().splitlines()
    exec_line = next(i for i, line in enumerate(shipped, 1) if line.startswith("exec("))
    assert findings[0].primary is not None and findings[0].primary.line == exec_line
    assert "cannot be decoded statically" in findings[0].message


def test_fixture_generator_is_deterministic(fixtures_dir: Path, tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_packed", fixtures_dir / "make_packed.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # our own generator script, not submission code
    for name, (pack, source, _) in module.FIXTURES.items():
        assert pack(source) == (fixtures_dir / name / "train_gpt.py").read_text(), (
            f"rerun make_packed.py ({name})"
        )


# --- the merged records ---------------------------------------------------------------------------------------------
MIRROR = Path(os.environ.get("PGOLF_REPO", "/work/.mirror/openai+parameter-golf/repo"))


@pytest.mark.corpus
def test_every_exec_shim_in_the_merged_records_decodes() -> None:
    if not (MIRROR / "HEAD").exists() and not (MIRROR / ".git").exists():
        pytest.skip("no local mirror of openai/parameter-golf (set PGOLF_REPO)")
    git = ["git", f"--git-dir={MIRROR}"] if (MIRROR / "HEAD").exists() else ["git", "-C", str(MIRROR)]
    listed = subprocess.run(
        [*git, "grep", "-l", "-P", r"(?<![\w.])exec\s*\(", "HEAD", "--", "records/*.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    decoded = 0
    for hit in listed:
        path = hit.split(":", 1)[1]
        folder, name = path.rsplit("/", 1)
        text = subprocess.run(
            [*git, "show", f"HEAD:{path}"], capture_output=True, text=True, check=True
        ).stdout

        def read(rel: str, folder: str = folder) -> str | None:
            proc = subprocess.run([*git, "show", f"HEAD:{folder}/{rel}"], capture_output=True, text=True)
            return proc.stdout if proc.returncode == 0 else None

        out = unpack_source(name, text, read_file=read)
        assert out.problems == [], (path, out.problems)
        for unit in out.units:  # decoded layers parse too (several use Python 3.12 f-strings)
            parse_unit(unit)
            assert unit.parse_error is None, unit.parse_error
        decoded += len(out.layers)
    assert decoded >= 8  # the seven wrapped records of rules.md §F plus the train_gpt_decode.py redirect


def test_binascii_import_is_used() -> None:
    # keeps the hex shim honest: the expected layer must equal what binascii itself decodes
    assert binascii.unhexlify(lzma.compress(B).hex()) == lzma.compress(B)


# --- Python 3.12 f-strings on an older interpreter ------------------------------------------------------------------
PEP701 = 'mode = f"start={"physical" if flag else "virtual"} key={d["k"]!r:>{w}}"\nother = f"{x}"\n'


@pytest.mark.skipif(__import__("sys").version_info >= (3, 12), reason="3.12 parses PEP 701 f-strings itself")
def test_pep701_fstrings_are_made_parsable_keeping_lines_and_columns() -> None:
    with pytest.raises(SyntaxError):
        ast.parse(PEP701)
    fixed = unpack.pep701_compat(PEP701)
    tree = ast.parse(fixed)
    assert [len(line) for line in fixed.splitlines()] == [len(line) for line in PEP701.splitlines()]
    assert fixed.replace("'", '"') == PEP701
    assert [n.lineno for n in tree.body] == [1, 2]


def test_decoded_pep701_layer_parses() -> None:
    text = f'import lzma as L,base64 as B\nexec(L.decompress(B.b85decode("{b85(lzma.compress(PEP701.encode()))}")))\n'
    out = one_layer(text)
    unit = out.units[-1]
    parse_unit(unit)
    assert unit.parse_error is None and unit.tree is not None


def test_pep701_compat_leaves_other_syntax_errors_alone() -> None:
    broken = 'x = f"{"a"}"\ndef f(:\n'
    assert unpack.pep701_compat(broken) == broken


def test_fast_requote_scanner_agrees_with_libcst() -> None:
    samples = [
        PEP701,
        'x = f"a {f"{y!r}" + "z"}"\nif\'.attn.\'in name:pass\n',
        'a = "it\'s"  # f"{"\nb = rb"\\\\" + f"{c:{d}}" + f\'{e["k"]}\' + """x"y"""\nc = f"{ {"a": 1}["a"] }"\n',
        "s = f'{x!r:>{w}} {y!=z} {d['a']}'\n",
    ]
    for text in samples:
        assert unpack._requote_scan(text) == unpack._requote_libcst(text), text


def test_brotli_stream_over_one_output_chunk_decodes_and_truncation_is_caught() -> None:
    # brotli >= 1.2 says it can accept more data while output is still pending; a multi-chunk stream must still
    # decode, and a cut stream must still be reported as truncated.
    brotli = pytest.importorskip("brotli")
    from auditor.unpack import CHUNK, _Budget, decompress_bounded

    data = bytes(range(256)) * (3 * CHUNK // 256) + b"tail"
    packed = brotli.compress(data)
    assert decompress_bounded("brotli", packed, {}, 10 * CHUNK, _Budget(10.0, 10**9)) == data
    with pytest.raises(Exception, match="truncated"):
        decompress_bounded("brotli", packed[: len(packed) // 2], {}, 10 * CHUNK, _Budget(10.0, 10**9))
