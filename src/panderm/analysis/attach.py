"""The analyses every classification run gets: calibration always, subgroups and temperature scaling on request.

Each task calls :func:`analyse` once per evaluated set with the labels, the probabilities and the evaluated rows
of the input CSV; the result goes into that set's entry of ``results.json`` and its files next to the set's
predictions. Settings come from :class:`AnalysisSettings` (the command line fills it from its group column, bins,
minimum group size, calibration bins and calibrate flags; see docs/ANALYSIS.md).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError

__all__ = ["AnalysisSettings", "analyse", "check_group_columns"]

CALIBRATE = ("none", "temperature")


@dataclass
class AnalysisSettings:
    group_cols: tuple[str, ...] = ()
    bins: dict[str, list[float]] = field(default_factory=dict)
    min_group: int = 30
    n_bins: int = 15
    n_resamples: int = 1000
    seed: int = 42
    calibrate: str = "none"
    subgroup_metrics: tuple[str, ...] = ("accuracy", "balanced_accuracy", "macro_f1", "auroc")

    def __post_init__(self) -> None:
        self.group_cols = tuple(self.group_cols or ())
        if self.calibrate not in CALIBRATE:
            raise DataError(f"calibrate must be one of {', '.join(CALIBRATE)}, got {self.calibrate!r}", param="calibrate")
        if self.min_group < 1:
            raise DataError(f"min_group must be at least 1, got {self.min_group}", param="min_group")
        if self.n_bins < 1:
            raise DataError(f"calibration bins must be at least 1, got {self.n_bins}", param="calibration_bins")
        unknown = sorted(set(self.bins) - set(self.group_cols))
        if unknown:
            raise DataError(f"bins given for {', '.join(unknown)}, which is not a group column "
                            f"(group columns: {', '.join(self.group_cols) or 'none'})", param="bins")


def check_group_columns(columns: Sequence[str], settings: AnalysisSettings | None, source: str | os.PathLike) -> None:
    """Fail before any model is loaded when a group column is not in the CSV."""
    if settings is None:
        return
    missing = [c for c in settings.group_cols if c not in columns]
    if missing:
        raise DataError(f"{source}: no column {', '.join(repr(c) for c in missing)} to group by "
                        f"(columns: {', '.join(map(str, columns))})", param="group_col")


def analyse(entry: dict, out_dir: str | os.PathLike, labels, probs, frame=None,
            settings: AnalysisSettings | None = None, classnames: Sequence[str] | None = None,
            val: tuple | None = None, title: str = "", stem: str = "") -> dict:
    """Add ``calibration`` (and ``subgroups``, ``temperature_scaling``) to `entry`; write the figures and tables.

    `frame` holds the evaluated rows of the input CSV in prediction order (group columns are read from it);
    `val` is (labels, probs) of the validation split, needed by ``calibrate="temperature"``. Files are named
    ``{stem}reliability.png``, ``{stem}subgroups.csv``, ``{stem}subgroups.png`` in `out_dir`.
    """
    from ..report import save_figure, write_csv
    from .calibration import calibration_metrics, reliability_figure

    settings = settings or AnalysisSettings()
    out_dir = Path(out_dir)
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    entry["calibration"] = calibration_metrics(labels, probs, n_bins=settings.n_bins)
    save_figure(out_dir / f"{stem}reliability.png",
                reliability_figure(labels, probs, n_bins=settings.n_bins, title=title or None))
    if settings.calibrate == "temperature":
        if val is None:
            raise DataError("temperature scaling needs a validation split (a 'val' split in the CSV)", param="calibrate")
        from .calibration import temperature_report

        entry["temperature_scaling"] = temperature_report(np.asarray(val[0]), np.asarray(val[1], dtype=np.float64),
                                                          labels, probs, n_bins=settings.n_bins)
    if settings.group_cols:
        if frame is None or len(frame) != len(labels):
            raise DataError(f"subgroups need the evaluated rows: {0 if frame is None else len(frame)} rows for "
                            f"{len(labels)} predictions", param="group_col")
        check_group_columns(list(frame.columns), settings, "the evaluated table")
        from .subgroups import subgroup_figure, subgroup_frame, subgroup_report

        groups = frame[list(settings.group_cols)].reset_index(drop=True)
        report = subgroup_report(labels, probs, groups, metrics=settings.subgroup_metrics, bins=settings.bins,
                                 min_group=settings.min_group, n_resamples=settings.n_resamples, seed=settings.seed,
                                 classnames=classnames)
        entry["subgroups"] = report
        write_csv(out_dir / f"{stem}subgroups.csv", subgroup_frame(report), index=False)
        head = next((m for m in settings.subgroup_metrics if m != "accuracy"), settings.subgroup_metrics[0])
        save_figure(out_dir / f"{stem}subgroups.png", subgroup_figure(report, head))
    return entry


def summary_lines(entry: dict, prefix: str = "") -> list[str]:
    """Short lines for the terminal from an entry :func:`analyse` filled (the files hold the full tables)."""
    lines = []
    cal = entry.get("calibration")
    if cal:
        lines.append(f"{prefix}calibration: ECE {cal['ece']:.3f} (equal-mass {cal['ece_equal_mass']:.3f}), "
                     f"Brier {cal['brier']:.3f}, NLL {cal['nll']:.3f}")
    ts = entry.get("temperature_scaling")
    if ts:
        b, a = ts["test"]["before"], ts["test"]["after"]
        lines.append(f"{prefix}temperature {ts['temperature']:.3g} (fitted on val): test NLL {b['nll']:.3f} -> "
                     f"{a['nll']:.3f}, ECE {b['ece']:.3f} -> {a['ece']:.3f}")
    report = entry.get("subgroups")
    if report:
        head = next((m for m in report["metrics"] if m != "accuracy"), report["metrics"][0])
        for col, c in report["columns"].items():
            small = sum(g["small"] for g in c["groups"])
            text = f"{prefix}by {col}: {len(c['groups'])} groups ({small} smaller than {report['min_group']} rows)"
            worst, gap = c["worst_group"].get(head), c["largest_gap"].get(head)
            if worst:
                n = next((g["n"] for g in c["groups"] if g["group"] == worst["group"]), "?")
                text += f"; worst {head} {worst['value']:.3f} ({col} {worst['group']}, n={n})"
            if gap:
                ci = gap.get("ci")
                text += f", largest gap {gap['gap']:.3f}" + (f" (95% CI {ci[0]:.3f} to {ci[1]:.3f})" if ci else "")
            lines.append(text)
    return lines
