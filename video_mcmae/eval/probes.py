"""Frozen-feature evaluations: k-NN, the BatchNorm linear probe and the attentive probe.

Each works on features computed once from a frozen encoder (`eval.features`), so a probe costs no
encoder pass. The trained probes share one loop (`fit_head`): AdamW (no weight decay on norms and
biases, `engine.optim.param_groups`) under a warmup + cosine lr (`engine.schedule`), full passes
over the training features, and the validation accuracy after every `eval_every` epochs; the
state with the best validation accuracy is kept (early stopping). No function here sees a test split.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from timm.layers import Mlp, trunc_normal_
from torch import nn

from video_mcmae.engine.optim import param_groups
from video_mcmae.engine.schedule import CosineSchedule, Schedules


def knn_predict(train_f: torch.Tensor, train_y: torch.Tensor, query_f: torch.Tensor, classes: int, k: int = 20,
                temperature: float = 0.07) -> torch.Tensor:
    """Cosine k-NN with votes weighted by exp(similarity / temperature) (DINO's evaluation): the
    predicted class of every query row."""
    k = min(k, len(train_f))
    sim, idx = (F.normalize(query_f, dim=-1) @ F.normalize(train_f, dim=-1).T).topk(k, dim=-1)
    votes = torch.zeros(len(query_f), classes).scatter_add_(1, train_y[idx], (sim / temperature).exp())
    return votes.argmax(-1)


class LinearProbe(nn.Module):
    """MAE's linear probe: BatchNorm without affine parameters (standardises each feature with
    batch statistics while training, running ones after), then a linear layer. Input `(N, C)`."""

    def __init__(self, dim: int, classes: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False, eps=1e-6)
        self.head = nn.Linear(dim, classes)
        trunc_normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(features))


class AttentiveProbe(nn.Module):
    """A learned query cross-attends to every frozen token of a layer, then a linear classifier
    (the frozen evaluation of V-JEPA). Input `(N, L, C)`: the tokens keep where and when, so the
    probe can read a motion that mean pooling averages away.

    One pre-norm cross-attention block: `q = query + attn(query, norm(tokens))`, then
    `q = q + mlp(norm(q))`, then `head(norm(q))`.
    """

    def __init__(self, dim: int, classes: int, num_heads: int = 4, mlp_ratio: float = 4.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attentive probe: token width {dim} is not divisible by num_heads={num_heads}")
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        trunc_normal_(self.query, std=0.02)
        self.norm_tokens = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm_head = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        kv = self.norm_tokens(tokens)
        q = self.query.expand(len(tokens), -1, -1)
        q = q + self.attn(q, kv, kv, need_weights=False)[0]
        q = q + self.mlp(self.norm_mlp(q))
        return self.head(self.norm_head(q[:, 0]))


@dataclass(frozen=True)
class HeadRecipe:
    """How a probe is trained: AdamW at `lr` with a 10% warmup and a cosine to 1% of it over
    `epochs` passes in batches of `batch`; validation every `eval_every` epochs."""

    lr: float = 1e-3
    weight_decay: float = 0.05
    epochs: int = 60
    batch: int = 64
    eval_every: int = 5


@dataclass
class HeadResult:
    head: nn.Module  # the best state by validation accuracy
    val_acc: float
    epoch: int  # the epoch whose state was kept


@torch.no_grad()
def predict(head: nn.Module, features: torch.Tensor, batch: int = 256) -> torch.Tensor:
    head.eval()
    return torch.cat([head(features[i:i + batch]).argmax(-1) for i in range(0, len(features), batch)])


def accuracy(pred: torch.Tensor, labels: torch.Tensor) -> float:
    return float((pred == labels).float().mean())


def fit_head(head: nn.Module, train_f: torch.Tensor, train_y: torch.Tensor, val_f: torch.Tensor,
             val_y: torch.Tensor, recipe: HeadRecipe, seed: int, generator: Optional[torch.Generator] = None) -> HeadResult:
    """Train `head` on frozen features; keep the state with the best validation accuracy (the
    earliest among equals)."""
    torch.manual_seed(seed)
    order = generator or torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(param_groups(head, recipe.weight_decay), lr=recipe.lr)
    steps_per_epoch = math.ceil(len(train_f) / recipe.batch)
    total = recipe.epochs * steps_per_epoch
    schedules = Schedules(lr=CosineSchedule(recipe.lr, recipe.lr * 0.01, total, max(1, total // 10)),
                          wd=CosineSchedule(recipe.weight_decay, recipe.weight_decay, total))
    best = HeadResult(copy.deepcopy(head), -1.0, 0)
    step = 0
    for epoch in range(1, recipe.epochs + 1):
        head.train()
        perm = torch.randperm(len(train_f), generator=order)
        for i in range(0, len(train_f), recipe.batch):
            idx = perm[i:i + recipe.batch]
            if len(idx) < 2 and isinstance(head, LinearProbe):
                continue  # BatchNorm needs two rows for a batch statistic
            schedules.apply(opt, step)
            loss = F.cross_entropy(head(train_f[idx]), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        if epoch % recipe.eval_every == 0 or epoch == recipe.epochs:
            acc = accuracy(predict(head, val_f), val_y)
            if acc > best.val_acc:
                best = HeadResult(copy.deepcopy(head), acc, epoch)
    return best
