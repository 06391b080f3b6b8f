import pytest
import torch


@pytest.fixture
def tool(load_tool):
    return load_tool("benchmark_loader")


def test_reports_decode_transform_bytes_and_rates_per_mode(tool, tmp_path, capsys):
    argv = ["--work-dir", str(tmp_path), "--synthetic-videos", "2", "--synthetic-frames", "24",
            "--synthetic-size", "48", "64", "--frames", "4", "--rate", "2", "--input-size", "32",
            "--clips", "2", "--repeats", "2", "--loader-batches", "1", "--workers", "0", "--batch-size", "2"]
    threads = torch.get_num_threads()
    try:
        assert tool.main(argv) == 0  # sets one torch thread, as in a loader worker
    finally:
        torch.set_num_threads(threads)
    lines = capsys.readouterr().out.splitlines()
    assert "decode/video" in lines[1] and "bytes/clip" in lines[1] and "loader clips/s/worker" in lines[1]
    rows = {tuple(line.split()[:3]): line.split()[3:] for line in lines[2:]}
    assert set(rows) == {(mode, ns, backend) for mode, ns in (("pretrain", "2"), ("finetune", "1"))
                         for backend in ("decord", "pyav")}
    for (mode, ns, _), values in rows.items():
        decode, per_clip, transform, total, rate = map(float, values[:5])
        assert decode > 0 and transform > 0
        assert per_clip == pytest.approx(decode / int(ns), abs=0.06)  # num_sample clips share a decode
        assert total == pytest.approx(per_clip + transform, abs=0.11)
        assert 1000 / (total + 0.051) <= rate <= 1000 / (total - 0.051)  # total is printed rounded
        assert values[5] == f"{3 * 4 * 32 * 32:,d}"  # uint8 (C, T, H, W) clip
        assert float(values[6]) > 0
    assert (tmp_path / "procedural_2x24_48x64_25fps_fastdecode" / "train.csv").read_text().count("\n") == 2
