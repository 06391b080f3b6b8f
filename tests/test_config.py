import dataclasses
import glob
import logging
import os
import re
import subprocess
import sys
import typing

import pytest
import yaml

from video_mcmae import config as config_module
from video_mcmae.config import Config, ConfigError, load_config, recorded_config, recorded_model_config, save_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(path, data):
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(path)


def test_base_merge_and_overrides(tmp_path):
    (tmp_path / "base").mkdir()
    write(tmp_path / "base" / "common.yaml", {
        "model": {"name": "videoconvmae_tiny_patch16", "num_frames": 8, "img_size": 64},
        "optim": {"epochs": 10, "warmup_epochs": 1, "betas": [0.9, 0.95]},
    })
    run = write(tmp_path / "run.yaml", {
        "_base_": "base/common.yaml",
        "optim": {"epochs": 3},
        "run": {"output_dir": "out"},
    })
    cfg = load_config(run, ["optim.betas=[0.8, 0.99]", "model.mask_ratio=0.75", "optim.lr=1e-3"])
    assert cfg.model.name == "videoconvmae_tiny_patch16"
    assert cfg.model.num_frames == 8  # from the base
    assert cfg.optim.epochs == 3  # the run file wins over its base
    assert cfg.optim.betas == [0.8, 0.99]  # the override wins over both
    assert cfg.model.mask_ratio == 0.75
    assert cfg.optim.lr == pytest.approx(1e-3)
    assert cfg.data.mean == [0.485, 0.456, 0.406]  # untouched defaults stay


def test_base_list_and_loop(tmp_path):
    a = write(tmp_path / "a.yaml", {"_base_": "b.yaml"})
    write(tmp_path / "b.yaml", {"_base_": "a.yaml"})
    with pytest.raises(ConfigError, match="loops"):
        load_config(a)
    write(tmp_path / "c.yaml", {"optim": {"epochs": 5, "warmup_epochs": 1}})
    write(tmp_path / "d.yaml", {"optim": {"epochs": 7, "batch_size": 4}})
    e = write(tmp_path / "e.yaml", {"_base_": ["c.yaml", "d.yaml"]})
    cfg = load_config(e)
    assert (cfg.optim.epochs, cfg.optim.batch_size) == (7, 4)  # later bases win


def test_unknown_key_names_nearest(tmp_path):
    run = write(tmp_path / "run.yaml", {"optim": {"epoch": 3}})
    with pytest.raises(ConfigError, match=r"optim\.epoch'.*did you mean 'epochs'"):
        load_config(run)
    with pytest.raises(ConfigError, match=r"'modle'.*did you mean 'model'"):
        load_config(None, ["modle.name=x"])


@pytest.mark.parametrize("opt, expected", [
    ("optim.epochs=ten", "expected int"),
    ("optim.epochs=3.5", "expected int"),
    ("model.visible_only=1", "expected bool"),
    ("optim.betas=0.9", "expected a list of float"),
    ("model.mask_type=tubes", "did you mean 'tube'"),
    ("model.decoder_mask_type=run_cell", "did you mean 'running_cell'"),
    ("optim.lr=fast", "expected float or null"),
])
def test_wrong_type_names_expected(opt, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(None, [opt])


@pytest.mark.parametrize("opt, key", [
    ("model.mask_ratio=1.0", "model.mask_ratio"),
    ("model.mask_ratio=0", "model.mask_ratio"),
    ("model.decoder_mask_ratio=1.0", "model.decoder_mask_ratio"),
    ("model.decoder_mask_ratio=-0.5", "model.decoder_mask_ratio"),
    ("model.img_size=200", "model.img_size"),
    ("model.num_frames=15", "model.num_frames"),
    ("optim.layer_decay=1.5", "optim.layer_decay"),
    ("deepspeed.zero_stage=3", "deepspeed.zero_stage"),
    ("aug.crop_scale=[0.5, 0.2]", "aug.crop_scale"),
])
def test_impossible_values_rejected(opt, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [opt])


def _float_options():
    """Every float option (plain, optional, list of floats) of the config's sections, read from the
    dataclasses: `(key, override making one value NaN/inf)` per option."""
    out = []
    for name, cls in typing.get_type_hints(Config).items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            key, tp = f"{name}.{f.name}", hints[f.name]
            if tp is float or tp == typing.Optional[float]:
                out.append((key, lambda v, key=key: f"{key}={v}"))
            elif tp == typing.List[float]:
                default = f.default_factory()
                out.append((key, lambda v, key=key, d=default: f"{key}=[{', '.join([v] + [str(x) for x in d[1:]])}]"))
    return out


FLOAT_OPTIONS = _float_options()


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "nan"])
@pytest.mark.parametrize("key, override", FLOAT_OPTIONS, ids=[k for k, _ in FLOAT_OPTIONS])
def test_non_finite_floats_are_refused_naming_the_key(key, override, value):
    with pytest.raises(ConfigError, match=r"^" + re.escape(key) + r"(\[0\])?: must be a finite number, got"):
        load_config(None, [override(value)])


@pytest.mark.parametrize("key", ["optim.lr", "optim.base_lr", "optim.min_lr", "optim.warmup_lr", "optim.weight_decay",
                                 "optim.weight_decay_end", "optim.eps", "optim.clip_grad", "aug.mixup", "aug.cutmix",
                                 "aug.reprob", "aug.smoothing", "model.drop_path_rate", "data.max_bad_fraction"])
def test_negative_values_are_refused_naming_the_key(key):
    with pytest.raises(ConfigError, match=r"^" + re.escape(key) + ": "):
        load_config(None, [f"{key}=-0.1"])


def test_classifier_only_regularisation_is_refused_for_pretraining():
    pretrain = os.path.join(REPO, "configs", "demo", "pretrain.yaml")
    for opt in ("model.drop_path_rate=0.1", "model.drop_rate=0.1"):
        with pytest.raises(ConfigError, match="apply to classifiers; set them to 0 for pretraining"):
            load_config(pretrain, [opt])
    cfg = load_config(os.path.join(REPO, "configs", "demo", "finetune.yaml"), ["model.drop_path_rate=0.1"])
    assert cfg.model.drop_path_rate == pytest.approx(0.1)


def test_unknown_preset_is_refused_with_the_valid_names():
    with pytest.raises(ConfigError, match="model.name: unknown preset 'videoconvvit_huge'; choose one of .*videoconvvit_tiny"):
        load_config(None, ["model.name=videoconvvit_huge"])


def test_config_needs_neither_torch_nor_the_models():
    # `import video_mcmae` registers the presets (imports the models, hence torch), so the package
    # is stood in by a bare module over the same folder: what remains is config's own imports.
    package = os.path.join(REPO, "video_mcmae")
    code = (
        "import sys, types\n"
        f"pkg = types.ModuleType('video_mcmae'); pkg.__path__ = [{package!r}]; sys.modules['video_mcmae'] = pkg\n"
        "from video_mcmae.config import ConfigError, load_config\n"
        "assert load_config(None, ['model.name=videoconvmae_tiny_patch16']).model.name\n"
        "try:\n"
        "    load_config(None, ['model.name=videoconvmae_tiny_patch16', 'model.drop_rate=0.1'])\n"
        "    raise SystemExit('drop_rate on a pretraining preset was accepted')\n"
        "except ConfigError:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'video_mcmae.models'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_odd_batch_with_mixup_is_refused_before_any_work():
    finetune = os.path.join(REPO, "configs", "demo", "finetune.yaml")
    with pytest.raises(ConfigError, match="need an even batch"):
        load_config(finetune, ["optim.batch_size=3", "aug.mixup=0.8"])
    with pytest.raises(ConfigError, match="need an even batch"):
        load_config(finetune, ["optim.batch_size=3", "aug.cutmix=1.0"])
    assert load_config(finetune, ["optim.batch_size=3"]).optim.batch_size == 3  # mixup and cutmix off
    assert load_config(finetune, ["optim.batch_size=3", "aug.mixup=0.8", "data.num_sample=2"]).aug.mixup == 0.8
    pretrain = os.path.join(REPO, "configs", "demo", "pretrain.yaml")
    assert load_config(pretrain, ["optim.batch_size=3", "aug.mixup=0.8"]).optim.batch_size == 3  # no mixing


def test_bad_override_syntax_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["optim.epochs"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "nope.yaml"))
    bad = write(tmp_path / "bad.yaml", "run:\n  seed: 1\noptim: [1, 2\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert str(err.value).startswith(f"{bad}:4: not valid YAML (while parsing a flow sequence expected ',' or ']'")
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"^override 'optim.betas=\[0.9,': value is not valid YAML \([^\n]*\)$"):
        load_config(None, ["optim.betas=[0.9,"])


@pytest.mark.parametrize("text, key, lines", [
    ("run:\n  save_every: 1\noptim:\n  lr: 0.1\nrun:\n  save_every: 20\n", "run", (1, 5)),  # a section twice
    ("optim:\n  lr: 0.1\n  epochs: 3\n  lr: 0.2\n", "lr", (2, 4)),
    ("model:\n  kwargs:\n    a: 1\n    a: 2\n", "a", (3, 4)),
    ("optim: {lr: 0.1, lr: 0.2}\n", "lr", (1, 1)),
])
def test_a_key_given_twice_is_an_error_naming_it_and_both_lines(tmp_path, text, key, lines):
    path = write(tmp_path / "twice.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == (f"{path}:{lines[1]}: key {key!r} is given twice (lines {lines[0]} and {lines[1]}); "
                              "keep one of them")
    with pytest.raises(ConfigError, match=f"key 'lr' is given twice"):
        load_config(None, ["optim={lr: 1, lr: 2}"])


def test_yaml_merge_keys_still_override(tmp_path):
    path = write(tmp_path / "merge.yaml", "optim:\n  <<: {lr: 0.1, epochs: 3, warmup_epochs: 1}\n  lr: 0.2\n")
    cfg = load_config(path)
    assert (cfg.optim.lr, cfg.optim.epochs) == (0.2, 3)


def test_save_round_trip(tmp_path):
    cfg = load_config(None, ["optim.epochs=4", "optim.warmup_epochs=1", "data.dataset=ssv2"])
    path = save_config(cfg, str(tmp_path / "run"))
    again = load_config(path)
    assert again == cfg
    assert again.num_temporal_views == 2  # SSv2's default test views


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True)))
def test_shipped_configs_are_valid(path):
    if os.sep + "deepspeed" + os.sep in path:
        pytest.skip("DeepSpeed json/yaml, not a run config")
    load_config(path)


def test_renamed_keys_keep_working_with_one_deprecation_line_each(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(config_module, "_deprecations_logged", set())
    base = write(tmp_path / "base.yaml", {"model": {"visible_only": True, "dwconv_backend": "auto"}})
    run = write(tmp_path / "run.yaml", {"_base_": "base.yaml", "model": {"sparse": False, "use_kernel": "torch"}})
    with caplog.at_level(logging.WARNING, logger="video_mcmae.config"):
        cfg = load_config(run)  # the old names in the later file win over the new names in its base
        again = load_config(base, ["model.sparse=false"])
        load_config(None, ["model.sparse=true"])
    assert (cfg.model.visible_only, cfg.model.dwconv_backend) == (False, "torch")
    assert again.model.visible_only is False
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all("is deprecated" in line for line in lines)
    assert any("model.sparse" in line and "model.visible_only" in line for line in lines)
    assert any("model.use_kernel" in line and "model.dwconv_backend" in line for line in lines)
    both = write(tmp_path / "both.yaml", {"model": {"sparse": False, "visible_only": True}})
    with pytest.raises(ConfigError, match="model.sparse is the old name of model.visible_only; give only"):
        load_config(both)


def test_a_recorded_config_reads_in_today_s_names_and_fields():
    """An earlier run's record: renamed keys under their new names, and what it set through
    model.kwargs (the demo's norm_pix_loss) in the field of that name."""
    old = {"name": "videoconvmae_tiny_patch16", "sparse": False, "use_kernel": "torch",
           "kwargs": {"norm_pix_loss": False, "decoder_depth": 2}}
    model = recorded_model_config(old)
    assert (model.visible_only, model.dwconv_backend, model.norm_pix_loss) == (False, "torch", False)
    assert model.kwargs == {"decoder_depth": 2}
    assert recorded_config({"model": old, "optim": {"lr": 0.1}})["optim"] == {"lr": 0.1}
    assert old["kwargs"] == {"norm_pix_loss": False, "decoder_depth": 2}  # the record itself is left alone


def test_parse_typed_reads_yaml_and_takes_the_declared_type():
    parse = config_module.parse_typed
    assert parse("1e-3", float, "x") == 1e-3 and type(parse("1", float, "x")) is float
    assert parse("3", int, "x") == 3 and parse("circle", typing.Optional[str], "x") == "circle"
    assert parse("null", typing.Optional[str], "x") is None
    with pytest.raises(ConfigError, match=r"^--flag k=1.5: expected int, got 1.5$"):
        parse("1.5", int, "--flag k=1.5")
    with pytest.raises(ConfigError, match=r"^--flag k=true: expected float, got True$"):
        parse("true", float, "--flag k=true")
    with pytest.raises(ConfigError, match=r"^w: value is not valid YAML \("):
        parse("[1,", typing.List[int], "w")
