"""The synthetic cohort: determinism, shape, realism properties, traps, evidence, label noise."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import CountVectorizer

from ards_rag.baselines import ARDS_MENTION
from ards_rag.errors import ConfigError
from ards_rag.notes import load_notes
from ards_rag.synthetic import (
    ARDS_TRAP_KINDS,
    EVIDENCE_COLUMNS,
    NOTES_COLUMNS,
    POSITIVE_EVIDENCE_KINDS,
    TRAP_KINDS,
    generate_cohort,
    patient_scenarios,
    write_cohort,
)

N = 400


@pytest.fixture(scope="module")
def cohort() -> tuple[pd.DataFrame, pd.DataFrame]:
    return generate_cohort(N, seed=7)


@pytest.fixture(scope="module")
def per_patient(cohort: tuple[pd.DataFrame, pd.DataFrame]) -> pd.DataFrame:
    notes, _ = cohort
    g = notes.groupby("patient_id", sort=True)
    return pd.DataFrame({
        "text": g["text"].agg("\n".join),
        "chars": g["text"].agg(lambda s: int(s.str.len().sum())),
        "n_notes": g.size(),
        "label": g["label"].first() == "true",
    })


def test_columns_and_types(cohort: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    notes, evidence = cohort
    assert list(notes.columns) == NOTES_COLUMNS
    assert list(evidence.columns) == EVIDENCE_COLUMNS
    assert set(notes["label"]) == {"true", "false"}
    assert notes.groupby("patient_id")["label"].nunique().max() == 1
    assert notes["note_id"].is_unique
    assert notes["patient_id"].nunique() == N
    assert set(notes["note_type"]) <= {"Radiology", "Echo", "Procedure"}
    assert pd.to_datetime(notes["charttime"], format="%Y-%m-%d %H:%M:%S").notna().all()
    # notes of a patient are in time order, with distinct times
    for _, grp in notes.groupby("patient_id"):
        times = grp["charttime"].tolist()
        assert times == sorted(times) and len(set(times)) == len(times)
    assert set(evidence["kind"]) <= set(POSITIVE_EVIDENCE_KINDS) | set(TRAP_KINDS)


def test_same_seed_same_files_other_seed_other_files(tmp_path) -> None:
    a = write_cohort(tmp_path / "a", 40, seed=3)
    b = write_cohort(tmp_path / "b", 40, seed=3)
    c = write_cohort(tmp_path / "c", 40, seed=4)
    for pa, pb in zip(a, b):
        assert pa.read_bytes() == pb.read_bytes()
    assert a[0].read_bytes() != c[0].read_bytes()
    assert a[0].name == "notes.csv" and a[1].name == "evidence.csv"


def test_write_cohort_creates_folder_and_keeps_other_files(tmp_path) -> None:
    out = tmp_path / "deep" / "cohort"
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("mine")
    notes_path, ev_path = write_cohort(out, 10, seed=0)
    assert (out / "keep.txt").read_text() == "mine"
    assert notes_path.is_file() and ev_path.is_file()
    assert sorted(p.name for p in out.iterdir()) == ["evidence.csv", "keep.txt", "notes.csv"]


def test_the_project_loader_reads_the_cohort(tmp_path) -> None:
    notes_path, _ = write_cohort(tmp_path / "c", 30, seed=1, prevalence=0.3)
    table = load_notes(notes_path)
    assert table.summary.layout == "long"
    assert table.summary.patients == 30
    assert table.summary.positives == 9
    assert table.summary.empty_skipped == 0


def test_prevalence_is_the_target(per_patient: pd.DataFrame) -> None:
    assert per_patient["label"].mean() == pytest.approx(0.25, abs=1 / N)
    notes, _ = generate_cohort(200, seed=11, prevalence=0.4)
    assert (notes.groupby("patient_id")["label"].first() == "true").mean() == pytest.approx(0.4)


def test_note_counts_long_tailed(per_patient: pd.DataFrame) -> None:
    counts = per_patient["n_notes"]
    assert counts.min() >= 2 and counts.max() <= 60
    assert 8 <= counts.median() <= 13
    assert counts.mean() > counts.median()  # right-skewed
    assert (counts >= 30).mean() > 0.02  # a real tail


def test_most_patients_exceed_a_4096_token_window(per_patient: pd.DataFrame) -> None:
    # ~16,000 characters is about 4,096 tokens of this text for a Llama-style tokenizer
    assert (per_patient["chars"] > 16_000).mean() > 0.5


def test_radiology_reports_look_deidentified_and_sectioned(
    cohort: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    notes, _ = cohort
    rad = notes.loc[notes["note_type"] == "Radiology", "text"]
    for head in ("EXAMINATION:", "INDICATION:", "COMPARISON:", "FINDINGS:", "IMPRESSION:"):
        assert rad.str.contains(head, regex=False).all(), head
    assert rad.str.contains("TECHNIQUE:", regex=False).mean() > 0.9
    assert notes["text"].str.contains("___", regex=False).mean() > 0.9
    # hard-wrapped: no long lines except the ruler lines of the report header
    lines = pd.Series([ln for t in rad.head(500) for ln in t.splitlines() if set(ln) != {"_"}])
    assert lines.str.len().max() <= 80
    assert (lines.str.len() >= 60).mean() > 0.2
    everything = "\n".join(notes["text"].head(3000))
    for abbrev in ("ETT", "NGT", "PICC", "b/l", "s/p", "r/o", "PTX", "CHF"):
        assert abbrev in everything, abbrev
    for other in ("Echo", "Procedure"):
        assert (notes["note_type"] == other).any()
    for exam in ("CT ABD", "RENAL U", "CT HEAD", "LOWER EXT VEINS"):
        assert notes["text"].str.contains(exam, regex=False).any(), exam


def test_typos_are_occasional(cohort: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    notes, _ = cohort
    text = " ".join(notes["text"].head(2000)).lower()
    words = re.findall(r"[a-z]+", text)
    # a few misspellings of common words exist, but they are rare
    correct = sum(w == "opacities" for w in words)
    wrong = sum(w in {"opacties", "opacitie", "opacitites", "opaciites", "opacitise"} for w in words)
    assert correct > 0 and wrong < 0.1 * correct


def test_most_positives_never_name_ards_and_traps_are_common(per_patient: pd.DataFrame,
                                                              cohort) -> None:
    _, evidence = cohort
    mentions = per_patient["text"].map(lambda t: bool(ARDS_MENTION.search(t)))
    pos, neg = per_patient["label"], ~per_patient["label"]
    assert mentions[pos].mean() < 0.5
    assert mentions[neg].mean() >= 0.3
    trapped = set(evidence.loc[evidence["kind"].isin(ARDS_TRAP_KINDS), "patient_id"])
    neg_ids = set(per_patient.index[neg])
    assert trapped <= neg_ids
    assert len(trapped) / len(neg_ids) >= 0.3
    # every trap note names ARDS, yet the patient is negative
    notes, _ = cohort
    text_by_id = notes.set_index("note_id")["text"]
    trap_notes = evidence.loc[evidence["kind"].isin(ARDS_TRAP_KINDS), "note_id"]
    assert trap_notes.map(lambda i: bool(ARDS_MENTION.search(text_by_id[i]))).all()


def test_evidence_points_at_notes_of_the_same_patient(cohort, per_patient) -> None:
    notes, evidence = cohort
    owner = notes.set_index("note_id")["patient_id"]
    assert evidence["note_id"].isin(owner.index).all()
    assert (owner.loc[evidence["note_id"]].to_numpy() == evidence["patient_id"].to_numpy()).all()
    assert not evidence.duplicated().any()
    pos_ids = set(per_patient.index[per_patient["label"]])
    pos_ev = evidence[~evidence["kind"].str.startswith("trap_")]
    assert set(pos_ev["patient_id"]) == pos_ids
    bilateral = set(pos_ev.loc[pos_ev["kind"] == "bilateral_opacities", "patient_id"])
    assert bilateral == pos_ids
    # evidence sits in a minority of a positive's notes, anywhere in the timeline
    n_ev = pos_ev.groupby("patient_id")["note_id"].nunique()
    n_notes = per_patient.loc[n_ev.index, "n_notes"]
    assert ((n_ev / n_notes)[n_notes >= 4] < 0.5).all()
    seq = notes.groupby("patient_id").cumcount()
    first_ev = (pos_ev.drop_duplicates("patient_id").set_index("note_id")
                .join(pd.DataFrame({"seq": seq.to_numpy()}, index=notes["note_id"])))
    assert first_ev["seq"].max() >= 10  # sometimes late in a long stay
    # most positives are intubated
    vent = set(pos_ev.loc[pos_ev["kind"] == "ventilation", "patient_id"])
    assert len(vent) / len(pos_ids) > 0.6


def test_bilateral_wording_also_appears_in_negatives(per_patient: pd.DataFrame) -> None:
    bilat = per_patient["text"].str.contains(r"bilateral|b/l|both lungs", regex=True)
    neg = ~per_patient["label"]
    assert bilat[neg].mean() > 0.3


def test_no_single_phrase_decides(per_patient: pd.DataFrame) -> None:
    vec = CountVectorizer(ngram_range=(1, 3), min_df=5, binary=True)
    x = vec.fit_transform(per_patient["text"])
    y = per_patient["label"].to_numpy()
    tp = np.asarray(x[y].sum(axis=0)).ravel()
    fp = np.asarray(x[~y].sum(axis=0)).ravel()
    f1 = 2 * tp / (tp + fp + y.sum())
    assert f1.max() < 0.75, vec.get_feature_names_out()[f1.argmax()]


def test_noise_flips_exactly_that_share_of_labels_and_nothing_else() -> None:
    clean, ev_clean = generate_cohort(200, seed=5)
    noisy, ev_noisy = generate_cohort(200, seed=5, noise=0.1)
    assert clean["text"].equals(noisy["text"]) and ev_clean.equals(ev_noisy)
    a = clean.groupby("patient_id")["label"].first()
    b = noisy.groupby("patient_id")["label"].first()
    assert int((a != b).sum()) == 20


def test_patient_scenarios_describe_the_generated_patients(cohort, per_patient) -> None:
    _, evidence = cohort
    sc = patient_scenarios(N, seed=7).set_index("patient_id")
    assert list(sc.index) == list(per_patient.index)
    assert sc["label"].equals(per_patient["label"].rename("label"))
    assert set(sc.loc[sc["label"], "scenario"]) == {"ards"}
    assert {"overload_mimic", "cardiogenic_edema", "late_bilateral"} <= set(sc.loc[~sc["label"], "scenario"])
    # trap evidence rows lie within the trapped negatives (a late-bilateral patient may lack a
    # free note for its trap); ARDS mentions within the positives drawn to name it
    trap_rows = set(evidence.loc[evidence["kind"].isin(ARDS_TRAP_KINDS), "patient_id"])
    assert trap_rows <= set(sc.index[sc["trapped"]])
    mentions = set(evidence.loc[evidence["kind"] == "ards_mention", "patient_id"])
    assert mentions <= set(sc.index[sc["mention"]])
    noisy = patient_scenarios(N, seed=7, noise=0.1)
    assert int((noisy["label"].to_numpy() != sc["label"].to_numpy()).sum()) == 40
    assert noisy["scenario"].equals(sc["scenario"].reset_index(drop=True))


@pytest.mark.parametrize("kwargs", [
    {"n_patients": 0, "seed": 0},
    {"n_patients": 10, "seed": 0, "prevalence": 1.5},
    {"n_patients": 10, "seed": 0, "noise": -0.1},
])
def test_bad_arguments_are_config_errors(kwargs) -> None:
    with pytest.raises(ConfigError):
        generate_cohort(**kwargs)


def test_edge_prevalences() -> None:
    notes, evidence = generate_cohort(12, seed=0, prevalence=0.0)
    assert (notes["label"] == "false").all()
    notes, evidence = generate_cohort(12, seed=0, prevalence=1.0)
    assert (notes["label"] == "true").all()
    assert not evidence["kind"].str.startswith("trap_").any()
