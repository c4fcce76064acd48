"""PG201 ttt-val-before-score: fixtures modelled on real record shapes, exact lines, gates, renaming."""

from __future__ import annotations

import pytest
from test_order_support import audit_fixture, audit_source, fixture_source, marker_line, outcome

from auditor.engine import audit
from auditor.findings import Severity, Verdict
from auditor.rename import minify, rename_identifiers
from auditor.testing import submission_from_files
from rules import get_rule

RULE = "PG201"

CASES = [
    ("ttt_prequant_on_val", Verdict.FAIL),
    ("ttt_train_all_then_score", Verdict.FAIL),
    ("ttt_last_epoch_scored", Verdict.FAIL),
    ("ttt_compile_warmup_val", Verdict.WARN),
    ("ttt_score_first_legal", Verdict.PASS),
    ("ttt_lora_per_doc_legal", Verdict.PASS),
    ("ttt_phased_legal", Verdict.PASS),
    ("ttt_prefix_restore_legal", Verdict.PASS),
    ("ttt_prefix_batch_shared", Verdict.FAIL),
    ("ttt_exclusive_flags_legal", Verdict.PASS),
    ("ttt_then_mixer_eval", Verdict.FAIL),
]


@pytest.mark.parametrize(("name", "expected"), CASES)
def test_fixture_verdict_and_line(name: str, expected: Verdict) -> None:
    verdict, finding = outcome(audit_fixture(name, RULE), RULE)
    assert verdict is expected
    if expected is not Verdict.PASS:
        assert finding is not None and finding.primary is not None
        assert finding.primary.line == marker_line(name, "update")


def test_fail_reports_order_evidence_and_flow() -> None:
    _, finding = outcome(audit_fixture("ttt_prequant_on_val", RULE), RULE)
    assert finding is not None
    assert finding.data["update_line"] == marker_line("ttt_prequant_on_val", "update")
    # the order evidence is the pair of call sites in main(): adapt_weights(...) before eval_val(...)
    assert finding.data["update_site"].startswith("train_gpt.py:")
    assert finding.data["score_site"] == f"train_gpt.py:{marker_line('ttt_prequant_on_val', 'score')}:16"
    messages = [step.message for step in finding.flow]
    assert "fineweb_val_*.bin" in messages[0]  # the flow starts at the validation shards...
    assert "calls main()" in messages  # ...then follows the calls from the entry point to the update
    assert any("backward()" in m for m in messages)
    assert any("optimizer step" in m for m in messages)
    assert messages[-1].startswith("then: scored")


def test_last_epoch_names_the_guard() -> None:
    _, finding = outcome(audit_fixture("ttt_last_epoch_scored", RULE), RULE)
    assert finding is not None and finding.data["order"] == "re-pass"
    assert "epoch == epochs - 1" in finding.message


def test_warmup_on_val_is_warn_with_the_ruling() -> None:
    _, finding = outcome(audit_fixture("ttt_compile_warmup_val", RULE), RULE)
    assert finding is not None and finding.verdict is Verdict.WARN
    assert finding.data.get("throwaway") is True
    assert "PR #1530" in finding.message


def test_warmup_whose_adapter_is_kept_fails() -> None:
    # the same warm-up, but the trained adapter is handed to the scoring: its state feeds the scored predictions
    src = fixture_source("ttt_compile_warmup_val")
    src = src.replace("        del warm, warm_opt\n", "    kept = warm\n")
    src = src.replace("eval_chunks(model, val_tokens, args)", "eval_chunks(model, val_tokens, args, kept)")
    src = src.replace(
        "def eval_chunks(model, tokens, args):\n    adapter = Adapter(64, 1024, args.lora_rank)",
        "def eval_chunks(model, tokens, args, adapter):",
    )
    verdict, _ = outcome(audit_source(src, RULE), RULE)
    assert verdict is Verdict.FAIL


def test_default_off_is_info_not_fail() -> None:
    src = fixture_source("ttt_prequant_on_val").replace('"ADAPT_ENABLED", "1"', '"ADAPT_ENABLED", "0"')
    report = audit_source(src, RULE)
    verdict, _ = outcome(report, RULE)
    assert verdict is Verdict.PASS
    infos = [f for f in report.findings if f.rule_id == RULE and f.severity is Severity.INFO and f.locations]
    assert infos and "If enabled" in infos[0].message and "off by default" in infos[0].message
    assert infos[0].data["gate"] == "args.adapt_enabled"


_SHARED_HELPER = """\
import os, torch
import torch.nn.functional as F

def step(model, opt, x, y):
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()

def score(model, tokens):
    total = torch.zeros(())
    with torch.no_grad():
        for i in range(0, tokens.numel() - 65, 64):
            total += F.cross_entropy(model(tokens[i:i + 64]), tokens[i + 1:i + 65], reduction="sum")
    return total

def main():
    train = torch.load(os.path.join("data", "fineweb_train_*.bin"))
    val = torch.load(os.path.join("data", "fineweb_val_*.bin"))
    model = torch.nn.Linear(8, 8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for i in range(0, 6400, 64):
        step(model, opt, train[i:i + 64], train[i + 1:i + 65])
    {EXTRA}
    print(score(model, val))

main()
"""


def test_shared_helper_is_judged_per_call_site() -> None:
    # the same backward helper trains on train data (fine) and, in the second variant, on val before scoring
    clean = _SHARED_HELPER.replace("{EXTRA}", "pass")
    assert outcome(audit_source(clean, RULE), RULE)[0] is Verdict.PASS
    dirty = _SHARED_HELPER.replace("{EXTRA}", "step(model, opt, val[:64], val[1:65])")
    verdict, finding = outcome(audit_source(dirty, RULE), RULE)
    assert verdict is Verdict.FAIL and finding is not None and finding.primary is not None
    assert finding.primary.line == 7  # the backward inside the shared helper
    hops = [step.location.line for step in finding.flow if step.message == "calls step()"]
    assert hops == [24]  # ...reached through the val call site in main(), not the training one


def test_mutually_exclusive_branches_do_not_order() -> None:
    src = fixture_source("ttt_score_first_legal").replace(
        "    if args.ttt_enabled:\n",
        "    if not args.ttt_enabled:\n        print(eval_val(model, val_tokens, args.seq_len))\n    if args.ttt_enabled:\n",
    )
    assert outcome(audit_source(src, RULE), RULE)[0] is Verdict.PASS


def test_diagnostic_after_legal_ttt_is_flagged() -> None:
    # re-scoring the TTT-adapted model afterwards scores positions it was trained on
    src = fixture_source("ttt_score_first_legal").replace(
        '        print(f"legal_ttt val_loss:{loss:.6f}")\n',
        '        print(f"legal_ttt val_loss:{loss:.6f}")\n        print(eval_val(model, val_tokens, args.seq_len))\n',
    )
    assert outcome(audit_source(src, RULE), RULE)[0] is Verdict.FAIL


@pytest.mark.parametrize(("name", "expected"), CASES)
@pytest.mark.parametrize("transform", [rename_identifiers, minify], ids=["renamed", "minified"])
def test_verdict_survives_renaming(name: str, expected: Verdict, transform) -> None:
    verdict, finding = outcome(audit_source(transform(fixture_source(name)), RULE), RULE)
    assert verdict is expected
    if transform is rename_identifiers and expected is not Verdict.PASS:
        assert finding is not None and finding.primary is not None
        assert finding.primary.line == marker_line(name, "update")  # renaming keeps every line in place


def test_default_off_turned_on_by_the_readme_run_command_fails() -> None:
    from auditor.engine import audit
    from auditor.testing import submission_from_files
    from rules import get_rule

    src = fixture_source("ttt_prequant_on_val").replace('"ADAPT_ENABLED", "1"', '"ADAPT_ENABLED", "0"')
    readme = "# Run\n\n```bash\nADAPT_ENABLED=1 torchrun --standalone --nproc_per_node=8 train_gpt.py\n```\n"
    report = audit(submission_from_files({"train_gpt.py": src, "README.md": readme}), [get_rule(RULE)])
    assert outcome(report, RULE)[0] is Verdict.FAIL


def test_dead_function_is_reported_as_info() -> None:
    # the train-all-then-score shape inside a function nobody calls: info, never a FAIL
    src = (
        fixture_source("ttt_score_first_legal")
        + """

def unused_adapt_then_score(model, tokens, seq_len):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for i in range(0, tokens.numel() - seq_len - 1, seq_len):
        F.cross_entropy(model(tokens[i:i + seq_len]), tokens[i + 1:i + seq_len + 1]).backward()
        opt.step()
    return eval_val(model, tokens, seq_len)
"""
    )
    report = audit_source(src, RULE)
    assert outcome(report, RULE)[0] is Verdict.PASS
    dead = [f for f in report.findings if f.rule_id == RULE and f.data.get("dead")]
    assert len(dead) == 1 and dead[0].severity is Severity.INFO
    assert dead[0].primary is not None and dead[0].primary.line == len(src.splitlines()) - 2


def test_packed_script_is_judged_in_decoded_coordinates() -> None:
    # the same pre-quant script shipped as exec(lzma.decompress(base64.b85decode(...))): the finding points into
    # the decoded layer at the same line
    import base64
    import lzma

    src = fixture_source("ttt_prequant_on_val")
    blob = base64.b85encode(lzma.compress(src.encode())).decode()
    packed = f'import lzma as L,base64 as B\nexec(L.decompress(B.b85decode("{blob}")))\n'
    verdict, finding = outcome(audit_source(packed, RULE), RULE)
    assert verdict is Verdict.FAIL and finding is not None and finding.primary is not None
    assert finding.primary.layer == "train_gpt.py#L1"
    assert finding.primary.line == marker_line("ttt_prequant_on_val", "update")


def test_eval_after_per_call_adapter_ttt_passes() -> None:
    # the adapter lives and dies inside eval_per_doc(): a later plain eval scores the untouched base model
    src = fixture_source("ttt_lora_per_doc_legal").replace(
        '    print(f"quantized_ttt_lora val_loss:{eval_per_doc(model, val_tokens, args):.6f}")\n',
        '    print(f"quantized_ttt_lora val_loss:{eval_per_doc(model, val_tokens, args):.6f}")\n'
        "    print(eval_val(model, val_tokens, args.seq_len))\n",
    )
    assert outcome(audit_source(src, RULE), RULE)[0] is Verdict.PASS


def test_prefix_ttt_on_a_batch_of_windows_fails_with_the_exact_message() -> None:
    name = "ttt_prefix_batch_shared"
    _, finding = outcome(audit_fixture(name, RULE), RULE)
    assert finding is not None and finding.primary is not None
    update, score = marker_line(name, "update"), marker_line(name, "score")
    assert finding.message == (
        f"Update on validation tokens (in eval_prefix_ttt(), line {update}) before those tokens are scored "
        f"(in eval_prefix_ttt(), line {score}): inside the loop the update comes before the scoring of the same "
        "iteration."
    )


def test_prefix_ttt_training_on_the_whole_window_fails() -> None:
    # the same per-window loop, but the update reads the scored suffix too: positions are not disjoint
    src = (
        fixture_source("ttt_prefix_restore_legal")
        .replace("model(x[:, :s])", "model(x)")
        .replace("y[:, :s].reshape(-1)", "y.reshape(-1)")
    )
    verdict, finding = outcome(audit_source(src, RULE), RULE)
    assert verdict is Verdict.FAIL and finding is not None and finding.data["order"] == "same-iteration"


def test_eval_gated_on_ttt_being_off_never_follows_ttt() -> None:
    # `if mix_weight > 0 and not ttt_enabled:` against `if ttt_enabled:` (the shared program's exclusive query)
    name = "ttt_then_mixer_eval"
    _, finding = outcome(audit_fixture(name, RULE), RULE)
    assert finding is not None
    update, score = marker_line(name, "update"), marker_line(name, "score")
    assert finding.message == (
        f"Update on validation tokens (in eval_score_first(), line {update}) before those tokens are scored "
        f"(in eval_mixed(), line {score}): the scoring runs after the update."
    )
    assert outcome(audit_fixture("ttt_exclusive_flags_legal", RULE), RULE)[0] is Verdict.PASS


_PHASED_PREQUANT = """\
import os, torch
import torch.nn.functional as F

class Hyperparameters:
    two_phase = bool(int(os.environ.get("TWO_PHASE", "0")))
    {EPOCHS_LINE}

def run_phase(model, params, opt, tokens, epochs):
    for _ in range(epochs):
        for i in range(0, tokens.numel() - 65, 64):
            opt.zero_grad()
            F.cross_entropy(model(tokens[i:i + 64]), tokens[i + 1:i + 65]).backward()
            opt.step()

def adapt(args, model, tokens):
    if args.two_phase:
        run_phase(model, [], torch.optim.Adam(model.parameters()), tokens, 2)
        run_phase(model, [], torch.optim.Adam(model.parameters()), tokens, 2)
    else:
        run_phase(model, [], torch.optim.AdamW(model.parameters()), tokens, args.epochs)

def score(model, tokens):
    total = torch.zeros(())
    with torch.no_grad():
        for i in range(0, tokens.numel() - 65, 64):
            total += F.cross_entropy(model(tokens[i:i + 64]), tokens[i + 1:i + 65], reduction="sum")
    return total

def main():
    args = Hyperparameters()
    val = torch.load(os.path.join("data", "fineweb_val_*.bin"))
    model = torch.nn.Linear(8, 8)
    {ADAPT}
    torch.save(model.state_dict(), "final_model.pt")
    print(score(model, val))

main()
"""


def test_shared_phase_helper_reached_by_the_live_branch_fails() -> None:
    # the update sits in a helper called from a default-off branch first and from the branch that runs: the live
    # calling context decides (pre-quant TTT over all of val with the default single-phase path)
    src = _PHASED_PREQUANT.replace("{EPOCHS_LINE}", "epochs = 30").replace(
        "{ADAPT}", "adapt(args, model, val)"
    )
    verdict, finding = outcome(audit_source(src, RULE), RULE)
    assert verdict is Verdict.FAIL and finding is not None and finding.primary is not None
    assert finding.primary.line == 12  # the backward inside run_phase()
    hops = [step.location.line for step in finding.flow if step.message == "calls run_phase()"]
    assert hops == [20]  # through the live else-branch call, not the gated two-phase ones


def test_shared_phase_helper_without_a_live_caller_passes() -> None:
    src = _PHASED_PREQUANT.replace("{EPOCHS_LINE}", "epochs = 30").replace("{ADAPT}", "pass")
    assert outcome(audit_source(src, RULE), RULE)[0] is Verdict.PASS


def _gated_last_epoch(log: str | None) -> dict[str, str]:
    # the last-epoch adaptation sits behind a default-off mode switch whose branch prints its own start line
    src = fixture_source("ttt_last_epoch_scored")
    src = (
        src.replace(
            '    ttt_lr = float(os.environ.get("TTT_LR", 2e-3))\n',
            '    ttt_lr = float(os.environ.get("TTT_LR", 2e-3))\n    mode = os.environ.get("EVAL_MODE", "plain")\n',
        )
        .replace(
            '    print(f"ttt val_loss:{adapt_and_score(',
            '    if args.mode == "adapt":\n'
            '        print(f"adapt_eval:starting epochs={args.ttt_epochs} lr={args.ttt_lr}")\n'
            '        print(f"ttt val_loss:{adapt_and_score(',
        )
        .replace(
            'args.ttt_epochs, args.ttt_lr):.6f}")\n',
            'args.ttt_epochs, args.ttt_lr):.6f}")\n'
            "    else:\n"
            '        print(f"plain val_loss:{eval_val(model, val_tokens, args.seq_len):.6f}")\n',
        )
    )
    files = {"train_gpt.py": src}
    if log is not None:
        files["train_seed1.log"] = log
    return files


def test_default_off_branch_whose_own_output_is_in_the_log_fails() -> None:
    rule = get_rule(RULE)
    log = "step:200 train_loss:3.1\nadapt_eval:starting epochs=3 lr=0.002\nttt val_loss:2.901\n"
    report = audit(submission_from_files(_gated_last_epoch(log)), [rule])
    verdict, finding = outcome(report, RULE)
    assert verdict is Verdict.FAIL and finding is not None and finding.primary is not None
    assert (
        finding.primary.line == marker_line("ttt_last_epoch_scored", "update") + 1
    )  # one line inserted above
    # the same code with a log of the plain path: the branch did not run, an info finding only
    plain = "step:200 train_loss:3.1\nplain val_loss:3.000\n"
    assert outcome(audit(submission_from_files(_gated_last_epoch(plain)), [rule]), RULE)[0] is Verdict.PASS
    assert outcome(audit(submission_from_files(_gated_last_epoch(None)), [rule]), RULE)[0] is Verdict.PASS


_LAGGED = """\
import os, torch
import torch.nn.functional as F

def evaluate(model, tokens, n):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    total = torch.zeros(())
    prev_x = None
    prev_y = None
    for ptr in range(0, tokens.numel() - n - 1, n):
        x = tokens[ptr:ptr + n]
        y = tokens[ptr + 1:ptr + n + 1]
        {CURRENT}
        if prev_x is not None:
            opt.zero_grad()
            loss = F.cross_entropy(model(prev_x), prev_y)
            loss.backward()
            opt.step()
        with torch.no_grad():
            total += F.cross_entropy(model(x), y, reduction="sum")
        {CARRY}
    return total

def main():
    val = torch.load(os.path.join("data", "fineweb_val_*.bin"))
    print(evaluate(torch.nn.Linear(8, 8), val, 64))

main()
"""


def test_update_on_the_previous_iterations_scored_batch_passes() -> None:
    # the update comes first in the iteration but trains on the batch the previous iteration scored
    src = _LAGGED.replace("{CURRENT}", "pass").replace("{CARRY}", "prev_x, prev_y = x, y")
    assert outcome(audit_source(src, RULE), RULE)[0] is Verdict.PASS


def test_update_on_the_current_batch_under_a_carried_name_fails() -> None:
    # the same names, but pointed at the current batch before the update: it trains on what it then scores
    src = _LAGGED.replace("{CURRENT}", "prev_x, prev_y = x, y").replace("{CARRY}", "pass")
    verdict, finding = outcome(audit_source(src, RULE), RULE)
    assert verdict is Verdict.FAIL and finding is not None and finding.primary is not None
    assert finding.primary.line == 16  # loss.backward()


_ALTERNATIVE_PASSES = """\
import copy, os, torch
import torch.nn.functional as F

def score_first(model, tokens, n, lr):
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    total = torch.zeros(())
    for bs in range(0, tokens.numel() - n - 1, n):
        x, y = tokens[bs:bs + n], tokens[bs + 1:bs + n + 1]
        with torch.no_grad():
            total += F.cross_entropy(model(x), y, reduction="sum")
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return total

def main():
    val = torch.load(os.path.join("data", "fineweb_val_*.bin"))
    model = torch.nn.Linear(8, 8)
    results = [
        score_first({ARG}, val, 64, 1e-3),
        score_first({ARG}, val, 64, 5e-4),
    ]
    print(results)

main()
"""


def test_alternative_passes_over_deep_copies_do_not_order() -> None:
    # each pass adapts its own deep copy: the first pass's training never reaches the second pass's scoring
    src = _ALTERNATIVE_PASSES.replace("{ARG}", "copy.deepcopy(model)")
    assert outcome(audit_source(src, RULE), RULE)[0] is Verdict.PASS
    # the same passes over the one shared model: the second scores tokens the first trained on
    verdict, finding = outcome(audit_source(_ALTERNATIVE_PASSES.replace("{ARG}", "model"), RULE), RULE)
    assert verdict is Verdict.FAIL and finding is not None and finding.primary is not None
    assert finding.primary.line == 12  # the backward inside score_first()
