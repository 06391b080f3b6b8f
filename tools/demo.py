"""The main job end to end on procedural videos, through the real tools:

  1. data        tools/make_synthetic_dataset.py   labelled moving-shape videos, SSv2-style layout
  2. pretrain    tools/run_pretrain.py             tiny VideoConvMAE, masked autoencoding (DeepSpeed)
  3. export      tools/export_weights.py           consolidated pretrained weights (.safetensors)
  4. finetune    tools/run_finetune.py --data ssv2 --finetune <pretrained>   (no flip: labels say left/right)
  5. export      tools/export_weights.py           the best finetuned checkpoint (by validation top-1)
  6. test        tools/test_multiview.py           temporal x spatial views per video, video-level top-k
  7. visualize   tools/visualize_reconstruction.py original | masked | reconstruction | error videos
  8. eval_ssl    tools/eval_ssl.py --quick         pretrained vs random init on held-out clips (quick size)

    python tools/demo.py                      # or `make demo`; outputs in output/demo
    python tools/demo.py --quick --out /tmp/d # the shortened run the tests use

Training steps run under the DeepSpeed launcher: one rank per GPU when there is a GPU, else two
ranks on the CPU. Every step's output is shown and kept in <out>/logs/<step>.log; the first
failing step stops the demo with its name, exit status and log. The last lines summarise the run
(pretraining loss, test accuracy against chance, the pretrained-vs-scratch table of
tools/eval_ssl.py at its quick size, where everything is); <out>/summary.json holds
the same numbers; the pretraining loss is shown against the trivial predictors of the same masked
cubes (predict zero, the best constant, copy the nearest visible cube): below the best of them the
model has learned something from the visible cubes.
"""
from __future__ import annotations

import argparse
import json
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
    from video_mcmae.models.baselines import BASELINES, log_key
except ModuleNotFoundError as err:
    sys.exit(f"demo: {err.name} cannot be imported by {sys.executable}; run `make demo` (it builds .venv with "
             "this package installed) or `pip install -e .` into this Python")

# The checkout this script is in: the demo runs its sibling tools and configs.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(REPO, "tools")
CONFIGS = os.path.join(REPO, "configs", "demo")

# The procedural set: the first 4 classes (moving left/right/up/down, chance 25%), non-square
# frames so the three spatial test crops differ.
DATA = dict(num_classes=4, frames=32, height=64, width=80, val=4)
FULL = dict(train=60, test=12, pretrain_epochs=None, finetune_epochs=None, reconstructions=2)
QUICK = dict(train=60, test=6, pretrain_epochs=2, finetune_epochs=30, reconstructions=1)
# Written into the output folder when the demo takes it; only a folder holding it is ever emptied.
MARKER = ".video_mcmae_demo"


class StepFailed(RuntimeError):
    pass


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
        total = 8
        py = sys.executable
        pre, ft, test = (os.path.join(self.out, n) for n in ("pretrain", "finetune", "test"))
        weights = os.path.join(self.out, "weights")
        self.run(1, total, "data", "procedural videos (SSv2-style layout)", [
            py, os.path.join(TOOLS, "make_synthetic_dataset.py"), os.path.join(self.out, "data"),
            "--num-classes", str(DATA["num_classes"]), "--train", str(s["train"]), "--val", str(DATA["val"]),
            "--test", str(s["test"]), "--frames", str(DATA["frames"]), "--height", str(DATA["height"]),
            "--width", str(DATA["width"]), "--layouts", "ssv2"])
        self.run(2, total, "pretrain", "masked-autoencoder pretraining", [
            *self.launcher("run_pretrain.py"), "--config", os.path.join(CONFIGS, "pretrain.yaml"),
            "--output_dir", pre, *self.data_opts(), *self.epochs_opt("pretrain_epochs")])
        self.run(3, total, "export_pretrained", "consolidated pretrained weights", [
            py, os.path.join(TOOLS, "export_weights.py"), pre, os.path.join(weights, "pretrained")])
        self.run(4, total, "finetune", "finetuning on the SSv2-style split from the pretrained weights", [
            *self.launcher("run_finetune.py"), "--config", os.path.join(CONFIGS, "finetune.yaml"), "--data", "ssv2",
            "--finetune", os.path.join(weights, "pretrained.safetensors"), "--output_dir", ft, *self.data_opts(), *self.epochs_opt("finetune_epochs")])
        best = os.path.join(ft, "best")
        self.run(5, total, "export_finetuned", "the best finetuned checkpoint (validation top-1)", [
            py, os.path.join(TOOLS, "export_weights.py"), best, os.path.join(weights, "finetuned")])
        self.run(6, total, "test", "multi-view test of the best checkpoint", [
            *self.launcher("test_multiview.py"), "--config", os.path.join(CONFIGS, "finetune.yaml"),
            "--checkpoint", best, "--output_dir", test, *self.data_opts(), "--opt", "data.dataset=ssv2"])
        recon = os.path.join(self.out, "reconstructions")
        videos = self.test_videos(s["reconstructions"])
        for i, video in enumerate(videos):
            self.run(7, total, f"visualize_{i}" if len(videos) > 1 else "visualize",
                     f"reconstruction of {os.path.basename(video)}", [
                         py, os.path.join(TOOLS, "visualize_reconstruction.py"), video,
                         "--weights", os.path.join(weights, "pretrained.safetensors"), "--dataset", "ssv2",
                         "--out", recon])
        ssl = os.path.join(self.out, "eval_ssl")
        self.run(8, total, "eval_ssl", "pretrained vs random init on held-out procedural clips (quick size)", [
            py, os.path.join(TOOLS, "eval_ssl.py"), "--quick", "--out", ssl])
        return self.summary(pre, test, weights, recon, ssl)

    def clear_output(self) -> None:
        """Runs refuse to write over old checkpoints, so the demo starts clean. It only ever empties
        a folder that holds its marker (written when it took the folder: absent or empty), never
        anything else, whatever the folder holds."""
        marker = os.path.join(self.out, MARKER)
        if os.path.exists(self.out):
            if not os.path.isdir(self.out) or (os.listdir(self.out) and not os.path.isfile(marker)):
                raise StepFailed(f"--out {self.out} exists and is not an earlier demo's output (no {MARKER} "
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

    def summary(self, pre: str, test: str, weights: str, recon: str, ssl: str) -> Dict:
        with open(os.path.join(pre, "log.jsonl"), encoding="utf-8") as f:
            epochs = [r for r in map(json.loads, f) if r.get("type") == "epoch"]
        with open(os.path.join(test, "summary.json"), encoding="utf-8") as f:
            report = json.load(f)
        with open(os.path.join(ssl, "table.md"), encoding="utf-8") as f:
            table = f.read()
        video = report["video"]
        top5_key = max(video, key=lambda k: int(k[3:]))
        num_classes = DATA["num_classes"]
        last = epochs[-1]
        # the last epoch's averages over its steps, on the same masked cubes as its loss
        baselines = {name: last[log_key(name)] for name in BASELINES}
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
            "test_top1": video["top1"],
            "test_top5": video[top5_key],
            "top5_means": top5_key,
            "test_single_view_top1": report["single_view"]["top1"],
            "views_per_video": report["views_per_video"],
            "test_videos": report["num_videos_evaluated"],
            "eval_ssl_table": table,
            "seconds": {k: round(v, 1) for k, v in self.seconds.items()},
            "outputs": {
                "data": self.data,
                "pretrain_run": pre,
                "finetune_run": os.path.join(self.out, "finetune"),
                "test_report": test,
                "weights": weights,
                "reconstructions": recon,
                "eval_ssl": ssl,
                "logs": self.logs,
            },
        }
        with open(os.path.join(self.out, "summary.json"), "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
        return result


def print_summary(r: Dict, out: str) -> None:
    o = r["outputs"]
    total = sum(r["seconds"].values())
    k5 = r["top5_means"].replace("top", "top-")
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
        f"test, video level ({r['views_per_video'][0]}x{r['views_per_video'][1]} views averaged, {r['test_videos']} videos): "
        f"top-1 {r['test_top1']:.1f}%  {k5} {r['test_top5']:.1f}%   chance: top-1 {r['chance_top1']:.1f}% "
        f"({r['num_classes']} classes)" + (" - top-5 is capped at top-4 with 4 classes" if k5 != "top-5" else ""),
        f"single view (clip level) top-1 {r['test_single_view_top1']:.1f}%",
        "",
        "pretrained vs random init (tools/eval_ssl.py --quick: its own pretraining on a few tiny clips; the "
        "quick size checks the path, its numbers mean little; `python tools/eval_ssl.py` is the real "
        "measurement, docs/ssl_evaluation.md):",
        *("  " + line for line in r["eval_ssl_table"].splitlines()),
        "",
        "outputs:",
        f"  data              {o['data']}  (train/val/test.csv, classes.txt, videos/)",
        f"  pretraining run   {o['pretrain_run']}  (log.jsonl, config.yaml, checkpoints, tensorboard/)",
        f"  finetuning run    {o['finetune_run']}  (best/ = checkpoint tested)",
        f"  test report       {o['test_report']}  (summary.json, predictions.csv, confusion_matrix.*)",
        f"  weights           {o['weights']}  (pretrained/finetuned .safetensors + .json)",
        f"  reconstructions   {o['reconstructions']}  (.mp4, .gif, .png)",
        f"  eval_ssl          {o['eval_ssl']}  (table.md, result.json, eval_ssl.png)",
        f"  step logs         {o['logs']}",
        f"  this summary      {os.path.join(out, 'summary.json')}",
    ]
    print("\n".join(lines), flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="output/demo", help="output folder: new or empty, or an earlier demo's output (replaced)")
    parser.add_argument("--quick", action="store_true", help="fewer videos and epochs (about 4 minutes on 2 CPU cores; the tests' run)")
    parser.add_argument("--num-gpus", type=int, default=0,
                        help="DeepSpeed ranks (default: 1 on a GPU machine, else 2 CPU ranks)")
    args = parser.parse_args(argv)
    if args.num_gpus < 0:
        parser.error("--num-gpus must be positive")
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
