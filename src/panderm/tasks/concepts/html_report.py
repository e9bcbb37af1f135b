"""Static HTML concept report: one card per SAE latent (name, CBM weight, top-activating images).

:func:`build_report` names every live latent by its nearest vocabulary term
(:func:`~panderm.tasks.concepts.retrieve.name_latents`), picks the latents to show (by default those with a
non-zero CBM weight, largest |weight| first, else the live latents by total activation), and writes:

* ``concept_report.html``: a single self-contained file (thumbnails embedded as small base64 JPEGs, inline
  CSS, no script, no network), opens in any browser; all text is HTML-escaped;
* ``latent_names.csv`` / ``latent_names.json``: the name of every live latent (not only the shown ones).

:func:`render_html` is the pure renderer (cards in, HTML string out).
"""
from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from panderm.errors import DataError

__all__ = ["thumbnail_data_uri", "render_html", "select_latents", "build_report"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;background:#fafafa;color:#222}
h1{font-size:1.4em}.meta{color:#555;font-size:.9em;margin-bottom:16px}
.warn{background:#fff3cd;border:1px solid #e0c36b;padding:8px 12px;border-radius:6px;margin-bottom:16px}
.cards{display:flex;flex-wrap:wrap;gap:14px}
.card{background:#fff;border:1px solid #ddd;border-radius:8px;padding:10px 12px;width:min(100%,620px)}
.card h2{font-size:1.05em;margin:0 0 4px 0}.card .stats{font-size:.85em;color:#444;margin-bottom:6px}
.pos{color:#1a7f37}.neg{color:#b42318}
.imgs{display:flex;gap:6px;flex-wrap:wrap}.imgs figure{margin:0;text-align:center;font-size:.75em;color:#555}
.imgs img{width:110px;height:110px;object-fit:cover;border-radius:4px;border:1px solid #ccc}
"""


def thumbnail_data_uri(path: str | Path, size: int = 128, quality: int = 80) -> str:
    """A ``data:image/jpeg;base64,...`` URI of the image at ``path`` shrunk to fit ``size`` × ``size``."""
    from panderm.data.images import open_image

    img = open_image(path).convert("RGB")
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):+.4g}"
    return str(v)


def render_html(cards: Sequence[dict[str, Any]], title: str = "Concept report", meta: Sequence[str] = (),
                warning: str | None = None) -> str:
    """The report as an HTML string.

    Each card: ``latent`` (int), ``name`` (str), ``cosine`` (float, name similarity), ``weight`` (float, list of
    floats per class, or None), ``extra`` (optional str) and ``images`` (list of ``{"src", "caption"}``; ``src``
    is a data URI or a relative path). Every text is escaped; image sources are escaped as attributes.
    """
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{e(title)}</title><style>{_CSS}</style></head><body>", f"<h1>{e(title)}</h1>"]
    if warning:
        parts.append(f'<div class="warn">{e(warning)}</div>')
    if meta:
        parts.append('<div class="meta">' + "<br>".join(e(str(m)) for m in meta) + "</div>")
    parts.append('<div class="cards">')
    for c in cards:
        w = c.get("weight")
        if isinstance(w, (list, tuple)):
            wtxt = ", ".join(_fmt(v) for v in w)
            cls = ""
        else:
            wtxt = _fmt(w)
            cls = "" if w is None else (' class="pos"' if float(w) > 0 else (' class="neg"' if float(w) < 0 else ""))
        parts.append(f'<div class="card" id="latent-{int(c["latent"])}">')
        parts.append(f"<h2>#{int(c['latent'])} &middot; {e(str(c.get('name', '')))}</h2>")
        stats = f"CBM weight: <b{cls}>{e(wtxt)}</b> &middot; name cosine: {e(_fmt(c.get('cosine')))}"
        if c.get("extra"):
            stats += f" &middot; {e(str(c['extra']))}"
        parts.append(f'<div class="stats">{stats}</div><div class="imgs">')
        for im in c.get("images", []):
            cap = e(str(im.get("caption", "")))
            parts.append(f'<figure><img src="{e(str(im["src"]), quote=True)}" alt="{cap}" loading="lazy">'
                         f"<figcaption>{cap}</figcaption></figure>")
        if not c.get("images"):
            parts.append("<em>no image activates this latent</em>")
        parts.append("</div></div>")
    parts.append("</div></body></html>")
    return "\n".join(parts) + "\n"


def select_latents(codes: np.ndarray, weights: np.ndarray | None = None, max_cards: int = 50) -> list[int]:
    """Latents to show: non-zero CBM weight by |weight| (summed over classes) if ``weights``, else the live
    latents by total activation; at most ``max_cards``; ties by latent index."""
    if int(max_cards) < 1:
        raise DataError(f"the number of latent cards must be >= 1, got {max_cards}", param="max_cards")
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64)
        imp = np.abs(w[None, :] if w.ndim == 1 else w).sum(axis=0)
    else:
        imp = np.asarray(codes, dtype=np.float64).sum(axis=0)
    order = np.argsort(-imp, kind="stable")
    return [int(j) for j in order[imp[order] > 0][: int(max_cards)]]


def build_report(
    sae_checkpoint: str | Path,
    codes_npy: str | Path,
    csv: str | Path,
    out_dir: str | Path,
    image_col: str = "image_path",
    root: str | Path | None = None,
    weights_npy: str | Path | None = None,
    vocabulary: Sequence[str] | None = None,
    latents: Sequence[int] | None = None,
    max_cards: int = 50,
    n_images: int = 5,
    thumb_size: int = 128,
    title: str = "SAE concept report",
    model_id: str | None = None,
    encoder: Any = None,
    checkpoint: str | None = None,
    device: str = "cpu",
    allow_random_init: bool = False,
    allow_outside_root: bool = False,
) -> dict[str, Any]:
    """Name the live latents, write ``concept_report.html`` and ``latent_names.{csv,json}``; return a summary.

    ``codes_npy``: SAE codes of the CSV's rows (same order). ``weights_npy``: CBM weights ``[F]`` or
    ``[C, F]`` (e.g. ``mean_classifier_weights.npy``). ``latents`` overrides the selection.
    """
    import pandas as pd

    from panderm.report import atomic_path, write_csv, write_json
    from panderm.tasks.concepts.retrieve import (
        _load_codes_and_table,
        live_latents,
        load_vocabulary,
        name_latents,
        top_activating,
    )
    from panderm.tasks.concepts.explain_files import _weights, encode_concepts
    from panderm.tasks.concepts.sae import decoder_directions

    if int(n_images) < 1:
        raise DataError(f"the number of images per latent must be >= 1, got {n_images}", param="n_images")
    model, table, codes = _load_codes_and_table(sae_checkpoint, codes_npy, csv, image_col, root,
                                                allow_outside_root=allow_outside_root)
    w = _weights(weights_npy, model.n_latents, sae_checkpoint) if weights_npy is not None else None
    vocab = list(vocabulary) if vocabulary is not None else load_vocabulary()
    live = live_latents(codes)
    if not live.any():
        raise DataError(f"no SAE latent fires on {codes_npy} (all latents dead); nothing to report")
    dirs = decoder_directions(model)
    emb, encoder = encode_concepts(vocab, model.d_in, model_id, encoder, checkpoint, device, allow_random_init)
    names = name_latents(dirs, emb, vocab, live)
    by_latent = {n["latent"]: n for n in names}
    if latents is not None:
        chosen = [int(j) for j in latents]
        bad = [j for j in chosen if not 0 <= j < model.n_latents]
        if bad:
            raise DataError(f"latents {bad} are out of range 0..{model.n_latents - 1}")
    else:
        chosen = select_latents(codes, w, max_cards)
    cards = []
    for j in chosen:
        n = by_latent.get(j) or name_latents(dirs, emb, vocab, [j])[0]
        weight = None
        if w is not None:
            w2 = w[None, :] if w.ndim == 1 else w
            weight = float(w2[0, j]) if w2.shape[0] == 1 else [float(v) for v in w2[:, j]]
        images = []
        for im in top_activating(codes, j, n_images):
            path = table.paths[im["row"]]
            images.append({"src": thumbnail_data_uri(path, thumb_size), "row": im["row"], "path": str(path),
                           "activation": im["activation"],
                           "caption": f"{Path(path).name} ({im['activation']:.3g})"})
        cards.append({"latent": j, "name": n["name"], "cosine": n["cosine"], "weight": weight,
                      "extra": f"next: {n['runner_up']}" if n.get("runner_up") else "",
                      "fires_on": int((codes[:, j] > 0).sum()), "images": images})
    random_init = bool(getattr(encoder, "random_init", False))
    meta = [f"SAE: {sae_checkpoint} ({model.n_latents} latents, {int(live.sum())} live on {len(codes)} images)",
            f"codes: {codes_npy}", f"images: {csv}",
            f"CBM weights: {weights_npy}" if weights_npy is not None else "no CBM weights given",
            f"names: nearest of {len(vocab)} vocabulary terms by cosine in the joint space "
            f"(model {model_id or getattr(encoder, 'model_id', '?')})"]
    warning = ("RANDOM WEIGHTS: the names come from an untrained text encoder and mean nothing"
               if random_init else None)
    out = Path(out_dir)
    page = render_html(cards, title, meta, warning)
    report = out / "concept_report.html"
    with atomic_path(report, suffix=".html") as tmp:
        tmp.write_text(page, encoding="utf-8")
    write_csv(out / "latent_names.csv", pd.DataFrame(names))
    write_json(out / "latent_names.json", {"vocabulary": vocab, "names": names})
    summary = {
        "report": str(report), "names_csv": str(out / "latent_names.csv"), "n_latents": int(model.n_latents),
        "n_live": int(live.sum()), "n_cards": len(cards), "random_init": random_init,
        "cards": [{k: v for k, v in c.items() if k != "images"} | {"images": [
            {k: v for k, v in im.items() if k != "src"} for im in c["images"]]} for c in cards],
    }
    write_json(out / "concept_report.json", summary)
    return summary
