"""Automated concept discovery: a sparse autoencoder over image embeddings and a concept bottleneck model.

* :mod:`panderm.tasks.concepts.sae`: the PanDerm-2 ReLU+L1 sparse autoencoder (tied pre-bias, unit-norm
  decoder) with dead-latent resampling that runs, a TopK alternative with an auxiliary dead-latent loss,
  per-epoch metrics, safetensors checkpoints and a reader for the reference ``autoencoder.pth``. It gathers
  ``sae_config`` (settings, errors, memory check), ``sae_model`` (the module and its codes), ``sae_train``
  (loss, step, resampling, loop, history plot) and ``sae_checkpoint`` (reading and writing).
* :mod:`panderm.tasks.concepts.cbm`: the L1 logistic-regression CBM over SAE codes (or raw embeddings);
  ``cbm_explain`` holds the global explanations (top concepts, Hungarian concept matching) and concept
  interventions, re-exported from ``cbm``.
* :mod:`panderm.tasks.concepts.run`: the pipeline on files, gathering ``inputs`` (``.npy`` and CSV labels),
  ``sae_files``, ``cbm_files`` and ``explain_files``; ``retrieve`` and ``html_report`` name and show latents.

Everything works on numpy arrays; reading CSVs and wiring command-line flags happen elsewhere. The
submodules are not imported here, so ``cbm`` can be used without importing torch.
"""
