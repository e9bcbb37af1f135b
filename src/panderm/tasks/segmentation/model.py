"""Encoder taps → the reference's neck → UPerNet head, in plain PyTorch.

Taps (ref §1.9): four blocks at 1/3, 1/2, 2/3 and 1 of the depth (blocks 8/12/16/24 of 24, i.e. indices
7/11/15/23), each passed through the tower's **final norm** (mmseg's ``out_with_norm``), the CLS token
dropped and the patch tokens laid out as a [B, D, H/p, W/p] map.

Neck (mmseg's BEiT/CAE "fpn1..4"): 2×(deconv 2×2 stride 2) with BN + GELU between → 4× the patch grid,
one deconv → 2×, identity, max-pool → ½.

Head (UPerNet, as mmseg's ``UPerHead``): 1×1 laterals, a pyramid pooling module (scales 1, 2, 3, 6) on the
coarsest map, top-down FPN sums, 3×3 convs, concatenation at the finest scale, a 3×3 fusion conv, dropout 0.1
and a 1×1 classifier. Logits are upsampled (bilinear) to the input size. Written here rather than taken from
segmentation-models-pytorch: its UPerNet decoder is built around its own encoders' feature contract, and a
new dependency would be needed for ~100 lines.

Supported towers: CAE/BEiT (PanDerm v1, PanDerm-2, DermLIP-PanDerm), open_clip ViTs and timm models
(through timm's ``forward_intermediates``; a timm CNN's four stages feed the head directly, without the neck).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ModelError
from ...models.base import Encoder
from ...models.cae_vit import CAEVisionTower, TrunkWrapper


def tap_indices(depth: int) -> list[int]:
    """Blocks at 1/3, 1/2, 2/3 and 1 of `depth` (0-based): 24 → [7, 11, 15, 23]."""
    return [max(0, int(round(depth * f)) - 1) for f in (1 / 3, 1 / 2, 2 / 3, 1.0)]


def _tokens_to_map(tokens: torch.Tensor, gh: int, gw: int) -> torch.Tensor:
    b, n, d = tokens.shape
    return tokens[:, n - gh * gw:].transpose(1, 2).reshape(b, d, gh, gw)


class _CAETaps(nn.Module):
    def __init__(self, tower):
        super().__init__()
        self.tower = tower
        self.depth = len(tower.blocks)
        self.width = tower.cfg.width
        self.patch = tower.cfg.patch_size
        self.is_vit = True

    def _pos(self, gh: int, gw: int) -> torch.Tensor:
        t = self.tower
        grid = t.cfg.image_size // t.cfg.patch_size
        if (gh, gw) == (grid, grid):
            return t.pos_embed
        cls_pos, patch_pos = t.pos_embed[:, :1], t.pos_embed[:, 1:]
        patch_pos = patch_pos.reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos, size=(gh, gw), mode="bicubic", align_corners=False)
        return torch.cat([cls_pos, patch_pos.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)], dim=1)

    def forward(self, x: torch.Tensor, indices: list[int]) -> list[torch.Tensor]:
        t = self.tower
        gh, gw = x.shape[-2] // self.patch, x.shape[-1] // self.patch
        x = t.patch_embed(x)
        x = torch.cat([t.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self._pos(gh, gw).to(x.dtype)
        out = []
        for i, block in enumerate(t.blocks):
            x = block(x)
            if i in indices:
                out.extend([_tokens_to_map(t.norm(x), gh, gw)] * indices.count(i))
        return out


class _OpenCLIPTaps(nn.Module):
    def __init__(self, visual):
        super().__init__()
        self.visual = visual
        self.depth = len(visual.transformer.resblocks)
        self.width = visual.transformer.width
        patch = visual.conv1.kernel_size
        self.patch = patch[0] if isinstance(patch, tuple) else patch
        self.is_vit = True

    def forward(self, x: torch.Tensor, indices: list[int]) -> list[torch.Tensor]:
        v = self.visual
        gh, gw = x.shape[-2] // self.patch, x.shape[-1] // self.patch
        grid = v.grid_size if isinstance(v.grid_size, tuple) else (v.grid_size, v.grid_size)
        if (gh, gw) != tuple(grid):
            raise ModelError(f"this open_clip tower takes {grid[0] * self.patch}-px images, got "
                             f"{x.shape[-2]}x{x.shape[-1]}; use the model's own image size")
        x = v._embeds(x)
        batch_first = getattr(v.transformer, "batch_first", True)
        if not batch_first:
            x = x.transpose(0, 1)
        out = []
        for i, block in enumerate(v.transformer.resblocks):
            x = block(x)
            if i in indices:
                y = x if batch_first else x.transpose(0, 1)
                out.extend([_tokens_to_map(v.ln_post(y), gh, gw)] * indices.count(i))
        return out


class _TimmTaps(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model
        self.is_vit = hasattr(model, "blocks") and hasattr(model, "patch_embed")
        if self.is_vit:
            self.depth = len(model.blocks)
            self.width = model.embed_dim
            p = model.patch_embed.patch_size
            self.patch = p[0] if isinstance(p, (tuple, list)) else p
        else:
            info = getattr(model, "feature_info", None)
            if info is None or not hasattr(model, "forward_intermediates"):
                raise ModelError("this timm model exposes no feature stages (feature_info / forward_intermediates)")
            chans = info.channels() if hasattr(info, "channels") else [f["num_chs"] for f in info]
            self.depth = len(chans)
            self.channels = list(chans[-4:])
            self.width = self.channels[-1]

    def forward(self, x: torch.Tensor, indices: list[int]) -> list[torch.Tensor]:
        if not self.is_vit:
            n = self.depth
            idx = list(range(max(0, n - 4), n))
            return list(self.model.forward_intermediates(x, indices=idx, intermediates_only=True))
        feats = self.model.forward_intermediates(x, indices=sorted(set(indices)), norm=True, output_fmt="NCHW",
                                                 intermediates_only=True)
        by_index = dict(zip(sorted(set(indices)), feats))
        return [by_index[i] for i in indices]


def build_taps(encoder: Encoder) -> nn.Module:
    """The tower inside `encoder` whose intermediate patch tokens can be tapped; ModelError otherwise."""
    for name in ("tower",):
        tower = getattr(encoder, name, None)
        if isinstance(tower, CAEVisionTower):
            return _CAETaps(tower)
    model = getattr(encoder, "model", None)
    visual = getattr(model, "visual", None)
    if isinstance(visual, TrunkWrapper):
        return _CAETaps(visual.trunk)
    if isinstance(visual, CAEVisionTower):
        return _CAETaps(visual)
    try:
        from open_clip.transformer import VisionTransformer

        if isinstance(visual, VisionTransformer):
            return _OpenCLIPTaps(visual)
    except ImportError:  # pragma: no cover
        pass
    if encoder.family == "timm" and model is not None and hasattr(model, "forward_intermediates"):
        return _TimmTaps(model)
    raise ModelError(f"{encoder.model_id}: segmentation needs a tower whose intermediate features can be tapped "
                     "(CAE/PanDerm towers, open_clip ViTs, timm models); this one is a "
                     f"{type(visual or model or encoder).__name__}")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "gn":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    raise ModelError(f"unknown norm {kind!r} (bn, gn)")


class ConvNormAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, norm: str):
        super().__init__(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), _norm(norm, cout), nn.ReLU(inplace=True))


class ViTNeck(nn.Module):
    """The reference's multi-scale neck over four same-size token maps: 4×, 2×, 1×, ½×."""

    def __init__(self, dim: int, norm: str = "bn"):
        super().__init__()
        self.fpn1 = nn.Sequential(nn.ConvTranspose2d(dim, dim, 2, 2), _norm(norm, dim), nn.GELU(),
                                  nn.ConvTranspose2d(dim, dim, 2, 2))
        self.fpn2 = nn.ConvTranspose2d(dim, dim, 2, 2)
        self.fpn3 = nn.Identity()
        self.fpn4 = nn.MaxPool2d(2, 2)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return [op(f) for op, f in zip((self.fpn1, self.fpn2, self.fpn3, self.fpn4), feats)]


class UPerHead(nn.Module):
    def __init__(self, in_channels: list[int], channels: int, num_classes: int, pool_scales=(1, 2, 3, 6),
                 norm: str = "bn", dropout: float = 0.1):
        super().__init__()
        self.pool_scales = tuple(pool_scales)
        self.ppm = nn.ModuleList(nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvNormAct(in_channels[-1], channels, 1, norm))
                                 for s in self.pool_scales)
        self.bottleneck = ConvNormAct(in_channels[-1] + len(self.pool_scales) * channels, channels, 3, norm)
        self.lateral = nn.ModuleList(ConvNormAct(c, channels, 1, norm) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvNormAct(channels, channels, 3, norm) for _ in in_channels[:-1])
        self.fpn_bottleneck = ConvNormAct(len(in_channels) * channels, channels, 3, norm)
        self.dropout = nn.Dropout2d(dropout)
        self.cls_seg = nn.Conv2d(channels, num_classes, 1)

    def _psp(self, x: torch.Tensor) -> torch.Tensor:
        outs = [x] + [F.interpolate(m(x), size=x.shape[-2:], mode="bilinear", align_corners=False) for m in self.ppm]
        return self.bottleneck(torch.cat(outs, dim=1))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        laterals = [conv(f) for conv, f in zip(self.lateral, feats[:-1])] + [self._psp(feats[-1])]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:],
                                                              mode="bilinear", align_corners=False)
        outs = [conv(l) for conv, l in zip(self.fpn_convs, laterals[:-1])] + [laterals[-1]]
        size = outs[0].shape[-2:]
        outs = [outs[0]] + [F.interpolate(o, size=size, mode="bilinear", align_corners=False) for o in outs[1:]]
        return self.cls_seg(self.dropout(self.fpn_bottleneck(torch.cat(outs, dim=1))))


class SegmentationModel(nn.Module):
    """encoder taps → neck (ViTs) → UPerNet head → logits [B, K, H, W] at the input size."""

    def __init__(self, encoder: Encoder, num_classes: int = 2, head_channels: int = 256, norm: str = "bn",
                 freeze_encoder: bool = False):
        super().__init__()
        self.encoder = encoder
        self.taps = build_taps(encoder)
        self.indices = tap_indices(self.taps.depth) if self.taps.is_vit else list(range(4))
        self.freeze_encoder = freeze_encoder
        if self.taps.is_vit:
            self.neck = ViTNeck(self.taps.width, norm)
            in_ch = [self.taps.width] * 4
        else:
            self.neck = nn.Identity()
            in_ch = self.taps.channels
        self.head = UPerHead(in_ch, head_channels, num_classes, norm=norm)
        if freeze_encoder:
            encoder.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()  # frozen: no dropout / drop path / BN updates in the backbone
        return self

    def trainable_state(self) -> dict:
        """What a checkpoint must hold: head and neck, plus the encoder when it is trained."""
        return {k: v for k, v in self.state_dict().items()
                if not (self.freeze_encoder and (k.startswith("encoder.") or k.startswith("taps.")))}

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.freeze_encoder:
            with torch.no_grad():
                feats = self.taps(x, self.indices)
            feats = [f.detach() for f in feats]
        else:
            feats = self.taps(x, self.indices)
        return self.neck(feats) if self.taps.is_vit else feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.features(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
