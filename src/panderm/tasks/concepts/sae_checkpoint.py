"""Reading and writing SAE checkpoints: our ``sae.safetensors`` + ``sae_config.json`` folder, and the reference's
``autoencoder.pth`` (read weights-only through :mod:`panderm.checkpoint_io`)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from panderm.checkpoint_io import load_torch
from panderm.errors import DataError, ModelError
from panderm.report import atomic_path, write_json
from panderm.tasks.concepts.sae_config import SAECheckpointError, SAEConfig
from panderm.tasks.concepts.sae_model import SparseAutoencoder, _check_model_matches

#: File names inside a saved SAE folder.
SAE_WEIGHTS = "sae.safetensors"
SAE_CONFIG = "sae_config.json"
SAE_FORMAT = "panderm-sae"
SAE_FORMAT_VERSION = 1
# Our parameter names, in state-dict order.
_OUR_KEYS = ("pre_bias", "encoder.weight", "encoder.bias", "decoder.weight")
# The reference (ai-safety-foundation/sparse_autoencoder, n_components=1) names for the same tensors.
_REFERENCE_KEYS = {
    "tied_bias": "pre_bias",
    "encoder._weight": "encoder.weight",
    "encoder._bias": "encoder.bias",
    "decoder._weight": "decoder.weight",
}


def save_sae(model: SparseAutoencoder, cfg: SAEConfig, folder: str | Path) -> Path:
    """Write ``folder/sae.safetensors`` and ``folder/sae_config.json`` atomically; return the folder."""
    from safetensors.torch import save_file

    cfg.validate()
    _check_model_matches(model, cfg)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {key: value.detach().float().cpu().contiguous() for key, value in model.state_dict().items()}
    with atomic_path(folder / SAE_WEIGHTS, suffix=".safetensors") as tmp:
        # One metadata entry: safetensors writes the entries in hash order, which changes from process to
        # process, so two would make identical weights differ in bytes. The version is in sae_config.json.
        save_file(tensors, str(tmp), metadata={"format": SAE_FORMAT})
    write_json(
        folder / SAE_CONFIG,
        {
            "format": SAE_FORMAT,
            "version": SAE_FORMAT_VERSION,
            "d_in": model.d_in,
            "n_latents": model.n_latents,
            "k": model.k,
            "config": cfg.to_dict(),
        },
    )
    return folder


def load_sae(path: str | Path, device: str = "cpu") -> tuple[SparseAutoencoder, SAEConfig]:
    """Load an SAE; return ``(model, cfg)`` with the model in eval mode on ``device``.

    ``path`` may be a folder written by :func:`save_sae` (or its ``.safetensors`` / ``.json`` file), or a
    reference ``autoencoder.pth`` (a dict with ``model_state_dict`` and ``model_config``, or a bare state
    dict), read with ``torch.load(weights_only=True)``. For a reference checkpoint the returned config
    holds the shapes and otherwise the reference defaults. Anything else raises
    :class:`SAECheckpointError` (a DataError).
    """
    path = Path(path)
    if not path.exists():
        raise SAECheckpointError(f"SAE checkpoint not found: {path}")
    if path.is_dir():
        if (path / SAE_WEIGHTS).exists() or (path / SAE_CONFIG).exists():
            model, cfg = _load_ours(path)
        elif (path / "autoencoder.pth").exists():
            model, cfg = _load_reference(path / "autoencoder.pth")
        else:
            raise SAECheckpointError(f"{path} holds neither {SAE_WEIGHTS} + {SAE_CONFIG} nor autoencoder.pth")
    elif path.suffix in (".safetensors", ".json"):
        model, cfg = _load_ours(path.parent)
    else:
        model, cfg = _load_reference(path)
    cfg.device = str(device)
    return model.to(device).eval(), cfg


def _load_ours(folder: Path) -> tuple[SparseAutoencoder, SAEConfig]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights, config = folder / SAE_WEIGHTS, folder / SAE_CONFIG
    for needed in (weights, config):
        if not needed.exists():
            raise SAECheckpointError(f"SAE folder {folder} lacks {needed.name}")
    try:
        meta = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SAECheckpointError(f"{config} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != SAE_FORMAT or not isinstance(meta.get("config"), dict):
        raise SAECheckpointError(f"{config} is not a {SAE_FORMAT} config")
    if meta.get("version") != SAE_FORMAT_VERSION:
        raise SAECheckpointError(
            f"{config} has format version {meta.get('version')}; this panderm reads {SAE_FORMAT_VERSION}"
        )
    try:
        cfg = SAEConfig.from_dict(meta["config"])
    except (DataError, TypeError) as exc:
        raise SAECheckpointError(f"{config}: {exc}") from None
    _check_stored_shapes(weights, cfg)  # before the config's sizes are allocated
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise SAECheckpointError(f"{weights} is not a readable safetensors file: {exc}") from None
    model = SparseAutoencoder(cfg.d_in, cfg.latents, cfg.k)
    _load_state(model, state, weights)
    return model, cfg


def _check_stored_shapes(weights: Path, cfg: SAEConfig) -> None:
    """The tensor shapes in the safetensors header (read without loading) must be the ones ``cfg`` claims."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt") as fh:
            stored = {key: tuple(fh.get_slice(key).get_shape()) for key in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise SAECheckpointError(f"{weights} is not a readable safetensors file: {exc}") from None
    d, f = cfg.d_in, cfg.latents
    claimed = {"pre_bias": (d,), "encoder.weight": (f, d), "encoder.bias": (f,), "decoder.weight": (d, f)}
    if set(stored) != set(claimed):
        raise SAECheckpointError(f"{weights}: parameters {sorted(stored)} do not match an SAE's {sorted(claimed)}")
    if stored != claimed:
        held = stored["decoder.weight"]
        raise SAECheckpointError(
            f"{weights.parent / SAE_CONFIG} claims d_in={d}, n_latents={f:,} but {weights.name} holds "
            f"d_in={held[0]}, n_latents={held[1] if len(held) > 1 else '?'}; the two files do not belong together"
        )


def _load_reference(path: Path) -> tuple[SparseAutoencoder, SAEConfig]:
    try:
        obj = load_torch(path, "SAE checkpoint")
    except ModelError as exc:
        raise SAECheckpointError(
            f"{path} cannot be read as a weights-only PyTorch checkpoint (objects other than tensors and "
            f"plain containers are refused): {str(exc).split(': ', 1)[-1]}"
        ) from None
    if isinstance(obj, dict) and "model_state_dict" in obj:
        state, model_config = obj["model_state_dict"], obj.get("model_config") or {}
    elif isinstance(obj, dict):
        state, model_config = obj, {}
    else:
        raise SAECheckpointError(f"{path} holds a {type(obj).__name__}, not an SAE state dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SAECheckpointError(f"{path}: model_state_dict is not a mapping of names to tensors")
    components = model_config.get("n_components", 1) if isinstance(model_config, dict) else 1
    if components not in (1, None):
        raise SAECheckpointError(f"{path} holds {components} SAE components; only single-component SAEs can be read")
    state = _from_reference_layout(state, path)
    d_in, n_latents = state["decoder.weight"].shape
    if isinstance(model_config, dict):
        for key, want in (("n_input_features", d_in), ("n_learned_features", n_latents)):
            if key in model_config and model_config[key] != want:
                raise SAECheckpointError(f"{path}: model_config {key}={model_config[key]} but the weights have {want}")
    # The reference's recipe: no resampling, zero pre-bias.
    if n_latents % d_in == 0:
        cfg = SAEConfig(d_in=d_in, expansion=n_latents // d_in, resample_every=0, pre_bias_init="zeros")
    else:
        cfg = SAEConfig(d_in=d_in, expansion=1, n_latents=n_latents, resample_every=0, pre_bias_init="zeros")
    model = SparseAutoencoder(d_in, n_latents)
    _load_state(model, state, path)
    return model, cfg.validate()


def _from_reference_layout(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Map the reference keys and ``[1, ...]`` component axis onto ours; DataError for anything else."""
    keys = set(state)
    if set(_OUR_KEYS) <= keys and not keys - set(_OUR_KEYS):
        return dict(state)  # already our layout (torch.save(model.state_dict()))
    missing = sorted(set(_REFERENCE_KEYS) - keys)
    # The reference's TiedBias modules hold the same tensor as tied_bias, so it appears under aliases too.
    aliases = sorted(k for k in keys if k.endswith("_bias_reference"))
    unknown = sorted(keys - set(_REFERENCE_KEYS) - set(aliases))
    if missing or unknown:
        found = ", ".join(sorted(keys)[:6]) + (" ..." if len(keys) > 6 else "")
        why = f"missing {missing}" if missing else f"unexpected parameters {unknown[:6]}"
        raise SAECheckpointError(
            f"{path} is not a PanDerm-2 (ReLU, tied-bias) SAE checkpoint: {why}; expected exactly "
            f"{sorted(_REFERENCE_KEYS)}; found {found}"
        )
    ref = {ours: _drop_component_axis(state[theirs], theirs, path) for theirs, ours in _REFERENCE_KEYS.items()}
    for alias in aliases:
        if not torch.equal(_drop_component_axis(state[alias], alias, path), ref["pre_bias"]):
            raise SAECheckpointError(f"{path}: {alias} differs from tied_bias; not a tied-bias SAE")
    return ref


def _drop_component_axis(t: torch.Tensor, name: str, path: Path) -> torch.Tensor:
    base_ndim = 2 if name.endswith("_weight") else 1
    if t.ndim == base_ndim + 1:
        if t.shape[0] != 1:
            raise SAECheckpointError(
                f"{path}: {name} has shape {tuple(t.shape)}, i.e. {t.shape[0]} components; only 1 is supported"
            )
        t = t[0]
    if t.ndim != base_ndim:
        raise SAECheckpointError(f"{path}: {name} has shape {tuple(t.shape)}; expected {base_ndim} dimensions")
    return t


def _load_state(model: SparseAutoencoder, state: dict[str, torch.Tensor], source: Path) -> None:
    """Copy ``state`` into ``model`` after checking names and shapes (one-line errors, not torch's)."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if set(got) != set(expected):
        raise SAECheckpointError(f"{source}: parameters {sorted(got)} do not match an SAE's {sorted(expected)}")
    bad = [f"{k} {got[k]} (expected {expected[k]})" for k in expected if got[k] != expected[k]]
    if bad:
        raise SAECheckpointError(f"{source}: inconsistent SAE shapes: " + "; ".join(bad))
    for k, v in state.items():
        if not torch.is_floating_point(v) or not bool(torch.isfinite(v).all()):
            raise SAECheckpointError(f"{source}: {k} is not a finite floating-point tensor")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
