#!/usr/bin/env bash
# Reference reproduction: PanDerm-2 multimodal finetune, MILK-11 (clinical + dermoscopic) (ref-panderm2.md §5.4):
# train.py, then test.py on the best checkpoint (test.py finds it in the output folder). Runs from multimodal_finetune/, as the reference did.
# Paths come from environment variables (relative paths are relative to multimodal_finetune/):
#   DATA_ROOT   dataset roots           (default ../data/multimodal_finetune)
#   OUTPUT_ROOT run folders             (default ../multimodal_finetune-result)
#   MODEL_NAME  any model id            (default PanDerm-v2; also hf-hub:..., local-dir:...)
#   EXTRA_ARGS  more flags for both     (e.g. "--freeze_encoders")
#   TRAIN_ARGS  more flags for train.py (e.g. "--epochs 2"; they override the recipe)
# No GPU ids are hard-coded: choose one with CUDA_VISIBLE_DEVICES.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../../multimodal_finetune"
DATA_ROOT="${DATA_ROOT:-../data/multimodal_finetune}"
OUTPUT_ROOT="${OUTPUT_ROOT:-../multimodal_finetune-result}"
MODEL_NAME="${MODEL_NAME:-PanDerm-v2}"
PY="${PYTHON:-python}"
OUT="$OUTPUT_ROOT/MILK-11/PanDerm-v2_weighted_sampler"
# shellcheck disable=SC2206
EXTRA=(${EXTRA_ARGS:-})
# shellcheck disable=SC2206
TRAIN=(${TRAIN_ARGS:-})
COMMON=(--model_name "$MODEL_NAME" --dataset milk11 --data_dir "$DATA_ROOT/MILK-11" --cuda true
  --class_num 11 --batch_size 32 --hidden_dim 1024 --num_head 8 --att_depth 4 \
  --fusion "cross attention" --encoder_pool mean --out mlp --use_derm --use_cli
  --output_dir "$OUT" "${EXTRA[@]}")
"$PY" train.py "${COMMON[@]}" --epochs 50 --accum_freq 2 --learning_rate 5e-6 --weight_decay 1e-4 --monitor loss --patience 25 --weight_sampler "${TRAIN[@]}"
"$PY" test.py "${COMMON[@]}"
