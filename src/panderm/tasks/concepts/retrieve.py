"""Concept retrieval, latent naming and the per-class global explanation.

docs/CONCEPTS.md, "Concept retrieval, latent names and the HTML report".

* :func:`retrieve_concept`: text → cosine to every SAE dictionary direction (decoder column, unit norm) →
  the most similar **live** latent (total activation over the dataset > 0; dead latents are masked, as the
  reference notebooks do) → the rows where that latent fires most. :func:`retrieve_run` does it from files and
  saves one image grid PNG per text (``retrieval_<slug>.png``, the reference's 5 images resized to 224 with
  LANCZOS, optionally titled "Exists"/"Non-Exists" from a 0/1 ground-truth column) plus ``retrieval.json``.
* :func:`name_latents`: every live latent gets the word of a dermatology vocabulary
  (:data:`CONCEPT_VOCABULARY`: the 7-point checklist and other dermoscopic structures, colours, morphology)
  whose text embedding has the highest cosine with its dictionary direction in the joint image-text space.
  Names are independent (argmax per latent, not a 1-to-1 matching): two latents may share a name.
* :func:`class_importance`: the reference's ``2_global_concept_viz_binary-class.py``: centre the features,
  average them per class, keep the top-k features by |mean|. :func:`save_class_importance` writes
  ``class_importance.json`` (indices and values) + ``class_importance.npz`` (arrays); never a pickle.

Arrays in, arrays out for the core functions; file-level helpers read ``.npy`` files with ``allow_pickle=False``.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from panderm.errors import DataError
from panderm.validation import as_matrix

__all__ = [
    "CONCEPT_VOCABULARY",
    "load_vocabulary",
    "live_latents",
    "text_latent_similarity",
    "top_activating",
    "retrieve_concept",
    "name_latents",
    "image_grid",
    "retrieve_run",
    "class_importance",
    "save_class_importance",
    "load_class_importance",
]

#: Dermatology concept vocabulary used to name latents: dermoscopic 7-point checklist criteria and other
#: dermoscopic structures, colours, clinical morphology, and common artefacts (so artefact latents get an
#: honest name instead of the nearest lesion word).
CONCEPT_VOCABULARY: tuple[str, ...] = (
    # 7-point checklist (Argenziano) and its typical/atypical variants
    "atypical pigment network", "typical pigment network", "pigment network", "blue-whitish veil",
    "atypical vascular pattern", "irregular streaks", "streaks", "irregular pigmentation",
    "irregular dots and globules", "dots and globules", "regression structures", "regression areas",
    # other dermoscopic structures
    "negative network", "shiny white lines", "milia-like cysts", "comedo-like openings", "leaf-like areas",
    "spoke-wheel areas", "blue-grey ovoid nests", "arborizing vessels", "dotted vessels", "hairpin vessels",
    "globular pattern", "reticular pattern", "homogeneous pattern", "starburst pattern", "multicomponent pattern",
    "pseudopods", "peppering", "scar-like depigmentation", "fingerprint-like structures", "moth-eaten border",
    # colours
    "black", "dark brown", "light brown", "brown", "blue", "blue-grey", "white", "red", "pink", "purple",
    "yellow", "orange", "skin-coloured", "multiple colours", "hypopigmentation", "hyperpigmentation",
    # ABCD / shape
    "asymmetry", "symmetric", "irregular border", "regular border", "well-defined border", "large diameter",
    "small", "tiny",
    # clinical morphology (primary and secondary lesions)
    "macule", "patch", "papule", "plaque", "nodule", "vesicle", "bulla", "pustule", "cyst", "wheal",
    "erosion", "ulcer", "crust", "scale", "scar", "atrophy", "lichenification", "excoriation", "fissure",
    "erythema", "telangiectasia", "pigmented lesion", "keratotic surface", "papillomatous surface",
    "exophytic", "umbilicated", "pedunculated", "dome-shaped", "flat", "raised",
    # diagnoses often named in concept studies
    "melanoma", "nevus", "seborrheic keratosis", "basal cell carcinoma", "squamous cell carcinoma",
    "dermatofibroma", "vascular lesion", "actinic keratosis",
    # artefacts and context
    "hair", "ruler", "calibration scale", "purple ink", "gel bubbles", "dark corner", "vignetting",
    "skin surface", "nail", "face",
)


def load_vocabulary(path: str | Path | None = None) -> list[str]:
    """The built-in vocabulary, or one term per line of a text file (blank lines and ``#`` comments skipped)."""
    if path is None:
        return list(CONCEPT_VOCABULARY)
    path = Path(path)
    if not path.is_file():
        raise DataError(f"vocabulary file not found: {path}")
    words = [w.strip() for w in path.read_text(encoding="utf-8").splitlines()]
    words = [w for w in words if w and not w.startswith("#")]
    if not words:
        raise DataError(f"vocabulary file {path} holds no terms (one term per line)")
    return list(dict.fromkeys(words))  # drop duplicates, keep order


# --------------------------------------------------------------------------------------------------------
# Core: arrays in, arrays out
# --------------------------------------------------------------------------------------------------------


def live_latents(codes: Any) -> np.ndarray:
    """Boolean ``[F]``: latents whose total activation over the rows of ``codes`` ``[N, F]`` is > 0."""
    codes = as_matrix(codes, "codes")
    return codes.sum(axis=0, dtype=np.float64) > 0


def _unit(arr: np.ndarray, name: str) -> np.ndarray:
    arr = arr.astype(np.float64)
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if (norms == 0).any():
        raise DataError(f"{name} has an all-zero row ({int(np.flatnonzero(norms[:, 0] == 0)[0])}); it has no direction")
    return arr / norms


def text_latent_similarity(decoder_dirs: Any, text_embeddings: Any) -> np.ndarray:
    """Cosine ``[T, F]`` between text embeddings ``[T, D]`` and dictionary directions ``[F, D]``."""
    dirs = as_matrix(decoder_dirs, "decoder_dirs")
    text = np.asarray(text_embeddings)
    text = as_matrix(text.reshape(1, -1) if text.ndim == 1 else text, "text_embeddings", dirs.shape[1],
                     what="columns (the SAE's input dimension)")
    return _unit(text, "text_embeddings") @ _unit(dirs, "decoder_dirs").T


def top_activating(codes: Any, latent: int, k: int = 5) -> list[dict[str, Any]]:
    """The ``k`` rows where ``latent`` fires most, highest first (ties: lower row first); rows with 0 skipped."""
    codes = as_matrix(codes, "codes")
    if not 0 <= int(latent) < codes.shape[1]:
        raise DataError(f"latent {latent} is out of range 0..{codes.shape[1] - 1}")
    if int(k) < 1:
        raise DataError(f"the number of images must be >= 1, got {k}")
    col = np.asarray(codes[:, int(latent)], dtype=np.float64)
    order = np.argsort(-col, kind="stable")[: int(k)]
    return [{"row": int(i), "activation": float(col[i])} for i in order if col[i] > 0]


def retrieve_concept(
    decoder_dirs: Any, codes: Any, text_embedding: Any, top_latents: int = 20, n_images: int = 5,
    text: str | None = None,
) -> dict[str, Any]:
    """Reference concept retrieval for one text embedding.

    Cosine to every dictionary direction, dead latents (no activation on ``codes``) masked, the ``top_latents``
    most similar live latents listed, the best one's ``n_images`` top-activating rows returned. Returns
    ``{"text", "latent", "cosine", "candidates": [{"latent", "cosine"}], "images": [{"row", "activation"}]}``.
    """
    dirs = as_matrix(decoder_dirs, "decoder_dirs")
    codes = as_matrix(codes, "codes", dirs.shape[0], what="columns (the SAE's number of latents)")
    sim = text_latent_similarity(dirs, text_embedding)
    if sim.shape[0] != 1:
        raise DataError(f"retrieve_concept takes one text embedding, got {sim.shape[0]}")
    sim = sim[0]
    live = np.flatnonzero(live_latents(codes))
    if len(live) == 0:
        raise DataError("no SAE latent fires on these codes (all latents dead); retrieval needs a live latent")
    order = live[np.argsort(-sim[live], kind="stable")][: max(1, int(top_latents))]
    best = int(order[0])
    return {
        "text": text,
        "latent": best,
        "cosine": float(sim[best]),
        "candidates": [{"latent": int(j), "cosine": float(sim[j])} for j in order],
        "images": top_activating(codes, best, n_images),
    }


def name_latents(
    decoder_dirs: Any, vocab_embeddings: Any, vocabulary: Sequence[str], latents: Any = None
) -> list[dict[str, Any]]:
    """Name each latent by the vocabulary term with the highest cosine to its dictionary direction.

    ``latents``: indices or a boolean mask (default all; pass ``live_latents(codes)`` for the live ones).
    Returns, in latent order, ``{"latent", "name", "cosine", "runner_up", "runner_up_cosine"}``.
    """
    dirs = as_matrix(decoder_dirs, "decoder_dirs")
    vocab = list(vocabulary)
    emb = as_matrix(vocab_embeddings, "vocab_embeddings", dirs.shape[1], what="columns (the SAE's input dimension)")
    if len(vocab) != emb.shape[0]:
        raise DataError(f"{len(vocab)} vocabulary terms for {emb.shape[0]} embeddings")
    if latents is None:
        idx = np.arange(dirs.shape[0])
    else:
        arr = np.asarray(latents)
        idx = np.flatnonzero(arr) if arr.dtype == bool else np.unique(arr.astype(np.int64))
    if len(idx) and (idx.min() < 0 or idx.max() >= dirs.shape[0]):
        raise DataError(f"latent indices must lie in 0..{dirs.shape[0] - 1}")
    sim = text_latent_similarity(dirs[idx], emb).T  # [L, V]
    order = np.argsort(-sim, axis=1, kind="stable")
    out = []
    for row, j in enumerate(idx):
        first = int(order[row, 0])
        second = int(order[row, 1]) if sim.shape[1] > 1 else None
        out.append({
            "latent": int(j), "name": vocab[first], "cosine": float(sim[row, first]),
            "runner_up": vocab[second] if second is not None else None,
            "runner_up_cosine": float(sim[row, second]) if second is not None else None,
        })
    return out


# --------------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------------


def _open_square(path: str | Path, size: int):
    from PIL import Image

    from panderm.data.images import open_image

    img = open_image(path)
    return img.resize((size, size), Image.LANCZOS)


def image_grid(
    paths: Sequence[str | Path], out: str | Path, titles: Sequence[str] | None = None,
    colors: Sequence[str] | None = None, suptitle: str = "", size: int = 224,
) -> Path:
    """One row of images resized to ``size`` (LANCZOS), optional per-image titles/colours; saved as PNG."""
    from ...report import subplots

    from panderm.report import save_figure

    n = max(1, len(paths))
    fig, axes = subplots(1, n, figsize=(2.4 * n, 2.8), squeeze=False)
    for i, ax in enumerate(axes[0]):
        ax.axis("off")
        if i < len(paths):
            ax.imshow(_open_square(paths[i], size))
            if titles:
                ax.set_title(str(titles[i]), fontsize=9, color=(colors[i] if colors else "black"))
        elif i == 0:
            ax.text(0.5, 0.5, "no image activates this latent", ha="center", va="center", fontsize=9)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return save_figure(out, fig)


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "-", text.strip()).strip("-").lower()
    return s[:60] or "concept"


# --------------------------------------------------------------------------------------------------------
# File level
# --------------------------------------------------------------------------------------------------------


def _load_codes_and_table(sae_checkpoint, codes_npy, csv, image_col, root, device="cpu", allow_outside_root=False):
    from panderm.data.tables import load_table
    from panderm.tasks.concepts.inputs import load_array
    from panderm.tasks.concepts.sae_files import _load_sae

    model, _ = _load_sae(sae_checkpoint, device)
    table = load_table(csv, image_col, root=root, allow_outside_root=allow_outside_root)
    codes = load_array(codes_npy, "SAE codes", n_rows=len(table.paths), rows_of=f"the CSV {csv}",
                       n_cols=model.n_latents, cols_of=f"the SAE {sae_checkpoint} (its number of latents)")
    return model, table, codes


def _truth(csv: str | Path, col: str | None, n: int) -> np.ndarray | None:
    if col is None:
        return None
    from panderm.data.tables import read_csv, require_columns

    frame = read_csv(csv)
    require_columns(frame, [col], csv, params={col: "truth_col"})
    values = frame[col]
    num = np.asarray(values.map(lambda v: 0 if str(v).strip().lower() in ("0", "absent", "no", "false", "") else 1))
    return num[:n]


def retrieve_run(
    sae_checkpoint: str | Path,
    codes_npy: str | Path,
    csv: str | Path,
    texts: Sequence[str],
    out_dir: str | Path,
    image_col: str = "image_path",
    root: str | Path | None = None,
    truth_col: str | None = None,
    top_latents: int = 20,
    n_images: int = 5,
    model_id: str | None = None,
    encoder: Any = None,
    checkpoint: str | None = None,
    device: str = "cpu",
    allow_random_init: bool = False,
    allow_outside_root: bool = False,
) -> dict[str, Any]:
    """Concept retrieval from files: one grid PNG per text and ``retrieval.json``; returns the JSON content.

    ``codes_npy`` are the SAE codes of the CSV's rows (same order). ``truth_col`` (optional) is a CSV column
    read as present (anything but 0/absent/no/false) or absent; images are then titled "Exists" (green) or
    "Non-Exists" (red), as in the reference dermoscopic notebook.
    """
    from panderm.report import write_json
    from panderm.tasks.concepts.explain_files import encode_concepts
    from panderm.tasks.concepts.sae import decoder_directions

    texts = [str(t) for t in texts]
    if not texts:
        raise DataError("give at least one concept text")
    model, table, codes = _load_codes_and_table(sae_checkpoint, codes_npy, csv, image_col, root,
                                                allow_outside_root=allow_outside_root)
    truth = _truth(csv, truth_col, len(table.paths))
    emb, encoder = encode_concepts(texts, model.d_in, model_id, encoder, checkpoint, device, allow_random_init)
    dirs = decoder_directions(model)
    out = Path(out_dir)
    results = []
    used = set()
    for text, e in zip(texts, emb):
        r = retrieve_concept(dirs, codes, e, top_latents, n_images, text=text)
        for im in r["images"]:
            im["path"] = str(table.paths[im["row"]])
            if truth is not None:
                im["exists"] = bool(truth[im["row"]])
        slug = _slug(text)
        while slug in used:
            slug += "_"
        used.add(slug)
        titles = [f"{'Exists' if im['exists'] else 'Non-Exists'}\n{im['activation']:.3g}" if truth is not None
                  else f"row {im['row']}\n{im['activation']:.3g}" for im in r["images"]]
        colors = ["green" if im.get("exists") else "red" for im in r["images"]] if truth is not None else None
        r["grid"] = str(image_grid([im["path"] for im in r["images"]], out / f"retrieval_{slug}.png", titles, colors,
                                   suptitle=f"{text!r} -> latent {r['latent']} (cosine {r['cosine']:.3f})"))
        results.append(r)
    info = {
        "sae": str(sae_checkpoint), "codes": str(codes_npy), "csv": str(csv), "truth_col": truth_col,
        "model": model_id or getattr(encoder, "model_id", None),
        "random_init": bool(getattr(encoder, "random_init", False)),
        "n_latents": int(model.n_latents), "n_live": int(live_latents(codes).sum()),
        "results": results,
    }
    write_json(out / "retrieval.json", info)
    return info


# --------------------------------------------------------------------------------------------------------
# Global explanation per class (2_global_concept_viz_binary-class.py)
# --------------------------------------------------------------------------------------------------------


def class_importance(features: Any, labels: Any, topk: int = 10) -> dict[str, dict[str, np.ndarray]]:
    """Per class: mean of the centred features and its top-k entries by |mean| (ties: lower index first).

    Returns ``{str(class): {"top_indices" [k] int64, "top_values" [k] float (signed means),
    "mean_activations" [F] float}}``, classes in sorted order.
    """
    X = as_matrix(features, "features").astype(np.float64)
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != X.shape[0]:
        raise DataError(f"{len(y)} labels for {X.shape[0]} feature rows; they must match one to one")
    if int(topk) < 1:
        raise DataError(f"the number of latents per class must be >= 1, got {topk}", param="topk")
    k = min(int(topk), X.shape[1])
    Xc = X - X.mean(axis=0, keepdims=True)
    out = {}
    for c in np.unique(y):
        m = Xc[y == c].mean(axis=0)
        idx = np.argsort(-np.abs(m), kind="stable")[:k]
        out[str(c.item() if hasattr(c, "item") else c)] = {
            "top_indices": idx.astype(np.int64), "top_values": m[idx], "mean_activations": m,
        }
    return out


def save_class_importance(result: dict[str, dict[str, np.ndarray]], out_dir: str | Path,
                          extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``class_importance.json`` (top indices/values per class) and ``class_importance.npz``.

    The ``.npz`` holds, for class number ``i`` (the JSON's ``classes`` order), ``class{i}_top_indices``,
    ``class{i}_top_values`` and ``class{i}_mean_activations``; read it with ``np.load(..., allow_pickle=False)``
    or :func:`load_class_importance`.
    """
    from panderm.report import atomic_path, write_json

    out = Path(out_dir)
    classes = list(result)
    arrays = {}
    for i, c in enumerate(classes):
        for key, value in result[c].items():
            arrays[f"class{i}_{key}"] = np.asarray(value)
    npz = out / "class_importance.npz"
    with atomic_path(npz, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    data = {
        **(extra or {}),
        "classes": classes,
        "arrays": str(npz.name),
        "per_class": {c: {"top_indices": result[c]["top_indices"], "top_values": result[c]["top_values"]}
                      for c in classes},
    }
    js = write_json(out / "class_importance.json", data)
    return {"json": js, "npz": npz}


def load_class_importance(out_dir: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """Read what :func:`save_class_importance` wrote (no pickle), in the same structure as :func:`class_importance`."""
    import json

    out = Path(out_dir)
    meta = json.loads((out / "class_importance.json").read_text(encoding="utf-8"))
    with np.load(out / "class_importance.npz", allow_pickle=False) as z:
        return {c: {key: z[f"class{i}_{key}"] for key in ("top_indices", "top_values", "mean_activations")}
                for i, c in enumerate(meta["classes"])}
