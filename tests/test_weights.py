"""video_mcmae.weights: every form a path can hold (export, DeepSpeed folder, state dict file), the
forms a caller accepts, and the errors for missing, foreign or broken files."""
import json
import os

import pytest
import torch
from safetensors.torch import save_file

from video_mcmae.weights import (
    EXPORT_FORMAT,
    MODEL_STATES,
    CheckpointError,
    read_weights,
    unwrap_state_dict,
)

STATE = {"blocks.0.weight": torch.arange(6.0).view(2, 3), "head.bias": torch.ones(2)}
MODEL = {"name": "videoconvvit_tiny_patch16", "num_classes": 2}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _export(stem, **extra):
    save_file(STATE, f"{stem}.safetensors")
    with open(f"{stem}.json", "w") as f:
        json.dump({"format": EXPORT_FORMAT, "preset": MODEL["name"], "model": MODEL, **extra}, f)


def _checkpoint(run_dir, tag="epoch-0002"):
    os.makedirs(run_dir / tag)
    torch.save({"module": STATE, "config": {"model": MODEL, "data": {"dataset": "ssv2"}}, "epoch": 2,
                "global_step": 7, "linprobe": True}, run_dir / tag / MODEL_STATES)
    (run_dir / "latest").write_text(tag)
    return run_dir / tag


def test_export(tmp_path):
    _export(tmp_path / "w", data={"dataset": "ssv2"}, epoch=3)
    for path in (tmp_path / "w.safetensors", tmp_path / "w"):
        w = read_weights(str(path), accept=("export",))
        assert w.form == "export" and w.preset == MODEL["name"] and _same(w.state_dict, STATE)
        assert w.config == {"model": MODEL, "data": {"dataset": "ssv2"}} and w.meta["epoch"] == 3
    assert read_weights(str(tmp_path / "w.safetensors")).form == "export"


def test_checkpoint_folder_and_run_dir(tmp_path):
    tag_dir = _checkpoint(tmp_path / "run")
    for path in (tag_dir, tmp_path / "run"):
        w = read_weights(str(path))
        assert w.form == "checkpoint" and w.preset == MODEL["name"] and w.linprobe
        assert _same(w.state_dict, STATE) and w.config["data"] == {"dataset": "ssv2"}
        assert w.meta == {"epoch": 2, "global_step": 7, "linprobe": True}


@pytest.mark.parametrize("wrap", ["plain", "model", "module", "ddp_prefix"])
def test_state_dict_files(tmp_path, wrap):
    state = {f"module.{k}": v for k, v in STATE.items()} if wrap == "ddp_prefix" else STATE
    torch.save(state if wrap in ("plain", "ddp_prefix") else {wrap: state, "epoch": 1}, tmp_path / "w.pth")
    w = read_weights(str(tmp_path / "w.pth"))
    assert w.form == "state_dict" and w.preset is None and w.config == {} and _same(w.state_dict, STATE)


def test_safetensors_beside_another_tools_json_is_a_state_dict(tmp_path):
    save_file(STATE, str(tmp_path / "w.safetensors"))
    assert read_weights(str(tmp_path / "w.safetensors")).form == "state_dict"
    (tmp_path / "w.json").write_text(json.dumps({"architectures": ["Other"]}))
    assert read_weights(str(tmp_path / "w.safetensors")).form == "state_dict"
    with pytest.raises(CheckpointError, match="is not a video_mcmae export"):
        read_weights(str(tmp_path / "w.safetensors"), accept=("export",))


def test_accepted_forms_and_missing_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights not found: .*nope.pth"):
        read_weights(str(tmp_path / "nope.pth"))
    with pytest.raises(CheckpointError, match="not a complete DeepSpeed checkpoint"):
        read_weights(str(tmp_path / "nope"), accept=("checkpoint",))
    tag_dir = _checkpoint(tmp_path / "run")
    with pytest.raises(CheckpointError, match="exported weights need"):
        read_weights(str(tag_dir), accept=("export",))
    save_file(STATE, str(tmp_path / "bare.safetensors"))
    with pytest.raises(CheckpointError, match="exported weights need .*bare.json"):
        read_weights(str(tmp_path / "bare.safetensors"), accept=("export", "checkpoint"))


class _Payload:
    """A pickle that would create a file when unpickled without weights_only."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_broken_and_foreign_files_are_one_clear_error(tmp_path):
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="weights-only torch checkpoint"):
        read_weights(str(tmp_path / "garbage.pth"))
    (tmp_path / "cut.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(CheckpointError, match="cannot read .*cut.safetensors as a safetensors file"):
        read_weights(str(tmp_path / "cut.safetensors"))
    target = tmp_path / "pwned"
    torch.save({"model": STATE, "extra": _Payload(str(target))}, tmp_path / "payload.pth")
    with pytest.raises(CheckpointError, match="weights-only"):
        read_weights(str(tmp_path / "payload.pth"))
    assert not target.exists()
    with pytest.raises(CheckpointError, match="state dict of tensors"):
        unwrap_state_dict({"model": {"a": 1}})
