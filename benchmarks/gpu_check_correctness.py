"""Correctness half of benchmarks/gpu_check.py: each task's smallest run on the device against the same run on CPU.

Every run goes through the package's own entry points in-process (`panderm.cli.main`, and `src/main.py` for the
reference zero-shot door) on the bundled sample, with random-weight tiny models built here (no download). A check
compares what the two runs wrote (results.json numbers, prediction CSVs, feature arrays) and is PASS when every
measured deviation is within its tolerance, FAIL otherwise, ERROR when a run did not finish.
"""
from __future__ import annotations

import importlib.util
import json
import math
import time
import traceback
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
ZS = SAMPLE / "zero-shot-classification"

# Tolerances. The device runs use reduced precision (autocast) where the task defaults to it, the reference runs
# float32 on CPU. Values were chosen from the deviations CPU autocast gives on these tiny models (bf16: 1 - cos
# ~2e-5, max|Δ|/max|ref| ~8e-3; fp16: ~1e-7 and ~1e-3; zero-shot amp vs fp32: max|Δp| ~4e-3) with a margin of
# 5-50x; a wrong normalisation, wrong weights or misordered rows moves these numbers by 0.1 or more.
FEATURE_TOL = {
    # fp32 on CUDA is not bit-equal to CPU: cuDNN convolutions run in TF32 by default (torch's default).
    "fp32": {"cos": 1e-5, "rel": 5e-3},
    "bf16": {"cos": 1e-3, "rel": 5e-2},
    "fp16": {"cos": 1e-4, "rel": 1e-2},
}
TOL = {
    "zeroshot": {"prob": 0.02, "metric": 0.05},
    "retrieval": {"recall": 0.05, "rank_rel": 0.05, "loss_rel": 0.01, "rank_mean_frac": 0.01},
    "linear_probe": {"prob": 0.02, "loss_rel": 0.01},
    # One AMP epoch: the first step's loss only sees forward numerics; later steps also see the GradScaler,
    # which skips a step whose float16 gradients overflow (CPU float32 never skips).
    "finetune": {"first_loss_rel": 5e-3, "loss_rel": 0.05, "prob": 0.05},
    "multimodal": {"first_loss_rel": 5e-3, "loss_rel": 0.05, "prob": 0.05},
    "sae": {"loss_rel": 1e-3, "fvu": 1e-3, "codes_rel": 1e-3},
    # Dropout2d in the head draws its masks from the device's generator, so the epoch's loss differs a little.
    "segmentation": {"loss_rel": 0.05, "overlap": 0.05},
}

# Rows per split of the bundled CSVs. quick: the smallest runs that still have every class in every split.
QUICK_ROWS = {"ph2": {"train": 8, "val": 4, "test": 4}, "pad": {"train": 12, "val": 6, "test": 6},
              "ham": {"train": 14, "val": 7, "test": 7}, "seg": {"train": 8, "val": 4, "test": 4},
              "zs_pad": {"*": 24}, "zs_ph2": {"*": 16}}
# Full-size masks make segmentation scoring slow: a subset in both modes.
FULL_ROWS = {"seg": {"train": 16, "val": 8, "test": 8}}


@dataclass
class Ctx:
    device: torch.device
    quick: bool
    work: Path
    logs: Path
    workers: int


# --------------------------------------------------------------------------- data and models
def _take(frame: pd.DataFrame, rows: dict | None) -> pd.DataFrame:
    """The first rows of each split, cycling through the labels so every class appears."""
    if rows is None:
        return frame
    parts = []
    for split, n in rows.items():
        part = frame if split == "*" else frame[frame["split"] == split]
        order = part.assign(_turn=part.groupby("label").cumcount()).sort_values(["_turn", "label"], kind="stable")
        parts.append(order.drop(columns="_turn").head(n))
    return pd.concat(parts)


def _write_csv(src: Path, dst: Path, rows: dict | None, root: Path, path_cols=("image_path",)) -> Path:
    frame = _take(pd.read_csv(src), rows)
    for col in path_cols:
        frame[col] = [str(root / p) for p in frame[col]]  # absolute: the runs' folders are elsewhere
    dst.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(dst, index=False)
    return dst


def prepare_data(ctx: Ctx) -> dict[str, Path]:
    d = ctx.work / "data"
    rows = QUICK_ROWS if ctx.quick else FULL_ROWS
    return {
        "ph2": _write_csv(SAMPLE / "ph2/ph2.csv", d / "ph2.csv", rows.get("ph2"), SAMPLE / "ph2"),
        "pad": _write_csv(SAMPLE / "pad_ufes20_sample/pad_ufes20_sample.csv", d / "pad.csv", rows.get("pad"),
                          SAMPLE / "pad_ufes20_sample"),
        "ham": _write_csv(SAMPLE / "ham10000_sample/ham10000_sample.csv", d / "ham.csv", rows.get("ham"),
                          SAMPLE / "ham10000_sample"),
        "seg": _write_csv(SAMPLE / "ph2/ph2.csv", d / "ph2_seg.csv", rows.get("seg"), SAMPLE / "ph2",
                          ("image_path", "mask_path")),
        "zs_pad": _write_csv(ZS / "pad-zero-shot-test.csv", d / "zs_pad.csv", rows.get("zs_pad"), REPO),
        "zs_ph2": _write_csv(ZS / "ph2-2-zero-shot-test.csv", d / "zs_ph2.csv", rows.get("zs_ph2"), REPO),
    }


def write_tiny_cae(path: Path, image_size: int, patch: int, seed: int) -> Path:
    """A PanDerm-v1-layout .pth (`encoder.` keys) of a 2-block, 64-wide CAE tower with seeded random weights."""
    from panderm.models.cae_vit import CAEConfig, CAEVisionTower

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tower = CAEVisionTower(CAEConfig(width=64, depth=2, heads=2, patch_size=patch, image_size=image_size,
                                         mlp_hidden=256, head_dim_out=None), pooling="cls")
        # Zero biases and unit norms would hide a parameter that is dropped or misplaced on the way to the device.
        with torch.no_grad():
            for name, p in tower.named_parameters():
                if not name.endswith("pos_embed"):
                    p.add_(0.05 * torch.randn(p.shape))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({f"encoder.{k}": v for k, v in tower.state_dict().items()}, path)
    return path


# --------------------------------------------------------------------------- running the entry points
_door = None


def _door_main():
    global _door
    if _door is None:
        spec = importlib.util.spec_from_file_location("panderm_gpu_check_main_door", REPO / "src" / "main.py")
        _door = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(_door)
    return _door.main


def run_entry(ctx: Ctx, name: str, argv: list, door: bool = False) -> dict:
    """One in-process run; its output goes to logs/<name>.log. rc, seconds and the device's peak memory."""
    from panderm.cli import main

    argv = [str(a) for a in argv]
    log = ctx.logs / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    on_cuda = ctx.device.type == "cuda" and "--device" in argv and argv[argv.index("--device") + 1] != "cpu"
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(ctx.device)
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as fh, redirect_stdout(fh), redirect_stderr(fh):
        print("argv:", " ".join(argv), flush=True)
        try:
            rc = (_door_main() if door else main)(argv)
        except SystemExit as exc:  # argparse rejects a flag
            rc = exc.code if isinstance(exc.code, int) else 2
        except Exception:  # noqa: BLE001 - recorded as the check's error, the other checks still run
            traceback.print_exc()
            rc = 1
    seconds = time.perf_counter() - start
    peak = int(torch.cuda.max_memory_allocated(ctx.device)) if on_cuda else None
    return {"rc": rc, "seconds": round(seconds, 2), "peak_mem_bytes": peak, "log": f"logs/{name}.log"}


def _tail(ctx: Ctx, run: dict, n: int = 3) -> str:
    lines = (ctx.logs.parent / run["log"]).read_text(encoding="utf-8", errors="replace").strip().splitlines()
    return " | ".join(lines[-n:])


def _measure(what: str, deviation: float, tolerance: float, device=None, reference=None) -> dict:
    deviation = float(deviation)
    return {"what": what, "device": _plain(device), "reference": _plain(reference), "deviation": deviation,
            "tolerance": float(tolerance), "ok": bool(math.isfinite(deviation) and deviation <= tolerance)}


def _plain(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return v


def _rel(a: float, b: float) -> float:
    return abs(float(a) - float(b)) / max(abs(float(b)), 1e-12)


def _check(name: str, task: str, device_run: str, dev: dict, ref: dict, ctx: Ctx, measure_fn, **extra) -> dict:
    record = {"name": name, "task": task, "device_run": device_run, "reference_run": "cpu fp32", **extra,
              "seconds": {"device": dev["seconds"], "reference": ref["seconds"]},
              "peak_mem_bytes": dev["peak_mem_bytes"], "logs": [dev["log"], ref["log"]], "measures": []}
    failed = [r for r in (dev, ref) if r["rc"] != 0]
    if failed:
        record.update(status="ERROR", error=f"{failed[0]['log']} (exit {failed[0]['rc']}): {_tail(ctx, failed[0])}")
        return record
    try:
        record["measures"] = measure_fn()
    except Exception as exc:  # noqa: BLE001 - an output that cannot be read or compared fails the check
        record.update(status="ERROR", error=f"comparing the outputs: {type(exc).__name__}: {exc}")
        return record
    record["status"] = "PASS" if all(m["ok"] for m in record["measures"]) else "FAIL"
    return record


def _pair(ctx: Ctx, name: str, argv_of, precision: str, door: bool = False, ref_precision: str = "fp32"):
    """The device run and the CPU float32 reference of the same command; `argv_of(device, precision, out)`."""
    out_dev, out_ref = ctx.work / "runs" / f"{name}-device", ctx.work / "runs" / f"{name}-cpu"
    dev = run_entry(ctx, f"{name}-device", argv_of(str(ctx.device), precision, out_dev), door)
    ref = run_entry(ctx, f"{name}-cpu", argv_of("cpu", ref_precision, out_ref), door)
    return dev, ref, out_dev, out_ref


def prob_measures(dev: pd.DataFrame, ref: pd.DataFrame, prefix: str, tol: float, keys: list[str], what: str = ""):
    """Same rows in the same order, probabilities within `tol`, and no changed argmax where the reference's
    top-two margin is at least 2 * tol (a near-tie may flip under reduced precision; a clear winner may not)."""
    cols = [c for c in ref.columns if c.startswith(prefix)]
    same_rows = len(dev) == len(ref) and all((dev[k].astype(str).to_numpy() == ref[k].astype(str).to_numpy()).all()
                                             for k in keys)
    out = [_measure(f"{what}rows differing from the reference (count, order, {', '.join(keys)})",
                    0 if same_rows else max(1, abs(len(dev) - len(ref))), 0)]
    if not same_rows:
        return out
    p, q = dev[cols].to_numpy(np.float64), ref[cols].to_numpy(np.float64)
    top2 = np.sort(q, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) >= 2 * tol
    flips = int(((p.argmax(1) != q.argmax(1)) & clear).sum())
    out.append(_measure(f"{what}max |Δ probability|", np.abs(p - q).max(), tol))
    out.append(_measure(f"{what}argmax changes where the reference margin >= {2 * tol:g} (of {int(clear.sum())})",
                        flips, 0))
    return out


# --------------------------------------------------------------------------- the checks
def check_features(ctx: Ctx, data: dict, models: dict) -> tuple[list[dict], dict[str, Path]]:
    from panderm.features import effective_precision

    checks, refs = [], {}
    for key, (model_args, desc) in models.items():
        def argv(device, precision, out, model_args=model_args):
            return ["-q", "features", *model_args, "--csv", data["ph2"], "--device", device, "--precision", precision,
                    "--no-cache", "--workers", ctx.workers, "--out", Path(out).with_suffix(".npy")]

        ref_out = ctx.work / "runs" / f"features-{key}-cpu"
        ref = run_entry(ctx, f"features-{key}-cpu", argv("cpu", "fp32", ref_out))
        refs[key] = ref_out.with_suffix(".npy")
        for precision in ("fp32", "bf16", "fp16"):
            out = ctx.work / "runs" / f"features-{key}-{precision}-device"
            dev = run_entry(ctx, out.name, argv(str(ctx.device), precision, out))
            tol = FEATURE_TOL[precision]

            def measures(out=out, tol=tol):
                a = np.load(out.with_suffix(".npy"), allow_pickle=False).astype(np.float64)
                b = np.load(refs[key], allow_pickle=False).astype(np.float64)
                if a.shape != b.shape:
                    return [_measure(f"shape {list(a.shape)} vs reference {list(b.shape)}", 1, 0)]
                cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
                return [_measure("1 - min cosine(device, cpu) over images", 1 - cos.min(), tol["cos"]),
                        _measure("max |Δ| / max |reference|", np.abs(a - b).max() / np.abs(b).max(), tol["rel"])]

            checks.append(_check(f"features {key} {precision}", "features", f"{ctx.device} {precision}", dev, ref, ctx,
                                 measures, model=desc, images=len(pd.read_csv(data["ph2"])),
                                 effective_precision=effective_precision(ctx.device, precision)))
    return checks, refs


def check_zeroshot_door(ctx: Ctx, data: dict) -> dict:
    tol = TOL["zeroshot"]

    def argv(device, precision, out):
        return ["--zeroshot-eval1", data["zs_pad"], "--zeroshot-eval6", data["zs_ph2"], "--csv-img-key", "image_path",
                "--csv-label-key", "label", "--model", "demo", "--device", device, "--precision", precision,
                "--workers", ctx.workers, "--batch-size", 64, "--bootstrap", 0, "--no-cache", "--logs", out,
                "--name", "run"]

    dev, ref, a, b = _pair(ctx, "zeroshot-door", argv, "amp", door=True)

    def measures():
        out = []
        for ds in ("PAD-6", "PH2-2"):
            da, db = (pd.read_csv(next((x / ds).glob("*.csv"))) for x in (a, b))
            out += prob_measures(da, db, "probability_class_", tol["prob"], ["image_path", "true_label"], f"{ds}: ")
        ma, mb = (json.loads((x / "run" / "checkpoints" / "results.jsonl").read_text().splitlines()[-1])
                  for x in (a, b))
        worst = max(mb, key=lambda k: abs(ma[k] - mb[k]))
        out.append(_measure(f"max |Δ| over results.jsonl metrics (worst: {worst})", abs(ma[worst] - mb[worst]),
                            tol["metric"], ma[worst], mb[worst]))
        return out

    return _check("zero-shot door src/main.py amp", "zeroshot", f"{ctx.device} amp", dev, ref, ctx, measures,
                  model="demo", effective_precision=_effective(ctx, "amp", door=True))


def _effective(ctx: Ctx, precision: str, door: bool = False) -> str:
    from panderm.features import cpu_autocast, effective_precision

    return effective_precision(ctx.device, cpu_autocast(precision) if door else precision)


def check_retrieval(ctx: Ctx, data: dict) -> dict:
    tol = TOL["retrieval"]

    def argv(device, precision, out):
        return ["-q", "retrieval", "--model", "demo", "--csv", data["ph2"], "--caption-col", "concept_text",
                "--device", device, "--precision", precision, "--no-cache", "--bootstrap", 0, "--workers",
                ctx.workers, "--out", out]

    dev, ref, a, b = _pair(ctx, "retrieval", argv, "amp")

    def measures():
        ma, mb = (json.loads((x / "results.json").read_text())["metrics"] for x in (a, b))
        recall = [k for k in mb if "R@" in k or k.endswith("mean_recall")]
        worst = max(recall, key=lambda k: abs(ma[k] - mb[k]))
        ranks = [k for k in mb if k.endswith("_rank")]
        worst_rank = max(ranks, key=lambda k: _rel(ma[k], mb[k]))
        ra, rb = (pd.read_csv(x / "ranks.csv") for x in (a, b))
        rank_cols = [c for c in rb.columns if c.endswith("_rank")]
        moved = float(np.abs(ra[rank_cols].to_numpy(float) - rb[rank_cols].to_numpy(float)).mean())
        n = int(mb["num_samples"])
        return [_measure(f"max |Δ| over recall metrics (worst: {worst})", abs(ma[worst] - mb[worst]), tol["recall"],
                         ma[worst], mb[worst]),
                _measure(f"max relative Δ over mean/median ranks (worst: {worst_rank})",
                         _rel(ma[worst_rank], mb[worst_rank]), tol["rank_rel"], ma[worst_rank], mb[worst_rank]),
                _measure("relative Δ clip_val_loss", _rel(ma["clip_val_loss"], mb["clip_val_loss"]), tol["loss_rel"],
                         ma["clip_val_loss"], mb["clip_val_loss"]),
                _measure(f"mean |Δ rank| per query in ranks.csv, as a fraction of {n} pairs", moved / n,
                         tol["rank_mean_frac"])]

    return _check("retrieval amp", "retrieval", f"{ctx.device} amp", dev, ref, ctx, measures, model="demo",
                  effective_precision=_effective(ctx, "amp"))


def check_linear_probe(ctx: Ctx, data: dict) -> dict:
    tol = TOL["linear_probe"]

    def argv(device, precision, out):
        return ["-q", "linear-probe", "--model", "demo", "--csv", data["pad"], "--device", device, "--precision",
                precision, "--no-cache", "--bootstrap", 0, "--workers", ctx.workers, "--out", out]

    dev, ref, a, b = _pair(ctx, "linear-probe", argv, "amp")

    def measures():
        ra, rb = (json.loads((x / "results.json").read_text())["runs"][0] for x in (a, b))
        pa, pb = (pd.read_csv(next((x / "predictions").glob("*.csv"))) for x in (a, b))
        return [_measure("relative Δ train loss", _rel(ra["train_loss"], rb["train_loss"]), tol["loss_rel"],
                         ra["train_loss"], rb["train_loss"]),
                *prob_measures(pa, pb, "prob_", tol["prob"], ["image_path", "label"], "test predictions: ")]

    return _check("linear probe amp", "linear-probe", f"{ctx.device} amp", dev, ref, ctx, measures, model="demo",
                  effective_precision=_effective(ctx, "amp"))


def _epoch0(folder: Path) -> dict:
    return json.loads((folder / "log.jsonl").read_text().splitlines()[0])


def _training_measures(a: Path, b: Path, tol: dict, predictions: str, keys: list[str]) -> list[dict]:
    ea, eb = _epoch0(a), _epoch0(b)
    pa, pb = pd.read_csv(a / predictions), pd.read_csv(b / predictions)
    return [_measure("relative Δ loss of the first step", _rel(ea["step_losses"][0], eb["step_losses"][0]),
                     tol["first_loss_rel"], ea["step_losses"][0], eb["step_losses"][0]),
            _measure("relative Δ mean train loss of the epoch", _rel(ea["train_loss"], eb["train_loss"]),
                     tol["loss_rel"], ea["train_loss"], eb["train_loss"]),
            *prob_measures(pa, pb, "prob_", tol["prob"], keys, "test predictions: ")]


def check_finetune(ctx: Ctx, data: dict, cae32: Path) -> dict:
    def argv(device, precision, out):
        # Drop path draws its masks from the device's generator: off, so both runs see the same network.
        return ["-q", "finetune", "--model", "panderm-v1-base", "--checkpoint", cae32, "--csv", data["ham"],
                "--epochs", 1, "--batch-size", 8, "--warmup-epochs", 0, "--drop-path", 0, "--bootstrap", 0,
                "--workers", ctx.workers, "--device", device, "--precision", precision, "--out", out]

    dev, ref, a, b = _pair(ctx, "finetune", argv, "amp")
    return _check("finetune 1 epoch amp", "finetune", f"{ctx.device} amp", dev, ref, ctx,
                  lambda: _training_measures(a, b, TOL["finetune"], "predictions/test.csv", ["image_path", "label"]),
                  model="tiny PanDerm-v1 CAE (64 wide, 2 blocks, 32 px)", effective_precision=_train_mode(ctx))


def _train_mode(ctx: Ctx) -> str:
    return "fp16 autocast + GradScaler" if ctx.device.type == "cuda" else "fp32 (autocast is CUDA-only)"


def check_multimodal(ctx: Ctx, data: dict) -> dict:
    n_classes = int(pd.read_csv(data["pad"])["label"].max()) + 1

    def argv(device, precision, out):
        return ["-q", "multimodal", "train", "--model", "demo", "--dataset", "csv", "--data-path", data["pad"],
                "--clinical-col", "image_path", "--derm-col", "none", "--label-col", "label", "--split-col", "split",
                "--class-num", n_classes, "--use-cli", "--num-head", 2, "--meta-num-head", 2, "--att-depth", 1,
                "--meta-att-depth", 1, "--device", device, "--precision", precision, "--batch-size", 8,
                "--workers", ctx.workers, "--bootstrap", 0, "--epochs", 1, "--output-dir", out]

    dev, ref, a, b = _pair(ctx, "multimodal", argv, "amp")
    return _check("multimodal 1 epoch amp", "multimodal", f"{ctx.device} amp", dev, ref, ctx,
                  lambda: _training_measures(a, b, TOL["multimodal"], "detailed_predictions.csv",
                                             ["image_path", "label"]),
                  model="demo", effective_precision=_train_mode(ctx))


def check_sae(ctx: Ctx, features_npy: Path) -> dict:
    tol = TOL["sae"]
    x = np.load(features_npy, allow_pickle=False).astype(np.float32)
    emb = ctx.work / "data" / "sae_embeddings.npy"
    np.save(emb, x / np.linalg.norm(x, axis=1, keepdims=True))  # as `panderm features --normalize` gives them

    def argv(device, precision, out):
        return ["-q", "concepts", "train-sae", "--embeddings", emb, "--epochs", 2, "--batch-size", 64, "--device",
                device, "--no-pth", "--out", out]

    dev, ref, a, b = _pair(ctx, "sae", argv, "fp32")

    def measures():
        fa, fb = (json.loads((x / "results.json").read_text())["final"] for x in (a, b))
        ca, cb = (np.load(x / "learned_activation.npy", allow_pickle=False).astype(np.float64) for x in (a, b))
        codes = np.abs(ca - cb).max() / max(np.abs(cb).max(), 1e-12) if ca.shape == cb.shape else float("inf")
        return [_measure("relative Δ final loss", _rel(fa["loss"], fb["loss"]), tol["loss_rel"], fa["loss"],
                         fb["loss"]),
                _measure("|Δ| final FVU", abs(fa["fvu"] - fb["fvu"]), tol["fvu"], fa["fvu"], fb["fvu"]),
                _measure("max |Δ code| / max |reference code|", codes, tol["codes_rel"])]

    return _check("SAE 2 epochs", "concepts train-sae", f"{ctx.device} fp32", dev, ref, ctx, measures,
                  model="SAE on demo embeddings", effective_precision="fp32")


def check_segmentation(ctx: Ctx, data: dict, cae32: Path) -> dict:
    tol = TOL["segmentation"]

    def argv(device, precision, out):
        # The largest-component clean-up turns a one-pixel difference into a different mask: scored without it.
        return ["-q", "segment", "train", "--model", "panderm-v1-base", "--checkpoint", cae32, "--csv", data["seg"],
                "--epochs", 1, "--batch-size", 8, "--head-channels", 32, "--image-size", 32, "--augment", "none",
                "--no-largest-component", "--bootstrap", 0, "--workers", ctx.workers, "--device", device,
                "--precision", precision, "--out", out]

    dev, ref, a, b = _pair(ctx, "segmentation", argv, "amp")

    def measures():
        ra, rb = (json.loads((x / "results.json").read_text()) for x in (a, b))
        la, lb = ra["history"][0]["loss"], rb["history"][0]["loss"]
        out = [_measure("relative Δ train loss of the epoch", _rel(la, lb), tol["loss_rel"], la, lb)]
        for metric in ("dice", "jaccard"):
            va, vb = (r["metrics_at_model_size"][metric]["mean"] for r in (ra, rb))
            out.append(_measure(f"|Δ| test mean {metric}", abs(va - vb), tol["overlap"], va, vb))
        return out

    return _check("segmentation 1 epoch amp", "segment train", f"{ctx.device} amp", dev, ref, ctx, measures,
                  model="tiny PanDerm-v1 CAE + UPerNet (32 px)", effective_precision=_train_mode(ctx))


def run_all(ctx: Ctx, progress=print) -> list[dict]:
    data = prepare_data(ctx)
    models_dir = ctx.work / "models"
    cae224 = write_tiny_cae(models_dir / "tiny_cae_224.pth", 224, 16, seed=5)
    cae32 = write_tiny_cae(models_dir / "tiny_cae_32.pth", 32, 8, seed=7)
    feature_models = {"demo": (["--model", "demo"], "demo (tiny open_clip ViT, 64 px)"),
                      "tiny-cae": (["--model", "panderm-v1-base", "--checkpoint", cae224],
                                   "tiny PanDerm-v1 CAE (64 wide, 2 blocks, 224 px)")}
    checks: list[dict] = []

    def note(new):
        for c in new:
            progress(f"  {c['status']:5s} {c['name']}")
        checks.extend(new)

    found, refs = check_features(ctx, data, feature_models)
    note(found)
    note([check_zeroshot_door(ctx, data)])
    note([check_retrieval(ctx, data)])
    note([check_linear_probe(ctx, data)])
    note([check_finetune(ctx, data, cae32)])
    note([check_multimodal(ctx, data)])
    if refs["demo"].is_file():
        note([check_sae(ctx, refs["demo"])])
    else:
        note([{"name": "SAE 2 epochs", "task": "concepts train-sae", "status": "ERROR", "measures": [],
               "error": "no reference demo features to train on (see the features checks)"}])
    note([check_segmentation(ctx, data, cae32)])
    return checks


CHECK_NAMES = [f"features {m} {p}" for m in ("demo", "tiny-cae") for p in ("fp32", "bf16", "fp16")] + [
    "zero-shot door src/main.py amp", "retrieval amp", "linear probe amp", "finetune 1 epoch amp",
    "multimodal 1 epoch amp", "SAE 2 epochs", "segmentation 1 epoch amp"]
