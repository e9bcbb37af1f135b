#!/usr/bin/env bash
# PanDerm v1 lesion segmentation with the reference recipe (ref-panderm1-derm1m.md §1.9): UPerNet head on
# blocks 8/12/16/24, AdamW 1e-4, wd 0.05, cosine per epoch, 100 epochs, cross-entropy, colour-only
# augmentation, 224 px, batch size 1; test Dice / Jaccard after the largest connected component.
# No GPU ids are hard-coded: choose one with CUDA_VISIBLE_DEVICES. Paths come from the environment:
#   PARENT_PATH=data/ CHECKPOINT=model_weights/panderm_ll_data6_checkpoint-499.pth \
#   bash script/segmentation/PanDerm-v1-seg.sh
# PARENT_PATH holds ISIC2018/{Training,Validation,Test}_Data and *_GroundTruth. Rerunning continues an
# interrupted run. Extra flags after the script name, e.g. --smoke_test or --batch_size 8.
set -euo pipefail
: "${CHECKPOINT:?set CHECKPOINT to the PanDerm v1 .pth file}"
PARENT_PATH="${PARENT_PATH:-./data/}"
MODEL="${MODEL:-PanDerm-L}"
SEED="${SEED:-0}"
FOLD="${FOLD:-0}"
PERCENT="${PERCENT:-100}"
SAVE_DIR="${SAVE_DIR:-results/segmentation}"
PYTHON="${PYTHON:-python}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
"$PYTHON" "$HERE/segmentation/run.py" \
  --dataset ISIC2018 --parent_path "$PARENT_PATH" --model "$MODEL" --pretrained_path "$CHECKPOINT" \
  --percent "$PERCENT" --fold "$FOLD" --seed "$SEED" --epochs 100 --batch_size 1 --lr 1e-4 \
  --save_dir "$SAVE_DIR" "$@"
