#!/usr/bin/env bash
# Reference reproduction: biased CBM on ISIC_ink_bias, then intervention on the concept "purple ink".
#   SAE=../automated-concept-discovery-result/SAE-embeddings/autoencoder.pth IMAGES=data/isic/images \
#     bash script/automated-concept-discovery/ISIC-intervention/PanDerm-v2-SAE-ink.sh
set -euo pipefail
BIAS=ink CONCEPT="${CONCEPT:-purple ink}" exec bash "$(dirname "${BASH_SOURCE[0]}")/_intervene.sh" "$@"
