"""The log grammar: one fixture log per era (written by us, modelled on the shapes of merged records)."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditor.evidence.logs import parse_log, score_rank, seed_from_filename
from auditor.facts import build_context
from auditor.testing import submission_from_files

LOGS = Path(__file__).resolve().parents[1] / "fixtures" / "logs"


def parse(name: str):
    return parse_log((LOGS / name).read_text(encoding="utf-8"), name)


def test_baseline_int8_zlib_era() -> None:
    log = parse("baseline_int8_zlib.log")
    assert log.embedded_source is not None and log.embedded_source.marker == "top"
    assert log.embedded_source.start_line == 1 and log.embedded_source.end_line == 18
    # the column-0 score-shaped line inside the embedded source is not a score
    assert all(s.line_no > 18 for s in log.score_lines)
    final = log.final_score
    assert final is not None and final.label == "final_int8_zlib_roundtrip_exact"
    assert (final.val_bpb, final.decimals, final.line_no) == (1.22757312, 8, 50)
    assert final.eval_ms == 1416  # carried over from the 4-decimal twin line
    assert log.seed == 1337 and log.seed_source == "log"
    assert log.world_size == 8 and log.val_tokens == 62021632 and log.train_shards == 80
    assert log.stop is not None and (log.stop.train_ms, log.stop.step, log.stop.line_no) == (
        600030,
        13044,
        42,
    )
    assert log.steps[-1].step_avg_ms == 46.01 and not log.steps[-1].coarse
    assert [g.name for g in log.gpus] == ["NVIDIA H100 80GB HBM3"] * 2
    assert log.torch_version == "2.9.1+cu128"
    art = log.artifact_size
    assert art is not None and (art.bytes, art.codec, art.line_no) == (15863489, "int8+zlib", 48)
    raw_total = [s for s in log.sizes if s.label == "Total submission size" and s.codec is None]
    assert raw_total and not raw_total[0].is_artifact  # raw fp model + code: NOT the artifact
    assert log.model_size is not None and log.model_size.bytes == 15815847
    assert log.code_size("raw").bytes == 47642
    assert [p.label for p in log.periodic_val] == ["step:0/20000", "step:13044/20000"]
    assert not log.truncated


def test_sliding_window_era_picks_sliding_over_roundtrip() -> None:
    log = parse("sliding_window_int6.log")
    final = log.final_score
    assert final is not None and final.label == "final_int6_sliding_window_exact"
    assert final.val_bpb == 1.14430897 and final.eval_ms == 73150
    assert log.seed == 42 and log.artifact_size.bytes == 15706984
    stride = dict(next(s for s in log.score_lines if s.label == "final_int6_sliding_window").extras)
    assert stride["stride"] == "64"


def test_legal_ttt_exact_era() -> None:
    log = parse("legal_ttt_exact.log")
    final = log.final_score
    assert final is not None and final.label == "legal_ttt_exact" and final.val_bpb == 1.07728839
    labels = [s.label for s in log.score_lines]
    assert "ttt_sliding:done" in labels and "pre-quantization post-ema" in labels
    done = next(s for s in log.score_lines if s.label == "ttt_sliding:done")
    assert done.eval_ms == pytest.approx(371400) and done.decimals == 6
    assert log.seed == 314 and log.seed_source == "log" and log.world_size == 8
    assert log.gptq.hessians == 67 and log.gptq.collect_s == 11.2
    assert log.gptq.reserve_s == 12 and log.gptq.effective_ms == 588000
    assert log.steps[-1].coarse and log.steps[-1].train_ms == pytest.approx(570000)
    assert log.stop.train_ms == 587904 and log.stop.iterations == 20000
    assert not log.truncated


def test_quantized_ttt_lora_era() -> None:
    log = parse("quantized_ttt_lora.log")
    final = log.final_score
    assert final is not None and final.label == "quantized_ttt_lora" and final.eval_ms == 402117
    assert log.ttt_progress is not None and (log.ttt_progress.max_index, log.ttt_progress.total) == (780, 780)
    assert log.code_size("compressed").bytes == 24991 and log.code_size("uncompressed").bytes == 101332
    assert log.ttt_compile_warmup_s == 121.3


def test_phased_ttt_with_timestamps() -> None:
    log = parse("phased_ttt_timestamped.log")
    assert log.timestamped
    src = log.embedded_source
    assert src is not None and src.marker == "Source code:" and src.start_line == 11
    assert "quantized_ttt_phased val_loss:0.00000001" in src.text  # stays source, never a score
    assert not src.text.startswith("1776")  # timestamps stripped from the recovered code
    final = log.final_score
    assert final is not None and final.label == "quantized_ttt_phased" and final.val_bpb == 1.06083288
    assert final.line_no == 57 and final.eval_ms == 525512
    diags = [s for s in log.score_lines if s.is_diagnostic]
    assert [d.label for d in diags] == ["diagnostic pre-quantization post-ema", "diagnostic quantized"]
    assert log.seed == 42 and log.hparams["gptq_reserve_seconds"] == "8.0"
    assert log.total_eval_time_s == 525.5 and log.ttt_compile_warmup_s == 183.9
    assert log.ttp is not None and (log.ttp.seen, log.ttp.max_index, log.ttp.total) == (3, 782, 782)
    assert log.ttt_phased_total_docs == 50000 and log.val_tokens == 47851520
    assert log.torch_version == "2.11.0+cu128"
    assert log.location(final.line_no).snippet.startswith("1776")  # the line as shipped
    assert not log.truncated


def test_truncated_phased_log() -> None:
    log = parse("phased_ttt_truncated.log")
    assert log.final_score is None
    assert log.truncated and "no score line follows" in log.truncation_reason
    assert "1/782" in log.truncation_reason


def test_training_only_log_is_truncated() -> None:
    text = "seed:7\nstep:1/100 train_loss:6.9 train_time:50ms step_avg:50.00ms\n"
    log = parse_log(text, "train.log")
    assert log.truncated and log.final_score is None


def test_crlf_and_progress_bars() -> None:
    text = (LOGS / "sliding_window_int6.log").read_text().replace("\n", "\r\n")
    text = text.replace("seed:42", "loading 10%\rloading 100%\rseed:42")
    log = parse_log(text, "x.log")
    assert log.seed == 42 and log.final_score.val_bpb == 1.14430897
    assert log.line(log.final_score.line_no).endswith("val_bpb:1.14430897")


def test_indented_source_is_not_parsed() -> None:
    text = (
        "def f():\n"
        "    log(f'final_int8_zlib_roundtrip val_loss:{a:.4f} val_bpb:{b:.4f}')\n"
        "    final_int8_zlib_roundtrip val_loss:1.0 val_bpb:1.0\n"
        "quantized val_loss:2.0 val_bpb:1.2 eval_time:10ms\n"
    )
    log = parse_log(text, "t.log")
    assert [s.line_no for s in log.score_lines] == [4]


def test_unknown_and_garbage_lines_ignored() -> None:
    log = parse_log("\x00\x01 weird\n%%%%\nval_loss:abc val_bpb:\n" * 50, "junk.txt")
    assert not log.is_run_log and log.score_lines == []


def test_score_rank_order() -> None:
    assert (
        score_rank("quantized_ttt_phased")
        > score_rank("legal_ttt_exact")
        > score_rank("quantized_sliding_window")
    )
    assert score_rank("final_int6_sliding_window") > score_rank("final_int8_zlib_roundtrip_exact")
    assert score_rank("diagnostic quantized") is None and score_rank("pre-quantization post-ema") is None
    assert score_rank("DIAGNOSTIC post_ema") is None


@pytest.mark.parametrize(
    ("name", "seed"),
    [
        ("train_seed42.log", 42),
        ("log_10mins_seed-1337.txt", 1337),
        ("ternary_log_7.txt", 7),
        ("4096_hybrid448_s1337.txt", 1337),
        ("log_eggroll_3-last-layers.txt", None),
        ("train.log", None),
    ],
)
def test_seed_from_filename(name: str, seed: int | None) -> None:
    assert seed_from_filename(name) == seed


def test_logs_of_is_memoized_and_skips_non_run_files() -> None:
    from auditor.evidence.logs import logs_of

    sub = submission_from_files(
        {
            "train_gpt.py": "print(1)\n",
            "train_seed42.log": (LOGS / "sliding_window_int6.log").read_text(),
            "notes.txt": "some notes about the run\n",
        }
    )
    ctx = build_context(sub)
    first = logs_of(ctx)
    assert [p.path for p in first] == ["train_seed42.log"]
    assert logs_of(ctx) is first


def test_underlined_docstring_title_does_not_end_the_embedded_source() -> None:
    code = '"""\nTitle\n=============================================\nMore text.\n"""\n\nimport os\n\nprint(os.sep)\n'
    text = code + "=" * 100 + "\nseed:3\nquantized val_loss:2.0 val_bpb:1.2 eval_time:10ms\n"
    log = parse_log(text, "t.log")
    assert log.embedded_source is not None and log.embedded_source.end_line == 9
    assert log.seed == 3 and log.final_score is not None


def test_log_with_invalid_utf8_is_still_read() -> None:
    from auditor.evidence.logs import logs_of

    sub = submission_from_files(
        {"train.log": b"seed:1\n\xff\xfe progress\nquantized val_loss:2.0 val_bpb:1.2 eval_time:1ms\n"}
    )
    logs = logs_of(build_context(sub))
    assert len(logs) == 1 and logs[0].final_score.line_no == 3


def test_a_pass_named_eval_timer_times_the_headline_ngram_pass() -> None:
    """`ngram_eval_time:` is the timer of the n-gram pass (no plain `eval_time:` on that line); the n-gram pass,
    layered on the model after the sliding window, is the scored one."""
    text = (
        "final_int8_zlib_roundtrip_exact sliding val_loss:1.93 val_bpb:1.14 eval_time:102200ms\n"
        "final_ngram val_loss:1.6277 val_bpb:0.9640 ngram_eval_time:895349ms\n"
        "final_ngram_exact val_loss:1.62773633 val_bpb:0.96403969\n"
    )
    log = parse_log(text, "train_seed1337.log")
    final = log.final_score
    assert final is not None and final.label == "final_ngram_exact" and final.eval_ms == 895349.0
    assert score_rank("final_ngram") > score_rank("final_sliding_window")
    plain = parse_log("final_ngram val_loss:1.6 val_bpb:0.96 eval_time:1000ms ngram_eval_time:9ms\n", "t.log")
    assert plain.score_lines[0].eval_ms == 1000.0  # a plain eval_time wins when both are printed
