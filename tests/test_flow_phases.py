"""Phases of the entry flow: setup, training (loops driving updates over training data), serialization, eval."""

from __future__ import annotations

import textwrap
from pathlib import Path

from auditor.facts import build_context
from auditor.flow.phases import phases_of
from auditor.flow.program import program_of
from auditor.rename import rename_identifiers
from auditor.submission import load_path
from auditor.testing import submission_from_files

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _phase_by_line(ctx) -> dict[int, str]:
    ph = phases_of(ctx)
    return {e.site.line: ph.phase_of(e) for e in ph.events}


def test_clean_baseline_phases() -> None:
    ctx = build_context(load_path(FIXTURES / "clean_baseline"))
    ph = phases_of(ctx)
    lines = ctx.entry_unit.lines
    at = {i: t.strip() for i, t in enumerate(lines, 1)}
    by_line = _phase_by_line(ctx)

    def phase_of(text: str) -> str:
        line = next(i for i, t in at.items() if t.startswith(text))
        return by_line[line]

    assert ph.confident and ph.training_loop is not None
    assert at[ph.training_loop.lineno].startswith("for step in range(")
    assert phase_of("val_tokens = torch.cat(") == "setup"
    assert phase_of("loss.backward()") == "training"
    assert phase_of("val_loss, val_bpb = eval_val(") == "training"  # periodic monitoring inside the loop
    assert phase_of("torch.save(quantize_int8(") == "serialization"
    assert phase_of("f.write(blob)") == "serialization"
    assert phase_of("restored = torch.load(") == "evaluation"
    assert phase_of("q_val_loss, q_val_bpb = eval_val(") == "evaluation"
    prog = program_of(ctx)
    assert prog.func(ctx.entry_unit.name, "eval_val") in ph.eval_funcs
    assert prog.func(ctx.entry_unit.name, "dequantize_int8") in ph.eval_funcs
    assert prog.func(ctx.entry_unit.name, "quantize_int8") not in ph.eval_funcs


PHASED = """
import torch

def load(p):
    return torch.load(p)

def train_model(model, opt):
    data = load("data/fineweb_train_000001.bin")
    for step in range(10):
        model(data[step]).backward()
        opt.step()
    return model

def adapt_and_score(model, opt, val):
    total = 0
    for chunk in val:
        with torch.no_grad():
            total += model(chunk)
        model(chunk).backward()
        opt.step()
    return total

def run(model, opt):
    model = train_model(model, opt)
    torch.save(model.state_dict(), "m.pt")
    model.load_state_dict(torch.load("m.pt"))
    return adapt_and_score(model, opt, load("data/fineweb_val_000000.bin"))

if __name__ == "__main__":
    run(None, None)
"""


def test_test_time_training_after_the_artifact_is_evaluation_not_training() -> None:
    src = textwrap.dedent(PHASED).lstrip("\n")
    for variant in (src, rename_identifiers(src, seed=5)):
        ctx = build_context(submission_from_files({"train_gpt.py": variant}))
        ph = phases_of(ctx)
        by_line = _phase_by_line(ctx)
        # renaming keeps every statement on its line, so the same lines must get the same phases
        assert ph.training_loop is not None and ph.training_loop.lineno == 8
        assert by_line[9] == "training"  # the update inside train_model (a driver called once: inlined)
        assert by_line[24] == "serialization"  # torch.save
        assert by_line[25] == "evaluation"  # reading the artifact back
        assert by_line[26] == "evaluation"  # adapt_and_score(...): test-time training is evaluation
        assert by_line[18] == "evaluation"  # its update
