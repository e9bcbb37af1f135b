"""Finetuning data: normalisation, the reference transforms (training, eval, TTA), the image dataset and the
split check."""
from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset

from ...data.images import open_image
from ...errors import DataError
from ...models.base import Encoder
from ...models.constants import IMAGENET_MEAN, IMAGENET_STD
from .config import FinetuneConfig

REFERENCE_STD = (0.228, 0.224, 0.225)  # the reference's std typo (docs/REFERENCE.md)


def norm_stats(cfg: FinetuneConfig, encoder: Encoder) -> tuple[tuple, tuple]:
    if cfg.normalize == "model":
        return tuple(encoder.preprocess_spec.mean), tuple(encoder.preprocess_spec.std)
    return IMAGENET_MEAN, (REFERENCE_STD if cfg.normalize == "reference" else IMAGENET_STD)


def default_image_size(encoder: Encoder) -> int:
    """The tower's native input size for CAE towers (a reduced tower may take 32 px), else the preprocess crop."""
    tower = getattr(encoder, "tower", None)
    return int(getattr(tower, "image_size", None) or encoder.preprocess_spec.size)


def _scaled(size: int, ref: int) -> int:
    # The reference sizes are for a 224 crop: Resize 256 (eval / train), 246 (TTA).
    return int(round(size * ref / 224))


def build_transforms(size: int, mean, std, augment: bool = True):
    """(train, eval) transforms of §1.4, scaled to `size` (224 → Resize 256)."""
    from torchvision import transforms as T

    resize = T.Resize(_scaled(size, 256), interpolation=T.InterpolationMode.BILINEAR)
    norm = [T.ToTensor(), T.Normalize(mean, std)]
    eval_t = T.Compose([resize, T.CenterCrop(size), *norm])
    if not augment:
        return eval_t, eval_t
    train_t = T.Compose([resize, T.RandomResizedCrop(size, scale=(0.75, 1.0)), T.RandomHorizontalFlip(),
                         T.RandomVerticalFlip(), T.RandomRotation(45), T.ColorJitter(hue=0.2), *norm])
    return train_t, eval_t


def tta_transforms(size: int):
    """(loader transform, per-view transform) of the reference TTA.

    The reference loader gives ToTensor at native size; Resize(246) is deterministic, so it
    runs in the loader here (bilinear with antialias), letting images of any size batch.
    """
    from torchvision import transforms as T

    loader = T.Compose([T.Resize(_scaled(size, 246), interpolation=T.InterpolationMode.BILINEAR),
                        T.CenterCrop(_scaled(size, 246)), T.ToTensor()])
    view = T.Compose([
        T.CenterCrop(size), T.RandomHorizontalFlip(0.5), T.RandomVerticalFlip(0.5),
        T.RandomApply([T.RandomRotation((0, 270))], p=0.3),
        T.RandomApply([T.ColorJitter(hue=0.25, saturation=0.25)], p=0.3),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),  # the reference's TTA uses std 0.229
    ])
    return loader, view


class ImageDataset(Dataset):
    def __init__(self, paths, labels, transform):
        self.paths, self.labels, self.transform = list(paths), np.asarray(labels, dtype=np.int64), transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.transform(open_image(self.paths[i])), int(self.labels[i])


def check_splits(splits) -> int:
    """K, after checking every class of val/test occurs in train."""
    k = splits.n_classes
    train = set(np.unique(splits.tables["train"].labels).tolist())
    for name, table in splits.tables.items():
        missing = sorted(set(np.unique(table.labels).tolist()) - train)
        if missing:
            raise DataError(f"{splits.csv}: class(es) {missing} occur in {name} but not in train; "
                            "finetuning cannot learn them")
    if len(train) < 2:
        raise DataError(f"{splits.csv}: train holds a single class")
    names = splits.tables["train"].classnames
    absent = [str(names[c]) for c in range(k) if c not in train] if names else []
    if absent:
        raise DataError(f"{splits.csv}: class(es) {absent} of the {k} class names have no train rows; "
                        "finetuning cannot learn them (list only the classes in the CSV)")
    return k
