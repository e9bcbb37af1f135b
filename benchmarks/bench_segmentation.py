"""Segmentation training step time and peak memory, frozen vs unfrozen encoder.

A ViT-B-sized CAE tower with random weights (width 768, depth 12, 12 heads, patch 16, 224 px; 86M parameters)
under the reference neck and a UPerNet head (`--head-channels`, default 256, the `panderm segment` default),
one AdamW step per batch of random images and masks (cross-entropy). Each mode runs in its own process so
its peak memory is its own: peak RSS (``ru_maxrss``) on CPU, ``torch.cuda.max_memory_allocated`` on CUDA.

    python benchmarks/bench_segmentation.py                       # CPU, batch 2, 2 warm-up + 3 timed steps
    python benchmarks/bench_segmentation.py --device cuda --batch 16
    python benchmarks/bench_segmentation.py --width 64 --depth 2 --size 32   # smoke
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def one(args) -> dict:
    import torch
    import torch.nn.functional as F

    from panderm.models.cae_vit import CAEConfig, CAEVisionTower
    from panderm.models.vision_only import PanDermV1Encoder
    from panderm.tasks.segmentation.model import SegmentationModel

    torch.manual_seed(0)
    device = torch.device(args.device)
    cfg = CAEConfig(width=args.width, depth=args.depth, heads=max(1, args.width // 64), patch_size=16,
                    image_size=args.size, mlp_hidden=4 * args.width, head_dim_out=None)
    encoder = PanDermV1Encoder(CAEVisionTower(cfg, pooling="cls"), "bench-vit", None, True)
    model = SegmentationModel(encoder, 2, args.head_channels, "bn", freeze_encoder=args.mode == "frozen").to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = (torch.rand(args.batch, args.size, args.size, device=device) > 0.5).long()
    amp = torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else None
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    model.train()
    times = []
    for i in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        if amp is not None:
            with amp:
                logits = model(x)
        else:
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() / 2 ** 20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"mode": args.mode, "device": str(device), "batch": args.batch, "size": args.size,
            "trainable_M": round(sum(p.numel() for p in params) / 1e6, 2),
            "step_s": round(sorted(times)[len(times) // 2], 4), "peak_MB": round(peak, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--head-channels", type=int, default=256)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--mode", default=None, choices=["frozen", "unfrozen"], help="(internal) run one mode")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.mode:
        print(json.dumps(one(args)))
        return 0
    rows = []
    base = [a for a in (argv if argv is not None else sys.argv[1:])]
    for mode in ("frozen", "unfrozen"):
        out = subprocess.run([sys.executable, __file__, *base, "--mode", mode], capture_output=True, text=True,
                             check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    rows[1]["step / frozen"] = round(rows[1]["step_s"] / rows[0]["step_s"], 2)
    rows[1]["peak / frozen"] = round(rows[1]["peak_MB"] / rows[0]["peak_MB"], 2)
    from panderm.report import format_table

    print(format_table(rows, columns=list(rows[1]), floatfmt=".3f"))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
