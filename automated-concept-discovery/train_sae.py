#!/usr/bin/env python
"""Reference door: PanDerm-2 `automated-concept-discovery/train_sae.py` (train the sparse autoencoder).

Reads `<save_dir>/all_embeddings.npy` (or `--embeddings`) and writes to `<save_dir>`:
`autoencoder.pth` (reference key layout, tensors only), `learned_activation.npy` [N, F] float32,
`sae.safetensors` + `sae_config.json`, `sae_history.jsonl` / `.png` and `sae_summary.json`.
Reference flags: `--save_dir` (default: the current folder, as the reference's empty default),
`--expansion` (8), `--l1` (3e-5), and the run labels `--data`, `--backbone`, `--trial`, which change nothing
(a line says so). Our additions keep the reference's fixed values as defaults (lr 5e-4, batch 4096, 200 epochs,
no dead-latent resampling, zero pre-bias: `--pre_bias_init`). `--save_dir` works with or without a trailing
slash and is created. Training is seeded (`--seed`). The work is done by
`panderm.tasks.concepts.run.train_sae_from_file`.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from panderm.cli_support import finish_help, report_ignored, run_door, setup_logging  # noqa: E402

# Parsed by the reference but never used in its computation.
IGNORED = {
    "data": "a run label; the embeddings file decides what is trained",
    "backbone": "a run label (the reference only prints it); the embeddings file decides what is trained",
    "trial": "unused by the reference's PanDerm-2 train_sae.py",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--save_dir", default="",
                   help="folder holding all_embeddings.npy; outputs go here (default: the current folder)")
    p.add_argument("--embeddings", default=None,
                   help="embeddings .npy to train on (default <save_dir>/all_embeddings.npy)")
    p.add_argument("--expansion", type=int, default=8, help="latents = expansion x embedding width")
    p.add_argument("--l1", type=float, default=3e-5, help="L1 sparsity penalty")
    p.add_argument("--epochs", type=int, default=200, help="training epochs")
    p.add_argument("--batch_size", type=int, default=4096, help="rows per batch")
    p.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate")
    p.add_argument("--resample_every", type=int, default=0,
                   help="resample dead latents every N epochs (0: never, the reference)")
    p.add_argument("--pre_bias_init", default="zeros", choices=["zeros", "mean", "geometric_median"],
                   help="initial tied pre-bias (zeros: the reference)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--data", default=None, help="run label (reference default 'ham'); ignored")
    p.add_argument("--backbone", default=None, help="run label; ignored")
    p.add_argument("--trial", default=None, help="run label; ignored")
    p.add_argument("--gpu", default=None, help="GPU index (default: GPU 0 when available, else CPU)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return finish_help(p)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    report_ignored(args, IGNORED)

    def run():
        from panderm.cli_support import resolve_device
        from panderm.tasks.concepts.run import train_sae_from_file

        embeddings = args.embeddings or os.path.join(args.save_dir, "all_embeddings.npy")
        device = resolve_device("auto" if args.gpu is None else f"cuda:{args.gpu}")
        # The reference's recipe unless asked otherwise: zero pre-bias, no resampling.
        cfg = dict(expansion=args.expansion, l1=args.l1, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                   resample_every=args.resample_every, pre_bias_init=args.pre_bias_init, seed=args.seed,
                   device=device)
        flags = {name: f"--{name}" for name in ("pre_bias_init", "resample_every", "epochs", "expansion")}
        s = train_sae_from_file(embeddings, args.save_dir or ".", cfg, progress=not args.quiet, flag_names=flags)
        f = s["final"]
        print(f"SAE {s['d_in']} -> {s['n_latents']} on {s['n_samples']} rows: loss {f['loss']:.4g}, "
              f"FVU {f['fvu']:.4f}, L0 {f['l0']:.1f}, dead {f['dead_fraction']:.3f}")
        print(f"saved {os.path.join(args.save_dir or '.', 'autoencoder.pth')} and learned_activation.npy")

    return run_door(run, "train_sae.py", debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
