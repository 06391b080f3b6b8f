"""Datasets and loaders from a run config: `build_dataset(cfg, split)` and `build_loader(cfg, split)`."""
from __future__ import annotations

import logging
import os
from typing import List, Tuple

import torch
from torch.utils.data import DistributedSampler
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from video_mcmae.errors import DataListError
from video_mcmae.paths import SHOWN, summarise

from .datasets import ImageDataset, PretrainDataset, VideoTestDataset, VideoTrainDataset, VideoValDataset
from .lists import Sample, read_class_names, read_list
from .loader import Loader, collate_stacked, worker_init_fn
from .samplers import PaddedContiguousSampler
from .sampling import DATASET_SAMPLING
from .transforms import (
    EvalTransform,
    PretrainTransform,
    TrainTransform,
    allows_flip,
    image_eval_transform,
    image_pretrain_transform,
    image_train_transform,
)

logger = logging.getLogger(__name__)

SPLITS = ("pretrain", "train", "val", "test")


def image_folder_samples(root: str) -> Tuple[List[Sample], List[str]]:
    """ImageNet-style `<root>/<class>/<image>`: classes sorted by name get ids 0..K-1."""
    if not os.path.isdir(root):
        raise DataListError(f"image folder not found: {root!r}")
    classes, class_to_idx = find_classes(root)
    items = make_dataset(root, class_to_idx, extensions=IMG_EXTENSIONS)
    return [Sample(p, label, 0) for p, label in items], classes


def _list_for(cfg, split: str) -> str:
    key = {"pretrain": "train_list", "train": "train_list", "val": "val_list", "test": "test_list"}[split]
    path = getattr(cfg.data, key)
    if not path:
        raise DataListError(f"data.{key} is empty; set it to the {split} list (see data_lists/README.md)")
    return path


def _image_dataset(cfg, split: str, list_path: str, num_classes, class_names) -> ImageDataset:
    d, size = cfg.data, cfg.model.img_size
    if os.path.isdir(list_path):
        samples, folder_classes = image_folder_samples(list_path)
        if num_classes is not None and len(folder_classes) > num_classes:
            raise DataListError(f"{list_path} has {len(folder_classes)} class folders but "
                                f"model.num_classes={num_classes}")
        class_names = class_names or folder_classes
    else:
        samples = read_list(list_path, num_classes, d.data_root or None)
    if split == "pretrain":
        return ImageDataset(samples, image_pretrain_transform(size, d.mean, d.std), with_label=False,
                            seed=cfg.run.seed, class_names=class_names)
    transform = (image_train_transform(size, d.mean, d.std, cfg.aug) if split == "train"
                 else image_eval_transform(size, d.mean, d.std))
    return ImageDataset(samples, transform, seed=cfg.run.seed, class_names=class_names)


def build_dataset(cfg, split: str, scan_progress: bool = False):
    """The dataset for `split` in {'pretrain', 'train', 'val', 'test'} from a `Config`.

    Validation and test datasets are scanned (with data.num_workers processes) and their
    unreadable videos excluded and logged; see `.excluded`.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    d, a, m = cfg.data, cfg.aug, cfg.model
    num_classes = None if split == "pretrain" else m.num_classes
    size = m.img_size
    class_names = read_class_names(d.class_names, num_classes) if d.class_names else None
    list_path = _list_for(cfg, split)
    if d.dataset == "image":
        return _image_dataset(cfg, split, list_path, num_classes, class_names)

    samples = read_list(list_path, num_classes, d.data_root or None)
    video = dict(num_frames=m.num_frames, sampling_rate=d.sampling_rate, backend=d.reader)
    sampling = DATASET_SAMPLING[d.dataset]
    if split == "pretrain":
        return PretrainDataset(samples, transform=PretrainTransform(size, a.pretrain_scales), num_sample=d.num_sample,
                               seed=cfg.run.seed, max_bad_fraction=d.max_bad_fraction, **video)
    if split == "train":
        transform = TrainTransform(size, flip=allows_flip(d.dataset), scale=a.crop_scale, ratio=a.crop_ratio,
                                   rand_augment=a.rand_augment, interpolation=a.train_interpolation)
        return VideoTrainDataset(samples, sampling=sampling, transform=transform, num_sample=d.num_sample,
                                 seed=cfg.run.seed, max_bad_fraction=d.max_bad_fraction, class_names=class_names,
                                 **video)
    if split == "val":
        ds = VideoValDataset(samples, sampling=sampling, transform=EvalTransform(size, d.short_side_size, num_crops=1),
                             class_names=class_names, **video)
    else:
        transform = EvalTransform(size, d.short_side_size, num_crops=d.test_num_spatial_crops)
        ds = VideoTestDataset(samples, sampling=sampling, num_temporal_views=cfg.num_temporal_views,
                              num_spatial_crops=d.test_num_spatial_crops, transform=transform,
                              class_names=class_names, **video)
    excluded = list(ds.scan(d.num_workers, progress=scan_progress))
    if len(excluded) <= SHOWN:
        for index, path, reason in excluded:
            logger.warning("excluded unreadable %s video %d: %s (%s)", split, index, path, reason)
    else:  # thousands of missing files: one line, and the whole list in a file
        listing = os.path.join(cfg.run.output_dir, f"unreadable_{split}.tsv")
        logger.warning("excluded %s", summarise([path for _, path, _ in excluded], f"unreadable {split} videos",
                                                listing, [f"{path}\t{reason}" for _, path, reason in excluded]))
    return ds


def build_loader(cfg, split: str, dataset=None, rank: int = 0, world_size: int = 1) -> Loader:
    """A `Loader` for `split` over `dataset` (built from cfg when None), sharded by a
    DistributedSampler (also with world_size 1, so `set_epoch` reshuffles reproducibly), or
    contiguously by `PaddedContiguousSampler` for the multi-view test (padding repeats the last
    view; the merge de-duplicates). Training loaders shuffle and drop the last incomplete batch; call
    `set_epoch(loader, e)`."""
    if dataset is None:
        dataset = build_dataset(cfg, split)
    training = split in ("pretrain", "train")
    if isinstance(dataset, VideoTestDataset):
        sampler = PaddedContiguousSampler(dataset, rank, world_size)
    else:
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=training,
                                     seed=cfg.run.seed, drop_last=False)
    stacked = isinstance(dataset, PretrainDataset) or getattr(dataset, "num_sample", 1) > 1
    workers = cfg.data.num_workers
    return Loader(
        dataset,
        batch_size=cfg.optim.batch_size if training else cfg.test.batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=cfg.data.pin_memory and torch.cuda.is_available(),
        drop_last=training,
        collate_fn=collate_stacked if stacked else None,
        worker_init_fn=worker_init_fn if workers > 0 else None,
        persistent_workers=workers > 0 and training,
        generator=torch.Generator().manual_seed(cfg.run.seed),
    )
