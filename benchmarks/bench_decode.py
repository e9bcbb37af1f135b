"""Image loading paths for a 224 px model: full decode vs PIL `draft` vs pre-resized copies — speed and effect.

Paths (the model's own preprocessing runs after each: Resize(224, bicubic) → CenterCrop → normalise):
  full     full-size JPEG decode (the default)
  draft    `extract_features(draft=224)`: the JPEG decoder's DCT scaling to the smallest 1/2, 1/4, 1/8 size whose
           short side stays ≥ 224
  pre448   copies written by `panderm preresize --size 448` (the default), then a full decode of the copies
  pre224   copies at `--size 224` (the model's input size: a second resampling right at the input size)

For each path and DataLoader worker count (0 and the CPU-count default): images/s of the loader alone (decode +
preprocess, no model) and end to end (`extract_features`, cold, no cache) with a tiny 224 px model and, with
`--vit`, open_clip ViT-B-16 (random weights); ratios to the full path are from the same run. Effect: max / mean
|Δ| and cosine similarity of the embeddings vs the full path, zero-shot argmax agreement (PAD-6, HAM-7 sample
benchmarks) and a linear probe's test accuracy / balanced accuracy (PAD, HAM sample splits) per path.

Scenarios: `bundled` = the real sample images as shipped (HAM10000, PAD-UFES-20, PH2; long side ≤ 256 px, so
for a 224 px model `draft` cannot reduce and `pre448` copies them unchanged); `--upscale F` adds `upscaled×F`,
the same real images enlarged F× (Lanczos, JPEG q90) to stand in for full-resolution originals: their decode
cost is realistic, their fine detail is not (it is interpolated).

    python benchmarks/bench_decode.py                       # tiny model, bundled + upscaled×3
    python benchmarks/bench_decode.py --vit --vit-images 48 # + ViT-B-16 on a subset
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from panderm.data.benchmarks import BENCHMARKS  # noqa: E402
from panderm.features import _loader, default_workers, extract_features  # noqa: E402
from panderm.models import load_encoder  # noqa: E402
from panderm.models.demo import write_openclip_dir  # noqa: E402
from panderm.preresize import preresize  # noqa: E402
from panderm.report import format_table  # noqa: E402

SAMPLE = REPO / "data" / "sample"
SETS = {"HAM": "ham10000_sample/ham10000_sample.csv", "PAD": "pad_ufes20_sample/pad_ufes20_sample.csv",
        "PH2": "ph2/ph2.csv"}
ZS = {"PAD": "PAD-6", "HAM": "HAM-7"}
TINY_224 = {"embed_dim": 64,
            "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 32},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}


def sample_frame() -> pd.DataFrame:
    """Every sample image: `rel` (relative to data/sample), dataset, label, split."""
    parts = []
    for name, csv in SETS.items():
        f = pd.read_csv(SAMPLE / csv)
        folder = Path(csv).parent
        parts.append(pd.DataFrame({"image_path": [str(folder / p) for p in f["image_path"]], "set": name,
                                   "label": f["label"], "split": f["split"]}))
    return pd.concat(parts, ignore_index=True)


def upscale(frame: pd.DataFrame, dest: Path, factor: int) -> float:
    t0 = time.perf_counter()
    for rel in frame["image_path"]:
        with Image.open(SAMPLE / rel) as img:
            big = img.convert("RGB").resize((img.width * factor, img.height * factor), Image.Resampling.LANCZOS)
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        big.save(dest / rel, quality=90)
    return time.perf_counter() - t0


def _cpu() -> float:
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime  # DataLoader workers are joined: counted


def timed(fn) -> tuple[float, float]:
    """(wall s, CPU s of this process and its finished children): CPU time is far less sensitive to other load."""
    c0, t0 = _cpu(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, _cpu() - c0


def interleaved_best(jobs: dict, repeats: int) -> dict:
    """One untimed warm-up of every job (page cache, worker start-up code), then `repeats` rounds that run every
    job once in turn; the best time of each. Interleaving spreads a shared machine's load over all jobs alike."""
    for fn in jobs.values():
        fn()
    best = {k: (float("inf"), float("inf")) for k in jobs}
    for _ in range(repeats):
        for k, fn in jobs.items():
            wall, cpu = timed(fn)
            best[k] = (min(best[k][0], wall), min(best[k][1], cpu))
    return best


def loader_job(enc, paths, bs, workers, draft):
    def go():
        for _ in _loader(enc, paths, bs, workers, draft):
            pass
    return go


def e2e_job(enc, paths, bs, workers, draft, sink: dict, key):
    def go():
        sink[key] = np.asarray(extract_features(enc, paths, "embed", batch_size=bs, num_workers=workers, draft=draft,
                                                cache=False).array, dtype=np.float32)
    return go


def deviation(a: np.ndarray, ref: np.ndarray) -> dict:
    d = np.abs(a - ref)
    cos = (a * ref).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(ref, axis=1), 1e-12)
    return {"max |Δ|": float(d.max()), "mean |Δ|": float(d.mean()), "rel |Δ|": float(d.mean() / np.abs(ref).mean()),
            "cos mean": float(cos.mean()), "cos min": float(cos.min())}


def zero_shot_preds(enc, feats: np.ndarray, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    from panderm.tasks.zeroshot import class_embeddings, zero_shot_probs

    out = {}
    for name, bench in ZS.items():
        weights = class_embeddings(enc, BENCHMARKS[bench].classnames, cache=False)
        rows = np.flatnonzero((frame["set"] == name).to_numpy())
        out[name] = zero_shot_probs(feats[rows], weights).argmax(1)
    return out


def probe(feats: np.ndarray, frame: pd.DataFrame) -> dict[str, tuple[float, float, np.ndarray]]:
    from panderm.metrics import accuracy, balanced_accuracy
    from panderm.tasks.linear_probe import CONVERGED_TOL, LogisticRegressionProbe

    out = {}
    for name in ("PAD", "HAM"):
        sel = (frame["set"] == name).to_numpy()
        tr = np.flatnonzero(sel & (frame["split"] != "test").to_numpy())
        te = np.flatnonzero(sel & (frame["split"] == "test").to_numpy())
        y = frame["label"].to_numpy()
        clf = LogisticRegressionProbe(tol=CONVERGED_TOL).fit(feats[tr], y[tr])
        pred = clf.predict(feats[te])
        out[name] = (accuracy(y[te], pred), balanced_accuracy(y[te], pred), pred)
    return out


def run_model(label, enc, frame, roots, args, rows_tp, rows_fx, *, full_workers: bool, with_probe: bool):
    size = enc.preprocess_spec.size
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    dflt = default_workers(enc.device)
    worker_list = sorted({0, dflt}) if full_workers else [dflt]
    for scen, variants in roots.items():
        jobs, sink = {}, {}
        for path_name, (root, draft) in variants.items():
            paths = [root / r for r in frame["image_path"]]
            for w in worker_list:
                jobs[("loader", path_name, w)] = loader_job(enc, paths, args.batch_size, w, draft)
                jobs[("e2e", path_name, w)] = e2e_job(enc, paths, args.batch_size, w, draft, sink, path_name)
            if full_workers and cpus not in worker_list:  # the loader alone with one worker per core
                jobs[("loader", path_name, cpus)] = loader_job(enc, paths, args.batch_size, cpus, draft)
        best = interleaved_best(jobs, args.repeats if full_workers else 1)
        n = len(frame)
        for (what, path_name, w), (secs, cpu) in best.items():
            if what != "loader":
                continue
            er = best.get(("e2e", path_name, w), (None, None))[0]
            base, base_cpu = best[("loader", "full", w)]
            rows_tp.append({"model": label, "scenario": scen, "path": path_name,
                            "workers": f"{w}" + (" (default)" if w == dflt else ""),
                            "loader img/s": f"{n / secs:.1f}", "loader ×full": f"{base / secs:.2f}",
                            "loader CPU ms/img": f"{1000 * cpu / n:.2f}", "CPU ×full": f"{cpu / base_cpu:.2f}",
                            "e2e img/s": "–" if er is None else f"{n / er:.1f}",
                            "e2e ×full": "–" if er is None else f"{best[('e2e', 'full', w)][0] / er:.2f}"})
        feats = {k: sink[k] for k in variants}
        ref = feats["full"]
        zs_ref = zero_shot_preds(enc, ref, frame) if enc.has_text else None
        lp_ref = probe(ref, frame) if with_probe else None
        for path_name, f in feats.items():
            row = {"model": label, "scenario": scen, "path": path_name, "input": size, **{
                k: (f"{v:.2e}" if "Δ" in k else f"{v:.6f}") for k, v in deviation(f, ref).items()}}
            if zs_ref is not None:
                zs = zero_shot_preds(enc, f, frame)
                for name in zs:
                    row[f"zs argmax = full ({name})"] = f"{int((zs[name] == zs_ref[name]).sum())}/{len(zs[name])}"
            if lp_ref is not None:
                lp = probe(f, frame)
                for name, (acc, bacc, pred) in lp.items():
                    row[f"LP {name} acc / bacc"] = f"{acc:.3f} / {bacc:.3f}"
                    row[f"LP {name} pred = full"] = f"{int((pred == lp_ref[name][2]).sum())}/{len(pred)}"
            rows_fx.append(row)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--upscale", type=int, default=3, help="also run on the real images enlarged F× (0: skip)")
    p.add_argument("--repeats", type=int, default=3, help="best of N interleaved timings (tiny model)")
    p.add_argument("--vit", action="store_true", help="also open_clip ViT-B-16 with random weights (slow on CPU)")
    p.add_argument("--vit-images", type=int, default=48, help="images for ViT-B-16 (a stratified subset)")
    p.add_argument("--json", default=None)
    p.add_argument("--markdown", default=None, help="write the tables as markdown to this file")
    args = p.parse_args()
    torch.manual_seed(0)
    frame = sample_frame()
    tmp = Path(tempfile.mkdtemp(prefix="bench-decode-"))
    atexit.register(shutil.rmtree, tmp, True)  # the copies run to hundreds of MB
    combined = tmp / "all.csv"
    frame.to_csv(combined, index=False)
    prep = []
    sources = {"bundled": SAMPLE}
    if args.upscale and args.upscale > 1:
        big = tmp / f"up{args.upscale}"
        secs = upscale(frame, big, args.upscale)
        sources[f"upscaled×{args.upscale}"] = big
        mb = sum((big / r).stat().st_size for r in frame["image_path"]) / 1e6
        prep.append({"step": f"make upscaled×{args.upscale} copies (benchmark setup)", "images": len(frame),
                     "seconds": f"{secs:.1f}", "MB": f"{mb:.1f}"})
    roots = {}
    for scen, src in sources.items():
        variants = {"full": (src, None), "draft": (src, 224)}
        for n in (448, 224):
            out = tmp / f"{scen}-pre{n}"
            t0 = time.perf_counter()
            s = preresize(combined, "image_path", out, root=src, size=n)
            prep.append({"step": f"preresize --size {n} ({scen})", "images": s.n, "seconds": f"{time.perf_counter() - t0:.1f}",
                         "MB": f"{s.bytes_before / 1e6:.1f} → {s.bytes_after / 1e6:.1f}",
                         "resized / copied": f"{s.resized} / {s.copied}"})
            variants[f"pre{n}"] = (out, None)
        roots[scen] = variants

    rows_tp, rows_fx = [], []
    tiny_dir = write_openclip_dir(tmp / "tiny224", TINY_224, seed=0)
    tiny = load_encoder(f"local-dir:{tiny_dir}", allow_random_init=True)
    run_model("tiny-224 (random)", tiny, frame, roots, args, rows_tp, rows_fx, full_workers=True, with_probe=True)
    print(format_table(rows_tp), flush=True)  # early, in case the slow ViT part is interrupted
    if args.vit:
        vit = load_encoder("ViT-B-16", allow_random_init=True)
        per_set = max(1, args.vit_images // 3)
        sub = pd.concat([g.iloc[np.unique(np.linspace(0, len(g) - 1, per_set).round().astype(int))]
                         for _, g in frame.groupby("set", sort=False)], ignore_index=True)
        run_model("ViT-B-16 (random)", vit, sub, roots, args, rows_tp, rows_fx, full_workers=False, with_probe=False)

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    footer = (f"cpu: {cpus} cores (shared machine, load average {load[0]:.1f} at the end), torch threads "
              f"{torch.get_num_threads()}, torch {torch.__version__}, PIL {Image.__version__}, batch {args.batch_size}, "
              f"{len(frame)} images; RANDOM WEIGHTS: zero-shot and linear-probe numbers only compare paths, the "
              "feature deviation is the meaningful measure")
    print(format_table(prep))
    print()
    print(format_table(rows_tp))
    print()
    print(format_table(rows_fx))
    print(footer)
    if args.markdown:
        Path(args.markdown).write_text("\n\n".join(_md(t) for t in (prep, rows_tp, rows_fx)) + "\n\n" + footer + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"prep": prep, "throughput": rows_tp, "effect": rows_fx,
                                               "footer": footer}, indent=2))


def _md(rows: list[dict]) -> str:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
