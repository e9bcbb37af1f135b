"""Sparse autoencoder (SAE) over image embeddings, in plain PyTorch.

The model is the PanDerm-2 reference SAE (docs/CONCEPTS.md, "Departures from the reference"):

* ``f = ReLU(W_e (x − b) + b_e)`` and ``x̂ = W_d f + b``, where ``b`` is a **tied pre-bias**, subtracted
  before the encoder and added back after the decoder;
* the decoder columns (the dictionary, ``W_d[:, j]``) are kept at unit norm: the gradient component
  parallel to each column is removed before the optimiser step and the columns are renormalised after it;
* loss = mean over the batch of ``mean_d (x − x̂)² + λ Σ_j |f_j|`` with ``λ = 3e-5``;
* Adam (lr 5e-4, betas 0.9/0.999, eps 1e-8), batch 4096, expansion ×8, 200 epochs, the reference's
  initialisation (see :meth:`SparseAutoencoder.reset_parameters`).

The default *recipe* (:class:`SAEConfig`) is the one the reference's SAE library was written for, the
Anthropic "Towards Monosemanticity" recipe, which the reference itself never ran (its pre-bias stays at
zero and its resampling condition is always false; docs/CONCEPTS.md, "Departures from the reference"):

* **pre-bias at the geometric median** of the training embeddings (``pre_bias_init``; the reference: zeros).
  Image embeddings share a large common component (L2-normalised ones typically have ‖mean‖ ≈ 0.9); with
  ``b = 0`` every latent has to learn it, and a resampled latent points along it and fires on every input.
* **dead-latent resampling**, every ``resample_every`` epochs and at most ``max_resamples`` times (4, as the
  recipe and the reference library's default), so the last resampling is long before the end of training:
  latents that fired on at most ``dead_threshold`` of the samples since the last resampling are
  re-initialised towards inputs drawn with probability ∝ their loss², the encoder row scaled to 0.2 × the
  mean norm of the alive encoder rows, encoder bias 0, Adam moments zeroed (see
  :func:`resample_dead_latents`). ``resample_every=0`` and ``pre_bias_init="zeros"`` give the reference.

Measured on the demo-model embeddings of the bundled sample (465 × 64, ×8 latents, 200 epochs): the
reference's zero pre-bias with unlimited resampling ended at FVU 4.15 with 64 % dead latents; this recipe
ends at FVU ≈ 0.02 with about 20 % (``tests/test_concepts_sae.py::test_default_recipe_learns_on_sample``).
Training ends with a warning when FVU > 1 or more than half the latents are dead, and stops with one line
(:class:`SAETrainingError`) when the loss or the weights stop being finite.

Other differences from the reference, all deliberate:

* **TopK alternative** (``k``): keep the k largest pre-activations per sample (then ReLU), no L1 term,
  plus an auxiliary loss that lets dead latents reconstruct the residual (Gao et al. 2024, "AuxK").
* Per-epoch metrics (loss, L0, fraction of variance unexplained, dead and dense latent fractions) go to a
  JSONL log and a PNG instead of wandb.
* Checkpoints are ``sae.safetensors`` + ``sae_config.json``; the reference ``autoencoder.pth`` is read
  with ``torch.load(weights_only=True)`` (no arbitrary pickles).
* Training is seeded and deterministic on CPU (init, pre-bias sample, shuffling and resampling draw from one
  generator seeded with ``seed``), and the files are byte-identical across reruns.
* Sizes are checked against the machine's memory before anything is allocated.

Arrays in, arrays out: ``X`` is ``[N, d_in]`` float; codes are ``[N, n_latents]`` float32 in input order.
"""

from __future__ import annotations

# The SAE lives in four modules; every name stays importable from here.
from panderm.tasks.concepts.sae_checkpoint import (  # noqa: F401
    SAE_CONFIG,
    SAE_FORMAT,
    SAE_FORMAT_VERSION,
    SAE_WEIGHTS,
    load_sae,
    save_sae,
)
from panderm.tasks.concepts.sae_config import (  # noqa: F401
    SAECheckpointError,
    SAEConfig,
    SAETrainingError,
    check_sae_fits,
)
from panderm.tasks.concepts.sae_model import SparseAutoencoder, decoder_directions, sae_activations  # noqa: F401
from panderm.tasks.concepts.sae_train import (  # noqa: F401
    RESAMPLE_ENCODER_SCALE,
    RESAMPLE_INPUTS,
    WARN_DEAD_FRACTION,
    WARN_FVU,
    plot_history,
    resample_dead_latents,
    sae_loss,
    sae_train_step,
    topk_aux_loss,
    train_sae,
    training_warning,
)

__all__ = [
    "SAEConfig",
    "SAECheckpointError",
    "SAETrainingError",
    "SparseAutoencoder",
    "sae_loss",
    "topk_aux_loss",
    "sae_train_step",
    "resample_dead_latents",
    "train_sae",
    "training_warning",
    "check_sae_fits",
    "save_sae",
    "load_sae",
    "sae_activations",
    "decoder_directions",
    "plot_history",
]
