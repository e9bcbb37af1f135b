#!/usr/bin/env bash
# Reference reproduction: biased CBM on ISIC_ruler_bias, then intervention on the concept "calibration scale".
#   SAE=../automated-concept-discovery-result/SAE-embeddings/autoencoder.pth IMAGES=data/isic/images \
#     bash script/automated-concept-discovery/ISIC-intervention/PanDerm-v2-SAE-ruler.sh
set -euo pipefail
BIAS=ruler CONCEPT="${CONCEPT:-calibration scale}" exec bash "$(dirname "${BASH_SOURCE[0]}")/_intervene.sh" "$@"
