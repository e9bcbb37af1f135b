"""The multimodal fusion model: `PanDermTFormer` (docs/REFERENCE.md).

Layout: one image encoder per enabled image modality (independent copies), the text tower
of the same CLIP model for the metadata sentence (or an MLP on one-hot metadata), then
`FusionHead`, which holds everything after the encoders:

- image fusion (`fusion="cross_attention"`, both images): `CrossTransformer` on single
  tokens. Per layer pair: `x = Layer(x, c) + x`, then `c = Layer(c, x) + c`. `Layer`:
  `x = LN(x)`, `c = LN(c)`, `x = x + MHCA(x, c)`, `x = x + MLP(LN(x))`, MLP
  Linear→GELU→Linear (ratio 1, no dropout). `MHCA`: q = W_q x, (k, v) = W_kv [x; c] (two
  tokens), no qkv bias, scale head_dim^-0.5, out = proj(attn·v + x) (the residual sits
  *inside*, before the output projection).
- metadata fusion (`meta_fusion="cross_attention"`): the metadata token queries
  cat(image features) (c_dim = h · #images); per layer x is projected m → c_dim, through
  the same `Layer`, back to m, plus x (m = the metadata token width). The image features
  it attends to are the encoder outputs *before* image fusion (the reference's
  `cat([cli_f, der_f])`); the fused ones go to the final concatenation.
- concatenation (`final_order` gives it): C+D+M with both cross attentions
  `[der_f_cli, meta_fused, cli_f_derm]`; C+D `[cli, der]`; C+M `[cli, meta_fused]`;
  concatenate modes `[meta_h, cli, der]`.
- head: `linear` = Linear(final_dim, K); `mlp` = Linear(final_dim, 256) → BN → ReLU →
  Dropout(0.3) → Linear(256, K).

Image features (`pool="auto"`, as the reference per model): the CLS of LN(tokens) for a
CAE tower inside a CLIP model (PanDerm-2's `VisionTransformer_FT`); for PanDerm v1
(`PanDerm-Large` / `PanDerm-Base`, built with `use_mean_pooling=True`) `mean`, i.e.
LN(mean of the patch tokens of LN(tokens)) with the tower's own final LayerNorm applied
twice (the reference's default CAE class has no separate `fc_norm`); `features` for other
families. Metadata: a sentence goes through `encoder.encode_text` and
`meta_proj = Linear(text_dim, h)`; one-hot metadata through `MetaSubNet` (Linear, BN, ReLU,
Linear, BN, ReLU, one Dropout 0.3 at the end) with `meta_proj = Identity`, so that token
has width meta_dim (the metadata cross attention projects it to c_dim and back, and the
head's input is h · #images + meta_dim), as the reference.

Drop path: `drop_path` gives the CAE towers per-block stochastic depth (linear 0 → rate,
train mode only); None means the reference's value: 0.1 for a CAE tower inside a CLIP
model (PanDerm-2's `VisionTransformer_FT(drop_path_rate=0.1)`), 0 for PanDerm v1 (the
reference's default class) and other families. Other families never get it.

Departures from the reference (documented in docs/REFERENCE.md):
- `hidden_dim` is the image feature width (the reference required the flag to match it;
  a mismatch there crashed); the text `meta_proj` input is the text width likewise.
- With image fusion by concatenation and metadata cross attention, the order is
  `[der, meta_fused, cli]` (the reference's both-cross-attention order); with one image,
  `[img, meta_fused]`.
- The derm copy of a CLIP model keeps its (unused) text tower; parameters that never get a
  gradient are skipped by Adam, so this costs memory only. `freeze_encoders=True` trains
  the fusion head alone (on cached features in `train.py`).
"""
from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ...errors import ModelError, PandermError
from ...models.cae_vit import set_drop_path
from ...models.cards import cae_tower, card_for

log = logging.getLogger(__name__)

FUSIONS = ("cross_attention", "concatenate")
HEADS = ("linear", "mlp")
POOLS = ("auto", "cls", "mean", "features")


def canonical_fusion(name: str) -> str:
    """'cross attention' (the reference's spelling), 'cross-attention', ... → 'cross_attention'."""
    key = str(name).strip().lower().replace(" ", "_").replace("-", "_")
    if key not in FUSIONS:
        raise PandermError(f"unknown fusion mode {name!r}; use 'cross attention' or 'concatenate'")
    return key


@dataclass
class FusionConfig:
    num_classes: int
    use_cli: bool = True
    use_derm: bool = True
    use_meta: bool = True
    use_text_encoder: bool = True
    fusion: str = "cross_attention"
    meta_fusion: str = "cross_attention"
    att_depth: int = 4
    num_head: int = 8
    meta_att_depth: int = 2
    meta_num_head: int = 8
    meta_dim: int = 768  # MetaSubNet width (one-hot path only)
    meta_in_dim: int = 0  # one-hot vector width (one-hot path only)
    out: str = "mlp"
    use_visual_embedding_layer: bool = False
    pool: str = "auto"

    def check(self) -> None:
        self.fusion = canonical_fusion(self.fusion)
        self.meta_fusion = canonical_fusion(self.meta_fusion)
        if not (self.use_cli or self.use_derm):
            raise PandermError("enable at least one image modality", param="modality")
        if self.out not in HEADS:
            raise PandermError(f"unknown head {self.out!r}; use linear or mlp")
        if self.pool not in POOLS:
            raise PandermError(f"unknown pool {self.pool!r}; use one of {', '.join(POOLS)}")
        if self.num_classes < 2:
            raise PandermError(f"the number of classes must be at least 2, got {self.num_classes}", param="class_num")
        for name in ("att_depth", "num_head", "meta_att_depth", "meta_num_head"):
            if getattr(self, name) < 1:
                raise PandermError(f"{name.replace('_', ' ')} must be at least 1, got {getattr(self, name)}",
                                   param=name)
        # The one-hot width (meta_in_dim) is not checked here: it comes from the training data's vocabulary
        # (MultimodalTrainer sets it), after this check; the fusion head checks it when it is built.


# --------------------------------------------------------------------------- #
# Attention blocks
# --------------------------------------------------------------------------- #
class MHCA(nn.Module):
    """Multi-head cross attention of x over [x; c]; out = proj(attn·v + x)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise PandermError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wkv = nn.Linear(dim, 2 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = self.heads
        q = self.wq(x).reshape(b, n, h, d // h).transpose(1, 2)
        kv = self.wkv(torch.cat([x, c], dim=1)).reshape(b, -1, 2, h, d // h).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, d)
        return self.proj(out + x)


class CrossLayer(nn.Module):
    """x = LN(x); c = LN(c); x = x + MHCA(x, c); x = x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm_x = nn.LayerNorm(dim)
        self.norm_c = nn.LayerNorm(dim)
        self.attn = MHCA(dim, heads)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x, c = self.norm_x(x), self.norm_c(c)
        x = x + self.attn(x, c)
        return x + self.mlp(self.norm_mlp(x))


class CrossTransformer(nn.Module):
    """Image ↔ image fusion on single tokens: x = L(x, c) + x; c = L'(c, x) + c per depth."""

    def __init__(self, dim: int, depth: int, heads: int):
        super().__init__()
        self.layers = nn.ModuleList(nn.ModuleList([CrossLayer(dim, heads), CrossLayer(dim, heads)])
                                    for _ in range(depth))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for x_layer, c_layer in self.layers:
            x = x_layer(x, c) + x
            c = c_layer(c, x) + c
        return x, c


class MetaCrossTransformer(nn.Module):
    """Metadata token over the image feature(s): x = out(L(in(x), c)) + x per depth."""

    def __init__(self, x_dim: int, c_dim: int, depth: int, heads: int):
        super().__init__()
        same = x_dim == c_dim
        self.layers = nn.ModuleList(nn.ModuleList([
            nn.Identity() if same else nn.Linear(x_dim, c_dim),
            CrossLayer(c_dim, heads),
            nn.Identity() if same else nn.Linear(c_dim, x_dim),
        ]) for _ in range(depth))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        for proj_in, layer, proj_out in self.layers:
            x = proj_out(layer(proj_in(x), c)) + x
        return x


class MetaSubNet(nn.Module):
    """One-hot metadata MLP: Linear, BN, ReLU, Linear, BN, ReLU, then one dropout 0.3 (the reference's)."""

    def __init__(self, in_dim: int, meta_dim: int, dropout: float = 0.3):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, meta_dim), nn.BatchNorm1d(meta_dim), nn.ReLU(),
            nn.Linear(meta_dim, meta_dim), nn.BatchNorm1d(meta_dim), nn.ReLU(),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# --------------------------------------------------------------------------- #
# Fusion head (everything after the encoders)
# --------------------------------------------------------------------------- #
class FusionHead(nn.Module):
    """Fuse (clinical, derm, metadata) features of width (h, h, meta) into logits."""

    def __init__(self, cfg: FusionConfig, hidden_dim: int, meta_feat_dim: int | None = None):
        super().__init__()
        cfg.check()
        self.cfg = cfg
        self.hidden_dim = h = hidden_dim
        n_img = int(cfg.use_cli) + int(cfg.use_derm)
        self.n_img = n_img
        if cfg.use_visual_embedding_layer:
            self.cli_embed = nn.Linear(h, h) if cfg.use_cli else None
            self.derm_embed = nn.Linear(h, h) if cfg.use_derm else None
        self.meta_net = None
        self.meta_proj = None
        meta_width = 0
        if cfg.use_meta:
            if cfg.use_text_encoder:
                if not meta_feat_dim:
                    raise PandermError("text metadata needs the text embedding width")
                self.meta_proj = nn.Linear(meta_feat_dim, h)
                meta_width = h
            else:
                if cfg.meta_dim < 1:
                    raise PandermError(f"the metadata width must be at least 1, got {cfg.meta_dim}", param="meta_dim")
                if cfg.meta_in_dim < 1:
                    raise PandermError("one-hot metadata needs its width (meta_in_dim): give the metadata columns "
                                       "so the width follows from the training split", param="meta_cols")
                self.meta_net = MetaSubNet(cfg.meta_in_dim, cfg.meta_dim)
                self.meta_proj = nn.Identity()
                meta_width = cfg.meta_dim
        self.meta_width = meta_width
        self.image_fusion = (CrossTransformer(h, cfg.att_depth, cfg.num_head)
                             if n_img == 2 and cfg.fusion == "cross_attention" else None)
        self.meta_fusion = (MetaCrossTransformer(meta_width, h * n_img, cfg.meta_att_depth, cfg.meta_num_head)
                            if cfg.use_meta and cfg.meta_fusion == "cross_attention" else None)
        self.final_dim = h * n_img + meta_width
        k = cfg.num_classes
        if cfg.out == "linear":
            self.head = nn.Linear(self.final_dim, k)
        else:
            self.head = nn.Sequential(nn.Linear(self.final_dim, 256), nn.BatchNorm1d(256), nn.ReLU(),
                                      nn.Dropout(0.3), nn.Linear(256, k))

    def meta_token(self, meta: torch.Tensor) -> torch.Tensor:
        meta = meta.float()
        if self.meta_net is not None:
            meta = self.meta_net(meta)
        return self.meta_proj(meta)

    def fuse(self, cli_f, der_f, meta_f) -> torch.Tensor:
        """The concatenated feature (before the head); inputs are [B, h] / [B, meta] or None."""
        cfg = self.cfg
        if cfg.use_visual_embedding_layer:
            cli_f = self.cli_embed(cli_f) if cli_f is not None else None
            der_f = self.derm_embed(der_f) if der_f is not None else None
        raw = [f for f in (cli_f, der_f) if f is not None]
        images = raw
        if self.image_fusion is not None:
            x, c = self.image_fusion(cli_f.unsqueeze(1), der_f.unsqueeze(1))
            images = [x.squeeze(1), c.squeeze(1)]  # cli_f_derm, der_f_cli
        if not cfg.use_meta:
            return torch.cat(images, dim=1)
        meta_h = self.meta_token(meta_f)
        if self.meta_fusion is None:
            return torch.cat([meta_h, *images], dim=1)
        # The reference's metadata token attends to cat(cli_f, der_f), the encoder outputs, not the fused pair.
        meta_fused = self.meta_fusion(meta_h.unsqueeze(1), torch.cat(raw, dim=1).unsqueeze(1)).squeeze(1)
        if len(images) == 2:
            return torch.cat([images[1], meta_fused, images[0]], dim=1)
        return torch.cat([images[0], meta_fused], dim=1)

    def forward(self, cli_f, der_f, meta_f) -> torch.Tensor:
        return self.head(self.fuse(cli_f, der_f, meta_f))


# --------------------------------------------------------------------------- #
# Full model
# --------------------------------------------------------------------------- #
def resolve_pool(encoder, pool: str = "auto") -> str:
    """The reference's image feature per model: 'mean' for PanDerm v1, 'cls' for CLIP CAE towers, else 'features'."""
    if pool != "auto":
        if pool in ("cls", "mean") and "tokens" not in encoder.image_kinds:
            raise ModelError(f"{encoder.model_id} gives no token sequence; use pool 'features'")
        if pool == "mean" and cae_tower(encoder) is None:
            raise ModelError(f"{encoder.model_id}: pool 'mean' needs a CAE tower (PanDerm); use 'cls' or 'features'")
        return pool
    return card_for(encoder).pooling


def reference_drop_path(encoder) -> float:
    """The reference's stochastic-depth rate for this encoder's towers (see the module docstring)."""
    return card_for(encoder).drop_path


def image_features(encoder, x: torch.Tensor, pool: str) -> torch.Tensor:
    if pool == "cls":
        return encoder.encode_image(x, "tokens")[:, 0]
    if pool == "mean":
        # use_mean_pooling=True in the reference's default CAE class: its one `norm` before and after the mean
        return cae_tower(encoder).norm(encoder.encode_image(x, "tokens")[:, 1:].mean(dim=1))
    out = encoder.encode_image(x, "features")
    return out.flatten(1) if out.dim() > 2 else out


class PanDermTFormer(nn.Module):
    """Encoders + `FusionHead`; `forward(meta, cli, derm)` → logits (the reference's call order).

    `encoder` is used for the clinical slot (and, for CLIP models, the metadata text);
    the derm slot gets an independent deep copy. With `freeze_encoders=True` the
    encoders are frozen and kept in eval mode.
    """

    def __init__(self, encoder, cfg: FusionConfig, freeze_encoders: bool = False, drop_path: float | None = None):
        super().__init__()
        cfg.check()
        self.cfg = cfg
        self.pool = resolve_pool(encoder, cfg.pool)
        self.drop_path = reference_drop_path(encoder) if drop_path is None else float(drop_path)
        if not 0 <= self.drop_path < 1:
            raise PandermError(f"the drop-path rate must be in [0, 1), got {self.drop_path}", param="drop_path")
        tower = cae_tower(encoder)
        # Set before the derm deep copy below, so both towers carry the same rates.
        self.drop_path_rates = set_drop_path(tower, self.drop_path) if tower is not None else []
        if self.drop_path > 0 and tower is None:
            log.warning("multimodal: %s has no CAE tower; drop path %g is not applied", encoder.model_id,
                        self.drop_path)
        if cfg.use_meta and cfg.use_text_encoder and not encoder.has_text:
            raise ModelError(f"{encoder.model_id} has no text tower for metadata sentences; "
                             "use one-hot metadata (no text encoder) or a CLIP model", param="use_text_encoder",
                             drop=True)
        self.text_encoder = encoder if cfg.use_meta and cfg.use_text_encoder else None
        self.cli_encoder = encoder if cfg.use_cli else None
        self.derm_encoder = None
        if cfg.use_derm:
            self.derm_encoder = copy.deepcopy(encoder) if cfg.use_cli else encoder
        hidden, meta_dim = self._dims(encoder)
        self.fusion = FusionHead(cfg, hidden, meta_dim)
        self.freeze_encoders = freeze_encoders
        if freeze_encoders:
            for enc in self.encoders():
                enc.requires_grad_(False)

    def encoders(self) -> list[nn.Module]:
        out = []
        for enc in (self.cli_encoder, self.derm_encoder, self.text_encoder):
            if enc is not None and all(enc is not e for e in out):
                out.append(enc)
        return out

    def _dims(self, encoder) -> tuple[int, int | None]:
        size = encoder.preprocess_spec.size
        dev = encoder.device
        with torch.no_grad():
            was = encoder.training
            encoder.eval()
            hidden = int(image_features(encoder, torch.zeros(1, 3, size, size, device=dev), self.pool).shape[-1])
            meta = None
            if self.text_encoder is not None:
                ids = encoder.tokenize(["This is a patient with a skin lesion."]).to(dev)
                meta = int(encoder.encode_text(ids).shape[-1])
            encoder.train(was)
        return hidden, meta

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_encoders:
            for enc in self.encoders():
                enc.eval()
        return self

    def encode(self, meta, cli, derm) -> tuple:
        """(cli_f, der_f, meta_f): the encoder outputs the fusion head takes."""
        cli_f = image_features(self.cli_encoder, cli, self.pool) if self.cli_encoder is not None else None
        der_f = image_features(self.derm_encoder, derm, self.pool) if self.derm_encoder is not None else None
        meta_f = None
        if self.cfg.use_meta:
            meta_f = self.text_encoder.encode_text(meta) if self.text_encoder is not None else meta
        return cli_f, der_f, meta_f

    def forward(self, meta, cli, derm) -> torch.Tensor:
        return self.fusion(*self.encode(meta, cli, derm))

    def describe(self) -> dict:
        return {"config": asdict(self.cfg), "pool": self.pool, "hidden_dim": self.fusion.hidden_dim,
                "final_dim": self.fusion.final_dim, "freeze_encoders": self.freeze_encoders,
                "drop_path": self.drop_path,
                "drop_path_applied": bool(self.drop_path > 0 and self.drop_path_rates and not self.freeze_encoders)}


__all__ = ["FusionConfig", "MHCA", "CrossLayer", "CrossTransformer", "MetaCrossTransformer", "MetaSubNet",
           "FusionHead", "PanDermTFormer", "canonical_fusion", "resolve_pool", "image_features", "cae_tower",
           "reference_drop_path"]
