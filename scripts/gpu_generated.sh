#!/usr/bin/env bash
# `ards-rag predict --generated` on a GPU, with a 4-bit (QLoRA) SmolLM2 run: Ludwig's own
# generated answers checked against the scores, the path that runs under the scorer's autocast.
# Run on the lent GPU machine after the set-up calls of scripts/gpu_carry.sh:
#
#   bash scripts/gpu_generated.sh "$OUT"     # writes generated.csv, timings.txt and the logs
#
# and benchmarks/generated_agreement.py on the run's test split (agreement.json/.csv): where the
# generated answer and the score part, if they do.
#
# Environment: PATIENTS (600), WORKDIR (/tmp/gen), SITE (/tmp/site, the carried wheels),
# BITS (4; "none" for full precision, e.g. to check the script on a CPU with PATIENTS=40),
# PREDICT (1; 0 stops after `evaluate`: no predict runs, no agreement paths).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:?usage: gpu_generated.sh DEST}
PATIENTS=${PATIENTS:-600}
WORKDIR=${WORKDIR:-/tmp/gen}
SITE=${SITE:-/tmp/site}
BITS=${BITS:-4}
PREDICT=${PREDICT:-1}
export PYTHONPATH=$SITE:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$WORKDIR" "$dest"
rag() { python -m ards_rag.cli "$@"; }
t0=$(date +%s)
lap() { echo "$1 $(( $(date +%s) - t0 )) s" | tee -a "$dest/timings.txt"; }

quant="{bits: $BITS, bnb_4bit_compute_dtype: bfloat16}"
[ "$BITS" = none ] && quant=null
cat > "$WORKDIR/run.yaml" <<YAML
ludwig:
  quantization: $quant
  trainer: {epochs: 2}
  preprocessing: {global_max_sequence_length: 768}
YAML
rag synth --patients "$PATIENTS" --seed 0 --out "$WORKDIR/cohort" > "$dest/synth.log" 2>&1
rag index "$WORKDIR/cohort/notes.csv" --index "$WORKDIR/index" > "$dest/index.log" 2>&1
lap index
rag train --index "$WORKDIR/index" --config "$WORKDIR/run.yaml" --run "$WORKDIR/run" > "$dest/train.log" 2>&1
lap train
rag evaluate --run "$WORKDIR/run" --index "$WORKDIR/index" > "$dest/evaluate.log" 2>&1
cp "$WORKDIR/run/metrics.json" "$dest/"
lap evaluate
if [ "$PREDICT" = 1 ]; then
rag predict --run "$WORKDIR/run" --index "$WORKDIR/index" --patients "$WORKDIR/run/predictions.csv" \
  --out "$dest/scored.csv" > "$dest/scored.log" 2>&1
lap "predict (scores only)"
rag predict --run "$WORKDIR/run" --index "$WORKDIR/index" --patients "$WORKDIR/run/predictions.csv" \
  --generated --out "$dest/generated.csv" > "$dest/generated.log" 2>&1
lap "predict --generated"
python - "$dest" <<'PY'
import sys
import pandas as pd
d = sys.argv[1]
a, b = pd.read_csv(f"{d}/scored.csv"), pd.read_csv(f"{d}/generated.csv")
m = a.merge(b, on="patient_id", suffixes=("", "_gen"))
print(f"patients {len(m)}; generated agrees {int(b['generated_agrees'].sum())}/{len(b)}; "
      f"answers {b['generated'].value_counts().to_dict()}; "
      f"max |probability difference| with and without --generated {float((m['probability'] - m['probability_gen']).abs().max()):.2e}")
PY
python benchmarks/generated_agreement.py --run "$WORKDIR/run" --index "$WORKDIR/index" \
  --out "$dest/agreement.csv" 2> "$dest/agreement.log" | tee "$dest/agreement.json"
lap "agreement paths"
fi
