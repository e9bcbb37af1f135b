#!/usr/bin/env bash
# Reference reproduction: PanDerm-2 zero-shot image-text retrieval on SkinCAP and the Derm1M hold-out.
# Run from the repository root with data/zero-shot-retrieval/ in place (data/README.md). Duplicates are
# counted as competitors, as in the reference; add --group-by COLUMN to count every caption of an image as a hit.
set -euo pipefail
MODEL="${MODEL:-hf-hub:redlessone/PanDerm2}"
DATA="${DATA:-data/zero-shot-retrieval}"
DEVICE="${DEVICE:-cuda}"
for spec in "skincap.csv caption_zh_polish_en" "Derm1M-hold_out.csv truncated_caption"; do
  set -- $spec
  python src/main.py --val-data="$DATA/$1" --dataset-type csv --batch-size=256 \
    --csv-label-key label --csv-img-key filename --csv-caption-key "$2" \
    --device "$DEVICE" --model "$MODEL"
done
