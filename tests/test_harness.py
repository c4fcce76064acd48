"""The verifier harness: data validation, artifact rescoring (PG801), reruns under a hard limit (PG802), `verify`.

CPU only and fast: a tiny reference model trained for two steps, rescored on a prefix of the shared sp8192 sample;
the `rerun_tiny` fixture (a numpy bigram model) rerun on a split of the shared sp1024 sample.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from auditor.cli import main as cli_main
from auditor.engine import audit
from auditor.findings import EvidenceLevel, Severity, Verdict
from auditor.harness import data as data_mod
from auditor.harness.data import sha256_file, validate_data
from auditor.harness.rerun import DEFAULT_TIMEOUT_S, attach_reruns, mark_rerun_evidence, rerun
from auditor.harness.rescore import rescore
from auditor.submission import load_path
from pgolf_data.shards import read_shard, write_shard
from rules import get_rule

SEQ = 64
RESCORE_TOKENS = 16 * SEQ + 1  # 1,024 targets
VAL_SPLIT = 8193  # rerun_tiny: the last 8,193 tokens of the sp1024 sample are its validation shard


@pytest.fixture(scope="module")
def data(shared_dir: Path) -> Path:
    return shared_dir / "data"


def _verdict(report, rule_id: str) -> Verdict:
    return next(rv.gating_verdict for rv in report.per_rule() if rv.rule_id == rule_id)


def _findings(report, rule_id: str):
    return [f for f in report.findings if f.rule_id == rule_id]


# ------------------------------------------------------------------------------------------------ data
def test_shared_sample_is_valid_but_reported_non_canonical(data: Path) -> None:
    rep = validate_data(str(data / "derived_docs_sample200_sp8192.bin"), data / "fineweb_8192_bpe.model")
    assert rep.ok and not rep.canonical
    assert rep.val_tokens == 420_548 and rep.tokenizer is not None and rep.tokenizer.family == "sp8192"
    assert rep.val[0].sha256 == sha256_file(data / "derived_docs_sample200_sp8192.bin")
    assert rep.summary().startswith("NON-CANONICAL validation data")
    assert "not the official validation shard" in rep.summary() and "c4fd1d37" in rep.summary()


def test_official_hash_makes_data_canonical(
    tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = np.asarray(read_shard(data / "derived_docs_sample200_sp8192.bin"))[:5000]
    shard = tmp_path / "fineweb_val_000000.bin"
    write_shard(shard, tokens)
    monkeypatch.setattr(
        data_mod, "OFFICIAL_VAL_SHARDS", (("sp8192", "fineweb_val_000000.bin", sha256_file(shard), 5000),)
    )
    rep = validate_data(str(shard), data / "fineweb_8192_bpe.model")
    assert rep.canonical and rep.family == "sp8192"
    assert rep.summary().startswith("canonical sp8192 validation data")
    wrong_tok = validate_data(str(shard), data / "fineweb_1024_bpe.model")
    assert not wrong_tok.canonical  # token ids beyond the sp1024 vocab: the pair is refused outright
    assert any("outside the tokenizer's vocabulary" in p for p in wrong_tok.problems)
    write_shard(shard, np.concatenate([tokens[:-1], [7]]))  # one token changed: no longer the official file
    assert not validate_data(str(shard), data / "fineweb_8192_bpe.model").canonical


def test_bad_data_is_reported_not_raised(tmp_path: Path, data: Path) -> None:
    bad = tmp_path / "fineweb_val_000000.bin"
    bad.write_bytes((data / "derived_docs_sample200_sp1024.bin").read_bytes()[:5000])  # truncated
    rep = validate_data(str(bad), data / "fineweb_1024_bpe.model")
    assert not rep.ok and "does not match the header" in rep.problems[0]
    assert "no validation shard matches" in validate_data(str(tmp_path / "nope_*.bin"), None).problems[0]
    overlap = validate_data(
        str(data / "derived_docs_sample200_sp1024.bin"),
        data / "fineweb_1024_bpe.model",
        train=str(data / "derived_docs_sample200_sp1024.bin"),
    )
    assert any("share 1 file" in p for p in overlap.problems)
    side = tmp_path / "fineweb_val_bytes_000000.bin"
    write_shard(side, np.ones(10, dtype=np.uint16))
    short = validate_data(str(data / "derived_docs_sample200_sp1024.bin"), sidecar=str(side))
    assert any("byte sidecar has 10 entries" in p for p in short.problems)


# ------------------------------------------------------------------------------------------------ rescore
@pytest.fixture(scope="module")
def artifact(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from reference_model.config import ModelConfig
    from reference_model.loader import TokenLoader
    from reference_model.quant import QuantConfig, quantize_model
    from reference_model.train import TrainConfig, train

    saved = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: a second thread only adds contention on a shared machine
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("artifact")
    tokens = np.asarray(read_shard(data / "derived_docs_sample200_sp8192.bin"), dtype=np.int64)
    write_shard(tmp / "fineweb_train_000000.bin", tokens[RESCORE_TOKENS:])  # disjoint from the scored prefix
    cfg = ModelConfig.tiny()
    tcfg = TrainConfig(
        train_files=str(tmp / "fineweb_train_*.bin"),
        train_batch_tokens=4 * SEQ,
        train_seq_len=SEQ,
        iterations=2,
        warmup_steps=0,
        max_wallclock_seconds=0,
        val_loss_every=0,
        train_log_every=1,
        grad_accum_steps=1,
        compile=False,
    )
    model = train(cfg, tcfg, device="cpu", loader=TokenLoader(tcfg.train_files, SEQ, seed=1)).model
    model.set_recurrence(True)
    calib = TokenLoader(tcfg.train_files, SEQ, seed=2)
    path = tmp / "final_model_seed42.ptz"
    quantize_model(
        model,
        [calib.next_step(4 * SEQ, 1)[0][0]],
        path,
        config=cfg,
        qcfg=QuantConfig(min_numel=1024),
        forward=model.logits,
    )
    yield path
    torch.set_num_threads(saved)


def _rescore(artifact: Path, data: Path, mode: str = "ttt", **kw):
    return rescore(
        artifact,
        str(data / "derived_docs_sample200_sp8192.bin"),
        data / "fineweb_8192_bpe.model",
        mode=mode,
        seq_len=SEQ,
        stride=16,
        batch_seqs=16,
        chunk_tokens=256,
        ttt_epochs=1,
        max_tokens=RESCORE_TOKENS,
        device="cpu",
        **kw,
    )


@pytest.fixture(scope="module")
def rescored(artifact: Path, data: Path):
    return {mode: _rescore(artifact, data, mode) for mode in ("sliding", "ttt")}


def test_rescore_uses_canonical_byte_accounting(rescored, data: Path) -> None:
    from pgolf_data.bytes import build_luts, canonical_denominator, load_sentencepiece

    tokens = np.asarray(read_shard(data / "derived_docs_sample200_sp8192.bin"))[:RESCORE_TOKENS]
    denom = canonical_denominator(
        tokens, build_luts(load_sentencepiece(data / "fineweb_8192_bpe.model")), seq_len=SEQ
    )
    for res in rescored.values():
        assert res.ok, res.error
        assert res.seed == 42  # from the artifact's name
        assert (res.tokens, res.bytes, res.denominator) == (
            denom.targets,
            denom.denominator,
            denom.denominator,
        )
        assert not res.canonical and "only the first 1,025 tokens" in res.data_summary
        assert 0 < res.val_bpb < 10
    assert rescored["ttt"].val_bpb != rescored["sliding"].val_bpb  # TTT adapted between chunks


def _claiming_submission(tmp_path: Path, bpb: float, val_tokens: int, label: str = "quantized_ttt") -> Path:
    """A record folder claiming `bpb` for seed 42, with a log line `label` that scored `val_tokens` targets."""
    folder = tmp_path / "claims"
    folder.mkdir(exist_ok=True)
    (folder / "train_gpt.py").write_text("print('train')\n")
    (folder / "submission.json").write_text(
        json.dumps(
            {
                "name": "t",
                "author": "a",
                "val_bpb": round(bpb, 8),
                "seed_results": {"42": {"val_bpb": round(bpb, 8)}},
            },
            indent=2,
        )
    )
    (folder / "train_seed42.log").write_text(
        f"seed:42\nval_tokens: {val_tokens}\n{label} val_loss:{bpb * 2.5:.8f} val_bpb:{bpb:.8f} "
        "eval_time:1000ms\n"
    )
    return folder


def _audit_with(folder: Path, rule_ids: list[str], harness: dict):
    sub = load_path(folder)
    sub.options.harness = harness
    rules = [get_rule(r) for r in rule_ids]
    report = audit(sub, rules)
    mark_rerun_evidence(report, sub)
    return report


def test_pg801_pass_when_the_claim_is_the_rescored_value(rescored, tmp_path: Path) -> None:
    res = rescored["ttt"]
    report = _audit_with(
        _claiming_submission(tmp_path, res.val_bpb, res.tokens), ["PG801"], {"rescore": [res.to_dict()]}
    )
    assert _verdict(report, "PG801") is Verdict.PASS
    (f,) = _findings(report, "PG801")
    assert f.evidence_level is EvidenceLevel.RESCORE and "reproduced" in f.message
    assert f.data["rescored_val_bpb"] == res.val_bpb and abs(f.data["delta"]) < 1e-8


def test_pg801_fail_when_the_claim_is_better_than_the_artifact(rescored, tmp_path: Path) -> None:
    res = rescored["ttt"]
    report = _audit_with(
        _claiming_submission(tmp_path, res.val_bpb - 0.01, res.tokens),
        ["PG801"],
        {"rescore": [res.to_dict()]},
    )
    assert _verdict(report, "PG801") is Verdict.FAIL
    (f,) = _findings(report, "PG801")
    assert f.primary is not None and f.primary.path == "submission.json" and f.primary.line == 7
    assert f"{res.val_bpb:.8f}" in f.message and "delta +0.01000000" in f.message


def test_pg801_is_informative_on_non_canonical_data_of_another_stream(rescored, tmp_path: Path) -> None:
    res = rescored["ttt"]
    report = _audit_with(
        _claiming_submission(tmp_path, res.val_bpb - 0.01, 40_540_160),
        ["PG801"],
        {"rescore": [res.to_dict()]},
    )
    (f,) = _findings(report, "PG801")
    assert f.severity is Severity.INFO and "Informative only" in f.message
    assert _verdict(report, "PG801") is Verdict.PASS


def test_pg801_skips_in_a_static_audit_and_warns_on_a_bad_artifact(
    artifact: Path, data: Path, tmp_path: Path
) -> None:
    folder = _claiming_submission(tmp_path, 1.0, 1024)
    assert _verdict(audit(load_path(folder), [get_rule("PG801")]), "PG801") is Verdict.SKIP
    junk = tmp_path / "junk.ptz"
    junk.write_bytes(b"not an artifact")
    bad = _rescore(junk, data)
    assert not bad.ok and "not a reference-format artifact" in (bad.error or "")
    report = _audit_with(folder, ["PG801"], {"rescore": [bad.to_dict()]})
    assert _verdict(report, "PG801") is Verdict.WARN
    assert _rescore(artifact, data, mode="bogus").error.startswith("unknown eval mode")


# ------------------------------------------------------------------------------------------------ rerun
@pytest.fixture(scope="module")
def rerun_data(data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("rerun_data")
    tokens = np.asarray(read_shard(data / "derived_docs_sample200_sp1024.bin"))
    write_shard(tmp / "train_part_000.bin", tokens[:-VAL_SPLIT])  # any names: the harness stages them
    write_shard(tmp / "val_part_000.bin", tokens[-VAL_SPLIT:])
    return {
        "train": str(tmp / "train_part_*.bin"),
        "val": str(tmp / "val_part_*.bin"),
        "tokenizer": str(data / "fineweb_1024_bpe.model"),
    }


def _rerun_audit(folder: Path, rerun_data: dict[str, str], tmp_path: Path, **kw):
    res = rerun(folder, seed=42, scratch=tmp_path / "scratch", data_summary="test split", **rerun_data, **kw)
    sub = load_path(folder)
    attach_reruns(sub, [res])
    report = audit(sub, [get_rule(r) for r in ("PG802", "PG621", "PG702")])
    mark_rerun_evidence(report, sub)
    return res, report


def test_rerun_reproduces_consistent_claims(fixtures_dir: Path, rerun_data, tmp_path: Path) -> None:
    folder = fixtures_dir / "rerun_tiny"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    res, report = _rerun_audit(folder, rerun_data, tmp_path)
    assert res.finished and res.returncode == 0 and not res.timed_out
    assert res.env["SEED"] == "42" and res.env["RUN_ID"] == "rerun_seed42"
    log = Path(res.log_path).read_text()
    assert "stopping_early: wallclock_cap" in log and "final_int8_zlib_roundtrip_exact" in log
    assert _verdict(report, "PG802") is Verdict.PASS
    (f,) = _findings(report, "PG802")
    assert f.evidence_level is EvidenceLevel.RERUN and f.data["delta"] == 0.0
    # sandboxed, with the wall clock measured outside the run next to the log's own times
    assert (
        res.isolation
        and "sandbox: " in f.message
        and "measured outside: launch to end of training" in f.message
    )
    assert res.phases["launch_to_train_end_s"] is not None and res.phases["eval_s"] is not None
    assert (
        Path(res.env["DATA_PATH"]).is_dir() and "HOME" not in res.env
    )  # HOME is the sandbox's, not recorded
    assert f.data["rerun_bytes"] == f.data["claimed_bytes"] == 116_148
    assert f.primary is not None and f.primary.path == "rerun_seed42.log"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # ran in a scratch copy
    # findings of the log rules on the rerun log are rerun evidence; on this non-canonical split they never gate
    on_rerun = [g for g in report.findings if g.primary is not None and g.primary.path == "rerun_seed42.log"]
    assert on_rerun and all(g.evidence_level is EvidenceLevel.RERUN for g in on_rerun)
    assert all(not g.gating for g in on_rerun if g.verdict in (Verdict.WARN, Verdict.FAIL))


def test_rerun_fails_inflated_claims(fixtures_dir: Path, rerun_data, tmp_path: Path) -> None:
    folder = tmp_path / "rerun_tiny"
    shutil.copytree(fixtures_dir / "rerun_tiny", folder)
    claims = json.loads((folder / "submission.json").read_text())
    claims["seed_results"]["42"]["val_bpb"] = claims["val_bpb"] = 2.5
    (folder / "submission.json").write_text(json.dumps(claims, indent=2))
    _, report = _rerun_audit(folder, rerun_data, tmp_path)
    assert _verdict(report, "PG802") is Verdict.FAIL
    (f,) = _findings(report, "PG802")
    assert "vs claimed 2.5" in f.message and f.data["delta"] > 0.1
    assert f.related and f.related[0].path == "submission.json"


def test_rerun_killed_at_the_hard_limit(tmp_path: Path, rerun_data) -> None:
    folder = tmp_path / "sleepy"
    folder.mkdir()
    (folder / "train_gpt.py").write_text("import time\nprint('seed:42', flush=True)\ntime.sleep(120)\n")
    (folder / "submission.json").write_text('{"name": "s", "val_bpb": 1.0}')
    res, report = _rerun_audit(folder, rerun_data, tmp_path, timeout_s=1.0)
    assert res.timed_out and not res.finished and res.wall_s < 15
    assert "killed after 1s (hard limit)" in Path(res.log_path).read_text()
    assert (
        _verdict(report, "PG802") is Verdict.WARN
    )  # a CPU machine: the limit is not the challenge's hardware
    (f,) = _findings(report, "PG802")
    assert "run did not finish" in f.message and "hard limit" in f.message


def test_rerun_that_crashes_is_a_warning(tmp_path: Path, rerun_data) -> None:
    folder = tmp_path / "crashy"
    folder.mkdir()
    (folder / "train_gpt.py").write_text("raise SystemExit(3)\n")
    res, report = _rerun_audit(folder, rerun_data, tmp_path)
    assert res.returncode == 3 and not res.finished
    (f,) = _findings(report, "PG802")
    assert f.verdict is Verdict.WARN and "exit code 3" in f.message


def test_default_limit_is_train_plus_eval_plus_margin() -> None:
    assert DEFAULT_TIMEOUT_S == 600 + 600 + 600


# ------------------------------------------------------------------------------------------------ CLI
def test_verify_cli_rerun_json(
    fixtures_dir: Path, rerun_data, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import jsonschema

    rc = cli_main(
        [
            "verify",
            str(fixtures_dir / "rerun_tiny"),
            "--val",
            rerun_data["val"],
            "--train",
            rerun_data["train"],
            "--tokenizer",
            rerun_data["tokenizer"],
            "--rerun",
            "--seed",
            "42",
            "--scratch",
            str(tmp_path / "s"),
            "--format",
            "json",
        ]
    )
    out = capsys.readouterr()
    assert rc == 0, out.err
    report = json.loads(out.out)
    schema = json.loads(
        (Path(__file__).resolve().parents[1] / "auditor/schemas/report.schema.json").read_text()
    )
    jsonschema.validate(report, schema)
    assert next(r for r in report["rules"] if r["id"] == "PG802")["verdict"] == "PASS"
    assert report["tables"]["harness"]["data"]["canonical"] is False
    assert "NON-CANONICAL" in out.err


def test_verify_cli_rescore_and_usage_errors(
    artifact: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _claiming_submission(tmp_path, 1.0, RESCORE_TOKENS - 1, label="quantized")  # a plain-eval claim
    common = [
        str(folder),
        "--val",
        str(data / "derived_docs_sample200_sp8192.bin"),
        "--tokenizer",
        str(data / "fineweb_8192_bpe.model"),
    ]
    rc = cli_main(
        [
            "verify",
            *common,
            "--artifact",
            str(artifact),
            "--mode",
            "plain",
            "--seq-len",
            str(SEQ),
            "--max-tokens",
            str(RESCORE_TOKENS),
            "--device",
            "cpu",
            "--rules",
            "PG801",
            "--format",
            "json",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    (f,) = [x for x in report["findings"] if x["rule_id"] == "PG801"]
    assert f["evidence_level"] == "rescore"
    # the claim (1.0) is far better than a two-step model: a FAIL on the same stream, exit code 1
    assert rc == 1 and f["verdict"] == "FAIL"
    assert cli_main(["verify", *common]) == 2
    assert "nothing to do" in capsys.readouterr().err
    assert cli_main(["verify", *common, "--rerun"]) == 2  # no --train
    assert (
        cli_main(
            [
                "verify",
                str(folder),
                "--val",
                str(tmp_path / "none*.bin"),
                "--tokenizer",
                str(data / "fineweb_8192_bpe.model"),
                "--artifact",
                str(artifact),
            ]
        )
        == 2
    )
    assert "data failed validation" in capsys.readouterr().err


@pytest.mark.gpu
def test_rescore_on_cuda_matches_cpu_within_tolerance(artifact: Path, data: Path, rescored) -> None:
    from auditor.constants import RESCORE_BPB_TOLERANCE

    gpu = rescore(
        artifact,
        str(data / "derived_docs_sample200_sp8192.bin"),
        data / "fineweb_8192_bpe.model",
        mode="sliding",
        seq_len=SEQ,
        stride=16,
        batch_seqs=16,
        max_tokens=RESCORE_TOKENS,
        device="cuda",
    )
    assert gpu.ok and abs(gpu.val_bpb - rescored["sliding"].val_bpb) <= RESCORE_BPB_TOLERANCE


def test_launch_and_data_layout(tmp_path: Path, rerun_data) -> None:
    from auditor.harness.rerun import launch_command, stage_data, stage_data_dir

    assert launch_command("train_gpt.py", 1, "py") == ["py", "train_gpt.py"]
    assert launch_command("train_gpt.py", 8, "py") == [
        "py",
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=8",
        "train_gpt.py",
    ]
    staged = stage_data(tmp_path / "d", rerun_data["train"], rerun_data["val"], None)
    assert sorted(p.name for p in staged.iterdir()) == ["fineweb_train_000000.bin", "fineweb_val_000000.bin"]
    root = stage_data_dir(tmp_path / "root", staged, rerun_data["tokenizer"], 1024)
    assert (root / "datasets" / "fineweb10B_sp1024" / "fineweb_val_000000.bin").is_file()
    assert (root / "tokenizers" / "fineweb_1024_bpe.model").is_file()
