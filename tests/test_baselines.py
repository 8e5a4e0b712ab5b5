"""Baselines on small hand-made data: keyword rule, TF-IDF + LR, the patient split."""

from __future__ import annotations

import numpy as np
import pytest

from ards_rag.baselines import (
    first_words,
    keyword_rule_scores,
    stratified_patient_split,
    tfidf_lr,
)
from ards_rag.errors import InputError


def test_keyword_rule_exact_values() -> None:
    texts = [
        "Findings consistent with ARDS.",
        "INDICATION: r/o ards",
        "h/o ARDS in ___, now with fever",
        "No evidence of ARDS.",
        "Picture of acute respiratory distress syndrome.",
        "Acute  Respiratory\nDistress in a ventilated patient",
        "ventilated per ARDSnet protocol",
        "Diffuse bilateral opacities, normal heart size.",
        "towards the bases; regards, Dr. ___; CARDS clinic",
        "",
    ]
    assert keyword_rule_scores(texts).tolist() == [1.0] * 7 + [0.0] * 3
    assert keyword_rule_scores([]).shape == (0,)


def test_first_words() -> None:
    assert first_words("a  b\nc d e", 3) == "a b c"
    assert first_words("a b", 10) == "a b"
    with pytest.raises(InputError):
        first_words("a", 0)


def _toy(n: int, rng: np.random.Generator) -> tuple[list[str], list[bool]]:
    fillers = ["ETT in place.", "No pneumothorax.", "Lines unchanged.", "Heart size normal.",
               "CT abdomen unremarkable.", "Renal ultrasound normal."]
    texts, labels = [], []
    for i in range(n):
        pos = i % 3 == 0
        words = list(rng.choice(fillers, size=6))
        words.insert(int(rng.integers(0, 6)),
                     "Diffuse bilateral airspace opacities." if pos else "Lungs are clear.")
        texts.append(" ".join(words))
        labels.append(pos)
    return texts, labels


def test_tfidf_lr_learns_a_separable_toy_set() -> None:
    rng = np.random.default_rng(0)
    x_tr, y_tr = _toy(60, rng)
    x_te, y_te = _toy(30, rng)
    p = tfidf_lr(x_tr, y_tr, x_te, seed=0)
    assert p.shape == (30,) and ((p >= 0) & (p <= 1)).all()
    y = np.asarray(y_te)
    assert (p[y] > 0.5).all() and (p[~y] < 0.5).all()
    # string labels as written by the synthetic cohort are accepted, with the same result
    p2 = tfidf_lr(x_tr, ["true" if v else "false" for v in y_tr], x_te, seed=0)
    np.testing.assert_allclose(p, p2)


def test_tfidf_lr_max_words_cuts_the_text() -> None:
    # the decisive word comes after 20 identical filler words: cut to 10 words, nothing is left
    # to learn, so every test text gets the same probability
    head = " ".join(["filler"] * 20)
    x_tr = [f"{head} {'opacities' if i % 2 else 'clear'}" for i in range(40)]
    y_tr = [bool(i % 2) for i in range(40)]
    x_te = [f"{head} opacities", f"{head} clear"]
    full = tfidf_lr(x_tr, y_tr, x_te)
    cut = tfidf_lr(x_tr, y_tr, x_te, max_words=10)
    assert full[0] > 0.5 > full[1]
    assert cut[0] == pytest.approx(cut[1])


def test_tfidf_lr_rejects_one_class_and_mismatched_lengths() -> None:
    with pytest.raises(InputError):
        tfidf_lr(["a b", "c d"], [True, True], ["a"])
    with pytest.raises(InputError):
        tfidf_lr(["a b", "c d", "e f"], [True, False], ["a"])
    with pytest.raises(InputError):
        tfidf_lr(["a b", "c d"], ["maybe", "no"], ["a"])


def test_stratified_patient_split() -> None:
    ids = [f"p{i}" for i in range(100)]
    labels = [i < 25 for i in range(100)]
    train, test = stratified_patient_split(ids, labels, test_size=0.3, seed=0)
    assert len(train) == 70 and len(test) == 30
    assert set(train).isdisjoint(test) and set(train) | set(test) == set(ids)
    pos = {f"p{i}" for i in range(25)}
    assert sum(t in pos for t in test) in (7, 8)  # 25% of 30, rounded either way
    again = stratified_patient_split(ids, labels, test_size=0.3, seed=0)
    assert list(again[1]) == list(test)
    other = stratified_patient_split(ids, labels, test_size=0.3, seed=1)
    assert set(other[1]) != set(test)


@pytest.mark.parametrize("ids,labels,size", [
    (["a", "a", "b", "c"], [True, False, True, False], 0.5),  # duplicate id
    (["a", "b", "c"], [True, False], 0.3),  # lengths differ
    (["a", "b", "c", "d"], [True, False, False, False], 0.5),  # one positive only
    (["a", "b", "c", "d"], [True, True, False, False], 1.5),  # bad test size
])
def test_stratified_patient_split_errors(ids, labels, size) -> None:
    with pytest.raises(InputError):
        stratified_patient_split(ids, labels, test_size=size)
