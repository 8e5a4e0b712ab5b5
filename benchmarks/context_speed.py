"""Context building speed: patients/s of ``Retriever.contexts`` in process and in forked workers.

Every patient's context (FAISS-free exact scoring of the patient's passages, dedup, the token
budget counted in the LLM's tokenizer) is built for all patients of an index, ``--repeat`` times
over, once per ``--workers`` setting; the contexts of every setting are checked to equal the
in-process ones. One JSON line per setting.

    python benchmarks/context_speed.py --index demo/index --config configs/smollm2-full-1024.yaml \\
        --workers 1,2,4,8,16 --repeat 4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", required=True, help="an index folder (ards-rag index)")
    ap.add_argument("--config", default=None, help="YAML config: retrieval settings, LLM tokenizer, budget")
    ap.add_argument("--workers", default="1,2", help="comma list of retrieval.workers values")
    ap.add_argument("--repeat", type=int, default=1, help="times each patient is asked for")
    args = ap.parse_args(argv)

    from ards_rag.chunking import available_cores
    from ards_rag.config import resolve_config
    from ards_rag.index import NotesIndex
    from ards_rag.models import load_tokenizer
    from ards_rag.retrieval import Retriever

    index = NotesIndex.load(args.index)
    ids = [str(p) for p in index.patient_ids()] * args.repeat
    reference = None
    for w in (int(x) for x in args.workers.split(",")):
        cfg = resolve_config(args.config, {"retrieval": {"workers": w}})
        retriever = Retriever(index, cfg, load_tokenizer(cfg))
        retriever.context(ids[0])  # warm-up (first tokenizer call)
        t = time.perf_counter()
        contexts = [c.to_dict() for c in retriever.iter_contexts(ids)]
        dt = time.perf_counter() - t
        if reference is None:
            reference = contexts
        print(json.dumps({
            "benchmark": "context_speed", "workers": retriever.context_workers(len(ids)),
            "cores": available_cores(), "patients": len(ids), "budget": retriever.budget,
            "seconds": round(dt, 3), "ms_per_patient": round(1000 * dt / len(ids), 2),
            "patients_per_s": round(len(ids) / dt, 1), "same_as_first": contexts == reference,
        }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
