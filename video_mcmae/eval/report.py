"""The evaluation's result as a markdown table and one picture, and its targets.

Targets (docs/ssl_evaluation.md): the pretext loss at most 0.7x the best trivial predictor; the
pretrained init at least 10 top-1 points above the random init at its best (tuned and early
stopped, or given the pretraining's steps too: the better of the two) at every label budget of 10%
and below; the attentive probe on pretrained features at least 15 points above the
one on random features. All on the test split, means over seeds.
"""
from __future__ import annotations

from typing import Dict

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from video_mcmae.models.baselines import BASELINES

TARGET_PRETEXT_RATIO = 0.7
TARGET_FINETUNE_GAP = 10.0
TARGET_FINETUNE_BUDGET = 0.1  # the finetuning target holds at this budget and below
TARGET_ATTENTIVE_GAP = 15.0
PROBE_TITLES = {"knn": "k-NN", "linear": "linear probe (BatchNorm)", "attentive": "attentive probe"}


def gap_to_best_scratch(row: dict) -> float:
    """Pretrained minus the random init at its best: early stopped with its own lr, or given the
    pretraining's steps too (test means of one label budget's row)."""
    scratch = max(row[k]["test"]["mean"] for k in ("random", "random_matched") if k in row)
    return row["pretrained"]["test"]["mean"] - scratch


def targets(result: dict) -> Dict[str, bool]:
    gaps = [gap_to_best_scratch(row) for b, row in result["label_efficiency"].items()
            if float(b) <= TARGET_FINETUNE_BUDGET]
    return dict(
        pretext=result["pretext"]["ratio"] <= TARGET_PRETEXT_RATIO,
        finetune=bool(gaps) and min(gaps) >= TARGET_FINETUNE_GAP,
        attentive=result["frozen"]["attentive"]["gap"] >= TARGET_ATTENTIVE_GAP)


def _pm(stats: dict) -> str:
    return f"{stats['mean']:.1f} ± {stats['std']:.1f}"


def markdown(result: dict, quick: bool = False) -> str:
    """The result as markdown: setup, pretext, label-efficiency curve, frozen probes, targets."""
    cfg, p = result["config"], result["pretext"]
    met = targets(result)

    def verdict(name: str) -> str:
        # At the quick size the numbers are noise: a verdict there would mislead.
        return "not judged at the quick size" if quick else ("met" if met[name] else "**missed**")

    pool = cfg["pool_per_class"] * cfg["classes"]
    lines = [
        f"Setup: {cfg['classes']} classes (chance {result['chance']:.1f}%), clips of {cfg['frames']}x{cfg['size']}x"
        f"{cfg['size']}; unlabelled pool {pool}, validation {cfg['val_per_class'] * cfg['classes']}, test "
        f"{cfg['test_per_class'] * cfg['classes']} clips; {cfg['pretrain']['steps']} pretraining steps per pretraining "
        f"seed {cfg['pt_seeds']}; downstream seeds {cfg['seeds']}; every choice on validation, the test split read "
        f"{len(result['test_reads'])} times (once per reported number); {_took(result)}.",
        "",
        "| pretext loss on test clips (fixed masks) | MSE |",
        "|---|---:|",
        *(f"| trivial: {name} | {p['test_baselines'][name]:.5f} |" for name in BASELINES),
        f"| pretrained (mean ± std over {len(p['test_losses'])} seeds) | {p['test_loss']:.5f} ± {p['test_std']:.5f} |",
        f"| ratio to the best trivial ({p['best_baseline']}) | {p['ratio']:.3f} (target <= {TARGET_PRETEXT_RATIO}: "
        f"{verdict('pretext')}) |",
        "",
        "| labels (per class) | pretrained | random init | gap | random, matched compute | gap to the better random |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for budget, row in sorted(result["label_efficiency"].items(), key=lambda kv: float(kv[0])):
        per_class = max(1, round(float(budget) * cfg["pool_per_class"]))
        matched = row.get("random_matched")
        lines.append(
            f"| {float(budget) * 100:g}% ({per_class}) | {_pm(row['pretrained']['test'])} (lr {row['pretrained']['lr']:g}, "
            f"best step {_steps(row['pretrained'])}) | {_pm(row['random']['test'])} (lr {row['random']['lr']:g}, best step "
            f"{_steps(row['random'])}) | {row['gap']:+.1f} | "
            + (f"{_pm(matched['test'])} ({matched['steps'][0]} steps)" if matched else "")
            + f" | {gap_to_best_scratch(row):+.1f} |")
    lines += [f"", f"Finetuning target: pretrained >= the better random init + {TARGET_FINETUNE_GAP:g} at budgets <= "
                   f"{TARGET_FINETUNE_BUDGET * 100:g}%: {verdict('finetune')}.", "",
              f"| frozen, test top-1 % | pretrained | random init | gap |", "|---|---:|---:|---:|"]
    for name, title in PROBE_TITLES.items():
        row = result["frozen"][name]
        where = f" on {result['frozen']['layer']} tokens" if name == "attentive" else " on pooled features"
        lines.append(f"| {title}{where} | {_pm(row['pretrained']['test'])} | {_pm(row['random']['test'])} | "
                     f"{row['gap']:+.1f} |")
    lines += ["", f"Attentive-probe target: pretrained >= random + {TARGET_ATTENTIVE_GAP:g}: {verdict('attentive')}."]
    return "\n".join(lines) + "\n"


def _steps(row: dict) -> str:
    """Median best step / median steps run over the downstream seeds."""
    return f"{int(np.median(row['best_steps']))}/{int(np.median(row['steps']))}"


def plot(result: dict, path: str) -> None:
    """Three panels: the pretext validation loss against the trivial predictors, the
    label-efficiency curve, the frozen probes."""
    cfg, p = result["config"], result["pretext"]
    fig = Figure(figsize=(14, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 3, 1)
    for seed, curve in zip(p["seeds"], p["curves"]):
        ax.plot(*zip(*curve), "-", lw=1, label=f"pretraining seed {seed}")
    for name, colour in zip(BASELINES, ("tab:red", "tab:orange", "tab:purple")):
        ax.axhline(p["val_baselines"][name], color=colour, ls="--", lw=1, label=f"trivial: {name}")
    ax.axhline(TARGET_PRETEXT_RATIO * min(p["val_baselines"].values()), color="tab:green", ls=":", lw=1,
               label=f"{TARGET_PRETEXT_RATIO} x best trivial")
    ax.set(xlabel="pretraining step", ylabel="masked-cube MSE, validation clips", title="pretext", yscale="log")
    ax.legend(fontsize=7)

    ax = fig.add_subplot(1, 3, 2)
    rows = sorted(result["label_efficiency"].items(), key=lambda kv: float(kv[0]))
    labels = [max(1, round(float(b) * cfg["pool_per_class"])) for b, _ in rows]
    for init, colour in (("pretrained", "tab:blue"), ("random", "tab:gray")):
        ax.errorbar(labels, [r[init]["test"]["mean"] for _, r in rows], yerr=[r[init]["test"]["std"] for _, r in rows],
                    fmt="o-", color=colour, capsize=3, label=f"{init} init (own lr, early stopped)")
    matched = [(n, r["random_matched"]["test"]) for n, (_, r) in zip(labels, rows) if "random_matched" in r]
    if matched:
        ax.errorbar([n for n, _ in matched], [s["mean"] for _, s in matched], yerr=[s["std"] for _, s in matched],
                    fmt="s", color="black", capsize=3, label="random init, matched compute")
    ax.axhline(result["chance"], color="tab:red", ls="--", lw=1, label="chance")
    ax.set(xscale="log", xlabel="labelled clips per class", ylabel="test top-1 % (mean ± std over seeds)",
           ylim=(0, 102), title="finetuning: label efficiency")
    ax.legend(fontsize=7)

    ax = fig.add_subplot(1, 3, 3)
    x = np.arange(len(PROBE_TITLES))
    for offset, init, colour in ((-0.2, "pretrained", "tab:blue"), (0.2, "random", "tab:gray")):
        stats = [result["frozen"][name][init]["test"] for name in PROBE_TITLES]
        bars = ax.bar(x + offset, [s["mean"] for s in stats], 0.4, yerr=[s["std"] for s in stats], capsize=3,
                      color=colour, label=f"{init} init")
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
    ax.axhline(result["chance"], color="tab:red", ls="--", lw=1, label="chance")
    ax.set_xticks(x, [PROBE_TITLES[n] for n in PROBE_TITLES], fontsize=8)
    ax.set(ylabel="test top-1 %", ylim=(0, 102), title=f"frozen encoder (attentive: {result['frozen']['layer']})")
    ax.legend(fontsize=7)
    fig.suptitle(f"eval_ssl: {cfg['classes']} motion classes, {cfg['frames']}x{cfg['size']}x{cfg['size']} clips, "
                 f"pool {cfg['pool_per_class'] * cfg['classes']}, seeds {cfg['seeds']}, "
                 f"{_took(result)}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def _took(result: dict) -> str:
    """The run's wall clock; for a run that went on from a stopped one, what this part took and
    the trainings' own time in all."""
    took = f"{result['seconds'] / 60:.1f} min"
    if result.get("trainings_loaded"):
        took += (f" after going on from {result['trainings_loaded']} finished trainings (all trainings: "
                 f"{result['training_seconds'] / 60:.0f} worker-min)")
    return took
