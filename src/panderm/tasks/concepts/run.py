"""File-level orchestration of the concept-discovery pipeline, shared by the reference doors and the CLI.

Each function reads its inputs (``.npy`` arrays, CSVs, SAE checkpoints), checks them all before any work is
done, calls :mod:`panderm.tasks.concepts.sae` / :mod:`panderm.tasks.concepts.cbm`, and writes its outputs
atomically, so bad input never leaves a partial file behind. Bad input raises :class:`~panderm.errors.DataError`
(or ``ModelError``) with one line naming the file and the shapes.

Pipeline (docs/CONCEPTS.md):

1. :func:`train_sae_from_file`: embeddings ``[N, D]`` → SAE folder (``sae.safetensors``, ``sae_config.json``,
   a reference-layout ``autoencoder.pth``, ``learned_activation.npy``, ``sae_history.jsonl`` / ``.png``).
2. :func:`extract_activations`: SAE + embeddings → codes ``[N, F]`` float32 (``0_extract_sae_activations.py``).
3. :func:`run_cbm`: CSV labels + codes (and optionally raw embeddings, the baseline) → L1 logistic-regression
   CBM over 50 stratified splits, or one given split (``1_train_clf_binary-class.py``).
4. :func:`explain`: SAE dictionary + CBM weights + concept words → Hungarian matching via the model's text
   encoder, bar chart, JSON (the global-explanation notebooks).
5. :func:`biased_cbm`, :func:`intervene_codes`, :func:`intervene_run`: the biased CBM (train/test given,
   ``random_state=42``) and the intervention that zeroes the latents matched to a concept text
   (``3_train_biased-cbm_binary-class.py`` / ``4_intervention_CBM.py``; ``intervene_run`` does both in one call
   and reports before/after).

Defaults: the **reference doors** (``automated-concept-discovery/*.py``) default to the reference, i.e. the SAE
never resamples dead latents (``resample_every=0``), keeps the pre-bias at zero (``pre_bias_init="zeros"``) and
the label is the CSV column the reference picks by position; the **library and the CLI** default to the recipe of
the reference's SAE library (``SAEConfig``'s defaults: pre-bias at the geometric median, resampling every 10
epochs, at most 4 times) and to a label column given by name. Everything is seeded (SAE init/shuffling, SGD
``random_state``), unlike the reference's unseeded SGD. The ``autoencoder.pth`` written here is a plain dict of
tensors and ints (readable with ``torch.load(weights_only=True)``), in the reference key layout with the leading
component axis.
"""

from __future__ import annotations

# The steps live in modules of their own; every name stays importable from here.
from panderm.tasks.concepts.cbm_files import (  # noqa: F401
    _given_split_metrics,
    _select,
    _train_test,
    biased_cbm,
    intervene_codes,
    intervene_run,
    run_cbm,
)
from panderm.tasks.concepts.explain_files import REFERENCE_CONCEPTS, _weights, encode_concepts, explain  # noqa: F401
from panderm.tasks.concepts.inputs import load_array, read_labels  # noqa: F401
from panderm.tasks.concepts.sae_files import (  # noqa: F401
    _load_sae,
    _sae_config,
    extract_activations,
    train_sae_from_file,
    write_reference_pth,
)

__all__ = [
    "load_array",
    "read_labels",
    "train_sae_from_file",
    "write_reference_pth",
    "extract_activations",
    "run_cbm",
    "biased_cbm",
    "encode_concepts",
    "explain",
    "intervene_codes",
    "intervene_run",
]
