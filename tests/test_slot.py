"""PG202 slot-optimizes-scored-targets: standard SLOT fails, context-only SLOT and ETLB-like biases warn."""

from __future__ import annotations

import pytest
from test_order_support import audit_fixture, audit_source, fixture_source, marker_line, outcome

from auditor.findings import Severity, Verdict
from auditor.rename import minify, rename_identifiers

RULE = "PG202"
CASES = [
    ("slot_standard", Verdict.FAIL),
    ("slot_causal_context_only", Verdict.WARN),
    ("slot_shared_batch_context", Verdict.FAIL),
]


@pytest.mark.parametrize(("name", "expected"), CASES)
def test_fixture_verdict_and_line(name: str, expected: Verdict) -> None:
    verdict, finding = outcome(audit_fixture(name, RULE), RULE)
    assert verdict is expected
    assert finding is not None and finding.primary is not None
    assert finding.primary.line == marker_line(name, "update")
    assert finding.related[0].line == marker_line(name, "score")


def test_positions_evidence() -> None:
    _, std = outcome(audit_fixture("slot_standard", RULE), RULE)
    _, ctx = outcome(audit_fixture("slot_causal_context_only", RULE), RULE)
    assert std is not None and std.data["positions"] == "same"
    assert ctx is not None and ctx.data["positions"] == "context" and "#1336" in ctx.message


def test_unmasked_optimization_fails() -> None:
    # no mask at all: the delta is fitted on every target of the window, the scored ones included
    src = fixture_source("slot_causal_context_only").replace(
        "((nll * mask).sum() / mask.sum()).backward()", "nll.mean().backward()"
    )
    verdict, finding = outcome(audit_source(src, RULE), RULE)
    assert verdict is Verdict.FAIL and finding is not None and finding.data["positions"] == "all"


def test_default_off_slot_is_info() -> None:
    src = fixture_source("slot_standard").replace('"SLOT_ENABLED", "1"', '"SLOT_ENABLED", "0"')
    report = audit_source(src, RULE)
    assert outcome(report, RULE)[0] is Verdict.PASS
    assert any(f.severity is Severity.INFO and "If enabled" in f.message for f in report.findings)


_ONLINE_BIAS = """\
import os, torch
import torch.nn.functional as F

def main():
    tokens = torch.load(os.path.join("data", "fineweb_val_*.bin"))
    model = torch.nn.Linear(8, 1024)
    bias = torch.zeros(1024, requires_grad=True)
    opt = torch.optim.SGD([bias], lr=0.1)
    total = torch.zeros(())
    for i in range(0, tokens.numel() - 65, 64):
        x, y = tokens[i:i + 64], tokens[i + 1:i + 65]
        with torch.no_grad():
            total += F.cross_entropy(model(x) + bias, y, reduction="sum")
        opt.zero_grad()
        F.cross_entropy(model(x) + bias, y).backward()
        opt.step()
    print(total)

main()
"""


def test_bias_updated_after_scoring_warns() -> None:
    verdict, finding = outcome(audit_source(_ONLINE_BIAS, RULE), RULE)
    assert verdict is Verdict.WARN and finding is not None
    assert finding.data["order"] == "score-then-update" and finding.primary is not None
    assert finding.primary.line == 15


def test_model_weights_are_not_slot() -> None:
    # score-first TTT of module parameters belongs to PG201, not PG202
    assert outcome(audit_fixture("ttt_score_first_legal", RULE), RULE)[0] is Verdict.PASS


@pytest.mark.parametrize(("name", "expected"), CASES)
@pytest.mark.parametrize("transform", [rename_identifiers, minify], ids=["renamed", "minified"])
def test_verdict_survives_renaming(name: str, expected: Verdict, transform) -> None:
    assert outcome(audit_source(transform(fixture_source(name)), RULE), RULE)[0] is expected


def test_delta_shared_by_a_batch_of_windows_is_standard_slot() -> None:
    name = "slot_shared_batch_context"
    _, finding = outcome(audit_fixture(name, RULE), RULE)
    assert finding is not None and finding.data["positions"] == "shared-batch-context"
    update, score = marker_line(name, "update"), marker_line(name, "score")
    assert finding.message == (
        f"An eval-time tensor shared by all windows of a batch is optimized (line {update}) on their context "
        f"positions (fitted on [:s], scored from [s:]), then scores every window of the batch (line {score}, one "
        f"window per iteration of the loop at line {score - 2}). Overlapping windows' context positions are other "
        "windows' scored targets, so the tensor is fitted on targets it then scores: standard SLOT, not "
        "context-only."
    )


def test_per_window_delta_in_a_batch_stays_context_only() -> None:
    # a delta with one row per window ([bsz, 1, V]) fitted on each window's own context: the unresolved variant
    src = fixture_source("slot_shared_batch_context").replace(
        "torch.zeros(1, 1, base.size(-1), requires_grad=True)",
        "torch.zeros(len(batch), 1, base.size(-1), requires_grad=True)",
    )
    verdict, finding = outcome(audit_source(src, RULE), RULE)
    assert verdict is Verdict.WARN and finding is not None and finding.data["positions"] == "context"


def test_logit_bias_fitted_by_hand_on_a_batch_context_fails_at_the_scoring_loss() -> None:
    # ETLB without backward(): softmax-minus-one-hot steps on the context targets of a whole batch of windows
    name = "etlb_shared_batch_bias"
    verdict, finding = outcome(audit_fixture(name, RULE), RULE)
    assert verdict is Verdict.FAIL and finding is not None and finding.primary is not None
    fit, score = marker_line(name, "fit"), marker_line(name, "score")
    assert finding.primary.line == fit
    assert finding.data["positions"] == "shared-batch-context"
    assert finding.message == (
        f"A prediction (line {fit}) is built from state fitted on validation targets without backward() on the "
        "context positions of a whole batch of windows (fitted on [:ctx], scored from [ctx:]), which are the scored "
        f"targets of the batch's overlapping windows, then those targets are scored with it (line {score}): an "
        "eval-time logit bias / SLOT fitted on the answers (C1/C3)."
    )


def test_logit_bias_stepped_after_each_chunk_is_scored_passes() -> None:
    verdict, _ = outcome(audit_fixture("etlb_online_after_score_legal", RULE), RULE)
    assert verdict is Verdict.PASS


def test_temperature_searched_on_validation_loss_fails_at_the_store() -> None:
    name = "temperature_fit_on_val"
    verdict, finding = outcome(audit_fixture(name, RULE), RULE)
    assert verdict is Verdict.FAIL and finding is not None and finding.primary is not None
    fit, score = marker_line(name, "fit"), marker_line(name, "score")
    assert finding.primary.line == fit and finding.data["state"] == "temperature"
    assert finding.message == (
        f"`temperature` is fitted on validation targets without backward() (line {fit}: chosen by comparing the "
        f"loss on them) and then used to predict the validation tokens that are scored (line {score}): the scored "
        "positions' own targets decide their prediction (C1/C3, the ETLB family). If the fitted tokens are never "
        "scored, this is validation data used for tuning instead."
    )


def test_temperature_searched_on_training_tokens_passes() -> None:
    verdict, _ = outcome(audit_fixture("temperature_fit_on_train_legal", RULE), RULE)
    assert verdict is Verdict.PASS


def test_temperature_search_behind_a_default_off_flag_is_info() -> None:
    src = fixture_source("temperature_fit_on_val").replace('"LOGIT_TEMP_CAL", "1"', '"LOGIT_TEMP_CAL", "0"')
    report = audit_source(src, RULE)
    assert outcome(report, RULE)[0] is Verdict.PASS
    assert any(f.severity is Severity.INFO and "If enabled" in f.message for f in report.findings)


def test_temperature_read_through_getattr_fails_too() -> None:
    # `getattr(self, "temperature", 1.0)` in forward reads the fitted attribute like `self.temperature`
    src = fixture_source("temperature_fit_on_val").replace(
        "return self.logits(self.hidden(x)) / self.temperature",
        'return self.logits(self.hidden(x)) / getattr(self, "temperature", 1.0)',
    )
    assert outcome(audit_source(src, RULE), RULE)[0] is Verdict.FAIL


_LAGGED_TEMPERATURE = """\
import os, torch
import torch.nn.functional as F

def evaluate(model, tokens, n):
    tau = torch.ones((), requires_grad=True)
    opt = torch.optim.SGD([tau], lr=0.01)
    total = torch.zeros(())
    prev_x = None
    prev_y = None
    for ptr in range(0, tokens.numel() - n - 1, n):
        x = tokens[ptr:ptr + n]
        y = tokens[ptr + 1:ptr + n + 1]
        {CURRENT}
        if prev_x is not None:
            opt.zero_grad()
            loss = F.cross_entropy(model(prev_x) / tau, prev_y)
            loss.backward()
            opt.step()
        with torch.no_grad():
            total += F.cross_entropy(model(x) / tau, y, reduction="sum")
        {CARRY}
    return total

def main():
    val = torch.load(os.path.join("data", "fineweb_val_*.bin"))
    print(evaluate(torch.nn.Linear(8, 8), val, 64))

main()
"""


def test_temperature_fitted_on_the_previous_scored_batch_is_not_a_fail() -> None:
    src = _LAGGED_TEMPERATURE.replace("{CURRENT}", "pass").replace("{CARRY}", "prev_x, prev_y = x, y")
    assert outcome(audit_source(src, RULE), RULE)[0] is not Verdict.FAIL
    src = _LAGGED_TEMPERATURE.replace("{CURRENT}", "prev_x, prev_y = x, y").replace("{CARRY}", "pass")
    verdict, finding = outcome(audit_source(src, RULE), RULE)
    assert verdict is Verdict.FAIL and finding is not None and finding.primary is not None
    assert finding.primary.line == 17  # loss.backward() on the batch it then scores
