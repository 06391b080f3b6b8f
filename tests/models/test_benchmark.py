"""tools/benchmark.py runs end to end on the CPU at tiny shapes (numbers are not checked, only produced)."""
import json
import os
import statistics

import pytest

from video_mcmae.config import ConfigError
from video_mcmae.models import dwconv


@pytest.fixture(scope="module")
def benchmark(load_tool):
    return load_tool("benchmark")


def test_training_steps(benchmark, tmp_path, capsys):
    out = tmp_path / "train.json"
    before = os.environ.get(dwconv.BACKEND_ENV)
    rows = benchmark.main(["train", "--model", "videoconvmae_tiny_msd_patch16", "--frames", "4", "--img-size", "32",
                           "--batch", "2", "--steps", "1", "--warmup", "0", "--precision", "fp32",
                           "--sparse", "on", "off", "--kernel", "torch", "--device", "cpu", "--json", str(out)])
    assert os.environ.get(dwconv.BACKEND_ENV) == before, "the benchmark must restore the backend choice"
    assert [r["sparse"] for r in rows] == [True, False]
    saved = json.loads(out.read_text())
    assert saved["results"] == rows
    for row in rows:
        assert row["task"] == "pretrain" and row["input"] == [4, 32, 32]
        assert row["ms_per_step"] > 0 and row["clips_per_s"] > 0 and row["peak_mem_mib"] > 0
    assert "clips_per_s" in capsys.readouterr().out

    (row,) = benchmark.main(["train", "--model", "videoconvvit_tiny_patch16", "--frames", "4", "--img-size", "32",
                             "--batch", "2", "--steps", "1", "--warmup", "0", "--precision", "bf16",
                             "--num-classes", "5", "--device", "cpu"])
    assert row["task"] == "finetune" and row["sparse"] is None and row["ms_per_step"] > 0


def test_decoder_mask_step_ratio(benchmark, tmp_path, capsys):
    out = tmp_path / "decoder_mask.json"
    rows = benchmark.main(["decoder-mask", "--model", "videoconvmae_tiny_patch16", "--frames", "4", "--img-size", "32",
                           "--batch", "2", "--steps", "1", "--warmup", "0", "--rounds", "2", "--precision", "fp32",
                           "--kernel", "torch", "--device", "cpu", "--json", str(out)])
    off, on = rows
    assert (off["decoder_mask_ratio"], on["decoder_mask_ratio"], on["decoder_mask_type"]) == (0.0, 0.5, "running_cell")
    for row in rows:
        assert len(row["ms_rounds"]) == 2 and row["ms_per_step"] == statistics.median(row["ms_rounds"])
    assert off["step_time_vs_unmasked"] == 1.0
    assert on["step_time_vs_unmasked"] == on["ms_per_step"] / off["ms_per_step"]
    assert json.loads(out.read_text())["results"] == rows
    assert f"step time x{on['step_time_vs_unmasked']:.3f} of the unmasked step" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="needs a pretraining preset"):
        benchmark.main(["decoder-mask", "--model", "videoconvvit_tiny_patch16", "--device", "cpu"])


def test_dwconv_micro_benchmark(benchmark, tmp_path):
    out = tmp_path / "dwconv.json"
    rows = benchmark.main(["dwconv", "--shape", "1", "8", "3", "6", "6", "--kernel-size", "3", "3", "3",
                           "--steps", "1", "--warmup", "0", "--precision", "fp32", "--triton", "off",
                           "--device", "cpu", "--json", str(out)])
    assert {r["case"] for r in rows} == {"dense/conv-channels-first", "dense/torch", "visible/torch"}
    for row in rows:
        assert row["fwd_bwd_ms"] > 0 and row["copy_gbs"] > 0 and row["max_rel_err"] < 1e-5
    assert len(json.loads(out.read_text())["results"]) == 3


def test_bad_kernel_size_is_named(benchmark):
    with pytest.raises(SystemExit, match="needs 3 entries"):
        benchmark.main(["dwconv", "--shape", "1", "8", "3", "6", "6", "--kernel-size", "3", "3", "--device", "cpu"])
