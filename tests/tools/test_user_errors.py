"""The tools' one exception boundary (video_mcmae.cli.run_cli): broken weights and lists, a config
that is not UTF-8, an output path that is a file, a full or read-only disk and weights of another
model end as exit status 2 and one `error: ...` line on stderr naming the file, never a traceback."""
import dataclasses
import errno
import json
import os
import random
import subprocess
import sys

import pytest
import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from video_mcmae.cli import finetune
from video_mcmae.cli import multiview as multiview_cli
from video_mcmae.config import ModelConfig, load_config
from video_mcmae.weights import EXPORT_FORMAT, MODEL_STATES

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FINETUNE_CONFIG = os.path.join(REPO, "configs", "demo", "finetune.yaml")
TINY = ModelConfig(name="videoconvvit_tiny_patch16", num_frames=8, img_size=64, num_classes=4)


class Payload:
    """Unpickling this would create the folder `path`."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


def _save(model_name, path, **kwargs):
    model = timm.create_model(model_name, num_frames=8, img_size=64, **kwargs)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


@pytest.fixture(scope="module")
def files(tmp_path_factory, synthetic_root):
    import video_mcmae.models  # noqa: F401  (registers the presets)

    d = tmp_path_factory.mktemp("broken")
    (d / "truncated.safetensors").write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{\"head.weight\": {\"dtype\"")
    torch.save({"model": Payload(str(d / "payload-ran"))}, d / "payload.pth")
    (d / "garbage.pth").write_bytes(random.Random(0).randbytes(512))
    (d / "latin1.csv").write_bytes("vidéo.webm 0\n".encode("latin-1"))
    (d / "binary.csv").write_bytes(b"\xff\xfe\x00\x01" + random.Random(1).randbytes(200))
    (d / "latin1.yaml").write_bytes(f"_base_: {FINETUNE_CONFIG}  # réglages\n".encode("latin-1"))
    (d / "a_file").write_text("not a folder\n")
    _save("videoconvvit_small_patch16", d / "small.safetensors", num_classes=4)
    _save("videoconvvit_tiny_patch16", d / "seven_classes.safetensors", num_classes=7)
    # a DeepSpeed-style tag folder (model states + our client state) to export
    cfg = load_config(FINETUNE_CONFIG)
    model = timm.create_model(TINY.name, num_frames=8, img_size=64, num_classes=4)
    (d / "run" / "epoch-0001").mkdir(parents=True)
    torch.save({"module": model.state_dict(), "config": cfg.to_dict(), "epoch": 1}, d / "run" / "epoch-0001" / MODEL_STATES)
    # an export and a test list for the multi-view test
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "tiny.safetensors"))
    (d / "tiny.json").write_text(json.dumps({"format": EXPORT_FORMAT, "preset": TINY.name,
                                             "model": dataclasses.asdict(TINY), "linprobe": False}))
    root = synthetic_root / "ssv2"
    (d / "test.csv").write_text("\n".join((root / "test.csv").read_text().splitlines()[:2]) + "\n")
    return d


def _finetune_args(root, out, *extra):
    d = root / "ssv2"
    opts = [f"data.data_root={d}", f"data.train_list={d / 'train.csv'}", f"data.val_list={d / 'val.csv'}",
            f"data.class_names={d / 'classes.txt'}", "data.num_workers=0", "run.device=cpu", "run.tensorboard=false",
            "optim.batch_size=2", "optim.epochs=1", "optim.warmup_epochs=1", "optim.steps_per_epoch=1",
            "model.img_size=64", "data.short_side_size=64"]  # the sizes of the weights made above
    return ["--config", FINETUNE_CONFIG, "--output_dir", str(out)] + [a for o in opts for a in ("--opt", o)] + list(extra)


def _raise(error):
    def fail(*args, **kwargs):
        raise error
    return fail


def _read_only_under(folder):
    makedirs = os.makedirs

    def fake(path, *args, **kwargs):
        if os.path.abspath(path).startswith(str(folder)):
            raise OSError(errno.EROFS, "Read-only file system", os.fspath(path))
        return makedirs(path, *args, **kwargs)
    return fake


# case: (how to run it, what the one line must contain)
CASES = {
    "truncated_safetensors": ("finetune", ["--finetune", "{d}/truncated.safetensors"], "{d}/truncated.safetensors"),
    "pickle_pth": ("finetune", ["--finetune", "{d}/payload.pth"], "{d}/payload.pth"),
    "garbage_pth": ("finetune", ["--finetune", "{d}/garbage.pth"], "{d}/garbage.pth"),
    "latin1_list": ("finetune", ["--opt", "data.train_list={d}/latin1.csv"], "{d}/latin1.csv:1: not UTF-8"),
    "binary_list": ("finetune", ["--opt", "data.val_list={d}/binary.csv"], "{d}/binary.csv:1: not UTF-8"),
    "latin1_config": ("finetune", ["--config", "{d}/latin1.yaml"], "{d}/latin1.yaml' is not UTF-8"),
    "output_dir_is_a_file": ("finetune", ["--output_dir", "{d}/a_file"], "({d}/a_file): a file is where a folder"),
    "read_only_disk": ("finetune_read_only", [], "Read-only file system ({out}"),
    "full_disk_safetensors": ("export_full_disk", [], "No space left on device"),
    "full_disk_torch_file": ("multiview_full_disk", [], "unexpected pos 576 vs 534): the disk is full or read-only"),
    "finetune_another_preset": ("finetune", ["--finetune", "{d}/small.safetensors"],
                                "{d}/small.safetensors does not fit model.name=videoconvvit_tiny_patch16"),
    "finetune_another_class_count": ("finetune", ["--finetune", "{d}/seven_classes.safetensors"],
                                     "has a classifier head for 7 classes but model.num_classes=4"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_user_errors_are_one_line_and_exit_2(case, files, synthetic_root, tmp_path, monkeypatch, capsys,
                                            load_tool):
    how, extra, expected = CASES[case]
    out = tmp_path / "out"
    extra = [a.format(d=files) for a in extra]
    if how == "finetune":
        rc = finetune.main(_finetune_args(synthetic_root, out, *extra))
    elif how == "finetune_read_only":
        monkeypatch.setattr(os, "makedirs", _read_only_under(out))
        rc = finetune.main(_finetune_args(synthetic_root, out))
    elif how == "export_full_disk":
        full = SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        monkeypatch.setattr("video_mcmae.engine.checkpoint.save_file", _raise(full))
        rc = load_tool("export_weights").main([str(files / "run" / "epoch-0001"), str(out / "w")])
    else:
        monkeypatch.setattr(torch, "save", _raise(RuntimeError("[enforce fail at inline_container.cc:672] . "
                                                                "unexpected pos 576 vs 534")))
        cfg = {"model": dataclasses.asdict(TINY), "deepspeed": {"precision": "fp32"},
               "data": {"dataset": "ssv2", "data_root": str(synthetic_root / "ssv2"), "num_workers": 0,
                        "test_list": str(files / "test.csv"), "short_side_size": 64,
                        "test_num_temporal_views": 1, "test_num_spatial_crops": 1},
               "run": {"device": "cpu"}}
        (tmp_path / "test.yaml").write_text(json.dumps(cfg))
        rc = multiview_cli.main(["--config", str(tmp_path / "test.yaml"), "--checkpoint", str(files / "tiny.safetensors"),
                           "--output_dir", str(out)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]  # after the progress bars, if any
    assert rc == 2 and lines[-1].startswith("error: ") and sum(line.startswith("error") for line in lines) == 1, err
    assert expected.format(d=files, out=out) in lines[-1]
    assert "Traceback" not in err
    assert not (files / "payload-ran").exists()


@pytest.mark.slow
def test_the_tools_print_the_line_on_stderr(files, synthetic_root, tmp_path, child_env):
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "run_finetune.py"),
                           *_finetune_args(synthetic_root, files / "a_file")],
                          env=child_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert [line for line in proc.stderr.splitlines() if line.startswith("error:")] == [
        f"error: run.output_dir (--output_dir) ({files / 'a_file'}): a file is where a folder is needed: remove it, "
        "or choose another output folder"]

