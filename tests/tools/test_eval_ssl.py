"""tools/eval_ssl.py at its quick size: the plumbing only (files written, every row of the table,
numbers in range, a PNG that decodes), plus the pieces whose answer is known."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image


@pytest.fixture(scope="module")
def tool(load_tool):
    return load_tool("eval_ssl")


def test_quick_run_writes_the_table_json_and_png(tool, tmp_path):
    threads = torch.get_num_threads()
    summary = tool.run(tool.parse_args(["--quick", "--out", str(tmp_path)]))
    assert torch.get_num_threads() == threads  # the caller's setting is restored

    for key in ("json", "table", "png", "log"):
        assert os.path.getsize(summary["files"][key]) > 0, key
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["downstream"].keys() == set(tool.EVALS)
    assert saved["setup"]["seeds"] == [0, 1] and saved["chance"] == 25.0

    pretext = summary["pretext"]
    assert set(pretext["baselines"]) == set(tool.BASELINES)
    assert all(v > 0 and np.isfinite(v) for v in pretext["baselines"].values())
    steps = [s for s, _ in pretext["curve"]]
    assert steps == [0, 2, 4] and all(np.isfinite(loss) and loss > 0 for _, loss in pretext["curve"])
    # one pretraining per pretraining seed, from different initialisations, on the same test masks
    assert pretext["seeds"] == [0, 1] and len(pretext["curves"]) == 2
    assert pretext["curves"][0][0][1] != pretext["curves"][1][0][1]
    assert pretext["final_loss"] == pytest.approx(np.mean(pretext["final_losses"]))
    assert pretext["curve"][-1][1] == pytest.approx(pretext["final_loss"])
    assert pretext["ratio_to_best"] == pytest.approx(pretext["final_loss"] / min(pretext["baselines"].values()))
    for key in tool.EVALS:
        row = summary["downstream"][key]
        for init in tool.INITS:
            assert len(row[init]["runs"]) == 2 and all(0 <= a <= 100 for a in row[init]["runs"]), (key, init)
            assert 0 <= row[init]["std"] <= 50
        assert row["gap"] == pytest.approx(row["pretrained"]["mean"] - row["random"]["mean"])
    assert set(summary["targets"]) == {"loss", "frozen", "finetune"}

    table = (tmp_path / "table.md").read_text()
    for title in ("predict zero", "best constant cube", "copy the nearest visible cube", "pretrained model (final; mean ± std over 2",
                  *tool.EVAL_TITLES.values()):
        assert f"| {title}" in table, title
    assert "seeds [0, 1]" in table and "CPU cores" in table

    with Image.open(tmp_path / "eval_ssl.png") as png:
        png.load()
        assert png.size[0] > 600 and png.size[1] > 300


def test_quick_changes_defaults_but_explicit_flags_win(tool):
    args = tool.parse_args(["--quick", "--pt-steps", "7"])
    assert args.pt_steps == 7 and args.size == tool.QUICK["size"]
    full = tool.parse_args([])
    assert full.pt_steps > 100 and full.seeds == [0, 1, 2] and full.pt_seeds == [0, 1, 2]
    assert full.threads is None  # torch's own thread count unless asked and full.ft_fraction == 0.1 and full.layer_decay == 0.75


@pytest.mark.parametrize("argv,message", [
    (["--model-kwargs", "{depth"], "--model-kwargs is not JSON"),
    (["--model-kwargs", "[1]"], "--model-kwargs must be a JSON object"),
    (["--ft-fraction", "0"], "--ft-fraction must be in"),
    (["--seeds"], "--seeds"),
    (["--camera", "0.7"], "scene camera=0.7"),
])
def test_bad_arguments_are_named(tool, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        tool.parse_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_baselines_are_the_model_loss_of_trivial_predictions(tool):
    model = tool.timm.create_model("videoconvmae_tiny_patch16", num_frames=4, img_size=32, norm_pix_loss=False)
    x = torch.randn(3, 3, 4, 32, 32)
    mask = model.draw_mask(x, torch.Generator().manual_seed(0))
    base = tool.trivial_baselines(model, x, mask)
    zero = model.forward_loss(x, torch.zeros(3, mask.shape[1], model.patch_dim), mask)
    assert base["zero"] == pytest.approx(float(zero), rel=1e-5)
    # the same numbers the pretraining log prints, under the report's names
    values = model.trivial_baselines(x, mask)
    assert base == dict(zero=values["baseline_zero"], constant=values["baseline_mean"],
                        nearest_visible=values["baseline_nearest"])
    assert base["constant"] <= base["zero"]  # the best constant on these cubes


def test_knn_and_probe_on_separable_features(tool):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(4).repeat(10)
    f = torch.nn.functional.one_hot(y, 4).float() * 5 + 0.1 * torch.randn(40, 4, generator=g)
    assert tool.knn_accuracy(f, y, f, y, 5, 4) == 1.0
    assert tool.linear_probe(f, y, f, y, 4, seed=0) == 1.0
    few = tool.few_labels(y, 0.2, 4, seed=0)
    assert torch.bincount(y[few], minlength=4).tolist() == [2, 2, 2, 2]


def test_model_kwargs_the_preset_rejects_are_a_config_error(tool, tmp_path):
    args = tool.parse_args(["--quick", "--out", str(tmp_path), "--model-kwargs", '{"bogus": 1}'])
    with pytest.raises(tool.ConfigError, match="--preset/--model-kwargs.*bogus"):
        tool.run(args)


def test_time_pooled_features_keep_one_vector_per_time_step(tool):
    args = tool.parse_args(["--quick"])
    model = tool.classifier(args, seed=0)
    x = torch.randn(2, 3, args.frames, args.size, args.size)
    mean, timed = tool.features(model, x, "mean"), tool.features(model, x, "time")
    steps = model.grid_size[0]
    assert mean.shape == (2, model.embed_dim) and timed.shape == (2, steps * model.embed_dim)
    # each time step's block is layer-normalised together with the others, not averaged away
    assert torch.allclose(timed.mean(-1), torch.zeros(2), atol=1e-5)
    assert not torch.allclose(timed.view(2, steps, -1)[:, 0], timed.view(2, steps, -1)[:, -1])


def test_quick_table_judges_no_target(tool):
    summary = dict(
        pretext=dict(final_loss=0.5, baselines=dict(zero=1.0, constant=1.0, nearest_visible=1.2), best_baseline="zero",
                     ratio_to_best=0.5, target_ratio=0.7, final_losses=[0.5], final_std=0.0),
        downstream={k: dict(pretrained=dict(mean=90.0, std=0.0), random=dict(mean=25.0, std=0.0), gap=65.0,
                            target_gap=tool.TARGET_GAPS[k]) for k in tool.EVALS},
        chance=25.0, targets=dict(loss=True, frozen=True, finetune=True), seconds=1.0,
        setup=dict(machine="m", train_clips=1, test_clips=1, clip="4x32x32", seeds=[0], pt_seeds=[0], pt_steps=1,
                   few_labels=1, frozen_pool="mean"),
        args=dict(quick=True))
    quick = tool.markdown_table(summary)
    assert "met" not in quick.replace("not judged", "") and quick.count("not judged at --quick size") == 4
    summary["args"]["quick"] = False
    assert tool.markdown_table(summary).count("met") == 4
