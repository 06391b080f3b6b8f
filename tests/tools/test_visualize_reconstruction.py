"""tools/visualize_reconstruction.py: output files and sizes, the masked-input panel, the undoing of
the target normalisation (checked against the models' own `target`), options and errors."""
import numpy as np
import pytest
import timm
import torch

import video_mcmae.models  # noqa: F401  (registers the presets)
from tests.conftest import tool_module
from video_mcmae import api

viz = tool_module("visualize_reconstruction")


@pytest.fixture(scope="module")
def mae_weights(tmp_path_factory):
    torch.manual_seed(0)
    model = timm.create_model("videoconvmae_tiny_patch16", num_frames=8, img_size=32)
    path = tmp_path_factory.mktemp("w") / "mae.pth"
    torch.save({"model": model.state_dict()}, path)
    return str(path)


@pytest.fixture(scope="module")
def video(tmp_path_factory, make_video):
    path = tmp_path_factory.mktemp("v") / "clip.mp4"
    make_video(path, num_frames=30, height=40, width=56, fps=10)  # any size: resized and centre-cropped
    return str(path)


def _load(weights, **kw):
    return api.load(weights, preset="videoconvmae_tiny_patch16", num_frames=8, img_size=32, **kw)


@pytest.mark.parametrize("mask_type, ratio", [("tube", 0.75), ("random", 0.5)])
def test_masked_panel_is_the_original_where_visible_and_the_fill_where_hidden(mae_weights, video, mask_type, ratio):
    rec = viz.reconstruct(_load(mae_weights), video, ratio, mask_type, seed=3)
    hidden = rec.pixel_mask
    assert hidden.shape == (8, 32, 32)
    assert rec.mask_ratio == pytest.approx(ratio) and hidden.mean() == pytest.approx(ratio)
    np.testing.assert_array_equal(rec.masked[~hidden], rec.original[~hidden])
    np.testing.assert_array_equal(rec.masked[hidden], np.broadcast_to(np.float32(viz.FILL), rec.masked[hidden].shape))
    np.testing.assert_array_equal(rec.reconstruction[~hidden], rec.original[~hidden])
    assert np.all(rec.error[~hidden] == 0) and rec.error[hidden].max() > 0
    if mask_type == "tube":  # the same spatial pattern in every frame
        assert (hidden == hidden[:1]).all()
    # hidden cells are whole 2x16x16 cubes of the stage-3 grid
    cubes = hidden.reshape(4, 2, 2, 16, 2, 16)
    assert (cubes == cubes[:, :1, :, :1, :, :1]).all()


def test_seed_changes_the_mask_and_is_reproducible(mae_weights, video):
    loaded = _load(mae_weights)
    a, b, c = (viz.reconstruct(loaded, video, 0.75, "tube", s).pixel_mask for s in (0, 0, 1))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("preset, kwargs", [("videoconvmae_tiny_patch16", dict(num_frames=4, img_size=32)),
                                            ("convmae_convvit_tiny_patch16", dict(img_size=32))])
def test_denormalisation_inverts_the_models_target(preset, kwargs):
    """Feeding the model's own normalised target back must give the original pixels."""
    torch.manual_seed(0)
    model = timm.create_model(preset, **kwargs)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, *([1] * (len(model.input_size))))
    std = torch.tensor([0.229, 0.224, 0.225]).view_as(mean)
    x01 = torch.rand(2, 3, *model.input_size)
    x = (x01 - mean) / std
    back = viz._denormalize_prediction(model, x, model.target(x), mean, std)
    torch.testing.assert_close(back, model.patchify(x01), atol=1e-5, rtol=1e-5)


def test_writes_mp4_gif_png_of_the_right_size(mae_weights, video, tmp_path):
    import av
    from PIL import Image

    out = tmp_path / "out"
    rc = viz.main([video, "--weights", mae_weights, "--preset", "videoconvmae_tiny_patch16", "--num-frames", "8",
                   "--img-size", "32", "--out", str(out), "--scale", "3", "--mask-ratio", "0.5", "--seed", "1"])
    assert rc == 0
    width, height = (4 * 32 + 3 * viz.GAP) * 3, 32 * 3
    with Image.open(out / "clip_recon.gif") as gif:
        assert gif.size == (width, height) and gif.n_frames == 8
    with Image.open(out / "clip_recon.png") as png:
        assert png.size == (width, viz.TITLE_HEIGHT + 8 * height)
        grid = np.asarray(png.convert("RGB"))
    with av.open(str(out / "clip_recon.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 8 and frames[0].shape == (height, width, 3)
    # the PNG is lossless: its first row of panels is the composed first frame
    rec = viz.reconstruct(_load(mae_weights), video, 0.5, "tube", 1)
    np.testing.assert_array_equal(grid[viz.TITLE_HEIGHT:viz.TITLE_HEIGHT + height], viz.compose(rec, 3)[0])


def test_image_input_and_default_name(mae_weights, tmp_path):
    from PIL import Image

    image = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(image)
    rc = viz.main([str(image), "--weights", mae_weights, "--preset", "videoconvmae_tiny_patch16",
                   "--num-frames", "8", "--img-size", "32", "--out", str(tmp_path), "--scale", "1"])
    assert rc == 0 and all((tmp_path / f"photo_recon.{e}").is_file() for e in ("mp4", "gif", "png"))


def test_earlier_outputs_are_replaced_only_with_overwrite(mae_weights, video, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "clip_recon.gif").write_bytes(b"an earlier reconstruction")
    args = [video, "--weights", mae_weights, "--preset", "videoconvmae_tiny_patch16", "--num-frames", "8",
            "--img-size", "32", "--out", str(out), "--scale", "1"]
    assert viz.main(args) == 2
    assert f"error: {out / 'clip_recon.gif'} exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["clip_recon.gif"]
    assert (out / "clip_recon.gif").read_bytes() == b"an earlier reconstruction"
    assert viz.main(args + ["--overwrite"]) == 0
    assert (out / "clip_recon.gif").read_bytes()[:3] == b"GIF" and (out / "clip_recon.png").is_file()


def test_errors_name_the_problem(mae_weights, video, tmp_path, capsys):
    cls = tmp_path / "cls.pth"
    torch.save(timm.create_model("videoconvvit_tiny_patch16", num_frames=8, img_size=32, num_classes=4).state_dict(), cls)
    common = ["--num-frames", "8", "--img-size", "32", "--out", str(tmp_path)]
    assert viz.main([video, "--weights", str(cls), "--preset", "videoconvvit_tiny_patch16", *common]) == 2
    assert "is a classifier" in capsys.readouterr().err
    assert viz.main([str(tmp_path / "none.mp4"), "--weights", mae_weights, "--preset", "videoconvmae_tiny_patch16", *common]) == 2
    assert "input not found" in capsys.readouterr().err
    assert viz.main([video, "--weights", mae_weights, "--preset", "videoconvmae_tiny_patch16", "--mask-ratio", "1.5", *common]) == 2
    assert "--mask-ratio 1.5" in capsys.readouterr().err
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    assert viz.main([str(broken), "--weights", mae_weights, "--preset", "videoconvmae_tiny_patch16", *common]) == 2
    assert "cannot read video" in capsys.readouterr().err
