"""Tests of notes ingestion (ards_rag.notes): formats, layouts, labels, bad input, chunking."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from ards_rag.errors import InputError
from ards_rag.notes import (
    NOTES_COLUMNS,
    NotesTable,
    load_notes,
    parse_label,
    patient_texts,
    split_patient_text,
)

# --- fixtures and helpers ------------------------------------------------------------------

RADIOLOGY_COLUMNS = [
    "note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text",
]


def radiology_rows() -> list[dict[str, object]]:
    """MIMIC-IV-Note radiology.csv-shaped rows, deliberately out of order, with a multi-line
    note, an empty note and a note without charttime."""
    return [
        {"note_id": "10000032-RR-2", "subject_id": 10000032, "hadm_id": 22595853,
         "note_type": "RR", "note_seq": 2, "charttime": "2180-05-07 10:15:00",
         "storetime": "2180-05-07 11:00:00",
         "text": "EXAMINATION:  CHEST (PORTABLE AP)\n\nFINDINGS:\nBilateral opacities."},
        {"note_id": "10000032-RR-1", "subject_id": 10000032, "hadm_id": 22595853,
         "note_type": "RR", "note_seq": 1, "charttime": "2180-05-06 22:23:00",
         "storetime": "2180-05-06 23:00:00", "text": "INDICATION: ___ with SOB, \"quoted\", x"},
        {"note_id": "10000084-RR-7", "subject_id": 10000084, "hadm_id": "",
         "note_type": "AR", "note_seq": 7, "charttime": "",
         "storetime": "", "text": "Addendum without a time."},
        {"note_id": "10000084-RR-5", "subject_id": 10000084, "hadm_id": 23052089,
         "note_type": "RR", "note_seq": 5, "charttime": "2160-11-21 08:00:00",
         "storetime": "", "text": "   \n  "},
        {"note_id": "10000084-RR-6", "subject_id": 10000084, "hadm_id": 23052089,
         "note_type": "RR", "note_seq": 6, "charttime": "2160-11-21 08:00:00",
         "storetime": "", "text": "CT CHEST: no consolidation."},
        {"note_id": "10000084-RR-4", "subject_id": 10000084, "hadm_id": 23052089,
         "note_type": "RR", "note_seq": 4, "charttime": "2160-11-21 08:00:00",
         "storetime": "", "text": "Same time, lower note_seq."},
    ]


@pytest.fixture
def radiology_csv(tmp_path: Path) -> Path:
    path = tmp_path / "radiology.csv"
    pd.DataFrame(radiology_rows(), columns=RADIOLOGY_COLUMNS).to_csv(path, index=False)
    return path


def write_csv_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def course_text(n_notes: int = 33) -> tuple[str, list[str]]:
    """A patient string shaped like the course data: 'Note k: ...' with literal backslash-n."""
    notes = []
    for k in range(1, n_notes + 1):
        body = (
            f"EXAMINATION: CHEST (PORTABLE AP)\\nINDICATION: ___ year old man, day {k}  // eval"
            f"\\n\\nFINDINGS: \\n\\nET tube 4 cm above the carina. Heart size normal."
        )
        if k == 3:
            body += " As stated in Note 12: prior study, unchanged. See Note: 7 lines."
        if k == 5:
            body += " Compare Note 4: same."  # an earlier number: part of the text
        if k == 8:
            body += "\\nIMPRESSION: \\n\\nNo change since Note 9:30 am film."  # glued to a word? no
        notes.append(body)
    return " ".join(f"Note {k}: {b}" for k, b in enumerate(notes, start=1)), notes


def expected_note(body: str) -> str:
    return body.replace("\\n", "\n").strip()


# --- long format ---------------------------------------------------------------------------


def test_long_format_radiology_shape(radiology_csv: Path) -> None:
    table = load_notes(radiology_csv)
    assert isinstance(table, NotesTable)
    assert table.source == radiology_csv
    notes = table.notes
    assert list(notes.columns) == NOTES_COLUMNS
    assert notes["patient_id"].tolist() == ["10000032"] * 2 + ["10000084"] * 3
    # charttime, then note_seq; a note without charttime comes last; the blank note is skipped
    assert notes["note_id"].tolist() == [
        "10000032-RR-1", "10000032-RR-2", "10000084-RR-4", "10000084-RR-6", "10000084-RR-7",
    ]
    assert notes["note_seq"].tolist() == [0, 1, 0, 1, 2]
    assert notes["charttime"].tolist()[:2] == ["2180-05-06 22:23:00", "2180-05-07 10:15:00"]
    assert notes["charttime"].iloc[-1] == ""
    assert notes["note_type"].tolist() == ["RR", "RR", "RR", "RR", "AR"]
    assert notes["text"].iloc[1] == "EXAMINATION:  CHEST (PORTABLE AP)\n\nFINDINGS:\nBilateral opacities."
    assert notes["text"].iloc[0] == 'INDICATION: ___ with SOB, "quoted", x'
    assert notes["note_seq"].dtype.kind == "i"
    assert all(str(notes[c].dtype) == "str" for c in NOTES_COLUMNS if c != "note_seq")
    s = table.summary
    assert (s.rows_read, s.notes, s.patients, s.empty_skipped) == (6, 5, 2, 1)
    assert (s.labeled, s.positives, s.layout, s.file_format) == (0, 0, "long", "csv")
    assert table.labels["patient_id"].tolist() == ["10000032", "10000084"]
    assert str(table.labels["label"].dtype) == "boolean"
    assert table.labels["label"].isna().all()


def test_order_falls_back_to_file_order_and_ids_are_derived(tmp_path: Path) -> None:
    path = write_csv_text(
        tmp_path / "n.csv",
        "patient_id,note_text\nb,first of b\na,first of a\nb,second of b\na,second of a\n",
    )
    table = load_notes(path)
    assert table.notes["note_id"].tolist() == ["a-1", "a-2", "b-1", "b-2"]
    assert table.notes["text"].tolist() == ["first of a", "second of a", "first of b", "second of b"]
    assert table.summary.note_ids_derived == 4
    assert table.notes["charttime"].tolist() == [""] * 4


def test_patient_column_choice_and_override(tmp_path: Path) -> None:
    path = write_csv_text(
        tmp_path / "n.csv", "hadm_id,subject_id,Text\n100,1,x\n200,1,y\n"
    )
    assert load_notes(path).notes["patient_id"].tolist() == ["1", "1"]  # subject_id preferred
    by_stay = load_notes(path, patient_column="hadm_id")
    assert by_stay.notes["patient_id"].tolist() == ["100", "200"]
    assert by_stay.summary.columns["text"] == "Text"  # matched case-insensitively


def test_mixed_charttime_formats_sort_by_time(tmp_path: Path) -> None:
    path = write_csv_text(
        tmp_path / "n.csv",
        "patient_id,charttime,text\np,2180-05-07T09:00:00,later\np,2180-05-07 08:00,earlier\n",
    )
    notes = load_notes(path).notes
    assert notes["text"].tolist() == ["earlier", "later"]
    assert notes["charttime"].tolist() == ["2180-05-07 08:00:00", "2180-05-07 09:00:00"]
    zoned = write_csv_text(
        tmp_path / "z.csv",
        "patient_id,charttime,text\np,2180-05-07T09:00:00+02:00,first\np,2180-05-07 08:00Z,second\n",
    )
    notes = load_notes(zoned).notes  # offsets are converted to UTC
    assert notes["text"].tolist() == ["first", "second"]
    assert notes["charttime"].tolist() == ["2180-05-07 07:00:00", "2180-05-07 08:00:00"]


def test_identical_duplicates_are_dropped_with_a_count(radiology_csv: Path) -> None:
    df = pd.read_csv(radiology_csv, dtype=str, keep_default_na=False)
    pd.concat([df, df.iloc[[0, 1]]]).to_csv(radiology_csv, index=False)
    table = load_notes(radiology_csv)
    assert table.summary.duplicates_dropped == 2
    assert table.summary.notes == 5
    assert table.notes["note_id"].is_unique
    assert "2 identical duplicate notes dropped" in table.summary.describe()


# --- labels --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pos", "neg"),
    [("TRUE", "FALSE"), ("true", "false"), ("True", "False"), ("1", "0"), ("yes", "no"),
     ("YES", "No"), ("t", "f"), ("T", "F"), ("y", "n"), ("1.0", "0.0")],
)
def test_label_spellings(tmp_path: Path, pos: str, neg: str) -> None:
    path = write_csv_text(
        tmp_path / "n.csv",
        f"patient_id,text,label\np1,a,{pos}\np1,b,{pos}\np2,c,{neg}\np3,d,\np4,e,NaN\n",
    )
    labels = load_notes(path).labels
    assert labels["label"].tolist() == [True, False, pd.NA, pd.NA]


def test_label_on_one_row_applies_to_the_patient(tmp_path: Path) -> None:
    path = write_csv_text(
        tmp_path / "n.csv", "patient_id,text,ARDS\np1,a,\np1,b,\np1,c,yes\np2,d,no\np2,e,\n"
    )
    table = load_notes(path)
    assert dict(zip(table.labels["patient_id"], table.labels["label"], strict=True)) == {
        "p1": True, "p2": False,
    }
    assert (table.summary.labeled, table.summary.positives) == (2, 1)


def test_bool_and_integer_label_dtypes_from_parquet(tmp_path: Path) -> None:
    base = {"patient_id": ["a", "b", "c"], "text": ["x", "y", "z"]}
    pd.DataFrame({**base, "label": [True, False, True]}).to_parquet(tmp_path / "b.parquet")
    pd.DataFrame({**base, "label": [1, 0, 1]}).to_parquet(tmp_path / "i.parquet")
    pd.DataFrame({**base, "label": pd.array([True, None, False], dtype="boolean")}).to_parquet(
        tmp_path / "n.parquet"
    )
    assert load_notes(tmp_path / "b.parquet").labels["label"].tolist() == [True, False, True]
    assert load_notes(tmp_path / "i.parquet").labels["label"].tolist() == [True, False, True]
    assert load_notes(tmp_path / "n.parquet").labels["label"].tolist() == [True, pd.NA, False]


def test_parse_label_values() -> None:
    assert parse_label(" Yes ") is True and parse_label("F") is False
    assert parse_label(1) is True and parse_label(0.0) is False
    assert parse_label("") is None and parse_label(float("nan")) is None and parse_label(None) is None
    for bad in ("maybe", 2, "ARDS", 0.5):
        with pytest.raises(ValueError):
            parse_label(bad)


def test_conflicting_labels_name_patient_and_rows(tmp_path: Path) -> None:
    path = write_csv_text(
        tmp_path / "n.csv", "patient_id,text,label\np1,a,true\np2,b,false\np1,c,\np1,d,FALSE\n"
    )
    with pytest.raises(InputError) as exc:
        load_notes(path)
    msg = str(exc.value)
    assert "\n" not in msg
    assert str(path) in msg and "patient p1" in msg and "'label'" in msg
    assert "true at data row 1 " in msg and "false at data row 4 " in msg
    assert "header not counted" in msg


def test_unparseable_label_names_value_rows_and_column(tmp_path: Path) -> None:
    path = write_csv_text(
        tmp_path / "n.csv", "patient_id,text,label\np1,a,true\np2,b,maybe\np3,c,maybe\n"
    )
    with pytest.raises(InputError, match=r"label 'maybe' in column 'label' at data rows 2, 3 "
                       r"\(1-based, header not counted\) \(patient p2\)"):
        load_notes(path)


# --- patient format ------------------------------------------------------------------------


def test_split_patient_text_course_shaped() -> None:
    text, bodies = course_text(33)
    parts = split_patient_text(text)
    assert [k for k, _ in parts] == list(range(1, 34))
    assert [t for _, t in parts] == [expected_note(b) for b in bodies]
    assert "Note 12: prior study" in parts[2][1]
    assert "\\n" not in parts[0][1] and "\nINDICATION" in parts[0][1]


def test_split_patient_text_edge_cases() -> None:
    assert split_patient_text("no markers at all\\nsecond line") == [
        (1, "no markers at all\nsecond line")
    ]
    assert split_patient_text("Header\\nNote 1: a Note 2: b") == [(0, "Header"), (1, "a"), (2, "b")]
    # a marker glued to a word or number is text, and numbering must go up by one
    assert split_patient_text("Note 1: see xNote 2: here 3Note 2: Note 2: Note 3: c Note 2: d") == [
        (1, "see xNote 2: here 3Note 2:"), (2, ""), (3, "c Note 2: d"),
    ]
    # a later number before the next one is text, not a skipped note
    assert split_patient_text("Note 1: a Note 3: b Note 2: c") == [(1, "a Note 3: b"), (2, "c")]
    assert split_patient_text("Note 1: a\\nNote 2: b\nNote 3: c") == [(1, "a"), (2, "b"), (3, "c")]


def test_patient_format_detected_and_split(tmp_path: Path) -> None:
    t1, bodies = course_text(33)
    rows = pd.DataFrame(
        {
            "hadm_id": [20001, 20002, 20003],
            "notes": [t1, "Note 1: only one\\nline two", "Note 1:   Note 2: second is real"],
            "ards": ["TRUE", "FALSE", ""],
        }
    )
    path = tmp_path / "course.csv"
    rows.to_csv(path, index=False)
    table = load_notes(path)
    s = table.summary
    assert s.layout == "patient"
    assert (s.rows_read, s.patients, s.notes, s.empty_skipped) == (3, 3, 33 + 1 + 1, 1)
    first = table.notes[table.notes["patient_id"] == "20001"]
    assert first["note_id"].tolist() == [f"20001-n{k}" for k in range(1, 34)]
    assert first["note_seq"].tolist() == list(range(33))
    assert first["text"].tolist() == [expected_note(b) for b in bodies]
    third = table.notes[table.notes["patient_id"] == "20003"]
    assert third["note_id"].tolist() == ["20003-n2"] and third["note_seq"].tolist() == [0]
    assert table.notes.loc[table.notes["patient_id"] == "20002", "text"].tolist() == [
        "only one\nline two"
    ]
    assert table.labels["label"].tolist() == [True, False, pd.NA]


def test_format_forced_and_note_id_prevents_patient_detection(tmp_path: Path) -> None:
    text = "Note 1: a Note 2: b"
    plain = write_csv_text(tmp_path / "p.csv", f"patient_id,text\nx,{text}\n")
    with_ids = write_csv_text(tmp_path / "i.csv", f"patient_id,note_id,text\nx,x-1,{text}\n")
    assert load_notes(plain).summary.layout == "patient"
    assert load_notes(plain).notes["text"].tolist() == ["a", "b"]
    assert load_notes(with_ids).summary.layout == "long"
    forced_long = load_notes(plain, fmt="long")
    assert forced_long.summary.layout == "long" and forced_long.notes["text"].tolist() == [text]
    free_text = write_csv_text(tmp_path / "f.csv", "patient_id,text\nx,one report\n")
    assert load_notes(free_text).summary.layout == "long"
    forced = load_notes(free_text, fmt="patient")
    assert forced.summary.layout == "patient" and forced.notes["note_id"].tolist() == ["x-n1"]


def test_patient_texts_joins_in_order_and_round_trips(radiology_csv: Path, tmp_path: Path) -> None:
    notes = load_notes(radiology_csv).notes
    joined = patient_texts(notes.sample(frac=1.0, random_state=0))
    assert joined.index.tolist() == ["10000032", "10000084"]
    assert joined["10000032"] == (
        'Note 1: INDICATION: ___ with SOB, "quoted", x\n'
        "Note 2: EXAMINATION:  CHEST (PORTABLE AP)\n\nFINDINGS:\nBilateral opacities."
    )
    assert joined["10000084"].startswith("Note 1: Same time, lower note_seq.\nNote 2: CT CHEST")
    path = tmp_path / "patients.parquet"
    pd.DataFrame({"patient_id": joined.index, "text": joined.to_numpy()}).to_parquet(path)
    again = load_notes(path)
    assert again.summary.layout == "patient"
    assert again.notes["text"].tolist() == notes["text"].tolist()
    assert patient_texts(notes.iloc[:0]).empty
    plain = pd.DataFrame(  # a hand-built frame: object dtype, a missing text
        {"patient_id": ["b", "a", "a"], "note_seq": [0, 1, 0], "text": ["z", None, "y"]},
        dtype=object,
    )
    assert patient_texts(plain).to_dict() == {"a": "Note 1: y\nNote 2: ", "b": "Note 1: z"}


# --- other file formats --------------------------------------------------------------------


def _same(a: NotesTable, b: NotesTable) -> None:
    pd.testing.assert_frame_equal(a.notes, b.notes)
    pd.testing.assert_frame_equal(a.labels, b.labels)
    fields = ("rows_read", "notes", "patients", "labeled", "positives", "empty_skipped",
              "duplicates_dropped", "note_ids_derived", "layout")
    assert [getattr(a.summary, f) for f in fields] == [getattr(b.summary, f) for f in fields]


def _labeled_frame() -> pd.DataFrame:
    df = pd.DataFrame(radiology_rows(), columns=RADIOLOGY_COLUMNS)
    df["label"] = ["TRUE", "", "false", "", "FALSE", ""]
    return df


def test_parquet_jsonl_gzip_round_trips(tmp_path: Path) -> None:
    df = _labeled_frame()
    df.to_csv(tmp_path / "n.csv", index=False)
    reference = load_notes(tmp_path / "n.csv")
    assert reference.labels["label"].tolist() == [True, False]

    df.astype(str).to_parquet(tmp_path / "n.parquet")
    df.to_csv(tmp_path / "n.csv.gz", index=False)
    with open(tmp_path / "n.jsonl", "w", encoding="utf-8") as fh:
        for rec in df.to_dict(orient="records"):
            fh.write(json.dumps(rec) + "\n\n")  # blank lines are allowed
    (tmp_path / "n.ndjson").write_bytes((tmp_path / "n.jsonl").read_bytes())
    for name in ("n.parquet", "n.csv.gz", "n.jsonl", "n.ndjson"):
        table = load_notes(tmp_path / name)
        _same(reference, table)
    assert load_notes(tmp_path / "n.jsonl").summary.file_format == "jsonl"


def test_parquet_with_native_types(tmp_path: Path) -> None:
    df = pd.DataFrame(
        {
            "subject_id": [7, 7, 9],
            "note_seq": [2, 1, 1],
            "charttime": pd.to_datetime(
                ["2180-01-02 03:04:05", "2180-01-01", None], format="ISO8601"
            ),
            "text": ["b", "a", "c"],
            "label": [True, True, None],
        }
    )
    df.to_parquet(tmp_path / "n.parquet")
    table = load_notes(tmp_path / "n.parquet")
    assert table.notes["patient_id"].tolist() == ["7", "7", "9"]
    assert table.notes["text"].tolist() == ["a", "b", "c"]
    assert table.notes["charttime"].tolist() == ["2180-01-01 00:00:00", "2180-01-02 03:04:05", ""]
    assert table.labels["label"].tolist() == [True, pd.NA]


def test_pickle_refused_without_flag_and_read_with_it(tmp_path: Path) -> None:
    df = _labeled_frame()
    path = tmp_path / "notes.pkl"
    df.to_pickle(path)
    with pytest.raises(InputError, match=r"notes\.pkl: pickle files are refused .*--allow-pickle"):
        load_notes(path)
    df.to_csv(tmp_path / "n.csv", index=False)
    _same(load_notes(tmp_path / "n.csv"), load_notes(path, allow_pickle=True))
    pd.Series([1, 2]).to_pickle(tmp_path / "s.pickle")
    with pytest.raises(InputError, match="holds a Series, not a pandas DataFrame"):
        load_notes(tmp_path / "s.pickle", allow_pickle=True)


# --- chunked reading -----------------------------------------------------------------------


@pytest.mark.parametrize("chunksize", [1, 2, 5])
def test_chunked_reading_matches_whole_reading(tmp_path: Path, chunksize: int) -> None:
    df = _labeled_frame()
    df = pd.concat([df, df.iloc[[0]]], ignore_index=True)  # a duplicate in a later chunk
    df.to_csv(tmp_path / "n.csv", index=False)
    df.astype(str).to_parquet(tmp_path / "n.parquet")
    with open(tmp_path / "n.jsonl", "w", encoding="utf-8") as fh:
        for rec in df.to_dict(orient="records"):
            fh.write(json.dumps(rec) + "\n")
    t1, _ = course_text(31)
    pd.DataFrame(  # a blank first row must not decide the layout of a 1-row chunk
        {"patient_id": ["z", "a", "b", "c"], "text": ["", t1, "Note 1: x", t1],
         "label": ["", "1", "", "0"]}
    ).to_csv(tmp_path / "p.csv", index=False)
    for name in ("n.csv", "n.parquet", "n.jsonl", "p.csv"):
        whole = load_notes(tmp_path / name, chunksize=10_000)
        _same(whole, load_notes(tmp_path / name, chunksize=chunksize))
    assert load_notes(tmp_path / "p.csv", chunksize=chunksize).summary.layout == "patient"
    assert load_notes(tmp_path / "n.csv", chunksize=chunksize).summary.duplicates_dropped == 1


def test_conflict_across_chunks_is_found(tmp_path: Path) -> None:
    path = write_csv_text(tmp_path / "n.csv", "patient_id,text,label\np,a,1\nq,b,0\np,c,0\n")
    with pytest.raises(InputError, match=r"patient p has conflicting labels"):
        load_notes(path, chunksize=1)


# --- bad input -----------------------------------------------------------------------------


def _error(path: Path, **kwargs: object) -> str:
    with pytest.raises(InputError) as exc:
        load_notes(path, **kwargs)  # type: ignore[arg-type]
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


def test_missing_file_and_folder(tmp_path: Path) -> None:
    msg = _error(tmp_path / "nope.csv")
    assert "nope.csv" in msg and "not found" in msg
    assert "is a folder" in _error(tmp_path)


def test_unknown_extension(tmp_path: Path) -> None:
    msg = _error(write_csv_text(tmp_path / "notes.txt", "a"))
    assert "notes.txt" in msg and ".txt" in msg and ".parquet" in msg


def test_empty_file_header_only_and_all_blank(tmp_path: Path) -> None:
    for name in ("e.csv", "e.jsonl", "e.parquet"):
        (tmp_path / name).write_bytes(b"")
        msg = _error(tmp_path / name)
        assert name in msg and "empty" in msg
    msg = _error(write_csv_text(tmp_path / "h.csv", "patient_id,text\n"))
    assert "h.csv" in msg and "no data rows" in msg
    pd.DataFrame({"patient_id": pd.Series([], dtype=str), "text": pd.Series([], dtype=str)}
                 ).to_parquet(tmp_path / "h.parquet")
    assert "no data rows" in _error(tmp_path / "h.parquet")
    msg = _error(write_csv_text(tmp_path / "b.csv", "patient_id,text\na,\nb,  \n"))
    assert "b.csv" in msg and "all 2 rows have empty note text" in msg and "'text'" in msg
    msg = _error(write_csv_text(tmp_path / "w.jsonl", "\n  \n"))
    assert "w.jsonl" in msg and "empty" in msg


def test_missing_columns_list_found_and_expected(tmp_path: Path) -> None:
    msg = _error(write_csv_text(tmp_path / "n.csv", "subject_id,body\n1,x\n"))
    assert "n.csv" in msg and "no note text column" in msg
    assert "columns found: subject_id, body" in msg and "text, note_text" in msg
    assert "--text-column" in msg
    msg = _error(write_csv_text(tmp_path / "m.csv", "person,text\n1,x\n"))
    assert "no patient id column" in msg and "person, text" in msg
    assert "patient_id, subject_id, hadm_id" in msg and "--patient-column" in msg
    msg = _error(tmp_path / "m.csv", patient_column="stay")
    assert "'stay'" in msg and "--patient-column" in msg and "columns found: person, text" in msg
    with open(tmp_path / "j.jsonl", "w") as fh:
        fh.write(json.dumps({"patient_id": 1, "body": "x"}) + "\n")
    assert "columns found: patient_id, body" in _error(tmp_path / "j.jsonl")


def test_wrong_encoding_names_the_line(tmp_path: Path) -> None:
    good = 'patient_id,text\np1,"multi\nline note"\np2,fine\n'.encode()
    path = tmp_path / "latin.csv"
    path.write_bytes(good + "p3,caf\u00e9 au lait\n".encode("latin-1"))
    msg = _error(path)
    assert "latin.csv" in msg and "line 5 (the header is line 1)" in msg and "0xe9" in msg
    assert "UTF-8" in msg
    # also when the bad byte is deep in a later chunk of a gzip file
    gz = tmp_path / "latin.csv.gz"
    with gzip.open(gz, "wb") as fh:
        fh.write(good + b"p4,ok\n" * 50 + "p5,\u00e9\n".encode("latin-1"))
    assert "line 55 " in _error(gz, chunksize=3)
    jl = tmp_path / "latin.jsonl"
    jl.write_bytes(b'{"patient_id": 1, "text": "ok"}\n{"patient_id": 2, "text": "caf\xe9"}\n')
    msg = _error(jl)
    assert "latin.jsonl" in msg and "line 2" in msg and "0xe9" in msg


def test_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "bad.parquet").write_bytes(b"this is not parquet at all")
    msg = _error(tmp_path / "bad.parquet")
    assert "bad.parquet" in msg and "not a readable Parquet file" in msg
    (tmp_path / "bad.csv.gz").write_bytes(b"not gzip data")
    msg = _error(tmp_path / "bad.csv.gz")
    assert "bad.csv.gz" in msg and "cannot be read" in msg
    (tmp_path / "bad.jsonl").write_text('{"patient_id": 1, "text": "a"}\n{"patient_id": 2,\n')
    msg = _error(tmp_path / "bad.jsonl")
    assert "bad.jsonl" in msg and "line 2 is not valid JSON" in msg
    (tmp_path / "list.jsonl").write_text('[1, 2]\n')
    assert "line 1 is a JSON list" in _error(tmp_path / "list.jsonl")
    (tmp_path / "bad.pkl").write_bytes(b"garbage")
    assert "not a readable pandas pickle" in _error(tmp_path / "bad.pkl", allow_pickle=True)
    for i, body in enumerate(["a,b\nc,d,e,f\n", "c,d,e,f\na,b\n"]):
        ragged = write_csv_text(tmp_path / f"ragged{i}.csv", "patient_id,text\n" + body)
        msg = _error(ragged, chunksize=1)
        assert f"ragged{i}.csv" in msg and "cannot be read as CSV" in msg and "saw 4" in msg


def test_duplicate_note_ids_with_different_text(tmp_path: Path) -> None:
    path = write_csv_text(
        tmp_path / "n.csv",
        "note_id,patient_id,text\nn1,p,alpha\nn2,p,beta\nn1,p,alpha\nn1,p,ALPHA\n",
    )
    msg = _error(path, chunksize=2)
    assert "n.csv" in msg and "note id 'n1'" in msg and "different text" in msg
    assert "data rows 1, 3, 4" in msg
    other = write_csv_text(tmp_path / "o.csv", "note_id,patient_id,text\nn1,p,a\nn1,q,a\n")
    assert "different patients" in _error(other)


def test_empty_patient_id_and_bad_charttime_name_rows(tmp_path: Path) -> None:
    msg = _error(write_csv_text(tmp_path / "n.csv", "patient_id,text\np,a\n,b\n"))
    assert "empty patient id in column 'patient_id' at data row 2" in msg
    msg = _error(write_csv_text(
        tmp_path / "t.csv", "patient_id,charttime,text\np,2180-01-01,a\np,yesterday,b\n"
    ))
    assert "t.csv" in msg and "charttime" in msg and "data row 2" in msg and "YYYY-MM-DD" in msg


def test_bad_arguments(radiology_csv: Path) -> None:
    assert "unknown notes format 'wide'" in _error(radiology_csv, fmt="wide")
    assert "used for two roles" in _error(radiology_csv, patient_column="text")


# --- summary -------------------------------------------------------------------------------


def test_summary_describe_has_counts_and_no_note_text(radiology_csv: Path) -> None:
    table = load_notes(radiology_csv)
    text = table.summary.describe()
    assert "radiology.csv (csv, long format): 6 rows read, 5 notes from 2 patients" in text
    assert "1 empty notes skipped" in text and "2 unlabeled" in text
    assert len(text.splitlines()) <= 4
    for note in table.notes["text"]:
        for word in re.findall(r"[A-Za-z]{5,}", note):
            assert word not in text


def test_labels_on_empty_note_rows_count_and_noteless_patients_are_left_out(
    tmp_path: Path,
) -> None:
    path = write_csv_text(
        tmp_path / "n.csv", "patient_id,text,label\np1,a,\np1, ,true\np2,,false\np3,c,no\n"
    )
    table = load_notes(path)
    assert table.labels["patient_id"].tolist() == ["p1", "p3"]
    assert table.labels["label"].tolist() == [True, False]
    assert table.summary.patients_without_notes == 1
    assert table.summary.empty_skipped == 2
    assert "1 patients without any note ignored" in table.summary.describe()


@pytest.mark.parametrize("block_rows", [1, 3, 7, 1000])
def test_reorder_equals_take(block_rows: int) -> None:
    import numpy as np
    import pyarrow as pa

    from ards_rag.notes import _reorder

    rng = np.random.default_rng(block_rows)
    values = [f"note {i} " + "x" * int(rng.integers(0, 50)) for i in range(103)]
    sizes = [1, 40, 2, 60]
    bounds = np.cumsum([0, *sizes])
    chunks = [pa.array(values[a:b], pa.large_string()) for a, b in zip(bounds, bounds[1:])]
    order = rng.permutation(len(values))
    out = _reorder(chunks, order, block_rows=block_rows)
    assert out.to_pylist() == [values[i] for i in order]
    assert chunks == []  # the source chunks were released


# --- a separate labels file ------------------------------------------------------------------


def test_labels_file_joins_on_the_notes_patient_column(radiology_csv: Path, tmp_path: Path) -> None:
    # MIMIC-IV cohorts keep labels apart from radiology.csv: subject_id, ards (any case, any
    # order, a patient repeated with the same label, one patient without notes).
    labels = tmp_path / "cohort.csv"
    pd.DataFrame({"ARDS": ["yes", "no", "yes", ""], "Subject_ID": [10000032, 10000084, 10000032, 999]}
                 ).to_csv(labels, index=False)
    table = load_notes(radiology_csv, labels=labels)
    got = dict(zip(table.labels["patient_id"], table.labels["label"], strict=True))
    assert got == {"10000032": True, "10000084": False}
    assert table.summary.labeled == 2 and table.summary.positives == 1
    assert table.summary.labeled_without_notes == 0  # 999's label is empty: not a label
    assert table.labels_source == labels and "cohort.csv" in table.summary.describe()

    pd.DataFrame({"subject_id": [10000032, 5, 6], "label": [1, 0, 1]}).to_csv(labels, index=False)
    table = load_notes(radiology_csv, labels=labels)
    got = dict(zip(table.labels["patient_id"], table.labels["label"], strict=True))
    assert got["10000032"] == True and pd.isna(got["10000084"])  # noqa: E712 - unlisted: unlabeled
    assert table.summary.labeled_without_notes == 2
    assert "2 labeled patients of cohort.csv without notes ignored" in table.summary.describe()
    # the notes themselves are those of a load without labels
    pd.testing.assert_frame_equal(table.notes, load_notes(radiology_csv).notes)


def test_labels_file_with_hadm_id_and_a_named_label_column(tmp_path: Path) -> None:
    notes = tmp_path / "notes.parquet"
    rows = [r for r in radiology_rows() if r["hadm_id"] != ""]
    pd.DataFrame(rows, columns=RADIOLOGY_COLUMNS).astype({"hadm_id": "int64"}).to_parquet(notes)
    labels = tmp_path / "l.jsonl"
    labels.write_text('{"hadm_id": 22595853, "y": true, "ards": "junk"}\n'
                      '{"hadm_id": 23052089, "y": false, "ards": "junk"}\n')
    table = load_notes(notes, patient_column="hadm_id", labels=labels, label_column="y")
    got = dict(zip(table.labels["patient_id"], table.labels["label"], strict=True))
    assert got == {"22595853": True, "23052089": False}


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        ("hadm_id,ards\n22595853,yes\n", ["l.csv", "no column 'subject_id'", "hadm_id, ards"]),
        ("subject_id,outcome\n10000032,yes\n", ["l.csv", "no label column", "outcome", "--label-column"]),
        ("subject_id,ards\n10000032,maybe\n", ["l.csv", "'maybe'", "data row 1", "10000032"]),
        ("subject_id,ards\n10000032,yes\n10000032,no\n",
         ["l.csv", "patient 10000032 has conflicting labels", "data row 1", "data row 2"]),
        ("subject_id,ards\n,yes\n", ["l.csv", "empty patient id", "data row 1"]),
        ("subject_id,ards\n", ["l.csv", "no data rows"]),
        ("subject_id,ards\n7,yes\n8,no\n",
         ["l.csv", "none of its 2 labeled patients has notes", "radiology.csv", "'subject_id'"]),
    ],
)
def test_bad_labels_files_name_file_row_and_column(
    radiology_csv: Path, tmp_path: Path, content: str, fragments: list[str]
) -> None:
    labels = tmp_path / "l.csv"
    labels.write_text(content)
    with pytest.raises(InputError) as err:
        load_notes(radiology_csv, labels=labels)
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_labels_in_both_files_or_a_missing_labels_file_are_refused(tmp_path: Path) -> None:
    notes = tmp_path / "n.csv"
    pd.DataFrame({"patient_id": ["1"], "text": ["Clear."], "label": ["true"]}).to_csv(notes, index=False)
    labels = tmp_path / "l.csv"
    pd.DataFrame({"patient_id": ["1"], "label": ["false"]}).to_csv(labels, index=False)
    with pytest.raises(InputError, match=r"n\.csv: column 'label' holds labels \(from data row 1 "
                                         r".*\) and labels were also given in .*l\.csv"):
        load_notes(notes, labels=labels)
    # an empty label column in the notes is no second source
    pd.DataFrame({"patient_id": ["1"], "text": ["Clear."], "label": [""]}).to_csv(notes, index=False)
    assert load_notes(notes, labels=labels).summary.positives == 0
    assert load_notes(notes, labels=labels).summary.labeled == 1
    with pytest.raises(InputError, match=r"nope\.csv: labels file not found"):
        load_notes(notes, labels=tmp_path / "nope.csv")
    pickled = tmp_path / "l.pkl"
    pd.DataFrame({"patient_id": ["1"], "label": [True]}).to_pickle(pickled)
    notes.write_text("patient_id,text\n1,Clear.\n")
    with pytest.raises(InputError, match="--allow-pickle"):
        load_notes(notes, labels=pickled)
    assert load_notes(notes, labels=pickled, allow_pickle=True).summary.positives == 1


def test_notes_without_a_patient_id_skipped_on_request(radiology_csv: Path, tmp_path: Path) -> None:
    # MIMIC radiology notes of outpatient studies have no hadm_id: an admission-level cohort
    # leaves them out.
    with pytest.raises(InputError, match=r"empty patient id in column 'hadm_id' at data row 3 .*"
                                         r"--skip-missing-patient"):
        load_notes(radiology_csv, patient_column="hadm_id")
    labels = tmp_path / "admissions.csv"
    labels.write_text("hadm_id,ards\n22595853,true\n23052089,false\n")
    table = load_notes(radiology_csv, patient_column="hadm_id", labels=labels, skip_missing_patient=True)
    assert set(table.notes["note_id"]) == {"10000032-RR-1", "10000032-RR-2", "10000084-RR-4", "10000084-RR-6"}
    assert table.summary.missing_patient_skipped == 1 and table.summary.rows_read == 6
    assert "1 rows without a patient id skipped" in table.summary.describe()
    assert dict(zip(table.labels["patient_id"], table.labels["label"], strict=True)) == {
        "22595853": True, "23052089": False}
    # the patient layout, and a file where no row has a patient id
    course = tmp_path / "course.csv"
    pd.DataFrame({"patient_id": ["", "7"], "notes": ["Note 1: a\\nNote 2: b", "Note 1: c"]}).to_csv(course, index=False)
    assert load_notes(course, skip_missing_patient=True).summary.notes == 1
    pd.DataFrame({"patient_id": ["", " "], "text": ["a", "b"]}).to_csv(course, index=False)
    with pytest.raises(InputError, match="all 2 rows have an empty patient id"):
        load_notes(course, skip_missing_patient=True)
