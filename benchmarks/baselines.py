"""Baselines on a cohort: keyword rule, TF-IDF + LR on all notes, TF-IDF + LR on the first 3,000 words.

Usage::

    python benchmarks/baselines.py DIR [--seed 0] [--json OUT.json]

Reads ``DIR/notes.csv`` with the project's loader, joins each patient's notes in time order,
splits patients 70/30 (stratified, ``--seed``), fits on the 70% and reports, on the 30%:
F1, AUROC, precision and recall at threshold 0.5 (the keyword rule's scores are 0/1).
The synthetic cohort is "right" when the keyword rule has F1 <= 0.6 and TF-IDF + LR lands
between 0.70 and 0.88 (learnable, not trivial); the script prints whether that holds.
CPU only (scikit-learn); no GPU involved.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from ards_rag.baselines import keyword_rule_scores, stratified_patient_split, tfidf_lr
from ards_rag.evaluation import binary_metrics
from ards_rag.notes import load_notes, patient_texts


def run(cohort_dir: Path, seed: int) -> dict:
    t0 = time.perf_counter()
    table = load_notes(cohort_dir / "notes.csv")
    texts = patient_texts(table.notes)
    labels = table.labels.set_index("patient_id")["label"]
    labels = labels[labels.notna()].astype(bool)
    texts = texts.loc[labels.index]
    train_ids, test_ids = stratified_patient_split(labels.index.to_numpy(), labels.to_numpy(),
                                                   test_size=0.3, seed=seed)
    x_tr, y_tr = texts.loc[train_ids].tolist(), labels.loc[train_ids].to_numpy()
    x_te, y_te = texts.loc[test_ids].tolist(), labels.loc[test_ids].to_numpy()
    load_s = time.perf_counter() - t0

    systems: dict[str, np.ndarray] = {}
    timings: dict[str, float] = {}
    t = time.perf_counter()
    systems["keyword rule (any ARDS mention)"] = keyword_rule_scores(x_te)
    timings["keyword rule (any ARDS mention)"] = time.perf_counter() - t
    t = time.perf_counter()
    systems["TF-IDF + LR, all notes"] = tfidf_lr(x_tr, y_tr, x_te, seed=seed)
    timings["TF-IDF + LR, all notes"] = time.perf_counter() - t
    t = time.perf_counter()
    systems["TF-IDF + LR, first 3,000 words"] = tfidf_lr(x_tr, y_tr, x_te, max_words=3000,
                                                         seed=seed)
    timings["TF-IDF + LR, first 3,000 words"] = time.perf_counter() - t

    chars = texts.str.len()
    result = {
        "cohort": str(cohort_dir),
        "seed": seed,
        "patients": int(len(labels)),
        "positives": int(labels.sum()),
        "notes": int(len(table.notes)),
        "median_notes_per_patient": float(table.notes.groupby("patient_id").size().median()),
        "share_over_16k_chars": float((chars > 16_000).mean()),
        "median_chars_per_patient": float(chars.median()),
        "train": len(train_ids),
        "test": len(test_ids),
        "load_s": round(load_s, 2),
        "systems": {},
    }
    for name, scores in systems.items():
        m = binary_metrics(y_te, scores, 0.5)
        result["systems"][name] = {k: m[k] for k in ("f1", "auroc", "precision", "recall")}
        result["systems"][name]["seconds"] = round(timings[name], 2)
    kw = result["systems"]["keyword rule (any ARDS mention)"]["f1"] or 0.0
    lr = result["systems"]["TF-IDF + LR, all notes"]["f1"] or 0.0
    result["cohort_ok"] = bool(kw <= 0.6 and 0.70 <= lr <= 0.88)
    return result


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cohort_dir", type=Path, help="folder holding notes.csv")
    ap.add_argument("--seed", type=int, default=0, help="seed of the 70/30 split and of LR")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    try:
        res = run(args.cohort_dir, args.seed)
    except Exception as exc:  # one line, never a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{res['cohort']}: {res['patients']} patients ({res['positives']} positive), "
          f"{res['notes']} notes, median {res['median_notes_per_patient']:.0f} notes/patient, "
          f"{res['share_over_16k_chars']:.0%} of patients over 16k characters; "
          f"split seed {res['seed']}: {res['train']} train / {res['test']} test")
    print("| system | F1 | AUROC | precision | recall | seconds |")
    print("|---|---|---|---|---|---|")
    for name, m in res["systems"].items():
        print(f"| {name} | {_fmt(m['f1'])} | {_fmt(m['auroc'])} | {_fmt(m['precision'])} | "
              f"{_fmt(m['recall'])} | {m['seconds']:.1f} |")
    print("cohort check (keyword F1 <= 0.6, TF-IDF + LR F1 in [0.70, 0.88]): "
          + ("PASS" if res["cohort_ok"] else "FAIL"))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
