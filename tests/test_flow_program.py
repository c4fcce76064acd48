"""The shared flow layer's Program: call resolution, argument binding, gates, reachability, entry order."""

from __future__ import annotations

import ast
import textwrap

import pytest

from auditor.facts import build_context
from auditor.flow import UNKNOWN, program_of
from auditor.flow.program import Program
from auditor.rename import rename_identifiers
from auditor.testing import submission_from_files


def prog_of(files: dict[str, str]) -> Program:
    subs = {k: textwrap.dedent(v).lstrip("\n") for k, v in files.items()}
    return program_of(build_context(submission_from_files(subs)))


def callees_at(prog: Program, marker: str, unit: str = "train_gpt.py") -> list[str]:
    """Qualnames the call on the (first) line containing `marker` resolves to."""
    u = next(m.unit for m in prog.modules.values() if m.unit.name == unit)
    line = next(i for i, t in enumerate(u.lines, 1) if marker in t)
    sites = [s for s in prog.all_sites() if s.unit is u and s.line == line]
    return sorted({c.qualname for s in sites for c in s.callees})


RESOLUTION = {
    "train_gpt.py": """
        import helper as hp
        from ngram_tilt import tilt
        import torch

        class Block(torch.nn.Module):
            def forward(self, x):
                return self.scale(x)

            def scale(self, x):
                return x * 2

        class Loader:
            def __init__(self, pattern):
                self.pattern = pattern

            def next_batch(self):
                return self.pattern

        def train(a, b, c, tokens, extra=None):
            return tokens

        def main():
            def log(msg):
                print(msg)
            model = torch.compile(Block())
            loader = Loader("x")
            log("start")
            y = model(1)                      # MODEL-CALL
            batch = loader.next_batch()       # TYPED-METHOD
            train(1, 2, 3, batch, extra=4)    # BIND
            hp.helper_fn(batch)               # MODULE-ATTR
            tilt(y)                           # FROM-IMPORT

        if __name__ == "__main__":
            main()
        """,
    "helper.py": """
        def helper_fn(x):
            return x
        """,
    "ngram_tilt.py": """
        def tilt(x):
            return x
        """,
}


def test_call_resolution_covers_names_imports_methods_and_module_calls() -> None:
    prog = prog_of(RESOLUTION)
    assert callees_at(prog, 'log("start")') == ["main.log"]
    assert callees_at(prog, "# MODEL-CALL") == ["Block.forward"]
    assert callees_at(prog, "# TYPED-METHOD") == ["Loader.next_batch"]
    assert callees_at(prog, "# MODULE-ATTR") == ["helper_fn"]
    assert callees_at(prog, "# FROM-IMPORT") == ["tilt"]
    assert callees_at(prog, "return self.scale(x)") == ["Block.scale"]
    # the imported modules' functions are reachable through the imports
    helper = prog.func("helper.py", "helper_fn")
    assert helper is not None and prog.func_reach(helper).status == "live"


def test_argument_binding_by_position_and_keyword() -> None:
    prog = prog_of(RESOLUTION)
    site = next(s for s in prog.all_sites() if s.callees and s.callees[0].qualname == "train")
    callee = site.callees[0]
    assert ast.unparse(site.arg_for(callee, "tokens")) == "batch"  # 4th positional -> 4th parameter
    assert ast.unparse(site.arg_for(callee, "extra")) == "4"
    ctor = next(s for s in prog.all_sites() if s.constructs is not None and s.constructs.name == "Loader")
    init = ctor.callees[0]
    assert ast.unparse(ctor.arg_for(init, "pattern")) == "'x'"  # self is bound implicitly


GATES = """
    import os

    def _env(key, default, kind=str):
        value = os.environ.get(key, str(default))
        if kind == bool:
            return bool(int(value))
        return kind(value)

    class Hyperparameters:
        ttt_enabled = bool(int(os.environ.get("TTT_ENABLED", "0")))
        slot = os.getenv("SLOT", "1") == "1"
        mode = os.environ.get("MODE", "Fast").lower() in ("fast", "true")
        lr = float(os.environ.get("LR", "0.5"))
        helper_flag = _env("HELPER_FLAG", 1, bool)
        helper_off = _env("HELPER_OFF", 0, bool)

    USE_CACHE = False

    def ttt(): pass
    def slot_eval(): pass
    def cache(): pass
    def never_called(): pass
    def both(): pass
    def helper_gated(): pass

    def main():
        args = Hyperparameters()
        if args.ttt_enabled:
            ttt()
        if args.slot and not USE_CACHE:
            slot_eval()
        if USE_CACHE or args.lr > 1.0:
            cache()
        if args.mode and args.helper_flag:
            both()
        if args.helper_off or not args.mode:
            helper_gated()

    if __name__ == "__main__":
        main()
"""


def test_gates_fold_env_defaults_and_classify_reachability() -> None:
    prog = prog_of({"train_gpt.py": GATES})
    status = {
        q: prog.func_reach(prog.func("train_gpt.py", q)).status
        for q in ("ttt", "slot_eval", "cache", "never_called", "both", "helper_gated", "main")
    }
    assert status == {
        "ttt": "gated_off",
        "slot_eval": "live",
        "cache": "gated_off",
        "never_called": "dead",
        "both": "live",
        "helper_gated": "gated_off",
        "main": "live",
    }
    decided = {g.text: g.taken for (_, branch), g in prog.branch_gates.items() if branch == "body"}
    assert decided["args.mode and args.helper_flag"] is True  # decided, not merely undecided
    assert decided["args.slot and (not USE_CACHE)"] is True
    r = prog.func_reach(prog.func("train_gpt.py", "ttt"))
    assert r.gate is not None and r.gate.env_vars == ("TTT_ENABLED",) and "off by default" in r.reason


def test_run_command_turns_a_default_off_flag_on() -> None:
    readme = "Run:\n\n```bash\nexport SEED=1\nTTT_ENABLED=1 torchrun --nproc_per_node=8 train_gpt.py\n```\n"
    prog = prog_of({"train_gpt.py": GATES, "README.md": readme})
    r = prog.func_reach(prog.func("train_gpt.py", "ttt"))
    assert r.status == "live" and r.gate is not None and not r.gate.taken
    assert r.gate.enabled_by and r.gate.enabled_by[0].env_dict == {"SEED": "1", "TTT_ENABLED": "1"}


@pytest.mark.parametrize(
    ("expr", "env", "expected"),
    [
        ('os.environ.get("X", "1")', None, "1"),
        ('int(os.environ.get("X", "3")) + 1', None, 4),
        ('bool(int(os.getenv("X", "0")))', None, False),
        ('bool(int(os.getenv("X", "0")))', {"X": "1"}, True),
        ('os.environ.get("X", "True").lower() in ("1", "true")', None, True),
        ('os.environ.get("X", "0") == "1" or os.environ.get("Y", "1") == "1"', None, True),
        ('not (float(os.environ.get("X", "0.0")) > 0)', None, True),
        ('os.environ["X"]', None, UNKNOWN),
        (
            'int(os.environ.get("WORLD_SIZE", "1")) > 1',
            None,
            UNKNOWN,
        ),  # set by the launcher, not a flag default
        ('"RANK" in os.environ', None, UNKNOWN),
        ("f(1)", None, UNKNOWN),
    ],
)
def test_eval_const_shapes(expr: str, env: dict | None, expected: object) -> None:
    prog = prog_of({"train_gpt.py": f"import os\nvalue = {expr}\n"})
    node = prog.entry.unit.tree.body[1].value
    got = prog.eval_const(prog.entry.unit, node, prog.entry, env=env)
    assert got is expected if expected is UNKNOWN else got == expected


def test_entry_sequence_is_execution_order_with_drivers_inlined() -> None:
    prog = prog_of(
        {
            "train_gpt.py": """
        def setup(): pass
        def train(): pass
        def score(): pass
        def log(x): pass

        def run():
            setup()
            for _ in range(3):
                train()
            log(score())

        def main():
            run()

        if __name__ == "__main__":
            main()
        """
        }
    )
    names = [(e.site.callees[0].qualname if e.site.callees else e.site.ext) for e in prog.entry_sequence()]
    assert names == ["main", "run", "setup", "range", "train", "score", "log"]
    train_ev = next(
        e for e in prog.entry_sequence() if e.site.callees and e.site.callees[0].qualname == "train"
    )
    assert len(train_ev.loops) == 1 and train_ev.depth == 2


def test_dynamic_dispatch_is_exposed() -> None:
    prog = prog_of(
        {
            "train_gpt.py": """
        import sys

        def evaluate(name):
            return getattr(sys.modules[__name__], "eval_" + name)()

        def eval_plain():
            return 1

        if __name__ == "__main__":
            evaluate("plain")
        """
        }
    )
    assert [reason for _, reason, _ in prog.defeated] == [
        "call through getattr with a computed attribute name"
    ]
    # a function only dynamic dispatch could reach is "unknown", never "dead"
    assert prog.func_reach(prog.func("train_gpt.py", "eval_plain")).status == "unknown"


def test_reachability_does_not_depend_on_names() -> None:
    plain = prog_of({"train_gpt.py": GATES})
    renamed = prog_of({"train_gpt.py": rename_identifiers(textwrap.dedent(GATES).lstrip("\n"), seed=7)})

    def statuses(p: Program) -> list[tuple[int, str]]:
        return sorted((f.line, p.func_reach(f).status) for f in p.funcs if f.kind == "function")

    assert statuses(plain) == statuses(renamed)


def test_dispatch_defeated_only_in_dead_code_leaves_other_dead_code_dead() -> None:
    # Regression (seen on a real PR head): asking the reach of a dead function whose only "defeat" sits in
    # another dead function used to recurse without end.
    prog = prog_of(
        {
            "train_gpt.py": """
        import sys

        def never_called(name):
            return getattr(sys.modules[__name__], "run_" + name)()

        def also_unused():
            return 2

        if __name__ == "__main__":
            print("hi")
        """
        }
    )
    assert len(prog.defeated) == 1
    assert prog.func_reach(prog.func("train_gpt.py", "also_unused")).status == "dead"
    assert prog.func_reach(prog.func("train_gpt.py", "never_called")).status == "dead"


# ------------------------------------------------------------------------------------------------ what runs (REACH)
# Fixtures written for these behaviours (fixtures/reach_*); PG301 is the rule that reads reachability through
# `prog.reach`, so its verdict and line show what the shared layer decided.
def _pg301(name: str) -> tuple[object, list[tuple[str, int]]]:
    from auditor.findings import Verdict
    from tests._targets_helpers import gating, run_fixture

    verdict, findings = run_fixture(name, "PG301")
    fails = [(f.primary.path, f.primary.line) for f in gating(findings, Verdict.FAIL) if f.primary]
    return verdict, fails


@pytest.mark.parametrize(
    ("name", "where"),
    [
        ("reach_param_gate_live", ("train_gpt.py", 56)),  # the `use_ngram=True` call runs (NGRAM_CACHE=1)
        ("reach_runtime_state_gate", ("train_gpt.py", 51)),  # `if self.total > 0` is runtime state
        ("reach_export_turns_on", ("train_gpt.py", 56)),  # run.sh: `export NGRAM_BUCKETS=... NGRAM_ENABLED=1`
        ("reach_log_shows_flag_on", ("train_gpt.py", 56)),  # the log prints `ngram_enabled: True`
        ("reach_launched_eval_script", ("eval_ngram.py", 55)),  # the README runs `python eval_ngram.py`
    ],
)
def test_code_that_runs_under_the_documented_configuration_fails(name: str, where: tuple[str, int]) -> None:
    from auditor.findings import Verdict

    verdict, fails = _pg301(name)
    assert verdict is Verdict.FAIL
    assert fails == [where]


@pytest.mark.parametrize(
    "name",
    [
        "reach_param_gate_off_legal",  # only call with use_ngram=True sits under a default-off flag
        "reach_config_flag_off_legal",  # `self.enabled and self.total > 0`, enabled folded over the construction
        "reach_command_turns_off_legal",  # default on, the README command turns it off
        "reach_log_shows_flag_off_legal",  # the log prints the flag as False
        "reach_unlaunched_script_legal",  # a shipped script nothing launches
    ],
)
def test_code_that_does_not_run_passes(name: str) -> None:
    from auditor.findings import Verdict

    verdict, fails = _pg301(name)
    assert verdict is Verdict.PASS and fails == []


PARAM_GATE = {
    "train_gpt.py": """
        import os

        NGRAM = bool(int(os.environ.get("NGRAM", "0")))

        def score(x, use_cache=False):
            if use_cache:
                return lookup(x)          # LOOKUP
            return x

        def lookup(x):
            return x

        def main():
            a = score(1)                  # PLAIN-CALL
            b = score(2, use_cache=False)
            if NGRAM:
                c = score(3, use_cache=True)   # CACHED-CALL
            return a, b

        if __name__ == "__main__":
            main()
    """
}


def _line(prog: Program, marker: str) -> int:
    u = prog.entry_module.unit
    return next(i for i, t in enumerate(u.lines, 1) if marker in t)


def test_parameter_gate_is_decided_per_call_site() -> None:
    prog = prog_of(PARAM_GATE)
    u = prog.entry_module.unit
    site = next(s for s in prog.all_sites() if s.unit is u and s.line == _line(prog, "# LOOKUP"))
    r = prog.site_reach(site)
    assert r.status == "gated_off" and "use_cache" in r.reason
    lookup = prog.funcs_named("lookup")[0]
    assert prog.func_reach(lookup).status == "gated_off"
    # each live call decides the gate with its own arguments; the True call is itself under a default-off flag
    cached = next(s for s in prog.all_sites() if s.unit is u and s.line == _line(prog, "# CACHED-CALL"))
    gate = next(g for g in site.gates if g.params)
    assert prog.gate_in(gate, cached).taken is True
    plain = next(s for s in prog.all_sites() if s.unit is u and s.line == _line(prog, "# PLAIN-CALL"))
    assert prog.gate_in(gate, plain).taken is False


def test_parameter_gate_turned_on_by_a_run_command() -> None:
    files = dict(PARAM_GATE, **{"run.sh": "NGRAM=1 torchrun --nproc_per_node=8 train_gpt.py\n"})
    prog = prog_of(files)
    lookup = prog.funcs_named("lookup")[0]
    r = prog.func_reach(lookup)
    assert r.status == "live" and r.gate is not None and r.gate.by_command


RUNTIME = {
    "train_gpt.py": """
        class Counter:
            def __init__(self):
                self.total = 0
                self.hits = []

            def add(self, n):
                self.total += n
                self.hits.append(n)

            def score(self):
                if self.total > 0:
                    return 1              # TOTAL
                if self.hits:
                    return 2              # HITS
                return 0

        def main():
            seen = []
            c = Counter()
            c.add(3)
            for i in range(3):
                seen.append(i)
            if seen:
                print(c.score())          # SEEN
            if len(seen) > 99:
                pass

        if __name__ == "__main__":
            main()
    """
}


def test_runtime_state_is_not_a_flag() -> None:
    prog = prog_of(RUNTIME)
    u = prog.entry_module.unit
    for marker in ("# TOTAL", "# HITS", "# SEEN"):
        node = next(
            n
            for n in ast.walk(u.tree)
            if getattr(n, "lineno", 0) == _line(prog, marker) and isinstance(n, ast.stmt)
        )
        assert prog.reach(u, node).status == "live", marker
    assert {"total", "hits"} <= prog.runtime_attrs


EXCLUSIVE = {
    "train_gpt.py": """
        import os

        TTT = bool(int(os.environ.get("TTT_ENABLED", "1")))
        CTW = float(os.environ.get("CTW_WEIGHT", "0.1"))

        def adapt():
            return 1                      # UPDATE

        def score_ctw():
            return 2                      # SCORE

        def score_plain():
            return 3                      # PLAIN

        def main():
            if TTT:
                adapt()
            if CTW > 0 and not TTT:
                score_ctw()
            score_plain()

        if __name__ == "__main__":
            main()
    """
}


def test_exclusive_conditions() -> None:
    prog = prog_of(EXCLUSIVE)
    u = prog.entry_module.unit

    def site_in(qual: str):
        f = prog.funcs_named(qual)[0]
        return next(s for s in prog.all_sites() if s.unit is u and s.callees == [f])

    update, ctw, plain = site_in("adapt"), site_in("score_ctw"), site_in("score_plain")
    assert prog.exclusive(update, ctw) and prog.exclusive(ctw, update)
    assert not prog.exclusive(update, plain)
    # nodes inside the called functions: conditions are read up the chain of single callers
    upd_node = next(
        n for n in ast.walk(u.tree) if isinstance(n, ast.Return) and n.lineno == _line(prog, "# UPDATE")
    )
    ctw_node = next(
        n for n in ast.walk(u.tree) if isinstance(n, ast.Return) and n.lineno == _line(prog, "# SCORE")
    )
    assert prog.exclusive((u, upd_node), (u, ctw_node))


def test_run_commands_export_several_variables_and_launch_scripts() -> None:
    from auditor.flow.consts import launch_lines, parse_run_commands

    cmds = parse_run_commands({"run.sh": "export A=1 B=two\ntorchrun --nproc_per_node=8 train_gpt.py\n"})
    assert cmds[0].env_dict == {"A": "1", "B": "two"} and cmds[0].line == 2
    lines = launch_lines({"README.md": "The script eval.py scores.\n```\npython3 eval.py --x 1\n```\n"})
    assert lines == [("README.md", "python3 eval.py --x 1")]


def test_log_evidence_decides_a_flag() -> None:
    files = {
        "train_gpt.py": """
            import os

            class H:
                mix = bool(int(os.environ.get("MIX_ENABLED", "0")))

            def mixed():
                return 1

            def main():
                args = H()
                if args.mix:
                    mixed()

            if __name__ == "__main__":
                main()
        """,
        "train_seed1.log": "mix_enabled: True\nval_bpb: 1.0\n",
    }
    prog = prog_of(files)
    r = prog.func_reach(prog.funcs_named("mixed")[0])
    assert r.status == "live" and r.gate is not None and r.gate.logged is True
    assert "train_seed1.log:1" in r.gate.describe()
