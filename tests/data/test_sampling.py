import random

import numpy as np
import pytest

from video_mcmae.data.sampling import (
    dense_center_indices,
    dense_clip,
    dense_test_indices,
    dense_train_indices,
    sample_indices,
    segment_center_indices,
    segment_test_indices,
    segment_train_indices,
    spatial_crop_offsets,
)


def test_dense_exact_stride():
    assert dense_clip(100, 4, 4, 10).tolist() == [10, 14, 18, 22]
    # reference finetune sampling gives offsets 0,4,8,12,17,...; ours keeps the stride exact
    idx = dense_clip(1000, 16, 4, 0)
    assert np.all(np.diff(idx) == 4) and idx[-1] == 60


def test_dense_train_start_range():
    # N = 20, F = 4, r = 4: span 13, starts 0..7
    starts = {dense_train_indices(20, 4, 4, random.Random(s))[0] for s in range(300)}
    assert starts == set(range(8))
    idx = dense_train_indices(20, 4, 4, random.Random(0))
    assert np.all(np.diff(idx) == 4) and idx[-1] <= 19


def test_dense_short_video_repeats_last_reachable():
    # N = 10, F = 4, r = 4: 0, 4, 8, then 8 again (12 is past the end)
    assert dense_train_indices(10, 4, 4, random.Random(1)).tolist() == [0, 4, 8, 8]
    assert dense_center_indices(10, 4, 4).tolist() == [0, 4, 8, 8]
    # N = 7, r = 4: last reachable on the grid is 4, not 6
    assert dense_clip(7, 4, 4, 0).tolist() == [0, 4, 4, 4]
    assert dense_clip(1, 3, 2, 0).tolist() == [0, 0, 0]


def test_dense_center_and_test_views():
    # N = 30, F = 4, r = 2: span 7, max start 23
    assert dense_center_indices(30, 4, 2).tolist() == [11, 13, 15, 17]
    views = dense_test_indices(30, 4, 2, 3)
    assert views.tolist() == [[0, 2, 4, 6], [11, 13, 15, 17], [23, 25, 27, 29]]
    assert dense_test_indices(30, 4, 2, 1).tolist() == [[11, 13, 15, 17]]
    # 5 views over max start 23: 0, 5, 11, 17, 23
    assert dense_test_indices(30, 4, 2, 5)[:, 0].tolist() == [0, 5, 11, 17, 23]
    # short video: every view is the repeated clip from 0
    assert dense_test_indices(5, 4, 2, 2).tolist() == [[0, 2, 4, 4]] * 2


def test_segment_train():
    # N = 20, F = 4: segments of 5 -> k*5 + [0, 5)
    for s in range(50):
        idx = segment_train_indices(20, 4, random.Random(s))
        assert all(5 * k <= i < 5 * k + 5 for k, i in enumerate(idx))
    # N = 22: avg 5, the two tail frames are never used (reference behaviour)
    assert max(segment_train_indices(22, 4, random.Random(s)).max() for s in range(200)) <= 19
    # N < F: spread by repetition, halves round up: linspace(0, 2, 5) = 0, .5, 1, 1.5, 2
    assert segment_train_indices(3, 5, random.Random(0)).tolist() == [0, 1, 1, 2, 2]
    assert segment_train_indices(5, 8, random.Random(0)).tolist() == [0, 1, 1, 2, 2, 3, 3, 4]


def test_segment_val_and_test():
    # N = 20, F = 4: tick 5; centres 2.5 -> 2, 7, 12, 17
    assert segment_center_indices(20, 4).tolist() == [2, 7, 12, 17]
    assert segment_test_indices(20, 4, 1).tolist() == [[2, 7, 12, 17]]
    # S = 2 is the reference: segment starts, then centres
    assert segment_test_indices(20, 4, 2).tolist() == [[0, 5, 10, 15], [2, 7, 12, 17]]
    # S = 3: tick*(k + v/3) with tick 5 -> v=1: 1.67, 6.67, ...; v=2: 3.33, ...
    assert segment_test_indices(20, 4, 3).tolist() == [[0, 5, 10, 15], [1, 6, 11, 16], [3, 8, 13, 18]]
    # N < F stays in range: N = 3, F = 4, tick .75
    assert segment_test_indices(3, 4, 2).tolist() == [[0, 0, 1, 2], [0, 1, 1, 2]]


def test_sample_indices_dispatch():
    rng = random.Random(0)
    assert sample_indices("dense", "train", 100, 4, 4, rng).shape == (1, 4)
    assert sample_indices("segment", "val", 20, 4, 99).tolist() == [[2, 7, 12, 17]]
    assert sample_indices("dense", "test", 30, 4, 2, num_views=3).shape == (3, 4)
    with pytest.raises(ValueError, match="random.Random"):
        sample_indices("dense", "train", 100, 4, 4)
    with pytest.raises(ValueError, match="0 frames"):
        sample_indices("dense", "val", 0, 4, 4)


def test_spatial_crops():
    # landscape 224 x 300, crop 224: left, centre, right
    assert spatial_crop_offsets(224, 300, 224, 3) == [(0, 0), (0, 38), (0, 76)]
    assert spatial_crop_offsets(224, 300, 224, 1) == [(0, 38)]
    # portrait: top, centre, bottom
    assert spatial_crop_offsets(300, 224, 224, 3) == [(0, 0), (38, 0), (76, 0)]
    # short side larger than the crop: centred on the short side
    assert spatial_crop_offsets(240, 320, 224, 2) == [(8, 0), (8, 96)]
    with pytest.raises(ValueError):
        spatial_crop_offsets(100, 100, 224, 1)
