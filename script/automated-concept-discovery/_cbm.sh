#!/usr/bin/env bash
# Shared steps of the CBM reproductions (ref-panderm2 §6.4), called by */PanDerm-v2-SAE.sh: export PanDerm-2
# embeddings of $DATA/meta.csv, turn them into SAE codes, then run the 50-split L1 CBM on the codes (weights
# saved to $RESULT) and on the raw embeddings (the baseline, nothing saved). Paths are relative to the repository
# root; no GPU id is hard-coded (use CUDA_VISIBLE_DEVICES). The reference also passes --image_col, --image_dir
# and --gpu to 1_train_clf_binary-class.py; the door accepts them but they change nothing, so they are left out.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
TASK="${TASK:?set TASK to clinical-malignant or dermoscopic-melanoma}"
MODEL="${MODEL:-hf-hub:redlessone/PanDerm2}"
SAE="${SAE:-../automated-concept-discovery-result/SAE-embeddings/autoencoder.pth}"
DATA="${DATA:-data/automated-concept-discovery/$TASK}"
IMAGES="${IMAGES:-$DATA/final_images}"
RESULT="${RESULT:-../automated-concept-discovery-result/$TASK}"
DEVICE="${DEVICE:-cuda}"

python src/export_visual_features.py --model_name "$MODEL" --csv_path "$DATA/meta.csv" --data_root "$IMAGES" \
  --img_col ImageID --batch_size 2048 --num_workers 16 --device "$DEVICE" --output_dir "$RESULT"
python automated-concept-discovery/0_extract_sae_activations.py --checkpoint "$SAE" \
  --embeddings "$RESULT/all_embeddings.npy" --output "$RESULT/learned_activation.npy"

echo "== CBM on the SAE codes"
python automated-concept-discovery/1_train_clf_binary-class.py --csv "$DATA/meta.csv" \
  --embeddings "$RESULT/learned_activation.npy" --output "$RESULT"
echo "== baseline on the image embeddings"
python automated-concept-discovery/1_train_clf_binary-class.py --csv "$DATA/meta.csv" \
  --embeddings "$RESULT/all_embeddings.npy"
