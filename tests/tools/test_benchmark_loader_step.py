"""tools/benchmark.py loader: the pretraining loader alone, the step alone, both (tiny, on the CPU)."""
import json

import pytest

from video_mcmae.config import ConfigError


@pytest.fixture(scope="module")
def benchmark(load_tool):
    return load_tool("benchmark")


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_feeding_the_pretraining_step(benchmark, synthetic_root, tmp_path, capsys, workers):
    out = tmp_path / "loader.json"
    (row,) = benchmark.main([
        "loader", "--model", "videoconvmae_tiny_patch16", "--frames", "4", "--img-size", "32", "--batch", "4",
        "--num-sample", "2", "--list", str(synthetic_root / "k400" / "train.csv"),
        "--data-root", str(synthetic_root / "k400"), "--reader", "pyav", "--workers", str(workers), "--rate", "2",
        "--steps", "2", "--warmup", "1", "--precision", "fp32", "--dwconv-backend", "torch", "--device", "cpu",
        "--json", str(out)])
    assert row["batch_dtype"] == "uint8" and row["batch_mib"] == pytest.approx(4 * 3 * 4 * 32 * 32 / 2**20)
    assert row["input"] == [4, 32, 32] and row["workers"] == workers and row["num_sample"] == 2
    assert json.loads(out.read_text())["results"] == [row]
    assert "both_clips_per_s" in capsys.readouterr().out


@pytest.mark.parametrize("both_ms, keeps_up", [(10.4, True), (10.6, False)])
def test_the_loader_keeps_up_while_both_stay_within_5_percent_of_the_step_alone(
        benchmark, synthetic_root, monkeypatch, both_ms, keeps_up):
    """Known timings (loader alone 8 ms, step alone 10 ms, both `both_ms` per batch of 4 clips) give
    known rates, and the loader keeps up while both together deliver >= 95% of the step alone."""
    timings = iter([8.0, 10.0, both_ms])

    def time_ms(fn, device, steps, warmup):
        fn()
        return next(timings)

    monkeypatch.setattr(benchmark, "time_ms", time_ms)
    (row,) = benchmark.main([
        "loader", "--model", "videoconvmae_tiny_patch16", "--frames", "4", "--img-size", "32", "--batch", "4",
        "--num-sample", "2", "--list", str(synthetic_root / "k400" / "train.csv"),
        "--data-root", str(synthetic_root / "k400"), "--workers", "0", "--rate", "2", "--precision", "fp32",
        "--dwconv-backend", "torch", "--device", "cpu"])
    assert (row["loader_clips_per_s"], row["model_clips_per_s"]) == (500.0, 400.0)
    assert row["both_clips_per_s"] == pytest.approx(4e3 / both_ms) and row["loader_keeps_up"] is keeps_up


def test_loader_mode_refuses_a_classifier_and_an_odd_batch(benchmark, synthetic_root):
    common = ["--frames", "4", "--img-size", "32", "--list", str(synthetic_root / "k400" / "train.csv"),
              "--data-root", str(synthetic_root / "k400"), "--workers", "0", "--device", "cpu"]
    with pytest.raises(ConfigError, match="video pretraining preset"):
        benchmark.main(["loader", "--model", "videoconvvit_tiny_patch16", *common])
    with pytest.raises(ConfigError, match="multiple of --num-sample 2"):
        benchmark.main(["loader", "--model", "videoconvmae_tiny_patch16", "--batch", "3", *common])
