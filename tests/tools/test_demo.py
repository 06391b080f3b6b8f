"""tools/demo.py: the shortened demo through the real tools learns well above chance and writes
every output it announces; a failing step stops the demo with the step's name and log."""
import json
import os
import subprocess
import sys

import pytest

from video_mcmae.cli import run_cli

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MARKER = ".video_mcmae_demo"  # the demo's own file in every folder it made
BASELINE_KEYS = ("baseline_zero", "baseline_mean", "baseline_nearest", "loss_vs_best_baseline")


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    return dict(env, PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""))


def _cli(demo, argv):
    """The demo as its command line runs it: user errors become one `error:` line, exit 2."""
    return run_cli(lambda: demo.main(argv))


@pytest.mark.slow
def test_quick_demo_learns_and_writes_every_output(tmp_path):
    out = tmp_path / "demo"
    # a few minutes on a quiet 2-core machine; the limit leaves room for a CI machine whose cores are shared.
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "demo.py"), "--quick", "--out", str(out)],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    chance = summary["chance_top1"]
    assert chance == 25.0
    # the data are scenes (one large object over a faint ramp), as the pretext needs
    assert json.loads((out / "data" / "meta.json").read_text())["scene_style"]["background"] == "ramp"
    pre, scratch = summary["finetuning"]["pretrained"], summary["finetuning"]["scratch"]
    # well above chance at the video level (multi-view averaged), through pretrain -> finetune -> test
    assert pre["test_top1"] >= 2 * chance, summary
    assert 0 < summary["pretrain_loss_last_epoch"] < 2 and summary["pretrain_epochs"] >= 2, summary
    # the pretraining logs its trivial baselines next to the loss, and the summary compares them
    records = [json.loads(line) for line in (out / "pretrain" / "log.jsonl").read_text().splitlines()]
    for kind in ("iter", "epoch"):
        logged = [r for r in records if r["type"] == kind]
        assert logged and all(0 < r[k] for r in logged for k in BASELINE_KEYS), kind
    baselines = summary["pretrain_baselines_last_epoch"]
    assert sorted(baselines) == ["mean", "nearest", "zero"] and min(baselines.values()) > 0
    assert summary["pretrain_loss_vs_best_baseline"] == pytest.approx(
        summary["pretrain_loss_last_epoch"] / min(baselines.values()))
    # both inits ran the same recipe (the official head), each tested at its best validation epoch
    for init, run in (("pretrained", "finetune"), ("scratch", "finetune_scratch")):
        config = (out / run / "config.yaml").read_text()
        assert "global_pool" not in config and "layer_decay: 0.75" in config, init
        vals = [json.loads(line) for line in (out / run / "log.jsonl").read_text().splitlines()]
        vals = [r for r in vals if r["type"] == "val"]
        assert summary["finetuning"][init]["val_top1_best"] == max(r["acc1"] for r in vals), init
        assert (out / run / "best").is_dir(), init
    commands = {line.split("] ")[1].split(":")[0]: proc.stdout.splitlines()[i + 1]
                for i, line in enumerate(proc.stdout.splitlines()) if line.startswith("=== [") and ": " in line}
    assert "--finetune" in commands["finetune"] and "--finetune" not in commands["finetune_scratch"]
    test_summaries = [json.loads((out / t / "summary.json").read_text()) for t in ("test", "test_scratch")]
    assert [t["video"]["top1"] for t in test_summaries] == [pre["test_top1"], scratch["test_top1"]]
    assert pre["views_per_video"] == [2, 3] and pre["test_videos"] == scratch["test_videos"] == 40
    for step in ("data", "pretrain", "export_pretrained", "visualize", "score_reconstruction", "finetune",
                 "export_finetuned", "test", "finetune_scratch", "test_scratch"):
        assert f"] {step} done in" in proc.stdout, step
        assert (out / "logs" / f"{step}.log").is_file(), step
    assert "eval_ssl" not in summary["outputs"] and not (out / "eval_ssl").exists()
    assert all((out / "weights" / f"{n}.{e}").is_file() for n in ("pretrained", "finetuned") for e in ("safetensors", "json"))
    assert (out / "test" / "predictions.csv").is_file() and (out / "test_scratch" / "predictions.csv").is_file()
    recon = sorted(p.suffix for p in (out / "reconstructions").iterdir())
    assert recon == [".gif", ".mp4", ".png"]
    tail = proc.stdout[proc.stdout.index("=== demo finished"):]
    assert str(out / "reconstructions") in tail
    assert f"loss / best of them = {summary['pretrain_loss_vs_best_baseline']:.2f}" in tail
    # the reconstructions are scored by the exported model itself, and the verdict follows the number
    recon_score = summary["reconstruction"]
    scored = json.loads((out / "reconstruction_score.json").read_text())
    assert scored["weights"] == str(out / "weights" / "pretrained.safetensors")
    assert recon_score["object_error_ratio"] == scored["error_ratio"] > 0 and recon_score["clips"] == 8
    assert recon_score["shape_ratio"] == scored["shape_ratio"] > 0 and recon_score["verdict"] == scored["verdict"]
    assert (f"the prediction's squared error is {scored['error_ratio']:.2f}x the background's "
            f"(1: the object is not drawn, 0: drawn exactly); where its edge crosses a masked cube, "
            f"{scored['shape_ratio']:.2f}x each cube's flat colour's (below 1: its shape is drawn) -> "
            f"{recon_score['verdict']}") in tail
    # the one comparison line, with the verdict the numbers allow
    gap = pre["test_top1"] - scratch["test_top1"]
    line = (f"pretrained vs scratch (same recipe, best validation checkpoint): test top-1 {pre['test_top1']:.1f}% vs "
            f"{scratch['test_top1']:.1f}% (gap {gap:+.1f}; chance 25%) -> {summary['comparison']['verdict']}")
    assert line in tail
    assert summary["comparison"]["noise"] >= 100 / 40
    assert ("no difference measurable" in line) == (abs(gap) <= summary["comparison"]["noise"])


def test_a_failing_step_stops_the_demo_and_names_it(tmp_path, monkeypatch, capsys, load_tool):
    demo = load_tool("demo")
    monkeypatch.setitem(demo.DATA, "num_classes", 3)  # the synthetic set refuses odd class counts
    monkeypatch.setenv("PYTHONPATH", REPO)
    assert demo.main(["--quick", "--out", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert "demo stopped: step 1/10 'data' failed with exit status 2" in err
    log = tmp_path / "d" / "logs" / "data.log"
    assert str(log) in err and "num_classes=3" in log.read_text()
    assert not (tmp_path / "d" / "pretrain").exists()


def test_refuses_to_replace_a_folder_it_did_not_write(tmp_path, capsys, load_tool):
    demo = load_tool("demo")
    keep = tmp_path / "mine" / "notes.txt"
    keep.parent.mkdir()
    keep.write_text("precious")
    assert _cli(demo, ["--quick", "--out", str(keep.parent)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out ") and "is not an earlier demo's output" in err and err.count("\n") == 1
    assert keep.read_text() == "precious"


def test_refuses_an_output_folder_it_cannot_write_before_any_work(tmp_path, capsys, load_tool):
    demo = load_tool("demo")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert _cli(demo, ["--quick", "--out", str(blocker / "demo")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out ") and "a file is where a folder is needed" in err and err.count("\n") == 1
    assert blocker.read_text() == "not a folder"


def test_refuses_a_folder_with_logs_it_did_not_make(tmp_path, monkeypatch, capsys, load_tool):
    """logs/ is no sign of a demo: without the demo's marker nothing in the folder is touched."""
    demo = load_tool("demo")
    monkeypatch.setitem(demo.DATA, "num_classes", 3)  # were the folder taken, the first step fails fast
    monkeypatch.setenv("PYTHONPATH", REPO)
    out = tmp_path / "results"
    (out / "logs").mkdir(parents=True)
    (out / "logs" / "train.log").write_text("my training log")
    (out / "paper.tex").write_text("precious")
    assert _cli(demo, ["--quick", "--out", str(out)]) == 2
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["logs", "logs/train.log", "paper.tex"]
    assert (out / "paper.tex").read_text() == "precious"
    assert f"--out {out} exists and is not an earlier demo's output (no {MARKER} file" in capsys.readouterr().err


def test_replaces_the_folder_an_earlier_demo_made(tmp_path, monkeypatch, capsys, load_tool):
    demo = load_tool("demo")
    monkeypatch.setitem(demo.DATA, "num_classes", 3)  # the first step fails fast
    monkeypatch.setenv("PYTHONPATH", REPO)
    out = tmp_path / "d"
    assert demo.main(["--quick", "--out", str(out)]) == 1
    assert (out / MARKER).is_file() and (out / "logs" / "data.log").is_file()
    (out / "pretrain").mkdir()
    (out / "pretrain" / "epoch-0002").write_text("an earlier run's checkpoint")
    assert demo.main(["--quick", "--out", str(out)]) == 1
    assert "demo stopped: step 1/10 'data'" in capsys.readouterr().err  # not refused: the folder is the demo's
    assert not (out / "pretrain").exists() and (out / MARKER).is_file()
