#!/usr/bin/env bash
# Reference reproduction: export PanDerm-2 image embeddings of an SAE training set, then train the sparse
# autoencoder as PanDerm-2's SAE-training/PanDerm-v2.sh does: train_sae.py's defaults (expansion 8: 768 x 8 =
# 6144 latents, the size of the checkpoint the reference notebooks load; L1 3e-5, lr 5e-4, batch 4096, 200 epochs,
# no resampling). PanDerm-X's later copy of this script passes --expansion 6: EXPANSION=6 reproduces that one.
# See docs/CONCEPTS.md.
# Run from anywhere; paths are relative to the repository root. No GPU id is hard-coded: pick one with
# CUDA_VISIBLE_DEVICES. The reference trained on the (unreleased) Derm1M v2 pretraining CSV; give your own:
#   CSV=data/my_pretrain.csv DATA_ROOT=data/images IMG_COL=filename \
#     bash script/automated-concept-discovery/SAE-training/PanDerm-v2.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../../.."
MODEL="${MODEL:-hf-hub:redlessone/PanDerm2}"
CSV="${CSV:?set CSV to the training-image CSV (one image per row)}"
DATA_ROOT="${DATA_ROOT:?set DATA_ROOT to the folder the CSV image paths are relative to}"
IMG_COL="${IMG_COL:-filename}"
OUT="${OUT:-../automated-concept-discovery-result/SAE-embeddings}"
DEVICE="${DEVICE:-cuda}"
BATCH="${BATCH:-2048}"
NUM_WORKERS="${NUM_WORKERS:-16}"
EXPANSION="${EXPANSION:-8}"

python src/export_visual_features.py \
  --model_name "$MODEL" \
  --csv_path "$CSV" \
  --img_col "$IMG_COL" \
  --data_root "$DATA_ROOT" \
  --batch_size "$BATCH" \
  --num_workers "$NUM_WORKERS" \
  --device "$DEVICE" \
  --output_dir "$OUT"

python automated-concept-discovery/train_sae.py --save_dir "$OUT" --expansion "$EXPANSION" "$@"
