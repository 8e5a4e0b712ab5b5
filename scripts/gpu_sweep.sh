#!/usr/bin/env bash
# Runs quality_sweep.py variants side by side on the lent GPU machine, after the set-up calls of
# scripts/gpu_carry.sh. Start it detached from a copy of the repository, so that it outlives the
# device call that starts it:
#
#   cp -r . /tmp/repo && cd /tmp/repo && (setsid nohup bash scripts/gpu_sweep.sh VARIANT... \
#       > /tmp/gpu_sweep.log 2>&1 < /dev/null &)
#
# and poll with calls shorter than the machine's idle release (30 s between calls), each one
# copying what has finished back:  sleep 100; bash scripts/gpu_sweep.sh --collect "$OUT"
# A lent machine can be taken back at any moment: a run's figures are safe only once collected.
# --collect finds the WORKDIR of the last sweep started on the machine (/tmp/gpu_sweep.workdir)
# and packs every finished run's JSON and CSV files and the logs into one collect.tgz beside
# sweep.jsonl: a device call returns at most 8 files.
#
# The cohort and index are built once (WORKDIR/index), the packaged model is converted once, then
# every VARIANT trains in its own process on the one GPU (expandable segments: about 24 GiB each
# for SmolLM2-135M at 2,048 tokens, so three fit on an H200; they share its compute).
# Environment: PATIENTS (2000), SEED (0), WORKDIR (/tmp/sw), SITE (/tmp/site, the carried wheels),
# DEVICE (cuda: the embedder's; the LLM trains on a GPU whenever one is visible).
set -uo pipefail
cd "$(dirname "$0")/.."
PATIENTS=${PATIENTS:-2000}
SEED=${SEED:-0}
if [ -z "${WORKDIR:-}" ] && [ "${1:-}" = "--collect" ] && [ -f /tmp/gpu_sweep.workdir ]; then
  WORKDIR=$(cat /tmp/gpu_sweep.workdir)
fi
WORKDIR=${WORKDIR:-/tmp/sw}
SITE=${SITE:-/tmp/site}
DEVICE=${DEVICE:-cuda}
export PYTHONPATH=$SITE:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True

if [ "${1:-}" = "--collect" ]; then
  dest=${2:?usage: gpu_sweep.sh --collect DEST}
  mkdir -p "$dest"
  [ -f "$WORKDIR/sweep.jsonl" ] && cp "$WORKDIR/sweep.jsonl" "$dest/"
  (
    cd "$WORKDIR" || exit 1
    shopt -s nullglob
    files=(logs)
    for run in runs/*/; do  # finished runs only
      [ -f "$run/metrics.json" ] && files+=("$run"*.json "$run"*.csv "$run"*.md)
    done
    tar -czf "$dest/collect.tgz" "${files[@]}" && echo "collected from $WORKDIR: ${files[*]}"
  )
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader
  ls "$WORKDIR/runs" 2>/dev/null
  exit 0
fi
[ $# -gt 0 ] || { echo "usage: gpu_sweep.sh VARIANT... | --collect DEST" >&2; exit 2; }

sweep=(python benchmarks/quality_sweep.py --patients "$PATIENTS" --seed "$SEED" --workdir "$WORKDIR"
       --device "$DEVICE" --no-ceiling)
mkdir -p "$WORKDIR/logs"
echo "$WORKDIR" > /tmp/gpu_sweep.workdir
echo "$(date +%T) cohort + index"
"${sweep[@]}" --no-llm > "$WORKDIR/logs/index.log" 2>&1 || { echo "index failed"; exit 1; }
# One conversion per packaged model before the parallel runs, which would otherwise all convert
# at once. Gemma converts with the carried transformers 5.25 (HF, unpacked from .cg/5/hf.tgz by
# scripts/gpu_carry.sh's set-up): the image's 5.17 converts its tokenizer wrongly. Training then
# reads the converted folder's tokenizer.json with the image's own transformers. USE_HUB_KERNELS=0:
# 5.25 otherwise asks for the `kernels` package in a version the image lacks.
convert() {  # convert MODEL [PYTHONPATH prefix]
  USE_HUB_KERNELS=0 PYTHONPATH=${2:-}$PYTHONPATH \
    python -c "from ards_rag.models import resolve_base_model as r; r('$1')" \
    >> "$WORKDIR/logs/convert.log" 2>&1 || { echo "conversion of $1 failed"; exit 1; }
}
if printf '%s\n' "$@" | grep -qv '^gemma'; then convert smollm2-135m; fi
if printf '%s\n' "$@" | grep -q '^gemma'; then
  HF=${HF:-/tmp/hf}
  [ -d "$HF/transformers" ] || { echo "gemma variants need transformers 5.25 in $HF (gpu_carry.sh --gemma)"; exit 1; }
  convert gemma3-270m "$HF:"
fi
for v in "$@"; do
  echo "$(date +%T) start $v"
  "${sweep[@]}" --only "$v" > "$WORKDIR/logs/$v.log" 2>&1 &
done
wait
echo "$(date +%T) done"
