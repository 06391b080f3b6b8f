"""A resume checks the checkpoint's recorded config against the one asked for before anything is
written: the model, its shapes, the class count, the task and the per-epoch step layout must
match (one `error:` line naming the keys, the output dir left byte for byte as it was), and so
must the number of samples in the train list unless run.accept_train_list_change; lr, epochs and
the like may change and are logged. config.yaml is never replaced: each resume writes
config.resume-N.yaml (and each evaluation after the first eval_config-N.yaml)."""
import os
import subprocess
import sys

import pytest
import torch
import yaml

from video_mcmae.cli import finetune, pretrain
from video_mcmae.config import load_config, save_config
from video_mcmae.engine import distributed, trainer
from video_mcmae.weights import MODEL_STATES

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PRETRAIN = os.path.join(REPO, "configs", "demo", "pretrain.yaml")
FINETUNE = os.path.join(REPO, "configs", "demo", "finetune.yaml")


def _snapshot(out):
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _opts(*opts):
    return [a for o in opts for a in ("--opt", o)]


def _recorded_run(out, config, opts, linprobe=None, train_samples=None):
    """A run dir as a one-rank run leaves it after epoch 1: config.yaml, epoch-0001/ with the
    model-states file (client state: config, epoch, sampler, train_samples), latest."""
    cfg = load_config(config, list(opts) + [f"run.output_dir={out}"])
    save_config(cfg, str(out))
    states = {"module": {}, "config": cfg.to_dict(), "epoch": 1, "global_step": 2,
              "sampler": {"seed": cfg.run.seed, "epoch": 1, "world_size": 1}}
    if linprobe is not None:
        states["linprobe"] = linprobe
    if train_samples is not None:
        states["train_samples"] = train_samples
    (out / "epoch-0001").mkdir(parents=True)
    torch.save(states, out / "epoch-0001" / MODEL_STATES)
    (out / "latest").write_text("epoch-0001")
    return out


def _one_error_line(printed):
    errors = [line for line in printed.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in printed, printed
    return errors[0]


@pytest.mark.parametrize("opt, saved, asked", [
    ("model.name=videoconvmae_small_patch16", "model.name=videoconvmae_tiny_patch16",
     "model.name=videoconvmae_small_patch16"),
    ("model.num_frames=16", "model.num_frames=8", "model.num_frames=16"),
    ("optim.batch_size=4", "optim.batch_size=8", "optim.batch_size=4"),
])
def test_pretraining_resume_with_another_model_or_layout_is_refused_before_writing(
        tmp_path, capsys, opt, saved, asked):
    out = _recorded_run(tmp_path / "run", PRETRAIN, ["run.tensorboard=false"])
    before = _snapshot(out)
    rc = pretrain.main(["--config", PRETRAIN, "--output_dir", str(out), "--auto_resume",
                        *_opts("run.tensorboard=false", "optim.lr=0.01", opt)])
    line = _one_error_line("".join(capsys.readouterr()))
    assert rc == 2
    assert line.startswith(f"error: cannot resume {out / 'epoch-0001'}: the checkpoint was made with {saved}; "
                           f"this run asks for {asked}; use the original config ({out / 'config.yaml'})"), line
    assert "optim.lr" not in line  # an allowed change is not named as a reason
    assert _snapshot(out) == before  # config.yaml byte-identical, no log.jsonl, nothing new


@pytest.mark.parametrize("args, named", [
    (_opts("model.num_classes=5"), ["model.num_classes=4", "model.num_classes=5"]),
    (["--linprobe"], ["task=finetuning", "task=linear probe"]),
])
def test_finetuning_resume_with_another_class_count_or_task_is_refused(tmp_path, capsys, args, named):
    out = _recorded_run(tmp_path / "run", FINETUNE, ["run.tensorboard=false"], linprobe=False)
    before = _snapshot(out)
    rc = finetune.main(["--config", FINETUNE, "--output_dir", str(out), "--resume", str(out),
                        *_opts("run.tensorboard=false"), *args])
    line = _one_error_line("".join(capsys.readouterr()))
    assert rc == 2 and f"error: cannot resume {out}: " in line
    assert all(n in line for n in named), line
    assert _snapshot(out) == before


def _train_list(path, n):
    path.write_text("".join(f"v{i}.mp4 0\n" for i in range(n)))
    return path


def test_a_train_list_of_another_length_is_refused_unless_accepted(tmp_path, capsys):
    train = _train_list(tmp_path / "train.csv", 6)
    opts = ["run.tensorboard=false", f"data.train_list={train}"]
    out = _recorded_run(tmp_path / "run", PRETRAIN, opts, train_samples=6)
    cfg = load_config(PRETRAIN, [f"run.output_dir={out}", *opts])
    assert trainer.check_resume(str(out), cfg, 1) == {}  # the same length: nothing to say
    _train_list(train, 5)  # a line removed since the checkpoint
    before = _snapshot(out)
    rc = pretrain.main(["--config", PRETRAIN, "--output_dir", str(out), "--auto_resume", *_opts(*opts)])
    line = _one_error_line("".join(capsys.readouterr()))
    assert rc == 2
    assert line == (f"error: cannot resume {out / 'epoch-0001'}: its run trained on 6 samples and the train list "
                    f"{train} now holds 5; restore the list, start a new --output_dir, or pass --opt "
                    "run.accept_train_list_change=true to go on with this list (the steps per epoch, and with "
                    "them the schedule, change)"), line
    assert _snapshot(out) == before
    accepted = load_config(PRETRAIN, [f"run.output_dir={out}", *opts, "run.accept_train_list_change=true"])
    assert trainer.check_resume(str(out), accepted, 1) == {
        "run.accept_train_list_change": (False, True), "train samples": (6, 5)}


def test_checkpoints_record_the_train_samples(tmp_path, one_rank, synthetic_root):
    d = synthetic_root / "ssv2"
    cfg = load_config(PRETRAIN, [f"run.output_dir={tmp_path / 'run'}", "run.tensorboard=false", f"data.data_root={d}",
                                 f"data.train_list={d / 'train.csv'}", "data.num_workers=0", "optim.batch_size=2"])
    run = trainer.start_run(cfg)
    try:
        dataset, _, _ = trainer.train_loader(run, "pretrain")
    finally:
        run.close()
        distributed.destroy()
    lines = [line for line in (d / "train.csv").read_text().splitlines() if line.strip()]
    assert trainer.client_state(run, [])["train_samples"] == len(dataset) == len(lines)


def test_each_resume_writes_its_own_config_file(tmp_path, one_rank):
    """config.yaml stays the first run's; resumes add config.resume-1.yaml, -2, ... with the
    settings they ran with; the changes are returned (and logged) as allowed."""
    out = _recorded_run(tmp_path / "run", PRETRAIN, ["run.tensorboard=false"])
    original = (out / "config.yaml").read_bytes()
    for n, lr in ((1, 0.01), (2, 0.02)):
        cfg = load_config(PRETRAIN, [f"run.output_dir={out}", "run.tensorboard=false", f"optim.lr={lr}"])
        assert trainer.check_resume(str(out), cfg, 1) == {"optim.lr": (None, lr)}
        run = trainer.start_run(cfg, auto_resume=True)
        run.close()
        distributed.destroy()
        assert yaml.safe_load((out / f"config.resume-{n}.yaml").read_text())["optim"]["lr"] == lr
    assert (out / "config.yaml").read_bytes() == original


def test_each_evaluation_writes_its_own_config_file(tmp_path, one_rank):
    """eval_config.yaml stays the first evaluation's; later ones into the same dir add
    eval_config-1.yaml, -2, ... with the settings they ran with."""
    out = tmp_path / "run"
    for n, batch in ((0, 2), (1, 3), (2, 4)):
        cfg = load_config(FINETUNE, [f"run.output_dir={out}", "run.tensorboard=false", f"test.batch_size={batch}"])
        run = trainer.start_run(cfg, eval_only=True)
        run.close()
        distributed.destroy()
        name = f"eval_config-{n}.yaml" if n else "eval_config.yaml"
        assert yaml.safe_load((out / name).read_text())["test"]["batch_size"] == batch
    assert yaml.safe_load((out / "eval_config.yaml").read_text())["test"]["batch_size"] == 2
    assert not (out / "config.yaml").exists()


def _pretrain_cmd(out, root, *opts):
    d = root / "ssv2"
    base = [f"data.data_root={d}", f"data.train_list={d / 'train.csv'}", "data.num_workers=0",
            "optim.batch_size=2", "optim.steps_per_epoch=2", "optim.warmup_epochs=1", "run.save_every=1",
            "run.log_every=1", "run.tensorboard=false"]
    return [sys.executable, os.path.join(REPO, "tools", "run_pretrain.py"), "--config", PRETRAIN,
            "--output_dir", str(out), *_opts(*base, *opts)]


@pytest.mark.slow
def test_real_checkpoint_refused_then_resumed_with_a_new_lr(tmp_path, synthetic_root, child_env):
    out = tmp_path / "run"
    first = subprocess.run(_pretrain_cmd(out, synthetic_root, "optim.epochs=1"), env=child_env,
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    before = _snapshot(out)

    # another frame count: refused in one line before DeepSpeed's strict load (a traceback before)
    refused = subprocess.run(_pretrain_cmd(out, synthetic_root, "optim.epochs=2", "model.num_frames=16") + ["--auto_resume"],
                             env=child_env, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2, refused.stdout[-3000:] + refused.stderr[-3000:]
    line = _one_error_line(refused.stdout + refused.stderr)
    assert "model.num_frames=8; this run asks for model.num_frames=16" in line
    assert _snapshot(out) == before

    # lr and epochs may change: the run continues, logs what changed, keeps config.yaml
    resumed = subprocess.run(_pretrain_cmd(out, synthetic_root, "optim.epochs=2", "optim.lr=0.002") + ["--auto_resume"],
                             env=child_env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "changed since the checkpoint: optim.epochs 1 -> 2, optim.lr null -> 0.002" in resumed.stdout
    assert "resumed" in resumed.stdout and (out / "latest").read_text() == "epoch-0002"
    assert (out / "config.yaml").read_bytes() == before["config.yaml"]
    again = yaml.safe_load((out / "config.resume-1.yaml").read_text())
    assert again["optim"]["lr"] == 0.002 and again["optim"]["epochs"] == 2


def test_run_deterministic_sets_the_kernels_of_the_run(tmp_path, one_rank):
    """run.deterministic switches torch's deterministic algorithms on for the run (and the next run
    without it switches them off): the condition under which resume is exact at any thread count."""
    try:
        for flag in (True, False):
            cfg = load_config(FINETUNE, [f"run.output_dir={tmp_path / str(flag)}", "run.tensorboard=false",
                                         f"run.deterministic={str(flag).lower()}"])
            run = trainer.start_run(cfg)
            run.close()
            distributed.destroy()
            assert torch.are_deterministic_algorithms_enabled() is flag
    finally:
        distributed.set_deterministic(False)
