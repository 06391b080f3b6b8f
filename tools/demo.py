"""The main job end to end on procedural videos, through the real tools:

  1. data              tools/make_synthetic_dataset.py --scenes   one large moving object over a faint background
  2. pretrain          tools/run_pretrain.py             tiny VideoConvMAE, masked autoencoding (DeepSpeed)
  3. export_pretrained tools/export_weights.py           consolidated pretrained weights (.safetensors)
  4. visualize         tools/visualize_reconstruction.py original | masked | reconstruction | error videos
  5. score_reconstruction tools/score_reconstruction.py  does it draw the moving object inside masked cubes?
  6. finetune          tools/run_finetune.py --finetune <pretrained>   official head (mean pooling, layer decay)
  7. export_finetuned  tools/export_weights.py           its best validation checkpoint
  8. test              tools/test_multiview.py           that checkpoint: temporal x spatial views, video-level top-k
  9. finetune_scratch  tools/run_finetune.py             the same recipe from a random init (its own lr)
 10. test_scratch      tools/test_multiview.py           its best validation checkpoint

    python tools/demo.py                      # or `make demo`; outputs in output/demo
    python tools/demo.py --quick --out /tmp/d # the shortened run the tests use

Training steps run under the DeepSpeed launcher: one rank per GPU when there is a GPU, else two
ranks on the CPU. Every step's output is shown and kept in <out>/logs/<step>.log. The last lines
summarise the run (<out>/summary.json holds the same numbers): the pretraining loss against the
trivial predictors of the same masked cubes (predict zero, the best constant, copy the nearest
visible cube; below the best of them the model has learned from the visible cubes), how much of
the moving object its predictions draw inside masked cubes (its colour: an error ratio, 1 = not at
all; its shape: below 1 the edge is placed better than each cube's flat colour), the test
accuracy against chance, and one line comparing the pretrained and the scratch finetuning (both
tested at their best validation checkpoint) with a verdict that says when the gap is within what
this test set can resolve. The demo shows the path at its own size; `python tools/eval_ssl.py`
measures whether pretraining helps (docs/ssl_evaluation.md).

Exit status: 0 when every step succeeded; 2 with one `error: ...` line when --out cannot be used
(not writable, or a folder an earlier demo did not make); 1 when a step fails, with one line
naming the step, its exit status and its log.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Optional

try:
    import torch

    from video_mcmae.cli import run_cli
    from video_mcmae.config import load_config
    from video_mcmae.data.lists import read_list
    from video_mcmae.engine.distributed import free_port
    from video_mcmae.errors import OutputError
    from video_mcmae.models.baselines import BASELINES, log_key
    from video_mcmae.paths import check_writable
except ModuleNotFoundError as err:
    sys.exit(f"demo: {err.name} cannot be imported by {sys.executable}; run `make demo` (it builds .venv with "
             "this package installed) or `pip install -e .` into this Python")

# The checkout this script is in: the demo runs its sibling tools and configs.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(REPO, "tools")
CONFIGS = os.path.join(REPO, "configs", "demo")

# The procedural scenes: the first 4 classes (moving left/right/up/down, chance 25%), non-square
# frames so the three spatial test crops differ.
DATA = dict(num_classes=4, frames=32, height=48, width=60, val=10)
FULL = dict(train=60, test=20, pretrain_epochs=None, finetune_epochs=None, reconstructions=2)
QUICK = dict(train=60, test=10, pretrain_epochs=10, finetune_epochs=30, reconstructions=1)
# The scratch run's lr, chosen on the validation split like the pretrained run's (the grid and its
# validation numbers are in configs/demo/finetune.yaml).
SCRATCH_LR = 1.0e-3
# Written into the output folder when the demo takes it; only a folder holding it is ever emptied.
MARKER = ".video_mcmae_demo"


class StepFailed(RuntimeError):
    """A step (a subprocess) failed: exit status 1, its name, status and log on one line."""


def _gpu_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


class Demo:
    def __init__(self, out: str, quick: bool, num_gpus: int):
        self.out = os.path.abspath(out)
        self.quick = quick
        self.sizes = QUICK if quick else FULL
        self.gpus = _gpu_count()
        self.ranks = num_gpus or (1 if self.gpus else 2)
        self.logs = os.path.join(self.out, "logs")
        self.seconds: Dict[str, float] = {}
        self.data = os.path.join(self.out, "data", "ssv2")
        self.env = self._env()

    def _env(self) -> Dict[str, str]:
        # The steps run this Python (and its deepspeed launcher), so they import the same installed
        # package; a rendezvous left in our environment must not leak into them.
        env = {k: v for k, v in os.environ.items()
               if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
        if not self.gpus:
            # One intra-op thread per rank: the ranks (and loader workers) share the cores.
            env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1")
        return env

    # -- running steps ---------------------------------------------------------------------------
    def run(self, index: int, total: int, name: str, what: str, cmd: List[str]) -> None:
        os.makedirs(self.logs, exist_ok=True)
        log_path = os.path.join(self.logs, f"{name}.log")
        print(f"\n=== [{index}/{total}] {name}: {what}", flush=True)
        print("    $ " + " ".join(cmd), flush=True)
        start = time.time()
        with open(log_path, "w", encoding="utf-8") as log:
            proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, bufsize=1)
            for line in proc.stdout:
                log.write(line)
                print("    " + line, end="", flush=True)
            rc = proc.wait()
        self.seconds[name] = time.time() - start
        if rc != 0:
            raise StepFailed(f"step {index}/{total} '{name}' failed with exit status {rc} after "
                             f"{self.seconds[name]:.0f} s; its output is above and in {log_path}")
        print(f"=== [{index}/{total}] {name} done in {self.seconds[name]:.0f} s", flush=True)

    def launcher(self, tool: str) -> List[str]:
        deepspeed = os.path.join(os.path.dirname(sys.executable), "deepspeed")
        if not os.path.isfile(deepspeed):
            raise StepFailed(f"the DeepSpeed launcher is not at {deepspeed}; run `make demo` (it installs the "
                             "environment) or install deepspeed into this Python")
        return [deepspeed, "--num_gpus", str(self.ranks), "--master_port", str(free_port()), os.path.join(TOOLS, tool)]

    def data_opts(self) -> List[str]:
        d = self.data
        opts = [f"data.data_root={d}", f"data.train_list={d}/train.csv", f"data.val_list={d}/val.csv",
                f"data.test_list={d}/test.csv", f"data.class_names={d}/classes.txt",
                f"model.num_classes={DATA['num_classes']}"]
        if self.gpus:
            opts += ["deepspeed.precision=bf16"]
        return [x for o in opts for x in ("--opt", o)]

    def epochs_opt(self, key: str) -> List[str]:
        epochs = self.sizes[key]
        return [] if epochs is None else ["--opt", f"optim.epochs={epochs}"]

    # -- the job ---------------------------------------------------------------------------------
    def main(self) -> Dict:
        s = self.sizes
        device = f"{self.ranks} GPU rank(s)" if self.gpus else f"{self.ranks} CPU ranks (no GPU found)"
        print(f"demo{' (quick)' if self.quick else ''}: outputs in {self.out}; DeepSpeed on {device}", flush=True)
        self.clear_output()
        total = 10
        py = sys.executable
        pre, ft, scratch = (os.path.join(self.out, n) for n in ("pretrain", "finetune", "finetune_scratch"))
        test, test_scratch = os.path.join(self.out, "test"), os.path.join(self.out, "test_scratch")
        weights = os.path.join(self.out, "weights")
        pretrained = os.path.join(weights, "pretrained.safetensors")
        finetune_cfg = os.path.join(CONFIGS, "finetune.yaml")
        self.run(1, total, "data", "procedural scenes (one large moving object, SSv2-style layout)", [
            py, os.path.join(TOOLS, "make_synthetic_dataset.py"), os.path.join(self.out, "data"),
            "--num-classes", str(DATA["num_classes"]), "--train", str(s["train"]), "--val", str(DATA["val"]),
            "--test", str(s["test"]), "--frames", str(DATA["frames"]), "--height", str(DATA["height"]),
            "--width", str(DATA["width"]), "--layouts", "ssv2", "--scenes"])
        self.run(2, total, "pretrain", "masked-autoencoder pretraining", [
            *self.launcher("run_pretrain.py"), "--config", os.path.join(CONFIGS, "pretrain.yaml"),
            "--output_dir", pre, *self.data_opts(), *self.epochs_opt("pretrain_epochs")])
        self.run(3, total, "export_pretrained", "consolidated pretrained weights", [
            py, os.path.join(TOOLS, "export_weights.py"), pre, os.path.join(weights, "pretrained")])
        recon = os.path.join(self.out, "reconstructions")
        videos = self.test_videos(s["reconstructions"])
        for i, video in enumerate(videos):
            self.run(4, total, f"visualize_{i}" if len(videos) > 1 else "visualize",
                     f"reconstruction of {os.path.basename(video)}", [
                         py, os.path.join(TOOLS, "visualize_reconstruction.py"), video, "--weights", pretrained,
                         "--dataset", "ssv2", "--out", recon])
        score = os.path.join(self.out, "reconstruction_score.json")
        self.run(5, total, "score_reconstruction", "how much of the moving object the masked cubes' predictions draw", [
            py, os.path.join(TOOLS, "score_reconstruction.py"), "--weights", pretrained, "--out", score,
            *(["--quick"] if self.quick else [])])
        self.run(6, total, "finetune", "finetuning from the pretrained weights (official head)", [
            *self.launcher("run_finetune.py"), "--config", finetune_cfg, "--data", "ssv2", "--finetune", pretrained,
            "--output_dir", ft, *self.data_opts(), *self.epochs_opt("finetune_epochs")])
        self.run(7, total, "export_finetuned", "the best finetuned checkpoint (validation top-1)", [
            py, os.path.join(TOOLS, "export_weights.py"), os.path.join(ft, "best"), os.path.join(weights, "finetuned")])
        self.run(8, total, "test", "multi-view test of the pretrained run's best checkpoint", [
            *self.launcher("test_multiview.py"), "--config", finetune_cfg, "--checkpoint", os.path.join(ft, "best"),
            "--output_dir", test, *self.data_opts(), "--opt", "data.dataset=ssv2"])
        self.run(9, total, "finetune_scratch", "the same finetuning from a random init", [
            *self.launcher("run_finetune.py"), "--config", finetune_cfg, "--data", "ssv2", "--output_dir", scratch,
            *self.data_opts(), *self.epochs_opt("finetune_epochs"), "--opt", f"optim.lr={SCRATCH_LR}"])
        self.run(10, total, "test_scratch", "multi-view test of the scratch run's best checkpoint", [
            *self.launcher("test_multiview.py"), "--config", finetune_cfg, "--checkpoint",
            os.path.join(scratch, "best"), "--output_dir", test_scratch, *self.data_opts(), "--opt", "data.dataset=ssv2"])
        return self.summary(pre, {"pretrained": (ft, test), "scratch": (scratch, test_scratch)}, weights, recon, score)

    def clear_output(self) -> None:
        """Runs refuse to write over old checkpoints, so the demo starts clean. It only ever empties
        a folder that holds its marker (written when it took the folder: absent or empty), never
        anything else, whatever the folder holds."""
        marker = os.path.join(self.out, MARKER)
        if os.path.exists(self.out):
            if not os.path.isdir(self.out) or (os.listdir(self.out) and not os.path.isfile(marker)):
                raise OutputError(f"--out {self.out} exists and is not an earlier demo's output (no {MARKER} "
                                 "file in it); give a new or empty folder (an older demo version's output: "
                                 "delete it yourself)")
            for entry in os.scandir(self.out):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.remove(entry.path)
        os.makedirs(self.out, exist_ok=True)
        with open(marker, "w", encoding="utf-8") as f:
            f.write("made by tools/demo.py: the next demo run with this --out replaces this folder\n")

    def test_videos(self, count: int) -> List[str]:
        """The first test video of the first `count` classes."""
        seen, out = set(), []
        for sample in read_list(os.path.join(self.data, "test.csv"), data_root=self.data):
            if sample.label not in seen and len(out) < count:
                seen.add(sample.label)
                out.append(sample.path)
        return out

    def summary(self, pre: str, runs: Dict[str, tuple], weights: str, recon: str, score: str) -> Dict:
        with open(os.path.join(pre, "log.jsonl"), encoding="utf-8") as f:
            epochs = [r for r in map(json.loads, f) if r.get("type") == "epoch"]
        num_classes = DATA["num_classes"]
        last = epochs[-1]
        # the last epoch's averages over its steps, on the same masked cubes as its loss
        baselines = {name: last[log_key(name)] for name in BASELINES}
        finetuning = {init: _finetune_result(run, test) for init, (run, test) in runs.items()}
        with open(score, encoding="utf-8") as f:
            scored = json.load(f)
        result = {
            "quick": self.quick,
            "num_classes": num_classes,
            "chance_top1": 100.0 / num_classes,
            "pretrain_target": ("per-cube normalised pixels" if load_config(os.path.join(pre, "config.yaml"))
                                .model.norm_pix_loss else "pixels in [0, 1]"),
            "pretrain_loss_first_epoch": epochs[0]["loss"],
            "pretrain_loss_last_epoch": last["loss"],
            "pretrain_baselines_last_epoch": baselines,
            "pretrain_loss_vs_best_baseline": last["loss"] / min(baselines.values()),
            "pretrain_epochs": len(epochs),
            "reconstruction": {"object_error_ratio": scored["error_ratio"], "shape_ratio": scored["shape_ratio"],
                               "clips": scored["validation_clips"], "object_fraction": scored["object_fraction"],
                               "edge_cubes": scored["edge_cubes"], "verdict": scored["verdict"]},
            "finetuning": finetuning,
            "comparison": compare(finetuning["pretrained"], finetuning["scratch"], num_classes),
            "seconds": {k: round(v, 1) for k, v in self.seconds.items()},
            "outputs": {
                "data": self.data,
                "pretrain_run": pre,
                "finetune_run": runs["pretrained"][0],
                "test_report": runs["pretrained"][1],
                "finetune_scratch_run": runs["scratch"][0],
                "test_scratch_report": runs["scratch"][1],
                "weights": weights,
                "reconstructions": recon,
                "reconstruction_score": score,
                "logs": self.logs,
            },
        }
        with open(os.path.join(self.out, "summary.json"), "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
        return result


def _finetune_result(run: str, test: str) -> Dict:
    """A finetuning run's best validation top-1 (the checkpoint `best/` holds) and that
    checkpoint's test numbers."""
    with open(os.path.join(run, "log.jsonl"), encoding="utf-8") as f:
        vals = [r for r in map(json.loads, f) if r.get("type") == "val"]
    best = max(vals, key=lambda r: r["acc1"])  # the first epoch to reach it, as `best/` keeps
    lr = load_config(os.path.join(run, "config.yaml")).optim.lr
    with open(os.path.join(test, "summary.json"), encoding="utf-8") as f:
        report = json.load(f)
    video = report["video"]
    top5_key = max(video, key=lambda k: int(k[3:]))
    return {
        "lr": lr,
        "val_top1_best": best["acc1"],
        "best_epoch": best["epoch"],
        "epochs": vals[-1]["epoch"],
        "test_top1": video["top1"],
        "test_top5": video[top5_key],
        "top5_means": top5_key,
        "test_single_view_top1": report["single_view"]["top1"],
        "views_per_video": report["views_per_video"],
        "test_videos": report["num_videos_evaluated"],
    }


def compare(pretrained: Dict, scratch: Dict, num_classes: int) -> Dict:
    """The pretrained-minus-scratch test top-1 gap and what one run of each can say about it.

    One video moves an accuracy by 100/N points, and a single run's accuracy on N videos varies
    by about sqrt(p(1-p)/N) from the test sample alone (more with seeds): a gap within twice the
    combined sampling error (and never less than one video) is no measurable difference."""
    n = pretrained["test_videos"]
    p, q = pretrained["test_top1"], scratch["test_top1"]
    gap = p - q
    resolution = 100.0 / n
    sigma = 100.0 * math.sqrt(((p / 100) * (1 - p / 100) + (q / 100) * (1 - q / 100)) / n)
    noise = max(resolution, 2 * sigma)
    chance = 100.0 / num_classes
    if abs(gap) <= noise:
        verdict = (f"no difference measurable at this size (one run each on {n} test videos: gaps up to "
                   f"{noise:.1f} points are sampling noise)")
    else:
        ahead = "pretrained" if gap > 0 else "scratch"
        verdict = (f"{ahead} ahead by more than this test set's sampling noise ({noise:.1f} points), in one run "
                   "of each at one seed; tools/eval_ssl.py measures it over seeds and label budgets")
    if max(p, q) <= chance + noise:
        verdict += "; both at chance level"
    return {"gap": gap, "resolution": resolution, "noise": noise, "verdict": verdict}


def print_summary(r: Dict, out: str) -> None:
    o = r["outputs"]
    total = sum(r["seconds"].values())
    pre, scr, c = r["finetuning"]["pretrained"], r["finetuning"]["scratch"], r["comparison"]
    k5 = pre["top5_means"].replace("top", "top-")

    def run_line(name: str, f: Dict) -> str:
        return (f"  {name:10s} lr {f['lr']:.0e}: best validation top-1 {f['val_top1_best']:.1f}% (epoch "
                f"{f['best_epoch']} of {f['epochs']}) -> test top-1 {f['test_top1']:.1f}%  {k5} {f['test_top5']:.1f}%  "
                f"(single view top-1 {f['test_single_view_top1']:.1f}%)")

    lines = [
        "",
        f"=== demo finished in {total / 60:.1f} min",
        f"pretraining loss (masked cubes, target: {r['pretrain_target']}): {r['pretrain_loss_first_epoch']:.4g} "
        f"(epoch 1) -> {r['pretrain_loss_last_epoch']:.4g} (epoch {r['pretrain_epochs']})",
        "  trivial predictors of the same cubes (last epoch): "
        + ", ".join(f"{name} {value:.4g}" for name, value in r["pretrain_baselines_last_epoch"].items())
        + f"; loss / best of them = {r['pretrain_loss_vs_best_baseline']:.2f}"
        + (" (below 1: learned from the visible cubes)" if r["pretrain_loss_vs_best_baseline"] < 1
           else " (not below the trivial level)"),
        f"reconstructions ({r['reconstruction']['clips']} validation scenes of the demo's kind, fixed masks): at the "
        f"object's pixels inside masked cubes the prediction's squared error is "
        f"{r['reconstruction']['object_error_ratio']:.2f}x the background's (1: the object is not drawn, 0: drawn "
        f"exactly); where its edge crosses a masked cube, {r['reconstruction']['shape_ratio']:.2f}x each cube's flat "
        f"colour's (below 1: its shape is drawn) -> {r['reconstruction']['verdict']}",
        f"finetuning, official head (mean pooling, layer decay), tested at the best validation checkpoint, "
        f"video level ({pre['views_per_video'][0]}x{pre['views_per_video'][1]} views averaged, "
        f"{pre['test_videos']} videos; chance top-1 {r['chance_top1']:.1f}%"
        + (", top-5 is capped at top-4 with 4 classes)" if k5 != "top-5" else ")"),
        run_line("pretrained", pre),
        run_line("scratch", scr),
        f"pretrained vs scratch (same recipe, best validation checkpoint): test top-1 {pre['test_top1']:.1f}% vs "
        f"{scr['test_top1']:.1f}% (gap {c['gap']:+.1f}; chance {r['chance_top1']:.0f}%) -> {c['verdict']}",
        "  (the demo shows the path at its own size; whether pretraining helps is measured by "
        "`python tools/eval_ssl.py`, docs/ssl_evaluation.md)",
        "",
        "outputs:",
        f"  data              {o['data']}  (train/val/test.csv, classes.txt, videos/)",
        f"  pretraining run   {o['pretrain_run']}  (log.jsonl, config.yaml, checkpoints, tensorboard/)",
        f"  reconstructions   {o['reconstructions']}  (.mp4, .gif, .png); their score {o['reconstruction_score']}",
        f"  finetuning runs   {o['finetune_run']}, {o['finetune_scratch_run']}  (best/ = checkpoint tested)",
        f"  test reports      {o['test_report']}, {o['test_scratch_report']}  (summary.json, predictions.csv, confusion_matrix.*)",
        f"  weights           {o['weights']}  (pretrained/finetuned .safetensors + .json)",
        f"  step logs         {o['logs']}",
        f"  this summary      {os.path.join(out, 'summary.json')}",
    ]
    print("\n".join(lines), flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="output/demo", help="output folder: new or empty, or an earlier demo's output (replaced)")
    parser.add_argument("--quick", action="store_true", help="fewer videos and epochs (a few minutes on 2 CPU cores; the tests' run)")
    parser.add_argument("--num-gpus", type=int, default=0,
                        help="DeepSpeed ranks (default: 1 on a GPU machine, else 2 CPU ranks)")
    args = parser.parse_args(argv)
    if args.num_gpus < 0:
        parser.error("--num-gpus must be positive")
    check_writable(args.out, "--out")  # before any work
    demo = Demo(args.out, args.quick, args.num_gpus)
    try:
        result = demo.main()
    except StepFailed as e:
        print(f"\ndemo stopped: {e}", file=sys.stderr, flush=True)
        return 1
    print_summary(result, demo.out)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
