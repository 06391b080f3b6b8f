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
    check_checkpoint_folder,
    load_checkpoint_file,
    read_weights,
    unwrap_state_dict,
)
from video_mcmae.run_folder import read_latest, resolve_checkpoint

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
    with pytest.raises(CheckpointError, match=r"payload.pth contains code .*not plain weights \(io.open\)") as err:
        read_weights(str(tmp_path / "payload.pth"))
    assert "weights_only=False" not in str(err.value) and "\n" not in str(err.value)
    assert not target.exists()
    with pytest.raises(CheckpointError, match="state dict of tensors"):
        unwrap_state_dict({"model": {"a": 1}})


def test_checkpoint_folder_with_code_is_refused_naming_the_file(tmp_path):
    target = tmp_path / "pwned"
    tag_dir = _checkpoint(tmp_path / "run")
    optim = tag_dir / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    torch.save({"optimizer_state_dict": {"step": torch.tensor(3.0)}, "x": _Payload(str(target))}, optim)
    with pytest.raises(CheckpointError) as err:
        read_weights(str(tmp_path / "run"))
    assert str(err.value) == (
        f"checkpoint file {optim} contains code or objects that are not plain weights (io.open); it was not "
        "loaded — only resume/export checkpoints you made or trust")
    optim.unlink()
    check_checkpoint_folder(str(tag_dir))  # the rest is plain
    states = torch.load(tag_dir / MODEL_STATES, weights_only=True)
    torch.save({**states, "extra": _Payload(str(target))}, tag_dir / MODEL_STATES)
    with pytest.raises(CheckpointError, match=f"checkpoint file {tag_dir / MODEL_STATES} contains code .*io.open"):
        check_checkpoint_folder(str(tag_dir))
    with pytest.raises(CheckpointError, match="not plain weights"):
        read_weights(str(tag_dir))
    assert not target.exists()


def test_cut_short_and_unfinished_checkpoints(tmp_path):
    tag_dir = _checkpoint(tmp_path / "run")
    data = (tag_dir / MODEL_STATES).read_bytes()
    (tag_dir / MODEL_STATES).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"cannot read {tag_dir / MODEL_STATES} .*not a complete zip archive"):
        read_weights(str(tag_dir))
    partial = _checkpoint(tmp_path / "run2", tag="epoch-0003.partial")  # `latest` names it too
    assert read_latest(str(tmp_path / "run2")) is None
    with pytest.raises(CheckpointError, match="epoch-0003.partial' is a checkpoint save that did not finish.*--auto_resume"):
        resolve_checkpoint(str(partial))


def test_the_types_deepspeed_writes_are_allowed(tmp_path):
    # ZeRO optimizer files hold DeepSpeed's loss scaler (dynamic with fp16, which the CPU cannot
    # run), its stage enum and fragment addresses; nothing else from DeepSpeed is unpickled.
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler  # heavy: only this test
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    tag_dir = _checkpoint(tmp_path / "run")
    optim = tag_dir / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt"
    dynamic = DynamicLossScaler(init_scale=2.0 ** 16, scale_window=1000, min_scale=1, delayed_shift=2,
                                consecutive_hysteresis=False, dtype=torch.float16)
    torch.save({"optimizer_state_dict": {"loss_scaler": dynamic, "static": LossScaler(128.0),
                                         "zero_stage": ZeroStageEnum.gradients,
                                         "param_slice_mappings": [{"w": fragment_address(numel=6, start=0)}]},
                "ds_config": {"fp16": {"enabled": True}}}, optim)
    check_checkpoint_folder(str(tag_dir))
    loaded = load_checkpoint_file(str(optim))["optimizer_state_dict"]
    assert loaded["loss_scaler"].cur_scale == 2.0 ** 16 and loaded["loss_scaler"].dtype == torch.float16
    assert loaded["static"].cur_scale == 128.0 and loaded["zero_stage"] is ZeroStageEnum.gradients
    assert loaded["param_slice_mappings"][0]["w"] == fragment_address(numel=6, start=0)
