"""The tools on hostile, edited or careless inputs (issue 21): an output folder that cannot be
written is refused before any work, an edited export or a shard carrying code is one line, a
config with a key given twice names both lines, `latest` cannot lead out of the run folder or
hide a non-UTF-8 name, thousands of missing test videos are summarised, and a ZeRO folder lacking
a rank's optimizer file stops both ranks of a resume before the engine loads. Every refusal is
exit status 2 and one `error:` line, without a traceback."""
import dataclasses
import json
import os
import subprocess
import sys

import pytest
import timm
import torch
from safetensors.torch import save_file

from tests.conftest import tool_module
from video_mcmae.cli import finetune, pretrain
from video_mcmae.cli import multiview as multiview_cli
from video_mcmae.config import ModelConfig, load_config
from video_mcmae.engine import checkpoint as checkpoint_module
from video_mcmae.engine.multiview import run as multiview_run
from video_mcmae.engine.multiview.shards import SHARD_FORMAT
from video_mcmae.weights import EXPORT_FORMAT, MODEL_STATES

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FINETUNE_CONFIG = os.path.join(REPO, "configs", "demo", "finetune.yaml")
PRETRAIN_CONFIG = os.path.join(REPO, "configs", "demo", "pretrain.yaml")
TINY = ModelConfig(name="videoconvvit_tiny_patch16", num_frames=8, img_size=64, num_classes=4)
export_tool, viz_tool = tool_module("export_weights"), tool_module("visualize_reconstruction")


class Payload:
    """Unpickling this would create the folder `path`."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


def _unwritable():
    """A folder below which no file can be created, even by root: sysfs refuses new entries."""
    try:
        os.close(os.open("/sys/.video_mcmae-probe", os.O_CREAT | os.O_WRONLY))
    except OSError:
        return "/sys/video_mcmae-out"
    os.unlink("/sys/.video_mcmae-probe")
    pytest.skip("no read-only folder on this machine")


def _not_called(what):
    def fail(*args, **kwargs):
        raise AssertionError(f"{what} ran before the output folder was checked")
    return fail


def _one_error(rc, text):
    """The one `error:` line of a refused run (exit status 2, no traceback)."""
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(errors) == 1 and "Traceback" not in text, text[-3000:]
    assert "\x1b" not in errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory, synthetic_root):
    """A tiny export, a two-video test list and a test config for it, a checkpoint tag folder."""
    import video_mcmae.models  # noqa: F401  (registers the presets)

    d = tmp_path_factory.mktemp("reading")
    model = timm.create_model(TINY.name, num_frames=8, img_size=64, num_classes=4)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(d / "tiny.safetensors"))
    info = {"format": EXPORT_FORMAT, "preset": TINY.name, "model": dataclasses.asdict(TINY), "linprobe": False}
    (d / "tiny.json").write_text(json.dumps(info))
    root = synthetic_root / "ssv2"
    (d / "test.csv").write_text("\n".join((root / "test.csv").read_text().splitlines()[:2]) + "\n")
    (d / "test.yaml").write_text(json.dumps(
        {"model": dataclasses.asdict(TINY), "deepspeed": {"precision": "fp32"},
         "data": {"dataset": "ssv2", "data_root": str(root), "num_workers": 0, "test_list": str(d / "test.csv"),
                  "short_side_size": 64, "test_num_temporal_views": 1, "test_num_spatial_crops": 1},
         "run": {"device": "cpu"}}))
    (d / "run" / "epoch-0001").mkdir(parents=True)
    torch.save({"module": state, "config": load_config(FINETUNE_CONFIG).to_dict(), "epoch": 1},
               d / "run" / "epoch-0001" / MODEL_STATES)
    return d


def _test(files, *args):
    return multiview_cli.main(["--config", str(files / "test.yaml"), *args])


def _finetune_args(root, out, *extra):
    d = root / "ssv2"
    opts = [f"data.data_root={d}", f"data.train_list={d / 'train.csv'}", f"data.val_list={d / 'val.csv'}",
            f"data.class_names={d / 'classes.txt'}", "data.num_workers=0", "run.device=cpu", "run.tensorboard=false",
            "optim.batch_size=2", "optim.epochs=1", "optim.warmup_epochs=1", "optim.steps_per_epoch=1"]
    return ["--config", FINETUNE_CONFIG, "--output_dir", str(out), *[a for o in opts for a in ("--opt", o)], *extra]


def _pretrain_args(root, out, *extra):
    d = root / "ssv2"
    opts = [f"data.data_root={d}", f"data.train_list={d / 'train.csv'}", "data.num_workers=0",
            "deepspeed.zero_stage=1", "deepspeed.precision=fp32", "optim.batch_size=2", "optim.epochs=1",
            "optim.steps_per_epoch=1", "optim.warmup_epochs=0", "run.tensorboard=false"]
    return ["--config", PRETRAIN_CONFIG, "--output_dir", str(out), *[a for o in opts for a in ("--opt", o)], *extra]


# ---------------------------------------------------------------------------------------------
# Output folders are checked before the work


def test_multiview_test_refuses_an_unwritable_report_folder_before_loading_anything(files, monkeypatch, capsys):
    out = _unwritable()
    monkeypatch.setattr(multiview_run, "load_test_model", _not_called("the model"))
    line = _one_error(_test(files, "--checkpoint", str(files / "tiny.safetensors"), "--output_dir", f"{out}/test"),
                      capsys.readouterr().err)
    assert line.startswith(f"error: the report folder (--output_dir / test.output_dir) '{out}/test' (its nearest "
                           "existing folder '/sys'): it is not writable (Permission denied)")


def test_export_to_an_unwritable_folder_says_so_before_reading_the_checkpoint(files, monkeypatch, capsys):
    out = _unwritable()
    monkeypatch.setattr(checkpoint_module, "read_weights", _not_called("reading the checkpoint"))
    line = _one_error(export_tool.main([str(files / "run" / "epoch-0001"), f"{out}/w"]), capsys.readouterr().err)
    assert "the export's folder" in line and "not writable" in line and "free" not in line


def test_visualize_refuses_an_unwritable_out_before_loading(files, monkeypatch, capsys):
    out = _unwritable()
    monkeypatch.setattr(viz_tool.api, "load", _not_called("the model"))
    rc = viz_tool.run_cli(lambda: viz_tool.main(["video.webm", "--weights", str(files / "tiny.safetensors"), "--out", out]))
    assert f"error: --out '{out}'" in _one_error(rc, capsys.readouterr().err)


def test_training_refuses_an_unwritable_output_dir(synthetic_root, capsys):
    out = _unwritable()
    line = _one_error(finetune.main(_finetune_args(synthetic_root, out)), capsys.readouterr().err)
    assert line.startswith(f"error: run.output_dir (--output_dir) '{out}'") and "not writable" in line


# ---------------------------------------------------------------------------------------------
# Edited or hostile inputs


def test_export_of_a_folder_holding_a_fifo_is_one_line(files, tmp_path, capsys):
    run = tmp_path / "run"
    (run / "epoch-0001").mkdir(parents=True)
    (run / "epoch-0001" / MODEL_STATES).write_bytes((files / "run" / "epoch-0001" / MODEL_STATES).read_bytes())
    os.mkfifo(run / "epoch-0001" / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    line = _one_error(export_tool.main([str(run / "epoch-0001"), str(tmp_path / "w")]), capsys.readouterr().err)
    assert line.startswith(f"error: {run / 'epoch-0001' / 'zero_pp_rank_0_mp_rank_00_optim_states.pt'} is a FIFO, "
                           "not a file")


@pytest.mark.parametrize("edit", ["no model", "model a list", "unknown preset"])
def test_multiview_test_on_an_edited_export_is_one_line(files, tmp_path, edit, capsys):
    info = json.loads((files / "tiny.json").read_text())
    if edit == "no model":
        del info["model"]
    elif edit == "model a list":
        info["model"] = [info["model"]]
    else:
        info["preset"] = "videoconvvit_giant"
    (tmp_path / "w.json").write_text(json.dumps(info))
    (tmp_path / "w.safetensors").symlink_to(files / "tiny.safetensors")
    line = _one_error(_test(files, "--checkpoint", str(tmp_path / "w.safetensors"), "--output_dir", str(tmp_path / "t")),
                      capsys.readouterr().err)
    assert line.startswith(f"error: {tmp_path / 'w.json'} ") and line.endswith(
        "it was changed after the export: export the weights again with tools/export_weights.py")


def test_merge_of_a_shard_carrying_code_is_one_line_naming_the_global(tmp_path, capsys):
    shards = tmp_path / "test" / "shards"
    shards.mkdir(parents=True)
    torch.save({"format": SHARD_FORMAT, "x": Payload(str(tmp_path / "ran"))}, shards / "shard-00000-of-00001.pt")
    rc = multiview_cli.merge_main(["--shards", str(shards)])
    line = _one_error(rc, capsys.readouterr().err)
    assert line == (f"error: cannot read shard '{shards / 'shard-00000-of-00001.pt'}': checkpoint file "
                    f"{shards / 'shard-00000-of-00001.pt'} contains code or objects that are not plain weights "
                    "(posix.mkdir); it was not loaded — only resume/export checkpoints you made or trust")
    assert "weights_only" not in line and not (tmp_path / "ran").exists()


def test_a_config_section_given_twice_is_one_line_naming_both(synthetic_root, tmp_path, capsys):
    config = tmp_path / "twice.yaml"
    config.write_text(f"_base_: {FINETUNE_CONFIG}\nrun:\n  save_every: 1\noptim:\n  lr: 0.001\nrun:\n  save_every: 20\n")
    args = _finetune_args(synthetic_root, tmp_path / "out")
    args[args.index("--config") + 1] = str(config)
    line = _one_error(finetune.main(args), capsys.readouterr().err)
    assert line == f"error: {config}:6: key 'run' is given twice (lines 2 and 6); keep one of them"


@pytest.mark.parametrize("latest", ["../other_run/epoch-0001", "{other}/epoch-0001", "not utf-8"])
def test_auto_resume_never_follows_latest_out_of_the_run_folder(synthetic_root, tmp_path, latest, capsys, files):
    run, other = tmp_path / "run", tmp_path / "other_run"
    for folder in (run, other):
        (folder / "epoch-0001").mkdir(parents=True)
        (folder / "epoch-0001" / MODEL_STATES).write_bytes((files / "run" / "epoch-0001" / MODEL_STATES).read_bytes())
    (run / "latest").write_bytes(b"epoch-\xff01" if latest == "not utf-8" else latest.format(other=other).encode())
    line = _one_error(pretrain.main(_pretrain_args(synthetic_root, run, "--auto_resume")), capsys.readouterr().err)
    assert line.startswith(f"error: {run / 'latest'} ")
    assert ("not a UTF-8 tag name" if latest == "not utf-8" else "which is not a folder of this run folder") in line


def test_ten_thousand_missing_test_videos_are_summarised(files, tmp_path, capsys, caplog):
    (tmp_path / "missing.csv").write_text("".join(f"gone/video-{i:05d}.webm 0\n" for i in range(10_000)))
    run_dir = tmp_path / "run"
    rc = _test(files, "--checkpoint", str(files / "tiny.safetensors"), "--output_dir", str(tmp_path / "t"),
               "--opt", f"data.test_list={tmp_path / 'missing.csv'}", "--opt", f"run.output_dir={run_dir}")
    captured = capsys.readouterr()
    printed = captured.out + captured.err + caplog.text
    assert rc == 2 and sum("video-0" in line for line in printed.splitlines()) <= 3, printed[-3000:]
    listing = run_dir / "unreadable_test.tsv"
    assert f"10000 unreadable test videos: " in printed and f"(all 10000 listed in {listing})" in printed
    assert len(listing.read_text().splitlines()) == 10_000


# ---------------------------------------------------------------------------------------------
# A ZeRO folder lacking a rank's optimizer file, on two ranks


def _two_ranks(out, synthetic_root, child_env, free_port, *extra):
    cmd = [os.path.join(os.path.dirname(sys.executable), "deepspeed"), "--num_gpus", "2", "--master_port", free_port(),
           os.path.join(REPO, "tools", "run_pretrain.py"), *_pretrain_args(synthetic_root, out, *extra)]
    return subprocess.run(cmd, cwd=out.parent, env=child_env, capture_output=True, text=True, timeout=400)


@pytest.mark.slow
def test_a_zero_folder_lacking_a_ranks_file_stops_both_ranks_in_one_line(synthetic_root, tmp_path, child_env,
                                                                         free_port, capsys):
    out = tmp_path / "run"
    proc = _two_ranks(out, synthetic_root, child_env, free_port)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (shard,) = (out / "epoch-0001").glob("*zero_pp_rank_1_*optim_states.pt")
    shard.unlink()
    proc = _two_ranks(out, synthetic_root, child_env, free_port, "--auto_resume", "--opt", "optim.epochs=2")
    text = proc.stdout + proc.stderr
    line = _one_error(proc.returncode, text)
    assert line.startswith(f"error: checkpoint folder {out / 'epoch-0001'} lacks the ZeRO optimizer file of rank(s) 1 "
                           "of the 2 that saved it")
    assert "Connection closed" not in text and "exits with return code = 2" in text
    assert not (out / "epoch-0002").exists()
    line = _one_error(export_tool.main([str(out), str(tmp_path / "w")]), capsys.readouterr().err)
    assert "lacks the ZeRO optimizer file of rank(s) 1" in line
