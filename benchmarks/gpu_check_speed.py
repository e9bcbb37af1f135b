"""Speed and memory half of benchmarks/gpu_check.py.

For each model, precision and compile setting: model-only images/s (preprocessed images already on the device,
the same forward `extract_features` runs), end-to-end `extract_features` images/s on small pre-resized JPEGs and
on large ~1024 px JPEGs (CSV paths -> DataLoader with one worker per CPU -> model -> float32 array), their ratio,
where the end-to-end loop spends its time (waiting for the next batch vs inside the model), the batch size
`batch_size="auto"` chose and the device's peak memory. Random weights throughout; nothing is downloaded.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SAMPLE_CSVS = ["ham10000_sample/ham10000_sample.csv", "pad_ufes20_sample/pad_ufes20_sample.csv", "ph2/ph2.csv"]
KIND = "features"  # what extract_features runs the model for (embed = a head on top, computed afterwards)
PRECISIONS = ("bf16", "fp16")


@dataclass
class SpeedCtx:
    device: torch.device
    quick: bool
    work: Path
    deadline: float | None  # time.monotonic() after which no new row starts
    compile_all: bool  # False: the compiled rows run for the first model only (a cold compile is slow on CPU)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak(device: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


# --------------------------------------------------------------------------- images
def bundled_images() -> list[Path]:
    from panderm.data.tables import load_table

    paths: list[Path] = []
    for csv in SAMPLE_CSVS:
        paths += load_table(REPO / "data/sample" / csv, "image_path").paths
    return paths


def make_image_sets(ctx: SpeedCtx, short_side: int) -> dict[str, list[Path]]:
    """small: copies resized to the model's input on the short side (decode is cheap, resize nearly a no-op);
    large: copies upscaled to 1024 px on the long side (a realistic photo's decode cost). Written once per --out."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    sources = bundled_images()[:16] if ctx.quick else bundled_images()

    def write(job):
        name, i, src = job
        dst = ctx.work / "images" / name / f"{i:04d}.jpg"
        if not dst.is_file():
            with Image.open(src) as im:
                im = im.convert("RGB")
                w, h = im.size
                scale = short_side / min(w, h) if name == "small" else 1024 / max(w, h)
                im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS)
                im.save(dst, quality=90)
        return dst

    for name in ("small", "large"):
        (ctx.work / "images" / name).mkdir(parents=True, exist_ok=True)
    jobs = [(name, i, src) for name in ("small", "large") for i, src in enumerate(sources)]
    with ThreadPoolExecutor(max_workers=cpu_count()) as pool:  # PIL releases the GIL while resizing and encoding
        made = list(pool.map(write, jobs))
    return {name: [p for p, job in zip(made, jobs) if job[0] == name] for name in ("small", "large")}


def n_images(ctx: SpeedCtx, batch: int, workers: int) -> int:
    """Images per end-to-end run. A DataLoader worker assembles a whole batch, so fewer than workers x batch
    images would leave workers idle and measure the pipeline's fill, not its rate; 64 (one CPU batch) in --quick."""
    if ctx.quick:
        return 64
    return int(min(32768, max(4096, workers * batch)))


# --------------------------------------------------------------------------- models
def build_models(ctx: SpeedCtx) -> list[tuple[str, str, object, float]]:
    """(key, description, encoder, build seconds) with random weights, on the device, in eval mode."""
    from panderm.models import load_encoder
    from panderm.models.cae_vit import CAEConfig, CAEVisionTower
    from panderm.models.vision_only import PanDermV1Encoder

    def cae(width, depth, heads, key):
        cfg = CAEConfig(width, depth, heads, 16, 224, 4 * width, None)
        try:
            with torch.device(ctx.device):  # initialised where it runs: 300M random numbers are quicker on a GPU
                tower = CAEVisionTower(cfg, pooling="double_ln")
        except RuntimeError:
            tower = CAEVisionTower(cfg, pooling="double_ln")
        return PanDermV1Encoder(tower.to(ctx.device).eval(), key, None, True)

    if ctx.quick:
        specs = [("cae-tiny", "tiny CAE (64 wide, 2 blocks, 224 px)", lambda: cae(64, 2, 2, "cae-tiny")),
                 ("openclip-tiny", "demo open_clip ViT (64 wide, 2 blocks, 64 px)",
                  lambda: load_encoder("demo", device=ctx.device))]
    else:
        specs = [("cae-vit-l16", "CAE ViT-L/16, PanDerm-2 tower size (1024 wide, 24 blocks)",
                  lambda: cae(1024, 24, 16, "cae-vit-l16")),
                 ("openclip-vit-b16", "open_clip ViT-B/16",
                  lambda: load_encoder("ViT-B-16", allow_random_init=True, device=ctx.device))]
    out = []
    for key, desc, build in specs:
        start = time.perf_counter()
        enc = build().eval()
        # The image tower's size: an open_clip model also carries its text tower, which extraction never runs.
        tower = getattr(getattr(enc, "model", None), "visual", None) or getattr(enc, "tower", None) or enc
        params = sum(p.numel() for p in tower.parameters())
        out.append((key, f"{desc}, {params / 1e6:.1f}M image-tower params", enc, round(time.perf_counter() - start, 1)))
    return out


# --------------------------------------------------------------------------- measurements
def _autocast(device: torch.device, precision: str):
    from panderm.features import autocast_dtype, effective_precision

    mode = effective_precision(device, precision)
    if mode == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=autocast_dtype(mode))


_INPUTS: dict = {}


def model_only(ctx: SpeedCtx, enc, images: list[Path], batch: int, precision: str, compiled: bool) -> dict:
    """Images/s of the forward extract_features runs (the same compiled function when `compiled`), on
    preprocessed real images already on the device."""
    from panderm.data.images import open_image
    from panderm.features import _batch_fn

    key = (id(enc), batch)
    if key not in _INPUTS:  # decoded once per model: every row of the model times the same batch
        _INPUTS.clear()
        x = torch.stack([enc.preprocess(open_image(p)) for p in images[:batch]])
        _INPUTS[key] = x.repeat((batch + len(x) - 1) // len(x), 1, 1, 1)[:batch].contiguous()
    # Kept on the host between rows, so the end-to-end runs' peak memory does not include it.
    x = _INPUTS[key].to(ctx.device)
    fn = _batch_fn(enc, KIND, compiled)
    reset_peak(ctx.device)
    with torch.inference_mode(), _autocast(ctx.device, precision):
        start = time.perf_counter()
        fn(x)  # warm-up; with compile=True this call compiles
        sync(ctx.device)
        first = time.perf_counter() - start
        iters, target = 0, 0.5 if ctx.quick else 2.0
        start = time.perf_counter()
        while True:
            fn(x)
            iters += 1
            sync(ctx.device)
            elapsed = time.perf_counter() - start
            if (elapsed >= target and iters >= 3) or iters >= 200:
                break
    del x
    return {"img_s": round(batch * iters / elapsed, 1), "batch": batch, "iters": iters,
            "seconds": round(elapsed, 3), "first_call_s": round(first, 2), "peak_mem_bytes": peak(ctx.device)}


@contextlib.contextmanager
def stage_timers(device: torch.device):
    """Time extract_features' loop from inside: the wait for each batch from the DataLoader, and each model call
    (synchronised on CUDA, so it is the time the GPU is busy with the batch). Everything else in the loop (the
    host-to-device copy, the copy back, writing the rows) is the remainder."""
    import panderm.features.engine as features

    times = {"wait_s": 0.0, "model_s": 0.0, "loop_s": 0.0, "first_batch_s": None, "batches": 0}
    real_loader, real_batch_fn = features._loader, features._batch_fn

    class TimedLoader:
        def __init__(self, loader):
            self.loader, self.batch_size = loader, loader.batch_size

        def __len__(self):
            return len(self.loader)

        def __iter__(self):
            it, loop_start = iter(self.loader), time.perf_counter()
            try:
                while True:
                    t0 = time.perf_counter()
                    try:
                        item = next(it)
                    except StopIteration:
                        return
                    waited = time.perf_counter() - t0
                    times["wait_s"] += waited
                    if times["first_batch_s"] is None:
                        times["first_batch_s"] = waited
                    times["batches"] += 1
                    yield item
            finally:
                times["loop_s"] += time.perf_counter() - loop_start

    def timed_batch_fn(encoder, kind, compiled):
        fn = real_batch_fn(encoder, kind, compiled)

        def run(x):
            sync(device)
            t0 = time.perf_counter()
            out = fn(x)
            sync(device)
            times["model_s"] += time.perf_counter() - t0
            return out

        return run

    features._loader = lambda *a, **k: TimedLoader(real_loader(*a, **k))
    features._batch_fn = timed_batch_fn
    try:
        yield times
    finally:
        features._loader, features._batch_fn = real_loader, real_batch_fn


def draft_size(enc) -> int:
    """The reduced JPEG decode `panderm features` uses by default (without --full-decode): the smallest DCT scale
    whose short side is still at least twice the resize target."""
    spec = enc.preprocess_spec
    return 2 * max(spec.size, spec.resize_to or 0)


def end_to_end(ctx: SpeedCtx, enc, paths: list[Path], precision: str, compiled: bool, model_img_s: float) -> dict:
    from panderm.features import extract_features

    workers = cpu_count()
    reset_peak(ctx.device)
    with stage_timers(ctx.device) as t:
        start = time.perf_counter()
        res = extract_features(enc, paths, KIND, batch_size="auto", num_workers=workers, precision=precision,
                               cache=False, progress=False, compile=compiled, draft=draft_size(enc))
        wall = time.perf_counter() - start
    loop = max(t["loop_s"], 1e-9)
    img_s = len(paths) / wall
    return {"images": len(paths), "workers": workers, "img_s": round(img_s, 1),
            "ratio_to_model_only": round(img_s / model_img_s, 3), "seconds": round(wall, 2),
            "loader_wait_pct": round(100 * t["wait_s"] / loop, 1),
            "model_busy_pct": round(100 * t["model_s"] / loop, 1),
            "other_pct": round(100 * max(0.0, loop - t["wait_s"] - t["model_s"]) / loop, 1),
            "first_batch_s": round(t["first_batch_s"] or 0.0, 2), "batches": t["batches"],
            "bottleneck": "loader" if t["wait_s"] > t["model_s"] else "model",
            "peak_mem_bytes": peak(ctx.device), "rows": int(res.array.shape[0])}


def speed_row(ctx: SpeedCtx, key, desc, enc, files, precision: str, compiled: bool) -> dict:
    from panderm.features import effective_precision, resolve_batch_size

    row = {"model": key, "description": desc, "input_px": enc.preprocess_spec.size, "precision": precision,
           "effective_precision": effective_precision(ctx.device, precision), "compile": compiled}
    probe_n = 64 if ctx.quick else None
    batch = resolve_batch_size(enc, "auto", KIND, precision, probe_n)
    n = n_images(ctx, batch, cpu_count())
    row["batch_size_auto"] = min(batch, n)  # what both end-to-end runs use (never more than the images)
    row["model_only"] = model_only(ctx, enc, files["small"], row["batch_size_auto"], precision, compiled)
    if compiled:
        row["compile_s"] = row["model_only"]["first_call_s"]
    row["e2e"] = {}
    for name, distinct in files.items():
        paths = [distinct[i % len(distinct)] for i in range(n)]  # repeated files: page-cached bytes, decoded anew
        row["e2e"][name] = end_to_end(ctx, enc, paths, precision, compiled, row["model_only"]["img_s"])
    row["status"] = "ok"
    return row


def run_all(ctx: SpeedCtx, progress=print) -> tuple[list[dict], list[dict]]:
    models = build_models(ctx)
    built = [{"model": k, "description": d, "build_s": s} for k, d, _, s in models]
    files = make_image_sets(ctx, max(enc.preprocess_spec.size for _, _, enc, _ in models))
    # Every eager row first, then the compiled ones (the rows a tight budget drops), each model once per precision
    # before the next precision.
    plan = [(i, m, p, c) for c in (False, True) for p in PRECISIONS for i, m in enumerate(models)]
    rows = []
    for i, (key, desc, enc, _), precision, compiled in plan:
        base = {"model": key, "description": desc, "precision": precision, "compile": compiled}
        if ctx.device.type != "cuda" and precision != PRECISIONS[0]:
            rows.append({**base, "status": "not run on cpu",
                         "reason": "panderm computes in float32 on CPU whatever the precision (autocast is "
                                   f"CUDA-only): the same run as the {PRECISIONS[0]} row"})
            continue
        if compiled and not ctx.compile_all and i > 0:
            rows.append({**base, "status": "skipped", "reason": "--quick: the compiled path runs for the first "
                                                                 "model only (a cold torch.compile is slow)"})
            continue
        left = None if ctx.deadline is None else ctx.deadline - time.monotonic()
        if left is not None and left < (100 if compiled else 30):
            rows.append({**base, "status": "skipped", "reason": f"time budget: {max(left, 0):.0f} s left"})
            continue
        start = time.perf_counter()
        try:
            row = speed_row(ctx, key, desc, enc, files, precision, compiled)
        except Exception as exc:  # noqa: BLE001 - one failing row (an out-of-memory, a compiler error) is reported
            first_line = (str(exc).splitlines() or [""])[0][:300]
            row = {**base, "status": "error", "reason": f"{type(exc).__name__}: {first_line}"}
        row["seconds"] = round(time.perf_counter() - start, 1)
        progress(f"  {row['status']:5s} {key} {precision} compile={compiled} ({row['seconds']} s)")
        rows.append(row)
    return rows, built
