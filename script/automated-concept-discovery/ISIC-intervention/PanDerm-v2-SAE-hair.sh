#!/usr/bin/env bash
# Reference reproduction: biased CBM on ISIC_hair_bias, then intervention on the concept "hair".
#   SAE=../automated-concept-discovery-result/SAE-embeddings/autoencoder.pth IMAGES=data/isic/images \
#     bash script/automated-concept-discovery/ISIC-intervention/PanDerm-v2-SAE-hair.sh
set -euo pipefail
BIAS=hair CONCEPT="${CONCEPT:-hair}" exec bash "$(dirname "${BASH_SOURCE[0]}")/_intervene.sh" "$@"
