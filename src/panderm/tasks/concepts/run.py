"""File-level orchestration of the concept-discovery pipeline, shared by the reference doors and ``panderm concepts``.

Each function reads its inputs (``.npy`` arrays, CSVs, SAE checkpoints), checks them all before any work is
done, calls :mod:`panderm.tasks.concepts.sae` / :mod:`panderm.tasks.concepts.cbm`, and writes its outputs
atomically, so bad input never leaves a partial file behind. Bad input raises :class:`~panderm.errors.DataError`
(or ``ModelError``) with one line naming the file and the shapes.

Pipeline (ref-panderm2 §6):

1. :func:`train_sae_from_file`: embeddings ``[N, D]`` → SAE folder (``sae.safetensors``, ``sae_config.json``,
   a reference-layout ``autoencoder.pth``, ``learned_activation.npy``, ``sae_history.jsonl`` / ``.png``).
2. :func:`extract_activations`: SAE + embeddings → codes ``[N, F]`` float32 (``0_extract_sae_activations.py``).
3. :func:`run_cbm`: CSV labels + codes (and optionally raw embeddings, the baseline) → L1 logistic-regression
   CBM over 50 stratified splits, or one given split (``1_train_clf_binary-class.py``).
4. :func:`explain`: SAE dictionary + CBM weights + concept words → Hungarian matching via the model's text
   encoder, bar chart, JSON (the global-explanation notebooks).
5. :func:`biased_cbm`, :func:`intervene_codes`, :func:`intervene_run`: the biased CBM (train/test given,
   ``random_state=42``) and the intervention that zeroes the latents matched to a concept text
   (``3_train_biased-cbm_binary-class.py`` / ``4_intervention_CBM.py``; ``intervene_run`` does both in one call
   and reports before/after).

Defaults: the **reference doors** (``automated-concept-discovery/*.py``) default to the reference, i.e. the SAE
never resamples dead latents (``resample_every=0``), keeps the pre-bias at zero (``pre_bias_init="zeros"``) and
the label is the CSV column the reference picks by position; the **library and the CLI** default to the recipe of
the reference's SAE library (``SAEConfig``'s defaults: pre-bias at the geometric median, resampling every 10
epochs, at most 4 times) and to a label column given by name. Everything is seeded (SAE init/shuffling, SGD
``random_state``), unlike the reference's unseeded SGD. The ``autoencoder.pth`` written here is a plain dict of
tensors and ints (readable with ``torch.load(weights_only=True)``), in the reference key layout with the leading
component axis.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from panderm.errors import DataError
from panderm.report import write_csv, write_json, write_npy

log = logging.getLogger(__name__)

__all__ = [
    "load_array",
    "read_labels",
    "train_sae_from_file",
    "write_reference_pth",
    "extract_activations",
    "run_cbm",
    "biased_cbm",
    "encode_concepts",
    "explain",
    "intervene_codes",
    "intervene_run",
]

#: Concept words of the reference's global-explanation notebooks (typos kept: they are the reference's prompts).
REFERENCE_CONCEPTS = ["asymmetry", "irregular", "erosion", "black", "blue", "white ", "brown", "mutiple colors",
                      "tiny", "regular"]


# --------------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------------


def load_array(
    path: str | Path,
    name: str = "array",
    n_rows: int | None = None,
    rows_of: str = "",
    n_cols: int | None = None,
    cols_of: str = "",
    ndim: int | tuple[int, ...] = 2,
) -> np.ndarray:
    """A numeric ``.npy`` file as a numpy array, read with ``allow_pickle=False``; DataError for anything else.

    ``n_rows`` / ``n_cols`` demand a shape (``rows_of`` / ``cols_of`` say what must match, for the message).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{name} file not found: {path}")
    if path.is_dir():
        raise DataError(f"{name} path is a folder, not a .npy file: {path}")
    with open(path, "rb") as fh:
        magic = fh.read(6)
    if magic != b"\x93NUMPY" and magic[:2] != b"PK":  # PK: an .npz (zip) archive, named below
        raise DataError(f"{path} is not a .npy file (no .npy header); {name} must be a numeric array saved with "
                        "np.save")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        msg = str(exc)
        if "pickle" in msg.lower() or "object" in msg.lower():
            raise DataError(f"{path} holds pickled Python objects; only plain numeric .npy arrays are read "
                            "(save with np.save(..., allow_pickle=False))") from None
        raise DataError(f"{path} is not a readable .npy array: {msg.splitlines()[0] if msg else 'ValueError'}") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path} is not a readable .npy array: {exc}") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive
        raise DataError(f"{path} is an .npz archive; a single .npy array is expected")
    if arr.dtype.kind != "f":
        raise DataError(f"{path} holds dtype {arr.dtype}; {name} must be floating point (float16/32/64)")
    dims = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if arr.ndim not in dims:
        want = " or ".join(f"{d}-D" for d in dims)
        raise DataError(f"{path} has shape {arr.shape}; {name} must be {want}")
    if arr.size == 0:
        raise DataError(f"{path} is empty (shape {arr.shape}); {name} needs at least one row and column")
    if n_rows is not None and arr.shape[0] != n_rows:
        raise DataError(f"{path} has {arr.shape[0]} rows (shape {arr.shape}) but {rows_of or 'the input'} "
                        f"has {n_rows}; they must be in the same order, one row each")
    if n_cols is not None and arr.shape[-1] != n_cols:
        raise DataError(f"{path} has shape {arr.shape} but {cols_of or 'the model'} expects {n_cols} columns")
    out = np.asarray(arr)
    if out.dtype.kind == "f" and not np.isfinite(out).all():
        bad = np.argwhere(~np.isfinite(out))[0]
        raise DataError(f"{path} holds non-finite values (first at index {tuple(int(i) for i in bad)})")
    return np.array(out)  # a real in-memory copy, the file handle closed


def read_labels(
    csv: str | Path,
    label_col: str | None = None,
    position: int = 2,
    binary: bool = False,
    split_col: str | None = None,
    flag: str = "--label_col",
) -> tuple[np.ndarray, str, np.ndarray | None, int]:
    """Labels (and optional split values) of a CSV; returns ``(labels, label column, split or None, n_rows)``.

    ``label_col`` names the column; ``None`` takes the column at ``position`` (the reference: 2, the third
    column, for ``1_train_clf``; -1, the last one, for the biased CBM). ``binary`` demands exactly two classes.
    Numeric labels stay numbers; text labels are classes sorted by name.
    """
    from panderm.data.tables import read_csv, require_columns

    frame = read_csv(csv)
    if label_col is None:
        if not -frame.shape[1] <= position < frame.shape[1]:
            raise DataError(f"{csv} has {frame.shape[1]} columns; the reference takes the label from column "
                            f"{position + 1 if position >= 0 else 'last'}; name it with {flag}")
        label_col = str(frame.columns[position])
    require_columns(frame, [label_col], csv, {label_col: flag})
    values = frame[label_col]
    missing = np.flatnonzero(values.isna().to_numpy() | (values.astype(str).str.strip() == "").to_numpy())
    if len(missing):
        rows = ", ".join(str(i + 2) for i in missing[:5])
        raise DataError(f"{csv}: label column {label_col!r} is empty in {len(missing)} row(s) (line {rows})")
    numeric = pd.to_numeric(values, errors="coerce")
    labels = numeric.to_numpy() if numeric.notna().all() else values.astype(str).str.strip().to_numpy()
    classes = np.unique(labels)
    if binary and len(classes) != 2:
        shown = ", ".join(map(str, classes[:8])) + (" ..." if len(classes) > 8 else "")
        raise DataError(f"{csv}: label column {label_col!r} has {len(classes)} classes ({shown}); this binary "
                        f"classifier needs exactly 2 (choose another column with {flag})")
    split = None
    if split_col is not None:
        require_columns(frame, [split_col], csv, {split_col: "--split_col"})
        split = frame[split_col].astype(str).str.strip().to_numpy()
    return labels, label_col, split, len(frame)


# --------------------------------------------------------------------------------------------------------
# SAE
# --------------------------------------------------------------------------------------------------------


def write_reference_pth(model, path: str | Path, train_shape: Sequence[int] | None = None) -> Path:
    """Save ``model`` as a reference-layout ``autoencoder.pth`` (tensors and ints only; weights_only-loadable).

    Keys: ``model_state_dict`` (``tied_bias`` [1, D], ``encoder._weight`` [1, F, D], ``encoder._bias`` [1, F],
    ``decoder._weight`` [1, D, F]), ``model_config`` (``n_input_features``, ``n_learned_features``,
    ``n_components`` = 1) and ``train_shape``.
    """
    import torch

    from panderm.report import atomic_path

    state = {
        "tied_bias": model.pre_bias.detach().float().cpu()[None].clone(),
        "encoder._weight": model.encoder.weight.detach().float().cpu()[None].clone(),
        "encoder._bias": model.encoder.bias.detach().float().cpu()[None].clone(),
        "decoder._weight": model.decoder.weight.detach().float().cpu()[None].clone(),
    }
    obj = {
        "model_state_dict": state,
        "model_config": {"n_input_features": int(model.d_in), "n_learned_features": int(model.n_latents),
                         "n_components": 1},
        "train_shape": [int(s) for s in train_shape] if train_shape is not None else None,
    }
    # Serialised in memory: torch names the zip members after the file it writes to, so saving to the
    # temporary file would put its random name into the bytes. This way identical weights give identical files.
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_path(path, suffix=".pth") as tmp:
        tmp.write_bytes(buf.getvalue())
    return Path(path)


def _sae_config(d_in: int, config: Any):
    from panderm.tasks.concepts.sae import SAEConfig

    if config is None:
        return SAEConfig(d_in=d_in).validate()
    if isinstance(config, SAEConfig):
        if config.d_in != d_in:
            raise DataError(f"the SAE config has d_in={config.d_in} but the embeddings have {d_in} columns")
        return config.validate()
    return SAEConfig(d_in=d_in, **dict(config)).validate()


def train_sae_from_file(
    embeddings_npy: str | Path,
    out_dir: str | Path,
    config: Any = None,
    reference_pth: bool = True,
    activations: bool = True,
    activation_batch_size: int = 512,
    progress: bool = False,
    flag_names: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Train an SAE on ``embeddings_npy`` ``[N, D]`` and write it to ``out_dir``; return a summary dict.

    ``config`` is an :class:`~panderm.tasks.concepts.sae.SAEConfig` or a dict of its fields (``d_in`` comes
    from the file); ``None`` gives the library defaults (resampling on). Writes ``sae.safetensors`` +
    ``sae_config.json``, ``autoencoder.pth`` (reference layout, tensors only) when ``reference_pth``,
    ``learned_activation.npy`` ``[N, F]`` float32 (codes of the training rows) when ``activations``,
    ``sae_history.jsonl`` and ``sae_history.png``, and ``sae_summary.json``.

    Sizes (training, and the codes when ``activations``) are checked before training starts. A diverging
    run raises :class:`~panderm.tasks.concepts.sae.SAETrainingError` and writes nothing. A run that ends
    with FVU > 1 or more than half its latents dead logs one warning line and keeps it in the summary
    (``"warnings"``); ``flag_names`` spells the hints in the caller's flags.
    """
    from panderm.tasks.concepts.sae import (
        check_sae_fits,
        plot_history,
        sae_activations,
        save_sae,
        train_sae,
        training_warning,
    )

    X = load_array(embeddings_npy, "embeddings")
    cfg = _sae_config(X.shape[1], config)
    check_sae_fits(cfg.d_in, cfg.latents, cfg.device, n_rows=X.shape[0], batch_size=cfg.batch_size, training=True,
                   codes_rows=X.shape[0] if activations else 0)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"SAE output path exists and is not a folder: {out}")
    # Train into memory first (the history log goes to a private temp file), then write everything.
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "sae_history.jsonl"
        model, history = train_sae(X, cfg, log_path=log, progress=progress, flag_names=flag_names)
        out.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {"history": out / "sae_history.jsonl"}
        from panderm.report import atomic_path

        with atomic_path(paths["history"]) as dst:
            dst.write_bytes(log.read_bytes())
    paths["sae"] = save_sae(model, cfg, out)
    if reference_pth:
        paths["pth"] = write_reference_pth(model, out / "autoencoder.pth", X.shape)
    n_active = None
    if activations:
        codes = sae_activations(model, X, activation_batch_size)
        n_active = int(np.count_nonzero((codes > 0).any(axis=0)))
        paths["activations"] = write_npy(out / "learned_activation.npy", codes)
    paths["history_png"] = plot_history(history, out / "sae_history.png")
    last = history[-1] if history else {}
    summary = {
        "embeddings": str(embeddings_npy),
        "n_samples": int(X.shape[0]),
        "d_in": int(cfg.d_in),
        "n_latents": int(cfg.latents),
        "config": cfg.to_dict(),
        "final": last,
        "warnings": [w for w in [training_warning(last, cfg, flag_names) if last else None] if w],
        "latents_active_on_training_rows": n_active,
        "files": {k: str(v) for k, v in paths.items()},
    }
    write_json(out / "sae_summary.json", summary)
    return summary


def _load_sae(checkpoint: str | Path, device: str = "cpu"):
    from panderm.tasks.concepts.sae import load_sae

    return load_sae(checkpoint, device=device)


def extract_activations(
    checkpoint: str | Path, embeddings_npy: str | Path, output_npy: str | Path, batch_size: int = 512,
    device: str = "cpu",
) -> dict[str, Any]:
    """SAE codes ``[N, F]`` float32 of ``embeddings_npy`` written to ``output_npy``; returns a summary dict.

    ``checkpoint`` is an SAE folder (ours or one with ``autoencoder.pth``) or a reference ``autoencoder.pth``.
    """
    from panderm.tasks.concepts.sae import sae_activations

    if batch_size < 1:
        raise DataError(f"--batch_size must be >= 1, got {batch_size}")
    model, _ = _load_sae(checkpoint, device)
    X = load_array(embeddings_npy, "embeddings", n_cols=model.d_in, cols_of=f"the SAE {checkpoint} (d_in)")
    codes = sae_activations(model, X, batch_size)
    n_active = int(np.count_nonzero((codes > 0).any(axis=0)))
    write_npy(output_npy, codes)
    return {"output": str(output_npy), "shape": list(codes.shape), "n_active": n_active,
            "n_latents": int(model.n_latents)}


# --------------------------------------------------------------------------------------------------------
# CBM
# --------------------------------------------------------------------------------------------------------


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
    label_flag: str = "--label_col",
) -> dict[str, Any]:
    """The CBM over ``embeddings_npy`` (SAE codes or raw embeddings) with labels from ``csv``.

    Returns ``{"label_col", "results": {name: evaluate_cbm result}, "table": DataFrame, "files": {...}}``;
    the main result is named ``"features"`` and the optional raw-embedding baseline ``"baseline"``. With
    ``out_dir`` the main result is saved with :func:`~panderm.tasks.concepts.cbm.save_cbm` (the reference's
    ``mean_classifier_weights.npy`` / ``mean_classifier_intercept.npy`` plus metrics), the baseline with the
    prefix ``baseline_``, and the table as ``cbm_summary.csv``. All inputs are checked before fitting.
    """
    from panderm.tasks.concepts.cbm import evaluate_cbm, save_cbm, summary_table

    labels, col, split, n = read_labels(csv, label_col, label_position, binary, split_col, flag=label_flag)
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


def _train_test(train_csv, test_csv, train_npy, test_npy, label_col, binary, label_flag="--label_col"):
    """Stacked train+test features, labels and the split array for the given-split protocol."""
    y_tr, col, _, n_tr = read_labels(train_csv, label_col, -1, binary, flag=label_flag)
    y_te, col_te, _, n_te = read_labels(test_csv, col if label_col is None else label_col, -1, binary,
                                        flag=label_flag)
    if label_col is None and col_te != col:
        raise DataError(f"the last columns differ: {train_csv} has {col!r}, {test_csv} has {col_te!r}; "
                        f"name the label with {label_flag}")
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
# Text concepts
# --------------------------------------------------------------------------------------------------------


def encode_concepts(
    texts: Sequence[str], d_in: int, model_id: str | None = None, encoder: Any = None, checkpoint: str | None = None,
    device: str = "cpu", allow_random_init: bool = False,
) -> tuple[np.ndarray, Any]:
    """L2-normalised text embeddings ``[T, D]`` of ``texts``; checks ``D`` equals the SAE's ``d_in``.

    Pass a loaded ``encoder`` or a ``model_id`` (and ``checkpoint``) to load one. Returns ``(embeddings, encoder)``.
    """
    from panderm.features import extract_text_features

    texts = [str(t) for t in texts]
    if not texts or any(not t.strip() for t in texts):
        raise DataError("concept texts must be non-empty strings")
    if encoder is None:
        if not model_id:
            raise DataError("a model is needed to encode the concept texts")
        from panderm.models import load_encoder

        encoder = load_encoder(model_id, checkpoint=checkpoint, device=device, allow_random_init=allow_random_init)
    t = extract_text_features(encoder, texts, cache=False).astype(np.float64)
    if t.shape[1] != d_in:
        raise DataError(f"the text encoder of {model_id or 'the model'} gives {t.shape[1]}-d embeddings but the "
                        f"SAE works on {d_in}-d image embeddings; use the model the SAE was trained on")
    norms = np.linalg.norm(t, axis=1, keepdims=True)
    return (t / np.where(norms == 0, 1, norms)).astype(np.float32), encoder


def _weights(path: str | Path, n_latents: int, sae: str | Path) -> np.ndarray:
    w = load_array(path, "classifier weights", ndim=(1, 2), n_cols=n_latents,
                   cols_of=f"the SAE {sae} (its number of latents)")
    return w.astype(np.float64)


def explain(
    sae_checkpoint: str | Path,
    cbm_weights_npy: str | Path,
    out_dir: str | Path,
    concepts: Sequence[str] = tuple(REFERENCE_CONCEPTS),
    model_id: str | None = None,
    encoder: Any = None,
    checkpoint: str | None = None,
    device: str = "cpu",
    allow_random_init: bool = False,
    top_k: int = 10,
) -> dict[str, Any]:
    """Global explanation: match each concept word to a distinct latent with a non-zero CBM weight.

    Hungarian matching of the text embeddings to the SAE dictionary directions (cosine), restricted to latents
    with a non-zero weight, as the reference notebooks do. With fewer non-zero weights than concepts, the
    reference's ``linear_sum_assignment`` matches as many concepts as there are such latents (the set with the
    largest total cosine); the others are listed under ``"unmatched"`` and one warning line says so. Writes
    ``concept_matches.json`` (matches with their weights and |weight| ranks, plus the top latents per class),
    ``concept_matches.csv`` and ``concept_weights.png``. Returns the JSON content.
    """
    from panderm.tasks.concepts.cbm import match_concepts, plot_weights, top_concepts
    from panderm.tasks.concepts.sae import decoder_directions

    model, _ = _load_sae(sae_checkpoint)
    w = _weights(cbm_weights_npy, model.n_latents, sae_checkpoint)
    w2 = w[None, :] if w.ndim == 1 else w
    importance = np.abs(w2).sum(axis=0)
    n_nonzero = int(np.count_nonzero(importance))
    if not len(concepts):
        raise DataError("no concept words to match; give some (--concepts WORD ...) or leave them out for the "
                        "reference's ten")
    if n_nonzero == 0:
        raise DataError(f"{cbm_weights_npy} has no non-zero weight, so no latent can be named: the CBM's L1 penalty "
                        "removed every latent; refit it with a smaller --alpha (panderm concepts cbm --alpha)")
    dirs = decoder_directions(model)
    text, encoder = encode_concepts(concepts, model.d_in, model_id, encoder, checkpoint, device, allow_random_init)
    matches = match_concepts(dirs, text, importance != 0, words=list(concepts), allow_unmatched=True)
    left = Counter(concepts)
    left.subtract(m["word"] for m in matches)
    unmatched = [word for word in dict.fromkeys(concepts) for _ in range(max(left[word], 0))]
    if unmatched:
        log.warning("warning: %s has %d non-zero weight(s) for %d concepts: matched the %d with the largest total "
                    "cosine, left out %s; for more, refit the CBM with a smaller --alpha or give fewer --concepts",
                    cbm_weights_npy, n_nonzero, len(concepts), len(matches),
                    ", ".join(repr(word) for word in unmatched))
    order = np.argsort(-importance, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    for m in matches:
        j = m["latent"]
        m["weight"] = float(w2[0, j]) if w2.shape[0] == 1 else [float(v) for v in w2[:, j]]
        m["rank"] = int(rank[j])
    out = Path(out_dir)
    names = [f"{m['word'].strip()} (#{m['latent']})" for m in matches]
    bar = [m["weight"] if w2.shape[0] == 1 else float(np.abs(w2[:, m["latent"]]).sum()) for m in matches]
    result = {
        "sae": str(sae_checkpoint),
        "weights": str(cbm_weights_npy),
        "model": model_id or getattr(encoder, "model_id", None),
        "random_init": bool(getattr(encoder, "random_init", False)),
        "n_latents": int(model.n_latents),
        "n_nonzero_weights": n_nonzero,
        "matches": matches,
        "unmatched": unmatched,
        "top_latents": top_concepts(w2, k=top_k),
    }
    table = pd.DataFrame([{k: (v if not isinstance(v, list) else str(v)) for k, v in m.items()} for m in matches])
    write_csv(out / "concept_matches.csv", table)
    plot_weights(names, bar, out / "concept_weights.png", title="CBM weight of the latent matched to each concept")
    write_json(out / "concept_matches.json", result)
    return result


# --------------------------------------------------------------------------------------------------------
# Intervention
# --------------------------------------------------------------------------------------------------------


def _select(coef, method, top_n, concept, model, text_kw) -> tuple[list[int], list[float] | None, Any]:
    from panderm.tasks.concepts.cbm import latents_for_text, select_intervention_latents
    from panderm.tasks.concepts.sae import decoder_directions

    if method not in ("matching", "topk"):
        raise DataError(f"--method must be 'matching' or 'topk', got {method!r}")
    if top_n < 1:
        raise DataError(f"--top_n must be >= 1, got {top_n}")
    if method == "topk":
        return select_intervention_latents(coef, "topk", top_n), None, text_kw.get("encoder")
    if not concept or not str(concept).strip():
        raise DataError("method 'matching' needs a concept text (--concept)")
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
