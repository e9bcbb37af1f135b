#!/usr/bin/env bash
# Reference reproduction: PanDerm-2 linear probing at 10/30/50/100% of the training data on HAM, PAD, SD-128
# and ISIC2020. Run from the repository root with data/linear_probe/ in place (data/README.md).
# No GPU ids are hard-coded: choose one with CUDA_VISIBLE_DEVICES.
set -euo pipefail
MODEL="${MODEL:-open_clip_hf-hub:redlessone/PanDerm2}"
DATA="${DATA:-data/linear_probe}"
LOGS="${LOGS:-linear-probing-logs}"
DEVICE="${DEVICE:-cuda}"
declare -A CSVS=([HAM]="HAM-official-7-lp.csv" [PAD]="pad-lp-ws0.csv" [SD128]="sd-128.csv" [ISIC2020]="isic2020-2-lp.csv")
NAME="${MODEL##*/}"
for p in 0.1 0.3 0.5 1.0; do
  for ds in HAM PAD SD128 ISIC2020; do
    python linear_probe/linear_eval.py --batch_size 256 --model "$MODEL" --device "$DEVICE" \
      --csv_filename "${NAME}_${ds}_results.csv" \
      --output_dir "$LOGS/percent_data_$p/$ds/$MODEL" \
      --csv_path "$DATA/${CSVS[$ds]}" --image_key image_path --percent_data "$p"
  done
done
