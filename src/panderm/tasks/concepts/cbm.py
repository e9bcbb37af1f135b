"""Concept bottleneck model (CBM) over SAE codes, global explanations and concept interventions.

Reproduces the PanDerm-2 reference (docs/CONCEPTS.md, "Departures from the reference"):

* **Classifier**: ``SGDClassifier(loss="log_loss", penalty="l1", alpha=1e-3)``, i.e. L1-regularised logistic
  regression, on the raw (unstandardised) features: SAE codes for the CBM, or raw embeddings for the
  baseline; the protocol is the same for both.
* **Protocol** (:func:`evaluate_cbm`): 50 stratified 80/20 splits, split ``i`` drawn exactly as the reference
  does, ``train_test_split(test_size=0.2, shuffle=True, stratify=y, random_state=seed + i)`` (``seed=0`` gives
  the reference's splits), metrics averaged over splits, mean coefficients and intercept kept.
  A ``split`` column (``train``/``test``) replaces the 50 splits by that one split (the biased-CBM protocol).
* **Global explanation**: :func:`top_concepts` per class, :func:`match_concepts` (Hungarian 1-to-1 matching of
  concept words to decoder directions among latents with non-zero weight), :func:`plot_weights`.
* **Intervention**: :func:`select_intervention_latents` (the latents closest to a concept text, or the top-n by
  |weight|), :func:`intervene` (zero them), then the same classifiers re-scored on the edited test features
  (``evaluate_cbm(..., eval_features=...)``), :func:`intervention_table`.

Differences from the reference, all deliberate:

* the SGD is seeded (``random_state = seed + i``, the split's own seed) so two runs give identical numbers;
  the reference's is unseeded (and fitted twice, which changes nothing once seeded, so it is fitted once);
* the label comes by name from the caller (not the third CSV column) and may have more than two classes
  (multi-class AUROC is the one-vs-rest macro mean); a ``split`` column is honoured instead of ignored;
* accuracy, balanced accuracy, the number of non-zero weights and standard deviations are reported next to
  the reference's mean AUROC and macro F1;
* concept matching uses cosine similarity (the reference uses the dot product with unit-norm decoder columns
  and L2-normalised text embeddings, which is the same number).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from panderm.errors import DataError
from panderm.metrics import classification_metrics
from panderm.report import write_csv, write_json, write_npy
# Explanations and interventions live in cbm_explain; their names stay importable from here.
from panderm.tasks.concepts.cbm_explain import (  # noqa: F401
    intervene,
    intervention_table,
    latents_for_text,
    match_concepts,
    plot_weights,
    select_intervention_latents,
    top_concepts,
)
from panderm.validation import as_matrix, check_int, encode_labels

__all__ = [
    "CBM_METRICS",
    "evaluate_cbm",
    "save_cbm",
    "summary_table",
    "top_concepts",
    "match_concepts",
    "latents_for_text",
    "select_intervention_latents",
    "intervene",
    "intervention_table",
    "plot_weights",
]

#: Metrics reported per split and summarised (mean, std) over splits.
CBM_METRICS = ("auroc", "macro_f1", "accuracy", "balanced_accuracy")
#: Summaries reported in tables: the metrics plus the number of features with a non-zero weight.
SUMMARY_KEYS = CBM_METRICS + ("n_nonzero",)


# --------------------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------------------


def _split_masks(split: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``split`` values → (train mask, test mask); rows marked anything else (e.g. ``val``) are left out."""
    arr = np.asarray(split)
    if arr.ndim != 1 or len(arr) != n:
        raise DataError(f"split must be 1-D with one entry per row ({n}), got shape {arr.shape}")
    norm = np.array([str(v).strip().lower() for v in arr])
    train, test = norm == "train", norm == "test"
    if not train.any() or not test.any():
        seen = sorted(set(norm.tolist()))[:6]
        raise DataError(f"split column needs rows marked 'train' and 'test'; found values {seen}")
    return train, test


# --------------------------------------------------------------------------------------------------------
# Classifier protocol
# --------------------------------------------------------------------------------------------------------


def _make_classifier(alpha: float, random_state: int):
    from sklearn.linear_model import SGDClassifier

    return SGDClassifier(loss="log_loss", penalty="l1", alpha=alpha, random_state=random_state)


def _fit_and_score(
    X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
    alpha: float, random_state: int, n_classes: int, multi_class: str,
) -> tuple[dict[str, Any], Any]:
    """Fit one SGD classifier and score it; returns (per-split record, fitted classifier)."""
    from sklearn.exceptions import ConvergenceWarning

    clf = _make_classifier(alpha, random_state)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(X_train, y_train)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    if len(clf.classes_) != n_classes:
        raise DataError(
            f"the training rows hold {len(clf.classes_)} of the {n_classes} classes; every class needs training rows"
        )
    probs = clf.predict_proba(X_test)
    # y_pred = clf.predict (the decision-function argmax), the prediction the reference's F1 uses.
    scores = classification_metrics(y_test, probs, metrics=list(CBM_METRICS), multi_class=multi_class,
                                    y_pred=clf.predict(X_test))
    record = {
        "random_state": int(random_state),
        "n_train": int(len(y_train)),
        "n_test": int(len(y_test)),
        **scores,
        "n_nonzero": int(np.count_nonzero(np.any(clf.coef_ != 0, axis=0))),
        "n_iter": int(clf.n_iter_),
        "converged": bool(converged),
    }
    return record, clf


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and population std (ddof=0) over splits, ignoring undefined (nan) values."""
    arr = np.asarray(values, dtype=np.float64)
    ok = arr[~np.isnan(arr)]
    if ok.size == 0:
        return {"mean": math.nan, "std": math.nan}
    return {"mean": float(ok.mean()), "std": float(ok.std())}


def evaluate_cbm(
    features: Any,
    labels: Any,
    n_splits: int = 50,
    test_size: float = 0.2,
    alpha: float = 1e-3,
    seed: int = 0,
    split: Any = None,
    eval_features: Any = None,
    multi_class: str = "ovr",
    return_models: bool = False,
) -> dict[str, Any]:
    """Fit and score the L1 logistic-regression CBM over repeated stratified splits.

    Parameters
    ----------
    features:
        ``[N, F]`` SAE codes (or raw embeddings for the baseline), used as given (no standardisation).
    labels:
        ``[N]`` class labels of any sortable type; classes are the sorted unique values.
    n_splits, test_size:
        Split ``i`` (``0 <= i < n_splits``) is ``train_test_split(arange(N), test_size=test_size,
        shuffle=True, stratify=labels, random_state=seed + i)``, and its classifier is
        ``SGDClassifier(loss="log_loss", penalty="l1", alpha=alpha, random_state=seed + i)``. ``seed=0``
        reproduces the reference's splits. Seeds ``s`` and ``s + 1`` share ``n_splits - 1`` splits, so use
        seeds at least ``n_splits`` apart for independent repeats.
    split:
        Optional ``[N]`` values ``train``/``test`` (case-insensitive; other values such as ``val`` are left
        out). Then that single split is used, with ``random_state=seed`` (the biased-CBM script used 42).
    eval_features:
        Optional ``[N, F]`` features used for the *test* rows only (training always uses ``features``):
        the same classifiers re-scored on edited features, i.e. an intervention.
    multi_class:
        AUROC averaging for more than two classes (``"ovr"`` or ``"ovo"``, macro).
    return_models:
        Also return the fitted classifiers under ``"models"``.

    Returns
    -------
    dict with ``protocol`` (``"stratified_shuffle"`` or ``"given_split"``), ``n_samples``, ``n_features``,
    ``classes``, ``n_splits``, ``test_size``, ``alpha``, ``seed``; ``per_split`` (one dict per split:
    ``split``, ``random_state``, ``n_train``, ``n_test``, the :data:`CBM_METRICS`, ``n_nonzero`` (features
    with a non-zero weight for any class), ``n_iter``, ``converged``); ``summary``
    (``{name: {"mean", "std"}}`` over splits for the metrics and ``n_nonzero``, std with ddof=0, undefined
    values skipped); ``n_not_converged``; ``coef_mean`` (``[1, F]`` for two classes, else ``[K, F]``) and
    ``intercept_mean`` (``[1]`` or ``[K]``), the means over splits; ``n_nonzero_mean_coef``.
    """
    X = as_matrix(features, "features")
    n, n_features = X.shape
    y, classes = encode_labels(labels, n)
    X_eval = X if eval_features is None else as_matrix(eval_features, "eval_features", n_features)
    if X_eval.shape[0] != n:
        raise DataError(f"eval_features has {X_eval.shape[0]} rows but features has {n}")
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise DataError(f"alpha must be a number > 0, got {alpha!r}")
    check_int(seed, "seed", 0)
    if multi_class not in ("ovr", "ovo"):
        raise DataError(f"multi_class must be 'ovr' or 'ovo', got {multi_class!r}")

    splits = _make_splits(y, n_splits, test_size, seed, split)
    per_split, models = [], []
    for i, (random_state, train_idx, test_idx) in enumerate(splits):
        record, clf = _fit_and_score(X[train_idx], y[train_idx], X_eval[test_idx], y[test_idx],
                                     float(alpha), random_state, len(classes), multi_class)
        per_split.append({"split": i, **record})
        models.append(clf)

    coefs = np.stack([m.coef_ for m in models]).astype(np.float64)
    intercepts = np.stack([m.intercept_ for m in models]).astype(np.float64)
    coef_mean = coefs.mean(axis=0)
    result: dict[str, Any] = {
        "protocol": "given_split" if split is not None else "stratified_shuffle",
        "n_samples": int(n),
        "n_features": int(n_features),
        "classes": classes,
        "n_splits": len(per_split),
        "test_size": None if split is not None else float(test_size),
        "alpha": float(alpha),
        "seed": int(seed),
        "per_split": per_split,
        "summary": {key: _mean_std([r[key] for r in per_split]) for key in SUMMARY_KEYS},
        "n_not_converged": int(sum(not r["converged"] for r in per_split)),
        "coef_mean": coef_mean,
        "intercept_mean": intercepts.mean(axis=0),
        "n_nonzero_mean_coef": int(np.count_nonzero(np.any(coef_mean != 0, axis=0))),
    }
    if return_models:
        result["models"] = models
    return result


def _make_splits(
    y: np.ndarray, n_splits: int, test_size: float, seed: int, split: Any
) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """``[(random_state, train_idx, test_idx), ...]`` for the protocol in use."""
    from sklearn.model_selection import train_test_split

    n = len(y)
    if split is not None:
        train, test = _split_masks(split, n)
        return [(int(seed), np.flatnonzero(train), np.flatnonzero(test))]
    check_int(n_splits, "n_splits")
    if not (isinstance(test_size, (int, float)) and 0 < test_size < 1):
        raise DataError(f"test_size must be a fraction in (0, 1), got {test_size!r}")
    out = []
    for i in range(n_splits):
        random_state = int(seed) + i
        try:
            train_idx, test_idx = train_test_split(
                np.arange(n), test_size=test_size, shuffle=True, stratify=y, random_state=random_state
            )
        except ValueError as exc:  # e.g. a class with one sample, or a test set smaller than the class count
            raise DataError(f"cannot make a stratified {1 - test_size:.0%}/{test_size:.0%} split: {exc}") from None
        out.append((random_state, np.asarray(train_idx), np.asarray(test_idx)))
    return out


def summary_table(results: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per named result (e.g. ``{"SAE codes": cbm, "raw embeddings": baseline}``).

    Columns: ``features``, ``n_features``, ``n_splits``, then ``<metric>_mean`` / ``<metric>_std`` for the
    metrics and ``n_nonzero``, then ``n_nonzero_mean_coef``.
    """
    rows = []
    for name, res in results.items():
        row: dict[str, Any] = {"features": name, "n_features": res["n_features"], "n_splits": res["n_splits"]}
        for key in SUMMARY_KEYS:
            row[f"{key}_mean"] = res["summary"][key]["mean"]
            row[f"{key}_std"] = res["summary"][key]["std"]
        row["n_nonzero_mean_coef"] = res["n_nonzero_mean_coef"]
        rows.append(row)
    return pd.DataFrame(rows)


def save_cbm(result: dict[str, Any], folder: str | Path, prefix: str = "") -> dict[str, Path]:
    """Write a CBM result atomically; return the paths by role.

    Files (each name preceded by ``prefix``): ``mean_classifier_weights.npy`` and
    ``mean_classifier_intercept.npy`` (the reference's names; for two classes the weights are ``[F]`` and the
    intercept ``[1]``, as the reference saves them, else ``[K, F]`` and ``[K]``), ``cbm_metrics.json``
    (everything but the arrays and models) and ``cbm_splits.csv`` (one row per split).
    """
    folder = Path(folder)
    coef = np.asarray(result["coef_mean"])
    weights = coef[0] if coef.shape[0] == 1 else coef
    paths = {
        "weights": write_npy(folder / f"{prefix}mean_classifier_weights.npy", weights.astype(np.float64)),
        "intercept": write_npy(folder / f"{prefix}mean_classifier_intercept.npy",
                               np.asarray(result["intercept_mean"], dtype=np.float64)),
        "splits": write_csv(folder / f"{prefix}cbm_splits.csv", pd.DataFrame(result["per_split"])),
    }
    meta = {k: v for k, v in result.items() if k not in ("coef_mean", "intercept_mean", "models", "per_split")}
    paths["metrics"] = write_json(folder / f"{prefix}cbm_metrics.json", meta)
    return paths
