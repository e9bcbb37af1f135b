"""The CAE/BEiT-style ViT used by PanDerm v1, PanDerm-2 / DermFM-Zero and DermLIP-PanDerm.

Parameter names follow the reference checkpoints (`patch_embed.proj`, `cls_token`,
`pos_embed`, `blocks.N.attn.{qkv,q_bias,v_bias,proj}`, `blocks.N.gamma_{1,2}`,
`blocks.N.mlp.fc{1,2}`, `norm`, `head`), so their state dicts load with strict key
checking and no renaming. Dimensions are inferred from tensor shapes
(`CAEConfig.from_state_dict`), so a reduced-size tower loads through the same path
as the 300M-parameter one.

Pooling variants (docs/REFERENCE.md):
- ``double_ln`` (paper checkpoints): pooled = LN(mean_patches(LN(tokens))) with the
  *same* LayerNorm applied twice.
- ``single_ln`` (DermFM-Zero-Open layout): pooled = LN(mean_patches(tokens)).
- ``cls`` (PanDerm v1 linear probe): pooled = LN(tokens)[:, 0].

Stochastic depth: each `Block` carries a `drop_path` rate (0 after construction, so
loading and inference are untouched); `set_drop_path` gives a tower the reference's
finetuning rule, rates linear 0 -> rate over the blocks, active in train mode only;
`forward_tokens(x, drop_path_rates, attn_bias)` takes per-block rates and attention score
biases for one call (finetuning's drop path and relative position bias).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError

POOLINGS = ("double_ln", "single_ln", "cls")


def cpu_autocast_active() -> bool:
    """Whether the calling code runs under an enabled CPU autocast."""
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


def sincos_pos_embed(grid: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """The fixed 2-D sin-cos position embedding of the CAE code, CLS slot included.

    Layout per patch k (row a = k // grid, column b = k % grid):
    [sin(a·ω), cos(a·ω), sin(b·ω), cos(b·ω)] with ω_d = 1 / T^(d / (dim/4)).
    The CLS position is all zeros. Shape [1, 1 + grid², dim].
    """
    if dim % 4:
        raise ValueError("sin-cos position embedding needs dim divisible by 4")
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    coords = torch.arange(grid, dtype=torch.float32)
    rows = coords.repeat_interleave(grid)  # a = k // grid
    cols = coords.repeat(grid)  # b = k % grid
    out_a = rows[:, None] * omega[None]
    out_b = cols[:, None] * omega[None]
    emb = torch.cat([out_a.sin(), out_a.cos(), out_b.sin(), out_b.cos()], dim=1)
    return torch.cat([torch.zeros(1, dim), emb], dim=0)[None]


@dataclass(frozen=True)
class CAEConfig:
    width: int
    depth: int
    heads: int
    patch_size: int
    image_size: int
    mlp_hidden: int
    head_dim_out: int | None  # projection size; None when the tower has no head
    eps: float = 1e-6

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor], head_width: int = 64, heads: int | None = None) -> "CAEConfig":
        """Infer the tower's shape from its (prefix-free) state dict.

        Head count is the one thing a state dict cannot tell; it follows the
        64-dim-per-head convention of both released sizes unless given.
        """
        try:
            width = sd["cls_token"].shape[-1]
            patch = sd["patch_embed.proj.weight"].shape[-1]
            mlp_hidden = sd["blocks.0.mlp.fc1.weight"].shape[0]
        except KeyError as exc:
            raise ModelError(f"not a CAE/BEiT ViT state dict: key {exc.args[0]} is missing") from exc
        depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
        if "pos_embed" in sd:
            grid = math.isqrt(sd["pos_embed"].shape[1] - 1)
        else:
            grid = 224 // patch
        head = sd.get("head.weight")
        n_heads = heads or max(1, width // head_width)
        if width % n_heads:
            raise ModelError(f"CAE tower width {width} is not divisible by {n_heads} heads")
        return cls(width, depth, n_heads, patch, grid * patch, mlp_hidden, None if head is None else head.shape[0])


def drop_path_rates(depth: int, rate: float) -> list[float]:
    """Per-block stochastic-depth rates, linear from 0 (first block) to `rate` (last), as BEiT/CAE."""
    return [float(x) for x in torch.linspace(0, rate, depth)] if depth else []


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Per-sample stochastic depth (timm's drop_path with scale_by_keep)."""
    # Not timm's DropPath: timm scales the mask (x * (mask / keep)), we the product ((x * mask) / keep); the
    # roundings differ (tests/test_training.py), and the finetuning tests' numbers were made with ours.
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, width: int):
        super().__init__()
        self.proj = nn.Conv2d(3, width, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head attention whose qkv bias is [q_bias, 0, v_bias] (the k bias is fixed at zero)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(width))
        self.v_bias = nn.Parameter(torch.zeros(width))
        self.proj = nn.Linear(width, width)

    def forward(self, x, score_bias: torch.Tensor | None = None):
        """`score_bias` [heads, n, n] is added to the attention logits (finetuning's relative position bias)."""
        b, n, d = x.shape
        bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        if x.device.type == "cpu" and cpu_autocast_active():
            out = self._explicit(q, k, v, score_bias)
        else:
            mask = None if score_bias is None else score_bias.to(q.dtype).unsqueeze(0)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))

    @staticmethod
    def _explicit(q, k, v, score_bias):
        """The reference's attention step by step, softmax((q·scale) @ kᵀ [+ bias]) @ v. Under CPU autocast (the
        reference doors' amp precision on CPU) each step rounds to the half type there: the matmuls are autocast
        ops and softmax keeps its input's dtype, roundings a fused attention kernel does not make."""
        attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
        if score_bias is not None:
            attn = attn + score_bias.unsqueeze(0)
        return attn.softmax(dim=-1) @ v


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm block with LayerScale: x += γ1·Attn(LN1 x); x += γ2·MLP(LN2 x)."""

    def __init__(self, cfg: CAEConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=cfg.eps)
        self.attn = Attention(cfg.width, cfg.heads)
        self.norm2 = nn.LayerNorm(cfg.width, eps=cfg.eps)
        self.mlp = Mlp(cfg.width, cfg.mlp_hidden)
        self.gamma_1 = nn.Parameter(0.1 * torch.ones(cfg.width))
        self.gamma_2 = nn.Parameter(0.1 * torch.ones(cfg.width))
        self.drop_path = 0.0  # a plain float: no state-dict key, so checkpoints load either way

    def forward(self, x, drop_path_rate: float | None = None, score_bias: torch.Tensor | None = None):
        """`drop_path_rate` overrides the block's own rate; `score_bias` [heads, n, n] goes to the attention."""
        rate = self.drop_path if drop_path_rate is None else drop_path_rate
        x = x + drop_path(self.gamma_1 * self.attn(self.norm1(x), score_bias), rate, self.training)
        return x + drop_path(self.gamma_2 * self.mlp(self.norm2(x)), rate, self.training)


class CAEVisionTower(nn.Module):
    """CAE ViT with reference key names and the three reference outputs.

    `forward(x)` returns the projected embedding (what open_clip's `encode_image`
    calls). `features(x)` is the pooled pre-projection vector, `tokens(x)` the
    LayerNormed token sequence whose `[:, 0]` is the CLS the finetuning uses.
    """

    def __init__(self, cfg: CAEConfig, pooling: str = "double_ln", dynamic_size: bool = False):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}")
        self.cfg = cfg
        self.pooling = pooling
        self.dynamic_size = dynamic_size
        self.image_size = cfg.image_size
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        grid = cfg.image_size // cfg.patch_size
        self.pos_embed = nn.Parameter(sincos_pos_embed(grid, cfg.width), requires_grad=False)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.eps)
        self.head = nn.Linear(cfg.width, cfg.head_dim_out) if cfg.head_dim_out else nn.Identity()

    def _pos_embed_for(self, gh: int, gw: int) -> torch.Tensor:
        grid = self.cfg.image_size // self.cfg.patch_size
        if (gh, gw) == (grid, grid):
            return self.pos_embed
        if not self.dynamic_size:
            raise ModelError(
                f"this tower takes {self.cfg.image_size}x{self.cfg.image_size} images, got "
                f"{gh * self.cfg.patch_size}x{gw * self.cfg.patch_size}"
            )
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        patch_pos = patch_pos.reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos, size=(gh, gw), mode="bicubic", align_corners=False)
        return torch.cat([cls_pos, patch_pos.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)], dim=1)

    def n_tokens(self, height: int, width: int) -> int:
        """Length of the token sequence (CLS + patches) for a `height` x `width` image."""
        return 1 + (height // self.cfg.patch_size) * (width // self.cfg.patch_size)

    def forward_tokens(self, x: torch.Tensor, drop_path_rates=None, attn_bias=None) -> torch.Tensor:
        """Token sequence after the last block, before the final norm.

        `drop_path_rates`: one stochastic-depth rate per block (None: each block's own `drop_path`), applied to
        both residual branches in train mode (finetuning's rule, docs/REFERENCE.md). `attn_bias`: one
        [heads, n, n] attention score bias (or None) per block, n = `n_tokens(H, W)` (finetuning's relative
        position bias)."""
        depth = len(self.blocks)
        rates = [None] * depth if drop_path_rates is None else list(drop_path_rates)
        biases = [None] * depth if attn_bias is None else list(attn_bias)
        if len(rates) != depth or len(biases) != depth:
            raise ValueError(f"forward_tokens: {depth} blocks, got {len(rates)} drop path rates and "
                             f"{len(biases)} attention biases")
        gh, gw = x.shape[-2] // self.cfg.patch_size, x.shape[-1] // self.cfg.patch_size
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self._pos_embed_for(gh, gw).to(x.dtype)
        for block, rate, bias in zip(self.blocks, rates, biases):
            x = block(x, rate, bias)
        return x

    def run_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """Token sequence after the last block, before the final norm (each block at its own drop path rate)."""
        return self.forward_tokens(x)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.pooling == "double_ln":
            return self.norm(self.norm(x)[:, 1:].mean(dim=1))
        if self.pooling == "single_ln":
            return self.norm(x[:, 1:].mean(dim=1))
        return self.norm(x)[:, 0]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.run_blocks(x))

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.run_blocks(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def set_drop_path(tower: CAEVisionTower, rate: float) -> list[float]:
    """Give every block of `tower` its stochastic-depth rate (linear 0 -> `rate`); returns the rates."""
    rates = drop_path_rates(len(tower.blocks), rate)
    for block, r in zip(tower.blocks, rates):
        block.drop_path = r
    return rates


class TrunkWrapper(nn.Module):
    """The DermFM-Zero-Open layout: the same tower under a `trunk.` prefix."""

    def __init__(self, trunk: CAEVisionTower):
        super().__init__()
        self.trunk = trunk
        self.image_size = trunk.image_size

    def features(self, x):
        return self.trunk.features(x)

    def tokens(self, x):
        return self.trunk.tokens(x)

    def forward_tokens(self, x, drop_path_rates=None, attn_bias=None):
        return self.trunk.forward_tokens(x, drop_path_rates, attn_bias)

    def forward(self, x):
        return self.trunk(x)


def detect_cae_layout(state_dict: Mapping[str, torch.Tensor], prefix: str = "visual.") -> str | None:
    """Which vision tower a CLIP checkpoint holds, from its keys (never from a name).

    Returns ``"paper"`` (keys `visual.blocks.N.attn.q_bias`), ``"open"``
    (`visual.trunk.blocks.N.attn.q_bias`) or None (a stock open_clip tower).
    """
    if f"{prefix}blocks.0.attn.q_bias" in state_dict:
        return "paper"
    if f"{prefix}trunk.blocks.0.attn.q_bias" in state_dict:
        return "open"
    return None


def build_cae_from_state_dict(
    sd: Mapping[str, torch.Tensor], layout: str, head_width: int = 64, heads: int | None = None
) -> nn.Module:
    """A CAE tower (or its Open-layout wrapper) shaped like the prefix-free `sd`."""
    if layout == "open":
        trunk_sd = {k[len("trunk."):]: v for k, v in sd.items() if k.startswith("trunk.")}
        cfg = CAEConfig.from_state_dict(trunk_sd, head_width=head_width, heads=heads)
        return TrunkWrapper(CAEVisionTower(cfg, pooling="single_ln", dynamic_size=True))
    cfg = CAEConfig.from_state_dict(sd, head_width=head_width, heads=heads)
    return CAEVisionTower(cfg, pooling="double_ln")
