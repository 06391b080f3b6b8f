"""Show what a pretraining model reconstructs: original | masked input | reconstruction | error.

    python tools/visualize_reconstruction.py VIDEO_OR_IMAGE --weights W [--out DIR]
        [--mask-ratio 0.9] [--mask-type tube|random] [--seed 0] [--scale 4] [--fps N]

W is anything `video_mcmae.api.load` reads for a pretraining model: exported weights
(`.safetensors` with its `.json`), a DeepSpeed checkpoint folder or run dir, or a state dict file
with `--preset` (and `--num-frames` / `--img-size` when they differ from the preset's defaults).

The clip is read like a validation clip (the dataset kind's validation sampling, short side
resize, centre crop). The model predicts every masked cube in its normalised target space (per
cube and channel standardised, docs/recipes.md#masking-and-targets); the statistics of the
original clip's cubes turn the prediction back into pixels. The reconstruction panel shows the
prediction where the model saw nothing and the original where it was visible; the error panel
shows |reconstruction - original| (zero where visible), brightened by --error-gain.

Writes <out>/<name>_recon.mp4 (H.264), <name>_recon.gif and <name>_recon.png (a grid: one row
per frame, the four panels side by side, a title strip on top); earlier files of that name are
replaced only with --overwrite.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from fractions import Fraction
from typing import Optional

import av
import numpy as np
import torch
from PIL import Image, ImageDraw

from video_mcmae import api
from video_mcmae.api import IMAGE_EXTENSIONS, ApiError, input_geometry
from video_mcmae.cli import run_cli
from video_mcmae.data.lists import DataListError
from video_mcmae.data.readers import VideoReadError, open_video
from video_mcmae.models import draw_mask
from video_mcmae.paths import check_writable
from video_mcmae.weights import CheckpointError

PANELS = ("original", "masked input", "reconstruction", "error")
FILL = (0.5, 0.5, 0.5)  # colour of hidden cubes in the masked-input panel
GAP = 2  # pixels between panels (before scaling), filled white
TITLE_HEIGHT = 28  # title strip of the PNG grid: two lines of PIL's default font
OUTPUTS = ("mp4", "gif", "png")  # <out>/<name>_recon.<ext>


@dataclass
class Reconstruction:
    """Float images in [0, 1], each (T, H, W, 3) (T = 1 for image models), and the pixel mask."""

    original: np.ndarray
    masked: np.ndarray
    reconstruction: np.ndarray
    error: np.ndarray
    pixel_mask: np.ndarray  # (T, H, W) bool, True = hidden from the model
    mask_ratio: float
    loss: float


def _denormalize_prediction(model, x: torch.Tensor, pred: torch.Tensor, mean: torch.Tensor,
                            std: torch.Tensor) -> torch.Tensor:
    """Prediction rows in the model's target space -> patches of pixels in [0, 1] (patchify layout).

    The model's `unnormalize_target` undoes its per-patch normalisation with the statistics of the
    original clip. Video targets are then pixels in [0, 1]; 2D targets the normalised image.
    """
    pixels = model.unnormalize_target(x, pred)
    if len(model.input_size) == 3:
        return pixels
    return model.patchify(model.unpatchify(pixels) * std + mean)


def _to_frames(x: torch.Tensor) -> np.ndarray:
    """(1, 3, T, H, W) or (1, 3, H, W) -> (T, H, W, 3) float numpy."""
    x = x[0]
    if x.ndim == 3:
        x = x[:, None]
    return x.permute(1, 2, 3, 0).float().clamp(0, 1).numpy()


@torch.no_grad()
def reconstruct(loaded, path: str, mask_ratio: float, mask_type: str, seed: int) -> Reconstruction:
    """Run the pretraining model of `loaded` (a `video_mcmae.api.LoadedModel`) on one file."""
    model = loaded.model
    if not hasattr(model, "patchify"):
        raise ApiError(f"{loaded.preset} is a classifier; reconstructions need the pretraining model "
                       "(a videoconvmae_* / convmae_* checkpoint or export)")
    x = loaded.clip(path)
    mean = x.new_tensor(loaded.settings.mean).view(1, -1, *([1] * (x.ndim - 2)))
    std = x.new_tensor(loaded.settings.std).view(1, -1, *([1] * (x.ndim - 2)))
    x01 = x * std + mean
    generator = torch.Generator(device="cpu").manual_seed(seed)
    try:
        mask = draw_mask(mask_type, 1, model.grid_size, mask_ratio, generator).to(x.device)
    except ValueError as e:
        raise ApiError(f"--mask-type {mask_type} / --mask-ratio {mask_ratio}: {e}") from None
    loss, pred, mask = model(x, mask=mask)
    patches = model.patchify(x01)
    recon_patches = torch.where(mask[..., None], _denormalize_prediction(model, x, pred.float(), mean, std), patches)
    pixel_mask = model.unpatchify(mask[..., None].expand_as(patches).float()) > 0.5
    fill = x.new_tensor(FILL).view_as(mean).expand_as(x01)
    masked = torch.where(pixel_mask, fill, x01)
    recon = model.unpatchify(recon_patches)
    original = _to_frames(x01)
    reconstruction = _to_frames(recon)
    return Reconstruction(
        original=original, masked=_to_frames(masked), reconstruction=reconstruction,
        error=np.abs(reconstruction - original), pixel_mask=_to_frames(pixel_mask.float())[..., 0] > 0.5,
        mask_ratio=float(mask.float().mean()), loss=float(loss))


def compose(rec: Reconstruction, scale: int = 1, error_gain: float = 3.0) -> np.ndarray:
    """uint8 (T, H·scale, (4·W + 3·GAP)·scale, 3): the four panels side by side per frame."""
    error = np.clip(rec.error.mean(axis=-1, keepdims=True) * error_gain, 0, 1).repeat(3, axis=-1)
    panels = [rec.original, rec.masked, rec.reconstruction, error]
    t, h, w, _ = rec.original.shape
    gap = np.ones((t, h, GAP, 3), np.float32)
    row = np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=2)
    row = np.clip(row * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return row.repeat(scale, axis=1).repeat(scale, axis=2)


def _even(frames: np.ndarray) -> np.ndarray:
    """H.264 in yuv420p needs even sides: pad one white row/column where needed."""
    t, h, w, _ = frames.shape
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), constant_values=255)


def write_mp4(path: str, frames: np.ndarray, fps: float) -> None:
    frames = _even(frames)
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "12", "preset": "veryfast"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def write_gif(path: str, frames: np.ndarray, fps: float) -> None:
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=max(int(round(1000 / fps)), 20),
                   loop=0, optimize=False)


def write_grid(path: str, frames: np.ndarray, panel_width: int, scale: int, title: str) -> None:
    """One row per frame under a title strip (the run, then the panel names); lossless PNG."""
    t, h, w, _ = frames.shape
    grid = np.full((TITLE_HEIGHT + t * h, w, 3), 255, np.uint8)
    grid[TITLE_HEIGHT:] = frames.reshape(t * h, w, 3)
    image = Image.fromarray(grid)
    draw = ImageDraw.Draw(image)
    draw.text((2, 1), title, fill=(0, 0, 0))
    for i, name in enumerate(PANELS):
        draw.text((i * (panel_width + GAP) * scale + 2, 14), name, fill=(0, 0, 0))
    image.save(path)


def output_fps(loaded, path: str, requested: Optional[float]) -> float:
    """The clip's own pace: source fps over the frame stride (dense) or over the segment length."""
    if requested:
        return requested
    num_frames, _ = input_geometry(loaded.model)
    if num_frames is None or path.lower().endswith(IMAGE_EXTENSIONS):
        return 4.0
    s = loaded.settings
    with open_video(path, s.reader) as reader:
        fps, n = reader.fps or 25.0, reader.num_frames
    stride = s.sampling_rate if s.dataset == "k400" else max(n / num_frames, 1.0)
    return max(fps / stride, 1.0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="a video file (any length, size, fps) or an image")
    p.add_argument("--weights", required=True, help="exported .safetensors (+ .json), checkpoint folder/run dir, or state dict with --preset")
    p.add_argument("--preset", default=None, help="model preset, if the weights do not name it")
    p.add_argument("--num-frames", type=int, default=None, help="clip length, for state dicts without a config")
    p.add_argument("--img-size", type=int, default=None, help="crop side, for state dicts without a config")
    p.add_argument("--dataset", choices=("k400", "ssv2"), default=None,
                   help="sampling of the video: dense (k400) or segment (ssv2); default: the run config's, else k400")
    p.add_argument("--sampling-rate", type=int, default=None, help="dense sampling stride (default: the run config's, else 4)")
    p.add_argument("--mask-ratio", type=float, default=None, help="default: the model's (0.9 for videos)")
    p.add_argument("--mask-type", choices=("tube", "random"), default=None, help="default: the model's")
    p.add_argument("--seed", type=int, default=0, help="seed of the mask")
    p.add_argument("--out", default="output/reconstructions", help="output folder")
    p.add_argument("--name", default=None, help="file name stem (default: the input's)")
    p.add_argument("--overwrite", action="store_true", help="replace earlier outputs of the same name")
    p.add_argument("--scale", type=int, default=None, help="integer upscaling (default: to about 192 px high)")
    p.add_argument("--fps", type=float, default=None, help="output frame rate (default: the clip's pace)")
    p.add_argument("--error-gain", type=float, default=3.0, help="brightening of the error panel")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {k: v for k, v in (("num_frames", args.num_frames), ("img_size", args.img_size)) if v is not None}
    stem = os.path.join(args.out, (args.name or os.path.splitext(os.path.basename(args.input))[0]) + "_recon")
    check_writable(args.out, "--out")  # before the model runs
    earlier = [f"{stem}.{ext}" for ext in OUTPUTS if os.path.exists(f"{stem}.{ext}")]
    if earlier and not args.overwrite:
        print(f"error: {earlier[0]} exists; pass --overwrite to replace it, or choose another --out or --name",
              file=sys.stderr)
        return 2
    try:
        loaded = api.load(args.weights, preset=args.preset, dataset=args.dataset, sampling_rate=args.sampling_rate,
                          device=args.device, **overrides)
        model = loaded.model
        ratio = args.mask_ratio if args.mask_ratio is not None else getattr(model, "mask_ratio", 0.9)
        mask_type = args.mask_type or getattr(model, "mask_type", "tube")
        rec = reconstruct(loaded, args.input, ratio, mask_type, args.seed)
        fps = output_fps(loaded, args.input, args.fps)
    except (ApiError, CheckpointError, DataListError, VideoReadError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    h, w = rec.original.shape[1:3]
    scale = args.scale or max(1, round(192 / h))
    frames = compose(rec, scale, args.error_gain)
    os.makedirs(args.out, exist_ok=True)
    title = f"{loaded.preset}  mask {mask_type} {rec.mask_ratio:.0%}  seed {args.seed}  loss {rec.loss:.3f}"
    write_mp4(stem + ".mp4", frames, fps)
    write_gif(stem + ".gif", frames, fps)
    write_grid(stem + ".png", frames, w, scale, title)
    print(f"{title}\n{len(frames)} frames of {h}x{w} ({' | '.join(PANELS)}), x{scale}, {fps:g} fps")
    for ext in OUTPUTS:
        print(f"wrote {stem}.{ext}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
