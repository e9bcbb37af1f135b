#!/usr/bin/env bash
# Reference reproduction: SAE-code CBM vs embedding baseline on clinical-malignant (label = third CSV column).
#   SAE=../automated-concept-discovery-result/SAE-embeddings/autoencoder.pth \
#     bash script/automated-concept-discovery/clinical-malignancy-classification/PanDerm-v2-SAE.sh
set -euo pipefail
TASK=clinical-malignant exec bash "$(dirname "${BASH_SOURCE[0]}")/../_cbm.sh" "$@"
