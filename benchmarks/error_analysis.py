"""Where a run's errors fall on a synthetic cohort: by generator scenario, against TF-IDF + LR.

    python benchmarks/error_analysis.py RUN/predictions.csv --patients 2000 --seed 0 --split-seed 7
    python benchmarks/error_analysis.py RUN/predictions.csv --patients 2000 --seed 0 --split RUN/split.csv

``predictions.csv`` is what ``ards-rag evaluate`` writes (``patient_id, label, probability,
prediction, evidence_note_ids``) for a run trained on ``ards-rag synth --patients N --seed S``.
The cohort is regenerated in memory (same arguments, same patients) with each patient's scenario
(:func:`ards_rag.synthetic.patient_scenarios`); the run's split comes from its ``split.csv`` or is
recomputed from the config seed (``--split-seed``; checked against the predictions' patients).
TF-IDF + LR on all notes is fitted on the train patients and cut at its best validation F1, as in
the evaluation's baseline. Printed: errors of both per scenario, how much of each positive's
evidence the model read (``evidence_note_ids`` against the generator's evidence notes), errors
by length of stay (notes per patient), and the AUROC of the two scores' rank mean (information
only: the two systems' errors differ). One JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("predictions", help="predictions.csv of `ards-rag evaluate`")
    ap.add_argument("--patients", type=int, required=True, help="cohort size given to `ards-rag synth`")
    ap.add_argument("--seed", type=int, default=0, help="cohort seed given to `ards-rag synth`")
    ap.add_argument("--prevalence", type=float, default=0.25)
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--split", help="the run's split.csv")
    group.add_argument("--split-seed", type=int, help="the run's config seed (split recomputed)")
    args = ap.parse_args(argv)

    from sklearn.metrics import roc_auc_score

    from ards_rag.baselines import tfidf_lr
    from ards_rag.evaluation import best_f1_threshold
    from ards_rag.notes import patient_texts
    from ards_rag.synthetic import generate_cohort, patient_scenarios
    from ards_rag.training import stratified_split

    notes, evidence = generate_cohort(args.patients, args.seed, prevalence=args.prevalence)
    scen = patient_scenarios(args.patients, args.seed, prevalence=args.prevalence).set_index("patient_id")
    pred = pd.read_csv(args.predictions, dtype={"patient_id": str})
    if args.split:
        split = pd.read_csv(args.split, dtype={"patient_id": str})
    else:
        labels = scen["label"].rename("label").reset_index()
        split = stratified_split(labels, 0.15, 0.15, args.split_seed)
    in_split = set(split.loc[split["split"] == "test", "patient_id"])
    if in_split != set(pred["patient_id"]):
        ap.error("the predictions' patients are not the split's test patients: check --patients, --seed "
                 "and the split")

    texts = patient_texts(notes.assign(note_seq=notes.groupby("patient_id").cumcount()))
    train = split[split["split"] == "train"]
    val = split[split["split"] == "validation"]
    probs = tfidf_lr([texts[p] for p in train["patient_id"]], train["label"].astype(int).to_numpy(),
                     [texts[p] for p in val["patient_id"]] + [texts[p] for p in pred["patient_id"]])
    cut = best_f1_threshold(val["label"].astype(int).to_numpy(), probs[: len(val)])

    df = pred.assign(tfidf=probs[len(val):])
    y = df["label"].astype(str).str.lower().eq("true").to_numpy()
    df["scenario"] = df["patient_id"].map(scen["scenario"])
    df["model_error"] = df["prediction"].astype(str).str.lower().eq("true").to_numpy() != y
    df["tfidf_error"] = (df["tfidf"].to_numpy() >= cut) != y
    df["n_notes"] = df["patient_id"].map(notes.groupby("patient_id").size())
    read = df["evidence_note_ids"].fillna("").str.split(";").apply(lambda ids: {i for i in ids if i})
    ev_notes = evidence[~evidence["kind"].str.startswith("trap_")].groupby("patient_id")["note_id"].agg(set)
    bilateral = evidence[evidence["kind"] == "bilateral_opacities"].groupby("patient_id")["note_id"].agg(set)

    table = df.groupby("scenario").agg(patients=("patient_id", "size"), model_errors=("model_error", "sum"),
                                       tfidf_errors=("tfidf_error", "sum"),
                                       model_mean_p=("probability", "mean"), tfidf_mean_p=("tfidf", "mean"))
    table = table.sort_values("patients", ascending=False)
    positives = [(p, r) for p, r, t in zip(df["patient_id"], read, y, strict=True) if t]
    coverage = float(np.mean([len(ev_notes.get(p, set()) & r) / max(1, len(ev_notes.get(p, set())))
                              for p, r in positives])) if positives else None
    bilateral_read = float(np.mean([bool(bilateral.get(p, set()) & r) for p, r in positives])) if positives else None
    stay = pd.qcut(df["n_notes"], 3, duplicates="drop")
    by_stay = df.groupby(stay, observed=True).agg(patients=("patient_id", "size"), model_errors=("model_error", "sum"),
                                                  tfidf_errors=("tfidf_error", "sum"))
    rank_mean = pd.Series(df["probability"]).rank().to_numpy() + pd.Series(df["tfidf"]).rank().to_numpy()

    print(f"{len(df)} test patients, {int(y.sum())} with ARDS; TF-IDF + LR cut {cut:.3f} (best validation F1)")
    print(f"errors: model {int(df['model_error'].sum())}, TF-IDF + LR {int(df['tfidf_error'].sum())}, "
          f"both {int((df['model_error'] & df['tfidf_error']).sum())}")
    print(table.round(3).to_string())
    print(f"positives: evidence notes read {coverage:.3f}, a bilateral-opacities note read {bilateral_read:.3f}")
    print("by notes per patient (tertiles):")
    print(by_stay.to_string())
    auroc = {"model": float(roc_auc_score(y, df["probability"])), "tfidf_lr": float(roc_auc_score(y, df["tfidf"])),
             "rank_mean": float(roc_auc_score(y, rank_mean))}
    print("AUROC " + ", ".join(f"{k} {v:.3f}" for k, v in auroc.items()))
    print(json.dumps({
        "patients": len(df), "tfidf_cut": cut, "auroc": auroc, "evidence_read": coverage,
        "bilateral_read": bilateral_read,
        "by_scenario": {k: {c: (int(v) if c.endswith(("errors", "patients")) else round(float(v), 4))
                            for c, v in row.items()} for k, row in table.iterrows()},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
