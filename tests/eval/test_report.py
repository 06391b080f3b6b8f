"""The targets judge pretraining against the scratch baseline at its best."""
from video_mcmae.eval import report


def _stats(mean):
    return dict(mean=mean, std=0.0, runs=[mean])


def _row(pretrained, random, matched=None):
    row = dict(pretrained=dict(test=_stats(pretrained), lr=1e-3, best_steps=[100], steps=[200]),
               random=dict(test=_stats(random), lr=3e-4, best_steps=[100], steps=[200]))
    if matched is not None:
        row["random_matched"] = dict(test=_stats(matched), lr=3e-4, steps=[7000], best_steps=[6000])
    row["gap"] = pretrained - random
    return row


def _result(rows):
    return dict(label_efficiency=rows, pretext=dict(ratio=0.6), frozen=dict(attentive=dict(gap=20.0)))


def test_the_gap_is_to_the_better_random_init():
    assert report.gap_to_best_scratch(_row(80.0, 50.0)) == 30.0
    assert report.gap_to_best_scratch(_row(80.0, 50.0, matched=75.0)) == 5.0
    assert report.gap_to_best_scratch(_row(80.0, 50.0, matched=40.0)) == 30.0


def test_matched_compute_scratch_can_miss_the_finetuning_target():
    """+30 over the early-stopped scratch does not count when scratch trained longer is within 10."""
    early_only = _result({"0.01": _row(60.0, 30.0), "0.1": _row(85.0, 70.0), "1.0": _row(98.0, 97.0)})
    assert report.targets(early_only) == dict(pretext=True, finetune=True, attentive=True)
    longer = _result({"0.01": _row(60.0, 30.0, matched=35.0), "0.1": _row(85.0, 70.0, matched=82.0),
                      "1.0": _row(98.0, 97.0)})
    assert report.targets(longer)["finetune"] is False
    # The 100% budget is outside the target: a small gap there changes nothing.
    assert report.targets(_result({"0.1": _row(85.0, 70.0, matched=60.0), "1.0": _row(98.0, 97.5)}))["finetune"]
