"""The protocol's selection logic: every choice is made on validation, the test split is read once
per reported number, and finetuning stops when validation stops improving."""
import dataclasses

import pytest
import torch

from video_mcmae.eval import protocol
from video_mcmae.eval.data import render_clips
from video_mcmae.eval.finetune import FinetuneRecipe, finetune
from video_mcmae.eval.protocol import QUICK, EvalConfig, HeldOut, label_subset, run_protocol

TINY = dataclasses.replace(EvalConfig(), **QUICK)


def selections(result: dict) -> dict:
    """Everything chosen or measured on validation (no test number)."""
    out = {"pretext": result["pretext"]["curves"]}
    for budget, row in result["label_efficiency"].items():
        for init, runs in row.items():
            if isinstance(runs, dict):
                out[(budget, init)] = (runs["lr"], runs["val"], runs["steps"], runs["best_steps"])
    for name in ("knn", "linear", "attentive"):
        for init in protocol.INITS:
            out[(name, init)] = result["frozen"][name][init]["selection"]
    return out


@pytest.fixture(scope="module")
def runs():
    """The quick protocol twice: as is, and with the test split's labels shuffled."""
    first = run_protocol(TINY, log=lambda msg: None)
    real_render = protocol._render

    def shuffled_test(cfg, split, per_class):
        clips = real_render(cfg, split, per_class)
        if split == "test":
            clips.labels = clips.labels[torch.randperm(len(clips), generator=torch.Generator().manual_seed(5))]
        return clips

    protocol._render = shuffled_test
    try:
        second = run_protocol(TINY, log=lambda msg: None)
    finally:
        protocol._render = real_render
    return first, second


def test_no_selection_reads_the_test_split(runs):
    first, second = runs
    assert selections(first) == selections(second)
    # ... while the test numbers did see the shuffled labels
    assert first["frozen"]["knn"]["pretrained"]["test"] != second["frozen"]["knn"]["pretrained"]["test"]


def test_worker_processes_give_the_same_result(runs):
    """The spawned pool (each worker renders its own clips) selects and scores exactly as one process."""
    pooled = run_protocol(dataclasses.replace(TINY, workers=2), log=lambda msg: None)
    assert selections(pooled) == selections(runs[0])
    assert pooled["label_efficiency"] == runs[0]["label_efficiency"] and pooled["frozen"] == runs[0]["frozen"]
    assert {**pooled["pretext"], "seconds": None} == {**runs[0]["pretext"], "seconds": None}  # timings differ


def test_the_test_split_is_read_once_per_reported_number(runs):
    result = runs[0]
    expected = {("pretext",)}
    expected |= {("finetune", b, init, s) for b in TINY.budgets for init in protocol.INITS for s in TINY.seeds}
    expected |= {("matched", b, s) for b in TINY.matched_budgets for s in TINY.seeds}
    expected |= {("frozen", init, s) for init in protocol.INITS for s in TINY.seeds}
    reads = [tuple(t) for t in result["test_reads"]]
    assert len(reads) == len(set(reads)) and set(reads) == expected
    for budget, row in result["label_efficiency"].items():
        assert len(row["pretrained"]["test"]["runs"]) == len(TINY.seeds)
        assert row["gap"] == pytest.approx(row["pretrained"]["test"]["mean"] - row["random"]["test"]["mean"])
    row = result["label_efficiency"]["0.25"]
    assert set(row) == {"pretrained", "random", "random_matched", "gap", "gap_best"}
    scratch = max(row["random"]["test"]["mean"], row["random_matched"]["test"]["mean"])
    assert row["gap_best"] == pytest.approx(row["pretrained"]["test"]["mean"] - scratch)
    assert "random_matched" not in result["label_efficiency"]["1.0"]


def test_the_lr_is_chosen_by_validation_accuracy(runs):
    """Every budget's lr is the search's best on validation, the first in grid order among equals."""
    for budget, row in runs[0]["label_efficiency"].items():
        for init in protocol.INITS:
            assert row[init]["lr"] in TINY.ft_lrs
    trials = [dict(lr=3e-4, val=0.5), dict(lr=1e-3, val=0.75), dict(lr=3e-3, val=0.75)]
    assert protocol.choose(trials)["lr"] == 1e-3


def test_matched_compute_gets_the_pretraining_steps_too(runs):
    row = runs[0]["label_efficiency"]["0.25"]
    assert min(row["random_matched"]["steps"]) > TINY.pretrain.steps


def test_held_out_refuses_a_second_read():
    held = HeldOut(render_clips(("moving_left", "moving_right"), "test", 1, 4, 32, TINY.style))
    assert held.score(("a",), len) == 2
    with pytest.raises(RuntimeError, match="already read"):
        held.score(("a",), len)


def test_label_subsets_are_balanced_and_differ_by_seed():
    labels = torch.arange(4).repeat(10)
    picks = label_subset(labels, 3, 4, seed=0)
    assert torch.bincount(labels[picks]).tolist() == [3, 3, 3, 3] and len(set(picks.tolist())) == 12
    assert set(picks.tolist()) != set(label_subset(labels, 3, 4, seed=1).tolist())
    with pytest.raises(ValueError, match="exceeds"):
        label_subset(labels, 11, 4, seed=0)


def test_finetuning_stops_when_validation_stops_improving():
    """With lr ~0 (the cosine's floor is 1e-6) the validation accuracy never improves after the first check: the run stops after
    `patience` more checks and keeps the first state."""
    clips = render_clips(("moving_left", "moving_right"), "train", 2, 4, 32, TINY.style)
    model = protocol.classifier(dataclasses.replace(TINY, classes=2), 0, None)
    recipe = FinetuneRecipe(lr=0.0, weight_decay=0.0, max_steps=50, eval_every=2, patience=3, batch=2, warmup_steps=0)
    result = finetune(model, clips, clips, recipe, seed=0)
    assert result.best_step == 2 and result.steps == 8 and [s for s, _ in result.curve] == [2, 4, 6, 8]
    # the model ends with the kept (first) state, not the last one
    assert all(torch.equal(model.state_dict()[k], v) for k, v in result.state.items())


def test_the_validation_half_selects_as_the_protocol_and_never_renders_the_test_split(runs, monkeypatch):
    splits = []
    real_render = protocol._render
    monkeypatch.setattr(protocol, "_render", lambda cfg, split, n: splits.append(split) or real_render(cfg, split, n))
    selection = protocol.run_selection(TINY, log=lambda msg: None)
    assert "test" not in splits and {"train", "val"} <= set(splits)
    full = runs[0]
    assert selection["pretext"]["curves"] == full["pretext"]["curves"]
    for budget, row in full["label_efficiency"].items():
        for init in protocol.INITS:
            trials = selection["finetune_search"][f"{float(budget):g} {init}"]
            assert [t["lr"] for t in trials] == list(TINY.ft_lrs)
            assert protocol.choose(trials)["lr"] == row[init]["lr"] and protocol.choose(trials)["val"] == row[init]["val"][0]
    for i, seed in enumerate(TINY.seeds):
        for init in protocol.INITS:
            chosen = selection["frozen"][f"{init} seed {seed}"]
            assert chosen["knn"] == full["frozen"]["knn"][init]["selection"][i]["val"]
            for name in ("linear", "attentive"):
                expected = full["frozen"][name][init]["selection"][i]
                assert chosen[name] == {k: expected[k] for k in ("lr", "val", "epoch")}
