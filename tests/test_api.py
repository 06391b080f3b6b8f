"""video_mcmae.api: loading weights in every supported form, the validation-path input, features,
top-k predictions, errors, and the README snippet executed verbatim."""
import contextlib
import io
import json
import os
import re
import shutil

import pytest
import timm
import torch

from video_mcmae import api
from video_mcmae.config import DataConfig, load_config
from video_mcmae.data.factory import build_dataset
from video_mcmae.data.device import normalize_batch
from video_mcmae.weights import EXPORT_FORMAT

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GEOMETRY = dict(num_frames=8, img_size=32)


def _export(stem, preset, num_classes=4, seed=0):
    """Exported weights as tools/export_weights.py writes them (safetensors + json)."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    kwargs = dict(GEOMETRY) if preset.startswith("videoconvmae") else dict(GEOMETRY, num_classes=num_classes)
    model = timm.create_model(preset, **kwargs)
    os.makedirs(os.path.dirname(stem), exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, stem + ".safetensors")
    cfg = load_config(None, [f"model.name={preset}", "model.num_frames=8", "model.img_size=32",
                             f"model.num_classes={num_classes}"])
    with open(stem + ".json", "w") as f:
        json.dump({"format": EXPORT_FORMAT, "preset": preset, "model": cfg.to_dict()["model"]}, f)
    return model.eval()


@pytest.fixture(scope="module")
def classifier_export(tmp_path_factory):
    stem = str(tmp_path_factory.mktemp("weights") / "finetuned")
    return stem + ".safetensors", _export(stem, "videoconvvit_tiny_patch16")


def test_clip_is_the_validation_loader_item(classifier_export, synthetic_dataset):
    """Same sampling (SSv2 segment centres), resize, crop and normalisation as the val dataset."""
    path, _ = classifier_export
    root = synthetic_dataset.data_root("ssv2")
    loaded = api.load(path, dataset="ssv2", short_side_size=40)
    cfg = load_config(None, ["data.dataset=ssv2", f"data.data_root={root}",
                             f"data.val_list={synthetic_dataset.list_path('ssv2', 'val')}", "model.num_frames=8",
                             "model.img_size=32", "data.short_side_size=40", "model.num_classes=4", "data.reader=pyav"])
    val = build_dataset(cfg, "val")
    expected, _ = val[1]
    expected = normalize_batch(expected[None], cfg.data.mean, cfg.data.std)[0]
    got = loaded.clip(val.samples[1].path)
    assert got.shape == (1, 3, 8, 32, 32)
    torch.testing.assert_close(got[0], expected)
    # Kinetics-style dense sampling picks other frames of the same video
    dense = api.load(path, dataset="k400", sampling_rate=2, short_side_size=40).clip(val.samples[1].path)
    assert not torch.equal(dense, got)


def test_features_and_predictions(classifier_export, synthetic_dataset):
    path, model = classifier_export
    class_file = str(synthetic_dataset.class_file("ssv2"))
    loaded = api.load(path, class_names=class_file, dataset="ssv2")
    video = str(synthetic_dataset.data_root("ssv2") / "videos" / sorted(os.listdir(synthetic_dataset.data_root("ssv2") / "videos"))[0])
    feats = loaded.features(video)
    assert feats["pooled"].shape == (64,)
    assert feats["stage1"].shape == (32, 4, 8, 8)
    assert feats["stage2"].shape == (48, 4, 4, 4)
    assert feats["stage3"].shape == (64, 4, 2, 2)
    with torch.no_grad():
        logits = model(loaded.clip(video))[0]
    torch.testing.assert_close(loaded.model.forward_head(feats["pooled"][None])[0], logits)
    top = loaded.predict(video, k=3)
    assert [p.label for p in top] == logits.topk(3).indices.tolist()
    assert [p.name for p in top] == [synthetic_dataset.class_names[p.label] for p in top]
    assert top[0].prob >= top[1].prob >= top[2].prob
    torch.testing.assert_close(torch.tensor(top[0].prob), logits.softmax(-1).max())
    assert len(loaded.predict(video, k=10)) == 4  # k is capped at the number of classes


def test_image_input_is_repeated_over_the_clip(classifier_export, tmp_path):
    from PIL import Image

    path, _ = classifier_export
    image = tmp_path / "frame.png"
    Image.new("RGB", (48, 40), (200, 30, 30)).save(image)
    clip = api.load(path).clip(str(image))
    assert clip.shape == (1, 3, 8, 32, 32)
    assert torch.equal(clip[:, :, :1].expand_as(clip), clip)


def test_state_dict_needs_a_preset_and_matching_geometry(tmp_path, classifier_export, synthetic_dataset):
    _, model = classifier_export
    pth = tmp_path / "plain.pth"
    torch.save(model.state_dict(), pth)
    with pytest.raises(api.ApiError, match="pass preset="):
        api.load(str(pth))
    loaded = api.load(str(pth), preset="videoconvvit_tiny_patch16", num_classes=4, **GEOMETRY)
    for (name, a), b in zip(loaded.model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(api.ApiError, match="does not fit"):
        api.load(str(pth), preset="videoconvvit_tiny_patch16", num_classes=7, **GEOMETRY)
    with pytest.raises(api.ApiError, match="unknown preset"):
        api.load(str(pth), preset="videoconvvit_huge")
    with pytest.raises(api.ApiError, match="weights not found"):
        api.load(str(tmp_path / "missing.pth"), preset="videoconvvit_tiny_patch16")
    with pytest.raises(api.ApiError, match="3 class names for a model with 4 classes"):
        api.load(str(pth), preset="videoconvvit_tiny_patch16", num_classes=4, class_names=["a", "b", "c"], **GEOMETRY)


def test_pretraining_weights_give_features_not_predictions(tmp_path, synthetic_dataset):
    stem = str(tmp_path / "pretrained")
    mae = _export(stem, "videoconvmae_tiny_patch16")
    video = str(synthetic_dataset.data_root("ssv2") / "videos" / sorted(os.listdir(synthetic_dataset.data_root("ssv2") / "videos"))[0])
    raw = api.load(stem + ".safetensors", dataset="ssv2")
    with pytest.raises(api.ApiError, match="pretraining model"):
        raw.features(video)
    encoder = api.load(stem + ".safetensors", preset="videoconvvit_tiny_patch16", dataset="ssv2")
    assert not encoder.trained_head
    torch.testing.assert_close(encoder.model.patch_embed1.proj.weight, mae.patch_embed1.proj.weight)
    assert encoder.features(video)["pooled"].shape == (64,)
    with pytest.raises(api.ApiError, match="no trained classifier head"):
        encoder.predict(video)


def test_export_with_its_data_config_picks_the_sampling(tmp_path, synthetic_dataset):
    """Exports that record the run's data section (dataset kind, rate, short side) need no dataset=."""
    stem = str(tmp_path / "w")
    _export(stem, "videoconvvit_tiny_patch16")
    with open(stem + ".json") as f:
        info = json.load(f)
    info["data"] = load_config(None, ["data.dataset=ssv2", "data.short_side_size=40", "data.sampling_rate=3", "model.img_size=32"]).to_dict()["data"]
    with open(stem + ".json", "w") as f:
        json.dump(info, f)
    settings = api.load(stem + ".safetensors").settings
    assert (settings.dataset, settings.short_side_size, settings.sampling_rate) == ("ssv2", 40, 3)
    assert api.load(stem + ".safetensors", dataset="k400").settings.dataset == "k400"  # an argument wins


def test_settings_are_the_run_data_config(classifier_export):
    """Without a recorded data section: DataConfig defaults, the short side is the crop side, and
    the reader is the keyword's; an image dataset kind has no video sampling."""
    path, _ = classifier_export
    settings = api.load(path).settings
    assert (settings.mean, settings.std) == (DataConfig().mean, DataConfig().std)  # ImageNet's
    assert (settings.dataset, settings.sampling_rate, settings.short_side_size, settings.reader) == ("k400", 4, 32, "pyav")
    with pytest.raises(api.ApiError, match="choose 'k400' \\(dense sampling\\) or 'ssv2'"):
        api.load(path, dataset="image")


def test_missing_input_file_is_named(classifier_export, tmp_path):
    path, _ = classifier_export
    with pytest.raises(api.ApiError, match="input not found"):
        api.load(path).predict(str(tmp_path / "nope.mp4"))


def _readme_snippet():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"<!-- api-snippet -->(.*?)<!-- /api-snippet -->", text, re.S)
    if m is None:
        return None
    code = re.search(r"```python\n(.*?)```", m.group(1), re.S)
    assert code is not None, "README api-snippet markers hold no ```python block"
    return code.group(1)


def test_readme_snippet_runs_verbatim(tmp_path, monkeypatch, synthetic_dataset):
    """The snippet reads the demo's outputs (output/demo/...); the test lays out the same files
    (a tiny untrained classifier, the synthetic set) and runs the snippet unchanged."""
    snippet = _readme_snippet()
    assert snippet is not None, "README.md lost its <!-- api-snippet --> ... <!-- /api-snippet --> block"
    demo = tmp_path / "output" / "demo"
    _export(str(demo / "weights" / "finetuned"), "videoconvvit_tiny_patch16")
    shutil.copytree(synthetic_dataset.root, demo / "data")
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(snippet, "README.md:api-snippet", "exec"), {})
    printed = out.getvalue()
    assert any(name in printed for name in synthetic_dataset.class_names), printed
