"""Which patients a context leaves undecidable: out-of-fold context ceilings by synthetic scenario.

    ards-rag synth --patients 400 --seed 0 --out /tmp/c400
    ards-rag index /tmp/c400/notes.csv --index /tmp/i400 --config configs/smollm2-full-2048.yaml
    python benchmarks/context_scenarios.py --index /tmp/i400 --patients 400 --seed 0 \\
        --config configs/smollm2-full-2048.yaml --variants shipped,max,max_day

For each variant (config overrides over ``--config``), every labeled patient's context is built
as ``ards-rag train`` builds it, and TF-IDF + logistic regression (``baselines.tfidf_lr``) is
fitted on the training folds' contexts and scores the held-out fold (5-fold, stratified, seed
0); ``all_notes`` does the same on every note. Each system is cut at its best out-of-fold F1 (``evaluation.best_f1_threshold``);
errors are counted per generator scenario (``synthetic.patient_scenarios`` with the cohort's
``--patients``/``--seed``). A context that leaves, say, fluid-overload mimics undecidable for
TF-IDF + LR will leave them so for an LLM trained on it. Prints a table and one JSON line.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from ranker_ceiling import all_notes_text, comma_choices, labeled_patients, out_of_fold  # noqa: E402  (same folder)

VARIANTS: dict[str, dict[str, Any]] = {
    "shipped": {},
    "day": {"retrieval": {"day_in_header": True}},
    "max": {"retrieval": {"fusion": "max"}},
    "mean_top2": {"retrieval": {"fusion": "mean_top2"}},
    "rrf": {"retrieval": {"fusion": "rrf"}},
    "max_day": {"retrieval": {"fusion": "max", "day_in_header": True}},
    "max_1024": {"retrieval": {"fusion": "max"}, "ludwig": {"preprocessing": {"global_max_sequence_length": 1024}}},
    "max_4096": {"retrieval": {"fusion": "max"}, "ludwig": {"preprocessing": {"global_max_sequence_length": 4096}}},
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", required=True, help="index of a synthetic cohort")
    ap.add_argument("--patients", type=int, required=True, help="cohort size given to `ards-rag synth`")
    ap.add_argument("--seed", type=int, default=0, help="cohort seed given to `ards-rag synth`")
    ap.add_argument("--prevalence", type=float, default=0.25)
    ap.add_argument("--config", default=None, help="base YAML config")
    ap.add_argument("--variants", default="shipped,max,max_day", help=f"comma list of: {', '.join(VARIANTS)}")
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args(argv)
    names = comma_choices(ap, args.variants, VARIANTS, "variants")

    from sklearn.metrics import f1_score, roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    from ards_rag.config import resolve_config
    from ards_rag.evaluation import best_f1_threshold
    from ards_rag.index import NotesIndex
    from ards_rag.models import load_tokenizer
    from ards_rag.retrieval import Retriever
    from ards_rag.synthetic import patient_scenarios

    index = NotesIndex.load(args.index)
    pids, y = labeled_patients(index)
    scenario = patient_scenarios(args.patients, args.seed, prevalence=args.prevalence).set_index("patient_id")
    if not set(pids) <= set(scenario.index):
        ap.error("the index holds patients that this cohort does not: check --patients and --seed")
    folds = list(StratifiedKFold(args.folds, shuffle=True, random_state=0).split(pids, y))

    systems: dict[str, tuple[np.ndarray, int | None, float]] = {}
    for name in names:
        t0 = time.perf_counter()
        cfg = resolve_config(args.config, VARIANTS[name])
        retriever = Retriever(index, cfg, load_tokenizer(cfg))
        texts = {c.patient_id: c.text for c in retriever.iter_contexts(pids)}
        systems[name] = (out_of_fold(texts, pids, y, folds), retriever.budget, time.perf_counter() - t0)
    t0 = time.perf_counter()
    systems["all_notes"] = (out_of_fold(all_notes_text(index, pids), pids, y, folds), None,
                            time.perf_counter() - t0)

    errors = pd.DataFrame({"scenario": scenario.loc[pids, "scenario"].to_numpy(), "patients": 1})
    summary: dict[str, Any] = {}
    for name, (scores, budget, seconds) in systems.items():
        cut = best_f1_threshold(y, scores)  # the evaluation's rule: smallest cut of maximal F1
        wrong = (scores >= cut) != y
        errors[name] = wrong.astype(int)
        summary[name] = {"context_budget": budget, "auroc": round(float(roc_auc_score(y, scores)), 4),
                         "best_f1": round(float(f1_score(y, scores >= cut)), 4), "errors": int(wrong.sum()),
                         "seconds": round(seconds, 1)}
        print(f"{name}: AUROC {summary[name]['auroc']:.3f}, best F1 {summary[name]['best_f1']:.3f}, "
              f"{summary[name]['errors']} errors (budget {budget}, {seconds:.0f} s)", flush=True)
    table = errors.groupby("scenario").sum().sort_values("patients", ascending=False)
    print(table.to_string())
    for name in systems:
        summary[name]["errors_by_scenario"] = {k: int(v) for k, v in table[name].items()}
    print(json.dumps({"benchmark": "context_scenarios", "patients": len(pids), "positives": int(y.sum()),
                      "systems": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
