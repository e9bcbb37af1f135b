#!/usr/bin/env bash
# Reference reproduction: PanDerm-2 zero-shot classification on the 7 benchmarks.
# Run from the repository root with the benchmark CSVs under data/zero-shot-classification/
# (layout: data/README.md). No GPU ids are hard-coded: choose one with CUDA_VISIBLE_DEVICES.
#   MODEL=hf-hub:redlessone/DermFM-Zero bash script/zero-shot-eval/PanDerm-v2-zs-classification.sh
set -euo pipefail
MODEL="${MODEL:-hf-hub:redlessone/PanDerm2}"
DATA="${DATA:-data/zero-shot-classification}"
DEVICE="${DEVICE:-cuda}"
python src/main.py \
  --val-data="" \
  --dataset-type csv \
  --batch-size=1024 \
  --zeroshot-eval1="$DATA/pad-zero-shot-test.csv" \
  --zeroshot-eval2="$DATA/HAM-official-7-zero-shot-test.csv" \
  --zeroshot-eval3="$DATA/snu-134-zero-shot-test.csv" \
  --zeroshot-eval4="$DATA/sd-128-zero-shot-test.csv" \
  --zeroshot-eval5="$DATA/daffodil-5-zero-shot-test.csv" \
  --zeroshot-eval6="$DATA/ph2-2-zero-shot-test.csv" \
  --zeroshot-eval7="$DATA/isic2020-2-zero-shot-test.csv" \
  --csv-label-key label \
  --csv-img-key image_path \
  --device "$DEVICE" \
  --model "$MODEL" "$@"
