"""Patients/s of the project's batched scorer vs Ludwig's own ``predict``, on the same rows.

Self-contained: a Ludwig model is trained for a couple of steps on synthetic rows (so that it
carries a LoRA adapter, as a real run does; for 4-bit configs the base is quantized), then the
same synthetic contexts, filled to the context budget, are scored by

- ``ards_rag.prediction.Scorer.score`` (one forward pass per batch, last position only), and
- ``LudwigModel.predict`` (one ``generate`` call per row),

and the agreement of Ludwig's generated answer with the scorer's argmax is reported. Model loading
is excluded from both timings; a warm-up batch runs first. One JSON line per setting.

``--precisions model,bf16,fp8`` then converts the same model in place, in that order, and times
the scorer again in each scoring precision (``ards_rag.precision``), with how far its
probabilities move from the run's own (``model``) ones.

Examples::

    python benchmarks/predict_speed.py --rows 16 --ludwig-rows 8           # CPU, default config
    python benchmarks/predict_speed.py --device cuda --config configs/llama2-7b-qlora.yaml \\
        --random-llama2-7b --seq-lens default --rows 64 --batch-sizes 1,8,16 --ludwig-rows 16 \\
        --precisions model,bf16,fp8
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import train_speed  # noqa: E402  (same folder)


def run_one(args: argparse.Namespace, seq_len: str) -> list[dict[str, Any]]:
    import numpy as np
    import pandas as pd
    import torch

    from ards_rag.prediction import Scorer
    from ards_rag.training import ludwig_config

    cfg, tok, budget, base = train_speed.prepare(args, seq_len)
    cfg["ludwig"]["trainer"]["epochs"] = 1
    cfg["ludwig"]["trainer"]["batch_size"] = 1
    lc = ludwig_config(cfg, base, tok)
    cuda = torch.cuda.is_available() and args.device == "cuda"
    train_ctx = train_speed.synthetic_rows(tok, budget, 8, seed=1)
    frame = pd.DataFrame({"context": train_ctx, "label": ["true", "false"] * 4, "split": [0] * 4 + [1] * 4})
    t0 = time.perf_counter()
    model = train_speed.ludwig_train(lc, frame, Path(args.out_dir) / f"predict-{seq_len}")
    load_s = time.perf_counter() - t0
    scorer = Scorer(model, cfg)
    contexts = train_speed.synthetic_rows(tok, budget, args.rows, seed=2)
    n_tokens = float(np.mean([len(scorer.prompt_ids(c)) for c in contexts]))
    device = torch.cuda.get_device_name(0) if cuda else f"cpu x{torch.get_num_threads()} threads"
    common = {"device": device, "base_model": Path(base).name if Path(base).exists() else base,
              "random_llama2_7b": bool(args.random_llama2_7b), "quantization": json.dumps(lc.get("quantization")),
              "global_max_sequence_length": cfg["ludwig"]["preprocessing"]["global_max_sequence_length"],
              "prompt_tokens": round(n_tokens, 1), "setup_s": round(load_s, 1)}
    out = []

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def time_scorer(scorer: Scorer, reference: Any) -> Any:
        first = None
        for bs in [int(b) for b in args.batch_sizes.split(",")]:
            scorer.score(contexts[:bs], batch_size=bs)  # warm-up
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            sync()
            t = time.perf_counter()
            p = scorer.score(contexts, batch_size=bs)
            sync()
            dt = time.perf_counter() - t
            first = p if first is None else first
            row = {**common, "benchmark": "predict_speed", "method": "ards_rag Scorer",
                   "precision": scorer.precision, "batch_size": bs, "rows": len(contexts),
                   "seconds": round(dt, 3), "patients_per_s": round(len(contexts) / dt, 2),
                   "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None}
            if reference is not None:
                row["max_abs_diff_vs_model"] = round(float(np.max(np.abs(p - reference))), 5)
                row["same_side_of_0.5"] = int(np.sum((p >= 0.5) == (reference >= 0.5)))
            out.append(row)
        return first

    precisions = args.precisions.split(",")
    if precisions[0] != "model":
        raise SystemExit("--precisions must start with model (the others convert the model in place)")
    probs = time_scorer(scorer, None)

    n_lud = min(args.ludwig_rows, len(contexts))
    if n_lud:
        scorer.ludwig_predict(contexts[:1])  # warm-up
        sync()
        t = time.perf_counter()
        checked = scorer.generated_answers(contexts[:n_lud], probs[:n_lud])  # LudwigModel.predict
        sync()
        dt = time.perf_counter() - t
        parsed = [g for g in checked if g["answer"] is not None]
        agree = sum(g["agrees"] for g in checked)
        out.append({**common, "benchmark": "predict_speed", "method": "LudwigModel.predict",
                    "batch_size": int(lc["trainer"].get("eval_batch_size", 1)), "rows": n_lud,
                    "seconds": round(dt, 3), "patients_per_s": round(n_lud / dt, 2),
                    "answers_parsed": len(parsed), "agreement_with_scorer_argmax": agree})
    for precision in precisions[1:]:
        if cuda:
            torch.cuda.empty_cache()
        time_scorer(Scorer(model, cfg, precision=precision), probs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    train_speed.add_model_args(ap)
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--ludwig-rows", type=int, default=8, help="rows for Ludwig's predict (slow); 0 skips it")
    ap.add_argument("--precisions", default="model",
                    help="scoring precisions to time, in this order, starting with model: e.g. model,bf16,fp8")
    ap.add_argument("--batch-size", type=int, default=None, help=argparse.SUPPRESS)
    train_speed.run_per_length(ap.parse_args(), __file__, "predict_speed", run_one)


if __name__ == "__main__":
    main()
