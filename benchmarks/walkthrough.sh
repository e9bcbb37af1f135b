#!/usr/bin/env bash
# First-use walk-through (issue 18): run every shell command of README.md, in README order, on a fresh clone
# with the bundled sample, and check that each exits 0. One line per command (PASS/FAIL/SKIP, seconds, the
# command), then "N passed, N failed". Each command's output goes to $WORK/logs/NN.log.
#
# Substitutions, and only these: a real model id becomes `--model demo` (MODEL=demo for the scripts), a
# placeholder or not-bundled path becomes a bundled-sample path, a `...` is filled with the flags of the line it
# continues, optional `[--flag]`s are run as shown (brackets dropped). No other flag is added, except where the
# README itself names the flag for the demo model (`--model_preprocess` for linear_eval.py). Default run folders
# (runs/zeroshot, ...) are removed between commands that would share one, as a user would.
#
#   bash benchmarks/walkthrough.sh [WORK]        # clone this checkout's HEAD into WORK (default: a temp folder)
# Environment:
#   WALKTHROUGH_IN_PLACE=1   run in this checkout instead of a fresh clone (uncommitted edits included)
#   WALKTHROUGH_SKIP=REGEX   skip the commands whose label matches (e.g. 'test.sh|install'); they count as SKIP
#   PANDERM_VENV=PATH        the virtual environment script/*.sh create/reuse and the commands run in
#                            (default: .venv of the clone, created by the README's first command; a venv given
#                            here gets the clone installed into it, editable, by script/demo.sh and the install
#                            step: give a throw-away one, or skip 'demo.sh|test.sh|install' with WALKTHROUGH_SKIP)
#   DEVICE=cpu               device for the reference scripts (default cpu; the commands use --device auto)
set -uo pipefail
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-$(mktemp -d -t panderm-walkthrough.XXXXXX)}"
mkdir -p "$WORK/logs"
WORK="$(cd "$WORK" && pwd)"
if [ "${WALKTHROUGH_IN_PLACE:-0}" = 1 ]; then
  REPO="$SRC"
else
  REPO="$WORK/panderm"
  rm -rf "$REPO"
  git clone -q "$SRC" "$REPO" || { echo "git clone $SRC failed"; exit 2; }
fi
cd "$REPO"
VENV="${PANDERM_VENV:-$REPO/.venv}"
export PANDERM_VENV="$VENV" PATH="$VENV/bin:$PATH" PANDERM_CACHE="$WORK/cache" MPLBACKEND=Agg
export DEVICE="${DEVICE:-cpu}" MODEL=demo
S=data/sample
OUT="$WORK/out"          # outputs the README names by a bare file name (ph2.npy, pairs.csv, ...)
mkdir -p "$OUT"

# Placeholder data built from the bundled sample (no flags involved):
#  - PATH of `--data-root PATH`: the reference layout PATH/data/zero-shot-classification/*.csv
mkdir -p "$OUT/zs-root/data"
ln -sfn "$REPO/$S/zero-shot-classification" "$OUT/zs-root/data/zero-shot-classification"
ln -sfn "$REPO/$S" "$OUT/zs-root/data/sample"
#  - pairs.csv / skincap.csv: image-caption pairs (PH2 images with their criteria sentences)
python3 - "$S/ph2/ph2.csv" "$OUT" <<'EOF'
import csv, os, sys
src, out = sys.argv[1:]
rows = list(csv.DictReader(open(src)))
folder = os.path.dirname(src)
os.makedirs(os.path.join(out, "zero-shot-retrieval"), exist_ok=True)
with open(os.path.join(out, "pairs.csv"), "w", newline="") as fh:
    w = csv.writer(fh); w.writerow(["filename", "caption"])
    for r in rows: w.writerow([os.path.relpath(os.path.join(folder, r["image_path"]), out), r["concept_text"]])
#  - DATA of the 7-benchmark script: the 3 bundled reference CSVs, and for the 4 benchmarks not bundled
#    (SNU-134, SD-128, Daffodil-5, ISIC2020-2) placeholder CSVs of bundled PH2 images with labels cycling over
#    each benchmark's classes (they exercise the script, their numbers mean nothing)
import shutil
zs = os.path.join(out, "zs-all")
os.makedirs(zs, exist_ok=True)
bundled = os.path.join(os.path.dirname(folder), "zero-shot-classification")
for name in os.listdir(bundled):
    shutil.copy(os.path.join(bundled, name), os.path.join(zs, name))
for name, k in (("snu-134", 134), ("sd-128", 128), ("daffodil-5", 5), ("isic2020-2", 2)):
    with open(os.path.join(zs, f"{name}-zero-shot-test.csv"), "w", newline="") as fh:
        w = csv.writer(fh); w.writerow(["image_path", "label"])
        for i, r in enumerate(rows): w.writerow([os.path.join(folder, r["image_path"]), i % k])
#  - data/ISIC2018 of `--isic-root`: the ISIC 2018 Task 1 folder layout, linking the PH2 images and masks by split
for r in rows:
    name = {"train": "Training", "val": "Validation", "test": "Test"}[r["split"]]
    for kind, rel, fname in (("Data", r["image_path"], r["image_id"] + ".jpg"),
                             ("GroundTruth", r["mask_path"], r["image_id"] + "_segmentation.png")):
        d = os.path.join(out, "ISIC2018", f"{name}_{kind}")
        os.makedirs(d, exist_ok=True)
        if not os.path.exists(os.path.join(d, fname)):
            os.symlink(os.path.abspath(os.path.join(folder, rel)), os.path.join(d, fname))
for name, key in (("skincap.csv", "caption_zh_polish_en"), ("Derm1M-hold_out.csv", "truncated_caption")):
    with open(os.path.join(out, "zero-shot-retrieval", name), "w", newline="") as fh:
        w = csv.writer(fh); w.writerow(["filename", key, "label"])
        for r in rows: w.writerow([os.path.join(os.path.abspath(folder), r["image_path"]), r["concept_text"], r["label"]])
EOF

PASS=0; FAIL=0; SKIPPED=0; N=0
run() {  # run LABEL COMMAND
  local label="$1" cmd="$2" log t0 rc
  N=$((N + 1)); log="$WORK/logs/$(printf %02d $N).log"
  if [ -n "${WALKTHROUGH_SKIP:-}" ] && [[ "$label" =~ $WALKTHROUGH_SKIP ]]; then
    SKIPPED=$((SKIPPED + 1)); printf 'SKIP %6s  [%s] %s\n' "-" "$label" "$cmd"; return
  fi
  t0=$(date +%s)
  (cd "$REPO" && echo "\$ $cmd" && bash -c "$cmd") >"$log" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then PASS=$((PASS + 1)); printf 'PASS %5ss  [%s] %s\n' "$(( $(date +%s) - t0 ))" "$label" "$cmd"
  else FAIL=$((FAIL + 1)); printf 'FAIL %5ss  [%s] %s  (exit %s, log %s: %s)\n' "$(( $(date +%s) - t0 ))" "$label" "$cmd" \
         "$rc" "$log" "$(grep -v '^\s*$' "$log" | tail -n 1 | cut -c1-160)"; fi
}

# -- Quick start / Install
run "demo.sh" "bash script/demo.sh"
run "test.sh" "bash script/test.sh"
run "install" "python -m venv \"$VENV\" && . \"$VENV/bin/activate\" && pip install -e ."
run "install test extras" ". \"$VENV/bin/activate\" && pip install -e \".[test]\""
# -- Models
run "models" "panderm models"
# -- Features
run "features" "panderm features --model demo --csv $S/ph2/ph2.csv --image-col image_path --kind embed --normalize --out $OUT/ph2.npy"
run "export door" "python src/export_visual_features.py --model_name demo --csv_path $S/ph2/ph2.csv --img_col image_path --data_root $S/ph2 --output_dir $OUT/export"
run "torchrun features" "torchrun --nproc_per_node 4 -m panderm features --model demo --csv $S/ph2/ph2.csv --out $OUT/ph2-ddp.npy"
run "torchrun finetune" "torchrun --nproc_per_node 4 -m panderm finetune --model demo --csv $S/ph2/ph2.csv --out runs/ft-ddp"
run "preresize" "panderm preresize --csv $S/ph2/ph2.csv --image-col image_path --root $S/ph2 --out $OUT/photos-448 --size 448"
run "features fast" "panderm features --model demo --csv $S/ph2/ph2.csv --root $OUT/photos-448 --batch-size auto --compile --out $OUT/ph2-448.npy"
# -- Zero-shot
run "zeroshot data-root" "rm -rf runs/zeroshot && panderm zeroshot --model demo --benchmark PAD-6 HAM-7 PH2-2 --data-root $OUT/zs-root"
run "zeroshot sample" "rm -rf runs/zeroshot && panderm zeroshot --model demo --benchmark PAD-6 --csv $S/zero-shot-classification/pad-zero-shot-test.csv --root ."
run "zeroshot own csv" "rm -rf runs/zeroshot && panderm zeroshot --model demo --csv $S/ph2/ph2.csv --classnames \"common nevus,atypical nevus,melanoma\" --label-col diag"
run "main.py zeroshot" "python src/main.py --zeroshot-eval1 $S/zero-shot-classification/pad-zero-shot-test.csv --csv-img-key image_path --csv-label-key label --model demo"
run "zs-classification.sh" "DATA=$OUT/zs-all bash script/zero-shot-eval/PanDerm-v2-zs-classification.sh"
# -- Retrieval
run "retrieval" "rm -rf runs/retrieval && panderm retrieval --model demo --csv $OUT/pairs.csv --image-col filename --caption-col caption"
run "main.py retrieval" "python src/main.py --val-data $OUT/zero-shot-retrieval/skincap.csv --csv-img-key filename --csv-caption-key caption_zh_polish_en --model demo"
run "zs-retrieval.sh" "DATA=$OUT/zero-shot-retrieval bash script/zero-shot-eval/PanDerm-v2-zs-retrieval.sh"
# -- Linear probe
LP=$S/pad_ufes20_sample/pad_ufes20_sample.csv
run "linear-probe" "rm -rf runs/linear-probe && panderm linear-probe --model demo --csv $LP --percent-data 0.1 0.3 0.5 1.0 --seeds 5 --tune-c"
run "linear-probe shots" "rm -rf runs/linear-probe && panderm linear-probe --model demo --csv $LP --percent-data 0.1 0.3 0.5 1.0 --seeds 5 --shots 1 5 10"
run "linear_eval.py" "python linear_probe/linear_eval.py --csv_path $LP --image_key image_path --model demo --percent_data 0.1 --csv_filename PanDerm2_PAD_results.csv --output_dir $OUT/linear-probing-logs/percent_data_0.1/PAD/demo --root_path $S/pad_ufes20_sample --model_preprocess"
# -- Finetuning
run "finetune" "panderm finetune --model demo --csv $LP --out runs/ft-ham --resume --tta --weighted-sampler"
run "finetune eval" "panderm finetune --model demo --csv $LP --out runs/ft-ham --eval runs/ft-ham/best.pt --tta"
run "finetune.sh" "CSV=$LP CHECKPOINT=runs/ft-ham/best.pt IMAGE_COL=image_path bash script/finetune/PanDerm-v1-finetune.sh"
# -- Multimodal
run "multimodal train" "panderm multimodal train --model demo --dataset pad --data-path $S/pad_ufes20_sample --class-num 6 --use-cli --use-meta --use-text-encoder --output-dir runs/mm-pad --freeze-encoders"
run "multimodal test" "panderm multimodal test --model demo --dataset pad --data-path $S/pad_ufes20_sample --class-num 6 --use-cli --use-meta --use-text-encoder --output-dir runs/mm-pad"
run "PAD(C+M).sh" "MODEL_NAME=demo DATA_ROOT=$REPO/$S OUTPUT_ROOT=$OUT/mm bash \"script/multimodal_finetune/PAD(C+M).sh\""
# -- Concepts
run "concepts train-sae" "rm -rf runs/sae && panderm concepts train-sae --embeddings $OUT/ph2.npy --out runs/sae"
run "concepts activations" "rm -rf runs/act && panderm concepts activations --sae runs/sae --embeddings $OUT/ph2.npy --out runs/act"
run "concepts cbm" "rm -rf runs/cbm && panderm concepts cbm --csv $S/ph2/ph2.csv --embeddings runs/act/activations.npy --label-col label --out runs/cbm"
# -- Segmentation
run "segment train" "panderm segment train --model demo --csv $S/ph2/ph2.csv --out runs/seg-ph2 --freeze-encoder --loss ce+dice --percent-data 10 --resume"
run "segment train isic" "panderm segment train --model demo --isic-root $OUT/ISIC2018 --out runs/seg-isic"
run "segment test" "panderm segment test --model demo --run runs/seg-ph2 --csv $S/ph2/ph2.csv --split test --out runs/seg-other"
run "seg.sh" "MODEL=demo CHECKPOINT=runs/ft-ham/best.pt PARENT_PATH=$S bash script/segmentation/PanDerm-v1-seg.sh"

# -- Analyses (the second model id becomes a copy of the demo model with other weights: two models to compare)
MODEL2="python -c \"from pathlib import Path; from panderm.models.demo import TINY_MODEL_CFG, write_openclip_dir; write_openclip_dir(Path('$OUT/demo-seed1'), TINY_MODEL_CFG, seed=1)\""
run "sweep" "$MODEL2 && panderm sweep --models demo local-dir:$OUT/demo-seed1 --tasks zeroshot linear-probe --benchmarks PAD-6 HAM-7 --data-root $OUT/zs-root --csv pad=$LP --out runs/sweep --linear-probe-args='--percent-data 0.1 0.5 1.0 --seeds 3'"
run "compare" "panderm compare runs/sweep --out runs/compare --bootstrap 5000"
run "zeroshot groups" "panderm zeroshot --model demo --csv $LP --classnames $S/pad_ufes20_sample/classes.csv --split test --group-col fitspatrick gender age --bins age=0,40,60,120 --min-group 5 --out runs/zs-groups"
run "linear-probe calibrate" "panderm linear-probe --model demo --csv $LP --calibrate temperature --out runs/lp-calibrated"
run "audit" "panderm audit --csv $LP --group-col patient_id --out runs/audit --fix-splits runs/pad-fixed.csv --seed 0"

echo "$PASS passed, $FAIL failed$([ $SKIPPED -gt 0 ] && echo ", $SKIPPED skipped") (logs: $WORK/logs)"
[ $FAIL -eq 0 ]
