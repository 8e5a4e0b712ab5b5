"""How much a scoring precision changes a trained run's answers (``--precision``, issue 5).

    python benchmarks/precision_agreement.py --run demo/runs/default --index demo/index
    python benchmarks/precision_agreement.py --run RUN --index INDEX --precisions model,fp8 --split test

Scores the same patients (every patient of the index, or one split of the run) once per
precision with ``ards_rag.prediction.predict_patients`` and reports, against the run's own
precision (``model``): the largest and mean change of P(ARDS), how many answers stay the same at
the run's threshold, and F1 / AUROC on the labeled patients in each precision. One JSON line per
precision. Speed is measured by ``benchmarks/predict_speed.py``.
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


def main() -> None:
    import numpy as np
    import pandas as pd

    from ards_rag.evaluation import binary_metrics
    from ards_rag.prediction import predict_patients, read_threshold

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--index", required=True)
    ap.add_argument("--precisions", default="model,bf16,fp8", help="the first one is the reference")
    ap.add_argument("--split", default=None, help="only this split of the run (default: every patient)")
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()

    split = pd.read_csv(Path(args.run) / "split.csv", dtype={"patient_id": str})
    if args.split:
        split = split[split["split"] == args.split]
    ids = split["patient_id"].tolist()
    labels = split["label"].astype(str).str.lower().map({"true": True, "false": False})
    labeled = labels.notna().to_numpy()
    y = labels[labeled].astype(bool).to_numpy()
    threshold = read_threshold(args.run)
    reference = None
    for precision in args.precisions.split(","):
        t = time.perf_counter()
        frame = predict_patients(args.run, args.index, ids, batch_size=args.batch_size, precision=precision)
        seconds = time.perf_counter() - t
        p = frame["probability"].to_numpy()
        row = {"benchmark": "precision_agreement", "run": str(args.run), "precision": precision,
               "patients": len(ids), "threshold": round(threshold, 4),
               "seconds_with_load": round(seconds, 1)}
        if labeled.any() and len(set(y)) == 2:
            m = binary_metrics(y, p[labeled], threshold)
            row.update({"f1": round(m["f1"], 4), "auroc": round(m["auroc"], 4), "labeled": int(labeled.sum())})
        if reference is None:
            reference = p
        else:
            diff = np.abs(p - reference)
            row.update({"max_abs_diff": round(float(diff.max()), 5), "mean_abs_diff": round(float(diff.mean()), 5),
                        "same_answer": int(np.sum((p >= threshold) == (reference >= threshold)))})
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
