"""The CBM steps of the concept pipeline on files: the 50-split CBM (``1_train_clf_binary-class.py``), the biased
CBM on a given train/test split (``3_train_biased-cbm_binary-class.py``) and the concept intervention
(``4_intervention_CBM.py``), each reading CSV labels and ``.npy`` codes and writing its results atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from panderm.errors import DataError
from panderm.report import write_csv, write_json, write_npy
from panderm.tasks.concepts.explain_files import _weights, encode_concepts
from panderm.tasks.concepts.inputs import load_array, read_labels
from panderm.tasks.concepts.sae_files import _load_sae


def run_cbm(
    csv: str | Path,
    embeddings_npy: str | Path,
    out_dir: str | Path | None = None,
    label_col: str | None = None,
    label_position: int = 2,
    split_col: str | None = None,
    baseline_npy: str | Path | None = None,
    n_splits: int = 50,
    test_size: float = 0.2,
    alpha: float = 1e-3,
    seed: int = 0,
    binary: bool = False,
) -> dict[str, Any]:
    """The CBM over ``embeddings_npy`` (SAE codes or raw embeddings) with labels from ``csv``.

    Returns ``{"label_col", "results": {name: evaluate_cbm result}, "table": DataFrame, "files": {...}}``;
    the main result is named ``"features"`` and the optional raw-embedding baseline ``"baseline"``. With
    ``out_dir`` the main result is saved with :func:`~panderm.tasks.concepts.cbm.save_cbm` (the reference's
    ``mean_classifier_weights.npy`` / ``mean_classifier_intercept.npy`` plus metrics), the baseline with the
    prefix ``baseline_``, and the table as ``cbm_summary.csv``. All inputs are checked before fitting.
    """
    from panderm.tasks.concepts.cbm import evaluate_cbm, save_cbm, summary_table

    labels, col, split, n = read_labels(csv, label_col, label_position, binary, split_col)
    arrays = {"features": load_array(embeddings_npy, "embeddings", n_rows=n, rows_of=f"the CSV {csv}")}
    if baseline_npy is not None:
        arrays["baseline"] = load_array(baseline_npy, "baseline embeddings", n_rows=n, rows_of=f"the CSV {csv}")
    try:
        results = {name: evaluate_cbm(X, labels, n_splits=n_splits, test_size=test_size, alpha=alpha, seed=seed,
                                      split=split)
                   for name, X in arrays.items()}
    except DataError as exc:  # e.g. a class too small to split: say which file and column hold the labels
        raise DataError(f"{csv}: label column {col!r}: {exc}") from None
    table = summary_table(results)
    files: dict[str, str] = {}
    if out_dir is not None:
        for name, res in results.items():
            paths = save_cbm(res, out_dir, prefix="" if name == "features" else f"{name}_")
            files.update({f"{name}_{k}": str(v) for k, v in paths.items()})
        files["summary"] = str(write_csv(Path(out_dir) / "cbm_summary.csv", table))
    return {"label_col": col, "results": results, "table": table, "files": files}


def _train_test(train_csv, test_csv, train_npy, test_npy, label_col, binary):
    """Stacked train+test features, labels and the split array for the given-split protocol."""
    y_tr, col, _, n_tr = read_labels(train_csv, label_col, -1, binary)
    y_te, col_te, _, n_te = read_labels(test_csv, col if label_col is None else label_col, -1, binary)
    if label_col is None and col_te != col:
        raise DataError(f"the last columns differ: {train_csv} has {col!r}, {test_csv} has {col_te!r}; "
                        "name the label column", param="label_col")
    X_tr = load_array(train_npy, "train features", n_rows=n_tr, rows_of=f"the CSV {train_csv}")
    X_te = load_array(test_npy, "test features", n_rows=n_te, rows_of=f"the CSV {test_csv}",
                      n_cols=X_tr.shape[1], cols_of=f"the train features {train_npy}")
    try:
        y = np.concatenate([y_tr, y_te])
        np.unique(y)
    except TypeError:
        raise DataError(f"{train_csv} and {test_csv} label column {col!r} mix numbers and text") from None
    split = np.array(["train"] * n_tr + ["test"] * n_te)
    return X_tr, X_te, y, split, col


def _given_split_metrics(res: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in res["per_split"][0].items() if k in ("auroc", "macro_f1", "accuracy",
                                                                          "balanced_accuracy")}


def biased_cbm(
    train_csv: str | Path, test_csv: str | Path, train_npy: str | Path, test_npy: str | Path,
    out_dir: str | Path | None = None, label_col: str | None = None, random_state: int = 42, alpha: float = 1e-3,
    binary: bool = False,
) -> dict[str, Any]:
    """Train the CBM on the train codes and score it on the test codes (``3_train_biased-cbm_binary-class.py``).

    ``SGDClassifier(log_loss, l1, alpha, random_state=42)`` as the reference; the label is the CSVs' last column
    unless ``label_col`` names it. With ``out_dir``: ``classifier_weights.npy`` ([F] for two classes, else
    [K, F]), ``classifier_intercept.npy`` and ``biased_cbm.json``. Returns ``{"metrics", "result", "files"}``.
    """
    from panderm.tasks.concepts.cbm import evaluate_cbm

    X_tr, X_te, y, split, col = _train_test(train_csv, test_csv, train_npy, test_npy, label_col, binary)
    res = evaluate_cbm(np.concatenate([X_tr, X_te]), y, split=split, seed=random_state, alpha=alpha)
    metrics = _given_split_metrics(res)
    files = {}
    if out_dir is not None:
        out = Path(out_dir)
        coef = np.asarray(res["coef_mean"])
        files["weights"] = str(write_npy(out / "classifier_weights.npy", coef[0] if coef.shape[0] == 1 else coef))
        files["intercept"] = str(write_npy(out / "classifier_intercept.npy", np.asarray(res["intercept_mean"])))
        meta = {k: v for k, v in res.items() if k not in ("coef_mean", "intercept_mean", "models")}
        files["json"] = str(write_json(out / "biased_cbm.json", {"label_col": col, "metrics": metrics, **meta}))
    return {"metrics": metrics, "result": res, "label_col": col, "files": files}


# --------------------------------------------------------------------------------------------------------
# Intervention
# --------------------------------------------------------------------------------------------------------


def _select(coef, method, top_n, concept, model, text_kw) -> tuple[list[int], list[float] | None, Any]:
    from panderm.tasks.concepts.cbm import latents_for_text, select_intervention_latents
    from panderm.tasks.concepts.sae import decoder_directions

    if method not in ("matching", "topk"):
        raise DataError(f"the method must be 'matching' or 'topk', got {method!r}", param="method")
    if top_n < 1:
        raise DataError(f"the number of latents must be >= 1, got {top_n}", param="top_n")
    if method == "topk":
        return select_intervention_latents(coef, "topk", top_n), None, text_kw.get("encoder")
    if not concept or not str(concept).strip():
        raise DataError("method 'matching' needs a concept text", param="concept")
    text, encoder = encode_concepts([concept], model.d_in, **text_kw)
    w = np.asarray(coef)
    importance = np.abs(w[None, :] if w.ndim == 1 else w).sum(axis=0)
    hits = latents_for_text(decoder_directions(model), text[0], importance != 0, top_n)
    return [h["latent"] for h in hits], [h["cosine"] for h in hits], encoder


def intervene_codes(
    sae_checkpoint: str | Path,
    weights_npy: str | Path,
    activations_npy: str | Path,
    output_npy: str | Path,
    concept: str | None = None,
    method: str = "matching",
    top_n: int = 5,
    model_id: str | None = None,
    checkpoint: str | None = None,
    device: str = "cpu",
    allow_random_init: bool = False,
    encoder: Any = None,
) -> dict[str, Any]:
    """Zero the latents matched to ``concept`` (or the top-n by |weight|) in ``activations_npy``.

    What ``4_intervention_CBM.py`` does: writes the edited codes to ``output_npy`` and, next to it,
    ``<stem>.json`` with the latents, their cosine to the concept and their CBM weights. Returns that dict.
    """
    from panderm.tasks.concepts.cbm import intervene

    model, _ = _load_sae(sae_checkpoint, device)
    coef = _weights(weights_npy, model.n_latents, sae_checkpoint)
    codes = load_array(activations_npy, "activations", n_cols=model.n_latents,
                       cols_of=f"the SAE {sae_checkpoint} (its number of latents)")
    text_kw = dict(model_id=model_id, checkpoint=checkpoint, device=device, allow_random_init=allow_random_init,
                   encoder=encoder)
    latents, cosines, encoder = _select(coef, method, top_n, concept, model, text_kw)
    edited = intervene(codes, latents)
    w2 = coef[None, :] if coef.ndim == 1 else coef
    info = {
        "concept": concept if method == "matching" else None,
        "method": method,
        "top_n": int(top_n),
        "latents": latents,
        "cosines": cosines,
        "weights": [float(w2[0, j]) if w2.shape[0] == 1 else [float(v) for v in w2[:, j]] for j in latents],
        "activations": str(activations_npy),
        "output": str(output_npy),
        "random_init": bool(getattr(encoder, "random_init", False)),
    }
    write_npy(output_npy, edited)
    write_json(Path(output_npy).with_suffix(".json"), info)
    return info


def intervene_run(
    train_csv: str | Path,
    test_csv: str | Path,
    train_codes_npy: str | Path,
    test_codes_npy: str | Path,
    sae_checkpoint: str | Path,
    out_dir: str | Path,
    concept: str | None = None,
    method: str = "matching",
    top_n: int = 5,
    label_col: str | None = None,
    random_state: int = 42,
    alpha: float = 1e-3,
    model_id: str | None = None,
    checkpoint: str | None = None,
    device: str = "cpu",
    allow_random_init: bool = False,
    encoder: Any = None,
    save_codes: bool = False,
) -> dict[str, Any]:
    """Biased CBM + intervention in one call, with a before/after report.

    Trains the CBM (``random_state=42``) on the train codes, scores it on the test codes, zeroes the chosen
    latents in the test codes, and re-scores the same classifier. Writes ``intervention.csv`` (metric,
    before, after, change), ``intervention.json``, ``classifier_weights.npy`` / ``classifier_intercept.npy``
    and, with ``save_codes``, ``test_codes_after_intervention.npy``. Returns the JSON content plus ``table``.
    """
    from panderm.tasks.concepts.cbm import evaluate_cbm, intervene, intervention_table

    model, _ = _load_sae(sae_checkpoint, device)
    X_tr, X_te, y, split, col = _train_test(train_csv, test_csv, train_codes_npy, test_codes_npy, label_col, False)
    if X_tr.shape[1] != model.n_latents:
        raise DataError(f"{train_codes_npy} has shape {X_tr.shape} but the SAE {sae_checkpoint} has "
                        f"{model.n_latents} latents; give the SAE codes, not the embeddings")
    X = np.concatenate([X_tr, X_te])
    before = evaluate_cbm(X, y, split=split, seed=random_state, alpha=alpha)
    coef = np.asarray(before["coef_mean"])
    text_kw = dict(model_id=model_id, checkpoint=checkpoint, device=device, allow_random_init=allow_random_init,
                   encoder=encoder)
    latents, cosines, encoder = _select(coef, method, top_n, concept, model, text_kw)
    X_te_edit = intervene(X_te, latents)
    after = evaluate_cbm(X, y, split=split, seed=random_state, alpha=alpha,
                         eval_features=np.concatenate([X_tr, X_te_edit]))
    table = intervention_table(before, after, metrics=("auroc", "macro_f1", "accuracy", "balanced_accuracy"))
    out = Path(out_dir)
    w = coef[0] if coef.shape[0] == 1 else coef
    info = {
        "concept": concept if method == "matching" else None,
        "method": method,
        "top_n": int(top_n),
        "label_col": col,
        "random_state": int(random_state),
        "latents": latents,
        "cosines": cosines,
        "weights": [float(coef[0, j]) if coef.shape[0] == 1 else [float(v) for v in coef[:, j]] for j in latents],
        "before": _given_split_metrics(before),
        "after": _given_split_metrics(after),
        "classes": before["classes"],
        "n_train": int(len(X_tr)),
        "n_test": int(len(X_te)),
        "random_init": bool(getattr(encoder, "random_init", False)),
    }
    write_npy(out / "classifier_weights.npy", w)
    write_npy(out / "classifier_intercept.npy", np.asarray(before["intercept_mean"]))
    if save_codes:
        write_npy(out / "test_codes_after_intervention.npy", X_te_edit)
    write_csv(out / "intervention.csv", table)
    write_json(out / "intervention.json", info)
    return {**info, "table": table}
