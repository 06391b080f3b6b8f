"""The frozen-feature probes on features whose answer is known."""
import math

import pytest
import torch

from video_mcmae.eval.probes import AttentiveProbe, HeadRecipe, LinearProbe, accuracy, fit_head, knn_predict, predict


def clusters(n_per_class: int, classes: int, dim: int, seed: int, spread: float = 0.5):
    """Gaussian blobs around well separated centres (a linearly separable problem)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(0)) * 3
    y = torch.arange(classes).repeat(n_per_class)
    return centres[y] + spread * torch.randn(len(y), dim, generator=g), y


def where_tokens(n_per_class: int, classes: int, seed: int, length: int = 8, dim: int = 16):
    """The class is *where* a fixed marker sits among `length` tokens that carry a position code:
    the mean over tokens is the same for every class, so only a probe that reads single tokens
    can tell the classes apart."""
    g = torch.Generator().manual_seed(seed)
    fixed = torch.Generator().manual_seed(0)
    positions = torch.randn(length, dim, generator=fixed)
    marker = torch.randn(dim, generator=fixed) * 2
    y = torch.arange(classes).repeat(n_per_class)
    tokens = positions.expand(len(y), -1, -1) + 0.3 * torch.randn(len(y), length, dim, generator=g)
    tokens[torch.arange(len(y)), y] += marker
    return tokens, y


def test_knn_votes_for_the_nearest_neighbours_class():
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = torch.tensor([0, 0, 1, 1])
    query = torch.tensor([[1.0, 0.05], [0.05, 1.0], [-1.0, 0.0]])
    assert knn_predict(train, labels, query, classes=2, k=2).tolist()[:2] == [0, 1]
    # k larger than the memory falls back to all of it
    assert knn_predict(train, labels, query[:2], classes=2, k=50).tolist() == [0, 1]


def test_linear_probe_separates_separable_features():
    train_f, train_y = clusters(50, 4, 32, seed=1)
    val_f, val_y = clusters(20, 4, 32, seed=2)
    test_f, test_y = clusters(50, 4, 32, seed=3)
    result = fit_head(LinearProbe(32, 4), train_f, train_y, val_f, val_y, HeadRecipe(lr=1e-2, epochs=20), seed=0)
    assert result.val_acc == 1.0
    assert accuracy(predict(result.head, test_f), test_y) >= 0.98


def test_attentive_probe_reads_where_mean_pooling_cannot():
    train, train_y = where_tokens(64, 4, seed=1)
    val, val_y = where_tokens(16, 4, seed=2)
    test, test_y = where_tokens(32, 4, seed=3)
    recipe = HeadRecipe(lr=3e-3, epochs=40)
    attentive = fit_head(AttentiveProbe(16, 4), train, train_y, val, val_y, recipe, seed=0)
    assert accuracy(predict(attentive.head, test), test_y) >= 0.95
    linear = fit_head(LinearProbe(16, 4), train.mean(1), train_y, val.mean(1), val_y, recipe, seed=0)
    assert accuracy(predict(linear.head, test.mean(1)), test_y) <= 0.5


def test_fit_head_keeps_the_best_validation_state_not_the_last():
    train_f, train_y = clusters(20, 2, 8, seed=1)
    val_f, val_y = clusters(10, 2, 8, seed=2)
    result = fit_head(LinearProbe(8, 2), train_f, train_y, val_f, val_y, HeadRecipe(lr=1e-2, epochs=6, eval_every=2), seed=0)
    assert result.epoch in (2, 4, 6) and result.val_acc == 1.0
    # the earliest epoch that reached the best accuracy is kept
    assert result.epoch == 2
    assert accuracy(predict(result.head, val_f), val_y) == result.val_acc


def test_attentive_probe_refuses_a_width_its_heads_do_not_divide():
    with pytest.raises(ValueError, match="not divisible"):
        AttentiveProbe(10, 4, num_heads=4)
