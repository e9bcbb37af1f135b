"""The SAE steps of the concept pipeline on files: train from an embeddings ``.npy`` into an SAE folder, and write
the codes of embeddings under a saved SAE (``0_extract_sae_activations.py``). See :mod:`panderm.tasks.concepts.run`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from panderm.errors import DataError
from panderm.report import write_json, write_npy
from panderm.tasks.concepts.inputs import load_array


def write_reference_pth(model, path: str | Path, train_shape: Sequence[int] | None = None) -> Path:
    """Save ``model`` as a reference-layout ``autoencoder.pth`` (tensors and ints only; weights_only-loadable).

    Keys: ``model_state_dict`` (``tied_bias`` [1, D], ``encoder._weight`` [1, F, D], ``encoder._bias`` [1, F],
    ``decoder._weight`` [1, D, F]), ``model_config`` (``n_input_features``, ``n_learned_features``,
    ``n_components`` = 1) and ``train_shape``.
    """
    import torch

    from panderm.report import atomic_path

    state = {
        "tied_bias": model.pre_bias.detach().float().cpu()[None].clone(),
        "encoder._weight": model.encoder.weight.detach().float().cpu()[None].clone(),
        "encoder._bias": model.encoder.bias.detach().float().cpu()[None].clone(),
        "decoder._weight": model.decoder.weight.detach().float().cpu()[None].clone(),
    }
    obj = {
        "model_state_dict": state,
        "model_config": {"n_input_features": int(model.d_in), "n_learned_features": int(model.n_latents),
                         "n_components": 1},
        "train_shape": [int(s) for s in train_shape] if train_shape is not None else None,
    }
    # Serialised in memory: torch names the zip members after the file it writes to, so saving to the
    # temporary file would put its random name into the bytes. This way identical weights give identical files.
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_path(path, suffix=".pth") as tmp:
        tmp.write_bytes(buf.getvalue())
    return Path(path)


def _sae_config(d_in: int, config: Any):
    from panderm.tasks.concepts.sae import SAEConfig

    if config is None:
        return SAEConfig(d_in=d_in).validate()
    if isinstance(config, SAEConfig):
        if config.d_in != d_in:
            raise DataError(f"the SAE config has d_in={config.d_in} but the embeddings have {d_in} columns")
        return config.validate()
    return SAEConfig(d_in=d_in, **dict(config)).validate()


def train_sae_from_file(
    embeddings_npy: str | Path,
    out_dir: str | Path,
    config: Any = None,
    reference_pth: bool = True,
    activations: bool = True,
    activation_batch_size: int = 512,
    progress: bool = False,
    flag_names: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Train an SAE on ``embeddings_npy`` ``[N, D]`` and write it to ``out_dir``; return a summary dict.

    ``config`` is an :class:`~panderm.tasks.concepts.sae.SAEConfig` or a dict of its fields (``d_in`` comes
    from the file); ``None`` gives the library defaults (resampling on). Writes ``sae.safetensors`` +
    ``sae_config.json``, ``autoencoder.pth`` (reference layout, tensors only) when ``reference_pth``,
    ``learned_activation.npy`` ``[N, F]`` float32 (codes of the training rows) when ``activations``,
    ``sae_history.jsonl`` and ``sae_history.png``, and ``sae_summary.json``.

    Sizes (training, and the codes when ``activations``) are checked before training starts. A diverging
    run raises :class:`~panderm.tasks.concepts.sae.SAETrainingError` and writes nothing. A run that ends
    with FVU > 1 or more than half its latents dead logs one warning line and keeps it in the summary
    (``"warnings"``); ``flag_names`` spells the hints in the caller's flags.
    """
    from panderm.tasks.concepts.sae import (
        check_sae_fits,
        plot_history,
        sae_activations,
        save_sae,
        train_sae,
        training_warning,
    )

    X = load_array(embeddings_npy, "embeddings")
    cfg = _sae_config(X.shape[1], config)
    check_sae_fits(cfg.d_in, cfg.latents, cfg.device, n_rows=X.shape[0], batch_size=cfg.batch_size, training=True,
                   codes_rows=X.shape[0] if activations else 0)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"SAE output path exists and is not a folder: {out}")
    # Train into memory first (the history log goes to a private temp file), then write everything.
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "sae_history.jsonl"
        model, history = train_sae(X, cfg, log_path=log, progress=progress, flag_names=flag_names)
        out.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {"history": out / "sae_history.jsonl"}
        from panderm.report import atomic_path

        with atomic_path(paths["history"]) as dst:
            dst.write_bytes(log.read_bytes())
    paths["sae"] = save_sae(model, cfg, out)
    if reference_pth:
        paths["pth"] = write_reference_pth(model, out / "autoencoder.pth", X.shape)
    n_active = None
    if activations:
        codes = sae_activations(model, X, activation_batch_size)
        n_active = int(np.count_nonzero((codes > 0).any(axis=0)))
        paths["activations"] = write_npy(out / "learned_activation.npy", codes)
    paths["history_png"] = plot_history(history, out / "sae_history.png")
    last = history[-1] if history else {}
    summary = {
        "embeddings": str(embeddings_npy),
        "n_samples": int(X.shape[0]),
        "d_in": int(cfg.d_in),
        "n_latents": int(cfg.latents),
        "config": cfg.to_dict(),
        "final": last,
        "warnings": [w for w in [training_warning(last, cfg, flag_names) if last else None] if w],
        "latents_active_on_training_rows": n_active,
        "files": {k: str(v) for k, v in paths.items()},
    }
    write_json(out / "sae_summary.json", summary)
    return summary


def _load_sae(checkpoint: str | Path, device: str = "cpu"):
    from panderm.tasks.concepts.sae import load_sae

    return load_sae(checkpoint, device=device)


def extract_activations(
    checkpoint: str | Path, embeddings_npy: str | Path, output_npy: str | Path, batch_size: int = 512,
    device: str = "cpu",
) -> dict[str, Any]:
    """SAE codes ``[N, F]`` float32 of ``embeddings_npy`` written to ``output_npy``; returns a summary dict.

    ``checkpoint`` is an SAE folder (ours or one with ``autoencoder.pth``) or a reference ``autoencoder.pth``.
    """
    from panderm.tasks.concepts.sae import sae_activations

    if batch_size < 1:
        raise DataError(f"the batch size must be >= 1, got {batch_size}", param="batch_size")
    model, _ = _load_sae(checkpoint, device)
    X = load_array(embeddings_npy, "embeddings", n_cols=model.d_in, cols_of=f"the SAE {checkpoint} (d_in)")
    codes = sae_activations(model, X, batch_size)
    n_active = int(np.count_nonzero((codes > 0).any(axis=0)))
    write_npy(output_npy, codes)
    return {"output": str(output_npy), "shape": list(codes.shape), "n_active": n_active,
            "n_latents": int(model.n_latents)}
