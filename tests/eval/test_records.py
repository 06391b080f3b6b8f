"""A protocol run keeps every finished training (`eval.records`): a stopped run started again on
its folder trains only what was not finished and gives exactly the numbers of a run never stopped;
records of another configuration, or a record that would run code, are refused."""
import dataclasses
import json
import os

import pytest
import torch

from video_mcmae.errors import CheckpointError, ConfigError
from video_mcmae.eval import protocol
from video_mcmae.eval.protocol import QUICK, EvalConfig, run_protocol
from video_mcmae.eval.records import Records, finished

TINY = dataclasses.replace(EvalConfig(), **QUICK)


class Stop(Exception):
    pass


def _without_timings(result: dict) -> dict:
    out = {k: v for k, v in result.items() if k not in ("seconds", "trainings_loaded", "training_seconds")}
    out["pretext"] = {k: v for k, v in result["pretext"].items() if k != "seconds"}
    return out


def test_a_stopped_run_goes_on_from_its_records_and_gives_the_same_numbers(tmp_path, monkeypatch):
    folder = str(tmp_path / "runs")
    whole = run_protocol(TINY, log=lambda msg: None)

    real = protocol._finetune_task
    calls = []

    def stops_at_the_fourth(*args):
        calls.append(args[:4])
        if len(calls) == 4:
            raise Stop
        return real(*args)

    monkeypatch.setattr(protocol, "_finetune_task", stops_at_the_fourth)
    with pytest.raises(Stop):
        run_protocol(TINY, log=lambda msg: None, records=folder)
    kept = finished(folder)
    assert kept == len(TINY.pt_seeds) + 3  # the pretrainings, then the first three finetunings

    calls.clear()
    monkeypatch.setattr(protocol, "_pretrain_task", lambda *a: pytest.fail("a finished pretraining ran again"))
    monkeypatch.setattr(protocol, "_finetune_task", lambda *args: calls.append(args[:4]) or real(*args))
    lines = []
    resumed = run_protocol(TINY, log=lines.append, records=folder)
    assert f"going on from {kept} finished trainings in {folder}" in lines
    total = len(TINY.budgets) * 2 * (len(TINY.ft_lrs) + len(TINY.seeds) - 1) + len(TINY.matched_budgets) * len(TINY.seeds)
    assert len(calls) == total - 3 and resumed["trainings_loaded"] == kept
    assert _without_timings(resumed) == _without_timings(whole)

    # a finished run started again trains nothing and reads the same numbers
    calls.clear()
    monkeypatch.setattr(protocol, "_frozen_task", lambda *a: pytest.fail("a finished probe ran again"))
    again = run_protocol(TINY, log=lambda msg: None, records=folder)
    assert not calls and again["trainings_loaded"] == finished(folder) == kept + total - 3 + 2 * len(TINY.seeds)
    assert _without_timings(again) == _without_timings(whole)


def test_records_of_another_configuration_are_refused(tmp_path):
    folder = str(tmp_path / "runs")
    Records(folder, TINY).put("pretrain-pt0", {"seed": 0})
    Records(folder, dataclasses.replace(TINY, workers=3))  # how many processes run it changes no number
    with pytest.raises(ConfigError, match=r"another configuration \(differs in: pretrain, seeds\)"):
        Records(folder, dataclasses.replace(TINY, seeds=(0,), pretrain=dataclasses.replace(TINY.pretrain, steps=5)))
    assert finished(folder) == 1  # nothing removed


def test_a_setting_added_after_the_run_started_reads_as_its_default(tmp_path):
    folder = str(tmp_path / "runs")
    Records(folder, TINY).put("pretrain-pt0", {"seed": 0})
    # the configuration a run wrote before the scenes had distractors
    path = tmp_path / "runs" / "config.json"
    held = json.loads(path.read_text())
    del held["style"]["distractors"], held["style"]["distractor_scale"]
    path.write_text(json.dumps(held))
    assert Records(folder, TINY).get("pretrain-pt0") == {"seed": 0}
    with pytest.raises(ConfigError, match=r"differs in: style\)"):
        Records(folder, dataclasses.replace(TINY, style=dataclasses.replace(TINY.style, distractors=1)))


def test_a_folder_without_records_takes_the_new_configuration(tmp_path):
    folder = str(tmp_path / "runs")
    Records(folder, TINY)
    other = dataclasses.replace(TINY, seeds=(0,))
    Records(folder, other).put("pretrain-pt0", {"seed": 0})
    assert Records(folder, other).get("pretrain-pt0") == {"seed": 0}


def test_a_record_that_would_run_code_is_refused(tmp_path):
    folder = str(tmp_path / "runs")
    records = Records(folder, TINY)
    torch.save({"seed": 0, "evil": os.system}, os.path.join(folder, "pretrain-pt0.pt"))
    with pytest.raises(CheckpointError, match=r"cannot read the training record .*pretrain-pt0\.pt \(Weights only load "
                       r"failed.*remove it \(that training runs again\)"):
        records.get("pretrain-pt0")
    with open(os.path.join(folder, "pretrain-pt2.pt"), "wb") as f:
        f.write(b"cut short")
    with pytest.raises(CheckpointError, match="pretrain-pt2.pt"):
        records.get("pretrain-pt2")
    assert records.get("pretrain-pt1") is None
    with pytest.raises(ValueError, match="letters, digits"):
        records.get("../outside")


def test_the_worker_pool_records_every_training_it_runs(tmp_path):
    """Records written from the spawned pool's results answer a run in one process exactly."""
    folder = str(tmp_path / "runs")
    pooled = run_protocol(dataclasses.replace(TINY, workers=2), log=lambda msg: None, records=folder)
    total = finished(folder)
    assert pooled["trainings_loaded"] == 0 and total == len(TINY.pt_seeds) + 2 * len(TINY.seeds) + len(
        TINY.budgets) * 2 * (len(TINY.ft_lrs) + len(TINY.seeds) - 1) + len(TINY.matched_budgets) * len(TINY.seeds)
    alone = run_protocol(TINY, log=lambda msg: None, records=folder)
    assert alone["trainings_loaded"] == total
    assert {**_without_timings(alone), "config": None} == {**_without_timings(pooled), "config": None}  # workers differ
