"""Checkpoint tags/`latest`, and in-process DeepSpeed engines (one CPU rank): save -> export ->
load equals the engine's fp32 weights; resume restores weights, optimizer and loop position; a
NaN loss stops before the step."""
import os

import pytest
import torch

from video_mcmae.cli.environment import run_environment
from video_mcmae import run_folder
from video_mcmae.config import RunConfig, load_config
from video_mcmae.engine import checkpoint as ckpt
from video_mcmae.engine import distributed
from video_mcmae.engine.logging import TrainLogger
from video_mcmae.engine.schedule import build_schedules, lr_plan
from video_mcmae.engine.trainer import NonFiniteLossError, Run, client_state, make_engine, resume_engine, train_one_epoch
from video_mcmae.models import build_model
from video_mcmae.errors import CheckpointError
from video_mcmae.models import from_weights
from video_mcmae.weights import MODEL_STATES, load_checkpoint_file, read_weights
from tests.conftest import compute_conditions

# ---------------------------------------------------------------------------------------------
# Saves (no DeepSpeed)


def _fake_ckpt(out, tag):
    os.makedirs(out / tag, exist_ok=True)
    (out / tag / MODEL_STATES).write_bytes(b"x")


def test_the_resumed_epoch_comes_from_the_tag_or_else_the_client_state(tmp_path):
    _fake_ckpt(tmp_path, "epoch-0007")
    assert ckpt.checkpoint_epoch(str(tmp_path / "epoch-0007")) == 7
    os.makedirs(tmp_path / "best")
    torch.save({"module": {}, "epoch": 4}, tmp_path / "best" / MODEL_STATES)
    assert ckpt.checkpoint_epoch(str(tmp_path / "best")) == 4
    with pytest.raises(CheckpointError, match="exported weights need"):
        read_weights(str(tmp_path / "missing.safetensors"), accept=("export",))


class _FakeEngine:
    """`engine.save_checkpoint` of one rank: writes a model-states file (holding `n`) into
    `out/<tag>`, or fails half-way like a full disk."""

    def __init__(self, out):
        self.out, self.calls, self.fail = out, [], False

    def save_checkpoint(self, save_dir, tag, client_state, save_latest):
        folder = self.out / tag
        self.calls.append((tag, sorted(p.name for p in self.out.iterdir()), save_latest))
        os.makedirs(folder, exist_ok=True)
        if self.fail:
            (folder / MODEL_STATES).write_bytes(b"cut")
            raise OSError(28, "No space left on device")
        torch.save({"n": client_state["n"]}, folder / MODEL_STATES)


def test_saves_are_renamed_into_place_once_complete(tmp_path):
    engine = _FakeEngine(tmp_path)
    os.makedirs(tmp_path / "epoch-0001.partial")
    (tmp_path / "epoch-0001.partial" / "stale.pt").write_bytes(b"from a killed save")
    assert ckpt.save_checkpoint(engine, str(tmp_path), "epoch-0001", {"n": 1}) == str(tmp_path / "epoch-0001")
    # DeepSpeed wrote into the temporary name, after the leftover of the same tag was removed
    assert engine.calls == [("epoch-0001.partial", [], False)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0001", "latest"]
    assert sorted(p.name for p in (tmp_path / "epoch-0001").iterdir()) == [MODEL_STATES]
    assert run_folder.read_latest(str(tmp_path)) == "epoch-0001"

    engine.fail = True  # a full disk: the partial folder stays, nothing else changes
    with pytest.raises(OSError):
        ckpt.save_checkpoint(engine, str(tmp_path), "epoch-0002", {"n": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0001", "epoch-0002.partial", "latest"]
    assert run_folder.find_auto_resume(str(tmp_path)) == str(tmp_path / "epoch-0001")
    engine.fail = False
    ckpt.save_checkpoint(engine, str(tmp_path), "epoch-0002", {"n": 2}, keep=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0002", "latest"]

    for n in (3, 4):  # `best` is replaced whole; `latest` stays on the epoch checkpoint
        ckpt.save_checkpoint(engine, str(tmp_path), "best", {"n": n}, mark_latest=False)
        assert torch.load(tmp_path / "best" / MODEL_STATES, weights_only=True) == {"n": n}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "epoch-0002", "latest"]
    assert run_folder.read_latest(str(tmp_path)) == "epoch-0002"


# ---------------------------------------------------------------------------------------------
# In-process engines


@pytest.fixture(scope="module")
def dist_info():
    # A plain one-process CPU run's environment, as the tools set it. The one-rank group stays up
    # afterwards: DeepSpeed caches its groups for the life of the process.
    with run_environment(RunConfig(device="cpu")):
        yield distributed.init("cpu")


def _run(tmp_path, info, zero, precision):
    cfg = load_config(None, [
        "model.name=videoconvvit_tiny_patch16", "model.num_frames=4", "model.img_size=32", "model.num_classes=3",
        "data.short_side_size=32", "optim.batch_size=2", "optim.epochs=2", "optim.warmup_epochs=0",
        "optim.lr=1e-2", "optim.layer_decay=0.75", f"deepspeed.zero_stage={zero}", f"deepspeed.precision={precision}",
        f"run.output_dir={tmp_path}", "run.tensorboard=false",
    ])
    run = Run(cfg, info, TrainLogger(str(tmp_path), True, 1, tensorboard=False), None)
    engine, optimizer, names = make_engine(run, build_model(cfg.model))
    return run, engine, optimizer, names


def _batches(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(2, 3, 4, 32, 32, generator=g), torch.randint(0, 3, (2,), generator=g)) for _ in range(n)]


def _ce_step(engine, batch, generator):
    x, y = batch
    return torch.nn.functional.cross_entropy(engine(x.to(engine.module.head.weight.dtype)).float(), y)


def _train(run, engine, optimizer, steps=3):
    sched = build_schedules(run.cfg, lr_plan(run.cfg, 1), steps)
    return train_one_epoch(run, engine, optimizer, _batches(steps), sched, steps, _ce_step, torch.Generator())


def _engine_fp32(engine, names):
    """The engine's fp32 (master) weights by name."""
    from deepspeed.utils import safe_get_full_fp32_param

    out = {}
    masters = getattr(engine.optimizer, "fp32_groups", None)
    flat_names = [n for g in names for n in g]
    by_name = dict(zip(flat_names, [t for g in masters for t in g])) if masters and not engine.zero_optimization() else {}
    for n, p in engine.module.named_parameters():
        full = safe_get_full_fp32_param(p)
        out[n] = (full if full is not None else by_name.get(n, p)).detach().float().cpu()
    return out


@pytest.mark.parametrize("zero, precision", [(0, "fp32"), (0, "bf16"), (2, "bf16")])
def test_export_then_load_equals_engine_weights(tmp_path, dist_info, zero, precision):
    run, engine, optimizer, names = _run(tmp_path / "run", dist_info, zero, precision)
    stats = _train(run, engine, optimizer)
    assert run.global_step == 3 and stats["grad_norm"] > 0
    run.epoch = 1
    ckpt.save_checkpoint(engine, run.out_dir, run_folder.epoch_tag(1), client_state(run, names))
    assert run_folder.read_latest(run.out_dir) == "epoch-0001" and run_folder.partial_checkpoints(run.out_dir) == []
    ckpt.check_checkpoint(run.out_dir)  # what DeepSpeed wrote reads weights-only
    sf, meta_path = ckpt.export_weights(run.out_dir, str(tmp_path / "export" / "w"))
    exported = read_weights(sf, accept=("export",))
    model, meta = from_weights(exported)[0], exported.meta
    assert meta["preset"] == "videoconvvit_tiny_patch16" and meta["epoch"] == 1 and meta["global_step"] == 3
    assert meta["data"]["dataset"] == run.cfg.data.dataset  # api.load picks the sampling from it
    want = _engine_fp32(engine, names)
    got = dict(model.named_parameters())
    assert set(got) == set(want)
    for n, w in want.items():
        assert got[n].dtype == torch.float32
        torch.testing.assert_close(got[n].detach(), w, rtol=0, atol=0, msg=n)
    with pytest.raises(ckpt.CheckpointError, match="exists; choose another output name or pass --overwrite"):
        ckpt.export_weights(run.out_dir, sf)


@pytest.mark.parametrize("threads,deterministic", [(1, False), (2, False), (4, False), (2, True)])
def test_resume_restores_weights_optimizer_and_position(tmp_path, dist_info, threads, deterministic):
    """The resumed run repeats the uninterrupted one bit for bit in bf16 at the same thread count
    (4 oversubscribes a 2-core machine), with `run.deterministic` or without."""
    with compute_conditions(threads, deterministic):
        run, engine, optimizer, names = _run(tmp_path / "a", dist_info, 1, "bf16")
        _train(run, engine, optimizer)
        run.epoch = 1
        path = ckpt.save_checkpoint(engine, run.out_dir, run_folder.epoch_tag(1), client_state(run, names))
        before = _train(run, engine, optimizer)  # the continuation we must reproduce
        after_a = _engine_fp32(engine, names)

        run_b, engine_b, optimizer_b, names_b = _run(tmp_path / "b", dist_info, 1, "bf16")
        run_b.resume_path = path
        resume_engine(run_b, engine_b)
        assert (run_b.epoch, run_b.global_step) == (1, 3)
        again = _train(run_b, engine_b, optimizer_b)
    assert again["loss"] == before["loss"]
    for n, w in _engine_fp32(engine_b, names_b).items():
        torch.testing.assert_close(w, after_a[n], rtol=0, atol=0, msg=n)


def test_a_load_reads_each_checkpoint_file_once_and_weights_only(tmp_path, dist_info, monkeypatch):
    run, engine, optimizer, names = _run(tmp_path, dist_info, 1, "bf16")
    run.epoch = 1
    path = ckpt.save_checkpoint(engine, run.out_dir, run_folder.epoch_tag(1), client_state(run, names))
    reads, load = [], torch.load

    def spy(f, *args, **kwargs):
        reads.append((os.path.basename(str(f)), kwargs.get("weights_only")))
        return load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    assert ckpt.load_checkpoint(engine, path)["epoch"] == 1
    assert sorted(reads) == sorted((name, True) for name in os.listdir(path))


class _Payload:
    """A pickle that would create a file when unpickled without weights_only."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_a_file_deepspeed_would_run_is_refused(tmp_path, dist_info):
    run, engine, optimizer, names = _run(tmp_path / "run", dist_info, 1, "bf16")
    run.epoch = 1
    path = ckpt.save_checkpoint(engine, run.out_dir, run_folder.epoch_tag(1), client_state(run, names))
    (optim,) = [os.path.join(path, f) for f in os.listdir(path) if f != MODEL_STATES]
    target = tmp_path / "pwned"
    torch.save({**load_checkpoint_file(optim, mmap=False), "x": _Payload(str(target))}, optim)
    own = engine.checkpoint_engine
    with pytest.raises(ckpt.CheckpointError, match=f"checkpoint file {optim} contains code .*io.open"):
        ckpt.load_checkpoint(engine, path)
    assert not target.exists()
    assert engine.checkpoint_engine is own  # DeepSpeed's own again, for the saves


def test_nan_loss_stops_before_the_step(tmp_path, dist_info):
    run, engine, optimizer, names = _run(tmp_path, dist_info, 0, "fp32")
    weights = {n: p.detach().clone() for n, p in engine.module.named_parameters()}
    sched = build_schedules(run.cfg, lr_plan(run.cfg, 1), 2)

    def nan_step(engine, batch, generator):
        return _ce_step(engine, batch, generator) * float("nan")

    with pytest.raises(NonFiniteLossError, match="loss is nan .* epoch 1, iteration 1, global step 0.*no checkpoint"):
        train_one_epoch(run, engine, optimizer, _batches(2), sched, 2, nan_step, torch.Generator())
    for n, p in engine.module.named_parameters():
        assert torch.equal(p, weights[n]), n
    assert run_folder.epoch_tags(run.out_dir) == []
