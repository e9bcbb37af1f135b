"""The analysis flags shared by every evaluating subcommand, and the settings they make."""
from __future__ import annotations

from .attach import CALIBRATE, AnalysisSettings


def add_analysis_args(p, calibrate: bool = False) -> None:
    """The analysis flags of an evaluating subcommand (`calibrate`: it has a validation split to fit on)."""
    g = p.add_argument_group("analysis (docs/ANALYSIS.md)")
    g.add_argument("--group-col", nargs="+", default=[], metavar="COL",
                   help="CSV column(s) to report per-group metrics for (e.g. fitspatrick gender); "
                        "writes subgroups.csv and subgroups.png")
    g.add_argument("--bins", nargs="+", default=[], metavar="COL=E0,E1,...",
                   help="bin a numeric group column at these edges, left-closed (e.g. age=0,40,60,120)")
    g.add_argument("--min-group", type=int, default=30, metavar="N",
                   help="groups with fewer images are reported but flagged and left out of the worst group")
    g.add_argument("--calibration-bins", type=int, default=15, metavar="N",
                   help="confidence bins of the expected calibration error and the reliability diagram")
    if calibrate:
        g.add_argument("--calibrate", choices=CALIBRATE, default="none",
                       help="temperature: fit a temperature on the validation split and report calibration "
                            "before and after")


def settings_from_args(args, n_resamples: int | None = None, seed: int | None = None) -> AnalysisSettings:
    from .subgroups import parse_bins

    kwargs = {}
    if n_resamples:  # 0 bootstrap resamples for the task means no CIs there; the subgroup CIs keep the default
        kwargs["n_resamples"] = n_resamples
    if seed is not None:
        kwargs["seed"] = seed
    return AnalysisSettings(group_cols=tuple(args.group_col or ()), bins=parse_bins(args.bins or []),
                            min_group=args.min_group, n_bins=args.calibration_bins,
                            calibrate=getattr(args, "calibrate", "none"), **kwargs)
