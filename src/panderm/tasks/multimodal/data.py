"""Paired clinical + dermoscopic (+ metadata) datasets for the multimodal task.

Every loader returns the same `MultimodalTable`: one row per case with `clinical_path`,
`derm_path` (absolute), `label` (int), `split` (train / val / test) and `prompt` (the
metadata sentence), plus the raw metadata columns for the one-hot path. Everything is
validated before a model is loaded; each problem is one `DataError` naming the file, the
column and the rows (docs/REFERENCE.md for the formats):

- `load_derm7pt(dir_release)`: `meta/meta.csv`, `meta/{train,valid,test}_indexes.csv`,
  `images/`; 5 grouped classes.
- `load_milk11(root)`: `meta/{train,val,test}.csv` (`clinical_path`, `derm_path`, `target`).
- `load_pad_ufes20(path)`: the reference's `meta/{train,val,test}.csv` or one CSV with a
  split column (the bundled sample); the clinical image fills both image slots.
- `load_multimodal_csv(csv)`: any CSV with clinical/derm path, label, split and metadata.

`MultimodalDataset` turns a table into tensors. Departures from the reference
(`multimodal_finetune/src/dataloader.py`), each behind a flag where a published number
could depend on it:
- images are RGB; `bgr=True` restores the reference's accidental cv2 BGR input;
- the ImageNet std is 0.229; `std=REFERENCE_STD` restores its 0.228 typo;
- `resize_mode="antialias"` (the default) resizes once with antialiasing (train: 256, then
  the crop to 224; eval: 224); `resize_mode="reference"` follows the reference's cv2 /
  albumentations chain: every image to 224 first, then (train) to 256 and the crop back to
  224, each step bilinear with half-pixel centres and no antialiasing (cv2 INTER_LINEAR),
  rounded to 8-bit as cv2 keeps uint8 between steps; eval uses the 224 image as is. cv2's
  fixed-point interpolation may differ from this float arithmetic by ±1 grey level (against
  OpenCV 5.0 on random images: never more than 1, on about one value in eight);
- `paired_augmentation=False` gives the two images independent crops/flips (the
  reference always shares them);
- the label is a 0-d tensor (the reference returned shape [1] and squeezed later).

Modules: ``table`` (the uniform table and shared checks), ``loaders`` (one per dataset and any CSV),
``augment`` (transforms), ``dataset`` (torch Dataset, sampling). Their public names are importable from here
(private helpers from their own module); the normalisation constants live in :mod:`panderm.models.constants`.
"""
from __future__ import annotations

from ...models.constants import IMAGENET_MEAN, IMAGENET_STD, REFERENCE_STD
from .augment import (
    RESIZE_MODES,
    AugParams,
    PairedTransform,
    apply_aug,
    reference_resize,
    sample_aug_params,
    sample_crop,
    to_float_tensor,
)
from .dataset import MultimodalDataset, class_balanced_weights, make_datasets, weighted_sampler
from .loaders import (
    DATASET_LOADERS,
    DERM7PT_CLASSES,
    DERM7PT_GROUPS,
    DERM7PT_META_COLUMNS,
    MILK11_META_COLUMNS,
    MILK11_MONET_COLUMNS,
    PAD_CLASSES,
    load_derm7pt,
    load_milk11,
    load_multimodal,
    load_multimodal_csv,
    load_pad_ufes20,
)
from .prompts import PAD_META_COLUMNS
from .table import SPLITS, MultimodalTable

__all__ = [
    "SPLITS", "DERM7PT_CLASSES", "DERM7PT_GROUPS", "DERM7PT_META_COLUMNS", "MILK11_META_COLUMNS",
    "MILK11_MONET_COLUMNS", "PAD_CLASSES", "PAD_META_COLUMNS", "IMAGENET_MEAN", "IMAGENET_STD",
    "REFERENCE_STD", "RESIZE_MODES", "reference_resize", "MultimodalTable", "load_derm7pt", "load_milk11", "load_pad_ufes20",
    "load_multimodal_csv", "load_multimodal", "DATASET_LOADERS", "AugParams", "sample_crop",
    "sample_aug_params", "apply_aug", "to_float_tensor", "PairedTransform", "MultimodalDataset",
    "make_datasets", "class_balanced_weights", "weighted_sampler",
]
