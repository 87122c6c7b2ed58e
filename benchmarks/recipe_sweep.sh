#!/usr/bin/env bash
# Which training recipe learns the synthetic data, and after how many epochs?
#
# Generates synthetic MURA-format datasets, pre-builds their caches, trains every
# recipe in RECIPES at once (one process each, sharing the machine), and prints
# one table per recipe: train/validation loss and AUROC per epoch (validation =
# the patient-grouped split carved out of train). This is how the README's
# "What learns" table was measured (on one H100, ACCELERATOR=gpu).
#
# Usage:  benchmarks/recipe_sweep.sh [WORK_DIR]
# Knobs (environment): ACCELERATOR=cpu|gpu  PRECISION=32-true|bf16-mixed  EPOCHS=20
#         PATIENTS=800  MAX_SIDE=256  WORKERS=<cores>  LIMIT_S=<seconds per recipe>
#         XRAYLENS=<command that runs the CLI>  (default: xraylens)
#         ONLY=<regex>  run only the recipes whose name matches
# On a 2-core CPU one recipe takes tens of minutes: edit RECIPES down, or use a GPU.
set -u -o pipefail

WORK=${1:-sweep}
ACCELERATOR=${ACCELERATOR:-cpu}
PRECISION=${PRECISION:-32-true}
EPOCHS=${EPOCHS:-20}
PATIENTS=${PATIENTS:-800}
MAX_SIDE=${MAX_SIDE:-256}
WORKERS=${WORKERS:-$(nproc)}
LIMIT_S=${LIMIT_S:-7200}
XRAYLENS=${XRAYLENS:-xraylens}

# name | dataset (realistic or easy) | config overrides on top of configs/scratch_cpu.yaml
RECIPES=(
  "mobilenet_v2-128-avg|realistic|model.name=mobilenet_v2 data.image_size=128"
  "mobilenet_v2-128-max|realistic|model.name=mobilenet_v2 data.image_size=128 model.pooling=max"
  "resnet18-192-avg|realistic|model.name=resnet18 data.image_size=192"
  "resnet18-192-max|realistic|model.name=resnet18 data.image_size=192 model.pooling=max"
  "resnet18-192-lse|realistic|model.name=resnet18 data.image_size=192 model.pooling=lse"
  "densenet121-192-avg|realistic|model.name=densenet121 data.image_size=192"
  "mobilenet_v2-128-avg-easy|easy|model.name=mobilenet_v2 data.image_size=128"
  "mobilenet_v2-128-max-easy|easy|model.name=mobilenet_v2 data.image_size=128 model.pooling=max"
)

if [ -n "${ONLY:-}" ]; then
  mapfile -t RECIPES < <(for r in "${RECIPES[@]}"; do [[ ${r%%|*} =~ $ONLY ]] && echo "$r"; done)
  [ ${#RECIPES[@]} -gt 0 ] || { echo "no recipe matches ONLY=$ONLY" >&2; exit 2; }
fi
mkdir -p "$WORK/runs" "$WORK/logs"
echo "$(date +%T) generating $PATIENTS patients per difficulty at $MAX_SIDE px"
for difficulty in realistic easy; do
  [ -f "$WORK/$difficulty/synth_manifest.json" ] ||
    $XRAYLENS data synth "$WORK/$difficulty" --patients "$PATIENTS" --max-side "$MAX_SIDE" \
      --workers "$WORKERS" --difficulty "$difficulty" >"$WORK/logs/synth-$difficulty.log" 2>&1 &
done
wait

echo "$(date +%T) building caches"
sizes=$(printf '%s\n' "${RECIPES[@]}" | grep -o 'data.image_size=[0-9]*' | cut -d= -f2 | sort -u)
for difficulty in realistic easy; do
  for size in $sizes; do
    $XRAYLENS data cache "$WORK/$difficulty" --size "$size" --workers 2 --quiet \
      >"$WORK/logs/cache-$difficulty-$size.log" 2>&1 &
  done
done
wait

echo "$(date +%T) training ${#RECIPES[@]} recipes for $EPOCHS epochs on $ACCELERATOR"
for recipe in "${RECIPES[@]}"; do
  IFS='|' read -r name difficulty overrides <<<"$recipe"
  [ -d "$WORK/runs/$name" ] && { echo "skip $name: $WORK/runs/$name exists"; continue; }
  # shellcheck disable=SC2086 # overrides are separate key=value words
  (timeout "$LIMIT_S" $XRAYLENS train --data "$WORK/$difficulty" --out "$WORK/runs/$name" --config scratch_cpu \
     --accelerator "$ACCELERATOR" --precision "$PRECISION" --quiet \
     --set train.epochs="$EPOCHS" train.early_stopping_patience=0 train.plateau_patience=4 data.num_workers=2 \
     $overrides >"$WORK/logs/train-$name.log" 2>&1
   echo "$(date +%T) $name finished (exit $?)") &
done
wait

python - "$WORK" <<'PY'
import sys
from pathlib import Path

import pandas as pd

rows = []
for run in sorted(Path(sys.argv[1], "runs").iterdir()):
    table = run / "metrics.csv"
    if not table.is_file():
        print(f"{run.name}: no metrics.csv (see logs/train-{run.name}.log)")
        continue
    t = pd.read_csv(table)
    rows.append({"recipe": run.name, "epochs": len(t), "train_auroc_last": t["train_auroc"].iloc[-1],
                 "val_auroc_last": t["val_auroc"].iloc[-1], "val_auroc_best": t["val_auroc"].max()})
print(pd.DataFrame(rows).round(2).to_string(index=False))
PY
