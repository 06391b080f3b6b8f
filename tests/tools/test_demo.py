"""tools/demo.py: the shortened demo through the real tools learns well above chance and writes
every output it announces; a failing step stops the demo with the step's name and log."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MARKER = ".video_mcmae_demo"  # the demo's own file in every folder it made
BASELINE_KEYS = ("baseline_zero", "baseline_mean", "baseline_nearest", "loss_vs_best_baseline")


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    return dict(env, PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""))


@pytest.mark.slow
def test_quick_demo_learns_and_writes_every_output(tmp_path):
    out = tmp_path / "demo"
    # ~4.5 min on a quiet 2-core machine; the limit leaves room for a CI machine whose cores are shared.
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "demo.py"), "--quick", "--out", str(out)],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    chance = summary["chance_top1"]
    assert chance == 25.0
    # well above chance at the video level (multi-view averaged), through pretrain -> finetune -> test
    assert summary["test_top1"] >= 2 * chance, summary
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
    assert summary["views_per_video"] == [2, 3]
    for step in ("data", "pretrain", "export_pretrained", "finetune", "export_finetuned", "test", "visualize",
                 "eval_ssl"):
        assert f"] {step} done in" in proc.stdout, step
        assert (out / "logs" / f"{step}.log").is_file(), step
    assert (out / "finetune" / "best").is_dir() and (out / "pretrain" / "log.jsonl").is_file()
    assert all((out / "weights" / f"{n}.{e}").is_file() for n in ("pretrained", "finetuned") for e in ("safetensors", "json"))
    assert (out / "test" / "summary.json").is_file() and (out / "test" / "predictions.csv").is_file()
    recon = sorted(p.suffix for p in (out / "reconstructions").iterdir())
    assert recon == [".gif", ".mp4", ".png"]
    tail = proc.stdout[proc.stdout.index("=== demo finished"):]
    assert "chance: top-1 25.0%" in tail and f"top-1 {summary['test_top1']:.1f}%" in tail
    assert str(out / "reconstructions") in tail
    assert f"loss / best of them = {summary['pretrain_loss_vs_best_baseline']:.2f}" in tail
    # the pretrained-vs-scratch table of tools/eval_ssl.py (quick size), printed and kept
    table = (out / "eval_ssl" / "table.md").read_text()
    assert summary["eval_ssl_table"] == table and "| few-label finetune |" in table
    assert all(line in tail for line in table.splitlines())


def test_a_failing_step_stops_the_demo_and_names_it(tmp_path, monkeypatch, capsys, load_tool):
    demo = load_tool("demo")
    monkeypatch.setitem(demo.DATA, "num_classes", 3)  # the synthetic set refuses odd class counts
    monkeypatch.setenv("PYTHONPATH", REPO)
    assert demo.main(["--quick", "--out", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert "demo stopped: step 1/8 'data' failed with exit status 2" in err
    log = tmp_path / "d" / "logs" / "data.log"
    assert str(log) in err and "num_classes=3" in log.read_text()
    assert not (tmp_path / "d" / "pretrain").exists()


def test_refuses_to_replace_a_folder_it_did_not_write(tmp_path, capsys, load_tool):
    demo = load_tool("demo")
    keep = tmp_path / "mine" / "notes.txt"
    keep.parent.mkdir()
    keep.write_text("precious")
    assert demo.main(["--quick", "--out", str(keep.parent)]) == 1
    assert "is not an earlier demo's output" in capsys.readouterr().err
    assert keep.read_text() == "precious"


def test_refuses_a_folder_with_logs_it_did_not_make(tmp_path, monkeypatch, capsys, load_tool):
    """logs/ is no sign of a demo: without the demo's marker nothing in the folder is touched."""
    demo = load_tool("demo")
    monkeypatch.setitem(demo.DATA, "num_classes", 3)  # were the folder taken, the first step fails fast
    monkeypatch.setenv("PYTHONPATH", REPO)
    out = tmp_path / "results"
    (out / "logs").mkdir(parents=True)
    (out / "logs" / "train.log").write_text("my training log")
    (out / "paper.tex").write_text("precious")
    assert demo.main(["--quick", "--out", str(out)]) == 1
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
    assert "demo stopped: step 1/8 'data'" in capsys.readouterr().err  # not refused: the folder is the demo's
    assert not (out / "pretrain").exists() and (out / MARKER).is_file()
