#!/usr/bin/env python
"""Reference door: PanDerm-2 `0_extract_sae_activations.py` (SAE codes of an embeddings file).

`--checkpoint` is a reference `autoencoder.pth` (read weights-only) or a panderm SAE folder; `--embeddings`
any [N, D] .npy; `--output` gets the [N, F] float32 codes (its folder is created). `--batch_size` (512) and
`--gpu` (an index; CPU when no GPU) are the reference's. Prints the number of latents active at least once.
The work is done by `panderm.tasks.concepts.run.extract_activations`; this file only maps flags.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from panderm.cli_support import finish_help, run_door, setup_logging  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--checkpoint", required=True, help="required: SAE autoencoder.pth")
    p.add_argument("--embeddings", required=True, help="required: embeddings .npy [N, D]")
    p.add_argument("--output", required=True, help="required: output .npy of SAE activations [N, F]")
    p.add_argument("--batch_size", type=int, default=512, help="rows per batch")
    p.add_argument("--gpu", type=int, default=None, help="GPU index (default: GPU 0 when available, else CPU)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return finish_help(p)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()

    def run():
        from panderm.cli_support import resolve_device
        from panderm.tasks.concepts.run import extract_activations

        device = resolve_device("auto" if args.gpu is None else f"cuda:{args.gpu}")
        s = extract_activations(args.checkpoint, args.embeddings, args.output, args.batch_size, device=device)
        print(f"Number of features activated at least once: {s['n_active']} / {s['n_latents']}")
        print(f"saved {args.output} {tuple(s['shape'])}")

    return run_door(run, "0_extract_sae_activations.py", debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
