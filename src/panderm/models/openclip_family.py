"""open_clip models: `hf-hub:ORG/NAME[@REV]`, `local-dir:PATH`, or a config name + weights.

We resolve the files ourselves and build the model from its `model_cfg` with
open_clip's own classes, rather than calling `open_clip.create_model`, because:
- the PanDerm CAE vision tower is not an open_clip tower: it is chosen from the
  checkpoint's keys (never from the model name, as the reference does) and
  swapped in before one strict load of the whole checkpoint;
- open_clip initialises randomly and only logs when weights are missing; here
  that is an error unless random init is asked for;
- configs carrying keys stock open_clip does not know (the fork's
  `vision_cfg.pretrain_path`) are cleaned instead of raising TypeError.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import ModelError
from .base import Encoder, PreprocessSpec
from .cae_vit import TrunkWrapper, CAEVisionTower, build_cae_from_state_dict, detect_cae_layout
from .checkpoints import load_strict, read_state_dict
from .hub import cache_only, not_cached_message

log = logging.getLogger(__name__)

WEIGHT_FILES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
)
HUB_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")


@dataclass
class ResolvedFiles:
    model_id: str
    config: dict
    weights: Path | None
    folder: Path | None  # where config.json / tokenizer files of an HF text tower may sit


class _NotCached(ModelError):
    """A hub file that is not in the local cache while the hub cannot be (or must not be) asked."""


def _hub_download(repo: str, filename: str, revision: str | None) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        # HF_TOKEN is read by huggingface_hub itself; an unreachable hub (one short probe) or HF_HUB_OFFLINE=1
        # means the local cache only, without huggingface_hub's retries.
        return Path(hf_hub_download(repo, filename, revision=revision, local_files_only=cache_only()))
    except GatedRepoError as exc:
        raise ModelError(f"hf-hub:{repo} is gated: accept its terms on the hub and set HF_TOKEN") from exc
    except RepositoryNotFoundError as exc:
        raise ModelError(f"hf-hub:{repo} not found (or private: set HF_TOKEN)") from exc
    except RevisionNotFoundError as exc:
        raise ModelError(f"hf-hub:{repo} has no revision {revision!r}") from exc
    except LocalEntryNotFoundError as exc:
        # Subclass of EntryNotFoundError in recent huggingface_hub: test it first.
        raise _NotCached(not_cached_message(f"hf-hub:{repo}: {filename}")) from exc
    except EntryNotFoundError:
        raise FileNotFoundError(filename)


def resolve_hf_hub(spec: str) -> ResolvedFiles:
    import json

    repo, _, revision = spec.partition("@")
    if repo.count("/") != 1:
        raise ModelError(f"hf-hub id must look like hf-hub:ORG/NAME, got hf-hub:{spec}")
    try:
        config_path = _hub_download(repo, "open_clip_config.json", revision or None)
    except FileNotFoundError:
        raise ModelError(f"hf-hub:{repo} has no open_clip_config.json: it is not an open_clip model") from None
    weights = None
    not_cached: _NotCached | None = None
    for name in HUB_WEIGHT_FILES:
        try:
            weights = _hub_download(repo, name, revision or None)
            break
        except FileNotFoundError:
            continue  # the repo has no file of that name: try the next one
        except _NotCached as exc:
            not_cached = not_cached or exc  # from the cache only: the repo may hold the other file name
    if weights is None and not_cached is not None:
        raise not_cached
    config = json.loads(config_path.read_text(encoding="utf-8"))
    return ResolvedFiles(f"hf-hub:{spec}", config, weights, None)


def resolve_local_dir(path: str) -> ResolvedFiles:
    import json

    folder = Path(path).expanduser()
    config_path = folder / "open_clip_config.json"
    if not folder.is_dir():
        raise ModelError(f"local-dir:{path}: no such folder")
    if not config_path.is_file():
        raise ModelError(f"local-dir:{path}: open_clip_config.json is missing")
    weights = next((folder / n for n in WEIGHT_FILES if (folder / n).is_file()), None)
    if weights is None:
        found = sorted(p for ext in ("*.safetensors", "*.bin", "*.pth", "*.pt") for p in folder.glob(ext))
        weights = found[0] if found else None
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelError(f"{config_path}: invalid JSON ({exc.msg}, line {exc.lineno})") from exc
    return ResolvedFiles(f"local-dir:{path}", config, weights, folder)


def _pretrained_weights(cfg: dict, name: str, pretrained: str) -> Path:
    """open_clip's download of a pretrained tag; from the local HF cache only when the hub cannot be reached."""
    from open_clip import pretrained as oc_pretrained

    local = bool(cfg.get("hf_hub")) and "file" not in cfg and cache_only()  # after a failed probe: no retries
    try:
        return Path(oc_pretrained.download_pretrained(cfg))
    except Exception as exc:
        if local:
            raise ModelError(not_cached_message(f"{name}/{pretrained} weights (hf-hub:{cfg['hf_hub']})")) from exc
        raise


def resolve_config_name(name: str, pretrained: str | None) -> ResolvedFiles:
    """A built-in open_clip config name with a weights file or a pretrained tag."""
    import open_clip
    from open_clip import pretrained as oc_pretrained

    model_cfg = open_clip.get_model_config(name)
    if model_cfg is None:
        raise ModelError(f"unknown open_clip config {name!r}")
    preprocess_cfg: dict[str, Any] = {}
    weights = None
    if pretrained:
        if Path(pretrained).expanduser().is_file():
            weights = Path(pretrained).expanduser()
        else:
            cfg = oc_pretrained.get_pretrained_cfg(name, pretrained)
            if not cfg:
                raise ModelError(f"{pretrained!r} is neither a file nor a pretrained tag of {name}")
            preprocess_cfg = {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg}
            if cfg.get("quick_gelu"):
                # OpenAI weights were trained with QuickGELU (open_clip only warns; the reference always used it).
                model_cfg = {**model_cfg, "quick_gelu": True}
            try:
                weights = _pretrained_weights(cfg, name, pretrained)
            except ModelError:
                raise
            except Exception as exc:
                raise ModelError(f"cannot download {name}/{pretrained} weights (offline?): {exc}") from exc
    return ResolvedFiles(name, {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}, weights, None)


def _clean_cfg(cfg: dict, dataclass_type, where: str) -> dict:
    known = {f.name for f in dataclasses.fields(dataclass_type)}
    dropped = sorted(set(cfg) - known)
    if dropped:
        log.info("ignoring %s keys unknown to open_clip: %s", where, ", ".join(dropped))
    return {k: v for k, v in cfg.items() if k in known}


def _has_tokenizer_files(folder: Path | None) -> bool:
    return folder is not None and any((folder / f).is_file() for f in _TOKENIZER_FILES)


def _prepare_state_dict(sd: dict, model: nn.Module) -> dict:
    from open_clip.model import convert_to_custom_text_state_dict

    sd = dict(sd)
    # DermFM-Zero-Open ships its frozen knowledge-distillation teacher; it is not part of the CLIP model.
    dropped = [k for k in sd if k.startswith("knowledge_encoder.")]
    for k in dropped:
        del sd[k]
    if dropped:
        log.info("dropped %d knowledge_encoder.* keys (training-only teacher)", len(dropped))
    if "positional_embedding" in sd and not hasattr(model, "positional_embedding"):
        sd = convert_to_custom_text_state_dict(sd)
    # transformers >= 4.31 no longer stores position_ids as a buffer.
    sd.pop("text.transformer.embeddings.position_ids", None)
    if "logit_scale" in sd and sd["logit_scale"].ndim != model.logit_scale.ndim:
        sd["logit_scale"] = sd["logit_scale"].reshape(model.logit_scale.shape)
    return sd


def _biased_mlp_proj(sd: dict, prefix: str = "text.proj.") -> nn.Module | None:
    """The Open checkpoint's text projection has biases; stock open_clip's has none."""
    if f"{prefix}0.bias" not in sd:
        return None
    w0, w2 = sd[f"{prefix}0.weight"], sd[f"{prefix}2.weight"]
    return nn.Sequential(nn.Linear(w0.shape[1], w0.shape[0]), nn.GELU(), nn.Linear(w2.shape[1], w2.shape[0]))


def build_openclip_model(files: ResolvedFiles, allow_random_init: bool = False
                         ) -> tuple[nn.Module, dict, str | None, bool, dict]:
    """Build the open_clip model for `files` and load its weights strictly.

    Returns (model, text_cfg, cae_layout, random_init, built): `built` holds every construction kwarg derived
    from the config (the model's configuration record, part of its fingerprint).
    """
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg, CustomTextCLIP

    if "model_cfg" not in files.config:
        raise ModelError(f"{files.model_id}: open_clip_config.json has no 'model_cfg'")
    model_cfg = copy.deepcopy(files.config["model_cfg"])
    if files.weights is None and not allow_random_init:
        raise ModelError(f"{files.model_id}: no weights file found (random weights are evaluated only on request)",
                         param="allow_random_init")
    sd = read_state_dict(files.weights) if files.weights is not None else None
    layout = detect_cae_layout(sd) if sd is not None else model_cfg.get("panderm_cae_layout")

    vision_cfg = dict(model_cfg.pop("vision_cfg", {}))
    text_cfg = dict(model_cfg.pop("text_cfg", {}))
    # The CAE head count is not in any tensor shape: an explicit `heads` / `head_width` in vision_cfg wins,
    # else 64 dims per head (both released sizes). The fork's placeholder ViT config says nothing about it.
    cae_heads = vision_cfg.get("cae_heads") or vision_cfg.get("heads")
    head_width = int(vision_cfg.get("cae_head_width") or vision_cfg.get("head_width") or 64)
    if layout:
        # Throwaway placeholder: the real tower is swapped in below.
        vision_cfg = {"image_size": 32, "layers": 1, "width": 32, "head_width": 32, "patch_size": 16}
    vision_cfg = _clean_cfg(vision_cfg, CLIPVisionCfg, "vision_cfg")
    text_cfg = _clean_cfg(text_cfg, CLIPTextCfg, "text_cfg")
    hf_text = bool(text_cfg.get("hf_model_name"))
    if hf_text:
        # Text weights come from the CLIP checkpoint: only the BERT config is needed.
        text_cfg["hf_model_pretrained"] = False
        if files.folder is not None and (files.folder / "config.json").is_file():
            text_cfg["hf_model_name"] = str(files.folder)
        if sd is not None and "text.transformer.pooler.dense.weight" in sd:
            text_cfg["hf_pooler_type"] = "cls_pooler"

    embed_dim = model_cfg.pop("embed_dim", None)
    if embed_dim is None:
        raise ModelError(f"{files.model_id}: model_cfg has no embed_dim")
    quick_gelu = bool(model_cfg.pop("quick_gelu", False))
    custom_text = model_cfg.pop("custom_text", False) or hf_text
    kwargs = {k: model_cfg[k] for k in ("init_logit_scale", "init_logit_bias", "nonscalar_logit_scale") if k in model_cfg}
    cls = CustomTextCLIP if custom_text else CLIP
    try:
        model = cls(embed_dim=embed_dim, vision_cfg=vision_cfg, text_cfg=text_cfg, quick_gelu=quick_gelu, **kwargs)
    except OSError as exc:  # transformers could not find the text tower's config
        raise ModelError(
            f"{files.model_id}: cannot build the text tower {text_cfg.get('hf_model_name')!r}: "
            f"{str(exc).splitlines()[0]}"
        ) from exc

    # A text tower read from the model's own folder is recorded by role, not by where the folder sits.
    built_text = {k: ("<model folder>" if files.folder is not None and v == str(files.folder) else v)
                  for k, v in text_cfg.items()}
    built = {"class": cls.__name__, "embed_dim": embed_dim, "quick_gelu": quick_gelu, "kwargs": kwargs,
             "vision_cfg": vision_cfg, "text_cfg": built_text, "cae_layout": layout}
    if layout:
        visual_sd = {k[len("visual."):]: v for k, v in (sd or {}).items() if k.startswith("visual.")}
        if visual_sd:
            model.visual = build_cae_from_state_dict(visual_sd, layout, head_width=head_width, heads=cae_heads)
        else:
            raise ModelError(f"{files.model_id}: a CAE tower needs weights to infer its shape")
        built["cae"] = {"heads": cae_heads, "head_width": head_width}
    if sd is not None:
        proj = _biased_mlp_proj(sd)
        if proj is not None and hasattr(model, "text"):
            model.text.proj = proj
            built["biased_text_proj"] = True
        load_strict(model, _prepare_state_dict(sd, model), str(files.weights))
    return model.eval(), {**text_cfg, "_hf": hf_text}, layout, sd is None, built


def build_tokenizer(files: ResolvedFiles, text_cfg: dict):
    from open_clip.tokenizer import HFTokenizer, SimpleTokenizer

    context = int(text_cfg.get("context_length") or 77)
    if text_cfg.get("_hf"):
        name = text_cfg.get("hf_tokenizer_name") or text_cfg.get("hf_model_name")
        if _has_tokenizer_files(files.folder):
            name = str(files.folder)
        try:
            return HFTokenizer(name, context_length=context, **text_cfg.get("tokenizer_kwargs", {}))
        except OSError as exc:
            raise ModelError(f"{files.model_id}: cannot load tokenizer {name!r}: {str(exc).splitlines()[0]}") from exc
    return SimpleTokenizer(context_length=context)


def preprocess_from_config(files: ResolvedFiles, model: nn.Module) -> PreprocessSpec:
    cfg = dict(files.config.get("preprocess_cfg") or {})
    size = cfg.get("size") or getattr(model.visual, "image_size", 224)
    if isinstance(size, (tuple, list)):
        size = size[0]
    spec = PreprocessSpec(size=int(size))
    if cfg.get("mean"):
        spec.mean = tuple(cfg["mean"])
    if cfg.get("std"):
        spec.std = tuple(cfg["std"])
    spec.interpolation = cfg.get("interpolation") or spec.interpolation
    spec.resize_mode = cfg.get("resize_mode") or spec.resize_mode
    return spec


class OpenCLIPEncoder(Encoder):
    family = "open_clip"

    def __init__(self, model: nn.Module, files: ResolvedFiles, tokenizer, spec: PreprocessSpec, layout, random_init):
        extra = {"vision_tower": f"cae-{layout}" if layout else type(model.visual).__name__}
        if files.weights is not None:
            extra["weights_file"] = files.weights.name
        super().__init__(files.model_id, spec, tokenizer, random_init=random_init, extra=extra)
        self.model = model
        self.layout = layout
        from open_clip.transformer import VisionTransformer

        self._oc_vit = isinstance(model.visual, VisionTransformer)
        if not isinstance(model.visual, (CAEVisionTower, TrunkWrapper)):
            self.image_kinds = ("embed", "features")

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())

    def _image(self, x, kind):
        visual = self.model.visual
        if kind == "embed":
            return self.model.encode_image(x)
        if kind == "tokens":
            return visual.tokens(x)
        if isinstance(visual, (CAEVisionTower, TrunkWrapper)):
            return visual.features(x)
        if self._oc_vit and visual.proj is not None:
            # Pooled pre-projection features: the stock tower without its projection.
            proj, visual.proj = visual.proj, None
            try:
                out = visual(x)
            finally:
                visual.proj = proj
            return out[0] if isinstance(out, tuple) else out
        return self.model.encode_image(x)

    def _text(self, ids):
        return self.model.encode_text(ids)

    @property
    def embed_is_features(self) -> bool:
        # CAE and timm-trunk towers project; a stock ViT projects unless its `proj` was removed; other towers
        # (ModifiedResNet, ...) have no separate `features`.
        visual = self.model.visual
        if isinstance(visual, (CAEVisionTower, TrunkWrapper)):
            return False
        return not self._oc_vit or visual.proj is None

    def projection_head(self):
        visual = self.model.visual
        if isinstance(visual, CAEVisionTower):
            return visual.head
        if isinstance(visual, TrunkWrapper):
            return visual.trunk.head
        if self._oc_vit and visual.proj is not None:
            proj = visual.proj
            return lambda f: f @ proj
        return super().projection_head()  # no projection: `features` is `embed`


def load_openclip(
    model_id: str, pretrained: str | None = None, allow_random_init: bool = False
) -> OpenCLIPEncoder:
    if model_id.startswith("hf-hub:"):
        files = resolve_hf_hub(model_id[len("hf-hub:"):])
    elif model_id.startswith("local-dir:"):
        files = resolve_local_dir(model_id[len("local-dir:"):])
    else:
        files = resolve_config_name(model_id, pretrained)
    if pretrained and model_id.startswith(("hf-hub:", "local-dir:")):
        # An explicit weights file (a finetuned CLIP) replaces the folder's own.
        files.weights = Path(pretrained).expanduser()
        if not files.weights.is_file():
            raise ModelError(f"weights file not found: {pretrained}")
    model, text_cfg, layout, random_init, built = build_openclip_model(files, allow_random_init)
    random_init = random_init or bool(files.config.get("panderm_random_init"))
    tokenizer = build_tokenizer(files, text_cfg)
    spec = preprocess_from_config(files, model)
    encoder = OpenCLIPEncoder(model, files, tokenizer, spec, layout, random_init)
    # The whole config file as read (open_clip_config.json, or the built-in config + pretrained tag) and what
    # was derived from it: a config edit that keeps every tensor shape still changes the fingerprint.
    encoder.model_config = {"config_file": files.config, "built": built, "tokenizer": type(tokenizer).__name__,
                            "context_length": int(text_cfg.get("context_length") or 77)}
    return encoder
