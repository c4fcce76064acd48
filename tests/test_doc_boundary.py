"""PG303 doc-boundary-leak: unmasked previous-position mixing in models whose eval isolates documents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from auditor.findings import Verdict
from auditor.rename import minify, rename_identifiers
from tests._targets_helpers import gating, mirror_has, run_fixture, run_mirror

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

RULE = "PG303"
SMEAR = "        x = torch.cat([x[:, :1], x[:, 1:] + g * x[:, :-1]], dim=1)\n"


def _replace_smear(new: str):
    def tr(src: str) -> str:
        assert SMEAR in src
        return src.replace(SMEAR, new)

    return tr


def test_unmasked_smear_with_doc_isolated_eval_fails() -> None:
    verdict, findings = run_fixture("smear_no_bos_mask", RULE)
    assert verdict is Verdict.FAIL
    first = gating(findings, Verdict.FAIL)[0]
    assert first.primary is not None and first.primary.line == 37
    assert any(loc.line == 57 for loc in first.related)  # where the eval finds BOS positions


def test_bos_masked_smear_passes() -> None:
    verdict, findings = run_fixture("smear_bos_masked_legal", RULE)
    assert verdict is Verdict.PASS
    assert findings and "masked at document boundaries" in findings[0].message


def test_multiplicative_not_bos_mask_passes() -> None:
    new = (
        "        not_bos = (input_ids[:, 1:] != BOS_ID).to(x.dtype).unsqueeze(-1)\n"
        "        x = torch.cat([x[:, :1], x[:, 1:] + g * x[:, :-1] * not_bos], dim=1)\n"
    )
    verdict, _ = run_fixture("smear_no_bos_mask", RULE, _replace_smear(new))
    assert verdict is Verdict.PASS


def test_eval_that_does_not_isolate_documents_passes_with_info() -> None:
    def no_isolation(src: str) -> str:
        return src.replace(
            "(x == BOS_ID).nonzero(as_tuple=True)[0].tolist()", "list(range(0, x.numel(), 512))"
        )

    verdict, findings = run_fixture("smear_no_bos_mask", RULE, no_isolation)
    assert verdict is Verdict.PASS
    assert findings and "no row packs several documents" in findings[0].message


def test_one_document_per_row_from_its_bos_with_zero_pad_passes() -> None:
    """fixtures/smear_zero_pad_per_doc_legal: BOS positions split the stream, but every document is its own row
    from its BOS, so the shift's zero pad is all the BOS position sees (judged by the data, not by the BOS split)."""
    verdict, findings = run_fixture("smear_zero_pad_per_doc_legal", RULE)
    assert verdict is Verdict.PASS
    line = next(
        i
        for i, t in enumerate(
            (FIXTURES / "smear_zero_pad_per_doc_legal" / "train_gpt.py").read_text().splitlines(), 1
        )
        if "x_prev = torch.cat(" in t
    )
    assert [f.primary.line for f in findings] == [line] and not findings[0].gating


def test_same_shift_over_packed_rows_with_segment_attention_fails_on_the_shift_line() -> None:
    """The failing twin: the same zero-pad shift in a model whose rows pack documents with varlen attention over
    BOS positions (fixtures/smear_no_bos_mask with its smear replaced by the shift)."""
    new = (
        "        x_prev = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)\n"
        "        x = x + 0.1 * x_prev\n"
    )
    verdict, findings = run_fixture("smear_no_bos_mask", RULE, _replace_smear(new))
    assert verdict is Verdict.FAIL
    fail = gating(findings, Verdict.FAIL)[0]
    assert fail.primary.line == 37 and "pack several documents" in fail.message


def test_submission_dated_before_the_ruling_is_warn() -> None:
    files_date = json.dumps(
        {"author": "x", "github_id": "x", "name": "old smear", "date": "2026-04-16", "val_bpb": 1.07}
    )
    verdict, findings = run_fixture("smear_no_bos_mask", RULE, extra={"submission.json": files_date})
    assert verdict is Verdict.WARN
    assert "before the BOS-fix ruling" in gating(findings, Verdict.WARN)[0].message


@pytest.mark.parametrize(
    "new",
    [
        "        x_prev = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)\n"
        "        x = x + 0.1 * x_prev\n",
        "        x = x + 0.1 * F.pad(x[:, :-1], (0, 0, 1, 0))\n",
        "        x = x + 0.1 * torch.roll(x, 1, dims=1)\n",
    ],
    ids=["cat-shift", "pad-shift", "roll"],
)
def test_other_shift_forms_fail(new: str) -> None:
    verdict, findings = run_fixture("smear_no_bos_mask", RULE, _replace_smear(new))
    assert verdict is Verdict.FAIL, [f.message for f in findings]
    assert gating(findings, Verdict.FAIL)[0].primary.line == 37


def test_bigram_hash_with_doc_isolated_eval_is_warn() -> None:
    new = (
        "        ids = torch.bitwise_xor(36313 * input_ids[:, 1:], 27191 * input_ids[:, :-1]) % 4095\n"
        "        x = x + self.tok_emb(F.pad(ids, (1, 0), value=4095))\n"
    )
    verdict, findings = run_fixture("smear_no_bos_mask", RULE, _replace_smear(new))
    assert verdict is Verdict.WARN, [f.message for f in findings]
    assert "bigram hash" in gating(findings, Verdict.WARN)[0].message


def test_smear_in_uncalled_method_is_info() -> None:
    def dead(src: str) -> str:
        src = src.replace(
            "def forward_logits(self, input_ids, cu_seqlens, max_seqlen):",
            "def forward_unused(self, input_ids, cu_seqlens, max_seqlen):",
        )
        return src.replace(
            "model.forward_logits(x[None], cu_seqlens, h.eval_seq_len)", "model.head(model.tok_emb(x[None]))"
        )

    verdict, findings = run_fixture("smear_no_bos_mask", RULE, dead)
    assert verdict is Verdict.PASS, [f.message for f in findings]
    assert findings and not any(f.gating for f in findings)
    # the segment attention is in the dead method too: no packed rows run, and the smear itself does not run
    assert "Not run by default" in findings[0].message or "no row packs" in findings[0].message


def _flag_gated(default: str):
    def tr(src: str) -> str:
        src = src.replace(
            '    eval_seq_len = int(os.environ.get("EVAL_SEQ_LEN", 2048))\n',
            '    eval_seq_len = int(os.environ.get("EVAL_SEQ_LEN", 2048))\n'
            f'    smear_enabled = bool(int(os.environ.get("SMEAR_ENABLED", "{default}")))\n',
        )
        src = src.replace(
            "        self.smear_window = h.smear_window\n",
            "        self.smear_window = h.smear_window\n        self.smear_on = h.smear_enabled\n",
        )
        return src.replace(SMEAR, "        if self.smear_on:\n    " + SMEAR)

    return tr


def test_smear_behind_config_flag_off_by_default_is_info() -> None:
    verdict, findings = run_fixture("smear_no_bos_mask", RULE, _flag_gated("0"))
    assert verdict is Verdict.PASS, [f.message for f in findings]
    assert findings and not any(f.gating for f in findings)


def test_smear_flag_turned_on_by_run_command_fails() -> None:
    readme = "# run\n\n```\nSMEAR_ENABLED=1 torchrun --standalone --nproc_per_node=8 train_gpt.py\n```\n"
    verdict, findings = run_fixture("smear_no_bos_mask", RULE, _flag_gated("0"), extra={"README.md": readme})
    assert verdict is Verdict.FAIL, [f.message for f in findings]


@pytest.mark.parametrize(
    "transform", [lambda s: rename_identifiers(s, seed=7), minify], ids=["rename", "minify"]
)
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("smear_no_bos_mask", Verdict.FAIL),
        ("smear_bos_masked_legal", Verdict.PASS),
        ("bigram_hash_input_side_legal", Verdict.PASS),
    ],
)
def test_verdict_survives_renaming(name: str, expected: Verdict, transform) -> None:
    verdict, findings = run_fixture(name, RULE, transform)
    assert verdict is expected, [f.message for f in findings]


MERGED = [
    ("records/track_10min_16mb/2026-04-29_SmearGateBOSFix_3Seed_1.06141", Verdict.PASS),
    ("records/track_10min_16mb/2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611", Verdict.PASS),
    # unmasked smear; the reported score (quantized_ttt_lora) holds one document per row from its BOS and only the
    # diagnostic evals / training pack documents: WARN (no leak in the scored pass, the audited construct unmasked)
    ("records/track_10min_16mb/2026-04-16_SmearGate_AttentionOutputGate_ScoreFirstTTT", Verdict.WARN),
    ("records/track_10min_16mb/2026-03-20_Int6_MLP3x_SmearGate_BigramHash_MuonWD_SWA", Verdict.PASS),
    ("records/track_10min_16mb/2026-04-19_SP8192_CaseOps_GatedAttn_QuantGate_Loop45_PhasedTTT", Verdict.PASS),
]


@pytest.mark.parametrize(("path", "expected"), MERGED, ids=[m[0].rsplit("/", 1)[-1][:30] for m in MERGED])
def test_merged_records(path: str, expected: Verdict) -> None:
    if not mirror_has("HEAD"):
        pytest.skip("parameter-golf mirror not available")
    verdict, findings = run_mirror("HEAD", path, RULE)
    assert verdict is expected, [f.message for f in findings]
