#!/usr/bin/env bash
# Reference reproduction: the baseline models of the few-shot table at 10% of the training data.
# PANDERM_V1_CKPT must point at the released PanDerm v1 checkpoint (panderm_ll_data6_checkpoint-499.pth).
set -euo pipefail
DATA="${DATA:-data/linear_probe}"
LOGS="${LOGS:-linear-probing-logs}"
DEVICE="${DEVICE:-cuda}"
P="${PERCENT:-0.1}"
declare -A CSVS=([HAM]="HAM-official-7-lp.csv" [PAD]="pad-lp-ws0.csv" [SD128]="sd-128.csv" [ISIC2020]="isic2020-2-lp.csv")
MODELS=(MONET biomedclip open_clip_vit_large_14 "open_clip_hf-hub:redlessone/DermLIP_PanDerm-base-w-PubMed-256")
if [ -n "${PANDERM_V1_CKPT:-}" ]; then MODELS+=(PanDerm); fi
for model in "${MODELS[@]}"; do
  extra=()
  if [ "$model" = "PanDerm" ]; then extra=(--checkpoint "$PANDERM_V1_CKPT"); fi
  for ds in HAM PAD SD128 ISIC2020; do
    python linear_probe/linear_eval.py --batch_size 256 --model "$model" --device "$DEVICE" "${extra[@]}" \
      --csv_filename "${model##*/}_${ds}_results.csv" \
      --output_dir "$LOGS/percent_data_$P/$ds/$model" \
      --csv_path "$DATA/${CSVS[$ds]}" --image_key image_path --percent_data "$P"
  done
done
