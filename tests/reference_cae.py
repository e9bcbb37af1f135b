"""An independent, deliberately plain re-statement of the reference CAE tower's forward pass.

Written from the reference's architecture description as explicit
tensor algebra on the raw state dict, with no code shared with panderm, so the
package's tower can be checked against it.
"""
import math

import torch
import torch.nn.functional as F


def sincos_table(grid: int, dim: int) -> torch.Tensor:
    rows = []
    quarter = dim // 4
    for k in range(grid * grid):
        a, b = k // grid, k % grid
        vals = []
        for coord in (a, b):
            for fn in (math.sin, math.cos):
                vals.extend(fn(coord / 10000 ** (d / quarter)) for d in range(quarter))
        rows.append(vals)
    return torch.cat([torch.zeros(1, dim), torch.tensor(rows, dtype=torch.float32)])[None]


def _ln(x, sd, name, eps=1e-6):
    return F.layer_norm(x, (x.shape[-1],), sd[f"{name}.weight"], sd[f"{name}.bias"], eps)


def tower_outputs(sd: dict, x: torch.Tensor, heads: int, prefix: str = "visual.") -> dict:
    """{'tokens_ln', 'pooled_double', 'pooled_single', 'embed', 'cls'} for images x [B,3,H,W]."""
    s = {k[len(prefix):]: v.double() for k, v in sd.items() if k.startswith(prefix)}
    x = x.double()
    w = s["patch_embed.proj.weight"]
    t = F.conv2d(x, w, s["patch_embed.proj.bias"], stride=w.shape[-1]).flatten(2).transpose(1, 2)
    t = torch.cat([s["cls_token"].expand(t.shape[0], -1, -1), t], 1) + s["pos_embed"]
    depth = 1 + max(int(k.split(".")[1]) for k in s if k.startswith("blocks."))
    d = t.shape[-1]
    hd = d // heads
    for i in range(depth):
        p = f"blocks.{i}."
        h = _ln(t, s, p + "norm1")
        bias = torch.cat([s[p + "attn.q_bias"], torch.zeros(d, dtype=h.dtype), s[p + "attn.v_bias"]])
        qkv = h @ s[p + "attn.qkv.weight"].T + bias
        q, k, v = qkv.split(d, dim=-1)
        B, N, _ = q.shape
        q = q.view(B, N, heads, hd).transpose(1, 2)
        k = k.view(B, N, heads, hd).transpose(1, 2)
        v = v.view(B, N, heads, hd).transpose(1, 2)
        attn = torch.softmax((q @ k.transpose(-1, -2)) / math.sqrt(hd), dim=-1)
        o = (attn @ v).transpose(1, 2).reshape(B, N, d)
        o = o @ s[p + "attn.proj.weight"].T + s[p + "attn.proj.bias"]
        t = t + s[p + "gamma_1"] * o
        h = _ln(t, s, p + "norm2")
        h = h @ s[p + "mlp.fc1.weight"].T + s[p + "mlp.fc1.bias"]
        h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
        h = h @ s[p + "mlp.fc2.weight"].T + s[p + "mlp.fc2.bias"]
        t = t + s[p + "gamma_2"] * h
    tokens_ln = _ln(t, s, "norm")
    pooled_double = _ln(tokens_ln[:, 1:].mean(1), s, "norm")
    pooled_single = _ln(t[:, 1:].mean(1), s, "norm")
    out = {"tokens_ln": tokens_ln, "pooled_double": pooled_double, "pooled_single": pooled_single,
           "cls": tokens_ln[:, 0]}
    if "head.weight" in s:
        out["embed"] = pooled_double @ s["head.weight"].T + s["head.bias"]
    return {k: v.float() for k, v in out.items()}
