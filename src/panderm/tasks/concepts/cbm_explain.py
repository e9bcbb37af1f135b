"""Reading a fitted CBM: global explanations (top concepts, Hungarian concept matching, weight chart) and
concept interventions (choose latents, zero them, compare before and after).

The protocol that produces the weights is :mod:`panderm.tasks.concepts.cbm`; what follows the reference and
what departs from it is described there.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from panderm.errors import DataError
from panderm.report import save_figure, subplots
from panderm.validation import as_matrix, check_int


# --------------------------------------------------------------------------------------------------------
# Global explanation
# --------------------------------------------------------------------------------------------------------


def _as_coef(coef: Any) -> np.ndarray:
    arr = np.asarray(coef, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise DataError(f"classifier weights must be [F] or [K, F], got shape {np.shape(coef)}")
    if not np.isfinite(arr).all():
        raise DataError("classifier weights hold non-finite values")
    return arr


def top_concepts(coef: Any, k: int = 10, classes: Sequence[Any] | None = None) -> list[dict[str, Any]]:
    """The ``k`` latents with the strongest evidence for each class.

    ``coef`` is ``[F]`` / ``[1, F]`` (two classes: positive weights speak for class 1, negative for class 0)
    or ``[K, F]`` (one-vs-rest rows: the largest positive weights of each row). Zero weights are never
    listed, so a class may get fewer than ``k``. Returns one dict per class, in class order:
    ``{"class", "latents": [int], "weights": [float]}``, strongest first.
    """
    w = _as_coef(coef)
    check_int(k, "k")
    n_classes = 2 if w.shape[0] == 1 else w.shape[0]
    names = list(classes) if classes is not None else list(range(n_classes))
    if len(names) != n_classes:
        raise DataError(f"{len(names)} class names given for weights of {n_classes} classes")
    # Evidence for class c: the weight row, with its sign flipped for class 0 of a binary model.
    evidence = [-w[0], w[0]] if w.shape[0] == 1 else list(w)
    signed = [w[0], w[0]] if w.shape[0] == 1 else list(w)
    out = []
    for name, ev, raw in zip(names, evidence, signed):
        order = np.argsort(-ev, kind="stable")
        order = order[ev[order] > 0][:k]
        out.append({"class": name, "latents": order.tolist(), "weights": raw[order].tolist()})
    return out


def _unit_rows(arr: np.ndarray, name: str) -> np.ndarray:
    norms = np.linalg.norm(arr.astype(np.float64), axis=1, keepdims=True)
    if (norms == 0).any():
        raise DataError(f"{name} has an all-zero row ({int(np.argmax(norms[:, 0] == 0))}); it has no direction")
    return arr / norms


def _candidates(candidate_latents: Any, n_latents: int) -> np.ndarray:
    """None → all latents; a boolean mask ``[F]`` or a list of indices → sorted unique indices."""
    if candidate_latents is None:
        return np.arange(n_latents)
    arr = np.asarray(candidate_latents)
    if arr.dtype == bool:
        if arr.shape != (n_latents,):
            raise DataError(f"candidate mask has shape {arr.shape}; expected ({n_latents},)")
        return np.flatnonzero(arr)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise DataError(
            f"candidate_latents must be a boolean mask or a list of latent indices, got {arr.dtype} {arr.shape}"
        )
    if arr.size and (arr.min() < 0 or arr.max() >= n_latents):
        raise DataError(f"candidate latent indices must lie in 0..{n_latents - 1}")
    return np.unique(arr.astype(np.int64))


def match_concepts(
    decoder_dirs: Any,
    word_embeddings: Any,
    candidate_latents: Any = None,
    words: Sequence[str] | None = None,
    allow_unmatched: bool = False,
) -> list[dict[str, Any]]:
    """Hungarian 1-to-1 matching of concept words to SAE dictionary directions, maximising total cosine.

    ``decoder_dirs`` ``[F, D]`` (row j = decoder column j), ``word_embeddings`` ``[W, D]`` (text embeddings of
    the concept words), ``candidate_latents`` the latents allowed (the reference: those with a non-zero CBM
    weight; a boolean mask or indices; default all). Each word gets a distinct latent, so ``W`` must not
    exceed the number of candidates, unless ``allow_unmatched``: then, as ``linear_sum_assignment`` does on
    the reference's rectangular matrix, only as many words as there are candidates get one (the set with the
    largest total cosine) and the others are left out. Returns, in word order, ``{"word", "latent", "cosine"}``.
    """
    from scipy.optimize import linear_sum_assignment

    dirs = as_matrix(decoder_dirs, "decoder_dirs")
    emb = as_matrix(word_embeddings, "word_embeddings", dirs.shape[1], what="columns (the decoder's dimension)")
    names = list(words) if words is not None else list(range(emb.shape[0]))
    if len(names) != emb.shape[0]:
        raise DataError(f"{len(names)} words given for {emb.shape[0]} word embeddings")
    cand = _candidates(candidate_latents, dirs.shape[0])
    if len(cand) == 0:
        raise DataError("no candidate latents to match the concept words to (no latent has a non-zero classifier "
                        "weight?)")
    if len(cand) < emb.shape[0] and not allow_unmatched:
        raise DataError(
            f"{emb.shape[0]} concept words but only {len(cand)} candidate latents; each word needs its own latent"
        )
    sim = _unit_rows(emb, "word_embeddings") @ _unit_rows(dirs[cand], "decoder_dirs").T
    rows, cols = linear_sum_assignment(sim, maximize=True)
    return [{"word": names[r], "latent": int(cand[c]), "cosine": float(sim[r, c])} for r, c in zip(rows, cols)]


def latents_for_text(
    decoder_dirs: Any, text_embedding: Any, candidate_latents: Any = None, top_n: int = 5
) -> list[dict[str, Any]]:
    """The ``top_n`` candidate latents whose dictionary direction is closest (cosine) to one text embedding.

    This is what the reference's intervention gets by Hungarian-matching ``top_n`` copies of the same text:
    with identical rows, the optimal assignment is the ``top_n`` most similar latents. Returns
    ``{"latent", "cosine"}`` dicts, most similar first (ties by latent index).
    """
    dirs = as_matrix(decoder_dirs, "decoder_dirs")
    text = np.asarray(text_embedding)
    text = as_matrix(text.reshape(1, -1) if text.ndim == 1 else text, "text_embedding", dirs.shape[1],
                     what="columns (the decoder's dimension)")
    if text.shape[0] != 1:
        raise DataError(f"text_embedding must be one vector, got shape {np.shape(text_embedding)}")
    check_int(top_n, "top_n")
    cand = _candidates(candidate_latents, dirs.shape[0])
    if len(cand) == 0:
        raise DataError("no candidate latents (no latent has a non-zero classifier weight?)")
    sim = (_unit_rows(dirs[cand], "decoder_dirs") @ _unit_rows(text, "text_embedding")[0])
    order = np.argsort(-sim, kind="stable")[:top_n]
    return [{"latent": int(cand[i]), "cosine": float(sim[i])} for i in order]


# --------------------------------------------------------------------------------------------------------
# Intervention
# --------------------------------------------------------------------------------------------------------


def select_intervention_latents(
    coef: Any,
    method: str = "matching",
    top_n: int = 5,
    decoder_dirs: Any = None,
    text_embedding: Any = None,
) -> list[int]:
    """Latents to zero, as the reference's ``4_intervention_CBM.py`` chooses them.

    ``"matching"``: the ``top_n`` latents most similar to ``text_embedding`` (e.g. "hair", "purple ink",
    "calibration scale") among those with a non-zero weight (needs ``decoder_dirs``). ``"topk"``: the
    ``top_n`` latents with the largest |weight| (summed over classes), non-zero weights only.
    """
    w = _as_coef(coef)
    check_int(top_n, "top_n")
    importance = np.abs(w).sum(axis=0)
    if method == "topk":
        order = np.argsort(-importance, kind="stable")
        return order[importance[order] > 0][:top_n].tolist()
    if method == "matching":
        if decoder_dirs is None or text_embedding is None:
            raise DataError("method 'matching' needs the SAE decoder directions and a concept text embedding")
        if np.shape(decoder_dirs)[0] != w.shape[1]:
            raise DataError(f"decoder_dirs has {np.shape(decoder_dirs)[0]} latents but the weights have {w.shape[1]}")
        hits = latents_for_text(decoder_dirs, text_embedding, importance != 0, top_n)
        return [h["latent"] for h in hits]
    raise DataError(f"intervention method must be 'matching' or 'topk', got {method!r}")


def intervene(features: Any, latents_to_zero: Sequence[int], value: float = 0.0) -> np.ndarray:
    """A float32 copy of ``features`` ``[N, F]`` with the given latent columns set to ``value`` (0: absent)."""
    X = as_matrix(features, "features").copy()
    idx = np.asarray(list(latents_to_zero), dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= X.shape[1]):
        raise DataError(f"latents to zero must lie in 0..{X.shape[1] - 1}, got {sorted(set(idx.tolist()))[:8]}")
    X[:, idx] = value
    return X


def _metric_values(res: dict[str, Any]) -> dict[str, float]:
    """An evaluate_cbm result (its split means) or a flat ``{metric: value}`` dict → ``{metric: value}``."""
    if "summary" in res:
        return {k: v["mean"] for k, v in res["summary"].items()}
    return {k: float(v) for k, v in res.items() if isinstance(v, (int, float, np.floating, np.integer))}


def intervention_table(
    before: dict[str, Any], after: dict[str, Any], metrics: Sequence[str] = ("auroc", "macro_f1", "accuracy")
) -> pd.DataFrame:
    """Before/after table with columns ``metric``, ``before``, ``after``, ``change`` (after − before)."""
    b, a = _metric_values(before), _metric_values(after)
    rows = []
    for m in metrics:
        if m not in b or m not in a:
            raise DataError(f"metric {m!r} missing from the before/after results")
        rows.append({"metric": m, "before": b[m], "after": a[m], "change": a[m] - b[m]})
    return pd.DataFrame(rows, columns=["metric", "before", "after", "change"])


# --------------------------------------------------------------------------------------------------------
# Plot
# --------------------------------------------------------------------------------------------------------


def plot_weights(names: Sequence[str], weights: Sequence[float], path: str | Path, title: str = "") -> Path:
    """Bar chart of CBM weights (e.g. of the latents matched to concept words), coloured by sign."""
    w = np.asarray(weights, dtype=np.float64).ravel()
    if len(names) != len(w) or len(w) == 0:
        raise DataError(f"plot_weights needs one name per weight, got {len(names)} names and {len(w)} weights")
    fig, ax = subplots(figsize=(max(4.0, 0.55 * len(w) + 1.5), 3.6))
    ax.bar(range(len(w)), w, color=["tab:red" if v > 0 else "tab:blue" for v in w])
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(w)), labels=[str(n) for n in names], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("CBM weight")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return save_figure(path, fig)
