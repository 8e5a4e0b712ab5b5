"""Evaluation: classification metrics, the decision threshold, plots and the run's report.

The pure functions (:func:`binary_metrics`, :func:`best_f1_threshold`) need only numpy; they are
what training uses to choose the threshold on the validation split and what ``evaluate`` uses to
score the test split.

Conventions used throughout:

- ``y_true`` holds booleans (or 0/1); ``p`` the model's probability of ARDS (any real score works
  for the ranking metrics; the Brier score assumes probabilities in [0, 1]).
- A patient is predicted positive when ``p >= threshold``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import InputError

#: The threshold returned when F1 cannot choose one (only one class present in ``y_true``).
FALLBACK_THRESHOLD = 0.5


# --- input checks ----------------------------------------------------------------------------


def _as_arrays(y_true: Sequence[Any] | np.ndarray, p: Sequence[float] | np.ndarray,
               allow_empty: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert labels to a bool array and scores to a float array."""
    y = np.asarray(y_true)
    s = np.asarray(p, dtype=float) if len(np.asarray(p)) else np.zeros(0, dtype=float)
    if y.ndim != 1 or s.ndim != 1:
        raise InputError("labels and probabilities must be one-dimensional sequences")
    if len(y) != len(s):
        raise InputError(
            f"labels ({len(y)}) and probabilities ({len(s)}) differ in length; pass one of each "
            "per patient"
        )
    if not allow_empty and len(y) == 0:
        raise InputError("no patients to evaluate: the label and probability lists are empty")
    if y.dtype != bool:
        try:
            yf = y.astype(float)
        except (TypeError, ValueError):
            raise InputError(
                "labels must be booleans or 0/1; found a value that is neither (unlabeled <NA>?)"
            ) from None
        bad = ~np.isin(yf, (0.0, 1.0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(f"label at position {i} is {y[i]!r}; labels must be booleans or 0/1")
        y = yf.astype(bool)
    if not np.all(np.isfinite(s)):
        i = int(np.flatnonzero(~np.isfinite(s))[0])
        raise InputError(f"probability at position {i} is {s[i]!r}; every score must be finite")
    return y, s


# --- threshold -------------------------------------------------------------------------------


def best_f1_threshold(y_true: Sequence[Any] | np.ndarray, p: Sequence[float] | np.ndarray) -> float:
    """Return the threshold that maximizes F1 on ``(y_true, p)`` (predict positive if ``p >= t``).

    Candidates are the distinct scores: cutting at score ``s`` predicts positive every patient
    scoring ``s`` or more. Among candidates with the same (maximal) F1 the smallest score wins
    (the most sensitive cut). The returned threshold is the midpoint between that score and the
    next lower distinct score, so it classifies this set exactly like the cut at the score while
    leaving a margin on both sides for new patients; when the winning score is the lowest one
    (every patient positive), the score itself is returned.

    Degenerate inputs: when ``y_true`` has no positives or no negatives, F1 cannot choose a cut
    and :data:`FALLBACK_THRESHOLD` (0.5) is returned. Empty or mismatched inputs, labels other
    than booleans/0/1 and non-finite scores raise :class:`~ards_rag.errors.InputError`.
    """
    y, s = _as_arrays(y_true, p)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        return FALLBACK_THRESHOLD
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    # Last index of each run of equal scores, in descending score order: a cut at that score
    # makes everything up to that index positive.
    last = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), len(s_sorted) - 1]
    tp = np.cumsum(y_sorted)[last]
    predicted_pos = last + 1
    f1 = 2 * tp / (predicted_pos + n_pos)  # 2TP / (2TP + FP + FN), since TP+FP+TP+FN = pred+pos
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)[-1]  # descending order: last = smallest score
    score = float(s_sorted[last[best]])
    if best + 1 < len(last):
        return (score + float(s_sorted[last[best + 1]])) / 2.0
    return score


# --- metrics ---------------------------------------------------------------------------------


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``, ties given their average rank (as scipy.stats.rankdata)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.r_[0, np.flatnonzero(np.diff(xs) != 0) + 1]
    ends = np.r_[starts[1:], len(xs)]
    avg = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    ranks = np.empty(len(x), dtype=float)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def auroc(y_true: Sequence[Any] | np.ndarray, p: Sequence[float] | np.ndarray) -> float | None:
    """Area under the ROC curve: the share of (positive, negative) pairs ranked correctly, ties
    counting one half (Mann-Whitney U / (n_pos n_neg)). ``None`` when a class is absent."""
    y, s = _as_arrays(y_true, p)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _average_ranks(s)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def average_precision(y_true: Sequence[Any] | np.ndarray,
                      p: Sequence[float] | np.ndarray) -> float | None:
    """Average precision (area under the precision-recall curve, step-wise as in scikit-learn):
    ``sum_k (R_k - R_{k-1}) * P_k`` over the distinct scores, highest first. ``None`` without
    positives."""
    y, s = _as_arrays(y_true, p)
    n_pos = int(y.sum())
    if n_pos == 0:
        return None
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), len(s_sorted) - 1]
    tp = np.cumsum(y_sorted)[last].astype(float)
    precision = tp / (last + 1)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def calibration_bins(y_true: Sequence[Any] | np.ndarray, p: Sequence[float] | np.ndarray,
                     n_bins: int = 10) -> list[dict[str, float | int]]:
    """Equal-width probability bins over [0, 1]: for each non-empty bin its bounds, patient
    count, mean predicted probability and observed share of positives (reliability diagram)."""
    y, s = _as_arrays(y_true, p)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(s, edges[1:-1], right=False), 0, n_bins - 1)
    out: list[dict[str, float | int]] = []
    for b in range(n_bins):
        mask = idx == b
        if mask.any():
            out.append({
                "low": float(edges[b]), "high": float(edges[b + 1]), "count": int(mask.sum()),
                "mean_probability": float(s[mask].mean()),
                "observed_rate": float(y[mask].mean()),
            })
    return out


def expected_calibration_error(y_true: Sequence[Any] | np.ndarray,
                               p: Sequence[float] | np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error: the count-weighted mean |observed rate - mean probability|
    over the equal-width bins of :func:`calibration_bins`."""
    bins = calibration_bins(y_true, p, n_bins)
    n = sum(int(b["count"]) for b in bins)
    return float(sum(int(b["count"]) * abs(float(b["observed_rate"]) - float(b["mean_probability"]))
                     for b in bins) / n)


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def binary_metrics(y_true: Sequence[Any] | np.ndarray, p: Sequence[float] | np.ndarray,
                   threshold: float) -> dict[str, Any]:
    """All the metrics of a binary classifier at ``threshold`` (positive when ``p >= threshold``).

    Returns a JSON-ready dict: ``n, n_positive, n_negative, prevalence, threshold, accuracy,
    precision, recall, sensitivity`` (= recall), ``specificity, f1, auroc, auprc`` (average
    precision), ``brier, ece`` (expected calibration error, 10 bins), ``confusion`` (``tp, fp,
    tn, fn``) and ``notes``, a list of one-line explanations for every metric that is ``None``
    because it is undefined (e.g. AUROC when only one class is present). It never raises for a
    missing class; it raises :class:`~ards_rag.errors.InputError` for empty or malformed input.
    """
    y, s = _as_arrays(y_true, p)
    if not math.isfinite(float(threshold)):
        raise InputError(f"threshold is {threshold!r}; pass a finite number (e.g. 0.5)")
    pred = s >= threshold
    tp = int(np.sum(pred & y))
    fp = int(np.sum(pred & ~y))
    tn = int(np.sum(~pred & ~y))
    fn = int(np.sum(~pred & y))
    n = len(y)
    n_pos, n_neg = tp + fn, tn + fp
    notes: list[str] = []
    precision = _ratio(tp, tp + fp)
    if precision is None:
        notes.append("precision undefined: no patient predicted positive at this threshold")
    recall = _ratio(tp, n_pos)
    specificity = _ratio(tn, n_neg)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    if n_pos == 0:
        notes.append("recall/sensitivity, AUROC and AUPRC undefined: no positive patient")
    if n_neg == 0:
        notes.append("specificity and AUROC undefined: no negative patient")
    if f1 is None:
        notes.append("F1 undefined: no positive patient and none predicted positive")
    return {
        "n": n,
        "n_positive": n_pos,
        "n_negative": n_neg,
        "prevalence": n_pos / n,
        "threshold": float(threshold),
        "accuracy": (tp + tn) / n,
        "precision": precision,
        "recall": recall,
        "sensitivity": recall,
        "specificity": specificity,
        "f1": f1,
        "auroc": auroc(y, s),
        "auprc": average_precision(y, s),
        "brier": float(np.mean((s - y.astype(float)) ** 2)),
        "ece": expected_calibration_error(y, s),
        "confusion": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
        "notes": notes,
    }
