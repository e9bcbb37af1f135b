"""The torch side of the multimodal task: `MultimodalDataset` (a table to tensors), per-split datasets and
class-balanced sampling."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, WeightedRandomSampler

from ...data.images import open_image
from ...errors import DataError
from .prompts import MetaVocab, one_hot_metadata
from ...models.constants import IMAGENET_MEAN, IMAGENET_STD
from .augment import PairedTransform
from .table import CLINICAL, DERM, SPLITS, MultimodalTable

# -- the torch Dataset -------------------------------------------------------------------

META_MODES = ("text", "onehot", "none")


class MultimodalDataset(Dataset):
    """Items `(clinical, derm, meta, label, index)` from a `MultimodalTable`.

    - `meta="text"`: the metadata sentence (a str; token ids with `tokenizer`);
      `"onehot"`: a float32 vector from `one_hot_metadata` (`vocab` learnt on train: pass
      the train dataset's `.vocab` to val/test; it is learnt here only for a train-only
      table); `"none"`: an empty tensor, so the default collate still works.
    - `train=True` applies the random augmentation, else the deterministic eval resize.
    """

    def __init__(
        self,
        table: MultimodalTable,
        train: bool,
        *,
        meta: str = "text",
        vocab: MetaVocab | dict | None = None,
        tokenizer: Callable[[list[str]], torch.Tensor] | None = None,
        image_size: int = 224,
        resize_to: int = 256,
        paired_augmentation: bool = True,
        bgr: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        resize_mode: str = "antialias",
    ):
        if meta not in META_MODES:
            raise DataError(f"unknown metadata mode {meta!r}; use one of {', '.join(META_MODES)}")
        if len(table) == 0:
            raise DataError(f"{table.source}: no cases to load")
        self.table = table
        self.meta_mode = meta
        self.tokenizer = tokenizer
        self.transform = PairedTransform(train, image_size, resize_to, paired_augmentation, bgr, mean, std,
                                         resize_mode=resize_mode)
        self._clinical = table.frame[CLINICAL].tolist()
        self._derm = table.frame[DERM].tolist()
        self._labels = table.labels
        self.vocab: MetaVocab | None = None
        self._onehot: np.ndarray | None = None
        if meta == "onehot":
            self._onehot, self.vocab = self._one_hot(vocab)
        elif meta == "text" and not any(table.prompts):
            raise DataError(f"{table.source}: no metadata sentences (load the CSV with prompt= or prompt_col=), "
                            "or use meta='onehot' / 'none'")

    def _one_hot(self, vocab) -> tuple[np.ndarray, MetaVocab]:
        table = self.table
        if vocab is None and set(table.frame["split"]) != {"train"}:
            raise DataError(f"{table.source}: one-hot metadata for a non-train split needs the vocabulary "
                            "learnt on the train split (pass vocab=train_dataset.vocab)")
        if vocab is None and not table.meta_columns:
            raise DataError(f"{table.source}: no metadata columns to encode (give meta_columns)")
        return one_hot_metadata(table.meta, table.meta_columns if vocab is None else None, vocab, table.source)

    def __len__(self) -> int:
        return len(self._labels)

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    def _images(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        clin_path, derm_path = self._clinical[index], self._derm[index]
        clinical = open_image(clin_path)
        if derm_path == clin_path:
            # One image in both slots (PAD-UFES-20): decode once; with a shared draw (or in
            # eval) the two tensors are identical, as in the reference.
            if not self.transform.train or self.transform.paired:
                out = self.transform.one(clinical)
                return out, out.clone()
            return self.transform(clinical, clinical)
        return self.transform(clinical, open_image(derm_path))

    def _meta(self, index: int):
        if self.meta_mode == "onehot":
            return torch.from_numpy(self._onehot[index])
        if self.meta_mode == "none":
            return torch.zeros(0)
        text = self.table.frame["prompt"].iat[index]
        return self.tokenizer([text])[0] if self.tokenizer is not None else text

    def __getitem__(self, index: int):
        clinical, derm = self._images(index)
        label = torch.tensor(int(self._labels[index]), dtype=torch.long)
        return clinical, derm, self._meta(index), label, index


def make_datasets(table: MultimodalTable, *, splits: Sequence[str] = SPLITS, meta: str = "text",
                  **kwargs) -> dict[str, MultimodalDataset]:
    """Train/val/test datasets; train is augmented and its one-hot vocabulary is reused."""
    out: dict[str, MultimodalDataset] = {}
    vocab = kwargs.pop("vocab", None)
    if meta == "onehot" and vocab is None:
        out["train"] = MultimodalDataset(table.split("train"), True, meta=meta, **kwargs)
        vocab = out["train"].vocab
    for split in splits:
        if split not in out:
            out[split] = MultimodalDataset(table.split(split), split == "train", meta=meta, vocab=vocab, **kwargs)
    return {s: out[s] for s in splits}


# -- class-balanced sampling -------------------------------------------------------------

def class_balanced_weights(labels) -> np.ndarray:
    """Per-sample weight N / (K · n_class), K = number of classes present (the reference's).

    Each class then carries the same total weight N/K and the weights sum to N. Accepts a
    label array, a `MultimodalTable` or a `MultimodalDataset` - the reference read
    `train_dataset.df` and so crashed on Derm7pt.
    """
    labels = np.asarray(getattr(labels, "labels", labels), dtype=np.int64).ravel()
    if labels.size == 0:
        raise DataError("cannot weight an empty training set")
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return (labels.size / (len(classes) * counts))[inverse].astype(np.float64)


def weighted_sampler(labels, num_samples: int | None = None,
                     generator: torch.Generator | None = None) -> WeightedRandomSampler:
    """`WeightedRandomSampler` with replacement, N draws per epoch (the reference's)."""
    weights = class_balanced_weights(labels)
    return WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double),
                                 num_samples=num_samples or len(weights), replacement=True, generator=generator)
