#!/usr/bin/env bash
# PanDerm v1 full finetuning with the reference recipe (ref-panderm1-derm1m.md §1.6, README "recommended
# configuration"): AdamW lr 5e-4, batch 128, 50 epochs, 10 warmup, layer decay 0.65, drop path 0.2,
# weight decay 0.05, mixup 0.8 / cutmix 1.0, weighted sampler, 5-view TTA on the test split.
# No GPU ids are hard-coded: choose one with CUDA_VISIBLE_DEVICES. Paths come from the environment:
#   CSV=data/PAD-UFES-20.csv ROOT=data/images/ CHECKPOINT=model_weights/panderm_ll_data6_checkpoint-499.pth \
#   bash script/finetune/PanDerm-v1-finetune.sh
# The CSV needs image, label (0..K-1) and split (train/val/test) columns. An interrupted run continues
# from OUT/last.pt when re-run (--resume); pass extra flags after the script name, e.g. --eval OUT/best.pt.
set -euo pipefail
: "${CSV:?set CSV to the dataset CSV (image, label, split columns)}"
: "${CHECKPOINT:?set CHECKPOINT to the PanDerm v1 .pth file}"
MODEL="${MODEL:-PanDerm-L}"             # PanDerm-B for the ViT-B/16 checkpoint
ROOT="${ROOT:-$(dirname "$CSV")}"       # folder the image paths are relative to
IMAGE_COL="${IMAGE_COL:-image}"         # the reference's default --image_key
LABEL_COL="${LABEL_COL:-label}"
OUT="${OUT:-runs/finetune/$(basename "$CSV" .csv)_$(basename "$MODEL")}"
SEED="${SEED:-0}"
MONITOR="${MONITOR:-auto}"              # auto = val AUROC for 2 classes, else accuracy (the reference)
DEVICE="${DEVICE:-cuda}"
PYTHON="${PYTHON:-python}"
"$PYTHON" -m panderm finetune \
  --model "$MODEL" --checkpoint "$CHECKPOINT" --device "$DEVICE" \
  --csv "$CSV" --root "$ROOT" --image-col "$IMAGE_COL" --label-col "$LABEL_COL" \
  --epochs 50 --batch-size 128 --lr 5e-4 --warmup-epochs 10 --layer-decay 0.65 --drop-path 0.2 \
  --weight-decay 0.05 --mixup 0.8 --cutmix 1.0 --smoothing 0.1 --weighted-sampler --tta \
  --monitor "$MONITOR" --seed "$SEED" --out "$OUT" --resume "$@"
