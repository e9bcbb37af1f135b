#!/usr/bin/env bash
# Shared steps of the ISIC bias-intervention reproductions (ref-panderm2 §6.6), called by PanDerm-v2-SAE-*.sh:
# export embeddings and SAE codes per split, fit the biased CBM (random_state 42), zero the top-N latents matched
# to $CONCEPT in the test codes, and re-score the same classifier. Paths are relative to the repository root;
# no GPU id is hard-coded (use CUDA_VISIBLE_DEVICES). Needs data/automated-concept-discovery/ISIC_${BIAS}_bias/
# {train,test}.csv (column ImageID, label = last column), SAE=path/to/autoencoder.pth (or an SAE folder) and
# IMAGES=the folder the ImageID paths are relative to. The reference also passes --image_root/--image_col to step 3
# and --data_dir to step 4; the doors accept them but they change nothing, so they are left out here.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../../.."
BIAS="${BIAS:?set BIAS to hair, ink or ruler}"
MODEL="${MODEL:-hf-hub:redlessone/PanDerm2}"
SAE="${SAE:?set SAE to the trained SAE (autoencoder.pth or a panderm SAE folder)}"
IMAGES="${IMAGES:?set IMAGES to the folder the ImageID paths are relative to}"
DATA="${DATA:-data/automated-concept-discovery/ISIC_${BIAS}_bias}"
RESULT="${RESULT:-../automated-concept-discovery-result/ISIC_${BIAS}_bias/PanDermv2}"
DEVICE="${DEVICE:-cuda}"
CONCEPT="${CONCEPT:?set CONCEPT to the text to intervene on}"
TOP_N="${TOP_N:-5}"

for split in train test; do
  # 1. embeddings, 2. SAE codes (learned_activation.npy), per split
  python src/export_visual_features.py --model_name "$MODEL" --csv_path "$DATA/$split.csv" --img_col ImageID \
    --data_root "$IMAGES" --device "$DEVICE" --output_dir "$RESULT/$split"
  python automated-concept-discovery/0_extract_sae_activations.py --checkpoint "$SAE" \
    --embeddings "$RESULT/$split/all_embeddings.npy" --output "$RESULT/$split/learned_activation.npy"
done

# 3. biased CBM (random_state 42): train codes -> test codes; weights to before-intervention/
echo "== before intervention"
python automated-concept-discovery/3_train_biased-cbm_binary-class.py \
  --train_csv "$DATA/train.csv" --test_csv "$DATA/test.csv" \
  --train_embeddings "$RESULT/train/learned_activation.npy" \
  --test_embeddings "$RESULT/test/learned_activation.npy" \
  --output "$RESULT/before-intervention"

# 4. zero the top-N latents matched to the concept text in the test codes
python automated-concept-discovery/4_intervention_CBM.py --top_n "$TOP_N" --method matching --split test \
  --concept "$CONCEPT" --sae_checkpoint "$SAE" --result_dir "$RESULT" --clip_model_name "$MODEL" --device "$DEVICE"

# 5. the same classifier on the unchanged train codes and the intervened test codes
echo "== after intervention (concept: $CONCEPT)"
python automated-concept-discovery/3_train_biased-cbm_binary-class.py \
  --train_csv "$DATA/train.csv" --test_csv "$DATA/test.csv" \
  --train_embeddings "$RESULT/train/learned_activation.npy" \
  --test_embeddings "$RESULT/test/learned_activation_after_intervention.npy"
