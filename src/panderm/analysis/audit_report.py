"""The audit's files: audit.md, audit.html (self-contained: thumbnails inlined as base64 PNG), audit.json,
duplicates.csv and leakage.csv, each written atomically."""
from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

import pandas as pd

from ..data.images import open_image
from ..errors import DataError
from ..report import atomic_path, write_csv, write_json

THUMB = 160  # px, the longer side of each thumbnail in the HTML


def summary_rows(result) -> list[dict]:
    """The short table the command prints: one finding per line with its count."""
    c = result.counts()
    rows = [{"finding": "rows / distinct files", "count": f"{c['rows']} / {c['files']}"},
            {"finding": "exact duplicate pairs", "count": c["exact_duplicate_pairs"]},
            {"finding": "near-duplicate pairs", "count": c["near_duplicate_pairs"]},
            {"finding": "pairs across splits (leakage)", "count": c["cross_split_pairs"]}]
    rows += [{"finding": f"{col} ids in more than one split", "count": n} for col, n in c["group_leaks"].items()]
    rows.append({"finding": "unreadable images", "count": c["unreadable"]})
    return rows


def _md_table(frame: pd.DataFrame, limit: int | None = None) -> str:
    if frame is None or len(frame) == 0:
        return "_none_\n"
    shown = frame if limit is None else frame.head(limit)
    cells = shown.astype(object).where(shown.notna(), "").astype(str)
    esc = lambda v: v.replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(esc(str(c)) for c in cells.columns) + " |", "|" + "---|" * len(cells.columns)]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in cells.itertuples(index=False)]
    more = f"\n… and {len(frame) - limit} more (see the CSV files)\n" if limit is not None and len(frame) > limit else ""
    return "\n".join(lines) + "\n" + more


def _stats_lines(stats: dict) -> list[str]:
    if not stats.get("files"):
        return ["- no readable image"]
    w, h = stats["width"], stats["height"]
    return [f"- readable files: {stats['files']}",
            f"- width: min {w['min']}, median {w['median']:g}, max {w['max']}",
            f"- height: min {h['min']}, median {h['median']:g}, max {h['max']}",
            "- formats: " + ", ".join(f"{k} {v}" for k, v in stats["formats"].items()),
            "- modes: " + ", ".join(f"{k} {v}" for k, v in stats["modes"].items()),
            f"- distinct sizes: {stats['distinct_sizes']} (most common: "
            + ", ".join(f"{k} ×{v}" for k, v in stats["common_sizes"].items()) + ")"]


def markdown(result, top: int = 50) -> str:
    thr = f"perceptual-hash distance ≤ {result.phash_threshold} of 143 bits (flip-robust)"
    if result.embed_threshold is not None:
        thr += f"; embedding cosine ≥ {result.embed_threshold:g} ({result.model})"
    cols = result.columns
    parts = [f"# Dataset audit: {result.csv}", "",
             f"Images from column `{cols['image']}` under `{cols['root']}`; splits `{cols['split']}`, labels "
             f"`{cols['label']}`, groups {', '.join(f'`{g}`' for g in cols['groups']) or 'none'}.", "",
             f"Near-duplicates: {thr}.", "", "## Summary", "",
             _md_table(pd.DataFrame(summary_rows(result))),
             "## Leakage across splits", "", _md_table(result.leakage, top),
             "## Duplicate and near-duplicate pairs (worst first)", "", _md_table(result.duplicates, top),
             "## Class balance per split", "", _md_table(result.class_balance.reset_index()),
             "## Images", "", *_stats_lines(result.image_stats), "",
             "## Unreadable images", "", _md_table(result.unreadable, top)]
    return "\n".join(parts)


def thumbnail_uri(path: str | os.PathLike) -> str | None:
    """A data: URI holding a small PNG of the image (None when it cannot be opened)."""
    from PIL import Image

    try:
        img = open_image(path, draft=2 * THUMB)
    except DataError:
        return None
    img.thumbnail((THUMB, THUMB), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _html_table(frame: pd.DataFrame, limit: int | None = None) -> str:
    if frame is None or len(frame) == 0:
        return "<p><em>none</em></p>"
    shown = frame if limit is None else frame.head(limit)
    out = shown.astype(object).where(shown.notna(), "").to_html(index=False, escape=True, border=0)
    if limit is not None and len(frame) > limit:
        out += f"<p>… and {len(frame) - limit} more (see the CSV files)</p>"
    return out


def html_report(result, top_pairs: int = 12, top: int = 200) -> str:
    e = html.escape
    cards = []
    for _, p in result.duplicates.head(top_pairs).iterrows():
        imgs = []
        for side in ("a", "b"):
            pos = int(p[f"row_{side}"]) - 2
            uri = thumbnail_uri(result.paths[pos]) if result.paths else None
            pic = f'<img src="{uri}" alt="row {p[f"row_{side}"]}">' if uri else "<span>(cannot be shown)</span>"
            imgs.append(f'<figure>{pic}<figcaption>row {p[f"row_{side}"]} · {e(str(p[f"split_{side}"]))} · '
                        f'label {e(str(p[f"label_{side}"]))}<br>{e(str(p[f"image_{side}"]))}</figcaption></figure>')
        how = [p["kind"]]
        if pd.notna(p["phash_distance"]):
            how.append(f"hash distance {int(p['phash_distance'])}" + (" (mirrored)" if p["flipped"] else ""))
        if pd.notna(p["embed_cosine"]):
            how.append(f"cosine {p['embed_cosine']:.4f}")
        flag = '<b class="leak">LEAK across splits</b> · ' if p["cross_split"] else ""
        cards.append(f'<div class="pair"><div>{flag}{e(" · ".join(how))}</div>{"".join(imgs)}</div>')
    stats = "".join(f"<li>{e(line[2:])}</li>" for line in _stats_lines(result.image_stats))
    style = ("body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:2px 6px}.pair{display:inline-block;border:1px solid #ccc;"
             "margin:6px;padding:6px;vertical-align:top}.pair figure{display:inline-block;margin:4px;width:170px;"
             "font-size:11px;word-break:break-all}.leak{color:#b00}")
    return "\n".join([
        "<!DOCTYPE html>", '<html><head><meta charset="utf-8">', f"<title>Dataset audit: {e(result.csv)}</title>",
        f"<style>{style}</style></head><body>", f"<h1>Dataset audit: {e(result.csv)}</h1>",
        "<h2>Summary</h2>", _html_table(pd.DataFrame(summary_rows(result))),
        f"<h2>Worst pairs ({min(top_pairs, len(result.duplicates))} of {len(result.duplicates)})</h2>",
        "".join(cards) or "<p><em>none</em></p>",
        "<h2>Leakage across splits</h2>", _html_table(result.leakage, top),
        "<h2>Duplicate and near-duplicate pairs</h2>", _html_table(result.duplicates, top),
        "<h2>Class balance per split</h2>", _html_table(result.class_balance.reset_index()),
        f"<h2>Images</h2><ul>{stats}</ul>", "<h2>Unreadable images</h2>", _html_table(result.unreadable, top),
        "</body></html>"])


def write_reports(result, out: str | os.PathLike, top_pairs: int = 12) -> list[Path]:
    """Write the five audit files into the folder `out`; returns their paths."""
    out = Path(out)
    written = []
    for name, text in (("audit.md", markdown(result)), ("audit.html", html_report(result, top_pairs))):
        with atomic_path(out / name) as tmp:
            tmp.write_text(text, encoding="utf-8")
        written.append(out / name)
    written.append(write_json(out / "audit.json", result.to_json()))
    written.append(write_csv(out / "duplicates.csv", result.duplicates))
    written.append(write_csv(out / "leakage.csv", result.leakage))
    return written
