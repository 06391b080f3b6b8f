import glob
import json
import os

import pytest

from video_mcmae.config import load_config
from video_mcmae.engine.logging import TrainLogger
from video_mcmae.models import build_model, is_pretraining

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_logger_console_jsonl_and_quiet_ranks(tmp_path, capsys):
    log = TrainLogger(str(tmp_path), enabled=True, log_every=2, tensorboard=False)
    log.start_epoch()
    for it in range(3):
        log.log_iter(1, it, 3, it + 1, remaining_iters=10 - it,
                     metrics={"loss": 1.0 + it, "lr": 0.1 * (it + 1), "data_time": 0.01, "iter_time": 0.5})
    log.log_epoch(1, 3, {"loss": 2.0})
    log.close()
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3  # iterations 2 and 3 (epoch end), then the epoch line
    assert "epoch 1 [2/3] step 2 loss 1.5 lr 0.2" in lines[0]  # loss averaged, lr as scheduled now
    assert "2.00 it/s" in lines[0] and "eta epoch 0:00:00 run 0:00:04" in lines[0]
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["type"] for r in records] == ["iter", "iter", "epoch"] and records[1]["loss"] == 3.0

    quiet = TrainLogger(str(tmp_path / "rank1"), enabled=False, log_every=1)
    quiet.log_iter(1, 0, 1, 1, 0, {"loss": 1.0, "data_time": 0.0, "iter_time": 0.1})
    assert not (tmp_path / "rank1").exists() and capsys.readouterr().out == ""


CONFIGS = sorted(p for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True)
                 if os.sep + "deepspeed" + os.sep not in p)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, REPO))
def test_shipped_configs_name_their_source_and_build(path):
    with open(path, encoding="utf-8") as f:
        assert "docs/recipes.md" in f.read().split("\n\n")[0]
    cfg = load_config(path, ["model.kwargs={device: meta}"])
    where = os.path.basename(os.path.dirname(path))
    if where == "pretrain" or os.path.basename(path).startswith("pretrain"):
        assert is_pretraining(cfg.model.name)
    model = build_model(cfg.model, linprobe="linprobe" in path)
    assert next(model.parameters()).is_meta


def test_grad_checkpointing_on_pretraining_model_gives_same_loss_and_grads():
    import torch

    def loss_and_grads(ckpt_on):
        torch.manual_seed(0)
        cfg = load_config(None, ["model.name=videoconvmae_tiny_patch16", "model.num_frames=4", "model.img_size=32",
                                 "data.short_side_size=32", f"model.grad_checkpointing={str(ckpt_on).lower()}"])
        model = build_model(cfg.model).train()
        calls = []
        next(iter(model.blocks3[0].children())).register_forward_hook(lambda *a: calls.append(1))
        x = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))
        loss, _, _ = model(x, generator=torch.Generator().manual_seed(2))
        loss.backward()
        assert len(calls) == (2 if ckpt_on else 1)  # recomputed in the backward pass
        return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}, model

    ref_loss, ref_grads, _ = loss_and_grads(False)
    loss, grads, model = loss_and_grads(True)
    assert "_checkpoint_wrapped_module" not in "".join(n for n, _ in model.named_parameters())
    torch.testing.assert_close(loss, ref_loss)
    assert grads.keys() == ref_grads.keys()
    for n in grads:
        torch.testing.assert_close(grads[n], ref_grads[n], msg=n)
