#!/usr/bin/env bash
# The main job on the embedded defaults, end to end, on a synthetic cohort:
# synth -> index -> train -> evaluate -> predict. Called by `make demo` (ards-rag on PATH).
# Everything goes under demo/ (git-ignored); a rerun re-indexes incrementally and retrains.
set -euo pipefail
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PATIENTS=${DEMO_PATIENTS:-80}
SEED=${DEMO_SEED:-0}
OUT=${DEMO_DIR:-demo}
start=$(date +%s)
step() { printf '\n== %s (%ss elapsed)\n' "$1" "$(( $(date +%s) - start ))"; }

step "1/5 synthetic cohort: $PATIENTS patients"
ards-rag synth --patients "$PATIENTS" --seed "$SEED" --out "$OUT/cohort"

step "2/5 index: chunk, embed (packaged all-MiniLM-L6-v2), FAISS"
ards-rag index "$OUT/cohort/notes.csv" --index "$OUT/index"

step "3/5 train: Ludwig LoRA fine-tuning of the packaged SmolLM2-135M on retrieved contexts"
ards-rag train --index "$OUT/index" --run "$OUT/runs/default"

step "4/5 evaluate on the held-out test patients"
ards-rag evaluate --run "$OUT/runs/default" --index "$OUT/index"

step "5/5 predict one test patient, with the passages the model read"
pid=$(awk -F, 'NR > 1 && $2 == "test" {print $1; exit}' "$OUT/runs/default/split.csv")
ards-rag predict --run "$OUT/runs/default" --index "$OUT/index" --patient-id "$pid"

step "done: report in $OUT/runs/default/report.md"
