"""How TF-IDF + LR on all notes grows with the number of training patients (CPU, minutes).

    python benchmarks/learning_curve.py --patients 6000 --seed 0 --workdir /tmp/lc \
        --sizes 350,700,1400,2800,4200 --repeats 5

One synthetic cohort (written once to ``WORKDIR/cohort``), split at patient level as
``ards-rag train`` splits it (``training.stratified_split``: 15% validation, 15% test, seeded by
``--split-seed``). The validation and test patients stay fixed; for each training size, a
seeded, label-stratified sample of the training patients fits TF-IDF + LR on all notes (the
evaluation's baseline: ``baselines.tfidf_lr`` on ``notes.patient_texts``), its cut is chosen
on the validation patients by best F1, and it is scored on the test patients. Each size is
repeated ``--repeats`` times with different samples (the mean and the spread across samples
are printed); the test set's own sampling error is given by a bootstrap of the largest size.

The question it answers: is the baseline saturated at the 1,400 training patients of the
2,000-patient GPU runs, so that a larger cohort would help the LLM more than the baseline?
One JSON object per size is printed and appended to ``WORKDIR/learning_curve.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ards_rag.baselines import tfidf_lr
from ards_rag.evaluation import best_f1_threshold, binary_metrics, bootstrap_ci
from ards_rag.notes import load_notes, patient_texts
from ards_rag.synthetic import write_cohort
from ards_rag.training import stratified_split


def sample_train(train: pd.DataFrame, size: int, seed: int) -> pd.DataFrame:
    """``size`` training patients with the training split's label ratio (seeded)."""
    if size >= len(train):
        return train
    rng = np.random.default_rng(seed)
    parts = []
    for value in (True, False):
        group = train[train["label"] == value]
        take = int(round(size * len(group) / len(train)))
        parts.append(group.iloc[np.sort(rng.choice(len(group), size=take, replace=False))])
    return pd.concat(parts)


def fit_and_score(texts: pd.Series, train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame,
                  seed: int) -> dict[str, Any]:
    """TF-IDF + LR fitted on ``train``, cut on ``val`` by best F1, metrics on ``test``."""
    scored = pd.concat([val, test])
    probs = tfidf_lr(texts.loc[train["patient_id"]].tolist(), train["label"].to_numpy(),
                     texts.loc[scored["patient_id"]].tolist(), seed=seed)
    p_val, p_test = probs[: len(val)], probs[len(val):]
    threshold = best_f1_threshold(val["label"].to_numpy(), p_val)
    m = binary_metrics(test["label"].to_numpy(), p_test, threshold)
    return {"f1": m["f1"], "auroc": m["auroc"], "auprc": m["auprc"], "threshold": threshold,
            "p_test": p_test}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=6000)
    ap.add_argument("--seed", type=int, default=0, help="synthetic cohort seed")
    ap.add_argument("--split-seed", type=int, default=0, help="patient-level split seed (config seed)")
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--sizes", default="350,700,1400,2800,4200",
                    help="comma list of training-patient counts")
    ap.add_argument("--repeats", type=int, default=5, help="training samples per size")
    ap.add_argument("--bootstrap", type=int, default=500, help="test resamples for the CI")
    args = ap.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--sizes must be a comma list of integers (got {args.sizes!r})")

    cohort = args.workdir / "cohort"
    if not (cohort / "notes.csv").exists():
        write_cohort(cohort, args.patients, seed=args.seed)
    t0 = time.perf_counter()
    table = load_notes(cohort / "notes.csv")
    texts = patient_texts(table.notes)
    labels = table.labels[table.labels["label"].notna()][["patient_id", "label"]].copy()
    labels["label"] = labels["label"].astype(bool)
    split = stratified_split(labels, 0.15, 0.15, args.split_seed)
    train, val, test = (split[split["split"] == s] for s in ("train", "validation", "test"))
    print(f"[lc] {len(labels)} patients: train {len(train)}, validation {len(val)} "
          f"({int(val['label'].sum())} ARDS), test {len(test)} ({int(test['label'].sum())} ARDS); "
          f"loaded in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)

    out_path = args.workdir / "learning_curve.jsonl"
    for size in sizes:
        if size > len(train):
            print(f"[lc] skip {size}: only {len(train)} training patients", file=sys.stderr)
            continue
        t = time.perf_counter()
        repeats = 1 if size >= len(train) else args.repeats
        runs = [fit_and_score(texts, sample_train(train, size, args.split_seed * 1000 + r), val, test,
                              seed=args.split_seed)
                for r in range(repeats)]
        row: dict[str, Any] = {
            "patients": args.patients, "synth_seed": args.seed, "split_seed": args.split_seed,
            "train_patients": size, "validation": len(val), "test": len(test),
            "test_ards": int(test["label"].sum()), "repeats": repeats,
            "seconds_per_fit": round((time.perf_counter() - t) / repeats, 1),
        }
        for key in ("f1", "auroc", "auprc"):
            values = np.array([r[key] for r in runs], dtype=float)
            row[key] = round(float(values.mean()), 4)
            row[f"{key}_sd"] = round(float(values.std(ddof=1)), 4) if repeats > 1 else None
        # The test set's own error, for the first sample of this size.
        ci = bootstrap_ci(test["label"].to_numpy(), runs[0]["p_test"], runs[0]["threshold"],
                          n_boot=args.bootstrap, seed=0)
        row["test_ci_first_sample"] = {k: [round(float(x), 4) for x in v] for k, v in ci.items()
                                       if k in ("f1", "auroc") and v is not None}
        line = json.dumps(row)
        print(line, flush=True)
        with out_path.open("a") as fh:
            fh.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
