#!/usr/bin/env python
"""Reference door: PanDerm-2 `0_extract_sae_activations.py` (SAE codes of an embeddings file).

`--checkpoint` is a reference `autoencoder.pth` (read weights-only) or a panderm SAE folder; `--embeddings`
any [N, D] .npy; `--output` gets the [N, F] float32 codes (its folder is created). `--batch_size` (512) and
`--gpu` (an index; CPU when no GPU) are the reference's. Prints the number of latents active at least once.
The work is done by `panderm.tasks.concepts.run.extract_activations`; this file only maps flags.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from panderm.compat import concept_doors  # noqa: E402


def build_parser():
    return concept_doors.build_extract_activations_parser(__doc__.splitlines()[0])


def main(argv=None) -> int:
    return concept_doors.main_extract_activations(argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
