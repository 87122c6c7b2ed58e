#!/usr/bin/env bash
# Learning curve of a training recipe: per-kind study AUROC / kappa and pointing game vs data size.
#
# For every ROW: generate a synthetic dataset (difficulty, patients, seed), train the recipe on it
# with the xraylens CLI, evaluate on its `valid` split (metrics per finding kind from boxes.csv),
# score localisation (explain-eval) and print one table. This is how the README's learning-curve
# table was measured; each row reproduces with its own three commands (see the log folder).
#
# Usage:  benchmarks/learning_curve.sh [WORK_DIR]
# Knobs (environment): CONFIG=demo_cpu  SET="key=value ..." (extra overrides)  MAX_SIDE=512
#         WORKERS=<cores>  EXPLAIN_LIMIT=60 (abnormal images scored; 0 = skip explain-eval)
#         METHODS=saliency,gradcam  XRAYLENS=<command that runs the CLI> (default: xraylens)
#         ROWS="easy:300:0 easy:1000:1 realistic:300:0"  (difficulty:patients:seed)
set -u -o pipefail

WORK=${1:-learning_curve}
CONFIG=${CONFIG:-demo_cpu}
SET=${SET:-}
MAX_SIDE=${MAX_SIDE:-512}
WORKERS=${WORKERS:-$(nproc)}
EXPLAIN_LIMIT=${EXPLAIN_LIMIT:-60}
METHODS=${METHODS:-saliency,gradcam}
XRAYLENS=${XRAYLENS:-xraylens}
ROWS=${ROWS:-"easy:300:0 easy:1000:1 realistic:300:0 realistic:1000:1"}
mkdir -p "$WORK/logs"

for row in $ROWS; do
  IFS=: read -r difficulty patients seed <<<"$row"
  name="$difficulty-$patients-s$seed"
  data="$WORK/data/$name"
  run="$WORK/runs/$name"
  start=$(date +%s)
  [ -f "$data/synth_manifest.json" ] ||
    $XRAYLENS data synth "$data" --patients "$patients" --max-side "$MAX_SIDE" --seed "$seed" \
      --difficulty "$difficulty" --workers "$WORKERS" >"$WORK/logs/synth-$name.log" 2>&1 ||
    { echo "$name: data synth failed (logs/synth-$name.log)"; continue; }
  synth_done=$(date +%s)
  if [ ! -f "$run/checkpoints/best.ckpt" ]; then
    # shellcheck disable=SC2086 # SET holds separate key=value words
    $XRAYLENS train --data "$data" --out "$run" --config "$CONFIG" --quiet ${SET:+--set $SET} \
      >"$WORK/logs/train-$name.log" 2>&1 || { echo "$name: train failed (logs/train-$name.log)"; continue; }
  fi
  train_done=$(date +%s)
  $XRAYLENS evaluate "$run/checkpoints/best.ckpt" --data "$data" --out "$run/eval" --quiet \
    >"$WORK/logs/eval-$name.log" 2>&1 || { echo "$name: evaluate failed (logs/eval-$name.log)"; continue; }
  if [ "$EXPLAIN_LIMIT" -gt 0 ]; then
    $XRAYLENS explain-eval "$run/checkpoints/best.ckpt" --data "$data" --boxes "$data/boxes.csv" \
      --out "$run/explain_eval" --limit "$EXPLAIN_LIMIT" --methods "$METHODS" --sanity-images 0 \
      --faithfulness-images 0 --quiet >"$WORK/logs/explain-$name.log" 2>&1 ||
      echo "$name: explain-eval failed (logs/explain-$name.log)"
  fi
  echo "{\"synth_s\": $((synth_done - start)), \"train_s\": $((train_done - synth_done))}" >"$run/times.json"
  echo "$(date +%T) $name done"
done

python - "$WORK" <<'PY'
import json
import sys
from pathlib import Path

rows = []
for run in sorted(Path(sys.argv[1], "runs").iterdir()):
    metrics_file = run / "eval" / "metrics.json"
    if not metrics_file.is_file():
        continue
    m = json.loads(metrics_file.read_text())
    times = json.loads((run / "times.json").read_text()) if (run / "times.json").is_file() else {}
    row = {"row": run.name, "study_auroc": m["study"]["auroc"], "study_kappa": m["study"]["kappa"],
           "train_s": times.get("train_s")}
    for kind, k in sorted(m.get("per_kind", {}).items()):
        row[f"{kind}_auroc"] = k["study"]["auroc"]
        row[f"{kind}_kappa"] = k["study"]["kappa"]
    loc = run / "explain_eval" / "localization.json"
    if loc.is_file():
        for method, by_kind in json.loads(loc.read_text())["localization"].items():
            for kind, s in by_kind.items():
                row[f"pg_{method}_{kind}"] = s["pointing_game"]
    history = run / "metrics.csv"
    if history.is_file():
        row["epochs"] = sum(1 for _ in history.open()) - 1
    rows.append({k: v for k, v in row.items() if v is not None})
for row in rows:
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}))
PY
