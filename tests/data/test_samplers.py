"""Evaluation samplers: the strided split covers every item once without padding; the contiguous
split (multi-view test, tests/data/test_datasets.py) pads to equal counts."""
from video_mcmae.data.samplers import PaddedContiguousSampler, StridedShardSampler


def test_strided_shard_sampler_covers_each_item_once():
    shards = [list(StridedShardSampler(range(10), r, 3)) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(10))


def test_padded_contiguous_sampler_gives_every_rank_the_same_count():
    assert [len(PaddedContiguousSampler(range(10), r, 4)) for r in range(4)] == [3, 3, 3, 3]
    assert list(PaddedContiguousSampler(range(10), 3, 4)) == [9, 9, 9]
