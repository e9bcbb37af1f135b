"""Multimodal finetune step time and peak memory: full finetuning vs --freeze-encoders, same run.

Each mode runs in its own child process (peak RSS is per process), on the tiny PanDerm-2-style CLIP from
tests/tiny_models.py, PAD-UFES-20 C+M (real sample images + metadata), CPU. Step time = one optimiser step
(forward + backward + Adam) on a batch, median over the timed steps after warm-up; frozen mode's encoder
features are cached once beforehand (its one-off cost is reported separately).

    python benchmarks/bench_multimodal.py --batch 16 --steps 10
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(mode: str, batch: int, steps: int, threads: int) -> dict:
    tmp = Path(tempfile.mkdtemp())
    atexit.register(shutil.rmtree, tmp, True)  # the copies run to hundreds of MB
    os.environ["HF_HUB_CACHE"] = str(tmp / "hub")  # a private cache for the tiny text tower, set before HF loads
    os.environ["HF_HUB_OFFLINE"] = "1"
    import numpy as np
    import torch
    import torch.nn.functional as F

    from panderm.models import load_encoder
    from panderm.tasks.multimodal.data import load_pad_ufes20
    from panderm.tasks.multimodal.model import FusionConfig
    from panderm.tasks.multimodal.train import MultimodalTrainer, TrainConfig
    from tiny_models import build_tiny_bert, build_tiny_panderm2, put_in_hf_cache

    torch.set_num_threads(threads)
    put_in_hf_cache(build_tiny_bert(tmp / "bert"), "test/tiny-pubmedbert")
    folder = build_tiny_panderm2(tmp / "p2", text_repo="test/tiny-pubmedbert")
    table = load_pad_ufes20(REPO / "data" / "sample" / "pad_ufes20_sample" / "pad_ufes20_sample.csv")
    fc = FusionConfig(num_classes=6, use_cli=True, use_derm=False, use_meta=True, use_text_encoder=True,
                      num_head=2, meta_num_head=2, att_depth=1, meta_att_depth=1, out="mlp")
    cfg = TrainConfig(epochs=1, batch_size=batch, bootstrap=0, precision="fp32", freeze_encoders=mode == "frozen")
    tr = MultimodalTrainer(load_encoder(f"local-dir:{folder}", device="cpu"), table, fc, cfg, tmp / "run")
    rss_built = _rss_mb()
    t0 = time.perf_counter()
    loader = tr._train_loader(0)  # frozen: encodes + caches the train split here
    batches = [b for _, b in zip(range(steps + 2), loader)]
    prep = time.perf_counter() - t0
    opt, _, _ = tr._build_optim()
    tr.model.train()
    times = []
    for i, b in enumerate(batches):
        t = time.perf_counter()
        loss = F.cross_entropy(tr._logits(b).float(), b[3])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 2:
            times.append(time.perf_counter() - t)
    n_train = sum(p.numel() for p in tr.model.parameters() if p.requires_grad)
    return {"mode": mode, "batch": batch, "trainable params": n_train,
            "step ms (median)": round(1000 * float(np.median(times)), 1),
            "data+cache s": round(prep, 2), "RSS after build MB": round(rss_built, 1),
            "peak RSS MB": round(_rss_mb(), 1), "peak - build MB": round(_rss_mb() - rss_built, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", choices=["full", "frozen"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.batch, args.steps, args.threads)))
        return
    from panderm.report import format_table

    rows = []
    for mode in ("full", "frozen"):
        r = subprocess.run([sys.executable, __file__, "--child", mode, "--batch", str(args.batch),
                            "--steps", str(args.steps), "--threads", str(args.threads)],
                           capture_output=True, text=True, check=True)
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    print(format_table(rows))


if __name__ == "__main__":
    main()
