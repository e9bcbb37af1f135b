"""The finetuning model (backbone + pooling + linear head), its frozen parameters and the layer-decay groups."""
from __future__ import annotations

import copy
import re

import torch
from torch import nn

from ...errors import ModelError
from ...models.base import Encoder
from ...models.cae_vit import drop_path_rates as _drop_path_rates
from ...models.cards import card_for

# Not timm's param_groups_layer_decay: it takes layer ids from a model's group_matcher, which this wrapper of any
# backbone lacks (timm then puts every parameter in one layer), so the reference's rule stays here.
_NO_WD_NAMES = ("pos_embed", "cls_token", "positional_embedding", "class_embedding", "position_embedding")
_BLOCK_RE = re.compile(r"(?:^|\.)(?:blocks|resblocks|layers|layer)\.(\d+)\.")


def relative_position_index(grid_h: int, grid_w: int) -> torch.Tensor:
    """[n+1, n+1] index into a BEiT-style relative position bias table of (2h-1)(2w-1)+3 rows (n = h·w).

    Patch pair (i, j) → the row of their offset (Δy, Δx) = pos_i − pos_j, numbered (Δy+h−1)(2w−1) + (Δx+w−1);
    the three extra rows are CLS→patch (first row of the matrix), patch→CLS (first column) and CLS→CLS.
    """
    ys, xs = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + grid_h - 1
    dx = xs[:, None] - xs[None, :] + grid_w - 1
    n_offsets = (2 * grid_h - 1) * (2 * grid_w - 1)
    index = torch.empty(grid_h * grid_w + 1, grid_h * grid_w + 1, dtype=torch.long)
    index[1:, 1:] = dy * (2 * grid_w - 1) + dx
    index[0, :] = n_offsets
    index[:, 0] = n_offsets + 1
    index[0, 0] = n_offsets + 2
    return index


class FinetuneModel(nn.Module):
    """Backbone (an `Encoder`) + pooling + linear head."""

    def __init__(self, encoder: Encoder, n_classes: int, drop_path: float = 0.0, head_init_scale: float = 0.001,
                 image_size: int | None = None, rel_pos_bias: bool = True):
        super().__init__()
        self.encoder = encoder
        self.n_classes = n_classes
        self.mean_pool = card_for(encoder).pooling == "mean"  # PanDerm v1: mean patch tokens + fc_norm
        self.drop_path_applied = False
        self.rel_pos_bias = False
        self.drop_path_rates: list[float] = []
        if self.mean_pool:
            tower = encoder.tower
            # Reference: norm.* -> fc_norm.*; the tower's own norm is then unused.
            self.fc_norm = copy.deepcopy(tower.norm)
            tower.norm.requires_grad_(False)
            dim = tower.cfg.width
            self.drop_path_rates = _drop_path_rates(len(tower.blocks), drop_path)
            self.drop_path_applied = drop_path > 0
            if rel_pos_bias:
                self._add_rel_pos_bias(tower, (image_size or tower.cfg.image_size) // tower.cfg.patch_size)
        else:
            self.fc_norm = nn.Identity()
            dim = _feature_dim(encoder, image_size)
            self.drop_path_applied = _timm_drop_path(encoder, drop_path)
        self.head = nn.Linear(dim, n_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        with torch.no_grad():
            self.head.weight.mul_(head_init_scale)
            self.head.bias.mul_(head_init_scale)

    def _add_rel_pos_bias(self, tower, grid: int) -> None:
        """A zero-initialised relative position bias table per block (the reference finetunes with one: BEiT's
        ``use_rel_pos_bias``). Zero tables leave the pretrained model's outputs unchanged at the start; each
        table lives in its block (``blocks.N.attn.relative_position_bias_table``), so it gets that block's
        layer-decay scale."""
        self.rel_pos_bias = True
        self.rel_pos_grid = grid
        self.register_buffer("rel_pos_index", relative_position_index(grid, grid), persistent=False)
        rows = (2 * grid - 1) ** 2 + 3
        for block in tower.blocks:
            block.attn.relative_position_bias_table = nn.Parameter(torch.zeros(rows, block.attn.heads))

    def _score_bias(self, block, n_tokens: int) -> torch.Tensor | None:
        if not self.rel_pos_bias:
            return None
        if n_tokens != self.rel_pos_index.shape[0]:
            raise ModelError(f"the relative position bias was built for a {self.rel_pos_grid}x{self.rel_pos_grid} "
                             f"patch grid, got {n_tokens - 1} patches; finetune and evaluate at one image size")
        table = block.attn.relative_position_bias_table
        return table[self.rel_pos_index.view(-1)].view(n_tokens, n_tokens, -1).permute(2, 0, 1)

    def _cae_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The tower's tokens with per-sample drop path on each residual branch (and the relative position bias)."""
        tower = self.encoder.tower
        biases = None
        if self.rel_pos_bias:
            n = tower.n_tokens(x.shape[-2], x.shape[-1])
            biases = [self._score_bias(block, n) for block in tower.blocks]
        return tower.forward_tokens(x, self.drop_path_rates, biases)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean_pool:
            return self.fc_norm(self._cae_tokens(x)[:, 1:].mean(dim=1))
        return self.encoder.encode_image(x, "features")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _feature_dim(encoder: Encoder, image_size: int | None) -> int:
    size = image_size or encoder.preprocess_spec.size
    with torch.no_grad():
        out = encoder.encode_image(torch.zeros(1, 3, size, size, device=encoder.device), "features")
    return int(out.shape[-1])


def _timm_drop_path(encoder: Encoder, rate: float) -> bool:
    """Give a timm ViT stochastic depth after construction (load_timm builds it without)."""
    if rate <= 0:
        return False
    model = getattr(encoder, "model", None)
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, (nn.ModuleList, nn.Sequential)) or not len(blocks):
        return False
    if not all(hasattr(b, "drop_path1") and hasattr(b, "drop_path2") for b in blocks):
        return False
    from timm.layers import DropPath

    for block, r in zip(blocks, _drop_path_rates(len(blocks), rate)):
        block.drop_path1 = DropPath(r) if r > 0 else nn.Identity()
        block.drop_path2 = DropPath(r) if r > 0 else nn.Identity()
    return True


def freeze_unused(model: FinetuneModel, image_size: int) -> list[str]:
    """Freeze parameters that get no gradient from the classification path; return their names."""
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[]):
        x = torch.zeros(2, 3, image_size, image_size, device=next(model.parameters()).device)
        model.zero_grad(set_to_none=True)
        model(x).float().sum().backward()
    frozen = []
    for name, p in model.named_parameters():
        if p.requires_grad and p.grad is None:
            p.requires_grad_(False)
            frozen.append(name)
        p.grad = None
    model.train(was_training)
    return frozen


# --------------------------------------------------------------------------- #
# Layer-wise lr decay + AdamW groups
# --------------------------------------------------------------------------- #
def layer_ids(model: FinetuneModel) -> tuple[dict[str, int], int]:
    """Layer id per trainable parameter and the number of blocks L.

    Block j (a `blocks.N.` / `resblocks.N.` / `layers.N.` / `layer.N.` path) -> N + 1;
    backbone parameters registered before the first block (patch/pos/cls embeddings,
    stems) -> 0; everything after the blocks (final norms, fc_norm, head) -> L + 1. This
    is the reference assignment for the CAE tower. A backbone with no recognisable
    blocks (e.g. a ResNet) gets L = 0: every parameter has scale 1, no decay.
    """
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    block_of = {}
    for n in names:
        if n.startswith("encoder."):
            m = _BLOCK_RE.search(n)
            if m:
                block_of[n] = int(m.group(1))
    depth = 1 + max(block_of.values()) if block_of else 0
    ids, seen_block = {}, False
    for n in names:
        if n in block_of:
            ids[n] = block_of[n] + 1
            seen_block = True
        elif n.startswith("encoder.") and not seen_block and depth:
            ids[n] = 0
        else:
            ids[n] = depth + 1
    return ids, depth


def param_groups(model: FinetuneModel, weight_decay: float, layer_decay: float) -> list[dict]:
    """AdamW groups keyed by (layer id, decay); each carries `lr_scale` = layer_decay^(L+1-id)."""
    ids, depth = layer_ids(model)
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_wd = p.ndim <= 1 or name.endswith(".bias") or name.split(".")[-1] in _NO_WD_NAMES
        lid = ids[name]
        key = (lid, not no_wd)
        if key not in groups:
            groups[key] = {"params": [], "param_names": [], "weight_decay": 0.0 if no_wd else weight_decay,
                           "lr_scale": layer_decay ** (depth + 1 - lid), "layer_id": lid}
        groups[key]["params"].append(p)
        groups[key]["param_names"].append(name)
    return [groups[k] for k in sorted(groups)]
