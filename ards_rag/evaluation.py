"""Evaluation: classification metrics, the decision threshold, plots and the run's report.

Layers, each usable alone:

- Pure metrics on arrays (:func:`binary_metrics`, :func:`best_f1_threshold`,
  :func:`sensitivity_threshold`, :func:`specificity_threshold`, :func:`auroc`,
  :func:`average_precision`, :func:`bootstrap_ci`, :func:`paired_bootstrap_delta`): training
  uses :func:`best_f1_threshold` to choose the threshold on the validation split.
- :func:`write_evaluation`: from a predictions frame, the threshold, baselines and evidence
  passages, writes ``metrics.json``, ``predictions.csv``, four PNG plots and ``report.md``; no
  model needed.
- :class:`Evaluator` (``ards-rag evaluate``): scores a run's split through
  :func:`ards_rag.prediction.predict_patients`, computes the baselines on the same patients
  (:func:`text_baselines`, :func:`sibling_baselines`) and calls :func:`write_evaluation`.
- :func:`choose_threshold` (``ards-rag threshold``): scores a run's validation split again and
  saves another operating point (best F1, a target sensitivity or specificity, or a given value)
  in its ``threshold.json``.

Reports quote note snippets (PHI) and stay in the local run folder; nothing here logs note text.

Conventions used throughout:

- ``y_true`` holds booleans (or 0/1); ``p`` the model's probability of ARDS (any real score works
  for the ranking metrics; the Brier score assumes probabilities in [0, 1]).
- A patient is predicted positive when ``p >= threshold``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .fsutil import atomic_file
from .errors import IndexStoreError, InputError, RunError
from .training import SPLITS

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
    scores, tp, predicted_pos = _cuts(y, s)
    f1 = 2 * tp / (predicted_pos + n_pos)  # 2TP / (2TP + FP + FN), since TP+FP+TP+FN = pred+pos
    best = int(np.flatnonzero(f1 >= f1.max() - 1e-12)[-1])  # descending order: last = smallest score
    return _cut_threshold(scores, best)


def _cuts(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every cut at a distinct score, highest first: the scores, and for the cut at each (predict
    positive when ``p >= score``) the true positives and the patients predicted positive."""
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    # Last index of each run of equal scores, in descending score order: a cut at that score
    # makes everything up to that index positive.
    last = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), len(s_sorted) - 1]
    return s_sorted[last], np.cumsum(y_sorted)[last], last + 1


def _cut_threshold(scores: np.ndarray, i: int) -> float:
    """The threshold for the cut at ``scores[i]`` (descending distinct scores): the midpoint to the
    next lower score, which classifies the set alike while leaving a margin for new patients;
    the score itself when it is the lowest. ``i = -1`` is the cut above every score."""
    if i < 0:
        top = float(scores[0])
        return (top + 1.0) / 2.0 if top < 1.0 else float(np.nextafter(top, np.inf))
    if i + 1 < len(scores):
        return (float(scores[i]) + float(scores[i + 1])) / 2.0
    return float(scores[i])


def _check_target(name: str, target: float) -> None:
    if not 0.0 < target <= 1.0:
        raise InputError(f"target {name} {target!r} is outside (0, 1]; pass e.g. 0.9")


def sensitivity_threshold(y_true: Sequence[Any] | np.ndarray, p: Sequence[float] | np.ndarray,
                          target: float) -> float:
    """The highest threshold whose sensitivity on ``(y_true, p)`` is at least ``target``: the most
    specific cut that still finds that share of the ARDS patients (a screening operating point).

    Returned as a midpoint between distinct scores, like :func:`best_f1_threshold`. Raises
    :class:`~ards_rag.errors.InputError` when ``y_true`` has no positive or ``target`` is not in
    (0, 1].
    """
    _check_target("sensitivity", target)
    y, s = _as_arrays(y_true, p)
    n_pos = int(y.sum())
    if n_pos == 0:
        raise InputError("no ARDS patient among the labels: sensitivity cannot choose a threshold")
    scores, tp, _ = _cuts(y, s)
    # tp grows down the cuts; the first cut that reaches the target is the highest one.
    return _cut_threshold(scores, int(np.flatnonzero(tp >= target * n_pos - 1e-9)[0]))


def specificity_threshold(y_true: Sequence[Any] | np.ndarray, p: Sequence[float] | np.ndarray,
                          target: float) -> float:
    """The lowest threshold whose specificity on ``(y_true, p)`` is at least ``target``: the most
    sensitive cut that still clears that share of the patients without ARDS (a confirmatory
    operating point). Above every score when only that reaches the target.

    Raises :class:`~ards_rag.errors.InputError` when ``y_true`` has no negative or ``target`` is
    not in (0, 1].
    """
    _check_target("specificity", target)
    y, s = _as_arrays(y_true, p)
    n_neg = int((~y).sum())
    if n_neg == 0:
        raise InputError("no patient without ARDS among the labels: specificity cannot choose a "
                         "threshold")
    scores, tp, predicted_pos = _cuts(y, s)
    fp = predicted_pos - tp
    ok = np.flatnonzero(fp <= (1.0 - target) * n_neg + 1e-9)  # fp grows down the cuts
    return _cut_threshold(scores, int(ok[-1]) if len(ok) else -1)


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


def bootstrap_ci(y_true: Sequence[Any] | np.ndarray, p: Sequence[float] | np.ndarray,
                 threshold: float, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> dict[str, list[float] | None]:
    """Percentile bootstrap intervals (patients resampled with replacement, threshold fixed) for
    F1, AUROC, sensitivity and specificity. A metric undefined in over half the resamples (e.g.
    AUROC on a test set with two positives) gets ``None``. Small test splits have wide intervals:
    report them beside the point estimates."""
    y, s = _as_arrays(y_true, p)
    rng = np.random.default_rng(seed)
    n = len(y)
    idx = rng.integers(0, n, size=(n_boot, n))
    yb, sb = y[idx], s[idx]
    pred = sb >= threshold
    tp = (pred & yb).sum(1)
    fp = (pred & ~yb).sum(1)
    fn = (~pred & yb).sum(1)
    tn = (~pred & ~yb).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = {
            "f1": np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan),
            "sensitivity": np.where(tp + fn > 0, tp / (tp + fn), np.nan),
            "specificity": np.where(tn + fp > 0, tn / (tn + fp), np.nan),
        }
    values["auroc"] = np.array([
        a if (a := auroc(yb[i], sb[i])) is not None else np.nan for i in range(n_boot)
    ])
    alpha = (1 - level) / 2
    out: dict[str, list[float] | None] = {}
    for name, v in values.items():
        v = v[np.isfinite(v)]
        out[name] = (None if len(v) < n_boot / 2
                     else [float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha))])
    return out


def paired_bootstrap_delta(y_true: Sequence[Any] | np.ndarray, p_model: Sequence[float] | np.ndarray,
                           t_model: float, p_other: Sequence[float] | np.ndarray, t_other: float,
                           n_boot: int = 1000, seed: int = 0,
                           level: float = 0.95) -> dict[str, dict[str, Any]]:
    """Model minus another system on the same patients, for F1 (each at its own threshold) and
    AUROC: the observed difference, a percentile interval from resampling patients (both systems
    on the same resample) and the share of resamples where the model is not better. An interval
    above 0 means the model is better on this split beyond resampling noise."""
    y, a = _as_arrays(y_true, p_model)
    _, b = _as_arrays(y_true, p_other)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), size=(n_boot, len(y)))
    alpha = (1 - level) / 2
    out: dict[str, dict[str, Any]] = {}

    def f1_of(yb: np.ndarray, sb: np.ndarray, t: float) -> np.ndarray:
        pred = sb >= t
        tp = (pred & yb).sum(-1)
        den = 2 * tp + (pred & ~yb).sum(-1) + (~pred & yb).sum(-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, 2 * tp / den, np.nan)

    observed_f1 = float(f1_of(y, a, t_model) - f1_of(y, b, t_other))
    d = f1_of(y[idx], a[idx], t_model) - f1_of(y[idx], b[idx], t_other)
    deltas = {"f1": (observed_f1, d)}
    au_a, au_b = auroc(y, a), auroc(y, b)
    if au_a is not None and au_b is not None:
        d = np.array([
            (x - z) if (x := auroc(y[i], a[i])) is not None and (z := auroc(y[i], b[i])) is not None
            else np.nan for i in idx
        ])
        deltas["auroc"] = (au_a - au_b, d)
    for name, (observed, d) in deltas.items():
        d = d[np.isfinite(d)]
        ok = len(d) >= n_boot / 2
        out[name] = {
            "delta": observed,
            "ci95": [float(np.quantile(d, alpha)), float(np.quantile(d, 1 - alpha))] if ok else None,
            "p_not_better": float(np.mean(d <= 0)) if ok else None,
        }
    return out


# --- tables ----------------------------------------------------------------------------------

TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("f1", "F1"), ("auroc", "AUROC"), ("auprc", "AUPRC"), ("sensitivity", "Sens"),
    ("specificity", "Spec"), ("precision", "Prec"), ("accuracy", "Acc"), ("brier", "Brier"),
    ("threshold", "Thr"),
)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    return f"{float(value):.{digits}f}"


def format_table(metrics_by_system: dict[str, dict[str, Any]]) -> str:
    """A plain-text table, one row per system (in the given order): n, F1, AUROC, AUPRC,
    sensitivity, specificity, precision, accuracy, Brier score, threshold. Undefined values
    print as ``n/a``."""
    header = ["system", "n"] + [label for _, label in TABLE_COLUMNS]
    rows = [header]
    for name, m in metrics_by_system.items():
        rows.append([name, _fmt(m.get("n"))] + [_fmt(m.get(key)) for key, _ in TABLE_COLUMNS])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for k, r in enumerate(rows):
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _markdown_table(metrics_by_system: dict[str, dict[str, Any]],
                    ci: dict[str, list[float] | None] | None = None,
                    ci_system: str | None = None) -> str:
    header = ["system", "n"] + [label for _, label in TABLE_COLUMNS]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, m in metrics_by_system.items():
        cells = [name.replace("|", "/"), _fmt(m.get("n"))]
        for key, _ in TABLE_COLUMNS:
            cell = _fmt(m.get(key))
            if ci and name == ci_system and ci.get(key):
                lo, hi = ci[key]  # type: ignore[misc]
                cell += f" ({lo:.2f}–{hi:.2f})"
            cells.append(cell)
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


# --- plots -----------------------------------------------------------------------------------


def _rates(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative TP and FP counts (floats) at each distinct score, highest score first."""
    _, tp, predicted_pos = _cuts(y, s)
    return tp.astype(float), (predicted_pos - tp).astype(float)


def roc_points(y_true: Sequence[Any] | np.ndarray,
               p: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates of the ROC curve, from (0, 0) to (1, 1)."""
    y, s = _as_arrays(y_true, p)
    tp, fp = _rates(y, s)
    return (np.r_[0.0, fp / max(int((~y).sum()), 1)], np.r_[0.0, tp / max(int(y.sum()), 1)])


def pr_points(y_true: Sequence[Any] | np.ndarray,
              p: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Recall and precision at each distinct score (highest first), starting at recall 0."""
    y, s = _as_arrays(y_true, p)
    tp, fp = _rates(y, s)
    precision = tp / (tp + fp)
    return np.r_[0.0, tp / max(int(y.sum()), 1)], np.r_[precision[0], precision]


def _new_figure(w: float = 5.0, h: float = 4.5) -> Any:
    # Figure + the Agg canvas directly: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _curves(model_name: str, y: np.ndarray, s: np.ndarray,
            baselines: dict[str, dict[str, Any]]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    out = [(model_name, y, s)]
    for name, entry in baselines.items():
        curve = entry.get("curve")
        if curve:
            by, bs = _as_arrays(curve["y"], curve["p"])
            if by.any() and (~by).any():
                out.append((name, by, bs))
    return out


def plot_roc(path: Path, curves: list[tuple[str, np.ndarray, np.ndarray]]) -> None:
    """ROC curves of the model and the baselines that have scores, with each AUROC."""
    fig = _new_figure()
    ax = fig.add_subplot()
    for k, (name, y, s) in enumerate(curves):
        fpr, tpr = roc_points(y, s)
        a = auroc(y, s)
        ax.plot(fpr, tpr, lw=2.2 if k == 0 else 1.2, ls="-" if k == 0 else "--",
                label=f"{name} (AUROC {_fmt(a)})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.set(xlabel="1 - specificity (false positive rate)", ylabel="sensitivity (true positive rate)",
           title="ROC", xlim=(-0.01, 1.01), ylim=(-0.01, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def plot_pr(path: Path, curves: list[tuple[str, np.ndarray, np.ndarray]]) -> None:
    """Precision-recall curves, with each average precision and the prevalence line."""
    fig = _new_figure()
    ax = fig.add_subplot()
    for k, (name, y, s) in enumerate(curves):
        rec, prec = pr_points(y, s)
        ap = average_precision(y, s)
        ax.step(rec, prec, where="pre", lw=2.2 if k == 0 else 1.2, ls="-" if k == 0 else "--",
                label=f"{name} (AP {_fmt(ap)})")
    prevalence = float(curves[0][1].mean())
    ax.axhline(prevalence, color="grey", lw=0.8, ls=":", label=f"prevalence {prevalence:.2f}")
    ax.set(xlabel="recall (sensitivity)", ylabel="precision", title="Precision-recall",
           xlim=(-0.01, 1.01), ylim=(-0.01, 1.05))
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def plot_calibration(path: Path, y: np.ndarray, s: np.ndarray, threshold: float,
                     n_bins: int = 10) -> None:
    """Reliability diagram (observed ARDS rate against mean probability per bin, marker area
    by count) above a histogram of the probabilities of each class."""
    fig = _new_figure(5.0, 6.0)
    ax, hx = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    bins = calibration_bins(y, s, n_bins)
    xs = [b["mean_probability"] for b in bins]
    ys = [b["observed_rate"] for b in bins]
    sizes = [20 + 180 * b["count"] / len(y) for b in bins]
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", label="perfect calibration")
    ax.plot(xs, ys, color="C0", lw=1.2)
    ax.scatter(xs, ys, s=sizes, color="C0", zorder=3, label="model (area ~ patients)")
    ax.axvline(threshold, color="C3", lw=0.8, ls="--", label=f"threshold {threshold:.3f}")
    ax.set(ylabel="observed share with ARDS", title="Calibration", ylim=(-0.02, 1.02))
    ax.legend(loc="upper left", fontsize=8)
    edges = np.linspace(0, 1, n_bins + 1)
    hx.hist([s[~y], s[y]], bins=edges, label=["no ARDS", "ARDS"], color=["C1", "C0"],
            stacked=True)
    hx.set(xlabel="predicted probability of ARDS", ylabel="patients", xlim=(-0.01, 1.01))
    hx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def plot_confusion(path: Path, confusion: dict[str, int], threshold: float) -> None:
    """The 2 x 2 confusion matrix with counts (rows: truth, columns: prediction)."""
    fig = _new_figure(4.2, 3.8)
    ax = fig.add_subplot()
    mat = np.array([[confusion["tp"], confusion["fn"]], [confusion["fp"], confusion["tn"]]])
    ax.imshow(mat, cmap="Blues", vmin=0, vmax=max(int(mat.max()), 1))
    names = [["TP", "FN"], ["FP", "TN"]]
    for i in range(2):
        for j in range(2):
            dark = mat[i, j] > mat.max() / 2
            ax.text(j, i, f"{names[i][j]}\n{mat[i, j]}", ha="center", va="center",
                    color="white" if dark else "black", fontsize=12)
    ax.set_xticks([0, 1], ["ARDS", "no ARDS"])
    ax.set_yticks([0, 1], ["ARDS", "no ARDS"])
    ax.set(xlabel=f"predicted (p >= {threshold:.3f})", ylabel="label", title="Confusion matrix")
    fig.tight_layout()
    fig.savefig(path)


# --- output files ----------------------------------------------------------------------------

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"
REPORT_FILE = "report.md"
PLOT_FILES = {
    "roc": "roc.png",
    "pr": "precision_recall.png",
    "calibration": "calibration.png",
    "confusion": "confusion_matrix.png",
}
SNIPPET_CHARS = 240
MAX_EVIDENCE_PASSAGES = 5


def _json_ready(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _join_ids(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (list, tuple, np.ndarray)):
        return ";".join(str(v) for v in value)
    return str(value)


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    """One line of at most ``limit`` characters: whitespace collapsed, cut at a word boundary."""
    flat = " ".join(str(text).split())
    if len(flat) <= limit:
        return flat
    cut = flat[:limit].rsplit(" ", 1)[0]
    return cut + " …"


def prepare_predictions(predictions: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Validate a frame of ``patient_id, label, probability`` (+ optional ``prediction``,
    ``evidence_note_ids``) and return it in the ``predictions.csv`` layout, with ``prediction``
    recomputed as ``probability >= threshold``. A given ``prediction`` column that disagrees with
    the threshold raises :class:`~ards_rag.errors.InputError`."""
    missing = [c for c in ("patient_id", "label", "probability") if c not in predictions.columns]
    if missing:
        raise InputError(f"predictions frame lacks column(s) {', '.join(missing)}")
    if predictions["patient_id"].duplicated().any():
        dup = predictions.loc[predictions["patient_id"].duplicated(), "patient_id"].iloc[0]
        raise InputError(f"patient {dup!r} appears twice in the predictions; one row per patient")
    y, s = _as_arrays(predictions["label"].to_numpy(), predictions["probability"].to_numpy())
    pred = s >= threshold
    if "prediction" in predictions.columns:
        given = predictions["prediction"].astype(bool).to_numpy()
        if (given != pred).any():
            i = int(np.flatnonzero(given != pred)[0])
            raise InputError(
                f"patient {predictions['patient_id'].iloc[i]!r}: prediction {bool(given[i])} "
                f"disagrees with probability {s[i]:.4f} at threshold {threshold:.4f}"
            )
    evidence = (predictions["evidence_note_ids"].map(_join_ids)
                if "evidence_note_ids" in predictions.columns else "")
    return pd.DataFrame({
        "patient_id": predictions["patient_id"].astype(str).to_numpy(),
        "label": y,
        "probability": s,
        "prediction": pred,
        "evidence_note_ids": evidence,
    })


def baseline_entry(y_true: Sequence[Any] | np.ndarray, p: Sequence[float] | np.ndarray,
                   threshold: float, description: str,
                   patient_ids: Sequence[str] | None = None) -> dict[str, Any]:
    """A baseline for :func:`write_evaluation`: its metrics at ``threshold``, a one-line
    description (how it was trained and its threshold chosen) and its scores, which the ROC and
    precision-recall plots draw beside the model's. With ``patient_ids`` (same order as the
    scores) the report also compares it with the model patient by patient (paired bootstrap)."""
    y, s = _as_arrays(y_true, p)
    entry = binary_metrics(y, s, threshold)
    entry["description"] = description
    entry["curve"] = {"y": y.tolist(), "p": s.tolist()}
    if patient_ids is not None:
        entry["curve"]["patient_id"] = [str(x) for x in patient_ids]
    return entry


def _comparisons(frame: pd.DataFrame, threshold: float, baselines: dict[str, dict[str, Any]],
                 n_boot: int, seed: int) -> dict[str, dict[str, Any]]:
    """Paired model-minus-baseline differences for the baselines scored on the same patients."""
    out: dict[str, dict[str, Any]] = {}
    by_id = frame.set_index("patient_id")
    for name, entry in baselines.items():
        curve = entry.get("curve") or {}
        ids = curve.get("patient_id")
        if not ids or set(ids) != set(by_id.index) or len(ids) != len(by_id):
            continue
        sub = by_id.loc[ids]
        if sub["label"].tolist() != [bool(v) for v in curve["y"]]:
            continue
        out[name] = paired_bootstrap_delta(
            sub["label"].to_numpy(dtype=bool), sub["probability"].to_numpy(dtype=float),
            threshold, curve["p"], float(entry["threshold"]), n_boot=n_boot, seed=seed)
    return out


def write_evaluation(
    out_dir: str | Path,
    predictions: pd.DataFrame,
    threshold: float,
    baselines: dict[str, dict[str, Any]] | None = None,
    evidence: dict[str, list[dict[str, Any]]] | None = None,
    *,
    split: str = "test",
    model_name: str = "model",
    threshold_info: dict[str, Any] | None = None,
    run_info: dict[str, Any] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    remarks: list[str] | None = None,
) -> dict[str, Any]:
    """Write ``metrics.json``, ``predictions.csv``, the four PNG plots and ``report.md``.

    ``predictions``: one row per patient with ``patient_id, label, probability`` (and optionally
    ``prediction``, ``evidence_note_ids``). ``baselines``: name -> a metrics dict (as from
    :func:`binary_metrics`, e.g. another run's ``metrics.json``) with an optional
    ``description`` and ``curve`` (see :func:`baseline_entry`). ``evidence``: patient id -> the
    passages the model read (dicts with ``note_id, charttime, section, text``, optionally
    ``note_type, score``), strongest first; the report quotes a short snippet of each for the
    false positives and false negatives. The report holds note text (PHI): it belongs in the
    local run folder only. ``remarks``: extra one-line notes for the report (e.g. a baseline
    that could not be included, and why). Returns the content of ``metrics.json``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    baselines = dict(baselines or {})
    evidence = evidence or {}
    frame = prepare_predictions(predictions, threshold)
    y = frame["label"].to_numpy(dtype=bool)
    s = frame["probability"].to_numpy(dtype=float)
    model = binary_metrics(y, s, threshold)
    ci = bootstrap_ci(y, s, threshold, n_boot=n_bootstrap, seed=seed) if n_bootstrap else {}
    comparisons = (_comparisons(frame, threshold, baselines, n_bootstrap, seed)
                   if n_bootstrap else {})
    metrics: dict[str, Any] = {
        "split": split,
        "primary_metric": "f1",
        "model_name": model_name,
        "threshold": float(threshold),
        "threshold_info": threshold_info or {},
        "model": model,
        "ci95": ci,
        "n_bootstrap": n_bootstrap,
        "comparisons": comparisons,
        "baselines": {name: {k: v for k, v in entry.items() if k != "curve"}
                      for name, entry in baselines.items()},
        "run": run_info or {},
        "remarks": list(remarks or []),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": {"predictions": PREDICTIONS_FILE, "report": REPORT_FILE, **PLOT_FILES},
    }
    metrics = _json_ready(metrics)

    curves = _curves(model_name, y, s, baselines)
    plot_roc(out / PLOT_FILES["roc"], curves)
    plot_pr(out / PLOT_FILES["pr"], curves)
    plot_calibration(out / PLOT_FILES["calibration"], y, s, threshold)
    plot_confusion(out / PLOT_FILES["confusion"], model["confusion"], threshold)
    atomic_file(out / PREDICTIONS_FILE, lambda p: frame.to_csv(p, index=False))
    report = render_report(metrics, frame, evidence)
    atomic_file(out / REPORT_FILE, lambda p: p.write_text(report, encoding="utf-8"))
    atomic_file(out / METRICS_FILE,
                  lambda p: p.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8"))
    return metrics


def systems_table(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The model's and the baselines' metrics from a ``metrics.json`` dict, model first."""
    return {metrics.get("model_name", "model"): metrics["model"], **metrics.get("baselines", {})}


def _error_rows(frame: pd.DataFrame, kind: str) -> pd.DataFrame:
    if kind == "fp":
        rows = frame[frame["prediction"] & ~frame["label"]]
        return rows.sort_values(["probability", "patient_id"], ascending=[False, True])
    rows = frame[~frame["prediction"] & frame["label"]]
    return rows.sort_values(["probability", "patient_id"], ascending=[True, True])


def _evidence_lines(passages: list[dict[str, Any]]) -> list[str]:
    if not passages:
        return ["- (no evidence passages recorded for this patient)"]
    lines = []
    for psg in passages[:MAX_EVIDENCE_PASSAGES]:
        parts = [f"note `{psg.get('note_id', '?')}`"]
        if psg.get("charttime"):
            parts.append(str(psg["charttime"]))
        if psg.get("note_type"):
            parts.append(str(psg["note_type"]))
        if psg.get("section"):
            parts.append(f"section *{psg['section']}*")
        if psg.get("score") is not None:
            parts.append(f"score {float(psg['score']):.2f}")
        text = snippet(psg.get("text", "")).replace("`", "'")
        lines.append(f"- {' · '.join(parts)}: \u201c{text}\u201d")
    if len(passages) > MAX_EVIDENCE_PASSAGES:
        lines.append(f"- … and {len(passages) - MAX_EVIDENCE_PASSAGES} more passage(s)")
    return lines


def render_report(metrics: dict[str, Any], frame: pd.DataFrame,
                  evidence: dict[str, list[dict[str, Any]]]) -> str:
    """The Markdown report: summary, metrics table with baselines, plots, errors with evidence."""
    m = metrics["model"]
    info = metrics.get("threshold_info") or {}
    run = metrics.get("run") or {}
    split = metrics["split"]
    lines = [
        f"# Evaluation report: {run.get('name', metrics.get('model_name', 'model'))}, "
        f"{split} split",
        "",
        "> Contains excerpts of clinical notes (PHI). Keep this file in the local run folder; "
        "do not share it.",
        "",
    ]
    for key, label in (("base_model", "Base model"), ("strategy", "Context"),
                       ("index", "Index"), ("zero_shot", "Zero-shot")):
        if run.get(key) is not None:
            lines.append(f"- {label}: `{run[key]}`")
    lines += [
        f"- Patients: {m['n']} ({m['n_positive']} with ARDS, prevalence {m['prevalence']:.3f})",
        f"- Threshold: {m['threshold']:.4f} (predict ARDS when probability >= threshold), "
        f"{describe_threshold(info)}",
        f"- Created: {metrics.get('created', '')}",
        "",
        "## Metrics",
        "",
        f"Primary metric: F1. In brackets: 95% bootstrap intervals ({metrics.get('n_bootstrap')} "
        f"resamples of the {split} patients, threshold fixed). Baselines are scored on the same "
        "patients; their thresholds were chosen on the validation split as well unless stated.",
        "",
        _markdown_table(systems_table(metrics), metrics.get("ci95"),
                        metrics.get("model_name", "model")),
        "",
    ]
    described = [(n, b["description"]) for n, b in metrics.get("baselines", {}).items()
                 if b.get("description")]
    if described:
        lines += [f"- **{n}**: {d}" for n, d in described] + [""]
    notes = list(m.get("notes", []))
    notes += [f"{n}: {note}" for n, b in metrics.get("baselines", {}).items()
              for note in b.get("notes", [])]
    if notes:
        lines += ["Undefined values:", ""] + [f"- {note}" for note in notes] + [""]
    comparisons = metrics.get("comparisons") or {}
    if comparisons:
        lines += ["Model minus baseline on the same patients (paired bootstrap, 95% interval; "
                  "an interval above 0 means the model is better beyond resampling noise):", ""]
        for name, comp in comparisons.items():
            parts = []
            for key, label in (("f1", "F1"), ("auroc", "AUROC")):
                c = comp.get(key)
                if c:
                    rng = (f" ({c['ci95'][0]:+.3f} to {c['ci95'][1]:+.3f})" if c.get("ci95")
                           else "")
                    parts.append(f"{label} {c['delta']:+.3f}{rng}")
            lines.append(f"- vs **{name}**: {', '.join(parts)}")
        lines.append("")
    if metrics.get("remarks"):
        lines += ["Remarks:", ""] + [f"- {r}" for r in metrics["remarks"]] + [""]
    c = m["confusion"]
    lines += [
        f"Confusion at the threshold: TP {c['tp']}, FP {c['fp']}, TN {c['tn']}, FN {c['fn']}.",
        "",
        "## Plots",
        "",
        f"![ROC]({PLOT_FILES['roc']}) ![Precision-recall]({PLOT_FILES['pr']})",
        "",
        f"![Calibration]({PLOT_FILES['calibration']}) "
        f"![Confusion matrix]({PLOT_FILES['confusion']})",
        "",
    ]
    for kind, title, why in (
        ("fp", "False positives", "Predicted ARDS, labeled no ARDS"),
        ("fn", "False negatives", "Labeled ARDS, predicted no ARDS"),
    ):
        rows = _error_rows(frame, kind)
        lines += [f"## {title} ({len(rows)})", "", f"{why}; the passages the model "
                  "read, strongest first.", ""]
        if rows.empty:
            lines += ["None.", ""]
        for row in rows.itertuples(index=False):
            lines += [f"### Patient `{row.patient_id}`: probability {row.probability:.3f}", ""]
            lines += _evidence_lines(evidence.get(str(row.patient_id), []))
            lines.append("")
    return "\n".join(lines)


# --- the run's inputs: split, threshold, notes -----------------------------------------------

SPLIT_FILE = "split.csv"
THRESHOLD_FILE = "threshold.json"
THRESHOLD_RULES = ("best-f1", "sensitivity", "specificity", "value")
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.yaml"
MANIFEST_FILE = "index_manifest.json"


def read_split(run_dir: str | Path) -> pd.DataFrame:
    """The run's ``split.csv`` as ``patient_id`` (str), ``split`` (str), ``label`` (pandas
    boolean). Raises :class:`~ards_rag.errors.RunError` when it is missing or malformed."""
    from .notes import parse_label

    path = Path(run_dir) / SPLIT_FILE
    if not path.is_file():
        raise RunError(f"{path}: not found; is {Path(run_dir)} a finished run? Train it first")
    try:
        df = pd.read_csv(path, dtype={"patient_id": str, "split": str}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise RunError(f"{path}: unreadable ({str(exc).splitlines()[0]}); retrain the run") from None
    missing = [c for c in ("patient_id", "split", "label") if c not in df.columns]
    if missing:
        raise RunError(f"{path}: missing column(s) {', '.join(missing)}; retrain the run")
    labels = []
    for i, value in enumerate(df["label"].tolist()):
        try:
            labels.append(parse_label(value))
        except Exception:
            raise RunError(f"{path}: row {i + 2}, column label: {value!r} is not true/false") from None
    df["label"] = pd.array(labels, dtype="boolean")
    return df[["patient_id", "split", "label"]]


def read_threshold(run_dir: str | Path) -> tuple[float, dict[str, Any]]:
    """The run's decision threshold and the whole ``threshold.json`` (``chosen_on``, ``rule``)."""
    path = Path(run_dir) / THRESHOLD_FILE
    if not path.is_file():
        raise RunError(f"{path}: not found; the run has no decision threshold, retrain it")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        threshold = float(info["threshold"])
    except (ValueError, KeyError, TypeError):
        raise RunError(f"{path}: no numeric 'threshold' key; retrain the run") from None
    if not math.isfinite(threshold):
        raise RunError(f"{path}: threshold is {threshold}; retrain the run")
    return threshold, info


def run_index_dir(run_dir: str | Path, index_dir: str | Path | None = None) -> Path:
    """``index_dir``, or the index folder the run records (its ``summary.json``)."""
    if index_dir is not None:
        return Path(index_dir)
    recorded = run_kind(run_dir).get("index")
    if recorded and Path(recorded).is_dir():
        return Path(recorded)
    raise RunError(f"{run_dir}: the run does not record its index folder; pass --index")


def describe_threshold(info: dict[str, Any]) -> str:
    """Where a ``threshold.json`` record came from, for reports: "chosen on the validation split
    by best F1", or its rule when no split chose it (a value set by the user)."""
    chosen = info.get("chosen_on", "validation")
    rule = info.get("rule", "best F1")
    return f"chosen on the {chosen} split by {rule}" if chosen in SPLITS else str(rule)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_run_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def run_kind(run_dir: str | Path) -> dict[str, Any]:
    """What a run is, from its ``summary.json`` and ``config.yaml``: ``zero_shot`` (bool),
    ``strategy`` (``retrieval`` or ``truncate``), ``base_model``, ``index`` (when recorded)."""
    run = Path(run_dir)
    summary = _read_json(run / SUMMARY_FILE)
    cfg = _read_run_config(run)
    strategy = (summary.get("context_strategy") or summary.get("strategy")
                or (cfg.get("retrieval") or {}).get("strategy") or "retrieval")
    trainer = ((cfg.get("ludwig") or {}).get("trainer") or {}).get("type")
    zero_shot = bool(summary.get("zero_shot", trainer == "none"))
    return {
        "name": run.name,
        "zero_shot": zero_shot,
        "strategy": str(strategy),
        "base_model": summary.get("base_model") or (cfg.get("ludwig") or {}).get("base_model"),
        "index": summary.get("index_dir") or summary.get("index"),
    }


def notes_from_passages(passages: pd.DataFrame) -> pd.DataFrame:
    """Rebuild the notes table (``patient_id, note_id, note_seq, text``) from an index's
    passages: each passage is the slice ``text[char_start:char_end]`` of its note, so the
    overlapping slices are laid back in place (gaps between them become spaces)."""
    rows = []
    for (pid, note_id), grp in passages.groupby(["patient_id", "note_id"], sort=False):
        buf: list[str] = []
        end = 0
        for start, stop, text in sorted(zip(grp["char_start"], grp["char_end"], grp["text"])):
            start, stop = int(start), int(stop)
            if start > end:
                buf.append(" " * (start - end))
                end = start
            if stop > end:
                buf.append(str(text)[end - start:])
                end = stop
        rows.append((str(pid), str(note_id), int(grp["note_seq"].iloc[0]), "".join(buf)))
    return pd.DataFrame(rows, columns=["patient_id", "note_id", "note_seq", "text"])


# --- baselines -------------------------------------------------------------------------------

KEYWORD_RULE = "keyword rule"
TFIDF_LR = "TF-IDF + LR (all notes)"


def text_baselines(texts: pd.Series, split_df: pd.DataFrame, split: str = "test",
                   seed: int = 0) -> dict[str, dict[str, Any]]:
    """The keyword rule and TF-IDF + logistic regression on each patient's whole notes.

    ``texts``: patient id -> all the patient's notes in one string. ``split_df``: the run's
    ``split.csv``. TF-IDF + LR is fitted on the run's train patients and its threshold chosen on
    the validation patients by best F1 (as the model's); the rule (0/1 scores) cuts at 0.5.
    Both are scored on ``split``.
    Returns name -> :func:`baseline_entry`.
    """
    from .baselines import keyword_rule_scores, tfidf_lr

    labeled = split_df[split_df["label"].notna()]
    parts = {name: labeled[labeled["split"] == name] for name in ("train", "validation", split)}
    target = parts[split]
    if target.empty:
        return {}
    missing = sorted(set(labeled["patient_id"]) - set(texts.index))
    if missing:
        raise RunError(
            f"patient {missing[0]!r} of the run's split.csv has no notes in the index "
            f"({len(missing)} missing); evaluate against the index the run was trained on"
        )
    val = parts["validation"]
    y_val = val["label"].to_numpy(dtype=bool)
    y_eval = target["label"].to_numpy(dtype=bool)
    where = "validation" if split != "validation" else "validation (the evaluated split itself)"
    out: dict[str, dict[str, Any]] = {}

    # The rule scores 0/1 (a note mentions ARDS or not); it has no cut to learn: 0.5.
    kw_eval = np.asarray(keyword_rule_scores(texts.loc[target["patient_id"]].tolist()), dtype=float)
    out[KEYWORD_RULE] = baseline_entry(
        y_eval, kw_eval, 0.5,
        "predicts ARDS when any note mentions ARDS / acute respiratory distress (no training)",
        patient_ids=target["patient_id"].tolist(),
    )

    train = parts["train"]
    y_train = train["label"].to_numpy(dtype=bool)
    if len(train) and y_train.any() and (~y_train).any():
        scored = pd.concat([val, target]) if split != "validation" else target
        probs = np.asarray(tfidf_lr(
            texts.loc[train["patient_id"]].tolist(), y_train.tolist(),
            texts.loc[scored["patient_id"]].tolist(), seed=seed,
        ), dtype=float)
        p_val = probs[: len(val)] if split != "validation" else probs
        p_eval = probs[len(val):] if split != "validation" else probs
        t_lr = best_f1_threshold(y_val, p_val) if len(val) else FALLBACK_THRESHOLD
        out[TFIDF_LR] = baseline_entry(
            y_eval, p_eval, t_lr,
            f"TF-IDF of all notes + logistic regression fitted on the run's {len(train)} train "
            f"patients; cut chosen on {where if len(val) else 'nothing: 0.5'} by best F1",
            patient_ids=target["patient_id"].tolist(),
        )
    return out


def _same_manifest(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two index manifests describe the same passages: same embedder and chunking.
    (Counts and source hashes change when patients are added, which keeps old splits valid.)"""
    def core(m: dict[str, Any]) -> tuple[Any, Any]:
        emb = m.get("embedder") or {}
        return (emb.get("name"), emb.get("dimension")), m.get("chunking")

    return core(a) == core(b)


def sibling_baselines(run_dir: str | Path, split: str = "test",
                      split_df: pd.DataFrame | None = None) -> tuple[dict[str, dict[str, Any]],
                                                                      list[str]]:
    """The zero-shot and truncated-context runs beside ``run_dir`` (same parent folder), as
    baselines: only runs with the same ``split`` patients and labels and, where both runs record
    one, the same embedder and chunking in the index manifest. A matching run with ``metrics.json`` for ``split`` gives its
    model metrics (and, from its ``predictions.csv``, its per-patient scores for the plots and
    the paired comparison); one without gives a remark saying how to evaluate it. Returns
    ``(baselines, remarks)``."""
    run = Path(run_dir).resolve()
    own = split_df if split_df is not None else read_split(run)
    own_set = _split_key(own, split)
    own_manifest = _read_json(run / MANIFEST_FILE)
    out: dict[str, dict[str, Any]] = {}
    remarks: list[str] = []
    for other in sorted(p for p in run.parent.iterdir() if p.is_dir() and p != run):
        if not (other / SPLIT_FILE).is_file() or not (
                (other / SUMMARY_FILE).is_file() or (other / CONFIG_FILE).is_file()):
            continue
        kind = run_kind(other)
        if not kind["zero_shot"] and kind["strategy"] != "truncate":
            continue
        try:
            if _split_key(read_split(other), split) != own_set:
                continue
        except Exception:  # an unreadable sibling is not this run's problem
            continue
        manifest = _read_json(other / MANIFEST_FILE)
        if own_manifest and manifest and not _same_manifest(own_manifest, manifest):
            continue
        label = " + ".join(
            x for x in ("zero-shot" if kind["zero_shot"] else "",
                        "truncated context" if kind["strategy"] == "truncate" else "") if x)
        name = f"{label} run ({other.name})"
        metrics = _read_json(other / METRICS_FILE)
        if metrics.get("split") == split and isinstance(metrics.get("model"), dict):
            entry = dict(metrics["model"])
            entry["description"] = (
                f"run `{other.name}`: same split and index, "
                f"{'base model with the prompt only' if kind['zero_shot'] else 'fine-tuned'}, "
                f"{'first notes cut to the token budget' if kind['strategy'] == 'truncate' else 'retrieved context'}"
                f"; its own threshold ({entry.get('threshold', float('nan')):.3f})"
            )
            curve = _sibling_curve(other, own_set)
            if curve is not None:
                entry["curve"] = curve
            out[name] = entry
        else:
            remarks.append(f"{name} not included: it has no {split} metrics yet; run "
                           f"`ards-rag evaluate --run {other} --split {split}` and evaluate again")
    return out, remarks


def _sibling_curve(run: Path, patients: frozenset[tuple[str, bool]]) -> dict[str, Any] | None:
    """A sibling run's per-patient scores from its ``predictions.csv``, when it covers exactly
    the same patients with the same labels (for the plots and the paired comparison)."""
    path = run / PREDICTIONS_FILE
    if not path.is_file():
        return None
    try:
        df = pd.read_csv(path, dtype={"patient_id": str})
        y, s = _as_arrays(df["label"].astype(str).str.lower().eq("true").to_numpy(),
                          df["probability"].to_numpy())
    except Exception:  # an unreadable file only costs the curve
        return None
    if frozenset(zip(df["patient_id"], y.tolist())) != patients or len(df) != len(patients):
        return None
    return {"y": y.tolist(), "p": s.tolist(), "patient_id": df["patient_id"].tolist()}


def _split_key(df: pd.DataFrame, split: str) -> frozenset[tuple[str, bool]]:
    part = df[(df["split"] == split) & df["label"].notna()]
    return frozenset(zip(part["patient_id"], part["label"].astype(bool)))


# --- the evaluator ---------------------------------------------------------------------------


class Evaluator:
    """Evaluate a trained run on one split of its patients and write the report into the run.

    In the style of sentence-transformers' evaluators: one primary metric (:attr:`primary_metric`,
    F1 at the run's saved threshold), fixed output files (``metrics.json``, ``predictions.csv``,
    ``roc.png``, ``precision_recall.png``, ``calibration.png``, ``confusion_matrix.png``,
    ``report.md``), and :meth:`run` returning the metrics.

    The split's labeled patients (from the run's ``split.csv``) are scored by
    :func:`ards_rag.prediction.predict_patients` and cut at the run's ``threshold.json`` (chosen
    on validation at training time). Beside the model the report puts, on the same patients: the
    keyword rule and TF-IDF + logistic regression on all notes (trained on the run's train
    patients; ``baselines=False`` skips them), and the zero-shot and truncated-context runs in
    the same ``runs/`` folder that were evaluated on the same split.
    """

    primary_metric = "f1"

    def __init__(self, run_dir: str | Path, index_dir: str | Path | None = None,
                 split: str = "test", *, batch_size: int | None = None,
                 baselines: bool = True, n_bootstrap: int = 1000, seed: int | None = None,
                 precision: str = "model") -> None:
        self.run_dir = Path(run_dir)
        self.precision = precision
        self.index_dir = Path(index_dir) if index_dir is not None else None
        self.split = split
        self.batch_size = batch_size
        self.baselines = baselines
        self.n_bootstrap = n_bootstrap
        self.seed = seed
        self.metrics: dict[str, Any] | None = None

    # The steps, separately callable ----------------------------------------------------------

    def _check_run(self) -> None:
        if not self.run_dir.is_dir():
            raise RunError(f"{self.run_dir}: run folder not found; train one with `ards-rag train`")

    def _resolve_index_dir(self) -> Path:
        return run_index_dir(self.run_dir, self.index_dir)

    def patients(self, split_df: pd.DataFrame) -> pd.DataFrame:
        """The labeled patients of the evaluated split (``patient_id``, ``label``)."""
        part = split_df[(split_df["split"] == self.split) & split_df["label"].notna()]
        if part.empty:
            raise RunError(
                f"{self.run_dir / SPLIT_FILE}: no labeled patient in the {self.split!r} split; "
                "choose another --split"
            )
        return part[["patient_id", "label"]].reset_index(drop=True)

    def score(self, index: Any, patient_ids: list[str]) -> pd.DataFrame:
        """The model's predictions for ``patient_ids`` (one batched pass per batch)."""
        from .prediction import predict_patients

        kwargs: dict[str, Any] = {"precision": self.precision}
        if self.batch_size is not None:
            kwargs["batch_size"] = self.batch_size
        return predict_patients(self.run_dir, index, patient_ids, **kwargs)

    def evidence(self, index: Any, patient_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """The passages the model read for each of ``patient_ids``, strongest first: the
        contexts rebuilt exactly as :func:`~ards_rag.prediction.predict_patients` builds them
        (the run's retrieval settings, the LLM's tokenizer and context budget)."""
        if not patient_ids:
            return {}
        from .prediction import get_scorer, read_run_config
        from .prompt import context_budget
        from .retrieval import Retriever

        cfg = read_run_config(self.run_dir)
        tokenizer = get_scorer(self.run_dir, self.precision).tokenizer  # loaded once by score()
        retriever = Retriever(index, cfg, tokenizer, context_budget(cfg, tokenizer))
        return {ctx.patient_id: [dict(p) for p in ctx.passages]
                for ctx in retriever.contexts(patient_ids)}

    def run(self) -> dict[str, Any]:
        """Score the split, compute every metric and baseline, write the files; return the
        content of ``metrics.json``."""
        from .index import NotesIndex

        self._check_run()
        split_df = read_split(self.run_dir)
        threshold, threshold_info = read_threshold(self.run_dir)
        target = self.patients(split_df)
        index_dir = self._resolve_index_dir()
        index = NotesIndex.load(index_dir)
        ids = target["patient_id"].tolist()

        preds = self.score(index, ids)
        frame = target.merge(preds.drop(columns=["label"], errors="ignore"), on="patient_id",
                             how="left", validate="one_to_one")
        if frame["probability"].isna().any():
            pid = frame.loc[frame["probability"].isna(), "patient_id"].iloc[0]
            raise RunError(f"patient {pid!r} was not scored by the run; re-run evaluate")
        frame["label"] = frame["label"].astype(bool)

        wrong = frame[(frame["probability"] >= threshold) != frame["label"]]
        evidence = self.evidence(index, wrong["patient_id"].tolist())

        cfg = _read_run_config(self.run_dir)
        seed = self.seed if self.seed is not None else int(cfg.get("seed", 0) or 0)
        baselines: dict[str, dict[str, Any]] = {}
        remarks: list[str] = []
        if self.baselines:
            texts = self.patient_texts(index)
            baselines.update(text_baselines(texts, split_df, self.split, seed=seed))
            found, remarks = sibling_baselines(self.run_dir, self.split, split_df)
            baselines.update(found)

        if self.split == threshold_info.get("chosen_on", "validation"):
            remarks.insert(0, f"the threshold was chosen on this same {self.split} split: "
                              "these figures are optimistic; judge the model on the test split")
        if self.split == "train":
            remarks.insert(0, "the model was fine-tuned on these patients: training-set figures "
                              "show fit, not how it does on new patients")
        chosen_in = threshold_info.get("precision", "model")
        if self.precision != chosen_in:
            def said(precision: str) -> str:
                return ("the run's own precision" if precision == "model"
                        else f"{precision} (dense weights, LoRA merged)")
            remarks.append(f"scored in {said(self.precision)}; the threshold was chosen in "
                           f"{said(chosen_in)}")
        kind = run_kind(self.run_dir)
        kind["index"] = str(index_dir)
        kind["precision"] = self.precision
        label = "zero-shot" if kind["zero_shot"] else "fine-tuned"
        self.metrics = write_evaluation(
            self.run_dir, frame, threshold, baselines, evidence, split=self.split,
            model_name=f"{self.run_dir.name} ({label}, {kind['strategy']})",
            threshold_info=threshold_info, run_info=kind, n_bootstrap=self.n_bootstrap,
            seed=seed, remarks=remarks,
        )
        return self.metrics

    @staticmethod
    def patient_texts(index: Any) -> pd.Series:
        """Each patient's whole notes (patient id -> text), from the index's notes (or rebuilt
        from its passages for an in-memory index that keeps none)."""
        from .notes import patient_texts

        try:
            notes = index.notes()
        except IndexStoreError:
            notes = notes_from_passages(index.passages)
        return patient_texts(notes)

    def summary(self) -> str:
        """The short table of :func:`format_table` for the last :meth:`run`."""
        if self.metrics is None:
            return "not evaluated yet: call run()"
        m = self.metrics
        head = (f"{self.run_dir.name}, {m['split']} split: {m['model']['n']} patients, "
                f"threshold {m['threshold']:.3f} ({describe_threshold(m['threshold_info'])})")
        tail = [f"note: {r}" for r in m.get("remarks", [])]
        return "\n".join([head, format_table(systems_table(m)), *tail])

    def __call__(self) -> dict[str, Any]:
        return self.run()


# --- re-choosing a run's threshold -----------------------------------------------------------


def choose_threshold(run_dir: str | Path, index_dir: str | Path | None = None, *,
                     rule: str = "best-f1", target: float | None = None,
                     precision: str = "model", batch_size: int | None = None) -> dict[str, Any]:
    """Choose a run's decision threshold again and save it in its ``threshold.json``.

    ``rule``: ``best-f1`` (what training does), ``sensitivity`` / ``specificity`` (the operating
    point reaching ``target`` on validation: :func:`sensitivity_threshold`,
    :func:`specificity_threshold`) or ``value`` (``target`` itself, set by the user). The run's
    validation patients are scored as ``predict`` scores them; the record keeps the validation
    F1, sensitivity and specificity at the new cut, and the records it replaced under
    ``history``. ``predict`` and ``evaluate`` use the new threshold from then on; a
    ``metrics.json`` written before keeps the old one until ``evaluate`` runs again.

    Returns the new record. Raises :class:`~ards_rag.errors.InputError` for an unknown rule or a
    missing or out-of-range target and :class:`~ards_rag.errors.RunError` when the run has no
    labeled validation patient of each class.
    """
    from .prediction import check_run, predict_patients, read_run_config, run_answers

    if rule not in THRESHOLD_RULES:
        raise InputError(f"unknown threshold rule {rule!r}; choose one of {', '.join(THRESHOLD_RULES)}")
    if rule == "best-f1":
        target = None
    elif target is None:
        raise InputError(f"the {rule} rule needs a target, e.g. --{rule} 0.9")
    elif rule == "value" and not 0.0 <= float(target) <= 1.0:
        raise InputError(f"threshold {target!r} is outside [0, 1], where probabilities lie")
    run = check_run(run_dir)
    previous = read_threshold(run)[1]
    split_df = read_split(run)
    val = split_df[(split_df["split"] == "validation") & split_df["label"].notna()]
    y = val["label"].astype(bool).to_numpy()
    if rule != "value" and (y.all() or not y.any()):
        raise RunError(f"{run / SPLIT_FILE}: the validation split needs patients with and without "
                       "ARDS to choose a threshold; set one with --value")
    p = np.zeros(0)
    if len(val):  # predict_patients returns the patients in the order asked
        kwargs: dict[str, Any] = {"precision": precision}
        if batch_size is not None:
            kwargs["batch_size"] = batch_size
        p = predict_patients(run, run_index_dir(run, index_dir), val["patient_id"].tolist(),
                             **kwargs)["probability"].to_numpy(float)

    if rule == "best-f1":
        threshold, label = best_f1_threshold(y, p), "best F1"
    elif rule == "sensitivity":
        threshold, label = sensitivity_threshold(y, p, float(target)), f"sensitivity >= {target:g}"
    elif rule == "specificity":
        threshold, label = specificity_threshold(y, p, float(target)), f"specificity >= {target:g}"
    else:
        threshold, label = float(target), "a value set by the user"
    m = binary_metrics(y, p, threshold=threshold) if len(y) else {}
    history = list(previous.pop("history", []) or []) + [previous]
    record = {
        "threshold": float(threshold),
        "chosen_on": "validation" if rule != "value" else "user",
        "rule": label,
        "target": None if target is None else float(target),
        "validation_f1": m.get("f1"),
        "validation_sensitivity": m.get("sensitivity"),
        "validation_specificity": m.get("specificity"),
        "validation_patients": int(len(y)),
        "precision": precision,
        "answers": list(run_answers(run, read_run_config(run))),  # what the score compares
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "history": history,
    }
    atomic_file(run / THRESHOLD_FILE,
                  lambda tmp: tmp.write_text(json.dumps(record, indent=2), encoding="utf-8"))
    return record
