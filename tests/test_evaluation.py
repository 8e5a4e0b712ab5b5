"""Tests of ards_rag.evaluation: metrics on hand-checked toy examples, threshold choice."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ards_rag.errors import InputError
from ards_rag.evaluation import (
    FALLBACK_THRESHOLD,
    auroc,
    average_precision,
    best_f1_threshold,
    sensitivity_threshold,
    specificity_threshold,
    binary_metrics,
    calibration_bins,
)

# Eight patients, worked by hand below. D and E tie at 0.6.
#            A     B     C     D     E     F     G     H
TOY_Y = [True, True, False, True, False, True, False, False]
TOY_P = [0.95, 0.80, 0.70, 0.60, 0.60, 0.30, 0.20, 0.10]


def test_binary_metrics_toy_example_by_hand() -> None:
    m = binary_metrics(TOY_Y, TOY_P, threshold=0.5)
    # p >= 0.5: A, B, C, D, E predicted positive. TP = A, B, D; FP = C, E; FN = F; TN = G, H.
    assert m["confusion"] == {"tp": 3, "fp": 2, "tn": 2, "fn": 1}
    assert m["n"] == 8 and m["n_positive"] == 4 and m["n_negative"] == 4
    assert m["prevalence"] == pytest.approx(4 / 8)
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["precision"] == pytest.approx(3 / 5)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["sensitivity"] == m["recall"]
    assert m["specificity"] == pytest.approx(2 / 4)
    assert m["f1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    # AUROC by pair counting over the 4 x 4 (positive, negative) pairs, ties = 1/2:
    # A beats C,E,G,H: 4; B beats all: 4; D loses to C, ties E, beats G,H: 2.5; F beats G,H: 2.
    assert m["auroc"] == pytest.approx((4 + 4 + 2.5 + 2) / 16)
    # Average precision, distinct scores from the top: recall steps of 1/4 at A (P=1), B (P=1),
    # {D,E} (P=3/5) and F (P=4/6); C, G, H add no recall.
    assert m["auprc"] == pytest.approx(0.25 * (1 + 1 + 3 / 5 + 4 / 6))
    sq = [(1 - 0.95) ** 2, (1 - 0.8) ** 2, 0.7**2, (1 - 0.6) ** 2, 0.6**2, (1 - 0.3) ** 2,
          0.2**2, 0.1**2]
    assert m["brier"] == pytest.approx(sum(sq) / 8)
    assert m["threshold"] == 0.5
    assert m["notes"] == []


def test_threshold_is_inclusive() -> None:
    # At exactly 0.6, D and E (p = 0.6) are predicted positive.
    m = binary_metrics(TOY_Y, TOY_P, threshold=0.6)
    assert m["confusion"] == {"tp": 3, "fp": 2, "tn": 2, "fn": 1}
    m = binary_metrics(TOY_Y, TOY_P, threshold=0.6000001)
    assert m["confusion"] == {"tp": 2, "fp": 1, "tn": 3, "fn": 2}


def test_best_f1_threshold_toy_example() -> None:
    # F1 of each cut (2TP / (#predicted + #positives)): 0.95: 2/5, 0.8: 4/6, 0.7: 4/7,
    # 0.6: 6/9, 0.3: 8/10 (best), 0.2: 8/11, 0.1: 8/12. Midpoint of 0.3 and 0.2.
    t = best_f1_threshold(TOY_Y, TOY_P)
    assert t == pytest.approx(0.25)
    assert binary_metrics(TOY_Y, TOY_P, t)["f1"] == pytest.approx(0.8)


def test_best_f1_threshold_tie_takes_smallest_score() -> None:
    # Cuts at 0.9 and at 0.6 both give F1 = 2/3; the smaller score wins, midpoint with 0.5.
    y = [1, 0, 0, 1, 0]
    p = [0.9, 0.8, 0.7, 0.6, 0.5]
    assert best_f1_threshold(y, p) == pytest.approx(0.55)
    # Same tie, but 0.6 is the lowest score: the score itself (everyone positive).
    assert best_f1_threshold([1, 0, 0, 1], [0.9, 0.8, 0.7, 0.6]) == pytest.approx(0.6)


def test_best_f1_threshold_is_order_independent() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(200) < 0.3
    p = np.round(np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1), 2)  # rounded: many ties
    perm = rng.permutation(200)
    t = best_f1_threshold(y, p)
    assert best_f1_threshold(y[perm], p[perm]) == t
    # No cut at a distinct score does better than the chosen threshold.
    best = binary_metrics(y, p, t)["f1"]
    assert all(binary_metrics(y, p, s)["f1"] <= best + 1e-12 for s in np.unique(p))


# Hand-checked: positives score 0.9, 0.7, 0.4; negatives 0.8, 0.6, 0.2.
OP_Y = [1, 0, 1, 0, 1, 0]
OP_P = [0.9, 0.8, 0.7, 0.6, 0.4, 0.2]


def test_sensitivity_threshold_toy_example() -> None:
    # 2 of 3 positives first reached by the cut at 0.7 (0.9 and 0.8 find one): midpoint with 0.6.
    assert sensitivity_threshold(OP_Y, OP_P, 2 / 3) == pytest.approx(0.65)
    assert sensitivity_threshold(OP_Y, OP_P, 0.5) == pytest.approx(0.65)
    assert sensitivity_threshold(OP_Y, OP_P, 0.3) == pytest.approx(0.85)  # 1 of 3 at 0.9
    assert sensitivity_threshold(OP_Y, OP_P, 1.0) == pytest.approx(0.3)  # all three: cut at 0.4
    m = binary_metrics(OP_Y, OP_P, 0.3)
    assert m["sensitivity"] == 1.0 and m["specificity"] == pytest.approx(1 / 3)


def test_specificity_threshold_toy_example() -> None:
    # At most one false positive of three negatives: cuts 0.9 (0 FP), 0.8 and 0.7 (1 FP) qualify;
    # the lowest, 0.7, wins: midpoint with 0.6.
    assert specificity_threshold(OP_Y, OP_P, 2 / 3) == pytest.approx(0.65)
    assert specificity_threshold(OP_Y, OP_P, 1.0) == pytest.approx(0.85)  # no FP: only 0.9
    assert specificity_threshold(OP_Y, OP_P, 0.3) == pytest.approx(0.3)  # 2 FP allowed: 0.4
    # The top score is a negative: only a cut above every score clears all negatives.
    t = specificity_threshold([0, 1], [0.9, 0.5], 1.0)
    assert t == pytest.approx(0.95)
    assert binary_metrics([0, 1], [0.9, 0.5], t)["specificity"] == 1.0
    assert specificity_threshold([0, 1], [1.0, 0.5], 1.0) > 1.0


@pytest.mark.parametrize("target", [0.5, 0.8, 0.9, 0.95, 1.0])
def test_operating_points_are_the_extreme_cuts_that_reach_the_target(target: float) -> None:
    rng = np.random.default_rng(1)
    y = rng.random(300) < 0.25
    p = np.round(np.clip(y * 0.3 + rng.random(300) * 0.7, 0, 1), 2)  # many ties
    cuts = np.unique(p)
    sens = lambda t: binary_metrics(y, p, t)["sensitivity"]  # noqa: E731
    spec = lambda t: binary_metrics(y, p, t)["specificity"]  # noqa: E731
    t = sensitivity_threshold(y, p, target)
    assert sens(t) >= target
    cut = p[p >= t].min()  # the score cut that t makes
    assert all(sens(c) < target for c in cuts if c > cut)  # no higher cut reaches it
    t = specificity_threshold(y, p, target)
    assert spec(t) >= target
    assert all(spec(c) < target for c in cuts if c < t)  # no lower cut reaches it


def test_operating_point_errors() -> None:
    with pytest.raises(InputError, match="no ARDS patient"):
        sensitivity_threshold([0, 0], [0.1, 0.2], 0.9)
    with pytest.raises(InputError, match="no patient without ARDS"):
        specificity_threshold([1, 1], [0.1, 0.2], 0.9)
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(InputError, match="outside"):
            sensitivity_threshold(OP_Y, OP_P, bad)
        with pytest.raises(InputError, match="outside"):
            specificity_threshold(OP_Y, OP_P, bad)


def test_best_f1_threshold_degenerate() -> None:
    assert best_f1_threshold([0, 0, 0], [0.1, 0.7, 0.9]) == FALLBACK_THRESHOLD
    assert best_f1_threshold([1, 1], [0.2, 0.4]) == FALLBACK_THRESHOLD
    # All scores equal: the only cut predicts everyone positive.
    assert best_f1_threshold([1, 0, 1], [0.5, 0.5, 0.5]) == 0.5
    with pytest.raises(InputError):
        best_f1_threshold([], [])
    with pytest.raises(InputError, match="differ in length"):
        best_f1_threshold([1, 0], [0.5])


def test_one_class_absent_gives_none_and_note() -> None:
    m = binary_metrics([False, False, False], [0.1, 0.6, 0.2], threshold=0.5)
    assert m["auroc"] is None and m["auprc"] is None and m["recall"] is None
    assert m["confusion"] == {"tp": 0, "fp": 1, "tn": 2, "fn": 0}
    assert m["precision"] == 0.0 and m["f1"] == 0.0
    assert m["specificity"] == pytest.approx(2 / 3)
    assert any("AUROC" in note for note in m["notes"])
    m = binary_metrics([True, True], [0.9, 0.4], threshold=0.5)
    assert m["auroc"] is None and m["specificity"] is None
    assert m["auprc"] == pytest.approx(1.0)
    assert any("specificity" in note for note in m["notes"])


def test_no_predicted_positive() -> None:
    m = binary_metrics([1, 0], [0.2, 0.1], threshold=0.5)
    assert m["precision"] is None and m["f1"] == 0.0 and m["recall"] == 0.0
    assert m["auroc"] == 1.0
    assert any("precision undefined" in note for note in m["notes"])


def test_bad_inputs_raise_input_error() -> None:
    with pytest.raises(InputError, match="position 1"):
        binary_metrics([1, 2], [0.1, 0.2], 0.5)
    with pytest.raises(InputError, match="finite"):
        binary_metrics([1, 0], [0.1, float("nan")], 0.5)
    with pytest.raises(InputError, match="threshold"):
        binary_metrics([1, 0], [0.1, 0.2], math.nan)


def test_ranking_metrics_agree_with_scikit_learn() -> None:
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(1)
    for _ in range(5):
        y = rng.random(300) < 0.25
        p = np.round(rng.random(300) * 0.6 + y * 0.3, 2)
        assert auroc(y, p) == pytest.approx(roc_auc_score(y, p))
        assert average_precision(y, p) == pytest.approx(average_precision_score(y, p))


def test_calibration_bins() -> None:
    bins = calibration_bins([1, 0, 1, 1], [0.05, 0.05, 0.95, 1.0], n_bins=10)
    assert [(b["low"], b["count"]) for b in bins] == [(0.0, 2), (0.9, 2)]
    assert bins[0]["observed_rate"] == 0.5 and bins[1]["mean_probability"] == pytest.approx(0.975)


# --- write_evaluation: files, metrics, report ------------------------------------------------

import json  # noqa: E402
import re  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402

from ards_rag.evaluation import (  # noqa: E402
    PLOT_FILES,
    baseline_entry,
    format_table,
    snippet,
    write_evaluation,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TOY_IDS = ["A", "B", "C", "D", "E", "F", "G", "H"]


def _toy_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "patient_id": TOY_IDS,
        "label": TOY_Y,
        "probability": TOY_P,
        "prediction": [p >= 0.5 for p in TOY_P],
        "evidence_note_ids": [[f"{pid}-n1", f"{pid}-n2"] for pid in TOY_IDS],
    })


def _toy_evidence() -> dict[str, list[dict[str, object]]]:
    return {
        pid: [
            {"note_id": f"{pid}-n1", "charttime": "2150-01-02T08:00", "note_type": "Radiology",
             "section": "IMPRESSION", "score": 0.71,
             "text": f"Patient {pid}: diffuse bilateral   opacities.\n" + "word " * 100},
            {"note_id": f"{pid}-n2", "charttime": "", "section": "", "text": "Stable."},
        ]
        for pid in TOY_IDS
    }


def test_write_evaluation_files_metrics_and_report(tmp_path: Path) -> None:
    rule = baseline_entry(TOY_Y, [1, 0, 0, 1, 1, 0, 0, 0], 0.5, "keyword rule, fixed cut 0.5",
                          patient_ids=TOY_IDS)
    other = binary_metrics(TOY_Y, [0.6, 0.4, 0.3, 0.7, 0.2, 0.1, 0.3, 0.2], 0.5)
    metrics = write_evaluation(
        tmp_path, _toy_frame(), 0.5, baselines={"keyword rule": rule, "zero-shot run": other},
        evidence=_toy_evidence(), threshold_info={"chosen_on": "validation", "rule": "best F1"},
        run_info={"name": "toy"}, n_bootstrap=200,
    )
    for name in ["metrics.json", "predictions.csv", "report.md", *PLOT_FILES.values()]:
        assert (tmp_path / name).is_file(), name
    for name in PLOT_FILES.values():
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 2000, name

    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == metrics
    assert saved["model"] == json.loads(json.dumps(binary_metrics(TOY_Y, TOY_P, 0.5)))
    assert saved["baselines"]["keyword rule"]["confusion"] == {"tp": 2, "fp": 1, "tn": 3, "fn": 2}
    assert "curve" not in saved["baselines"]["keyword rule"]
    lo, hi = saved["ci95"]["f1"]
    assert lo <= saved["model"]["f1"] <= hi

    preds = pd.read_csv(tmp_path / "predictions.csv", dtype={"patient_id": str})
    assert list(preds.columns) == [
        "patient_id", "label", "probability", "prediction", "evidence_note_ids"]
    assert preds["patient_id"].tolist() == TOY_IDS
    assert preds["prediction"].tolist() == [p >= 0.5 for p in TOY_P]
    assert preds.loc[0, "evidence_note_ids"] == "A-n1;A-n2"

    report = (tmp_path / "report.md").read_text()
    fp_part = report.split("## False positives")[1].split("## False negatives")[0]
    fn_part = report.split("## False negatives")[1]
    heading = re.compile(r"^### Patient `(\w+)`", re.M)
    assert heading.findall(fp_part) == ["C", "E"]  # highest probability first
    assert heading.findall(fn_part) == ["F"]
    assert "note `C-n1` · 2150-01-02T08:00 · Radiology · section *IMPRESSION* · score 0.71" in (
        fp_part)
    assert "Patient C: diffuse bilateral opacities." in fp_part
    assert "| keyword rule |" in report and "| zero-shot run |" in report
    for name in PLOT_FILES.values():
        assert f"]({name})" in report
    # Paired comparison only where the baseline's per-patient scores are known.
    assert list(saved["comparisons"]) == ["keyword rule"]
    comp = saved["comparisons"]["keyword rule"]
    assert comp["f1"]["delta"] == pytest.approx(2 / 3 - 4 / 7)
    assert comp["auroc"]["delta"] == pytest.approx(0.78125 - 0.625)
    assert "- vs **keyword rule**: F1 +0.095" in report


def test_write_evaluation_rejects_prediction_that_disagrees_with_threshold(
        tmp_path: Path) -> None:
    frame = _toy_frame()
    frame.loc[2, "prediction"] = False
    with pytest.raises(InputError, match="patient 'C'"):
        write_evaluation(tmp_path, frame, 0.5, n_bootstrap=0)
    assert not (tmp_path / "metrics.json").exists()


def test_write_evaluation_without_errors_or_one_class(tmp_path: Path) -> None:
    frame = pd.DataFrame({"patient_id": ["x", "y"], "label": [False, False],
                          "probability": [0.1, 0.2]})
    metrics = write_evaluation(tmp_path, frame, 0.5, n_bootstrap=50)
    assert metrics["model"]["auroc"] is None
    report = (tmp_path / "report.md").read_text()
    assert "## False positives (0)" in report and "## False negatives (0)" in report
    assert "AUROC" in report.split("Undefined values:")[1]


def test_format_table() -> None:
    table = format_table({"model": binary_metrics(TOY_Y, TOY_P, 0.25),
                          "rule": binary_metrics([0, 0], [0.1, 0.9], 0.5)})
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["system", "n", "F1", "AUROC"]
    assert lines[2].split()[:4] == ["model", "8", "0.800", "0.781"]
    assert lines[3].split()[3] == "n/a"


def test_snippet_is_one_short_line() -> None:
    s = snippet("a  b\n\nc " + "longword " * 100, limit=40)
    assert "\n" not in s and len(s) <= 42 and s.startswith("a b c longword")


# --- run folder readers, sibling runs, notes rebuilt from passages ---------------------------

import yaml  # noqa: E402

from ards_rag.errors import RunError  # noqa: E402
from ards_rag.evaluation import (  # noqa: E402
    notes_from_passages,
    read_split,
    read_threshold,
    sibling_baselines,
)


def _make_run(path: Path, *, zero_shot: bool = False, strategy: str = "retrieval",
              test_ids: tuple[str, ...] = ("A", "B", "C", "D"), metrics_split: str | None = None,
              manifest: dict[str, object] | None = None) -> Path:
    path.mkdir(parents=True)
    rows = [("T1", "train", "true"), ("T2", "train", "false"), ("V1", "validation", "true"),
            ("V2", "validation", "false")]
    rows += [(pid, "test", "true" if k % 2 == 0 else "false") for k, pid in enumerate(test_ids)]
    pd.DataFrame(rows, columns=["patient_id", "split", "label"]).to_csv(
        path / "split.csv", index=False)
    (path / "config.yaml").write_text(yaml.safe_dump({"retrieval": {"strategy": strategy}}))
    (path / "summary.json").write_text(json.dumps({"zero_shot": zero_shot}))
    (path / "threshold.json").write_text(json.dumps(
        {"threshold": 0.4, "chosen_on": "validation", "rule": "best F1"}))
    (path / "index_manifest.json").write_text(json.dumps(manifest or {
        "embedder": {"name": "minilm", "dimension": 384}, "chunking": {"max_tokens": 128},
        "counts": {"patients": len(test_ids) + 4}}))
    if metrics_split:
        m = binary_metrics([1, 0, 1, 0], [0.9, 0.2, 0.3, 0.1], 0.25)
        (path / "metrics.json").write_text(json.dumps({"split": metrics_split, "model": m}))
    return path


def test_read_split_and_threshold(tmp_path: Path) -> None:
    run = _make_run(tmp_path / "r")
    df = read_split(run)
    assert df["patient_id"].tolist()[:2] == ["T1", "T2"]
    assert df["label"].tolist()[:2] == [True, False]
    assert read_threshold(run)[0] == 0.4
    (run / "split.csv").write_text("patient_id,split,label\nA,test,maybe\n")
    with pytest.raises(RunError, match="row 2, column label"):
        read_split(run)
    with pytest.raises(RunError, match="not found"):
        read_split(tmp_path / "nowhere")
    (run / "threshold.json").write_text("{}")
    with pytest.raises(RunError, match="threshold"):
        read_threshold(run)


def test_sibling_baselines_match_split_index_and_kind(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    me = _make_run(runs / "default")
    zs = _make_run(runs / "zs", zero_shot=True, metrics_split="test")
    pd.DataFrame({"patient_id": ["D", "C", "B", "A"], "label": [False, True, False, True],
                  "probability": [0.1, 0.3, 0.2, 0.9]}).to_csv(zs / "predictions.csv", index=False)
    _make_run(runs / "trunc", strategy="truncate")  # not evaluated yet
    _make_run(runs / "trunc_val", strategy="truncate", metrics_split="validation")
    _make_run(runs / "other_split", strategy="truncate", test_ids=("A", "B", "C", "E"),
              metrics_split="test")
    _make_run(runs / "other_index", zero_shot=True, metrics_split="test",
              manifest={"embedder": {"name": "minilm", "dimension": 384},
                                         "chunking": {"max_tokens": 96}})
    _make_run(runs / "plain", metrics_split="test")  # another retrieval fine-tune: not a baseline
    found, remarks = sibling_baselines(me, "test")
    assert list(found) == ["zero-shot run (zs)"]
    assert found["zero-shot run (zs)"]["auroc"] == 1.0
    assert found["zero-shot run (zs)"]["curve"]["patient_id"] == ["D", "C", "B", "A"]
    assert len(remarks) == 2
    assert any("(trunc)" in r and "ards-rag evaluate --run" in r for r in remarks)
    assert any("(trunc_val)" in r for r in remarks)


def test_notes_from_passages_rebuilds_overlapping_slices() -> None:
    note = "FINDINGS: bilateral opacities.  IMPRESSION: ARDS pattern, worse."
    spans = [(0, 31), (20, 45), (47, len(note))]  # overlap, then a gap of two characters
    passages = pd.DataFrame({
        "patient_id": ["p1"] * 3 + ["p2"], "note_id": ["n1"] * 3 + ["m1"],
        "note_seq": [0, 0, 0, 0],
        "char_start": [a for a, _ in spans] + [0], "char_end": [b for _, b in spans] + [5],
        "text": [note[a:b] for a, b in spans] + ["Clear"],
    })
    notes = notes_from_passages(passages.iloc[[2, 0, 3, 1]])  # order must not matter
    got = dict(zip(notes["note_id"], notes["text"]))
    assert got["n1"] == note[:45] + "  " + note[47:]
    assert got["m1"] == "Clear"


# --- text baselines on a small synthetic cohort ----------------------------------------------

from ards_rag.evaluation import KEYWORD_RULE, TFIDF_LR, text_baselines  # noqa: E402


@pytest.fixture(scope="module")
def cohort_texts() -> tuple[pd.Series, pd.DataFrame]:
    from ards_rag.notes import patient_texts
    from ards_rag.synthetic import generate_cohort

    notes, _ = generate_cohort(80, seed=3, prevalence=0.4)
    notes = notes.assign(note_seq=notes.groupby("patient_id").cumcount())
    texts = patient_texts(notes)
    labels = notes.groupby("patient_id")["label"].first().eq("true")
    ids = sorted(labels.index)
    split = ["train" if i % 5 < 3 else ("validation" if i % 5 == 3 else "test")
             for i in range(len(ids))]
    split_df = pd.DataFrame({"patient_id": ids, "split": split,
                             "label": pd.array(labels.loc[ids].tolist(), dtype="boolean")})
    return texts, split_df


def test_text_baselines_fit_on_train_cut_on_validation(
        cohort_texts: tuple[pd.Series, pd.DataFrame]) -> None:
    from ards_rag.baselines import tfidf_lr

    texts, split_df = cohort_texts
    out = text_baselines(texts, split_df, "test", seed=0)
    assert list(out) == [KEYWORD_RULE, TFIDF_LR]
    test = split_df[split_df["split"] == "test"]
    for entry in out.values():
        assert entry["n"] == len(test) == 16
        assert entry["n_positive"] == int(test["label"].sum())
        assert entry["curve"]["y"] == test["label"].astype(bool).tolist()
    assert out[KEYWORD_RULE]["threshold"] == 0.5
    # The TF-IDF cut is the best-F1 cut of its validation scores (never the test patients').
    train = split_df[split_df["split"] == "train"]
    val = split_df[split_df["split"] == "validation"]
    p_val = tfidf_lr(texts.loc[train["patient_id"]].tolist(), train["label"].astype(bool),
                     texts.loc[val["patient_id"]].tolist(), seed=0)
    assert out[TFIDF_LR]["threshold"] == pytest.approx(
        best_f1_threshold(val["label"].astype(bool), p_val))
    assert out[TFIDF_LR]["auroc"] > 0.6  # labels aligned with texts: far from chance


def test_text_baselines_missing_patient(cohort_texts: tuple[pd.Series, pd.DataFrame]) -> None:
    texts, split_df = cohort_texts
    with pytest.raises(RunError, match="no notes in the index"):
        text_baselines(texts.drop(split_df["patient_id"].iloc[0]), split_df, "test")


def test_paired_bootstrap_delta() -> None:
    from ards_rag.evaluation import paired_bootstrap_delta

    rng = np.random.default_rng(2)
    y = rng.random(120) < 0.4
    good = np.clip(y * 0.6 + rng.random(120) * 0.4, 0, 1)
    noise = rng.random(120)
    same = paired_bootstrap_delta(y, good, 0.5, good, 0.5, n_boot=300)
    assert same["f1"]["delta"] == 0 and same["f1"]["ci95"] == [0.0, 0.0]
    assert same["auroc"]["p_not_better"] == 1.0
    better = paired_bootstrap_delta(y, good, 0.5, noise, 0.5, n_boot=300)
    assert better["auroc"]["delta"] == pytest.approx(auroc(y, good) - auroc(y, noise))
    assert better["auroc"]["ci95"][0] > 0 and better["f1"]["ci95"][0] > 0
    assert better["auroc"]["p_not_better"] == 0.0


# --- the Evaluator end to end: real index, real (tiny) Ludwig runs ---------------------------


@pytest.mark.slow
def test_evaluator_on_trained_runs(tmp_path: Path, tiny_llama_dir: Path) -> None:
    from ards_rag.config import resolve_config
    from ards_rag.evaluation import Evaluator
    from ards_rag.index import build_index
    from ards_rag.notes import load_notes
    from ards_rag.synthetic import write_cohort
    from ards_rag.training import train

    notes_csv, _ = write_cohort(tmp_path / "cohort", n_patients=30, seed=1, prevalence=0.4)
    # The first three notes of each patient keep the index small (embedding is the slow part).
    notes = pd.read_csv(notes_csv, dtype=str, keep_default_na=False)
    notes.groupby("patient_id", sort=False).head(3).to_csv(notes_csv, index=False)
    cfg = resolve_config(overrides={"ludwig": {
        "base_model": str(tiny_llama_dir),
        "trainer": {"epochs": 1, "batch_size": 8},
        "preprocessing": {"global_max_sequence_length": 256},
    }})
    index_dir = tmp_path / "index"
    build_index(load_notes(notes_csv), index_dir, cfg)
    runs = tmp_path / "runs"
    train(index_dir, cfg, runs / "default", progress=False)
    train(index_dir, cfg, runs / "trunc", context_strategy="truncate", progress=False)

    trunc = Evaluator(runs / "trunc", index_dir=index_dir, baselines=False, n_bootstrap=100).run()
    assert trunc["baselines"] == {}
    ev = Evaluator(runs / "default", index_dir=index_dir, n_bootstrap=100)
    metrics = ev.run()

    run = runs / "default"
    for name in ["metrics.json", "predictions.csv", "report.md", *PLOT_FILES.values()]:
        assert (run / name).is_file(), name
    split = pd.read_csv(run / "split.csv", dtype={"patient_id": str})
    test_ids = split.loc[split["split"] == "test", "patient_id"].tolist()
    preds = pd.read_csv(run / "predictions.csv", dtype={"patient_id": str})
    assert preds["patient_id"].tolist() == test_ids
    assert metrics["model"]["n"] == len(test_ids)
    threshold = json.loads((run / "threshold.json").read_text())["threshold"]
    assert metrics["threshold"] == threshold
    assert (preds["prediction"] == (preds["probability"] >= threshold)).all()
    assert metrics["model"] == json.loads(json.dumps(binary_metrics(
        preds["label"].astype(bool), preds["probability"], threshold)))
    assert list(metrics["baselines"]) == [KEYWORD_RULE, TFIDF_LR, "truncated context run (trunc)"]
    assert metrics["baselines"]["truncated context run (trunc)"]["f1"] == trunc["model"]["f1"]

    report = (run / "report.md").read_text()
    heading = re.compile(r"^### Patient `([^`]+)`", re.M)
    wrong = preds[preds["prediction"] != preds["label"]]
    fp = report.split("## False positives")[1].split("## False negatives")[0]
    fn = report.split("## False negatives")[1]
    assert set(heading.findall(fp)) == set(wrong.loc[~wrong["label"], "patient_id"])
    assert set(heading.findall(fn)) == set(wrong.loc[wrong["label"], "patient_id"])
    if not wrong.empty:  # every listed error quotes at least one passage with its note id
        assert fp.count("- note `") + fn.count("- note `") >= len(wrong)
    table = ev.summary()
    assert "keyword rule" in table and "truncated context run (trunc)" in table
