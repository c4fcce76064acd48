"""Internals of auditor.flow.order: val sources, loop classification, exclusive branches, events, speed."""

from __future__ import annotations

import ast
import time

from test_order_support import fixture_source

from auditor.facts import build_context
from auditor.flow.order import VAL_PATTERN, analyse_order, is_data_loop
from auditor.testing import submission_from_files


def _loops(src: str) -> list[ast.AST]:
    return [n for n in ast.walk(ast.parse(src)) if isinstance(n, (ast.For, ast.While))]


def test_val_pattern_is_about_shard_files() -> None:
    assert VAL_PATTERN.search("fineweb_val_*.bin")
    assert VAL_PATTERN.search("/data/fineweb_val_000001.bin")
    assert VAL_PATTERN.search("fineweb_val_bytes_*.bin")
    assert not VAL_PATTERN.search("fineweb_train_*.bin")
    assert not VAL_PATTERN.search("final val_loss:{x:.4f}")
    assert not VAL_PATTERN.search("val_bpb")


def test_epoch_loop_is_not_a_data_loop() -> None:
    src = "for epoch in range(E):\n    lr = base * (1 - epoch / E)\n    if epoch == E - 1:\n        log(epoch)\n"
    assert not is_data_loop(_loops(src)[0])


def test_chunk_loop_is_a_data_loop() -> None:
    src = "for ci in range(n):\n    lo = ci * c\n    x = tokens[lo:lo + c]\n"
    assert is_data_loop(_loops(src)[0])


def test_while_queue_loop_is_a_data_loop() -> None:
    src = "while True:\n    q = claim(counter)\n    if q >= n:\n        break\n    batch = batches[q]\n"
    assert is_data_loop(_loops(src)[0])


def _events(src: str) -> list:
    return analyse_order(build_context(submission_from_files({"train_gpt.py": src}))).events


def test_events_follow_execution_order_across_calls() -> None:
    events = [e for e in _events(fixture_source("ttt_train_all_then_score")) if e.is_val]
    kinds = [e.kind for e in events if e.kind in ("score", "update")]
    # roundtrip eval, then the adaptation, then the sliding eval
    assert kinds[0] == "score" and "update" in kinds and kinds[-1] == "score"
    assert kinds.index("update") < len(kinds) - 1
    upd = next(e for e in events if e.kind == "update")
    assert [fi.name for _, fi in upd.chain] == ["<module>", "main"]


def test_training_updates_are_not_validation_updates() -> None:
    events = _events(fixture_source("ttt_score_first_legal"))
    train_updates = [e for e in events if e.kind == "update" and e.func.name == "train"]
    assert train_updates and not any(e.is_val for e in train_updates)


def test_scoring_under_no_grad_called_helper() -> None:
    # an accumulation in a helper that is only ever called inside `with torch.no_grad()` is scoring
    src = (
        "import os, torch\n"
        "def acc(sums, v):\n    sums += v.sum()\n"
        "def main():\n"
        "    t = torch.load(os.path.join('d', 'fineweb_val_*.bin'))\n"
        "    s = torch.zeros(())\n"
        "    with torch.no_grad():\n        acc(s, t.float())\n"
        "main()\n"
    )
    scores = [e for e in _events(src) if e.kind == "score" and e.is_val]
    assert len(scores) == 1 and scores[0].func.name == "acc"


def test_analysis_of_a_2000_line_script_is_fast() -> None:
    base = fixture_source("ttt_phased_legal")
    extra = []
    n = 0
    while len((base + "".join(extra)).splitlines()) < 2000:
        extra.append(
            f"\n\ndef helper_{n}(model, tokens, seq_len):\n"
            "    total = torch.zeros((), dtype=torch.float64)\n"
            "    with torch.no_grad():\n"
            "        for i in range(0, tokens.numel() - seq_len - 1, seq_len):\n"
            "            x = tokens[i:i + seq_len]\n"
            "            y = tokens[i + 1:i + seq_len + 1]\n"
            "            total += F.cross_entropy(model(x), y, reduction='sum').double()\n"
            "    return total\n"
        )
        n += 1
    calls = "".join(f"    helper_{i}(model, val_tokens, args.seq_len)\n" for i in range(n))
    src = base.replace(
        '    print(f"quantized_ttt_phased', calls + '    print(f"quantized_ttt_phased'
    ) + "".join(extra)
    ctx = build_context(submission_from_files({"train_gpt.py": src}))
    t0 = time.perf_counter()
    facts = analyse_order(ctx)
    elapsed = time.perf_counter() - t0
    assert len(facts.scores) >= n
    assert elapsed < 0.5, f"order analysis took {elapsed:.3f}s on {len(src.splitlines())} lines"
