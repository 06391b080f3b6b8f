"""tools/benchmark.py runs end to end on the CPU at tiny shapes; its rows report what its timer
measured (a stand-in timer gives known values), and the timer itself times what it is told."""
import json
import os
import time

import pytest

from video_mcmae.config import ConfigError
from video_mcmae.models import dwconv


@pytest.fixture(scope="module")
def benchmark(load_tool):
    return load_tool("benchmark")


@pytest.fixture
def fixed_timer(benchmark, monkeypatch):
    """`time_ms` that runs its function once for real and reports the next of the given ms."""
    def install(*ms):
        reported = iter(ms)

        def time_ms(fn, device, steps, warmup):
            fn()
            return next(reported)
        monkeypatch.setattr(benchmark, "time_ms", time_ms)
    return install


def test_the_timer_times_the_steps_after_the_warmup(benchmark):
    calls = []

    def step():
        calls.append(time.perf_counter())
        time.sleep(0.02 if len(calls) > 2 else 0.0)

    ms = benchmark.time_ms(step, benchmark.torch.device("cpu"), steps=3, warmup=2)
    assert len(calls) == 5 and 20.0 <= ms < 200.0  # the 3 timed calls sleep 20 ms each


def test_a_training_row_reports_the_timed_step(benchmark, fixed_timer):
    fixed_timer(25.0)
    (row,) = benchmark.main(["train", "--model", "videoconvvit_tiny_patch16", "--frames", "4", "--img-size", "32",
                             "--batch", "2", "--precision", "fp32", "--num-classes", "5", "--device", "cpu"])
    assert row["ms_per_step"] == 25.0 and row["clips_per_s"] == 80.0


def test_training_steps(benchmark, tmp_path, capsys):
    out = tmp_path / "train.json"
    before = os.environ.get(dwconv.BACKEND_ENV)
    rows = benchmark.main(["train", "--model", "videoconvmae_tiny_msd_patch16", "--frames", "4", "--img-size", "32",
                           "--batch", "2", "--steps", "1", "--warmup", "0", "--precision", "fp32",
                           "--visible-only", "on", "off", "--dwconv-backend", "torch", "--device", "cpu", "--json", str(out)])
    assert os.environ.get(dwconv.BACKEND_ENV) == before, "the benchmark must restore the backend choice"
    assert [r["visible_only"] for r in rows] == [True, False]
    saved = json.loads(out.read_text())
    assert saved["results"] == rows
    for row in rows:
        assert row["task"] == "pretrain" and row["input"] == [4, 32, 32] and row["dwconv_backend"] == "torch"
    assert "clips_per_s" in capsys.readouterr().out

    (row,) = benchmark.main(["train", "--model", "videoconvvit_tiny_patch16", "--frames", "4", "--img-size", "32",
                             "--batch", "2", "--steps", "1", "--warmup", "0", "--precision", "bf16",
                             "--num-classes", "5", "--device", "cpu"])
    assert row["task"] == "finetune" and row["visible_only"] is None and row["precision"] == "bf16"


def test_decoder_mask_rows_take_interleaved_medians(benchmark, fixed_timer, tmp_path, capsys):
    """The two models are timed in turn, round by round; each row is the median of its rounds and
    the masked one is compared with the unmasked one (known timings from a stand-in timer)."""
    fixed_timer(1.0, 1.0, 10.0, 8.0, 30.0, 6.0, 20.0, 9.0)  # two warmups, then (off, on) x 3 rounds
    out = tmp_path / "decoder_mask.json"
    rows = benchmark.main(["decoder-mask", "--model", "videoconvmae_tiny_patch16", "--frames", "4", "--img-size", "32",
                           "--batch", "2", "--steps", "1", "--warmup", "0", "--rounds", "3", "--precision", "fp32",
                           "--dwconv-backend", "torch", "--device", "cpu", "--json", str(out)])
    off, on = rows
    assert (off["decoder_mask_ratio"], on["decoder_mask_ratio"], on["decoder_mask_type"]) == (0.0, 0.5, "running_cell")
    assert (off["ms_rounds"], on["ms_rounds"]) == ([10.0, 30.0, 20.0], [8.0, 6.0, 9.0])
    assert (off["ms_per_step"], on["ms_per_step"]) == (20.0, 8.0)
    assert (off["step_time_vs_unmasked"], on["step_time_vs_unmasked"]) == (1.0, 0.4)
    assert on["clips_per_s"] == 250.0
    assert json.loads(out.read_text())["results"] == rows
    assert "0.4" in capsys.readouterr().out


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
