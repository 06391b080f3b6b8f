"""tools/eval_ssl.py: the quick run writes its four files (its validation half two) and its trainings' records
(the protocol itself is tested in tests/eval), a second run on the folder goes on only with --resume, the flags
reach the configuration, bad values are refused."""
import dataclasses
import json

import pytest
from PIL import Image

from video_mcmae.config import ConfigError
from video_mcmae.eval.report import PROBE_TITLES


@pytest.fixture(scope="module")
def tool(load_tool):
    return load_tool("eval_ssl")


def test_quick_run_writes_the_table_json_and_png(tool, tmp_path):
    result = tool.run(tool.parse_args(["--quick", "--out", str(tmp_path)]))
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["test_reads"] == result["test_reads"] and set(saved["targets"]) == {"pretext", "finetune", "attentive"}
    table = (tmp_path / "table.md").read_text()
    for row in ("| trivial: zero", "| trivial: mean", "| trivial: nearest", "| 25% (2) |", "| 100% (8) |",
                *(f"| {title}" for title in PROBE_TITLES.values())):
        assert row in table, row
    assert "not judged at the quick size" in table and "**missed**" not in table
    assert "wrote" in (tmp_path / "log.txt").read_text()
    with Image.open(tmp_path / "eval_ssl.png") as png:
        png.load()
        assert png.size[0] > 1000 and png.size[1] > 300


def test_validation_only_writes_the_selection_and_no_test_number(tool, tmp_path):
    # six classes: the class count reaches the data, the heads and the log
    tool.run(tool.parse_args(["--quick", "--validation-only", "--budgets", "1", "--classes", "6", "--out", str(tmp_path)]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.txt", "runs", "selection.json"]
    saved = json.loads((tmp_path / "selection.json").read_text())
    assert set(saved["finetune_search"]) == {"1 pretrained", "1 random"} and "test_reads" not in saved
    log = (tmp_path / "log.txt").read_text()
    assert "frozen, random seed 0: validation" in log and "data: pool 36, validation 18, test 18 clips" in log
    assert "6 classes" in log


def test_a_second_run_on_the_folder_needs_resume_and_reads_the_same_numbers(tool, tmp_path, capsys):
    first = tool.run(tool.parse_args(["--quick", "--out", str(tmp_path)]))
    saved = (tmp_path / "result.json").read_text()
    capsys.readouterr()
    assert tool.main(["--quick", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--out {tmp_path} holds the trainings of an earlier run" in err[0] and "--resume" in err[0]
    assert (tmp_path / "result.json").read_text() == saved  # nothing written is lost
    again = tool.run(tool.parse_args(["--quick", "--out", str(tmp_path), "--resume"]))
    assert again["trainings_loaded"] == len(list((tmp_path / "runs").glob("*.pt"))) > 0
    assert again["label_efficiency"] == first["label_efficiency"] and again["frozen"] == first["frozen"]
    # the trainings' own time comes with their records; the table says the run went on from them
    assert again["training_seconds"] == first["training_seconds"] > 0
    assert f"after going on from {again['trainings_loaded']} finished trainings" in (tmp_path / "table.md").read_text()
    log = (tmp_path / "log.txt").read_text()
    assert log.count(f"wrote {tmp_path / 'result.json'}") == 2 and "going on from" in log  # the log goes on too
    with pytest.raises(ConfigError, match="another configuration"):
        tool.run(tool.parse_args(["--quick", "--out", str(tmp_path), "--resume", "--pt-steps", "5"]))


def test_flags_reach_the_configuration(tool):
    quick = tool.config_from_args(tool.parse_args(["--quick"]))
    assert quick.size == 32 and quick.pretrain.steps == 4 and quick.seeds == (0, 1)
    explicit = tool.config_from_args(tool.parse_args(["--quick", "--pt-steps", "7", "--seeds", "3", "4", "5"]))
    assert explicit.pretrain.steps == 7 and explicit.seeds == (3, 4, 5) and explicit.size == 32
    assert explicit.pretrain.batch == quick.pretrain.batch and explicit.pt_seeds == quick.pt_seeds
    default = tool.config_from_args(tool.parse_args(["--decoder-mask-ratio", "0.5", "--budgets", "0.01", "0.1"]))
    assert default.model_kwargs["decoder_mask_ratio"] == 0.5 and default.model_kwargs["mask_ratio"] == 0.75
    assert default.budgets == (0.01, 0.1) and default.matched_budgets == (0.01, 0.1)
    assert "decoder_mask_ratio" not in tool.config_from_args(tool.parse_args([])).model_kwargs
    assert tool.config_from_args(tool.parse_args(["--size", "64"])).size == 64
    assert tool.config_from_args(tool.parse_args(["--ft-lrs", "1e-3", "3e-4"])).ft_lrs == (1e-3, 3e-4)
    longer = tool.config_from_args(tool.parse_args(["--ft-steps", "12000"])).finetune
    assert longer == dataclasses.replace(tool.EvalConfig().finetune, max_steps=12000)


@pytest.mark.parametrize("classes, pool, val, test", [(4, 1000, 100, 200), (8, 500, 50, 100), (6, 667, 67, 134)])
def test_classes_share_the_splits_without_shrinking_them(tool, classes, pool, val, test):
    cfg = tool.config_from_args(tool.parse_args(["--classes", str(classes)]))
    assert (cfg.classes, cfg.pool_per_class, cfg.val_per_class, cfg.test_per_class) == (classes, pool, val, test)
    assert len(cfg.class_names) == classes and cfg.class_names[:4] == tool.EvalConfig().class_names
    assert classes * pool >= 4000 and classes * val >= 400 and classes * test >= 800


def test_scene_flags_change_only_the_fields_they_name(tool):
    default = tool.config_from_args(tool.parse_args([])).style
    cfg = tool.config_from_args(tool.parse_args(["--scene", "camera=0.35", "--scene", "max_objects=2",
                                                 "--scene", "shape=circle"]))
    assert (cfg.style.camera, cfg.style.max_objects, cfg.style.shape) == (0.35, 2, "circle")
    assert dataclasses.replace(cfg.style, camera=default.camera, max_objects=default.max_objects,
                               shape=default.shape) == default
    assert tool.config_from_args(tool.parse_args(["--scene", "shape=circle", "--scene", "shape=null"])).style == default
    contrast = tool.config_from_args(tool.parse_args(["--scene", "contrast=1"])).style.contrast
    assert type(contrast) is float and contrast == 1.0  # the field's declared type, whatever the text
    # --quick keeps its own sizes and takes the scene change on top
    quick = tool.config_from_args(tool.parse_args(["--quick", "--scene", "contrast=0.2"]))
    assert quick.size == 32 and quick.style.contrast == 0.2 and quick.style.camera == default.camera


@pytest.mark.parametrize("argv, message", [(["--budgets", "0"], "--budgets 0"),
                                           (["--budgets", "1.5"], "--budgets 1.5"),
                                           (["--decoder-mask-ratio", "1"], "--decoder-mask-ratio 1"),
                                           (["--pt-steps", "0"], "--pt-steps 0"),
                                           (["--ft-steps", "0"], "--ft-steps 0"),
                                           (["--workers", "0"], "--workers 0"),
                                           (["--size", "40"], "--size 40"),
                                           (["--ft-lrs", "0"], "--ft-lrs 0"),
                                           (["--scene", "pan=0.1"], "--scene pan=0.1: need KEY=VALUE with KEY one of "
                                                                    "min_objects, max_objects"),
                                           (["--scene", "camera"], "--scene camera: need KEY=VALUE"),
                                           (["--scene", "max_objects=1.5"], "--scene max_objects=1.5: expected int, got 1.5"),
                                           (["--scene", "contrast=[0.5"], "--scene contrast=\\[0.5: value is not valid YAML"),
                                           (["--scene", "camera=0.5"], "camera=0.5: need a fraction from 0 to "
                                                                       "below 0.36"),
                                           (["--scene", "shape=blob"], "shape='blob': need one of circle"),
                                           (["--classes", "5"], "--classes: num_classes=5: the synthetic set needs "
                                                                "an even number from 4 to 12"),
                                           (["--classes", "2"], "--classes: num_classes=2: the synthetic set needs "
                                                                "an even number from 4 to 12"),
                                           (["--classes", "14"], "--classes: num_classes=14: the synthetic set needs "
                                                                 "an even number")])
def test_bad_values_are_refused(tool, argv, message):
    with pytest.raises(ConfigError, match=message):
        tool.config_from_args(tool.parse_args(argv))


def test_a_bad_value_exits_2_with_one_line(tool, capsys):
    assert tool.main(["--budgets", "2", "--out", "/nonexistent/never"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--budgets 2" in err[0]


def test_an_unwritable_out_is_refused_before_any_work(tool, capsys, monkeypatch):
    monkeypatch.setattr(tool, "run_protocol", lambda *a, **k: pytest.fail("the protocol ran"))
    assert tool.main(["--quick", "--out", "/sys/eval_ssl"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out" in err[0] and "/sys/eval_ssl" in err[0]
