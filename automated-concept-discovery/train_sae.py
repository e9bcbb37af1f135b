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
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from panderm.compat import concept_doors  # noqa: E402

IGNORED = concept_doors.IGNORED_TRAIN_SAE


def build_parser():
    return concept_doors.build_train_sae_parser(__doc__.splitlines()[0])


def main(argv=None) -> int:
    return concept_doors.main_train_sae(argv, description=__doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
