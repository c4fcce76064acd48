"""auditor.rename: lossless identifier renaming (and the minified variant) used by robustness tests."""

from __future__ import annotations

import ast
import contextlib
import io
import io as _io
import os
import subprocess
import tokenize
from pathlib import Path

import pytest

from auditor.rename import minify, rename_identifiers

# Our own snippet (never submission code): exercises every kind of binding the renamer handles.
SNIPPET = """\
import math
import os as operating_system
from functools import reduce as fold

SCALE = 3
counter = 0


class Accumulator:
    unit = 2

    def __init__(self, start, *, step=1):
        self.total = start
        self.step_size = step

    def add(self, value):
        self.total += value * self.step_size * self.unit
        return self

    @property
    def doubled(self):
        return self.total * 2


class Child(Accumulator):
    def add(self, value):
        return super().add(value + 1)


def bump():
    global counter
    counter += 1
    return counter


def make_adder(offset):
    hits = 0

    def adder(x, scale=SCALE):
        nonlocal hits
        hits += 1
        return x * scale + offset + hits

    return adder


def summarize(numbers, *extra, weight=1.0, **options):
    squares = [v * v for v in numbers if v % 2 == 0]
    lookup = {key: len(key) for key in options}
    if (n := len(squares)) > 1:
        squares.append(n)
    total = fold(lambda acc, item: acc + item, squares, 0)
    try:
        raise ValueError("boom")
    except ValueError as err:
        message = str(err)
    with contextlib_free() as handle:
        handle.append(message)
    first, *rest = numbers
    return total * weight + sum(extra) + sum(lookup.values()) + first + len(rest) + len(handle)


class contextlib_free:
    def __enter__(self):
        self.items = []
        return self.items

    def __exit__(self, *exc):
        return False


def main():
    acc = Accumulator(1, step=2).add(3).add(4)
    child = Child(start=0).add(1)
    adder = make_adder(offset=10)
    result = summarize([1, 2, 3, 4], 5, 6, weight=0.5, alpha=1, beta=2)
    bump()
    bump()
    name = operating_system.path.basename("/tmp/x.txt")
    return [acc.total, acc.doubled, child.total, adder(2), adder(3, scale=5), result, counter,
            round(math.sqrt(16)), name, f"{SCALE}-{acc.unit}"]


print(main())
"""

USER_NAMES = {
    "SCALE",
    "counter",
    "Accumulator",
    "unit",
    "start",
    "step",
    "total",
    "step_size",
    "add",
    "value",
    "doubled",
    "Child",
    "bump",
    "make_adder",
    "offset",
    "hits",
    "adder",
    "x",
    "scale",
    "summarize",
    "extra",
    "weight",
    "options",
    "squares",
    "v",
    "numbers",
    "lookup",
    "key",
    "n",
    "acc",
    "item",
    "err",
    "message",
    "handle",
    "first",
    "rest",
    "contextlib_free",
    "items",
    "exc",
    "main",
    "child",
    "result",
    "name",
    "self",
}
KEPT = {
    "math",
    "operating_system",
    "fold",
    "print",
    "len",
    "sum",
    "str",
    "round",
    "super",
    "property",
    "ValueError",
    "__init__",
    "__enter__",
    "__exit__",
    "path",
    "basename",
    "sqrt",
    "append",
}


def identifiers(source: str) -> set[str]:
    toks = tokenize.generate_tokens(_io.StringIO(source).readline)
    names = {t.string for t in toks if t.type == tokenize.NAME}
    # identifiers inside f-strings are tokenized as part of the string before Python 3.12
    names |= {n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name)}
    return names


def run_snippet(source: str) -> str:
    """Execute OUR OWN test snippet (never submission code) and return what it printed."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(source, "<snippet>", "exec"), {"__name__": "__snippet__"})
    return buf.getvalue()


def statement_lines(source: str) -> list[tuple[str, int]]:
    return [(type(n).__name__, n.lineno) for n in ast.walk(ast.parse(source)) if isinstance(n, ast.stmt)]


def string_constants(source: str) -> list[str]:
    return [
        n.value
        for n in ast.walk(ast.parse(source))
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]


def test_renamed_module_behaves_the_same_and_keeps_its_lines() -> None:
    renamed = rename_identifiers(SNIPPET)
    assert run_snippet(renamed) == run_snippet(SNIPPET)
    assert renamed.count("\n") == SNIPPET.count("\n")
    assert statement_lines(renamed) == statement_lines(SNIPPET)
    assert string_constants(renamed) == string_constants(SNIPPET)


def test_no_user_defined_name_remains_and_external_names_stay() -> None:
    renamed = rename_identifiers(SNIPPET)
    left = identifiers(renamed)
    assert USER_NAMES & left == set()
    assert KEPT <= left
    assert "operating_system.path.basename" in renamed and "fold(" in renamed


def test_imported_apis_keywords_of_external_calls_and_protocol_methods_are_untouched() -> None:
    source = (
        "import os\nimport torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, dim, bias):\n"
        "        super().__init__()\n"
        "        self.proj = nn.Linear(dim, dim, bias=bias)\n\n"
        "    def forward(self, x, target):\n"
        "        return F.cross_entropy(self.proj(x), target, reduction='sum')\n\n"
        "class Deeper(Net):\n"
        "    def forward(self, x, target):\n"
        "        return super().forward(x, target) * 2\n\n"
        "def train(model, optimizer, x, target, step=0):\n"
        "    lr = float(os.environ.get('LR', '0.1'))\n"
        "    with torch.no_grad():\n"
        "        pass\n"
        "    loss = model(x, target)\n"
        "    loss.backward()\n"
        "    optimizer.step()\n"
        "    return loss, lr, step\n\n"
        "train(Deeper(4, bias=False), torch.optim.SGD([], lr=0.1), None, None, step=3)\n"
    )
    renamed = rename_identifiers(source)
    for kept in (
        "torch.no_grad()",
        "F.cross_entropy(",
        ".step()",
        "os.environ.get('LR', '0.1')",
        "nn.Linear(",
        ", bias=",
        "reduction='sum'",
        ".backward()",
        "def forward(",
        "SGD([], lr=0.1)",
        "super().__init__()",
        "super().forward(",
    ):
        assert kept in renamed, kept
    left = identifiers(renamed)
    assert {"Net", "Deeper", "train", "model", "dim", "proj", "target", "loss", "lr", "step"} & left == {
        "lr",
        "step",
    }
    # `lr` survives only as the keyword of torch.optim.SGD and `step` only as optimizer.step (external APIs);
    # the local variable `lr` and the parameter `step` of our own train() are renamed
    assert "lr = float" not in renamed
    assert ", step=3)" not in renamed and "step=0" not in renamed  # keyword of our own train() is renamed
    assert "forward" in left  # nn.Module calls forward by name, and Deeper derives from Net(nn.Module)


def test_seed_changes_names_but_not_behaviour() -> None:
    a, b = rename_identifiers(SNIPPET, seed=0), rename_identifiers(SNIPPET, seed=1)
    assert a != b and a == rename_identifiers(SNIPPET, seed=0)
    assert run_snippet(a) == run_snippet(b) == run_snippet(SNIPPET)


def test_new_names_do_not_collide_with_existing_ones() -> None:
    source = "v1 = 1\nimport v2\n\ndef f(a):\n    return a + v1\n\nprint(f(2), v2)\n"
    renamed = rename_identifiers(source)
    assert "import v2" in renamed and "print(" in renamed
    names = [n.id for n in ast.walk(ast.parse(renamed)) if isinstance(n, ast.Name)]
    assert "v2" in names and names.count("v2") == 1  # the import's use only; nobody else got "v2"


def test_comments_and_formatting_are_kept() -> None:
    source = "def f(a):  # keep me\n    b = (a +\n         1)\n    return b\n"
    renamed = rename_identifiers(source)
    assert "# keep me" in renamed and renamed.splitlines()[2].strip() == "1)"


def test_minify_preserves_behaviour_and_renames() -> None:
    small = minify(SNIPPET)
    assert run_snippet(small) == run_snippet(SNIPPET)
    assert len(small) < len(SNIPPET)
    assert "squares" not in identifiers(small)  # locals renamed


MIRROR = Path(os.environ.get("PGOLF_REPO", "/work/.mirror/openai+parameter-golf/repo"))


@pytest.mark.corpus
def test_rename_a_real_record_script() -> None:
    if not (MIRROR / "HEAD").exists():
        pytest.skip("no local mirror of openai/parameter-golf (set PGOLF_REPO)")
    path = "records/track_10min_16mb/2026-03-17_NaiveBaseline/train_gpt.py"
    text = subprocess.run(
        ["git", f"--git-dir={MIRROR}", "show", f"HEAD:{path}"], capture_output=True, text=True, check=True
    ).stdout
    renamed = rename_identifiers(text)
    assert statement_lines(renamed) == statement_lines(text)
    assert string_constants(renamed) == string_constants(text)
    tree = ast.parse(text)
    defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    # methods of classes deriving from imported bases (nn.Module, Optimizer) keep their names by design
    hooks = {
        f.name
        for c in ast.walk(tree)
        if isinstance(c, ast.ClassDef) and c.bases
        for f in c.body
        if isinstance(f, ast.FunctionDef)
    }
    kept = defined & identifiers(renamed)
    assert kept <= hooks, kept - hooks
    assert len(defined - kept) > 10
