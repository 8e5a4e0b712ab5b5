"""Baselines that any ARDS classifier must beat: a keyword rule and TF-IDF + logistic regression.

Both work on one text per patient: all of the patient's notes joined in time order
(:func:`ards_rag.notes.patient_texts`). ``benchmarks/baselines.py`` runs them on a fixed
stratified 70/30 patient split.

- :func:`keyword_rule_scores`: 1.0 when the text names ARDS at all ("ARDS", "ARDSnet",
  "acute respiratory distress ..."), else 0.0. It cannot tell "consistent with ARDS" from
  "r/o ARDS", "h/o ARDS" or "no evidence of ARDS", which is the point of having it.
- :func:`tfidf_lr`: TF-IDF of word unigrams and bigrams + L2 logistic regression with balanced
  class weights (the regularization strength chosen by stratified cross-validation on the
  training patients only). ``max_words=3000`` keeps only each patient's first 3,000 words: what
  a model with a fixed window would see without retrieval.
- :func:`stratified_patient_split`: the patient-level split both use.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import InputError

__all__ = [
    "ARDS_MENTION",
    "first_words",
    "keyword_rule_scores",
    "stratified_patient_split",
    "tfidf_lr",
]

#: Any mention of ARDS, in any case: the abbreviation, ARDSnet, or the spelled-out name.
ARDS_MENTION = re.compile(r"\bARDS(?:net)?\b|\bacute\s+respiratory\s+distress\b", re.IGNORECASE)

# Tokens: words and slashed abbreviations ("b/l", "s/p", "r/o"); "___" blanks are not tokens.
_TOKEN_PATTERN = r"(?u)\b[^\W_][^\W_]*(?:/[^\W_]+)*\b"


def keyword_rule_scores(texts: Sequence[str]) -> np.ndarray:
    """1.0 for each text that mentions ARDS anywhere (see :data:`ARDS_MENTION`), else 0.0."""
    return np.fromiter((1.0 if ARDS_MENTION.search(t or "") else 0.0 for t in texts),
                       dtype=float, count=len(texts))


def first_words(text: str, max_words: int) -> str:
    """The first ``max_words`` whitespace-separated words of ``text``, joined by single spaces."""
    if max_words < 1:
        raise InputError(f"max_words must be at least 1 (got {max_words})")
    return " ".join(text.split(maxsplit=max_words)[:max_words])


def _labels_as_int(labels: Sequence[Any] | np.ndarray) -> np.ndarray:
    y = np.asarray(labels)
    if y.dtype == bool:
        return y.astype(int)
    out = []
    for v in y.tolist():
        if isinstance(v, str):
            s = v.strip().lower()
            if s in ("true", "1", "yes"):
                out.append(1)
                continue
            if s in ("false", "0", "no"):
                out.append(0)
                continue
            raise InputError(f"label {v!r} is not true/false; pass booleans or 1/0")
        if v in (0, 1):
            out.append(int(v))
            continue
        raise InputError(f"label {v!r} is not true/false; pass booleans or 1/0")
    return np.asarray(out, dtype=int)


def tfidf_lr(
    train_texts: Sequence[str],
    train_labels: Sequence[Any] | np.ndarray,
    test_texts: Sequence[str],
    *,
    max_words: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Fit TF-IDF + logistic regression on the training texts; return P(positive) per test text.

    Features: lowercased word unigrams and bigrams (kept when in at least 2 training texts),
    sublinear term frequency, L2-normalized. Classifier: L2 logistic regression, balanced class
    weights, ``C`` chosen among 0.1..100 by 5-fold stratified cross-validation (log loss) on the
    training texts (fewer folds when a class is small). ``max_words``: keep only the first
    ``max_words`` words of every text (train and test). Deterministic for a ``seed``.

    Raises :class:`~ards_rag.errors.InputError` when the training labels hold a single class
    or their count differs from the texts'.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    y = _labels_as_int(train_labels)
    if len(y) != len(train_texts):
        raise InputError(f"{len(train_texts)} training texts but {len(y)} labels")
    counts = np.bincount(y, minlength=2)
    if counts.min() == 0:
        raise InputError("training labels hold a single class; TF-IDF + LR needs both")
    if max_words is not None:
        train_texts = [first_words(t, max_words) for t in train_texts]
        test_texts = [first_words(t, max_words) for t in test_texts]
    vec = TfidfVectorizer(
        lowercase=True,
        token_pattern=_TOKEN_PATTERN,
        ngram_range=(1, 2),
        min_df=2 if len(train_texts) >= 10 else 1,
        sublinear_tf=True,
        dtype=np.float32,
    )
    x_train = vec.fit_transform(train_texts)
    x_test = vec.transform(test_texts)
    folds = int(min(5, counts.min()))
    if folds >= 2:
        clf: Any = LogisticRegressionCV(
            Cs=[0.1, 1.0, 10.0, 100.0],
            cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed),
            scoring="neg_log_loss",
            class_weight="balanced",
            solver="liblinear",
            max_iter=2000,
            random_state=seed,
        )
    else:
        clf = LogisticRegression(C=10.0, class_weight="balanced", solver="liblinear",
                                 max_iter=2000, random_state=seed)
    with warnings.catch_warnings():
        # scikit-learn >= 1.8 announces LogisticRegressionCV API changes that do not affect us
        warnings.simplefilter("ignore", FutureWarning)
        clf.fit(x_train, y)
    return clf.predict_proba(x_test)[:, 1].astype(float)


def stratified_patient_split(
    patient_ids: Sequence[str] | np.ndarray,
    labels: Sequence[Any] | np.ndarray,
    test_size: float = 0.3,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Split patients into (train ids, test ids), keeping the label ratio in both parts.

    One entry per patient (ids must be unique). Deterministic for a ``seed``. Raises
    :class:`~ards_rag.errors.InputError` for duplicate ids, mismatched lengths, a ``test_size``
    outside (0, 1), or a class too small to appear on both sides.
    """
    from sklearn.model_selection import train_test_split

    ids = np.asarray(patient_ids, dtype=object)
    y = _labels_as_int(labels)
    if len(ids) != len(y):
        raise InputError(f"{len(ids)} patient ids but {len(y)} labels")
    if len(set(ids.tolist())) != len(ids):
        raise InputError("patient ids are not unique; pass one entry per patient")
    if not 0.0 < test_size < 1.0:
        raise InputError(f"test_size must be between 0 and 1 (got {test_size})")
    counts = np.bincount(y, minlength=2)
    if counts.min() < 2:
        raise InputError(
            f"need at least 2 patients of each class for a stratified split (got {counts[1]} "
            f"positive, {counts[0]} negative)"
        )
    train, test = train_test_split(ids, test_size=test_size, random_state=seed, stratify=y)
    return np.asarray(train, dtype=object), np.asarray(test, dtype=object)
