"""Linear probe on frozen features: train subsampling, the L-BFGS logistic regression, C search, runs.

Everything here works on feature arrays (``X``: ``[N, D]`` float, ``y``: ``[N]`` int labels ``0..K-1``);
image loading, feature extraction, CSV and CLI wiring live elsewhere. The subsampling lives in
``sampling``, the classifier in ``model``, the run over images (splits, features, files) in ``pipeline``;
every name of the first two stays importable from here.

Reproduces the PanDerm / PanDerm-2 reference linear probe:

* **Subsampling** (:func:`subsample_train`): the reference ``load_data_balanced`` (per-class
  ``min(|g|, max(1, floor(|g|·p)))`` rows), with the same pandas calls so the same rows come out in the same
  order.
* **Classifier** (:class:`LogisticRegressionProbe`): ``nn.Linear(D, K)`` with PyTorch default init after
  ``torch.manual_seed(0)``, loss ``mean CE + (1/C)·0.5·‖W‖_F`` (the *unsquared* Frobenius norm; bias not
  penalised), one full-batch ``torch.optim.LBFGS(line_search_fn="strong_wolfe", max_iter=1000).step``,
  float32, ``C = D·K/100`` by default.
* **Metrics** (:func:`run_linear_probe`): accuracy, balanced accuracy, kappa, weighted F1, AUROC (multi-class
  OvO macro, as the reference), AUPR, plus an OvR AUROC and bootstrap CIs, which the reference does not
  report.

Additions that the reference lacks, all off by default or equal to the reference at their defaults: several
seeds (seed 0 is the reference), K-shot sampling, and a C search on the val split (:func:`tune_c`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from panderm.errors import DataError, PandermError
from panderm.metrics import bootstrap_ci, classification_metrics, reported_metrics
from panderm.progress import progress, track

from .model import (  # noqa: F401  (re-exported: this module is the public home)
    CONVERGED_TOL,
    MAX_REFINE_ROUNDS,
    SOLVERS,
    LogisticRegressionProbe,
    _as_features,
    _resolve_device,
    default_c,
    probe_loss,
    solver_tol,
)
from .sampling import (  # noqa: F401
    REFERENCE_RANDOM_STATE,
    _as_labels,
    kept_per_class,
    shots_per_class,
    subsample_train,
)

log = logging.getLogger(__name__)

#: Metrics reported for every run, in this order. ``auroc`` is OvO macro for multi-class (as the reference),
#: ``auroc_ovr`` the OvR macro AUROC used by the zero-shot and finetuning tasks, for comparison.
PROBE_METRICS = ("accuracy", "balanced_accuracy", "kappa", "weighted_f1", "auroc", "auroc_ovr", "aupr")

# Metrics computed with the AUROC averaging the caller asked for (OvO by default); ``auroc_ovr`` is computed
# in a separate call with multi_class="ovr".
_BASE_METRICS = ("accuracy", "balanced_accuracy", "kappa", "weighted_f1", "auroc", "aupr")

# Half-decade steps from 1/1000 to 1000 times the reference C (13 values, the reference C included), so a
# search can only match or beat the reference's choice on val. Relative to D·K/100 because the useful range
# of C moves with the feature width and the class count.
_DEFAULT_C_FACTORS = np.logspace(-3, 3, 13)

# --------------------------------------------------------------------------------------------------------
# C search on val
# --------------------------------------------------------------------------------------------------------


def tune_c(
    X_train: Any,
    y_train: Any,
    X_val: Any,
    y_val: Any,
    grid: Sequence[float] | None = None,
    metric: str = "balanced_accuracy",
    seed: int = 0,
    device: str | None = "cpu",
    multi_class: str = "ovo",
    max_iter: int = 1000,
    tol: float | None = None,
) -> tuple[float, list[dict[str, float]]]:
    """Choose C on the val split: fit one probe per grid value on train, score it on val, keep the best.

    The reference never searches (it uses ``D·K/100`` and ignores val); this is the optional improvement in
    the spirit of CLIP_benchmark's val sweep, done with the reference's own L-BFGS probe.

    Parameters
    ----------
    grid:
        Candidate C values. Default: ``D·K/100 · logspace(-3, 3, 13)``, half-decade steps around the
        reference value, which is itself in the grid.
    metric:
        Any name :func:`panderm.metrics.classification_metrics` knows; higher is better. Balanced accuracy by
        default because dermatology val sets are imbalanced and plain accuracy rewards the majority class.
    multi_class:
        AUROC averaging when ``metric="auroc"``.
    max_iter, tol:
        Passed to every :class:`LogisticRegressionProbe`.

    Ties (equal scores) go to the **smaller C**, i.e. the stronger regularisation, the simpler model.

    Returns
    -------
    (best_C, table)
        ``table`` has one ``{"C": c, "score": s}`` per grid value, in ascending C.
    """
    X_tr = _as_features(X_train, "train features")
    y_tr = _as_labels(y_train, "train labels")
    X_va = _as_features(X_val, "val features")
    y_va = _as_labels(y_val, "val labels")
    if len(X_va) == 0:
        raise DataError("the val split is empty; a C search needs val rows")
    if grid is None:
        grid = default_c(X_tr.shape[1], len(np.unique(y_tr))) * _DEFAULT_C_FACTORS
    values = sorted(float(c) for c in grid)
    if not values or any(not (math.isfinite(c) and c > 0) for c in values):
        raise PandermError(f"the C grid must hold positive numbers, got {list(grid)!r}")

    table = []
    best_c, best_score = values[0], -math.inf
    for c in track(values, "C search", unit="fit"):
        probe = LogisticRegressionProbe(C=c, seed=seed, max_iter=max_iter, device=device, tol=tol).fit(X_tr, y_tr)
        probs = probe.predict_proba(X_va)
        score = float(classification_metrics(y_va, probs, metrics=[metric], multi_class=multi_class)[metric])
        table.append({"C": c, "score": score, "converged": probe.converged_, "n_iter": probe.n_iter_})
        # Strictly better (beyond float noise) is needed to move to a larger C: ties keep the smaller one.
        if not math.isnan(score) and score > best_score + 1e-12:
            best_c, best_score = c, score
    unconverged = [row for row in table if row["converged"] is False]
    if unconverged:
        log.warning("linear probe: C search: %d of %d fits stopped before the gradient tolerance (C = %s); their "
                    "val scores may be off (results.json c_search records converged per C)", len(unconverged),
                    len(table), ", ".join(f"{row['C']:.3g}" for row in unconverged[:5]))
    return best_c, table


# Kept under another name because run_linear_probe has a `tune_c` flag that shadows the function.
_search_c = tune_c


# --------------------------------------------------------------------------------------------------------
# Runs over fractions × seeds
# --------------------------------------------------------------------------------------------------------


def _check_label_range(y: np.ndarray, n_classes: int, split: str) -> None:
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        bad = int(y.min()) if y.min() < 0 else int(y.max())
        raise DataError(f"{split} label {bad} is out of range: labels must be 0..{n_classes - 1}")


def _user_metrics() -> list[str]:
    """The metrics a user registered (panderm.metrics.register_metric), reported after the probe's own."""
    return [m for m in reported_metrics(PROBE_METRICS) if m not in PROBE_METRICS]


def _score(y: np.ndarray, probs: np.ndarray, multi_class_auroc: str) -> dict[str, float]:
    extra = _user_metrics()
    scores = classification_metrics(y, probs, metrics=[*_BASE_METRICS, *extra], multi_class=multi_class_auroc)
    ovr = classification_metrics(y, probs, metrics=["auroc"], multi_class="ovr")
    out = {name: float(scores[name]) for name in (*_BASE_METRICS, *extra)}
    out["auroc_ovr"] = float(ovr["auroc"])
    return {name: out[name] for name in (*PROBE_METRICS, *extra)}


def _bootstrap(y: np.ndarray, probs: np.ndarray, multi_class_auroc: str, n_resamples: int, seed: int) -> dict:
    extra = _user_metrics()
    cis = bootstrap_ci(
        y, probs, metrics=[*_BASE_METRICS, *extra], n_resamples=n_resamples, seed=seed,
        multi_class=multi_class_auroc,
    )
    # Same seed → same resamples, so the OvR CI is drawn from the same bootstrap samples as the others.
    ovr = bootstrap_ci(y, probs, metrics=["auroc"], n_resamples=n_resamples, seed=seed, multi_class="ovr")
    out = {name: cis[name] for name in (*_BASE_METRICS, *extra)}
    out["auroc_ovr"] = ovr["auroc"]
    return {name: out[name] for name in (*PROBE_METRICS, *extra)}


def _fraction_counts(train_counts: np.ndarray, percent: float) -> tuple[int, ...]:
    """Rows per class that :func:`subsample_train` keeps at ``percent`` (the reference's rule)."""
    if percent >= 1:
        return tuple(int(n) for n in train_counts)
    return tuple(kept_per_class(int(n), percent) if n else 0 for n in train_counts)


def _warn_same_fractions(values: Sequence[float], train_counts: np.ndarray) -> None:
    """Log one warning for fractions that keep the same number of rows per class (hence the same rows)."""
    groups: dict[tuple[int, ...], list[float]] = {}
    for value in values:
        if isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value) and 0 < value <= 1:
            groups.setdefault(_fraction_counts(train_counts, float(value)), []).append(float(value))
    for counts, fractions in groups.items():
        if len(fractions) < 2:
            continue
        present = [n for n in counts if n]
        per_class = f"{present[0]} per class" if len(set(present)) == 1 else "per class " + "/".join(map(str, counts))
        log.warning("linear probe: percent_data %s give the same training subset (%d images, %s): identical runs; the train "
                    "split is too small to tell these fractions apart",
                    " and ".join(f"{f:g}" for f in fractions), sum(counts), per_class)


def run_linear_probe(
    train_X: Any,
    train_y: Any,
    test_X: Any,
    test_y: Any,
    val_X: Any = None,
    val_y: Any = None,
    percent_data: float | Sequence[float] = (1.0,),
    seeds: int | Sequence[int] = (0,),
    tune_c: bool = False,
    C: float | None = None,
    multi_class_auroc: str = "ovo",
    n_bootstrap: int = 1000,
    *,
    shots: int | Sequence[int] | None = None,
    n_classes: int | None = None,
    c_grid: Sequence[float] | None = None,
    tune_metric: str = "balanced_accuracy",
    device: str | None = "cpu",
    bootstrap_seed: int = 42,
    max_iter: int = 1000,
    tol: float | None = None,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Fit and score the linear probe for every training fraction (or shot count) × seed.

    For seed ``s``: the train rows come from :func:`subsample_train` (or :func:`shots_per_class`) with
    ``random_state = 42 + s`` and the probe is initialised with ``torch.manual_seed(s)``. Seed 0 is therefore
    exactly the reference (random_state 42, torch seed 0). At ``percent_data >= 1`` every seed trains on all
    rows (only their order differs), so seeds only vary the initialisation and the spread is near zero.

    Parameters
    ----------
    train_X, train_y, test_X, test_y, val_X, val_y:
        Features ``[N, D]`` and integer labels ``0..K-1`` per split. val is only used by ``tune_c``.
    percent_data:
        Training fraction(s), e.g. ``(0.1, 0.3, 0.5, 1.0)``.
    seeds:
        Repeat seeds (non-negative ints).
    tune_c:
        Choose C per fraction × seed on val (:func:`tune_c`); the final probe is then fitted on the
        (subsampled) train split only, never train+val, so a fraction still means that much labelled data.
    C:
        Fixed C; ``None`` uses the reference ``D·K/100``. Cannot be combined with ``tune_c``.
    multi_class_auroc:
        Averaging of the ``auroc`` metric for multi-class tasks: "ovo" as the reference. ``auroc_ovr`` is
        always reported as well.
    n_bootstrap:
        Bootstrap resamples for the test-set CIs; 0 skips them.
    shots:
        K-shot counts to run instead of ``percent_data``.
    n_classes:
        K. Default: 1 + the largest label in any split, so a class missing from train is caught.
    c_grid, tune_metric:
        Grid and val metric for ``tune_c``.
    max_iter, tol:
        L-BFGS iteration cap and stopping rule of every probe (:class:`LogisticRegressionProbe`); ``tol=None``
        is the reference's rule, :data:`CONVERGED_TOL` the fast one.
    class_names:
        Names of classes ``0..K-1``, only used in log messages (default: the class indices).

    Two settings that train on the same rows (fractions whose per-class counts coincide, e.g. 0.1 and 0.3 of
    6 images per class both keep 1) and K-shot counts above a class's size are each reported in one logged
    warning; the per-run ``"warnings"`` keep the per-class notes.

    Returns
    -------
    dict with keys

    * ``"setting"``: ``"percent"`` or ``"shots"``; ``"n_classes"``, ``"n_features"``, ``"n_test"``;
      ``"metric_names"``: :data:`PROBE_METRICS`; ``"test_labels"``: int array ``[n_test]``.
    * ``"runs"``: one dict per setting × seed, in that loop order, with ``"percent"`` (float or None),
      ``"shots"`` (int or None), ``"seed"``, ``"random_state"``, ``"train_indices"`` (int array into the train
      split, in training order), ``"n_train"``, ``"class_counts"`` (list, length K), ``"C"``, ``"c_search"``
      (the :func:`tune_c` table, or None), ``"n_iter"``, ``"n_evals"``, ``"grad_max"``, ``"converged"`` (the
      stopping rule held; None for the reference rule), ``"tol"``, ``"train_loss"``, ``"metrics"`` (name → float),
      ``"ci"`` (name → :func:`panderm.metrics.bootstrap_ci` entry, or None), ``"probs"`` (float array
      ``[n_test, K]``), ``"predictions"`` (int array ``[n_test]``), ``"warnings"`` (list of str).
    * ``"summary"``: setting value (the fraction or the shot count) → metric name →
      ``{"mean", "std", "values", "n_seeds"}``, where ``std`` is the population SD (``np.std``, ddof 0) over
      seeds, 0 for a single seed.
    """
    X_tr = _as_features(train_X, "train features")
    y_tr = _as_labels(train_y, "train labels")
    X_te = _as_features(test_X, "test features")
    y_te = _as_labels(test_y, "test labels")
    if len(X_tr) != len(y_tr):
        raise DataError(f"train features have {len(X_tr)} rows but train labels have {len(y_tr)}")
    if len(X_te) != len(y_te):
        raise DataError(f"test features have {len(X_te)} rows but test labels have {len(y_te)}")
    if len(X_tr) == 0 or len(X_te) == 0:
        raise DataError("the train and test splits must both have rows")
    if X_te.shape[1] != X_tr.shape[1]:
        raise DataError(f"test features have {X_te.shape[1]} columns but train features have {X_tr.shape[1]}")

    has_val = val_X is not None and val_y is not None
    if has_val:
        X_va = _as_features(val_X, "val features")
        y_va = _as_labels(val_y, "val labels")
        if len(X_va) != len(y_va):
            raise DataError(f"val features have {len(X_va)} rows but val labels have {len(y_va)}")
        if X_va.shape[1] != X_tr.shape[1]:
            raise DataError(f"val features have {X_va.shape[1]} columns but train features have {X_tr.shape[1]}")
    if tune_c and (not has_val or len(X_va) == 0):
        raise DataError("tune_c needs a non-empty val split (rows with split == 'val')")
    if tune_c and C is not None:
        raise PandermError("give either a fixed C or tune_c, not both")

    all_labels = [y_tr, y_te] + ([y_va] if has_val else [])
    if min(int(y.min()) for y in all_labels if len(y)) < 0:
        raise DataError(f"labels must be 0..K-1, found {min(int(y.min()) for y in all_labels if len(y))}")
    if n_classes is None:
        n_classes = 1 + max(int(y.max()) for y in all_labels if len(y))
    _check_label_range(y_tr, n_classes, "train")
    _check_label_range(y_te, n_classes, "test")
    if has_val:
        _check_label_range(y_va, n_classes, "val")
    if n_classes < 2:
        raise DataError("the task has a single class; a classifier needs at least 2")

    seed_list = [int(seeds)] if isinstance(seeds, (int, np.integer)) else [int(s) for s in seeds]
    if not seed_list or any(s < 0 for s in seed_list):
        raise PandermError(f"seeds must be non-negative integers, got {seeds!r}")
    if shots is not None:
        setting = "shots"
        values: list = [shots] if isinstance(shots, (int, np.integer)) else list(shots)
    else:
        setting = "percent"
        scalar = isinstance(percent_data, (int, float, np.integer, np.floating))
        values = [percent_data] if scalar else list(percent_data)
    if not values:
        raise PandermError(f"no {setting} values given")
    if len(set(values)) != len(values) or len(set(seed_list)) != len(seed_list):
        raise PandermError(f"{setting} values and seeds must not repeat, got {values!r} and {seed_list!r}")

    def _name(c: int) -> str:
        return str(class_names[c]) if class_names is not None and c < len(class_names) else str(c)

    train_counts = np.bincount(y_tr, minlength=n_classes)
    if setting == "percent":
        _warn_same_fractions(values, train_counts)

    runs = []
    fits = progress(len(values) * len(seed_list), "linear probe fits", "fit")
    for value in values:
        if setting == "shots" and isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1:
            short = [(c, int(n)) for c, n in enumerate(train_counts) if 0 < n < value]
            if short:
                log.warning("linear probe: shots %d: %d class%s fewer than %d training images; using all of them: %s",
                            value, len(short), "es have" if len(short) > 1 else " has", value,
                            ", ".join(f"{_name(c)} {n}" for c, n in short))
        for seed in seed_list:
            random_state = REFERENCE_RANDOM_STATE + seed
            if setting == "shots":
                idx, notes = shots_per_class(y_tr, value, seed=random_state)
                where = f"{value}-shot"
            else:
                idx, notes = subsample_train(y_tr, value, seed=random_state), []
                where = f"percent_data={value}"
            y_sub = y_tr[idx]
            counts = np.bincount(y_sub, minlength=n_classes)
            missing = np.flatnonzero(counts == 0).tolist()
            if missing:
                raise DataError(
                    f"class {missing[0]} has no train sample at {where}"
                    + (f" (also missing: {missing[1:]})" if len(missing) > 1 else "")
                    + f"; every class 0..{n_classes - 1} needs at least one"
                )

            search_table = None
            if tune_c:
                run_c, search_table = _search_c(
                    X_tr[idx], y_sub, X_va, y_va, grid=c_grid, metric=tune_metric, seed=seed,
                    device=device, multi_class=multi_class_auroc, max_iter=max_iter, tol=tol,
                )
            else:
                run_c = C
            probe = LogisticRegressionProbe(C=run_c, seed=seed, max_iter=max_iter, device=device, tol=tol)
            probe.fit(X_tr[idx], y_sub)
            probs = probe.predict_proba(X_te)
            runs.append({
                "percent": None if setting == "shots" else float(value),
                "shots": int(value) if setting == "shots" else None,
                "seed": seed,
                "random_state": random_state,
                "train_indices": idx,
                "n_train": int(len(idx)),
                "class_counts": counts.tolist(),
                "C": probe.C_,
                "c_search": search_table,
                "n_iter": probe.n_iter_,
                "n_evals": probe.n_evals_,
                "grad_max": probe.grad_max_,
                "converged": probe.converged_,
                "tol": tol,
                "train_loss": probe.loss_,
                "metrics": _score(y_te, probs, multi_class_auroc),
                "ci": (
                    _bootstrap(y_te, probs, multi_class_auroc, n_bootstrap, bootstrap_seed) if n_bootstrap > 0 else None
                ),
                "probs": probs,
                "val_probs": probe.predict_proba(X_va) if has_val and len(X_va) else None,
                "predictions": np.argmax(probs, axis=1),
                "warnings": notes,
            })
            fits.update()
    fits.close()

    unconverged = [r for r in runs if r["converged"] is False]
    if unconverged:
        worst = max(unconverged, key=lambda r: r["grad_max"])
        log.warning("linear probe: %d of %d fits stopped before max|grad| <= %g (worst: %s seed %d, %d iterations, "
                    "max|grad| %.3g); results.json records n_iter, grad_max and converged per fit",
                    len(unconverged), len(runs), tol, f"{setting} {worst[setting]}", worst["seed"],
                    worst["n_iter"], worst["grad_max"])

    summary: dict[Any, dict[str, dict[str, Any]]] = {}
    key = "shots" if setting == "shots" else "percent"
    for value in values:
        group = [r for r in runs if r[key] == (int(value) if setting == "shots" else float(value))]
        summary[int(value) if setting == "shots" else float(value)] = {
            name: {
                "mean": float(np.mean([r["metrics"][name] for r in group])),
                "std": float(np.std([r["metrics"][name] for r in group])),
                "values": [r["metrics"][name] for r in group],
                "n_seeds": len(group),
            }
            for name in PROBE_METRICS
        }

    return {
        "setting": setting,
        "n_classes": n_classes,
        "n_features": int(X_tr.shape[1]),
        "n_test": int(len(y_te)),
        "metric_names": list(PROBE_METRICS),
        "test_labels": y_te,
        "runs": runs,
        "summary": summary,
    }
