"""tools/score_reconstruction.py: the quick run prints its summary and score; --weights scores the
exported model as given (a classifier is refused); bad flags are one `error:` line with exit status 2
(the score itself is tested in tests/eval/test_reconstruction.py)."""
import json

import pytest
import timm
import torch
from safetensors.torch import save_file

from tests.conftest import compute_conditions
from video_mcmae.eval.data import render_backgrounds, render_clips
from video_mcmae.eval.pretrain import fixed_mask
from video_mcmae.eval.protocol import PLAIN_STYLE
from video_mcmae.eval.reconstruction import score_objects, verdict
from video_mcmae.synthetic import class_names
from video_mcmae.weights import EXPORT_FORMAT


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
    assert summary["edge_cubes"] > 0 and summary["shape_ratio"] > 0
    assert sentence.endswith(f"shape ratio {summary['shape_ratio']:.3f} (below 1: the edge is placed better than "
                             f"each cube's flat colour) -> {summary['verdict']}")


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


def _export(stem, preset, **model):
    torch.manual_seed(0)
    net = timm.create_model(preset, num_frames=8, img_size=32, **model)
    save_file({k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}, f"{stem}.safetensors")
    with open(f"{stem}.json", "w") as f:
        json.dump({"format": EXPORT_FORMAT, "preset": preset,
                   "model": {"name": preset, "num_frames": 8, "img_size": 32, **model}}, f)
    return net


def test_weights_are_scored_as_given_and_written_to_out(tool, tmp_path, capsys):
    net = _export(tmp_path / "mae", "videoconvmae_tiny_patch16", norm_pix_loss=False)
    out = tmp_path / "score.json"
    with compute_conditions(threads=torch.get_num_threads(), deterministic=False):
        assert tool.main(["--quick", "--weights", str(tmp_path / "mae.safetensors"), "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out.splitlines()[0])
    assert json.loads(out.read_text()) == printed and "steps" not in printed
    # the same numbers as scoring the model in memory on the same clips and masks
    names = class_names(4)
    val = render_clips(names, "val", tool.QUICK["val_per_class"], 8, 32, PLAIN_STYLE)
    backgrounds = render_backgrounds(names, "val", tool.QUICK["val_per_class"], 8, 32, PLAIN_STYLE)
    expected = score_objects(net, val, backgrounds, fixed_mask(net, val, tool.MASK_SEED))
    assert printed["error_ratio"] == round(expected.error_ratio, 3) and printed["validation_clips"] == len(val)
    assert printed["shape_ratio"] == round(expected.shape_ratio, 3) and printed["edge_cubes"] == expected.edge_cubes
    assert printed["verdict"] == verdict(expected)


def test_classifier_weights_are_refused(tool, tmp_path, capsys):
    _export(tmp_path / "clf", "videoconvvit_tiny_patch16", num_classes=4)
    with compute_conditions(threads=torch.get_num_threads(), deterministic=False):
        assert tool.main(["--quick", "--weights", str(tmp_path / "clf.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a classifier" in err[0] and "pretraining model" in err[0]


def test_pretraining_flags_with_weights_are_refused_not_ignored(tool, tmp_path, capsys):
    _export(tmp_path / "mae", "videoconvmae_tiny_patch16")
    with compute_conditions(threads=torch.get_num_threads(), deterministic=False):
        assert tool.main(["--weights", str(tmp_path / "mae.safetensors"), "--mask-ratio", "0.5", "--steps", "9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--steps, --mask-ratio" in err[0] and "leave them out" in err[0]
