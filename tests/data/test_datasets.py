import logging
import re
from pathlib import Path

import pytest
import torch

from video_mcmae.config import Config
from video_mcmae.data import datasets as datasets_module
from video_mcmae.data.datasets import PretrainDataset, VideoTestDataset, VideoTrainDataset, VideoValDataset
from video_mcmae.data.factory import build_dataset, build_loader
from video_mcmae.data.lists import Sample, read_list
from video_mcmae.data.loader import PartialBatch, collate_stacked, set_epoch
from video_mcmae.errors import TooManyBadFilesError, VideoReadError
from video_mcmae.data.transforms import EvalTransform, PretrainTransform, TrainTransform


def tiny_cfg(root, layout="k400", **data):
    cfg = Config()
    cfg.model.num_frames, cfg.model.img_size, cfg.model.num_classes = 4, 32, 4
    cfg.data.dataset = layout
    cfg.data.data_root = str(root / layout)
    for split in ("train", "val", "test"):
        setattr(cfg.data, f"{split}_list", str(root / layout / f"{split}.csv"))
    cfg.data.sampling_rate, cfg.data.short_side_size, cfg.data.num_workers = 2, 40, 0
    cfg.aug.rand_augment, cfg.aug.reprob = "", 0.0
    cfg.optim.batch_size, cfg.test.batch_size = 2, 4
    for k, v in data.items():
        setattr(cfg.data, k, v)
    return cfg


def test_pretrain_repeated_sampling_shapes(synthetic_root):
    cfg = tiny_cfg(synthetic_root, num_sample=2)
    ds = build_dataset(cfg, "pretrain")
    clips = ds[0]
    assert clips.shape == (2, 3, 4, 32, 32)
    assert not torch.equal(clips[0], clips[1])  # two augmentations of one decode
    loader = build_loader(cfg, "pretrain", dataset=ds)
    batch = next(iter(loader))
    assert batch.shape == (4, 3, 4, 32, 32)  # batch 2 videos x 2 samples
    cfg.data.dataset = "ssv2"
    cls = build_dataset(tiny_cfg(synthetic_root, "ssv2", num_sample=2), "train")
    clips, labels = collate_stacked([cls[0], cls[1]])
    assert clips.shape == (4, 3, 4, 32, 32) and labels.tolist() == [cls.samples[0].label] * 2 + [cls.samples[1].label] * 2


def test_determinism_across_epochs_instances_and_workers(synthetic_root):
    cfg = tiny_cfg(synthetic_root)
    a, b = build_dataset(cfg, "train"), build_dataset(cfg, "train")
    assert torch.equal(a[3][0], b[3][0])
    b.set_epoch(1)
    assert not torch.equal(a[3][0], b[3][0])
    loader0 = build_loader(cfg, "train", dataset=a)
    set_epoch(loader0, 2)
    cfg.data.num_workers = 2
    loader2 = build_loader(cfg, "train", dataset=build_dataset(cfg, "train"))
    list(loader2)  # starts the persistent workers at epoch 0
    set_epoch(loader2, 2)  # reaches them through shared memory
    for (x0, y0), (x2, y2) in zip(loader0, loader2):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)


def test_val_is_deterministic_centre(synthetic_root):
    ds = build_dataset(tiny_cfg(synthetic_root, "ssv2"), "val")
    x, label = ds[0]
    assert x.shape == (3, 4, 32, 32) and label == ds.samples[0].label
    ds.set_epoch(5)
    assert torch.equal(ds[0][0], x)


@pytest.fixture
def mixed_list(tmp_path, synthetic_root, vids):
    """8 readable videos then the 5 broken kinds (13 lines)."""
    good = read_list(str(synthetic_root / "k400" / "train.csv"), data_root=str(synthetic_root / "k400"))[:8]
    bad = vids.make_bad_files(str(tmp_path / "bad"))
    samples = list(good) + [Sample(p, 1, 0) for p in bad.values()]
    return samples, bad


def test_training_replaces_counts_and_logs_bad_files(mixed_list, caplog):
    samples, bad = mixed_list
    ds = PretrainDataset(samples, num_frames=4, sampling_rate=2, transform=PretrainTransform(32),
                         max_bad_fraction=0.5)
    with caplog.at_level(logging.WARNING):
        first = [ds[i] for i in range(len(ds))]
        [ds[i] for i in range(len(ds))]
    stats = ds.bad_file_stats()
    assert stats == dict(bad_files=5, replaced=10, num_samples=13)
    assert sorted(ds.bad_file_paths()) == sorted(bad.values())
    assert ds.bad_file_mask().tolist() == [0] * 8 + [1] * 5
    for path in bad.values():  # logged once each, with the path
        assert sum(path in r.getMessage() for r in caplog.records if r.name.endswith("datasets")) == 1
    # replacements are deterministic: the 5 bad items (indices 8..12) wrap around to video 0
    assert all(c.shape == (1, 3, 4, 32, 32) for c in first)
    ds.set_epoch(1)
    assert ds.bad_file_stats()["replaced"] == 0


def test_training_stops_above_bad_fraction(mixed_list):
    samples, _ = mixed_list
    ds = VideoTrainDataset(samples, sampling="dense", num_frames=4, sampling_rate=2,
                           transform=TrainTransform(32, flip=True), max_bad_fraction=0.3)
    with pytest.raises(TooManyBadFilesError, match=r"4 of 13 videos .*data.max_bad_fraction=0.3"):
        for i in range(len(ds)):
            ds[i]


def test_test_dataset_excludes_and_lists_bad_videos(mixed_list):
    samples, bad = mixed_list
    ds = VideoTestDataset(samples, sampling="dense", num_frames=4, sampling_rate=2, num_temporal_views=2,
                          num_spatial_crops=3, transform=EvalTransform(32, 40, num_crops=3))
    excluded = ds.scan()
    assert [(i, p) for i, p, _ in excluded] == [(8 + k, p) for k, p in enumerate(bad.values())]
    assert all(reason for _, _, reason in excluded)
    assert len(ds) == 8 * 2 * 3
    seen = []
    for i in range(len(ds)):
        clip, label, video, t, s = ds[i]
        assert clip.shape == (3, 4, 32, 32) and label == samples[video].label
        seen.append((video, t, s))
    assert seen == ds.expected_views() and {v for v, _, _ in seen} == set(range(8))
    # unscanned, a bad video is never replaced: it raises
    raw = VideoTestDataset(samples, sampling="dense", num_frames=4, sampling_rate=2, num_temporal_views=1,
                           num_spatial_crops=1, transform=EvalTransform(32, 40))
    with pytest.raises(VideoReadError):
        raw[8]


def test_build_test_dataset_from_config(synthetic_root):
    cfg = tiny_cfg(synthetic_root, "ssv2", test_num_spatial_crops=2)
    ds = build_dataset(cfg, "test")
    assert ds.num_temporal_views == 2 and ds.sampling == "segment" and ds.excluded == []
    assert len(ds) == len(ds.samples) * 4
    loader = build_loader(cfg, "test", dataset=ds)
    clip, label, video, t, s = next(iter(loader))
    assert clip.shape == (4, 3, 4, 32, 32) and video.tolist() == [0, 0, 0, 0]
    assert t.tolist() == [0, 0, 1, 1] and s.tolist() == [0, 1, 0, 1]


def test_missing_list_is_a_clear_error(synthetic_root):
    cfg = tiny_cfg(synthetic_root)
    cfg.data.val_list = ""
    with pytest.raises(ValueError, match="data.val_list is empty"):
        build_dataset(cfg, "val")


def test_image_folder_datasets(tmp_path):
    from PIL import Image

    for label, cls in enumerate(["cat", "dog"]):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (40, 30), (100 * label, 50, 20 * i)).save(tmp_path / "train" / cls / f"{i}.png")
    cfg = Config()
    cfg.data.dataset, cfg.model.img_size, cfg.model.num_classes = "image", 32, 2
    cfg.data.train_list = cfg.data.val_list = str(tmp_path / "train")
    pre = build_dataset(cfg, "pretrain")
    assert pre[0].shape == (3, 32, 32) and torch.equal(pre[0], pre[0])  # seeded per (seed, epoch, index)
    x, y = build_dataset(cfg, "train")[3]
    assert x.shape == (3, 32, 32) and y == 1
    val = build_dataset(cfg, "val")
    assert val.class_names == ["cat", "dog"] and val[0][0].shape == (3, 32, 32)
    cfg.model.num_classes = 1
    with pytest.raises(ValueError, match="2 class folders"):
        build_dataset(cfg, "train")


def test_flip_rule_follows_the_dataset_kind(synthetic_root):
    assert build_dataset(tiny_cfg(synthetic_root, "ssv2"), "train").transform.flip is False
    assert build_dataset(tiny_cfg(synthetic_root, "k400"), "train").transform.flip is True


def test_test_views_decode_once_and_shard_contiguously(synthetic_root, monkeypatch):
    from video_mcmae.data.samplers import PaddedContiguousSampler

    ds = build_dataset(tiny_cfg(synthetic_root, "k400", test_num_spatial_crops=3), "test")
    calls = []
    decode = ds._decode
    monkeypatch.setattr(ds, "_decode", lambda *a, **k: calls.append(a[0]) or decode(*a, **k))
    for i in range(2 * ds.views_per_video):
        ds[i]
    assert len(calls) == 2 * ds.num_temporal_views  # one decode per temporal view, not per crop
    shards = [list(PaddedContiguousSampler(range(10), r, 3)) for r in range(3)]
    assert shards == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 9, 9]]


class _FailsFrom:
    """`open_video` whose readers of `path` fail on frame `frame` and later (a file that passes
    the start-up scan, which reads the first and last frames, but breaks mid-decode)."""

    def __init__(self, path, frame):
        self.path, self.frame = path, frame
        self.open = datasets_module.open_video

    def __call__(self, path, backend, fallback=True):
        reader = self.open(path, backend, fallback=fallback)
        if path != self.path:
            return reader
        fail_from = self.frame

        class Reader:
            num_frames, fps = reader.num_frames, reader.fps

            def get_frames(self, indices):
                if max(indices) >= fail_from:
                    raise VideoReadError(path, f"invalid data at frame {fail_from}")
                return reader.get_frames(indices)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                reader.__exit__(*exc)

        return Reader()


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_errors_arrive_whole_in_the_main_process(mixed_list, workers):
    samples, bad = mixed_list
    cfg = tiny_cfg(Path("."), num_workers=workers)
    train = PretrainDataset(samples, num_frames=4, sampling_rate=2, transform=PretrainTransform(32),
                            max_bad_fraction=0.2)
    with pytest.raises(TooManyBadFilesError) as e:
        for _ in build_loader(cfg, "pretrain", dataset=train):
            pass
    # the dataset's own one-line message, not "Caught TooManyBadFilesError in DataLoader worker process 0"
    assert re.fullmatch(r"3 of 13 videos in the training list are unreadable \(more than "
                        r"data.max_bad_fraction=0.2\): .*", str(e.value))
    val = VideoValDataset(samples, sampling="dense", num_frames=4, sampling_rate=2,
                          transform=EvalTransform(32, 40))  # not scanned: the bad files stay in
    with pytest.raises(VideoReadError) as e:
        list(build_loader(cfg, "val", dataset=val))
    assert e.value.path in bad.values() and str(e.value).startswith("cannot read video")


@pytest.mark.parametrize("workers", [0, 1])
def test_test_loader_leaves_out_a_video_failing_mid_decode(synthetic_root, monkeypatch, workers):
    cfg = tiny_cfg(synthetic_root, "k400", test_num_spatial_crops=2, test_num_temporal_views=2, num_workers=workers)
    cfg.test.batch_size = 6
    ds = build_dataset(cfg, "test")
    assert ds.excluded == []
    monkeypatch.setattr(datasets_module, "open_video", _FailsFrom(ds.samples[1].path, 12))
    loader = build_loader(cfg, "test", dataset=ds)
    batches = list(loader.batches())
    failed = [b for b in batches if isinstance(b, PartialBatch)]
    # views (video, t, s): batch 0 = video 0 (4 views) + video 1 t=0 (decodes frames < 12);
    # batch 1 = video 1 t=1 (fails) + video 2 t=0
    assert len(failed) == 1 and list(failed[0].errors) == [1]
    assert failed[0].errors[1].reason == "invalid data at frame 12"
    clip, label, video, t, s = failed[0].batch
    assert video.tolist() == [2, 2, 2, 2] and t.tolist() == [0, 0, 1, 1] and clip.shape[0] == 4
    assert len(batches) == len(loader) and not isinstance(batches[0], PartialBatch)
    with pytest.raises(VideoReadError, match="invalid data at frame 12"):
        list(loader)


def test_the_bad_file_limit_applies_to_the_marks_given(mixed_list):
    samples, bad = mixed_list
    ds = PretrainDataset(samples, num_frames=4, sampling_rate=2, transform=PretrainTransform(32),
                         max_bad_fraction=0.25)
    mask = torch.zeros(13, dtype=torch.uint8)
    mask[[8, 10, 12]] = 1
    assert ds.too_many_bad_files(mask) is None  # 3 <= 0.25 x 13
    mask[9] = 1
    error = ds.too_many_bad_files(mask)
    assert str(error).startswith(f"4 of 13 videos in the training list are unreadable (more than "
                                 f"data.max_bad_fraction=0.25): {samples[8].path}, {samples[9].path}, "
                                 f"{samples[10].path}, ...; each is logged with its reason.")
    everything = PretrainDataset(samples[8:], num_frames=4, sampling_rate=2, transform=PretrainTransform(32),
                                 max_bad_fraction=1.0)
    with pytest.raises(TooManyBadFilesError, match="5 of 5 videos"):
        everything[0]


def test_loader_batches_are_uint8_clips(synthetic_root):
    """Video clips cross the worker boundary as uint8; the steps normalise them on the device."""
    cfg = tiny_cfg(synthetic_root, num_sample=2)
    assert next(iter(build_loader(cfg, "pretrain"))).dtype == torch.uint8
    for split in ("train", "val"):
        x, _ = next(iter(build_loader(cfg, split)))
        assert x.dtype == torch.uint8 and x.shape[1:] == (3, 4, 32, 32)
    x, *_ = next(iter(build_loader(cfg, "test")))
    assert x.dtype == torch.uint8 and x.is_contiguous()
