"""tools/score_reconstruction.py: the quick run prints its summary and score; bad flags are one
`error:` line with exit status 2 (the score itself is tested in tests/eval/test_reconstruction.py)."""
import json

import pytest
import torch

from tests.conftest import compute_conditions


@pytest.fixture(scope="module")
def tool(load_tool):
    return load_tool("score_reconstruction")


def test_quick_run_prints_the_summary_and_the_score(tool, capsys):
    with compute_conditions(threads=torch.get_num_threads(), deterministic=False):
        assert tool.main(["--quick", "--mask-type", "random", "--decoder-width", "32"]) == 0
    summary, sentence = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(summary)
    assert summary["steps"] == tool.QUICK["steps"] and len(summary["validation_loss"]) == 5
    assert set(summary["trivial"]) == {"baseline_zero", "baseline_mean", "baseline_nearest"}
    assert 0 < summary["object_fraction"] < 1 and summary["error_ratio"] > 0
    assert f"error ratio there {summary['error_ratio']:.3f}" in sentence


@pytest.mark.parametrize("flags, named", [
    (["--mask-ratio", "1.5"], "--mask-ratio 1.5"),
    (["--steps", "0"], "--steps 0"),
    (["--size", "40"], "--size 40"),
    (["--decoder-width", "40", "--decoder-heads", "3"], "--decoder-width 40"),
    (["--object-scale", "-1"], "--object-scale"),
])
def test_bad_flags_are_one_error_line(tool, capsys, flags, named):
    with compute_conditions(threads=torch.get_num_threads(), deterministic=False):
        assert tool.main(["--quick", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and named in err[0]
