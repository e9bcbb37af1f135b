"""Skin-lesion segmentation (PanDerm v1's UPerNet protocol) on any tappable backbone, in plain PyTorch."""
from .data import SegTable, load_isic2018, load_seg_csv, percent_subset
from .metrics import dice, hd95, jaccard, largest_component, score_image, summarize
from .model import SegmentationModel, tap_indices

__all__ = ["SegTable", "load_isic2018", "load_seg_csv", "percent_subset", "dice", "hd95", "jaccard",
           "largest_component", "score_image", "summarize", "SegmentationModel", "tap_indices"]
