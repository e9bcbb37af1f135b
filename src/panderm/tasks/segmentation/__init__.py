"""Skin-lesion segmentation (PanDerm v1's UPerNet protocol) on any tappable backbone, in plain PyTorch."""
# Names load on first use: `panderm` builds every subcommand's parser at start, and a missing CSV is reported
# before torch is imported (issue 18).
_WHERE = {"SegTable": "data", "load_isic2018": "data", "load_seg_csv": "data", "percent_subset": "data",
          "dice": "metrics", "hd95": "metrics", "jaccard": "metrics", "largest_component": "metrics",
          "score_image": "metrics", "summarize": "metrics", "SegmentationModel": "model", "tap_indices": "model"}

__all__ = ["SegTable", "load_isic2018", "load_seg_csv", "percent_subset", "dice", "hd95", "jaccard",
           "largest_component", "score_image", "summarize", "SegmentationModel", "tap_indices"]


def __getattr__(name):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(name)
