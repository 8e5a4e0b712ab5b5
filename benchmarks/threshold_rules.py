"""Does a smoother threshold rule than best F1 carry better to new patients?

Reads one or more ``predictions.csv`` files written by ``ards-rag evaluate`` (``label``,
``probability``), splits each file's patients in random halves (``--repeats`` times), chooses a
threshold on one half by each rule and scores F1 on the other half:

- ``best``: :func:`ards_rag.evaluation.best_f1_threshold` (what training does);
- ``bagged``: the median of best-F1 thresholds over ``--bootstrap`` resamples of the half;
- ``smoothed``: the cut that maximizes the mean F1 over those resamples.

Prints one JSON line per file: held-out F1 (mean, standard deviation) per rule and how often
each alternative beats best F1 on the same split.

    python benchmarks/threshold_rules.py runs/a/predictions.csv runs/b/predictions.csv
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd

from ards_rag.evaluation import best_f1_threshold


def f1_at(y: np.ndarray, p: np.ndarray, t: float) -> float:
    # binary_metrics()["f1"] without its input checks and other metrics: called ~10^6 times here.
    predicted = p >= t
    return float(2 * (predicted & y).sum() / (predicted.sum() + y.sum()))


def _resamples(y: np.ndarray, rng: np.random.Generator, n_boot: int) -> list[np.ndarray]:
    out = []
    while len(out) < n_boot:
        i = rng.integers(0, len(y), len(y))
        if y[i].any() and not y[i].all():
            out.append(i)
    return out


def bagged(y: np.ndarray, p: np.ndarray, rng: np.random.Generator, n_boot: int) -> float:
    return float(np.median([best_f1_threshold(y[i], p[i]) for i in _resamples(y, rng, n_boot)]))


def smoothed(y: np.ndarray, p: np.ndarray, rng: np.random.Generator, n_boot: int) -> float:
    cand = np.unique(p)  # ascending
    mean_f1 = np.zeros(len(cand))
    for i in _resamples(y, rng, n_boot):
        mean_f1 += [f1_at(y[i], p[i], c) for c in cand]
    j = int(np.argmax(mean_f1))
    return float(cand[j] if j == 0 else (cand[j] + cand[j - 1]) / 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("predictions", nargs="+", help="predictions.csv files from ards-rag evaluate")
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--bootstrap", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    for path in args.predictions:
        d = pd.read_csv(path)
        y = d["label"].astype(str).str.lower().isin(["true", "1"]).to_numpy()
        p = d["probability"].to_numpy(float)
        rng = np.random.default_rng(args.seed)
        scores: dict[str, list[float]] = {"best": [], "bagged": [], "smoothed": []}
        done = 0
        while done < args.repeats:
            perm = rng.permutation(len(y))
            a, b = perm[: len(y) // 2], perm[len(y) // 2:]
            if y[a].all() or not y[a].any():
                continue
            scores["best"].append(f1_at(y[b], p[b], best_f1_threshold(y[a], p[a])))
            scores["bagged"].append(f1_at(y[b], p[b], bagged(y[a], p[a], rng, args.bootstrap)))
            scores["smoothed"].append(f1_at(y[b], p[b], smoothed(y[a], p[a], rng, args.bootstrap)))
            done += 1
        best = np.array(scores["best"])
        out = {"file": path, "patients": len(y), "positives": int(y.sum()), "repeats": done,
               "held_out_f1": {k: [round(float(np.mean(v)), 4), round(float(np.std(v)), 4)]
                               for k, v in scores.items()}}
        for k in ("bagged", "smoothed"):
            delta = np.array(scores[k]) - best
            out[f"{k}_vs_best"] = {"mean": round(float(delta.mean()), 4),
                                   "share_better": float((delta > 0).mean()),
                                   "share_worse": float((delta < 0).mean())}
        print(json.dumps(out))


if __name__ == "__main__":
    main()
