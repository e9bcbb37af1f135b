#!/usr/bin/env python
"""Reference door: PanDerm-2 `automated-concept-discovery/train_sae.py` (train the sparse autoencoder).

Reads `<save_dir>/all_embeddings.npy` (or `--embeddings`) and writes to `<save_dir>`:
`autoencoder.pth` (reference key layout, tensors only), `learned_activation.npy` [N, F] float32,
`sae.safetensors` + `sae_config.json`, `sae_history.jsonl` / `.png` and `sae_summary.json`.
Defaults are the reference's (expansion 8, L1 3e-5, lr 5e-4, batch 4096, 200 epochs, no dead-latent
resampling); `--save_dir` works with or without a trailing slash and is created. Training is seeded (`--seed`).
The work is done by `panderm.tasks.concepts.run.train_sae_from_file`; this file only maps flags.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from panderm.cli_support import run_door, setup_logging  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--save_dir", required=True, help="folder holding all_embeddings.npy; outputs go here")
    p.add_argument("--embeddings", default=None, help="embeddings .npy to train on (default <save_dir>/all_embeddings.npy)")
    p.add_argument("--expansion", type=int, default=8)
    p.add_argument("--l1", type=float, default=3e-5)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--batch_size", type=int, default=4096)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--resample_every", type=int, default=0,
                   help="resample dead latents every N epochs (0: never, the reference)")
    p.add_argument("--seed", type=int, default=0)
    # Run labels in the reference scripts (e.g. --data Derm1M --backbone DermFM-Zero); they change nothing.
    p.add_argument("--data", default=None, help="accepted for compatibility: a run label, not used")
    p.add_argument("--backbone", default=None, help="accepted for compatibility: a run label, not used")
    p.add_argument("--gpu", default=None, help="GPU index (default: GPU 0 when available, else CPU)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    setup_logging()

    def run():
        from panderm.cli_support import resolve_device
        from panderm.tasks.concepts.run import train_sae_from_file

        embeddings = args.embeddings or os.path.join(args.save_dir, "all_embeddings.npy")
        device = resolve_device("auto" if args.gpu is None else f"cuda:{args.gpu}")
        cfg = dict(expansion=args.expansion, l1=args.l1, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                   resample_every=args.resample_every, seed=args.seed, device=device)
        s = train_sae_from_file(embeddings, args.save_dir, cfg, progress=not args.quiet)
        f = s["final"]
        print(f"SAE {s['d_in']} -> {s['n_latents']} on {s['n_samples']} rows: loss {f['loss']:.4g}, "
              f"FVU {f['fvu']:.4f}, L0 {f['l0']:.1f}, dead {f['dead_fraction']:.3f}")
        print(f"saved {os.path.join(args.save_dir, 'autoencoder.pth')} and learned_activation.npy")

    return run_door(run, "train_sae.py", debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
