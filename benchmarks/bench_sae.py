"""SAE training throughput (samples/s), optimiser-busy fraction and peak RSS on synthetic N × 768 embeddings.

Two measurements, in one process, same model and settings (reference: expansion 8 → 6144 latents, batch 4096):

* ``device-resident loop``: the data tensor lives on the training device; each epoch draws one permutation on
  that device and each batch is ``X.index_select(0, perm[i:i+B])``: no per-batch host copy. Time inside
  :func:`panderm.tasks.concepts.sae.sae_train_step` (forward, loss, backward, decoder projection, Adam step,
  renormalisation, batch statistics) is the *busy* time; ``busy = Σ step time / epoch wall time`` and the rest
  is the data pipeline (index + loop overhead).
* ``train_sae``: the library's :func:`~panderm.tasks.concepts.sae.train_sae` end to end (it also keeps per-epoch
  statistics and, with the default settings, may resample), for samples/s only.

Peak RSS is ``ru_maxrss`` of this process (the data alone is N × 768 × 4 bytes: 0.61 GB at N = 200k).

    python benchmarks/bench_sae.py                 # N = 200000, 1 epoch each, CPU
    python benchmarks/bench_sae.py --n 50000 --epochs 2 --json out.json
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from panderm.report import format_table  # noqa: E402
from panderm.tasks.concepts.sae import SAEConfig, SparseAutoencoder, sae_train_step, train_sae  # noqa: E402


def rss_mb() -> float:
    """Peak resident set size of this process so far, MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_loop(X: torch.Tensor, cfg: SAEConfig, epochs: int) -> dict:
    device = X.device
    g = torch.Generator().manual_seed(cfg.seed)
    model = SparseAutoencoder.from_config(cfg, g).to(device)
    model.normalize_decoder_()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)
    n, bs = X.shape[0], cfg.batch_size
    dg = torch.Generator(device=device).manual_seed(cfg.seed)
    per_epoch = []
    for _ in range(epochs):
        _sync(device)
        t_epoch = time.perf_counter()
        busy = 0.0
        perm = torch.randperm(n, generator=dg, device=device)
        for start in range(0, n, bs):
            xb = X.index_select(0, perm[start:start + bs])
            _sync(device)
            t0 = time.perf_counter()
            step = sae_train_step(model, opt, xb, cfg)
            _sync(device)
            busy += time.perf_counter() - t0
        loss = float(step["loss"])
        wall = time.perf_counter() - t_epoch
        per_epoch.append({"wall_s": wall, "busy_s": busy, "loss": loss})
    # The first epoch includes one-off allocation; report the best epoch and the mean.
    walls = [e["wall_s"] for e in per_epoch]
    busy = sum(e["busy_s"] for e in per_epoch) / sum(walls)
    return {"samples_per_s": n / min(walls), "samples_per_s_mean": n * len(walls) / sum(walls),
            "busy_fraction": busy, "epoch_s": walls, "last_loss": per_epoch[-1]["loss"]}


def library_train(X_np: np.ndarray, cfg: SAEConfig, epochs: int) -> dict:
    cfg = SAEConfig(**{**cfg.to_dict(), "epochs": epochs})
    t = time.perf_counter()
    _, history = train_sae(X_np, cfg)
    wall = time.perf_counter() - t
    secs = [h["seconds"] for h in history]
    return {"samples_per_s": X_np.shape[0] / min(secs), "samples_per_s_mean": X_np.shape[0] * epochs / wall,
            "epoch_s": secs}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200_000, help="number of synthetic embeddings")
    p.add_argument("--d", type=int, default=768)
    p.add_argument("--expansion", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--epochs", type=int, default=1, help="epochs per measurement")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--skip-library", action="store_true", help="only the device-resident loop")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rss0 = rss_mb()
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(args.n, args.d, generator=gen)
    X /= X.norm(dim=1, keepdim=True)
    X_np = X.numpy()
    X_dev = X.to(device)
    rss_data = rss_mb()
    cfg = SAEConfig(d_in=args.d, expansion=args.expansion, batch_size=args.batch_size, epochs=args.epochs,
                    resample_every=0, device=str(device)).validate()
    rows = []
    loop = device_loop(X_dev, cfg, args.epochs)
    rows.append({"run": "device-resident loop", "N": args.n, "latents": cfg.latents,
                 "samples/s": loop["samples_per_s"], "busy": loop["busy_fraction"],
                 "epoch_s": min(loop["epoch_s"]), "peak_rss_MB": rss_mb()})
    lib = None
    if not args.skip_library:
        lib = library_train(X_np, cfg, args.epochs)
        rows.append({"run": "train_sae (library)", "N": args.n, "latents": cfg.latents,
                     "samples/s": lib["samples_per_s"], "busy": float("nan"), "epoch_s": min(lib["epoch_s"]),
                     "peak_rss_MB": rss_mb()})
    print(f"device {device}, torch threads {torch.get_num_threads()}, batch {args.batch_size}, "
          f"{args.epochs} epoch(s) each; RSS before data {rss0:.0f} MB, after data {rss_data:.0f} MB")
    print(format_table(rows, floatfmt=".3f"))
    ok = loop["busy_fraction"] >= 0.9
    print(f"optimiser busy {loop['busy_fraction']:.1%} of the epoch ({'meets' if ok else 'MISSES'} the 90% target)")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rss_before_mb": rss0, "rss_data_mb": rss_data,
                                               "device_loop": loop, "library": lib, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
