"""Shared fixtures: generated videos and a tiny synthetic dataset (made once per session)."""

import contextlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable, Union

# Before any test module can import decord: a PyAV loaded after decord cannot encode VP9 (see
# video_mcmae.synthetic.encode_video).
import av  # noqa: F401
import numpy as np
import pytest

import torch

from video_mcmae import synthetic
from video_mcmae.cli.environment import run_environment
from video_mcmae.config import RunConfig
from video_mcmae.engine.distributed import set_deterministic

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def tool_module(name: str) -> ModuleType:
    """tool_module("benchmark") -> tools/benchmark.py as a fresh module named ``benchmark_tool`` (the tools
    are scripts, not a package). For module-level use: ``from tests.conftest import tool_module``."""
    spec = importlib.util.spec_from_file_location(f"{name}_tool", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def load_tool() -> Callable[[str], ModuleType]:
    """load_tool("benchmark") -> tools/benchmark.py as a fresh module (see ``tool_module``)."""
    return tool_module


@contextlib.contextmanager
def compute_conditions(threads: int, deterministic: bool):
    """Run a block with `threads` torch threads and deterministic kernels on or off (what
    `run.deterministic` sets), then restore the caller's: a test whose assertion depends on them
    states them instead of inheriting the machine's (torch takes 1 or 2 threads on 2 CPUs)."""
    saved = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    set_deterministic(deterministic)
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        set_deterministic(saved[1])


@pytest.fixture
def one_rank():
    """The environment of a plain one-process CPU run, as the tools set it (`cli.environment`), for a
    test that calls the engine in this process; removed afterwards. (The one-rank process group
    itself stays up: DeepSpeed caches its groups for the life of the process.)"""
    with run_environment(RunConfig(device="cpu")):
        yield


# The tiny dataset every test shares; tests read these to know what to expect.
TINY = dict(num_classes=4, videos_per_class={"train": 3, "val": 2, "test": 2}, num_frames=24,
            fps=12, height=64, width=64, seed=0, layouts="both")


def pattern_frames(num_frames: int, height: int, width: int) -> np.ndarray:
    """(T, H, W, 3) uint8 frames whose frame t is told apart by its grey level
    (16 + 223 * t / (T - 1), distinct for T <= 224), with a small red square moving
    diagonally so the encoder sees motion."""
    levels = np.round(16 + 223 * np.arange(num_frames) / max(num_frames - 1, 1)).astype(np.uint8)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    frames[:] = levels[:, None, None, None]
    side = max(min(height, width) // 8, 2)
    for t in range(num_frames):
        y, x = (t * 2) % (height - side), (t * 3) % (width - side)
        frames[t, y:y + side, x:x + side] = (255, 0, 0)
    return frames


def write_pattern_video(path: Union[str, Path], num_frames: int = 16, height: int = 64, width: int = 64,
                        codec: str = "h264", fps: int = 16) -> np.ndarray:
    """Encode ``pattern_frames`` to ``path`` (codec 'h264' -> use .mp4, 'vp9' -> .webm) and
    return the frames that went in (the decoded ones differ by compression only)."""
    frames = pattern_frames(num_frames, height, width)
    synthetic.encode_video(path, frames, codec=codec, fps=fps)
    return frames


@pytest.fixture(scope="session")
def make_video() -> Callable[..., np.ndarray]:
    """``make_video(path, num_frames=16, height=64, width=64, codec='h264'|'vp9', fps=16)``
    writes a short test video and returns its source frames (see ``pattern_frames``)."""
    return write_pattern_video


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> synthetic.SyntheticDataset:
    """The tiny synthetic set (``TINY``): 4 classes, 3/2/2 videos per class, 24 frames, 64x64,
    both layouts. Lists: ``ds.list_path('k400'|'ssv2', split)``, paths relative to
    ``ds.data_root(layout)``; class names: ``ds.class_file(layout)``."""
    # One process: pool start-up costs more than it saves for 28 small videos.
    return synthetic.make_dataset(tmp_path_factory.mktemp("synthetic"), workers=1, **TINY)


@pytest.fixture(scope="session")
def synthetic_root(synthetic_dataset) -> Path:
    """Root of the tiny synthetic set: ``<root>/k400/{train,val,test}.csv``, ``<root>/k400/classes.txt``,
    ``<root>/ssv2/...`` the same; list paths are relative to ``<root>/<layout>``."""
    return synthetic_dataset.root
