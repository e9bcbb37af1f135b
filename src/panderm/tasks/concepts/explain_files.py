"""Global explanation on files: name SAE latents by matching concept words (the model's text encoder) to the
dictionary directions of latents the CBM uses (the reference's global-explanation notebooks).
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
from panderm.report import write_csv, write_json
from panderm.tasks.concepts.inputs import load_array
from panderm.tasks.concepts.sae_files import _load_sae

# The name the explanation's warnings have always been logged under.
log = logging.getLogger("panderm.tasks.concepts.run")

#: Concept words of the reference's global-explanation notebooks (typos kept: they are the reference's prompts).
REFERENCE_CONCEPTS = ["asymmetry", "irregular", "erosion", "black", "blue", "white ", "brown", "mutiple colors",
                      "tiny", "regular"]


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
        raise DataError("no concept words to match; give some, or none at all for the reference's ten",
                        param="concepts")
    if n_nonzero == 0:
        raise DataError(f"{cbm_weights_npy} has no non-zero weight, so no latent can be named: the CBM's L1 penalty "
                        "removed every latent; refit it with a smaller alpha (its L1 strength)")
    dirs = decoder_directions(model)
    text, encoder = encode_concepts(concepts, model.d_in, model_id, encoder, checkpoint, device, allow_random_init)
    matches = match_concepts(dirs, text, importance != 0, words=list(concepts), allow_unmatched=True)
    left = Counter(concepts)
    left.subtract(m["word"] for m in matches)
    unmatched = [word for word in dict.fromkeys(concepts) for _ in range(max(left[word], 0))]
    if unmatched:
        log.warning("warning: %s has %d non-zero weight(s) for %d concepts: matched the %d with the largest total "
                    "cosine, left out %s; for more, refit the CBM with a smaller alpha or give fewer concepts",
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
