#!/usr/bin/env bash
# Reference reproduction: SAE-code CBM vs embedding baseline on dermoscopic-melanoma (label = third CSV column).
#   SAE=../automated-concept-discovery-result/SAE-embeddings/autoencoder.pth \
#     bash script/automated-concept-discovery/dermoscopic-melanoma-classification/PanDerm-v2-SAE.sh
set -euo pipefail
TASK=dermoscopic-melanoma exec bash "$(dirname "${BASH_SOURCE[0]}")/../_cbm.sh" "$@"
