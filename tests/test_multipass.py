"""PG203 multipass-rescoring: two-pass caches and min-over-passes fail; online state and per-window buffers pass."""

from __future__ import annotations

import pytest
from test_order_support import audit_fixture, audit_source, fixture_source, marker_line, outcome

from auditor.findings import Severity, Verdict
from auditor.rename import minify, rename_identifiers

RULE = "PG203"


def test_two_pass_cache_fails_at_the_scoring_line() -> None:
    verdict, finding = outcome(audit_fixture("multipass_rescore", RULE), RULE)
    assert verdict is Verdict.FAIL and finding is not None and finding.primary is not None
    assert finding.primary.line == marker_line("multipass_rescore", "score")
    assert finding.data["write_line"] == marker_line("multipass_rescore", "write")


def test_online_cache_passes() -> None:
    # the same table, updated after each chunk is scored, inside the scoring loop: one pass
    src = fixture_source("multipass_rescore")
    src = src.replace(
        "    for i in range(1, tokens.numel()):\n        table[(tokens[i - 1] * 1009 + tokens[i]) % buckets] += 1"
        "  # MARK:write\n",
        "",
    )
    src = src.replace(
        "            count += seq_len\n",
        "            count += seq_len\n            table[(x * 1009 + y) % buckets] += 1\n",
    )
    assert outcome(audit_source(src, RULE), RULE)[0] is Verdict.PASS


@pytest.mark.parametrize(
    "name",
    [
        "ttt_score_first_legal",
        "slot_standard",
        "ttt_phased_legal",
        "ttt_lora_per_doc_legal",
        "ttt_train_all_then_score",
    ],
)
def test_single_pass_fixtures_pass(name: str) -> None:
    # per-window input buffers (x_batch[i] = chunk), doc boundaries and sliding windows are not rescoring state
    assert outcome(audit_fixture(name, RULE), RULE)[0] is Verdict.PASS


_MIN_IN_LOOP = """\
import os, torch
import torch.nn.functional as F

def score(model, tokens, width):
    total = torch.zeros(())
    with torch.inference_mode():
        for i in range(0, tokens.numel() - width, width):
            total += F.cross_entropy(model(tokens[i:i + width]), tokens[i + 1:i + width + 1], reduction="sum")
    return total

def main():
    tokens = torch.load(os.path.join("data", "fineweb_val_*.bin"))
    model = torch.nn.Linear(8, 8)
    results = []
    for width in (128, 256, 512):
        results.append(score(model, tokens, width))
    best = min(results)
    print(best)

main()
"""


def test_min_over_passes_in_a_loop_fails() -> None:
    verdict, finding = outcome(audit_source(_MIN_IN_LOOP, RULE), RULE)
    assert verdict is Verdict.FAIL and finding is not None and finding.primary is not None
    assert finding.primary.line == 17


def test_single_result_min_is_fine() -> None:
    src = _MIN_IN_LOOP.replace(
        "    for width in (128, 256, 512):\n        results.append(score(model, tokens, width))\n",
        "    results.append(score(model, tokens, 256))\n",
    )
    assert outcome(audit_source(src, RULE), RULE)[0] is Verdict.PASS


@pytest.mark.parametrize("transform", [rename_identifiers, minify], ids=["renamed", "minified"])
def test_verdict_survives_renaming(transform) -> None:
    assert (
        outcome(audit_source(transform(fixture_source("multipass_rescore")), RULE), RULE)[0] is Verdict.FAIL
    )


_CACHE_PASSES = """\
import os, torch

class Table:
    def __init__(self, size):
        self.counts = torch.ones(size)

    def lookup(self, keys):
        return self.counts[keys] / self.counts.sum()

    def add(self, keys):
        self.counts.index_add_(0, keys, torch.ones_like(keys, dtype=torch.float))

def score_chunks(model, tokens, table, chunk, update):
    total = torch.zeros(())
    with torch.no_grad():
        for i in range(0, tokens.numel() - chunk - 1, chunk):
            x, y = tokens[i:i + chunk], tokens[i + 1:i + chunk + 1]
            keys = (x * 1009 + y) % 4096
            p = 0.9 * torch.softmax(model(x), -1).gather(1, y[:, None]).squeeze(1) + 0.1 * table.lookup(keys)
            total += -torch.log(p).sum()
            if update:
                table.add(keys)
    return total

def main():
    tokens = torch.load(os.path.join("data", "fineweb_val_*.bin"))
    model = torch.nn.Linear(8, 8)
    table = Table(4096)
    first = score_chunks(model, tokens, table, 512, True)
    {SECOND}

main()
"""


def test_second_call_rescoring_with_the_first_calls_cache_fails() -> None:
    src = _CACHE_PASSES.replace("{SECOND}", "print(score_chunks(model, tokens, table, 512, False))")
    verdict, finding = outcome(audit_source(src, RULE), RULE)
    assert verdict is Verdict.FAIL and finding is not None and finding.primary is not None
    assert finding.primary.line == 30  # the second scoring call
    assert finding.data["state"] == "table" and finding.data["first_pass_line"] == 29


def test_single_online_cache_pass_is_fine() -> None:
    src = _CACHE_PASSES.replace("{SECOND}", "print(first)")
    assert outcome(audit_source(src, RULE), RULE)[0] is Verdict.PASS


_LOOP_PASSES = """\
import os, torch

def score_chunk(model, x, y, counts):
    total = torch.zeros(())
    with torch.no_grad():
        p = 0.9 * torch.softmax(model(x), -1).gather(1, y[:, None]).squeeze(1) + 0.1 * counts[y] / counts.sum()
        total += -torch.log(p).sum()
    return total

def main():
    tokens = torch.load(os.path.join("data", "fineweb_val_*.bin"))
    model = torch.nn.Linear(8, 8)
    counts = torch.ones(1024)
    losses = {}
    for ci in range(0, tokens.numel() - 513, 512):
        x, y = tokens[ci:ci + 512], tokens[ci + 1:ci + 513]
        losses[ci] = score_chunk(model, x, y, counts)
        counts.index_add_(0, y, torch.ones(512))
    for ci in range(0, 4 * 512, 512):
        x, y = tokens[ci:ci + 512], tokens[ci + 1:ci + 513]
        losses[ci] = score_chunk(model, x, y, counts)
    print(sum(losses.values()))

main()
"""


def test_rescoring_early_chunks_with_the_warm_cache_fails() -> None:
    # pass 1 scores each chunk and then adds it to the counts (fine on its own); pass 2 rescores the first
    # chunks with the counts of the whole split (the PR #846 "two-pass" shape)
    verdict, finding = outcome(audit_source(_LOOP_PASSES, RULE), RULE)
    assert verdict is Verdict.FAIL and finding is not None and finding.primary is not None
    assert finding.primary.line == 21 and finding.data["state"] == "counts"


def test_online_loop_alone_passes() -> None:
    src = _LOOP_PASSES.replace(
        "    for ci in range(0, 4 * 512, 512):\n        x, y = tokens[ci:ci + 512], tokens[ci + 1:ci + 513]\n"
        "        losses[ci] = score_chunk(model, x, y, counts)\n",
        "",
    )
    assert outcome(audit_source(src, RULE), RULE)[0] is Verdict.PASS


def test_running_min_over_monitoring_evals_passes() -> None:
    # best = min(best, val) inside the training loop: each eval scores another checkpoint (a diagnostic)
    verdict, _ = outcome(audit_fixture("multipass_min_monitoring_legal", RULE), RULE)
    assert verdict is Verdict.PASS


def test_min_over_final_passes_fails_at_the_min() -> None:
    verdict, finding = outcome(audit_fixture("multipass_min_of_final_passes", RULE), RULE)
    assert verdict is Verdict.FAIL and finding is not None and finding.primary is not None
    assert finding.primary.line == marker_line("multipass_min_of_final_passes", "min")
    assert finding.message == (
        f"min(...) at line {finding.primary.line} selects among the results of several scoring passes over "
        "validation data (min-over-passes)."
    )


def test_rescoring_with_the_model_a_score_first_pass_adapted_fails_at_the_second_pass() -> None:
    name = "multipass_unrestored_ttt"
    verdict, finding = outcome(audit_fixture(name, RULE), RULE)
    assert verdict is Verdict.FAIL and finding is not None and finding.primary is not None
    rescore, update = marker_line(name, "rescore"), marker_line(name, "update")
    assert finding.primary.line == rescore and finding.data["order"] == "rescore-after-adaptation"
    assert finding.message == (
        f"A second scoring pass over validation (line {rescore}) runs with the model that the first pass's "
        f"test-time training adapted (update at line {update}, after scoring at line {finding.data['first_pass_line']}),"
        " so it re-scores tokens the model was already trained on: a full rescore with state built from the split."
    )


def test_adapting_a_copy_then_scoring_the_original_passes() -> None:
    assert outcome(audit_fixture("multipass_ttt_on_copy_legal", RULE), RULE)[0] is Verdict.PASS
    assert outcome(audit_fixture("multipass_ttt_on_copy_legal", "PG201"), "PG201")[0] is Verdict.PASS


def test_cache_bulk_filled_from_the_whole_split_then_rescored_fails_at_the_sum() -> None:
    # the table is filled inside a method of the cache object (np.bincount), the rescoring is a -log p sum
    name = "multipass_bulk_cache_rescore"
    verdict, finding = outcome(audit_fixture(name, RULE), RULE)
    assert verdict is Verdict.FAIL and finding is not None and finding.primary is not None
    score, build = marker_line(name, "score"), marker_line(name, "build")
    assert finding.primary.line == score and finding.data["write_line"] == build
    assert finding.message == (
        f"Validation tokens are scored (line {score}) with state that an earlier pass over the validation split "
        f"wrote (line {build}): the second pass sees statistics of the tokens it scores and of their future."
    )


def test_cache_filled_chunk_by_chunk_after_scoring_passes() -> None:
    assert outcome(audit_fixture("multipass_cache_per_chunk_legal", RULE), RULE)[0] is Verdict.PASS


def test_rescore_after_a_default_off_ttt_pass_is_info() -> None:
    # the adapting pass does not run under the defaults: the final pass scores the trained model once
    src = fixture_source("multipass_unrestored_ttt").replace('"TTT_ENABLED", "1"', '"TTT_ENABLED", "0"')
    report = audit_source(src, RULE)
    assert outcome(report, RULE)[0] is Verdict.PASS
    assert any(f.severity is Severity.INFO and "If enabled" in f.message for f in report.findings)
