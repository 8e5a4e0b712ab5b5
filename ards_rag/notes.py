"""Notes ingestion: one loader, used by every command, for the user's clinical notes.

:func:`load_notes` reads CSV (``.csv``, ``.csv.gz``), Parquet, JSONL (``.jsonl``, ``.ndjson``,
optionally ``.gz``) and, only with ``allow_pickle=True``, pandas pickles (``.pkl``, ``.pickle``).
Two layouts are understood:

- **long**: one row per note, as MIMIC-IV-Note ``radiology.csv`` (``note_id, subject_id,
  hadm_id, note_type, note_seq, charttime, storetime, text``).
- **patient**: one row per patient, all notes in one string ``"Note 1: ... Note 2: ..."`` with
  literal two-character ``\\n`` sequences (the course data this project grew from).

Files are read in chunks of ``chunksize`` rows and only the needed columns are kept, so a
2.5 GB radiology table fits comfortably in 24 GiB (see ``benchmarks/ingest_memory.py``).

Labels may come in a separate file (``labels=``, e.g. a MIMIC-IV cohort's ``subject_id, ards``):
one row per patient (or several that agree), joined to the notes on the notes' patient id column,
which the labels file must have under the same name. Notes patients it does not list are
unlabeled; its patients without notes are counted and ignored.

Row numbers in error messages: for CSV, Parquet and pickles they are 1-based *data* rows (the
header line is not counted, so data row 1 is the first row under the header); for JSONL they are
1-based line numbers of the file. Each message says which.

Derived note ids: when the long layout has no ``note_id`` column (or an empty cell), the id is
``<patient_id>-<k>`` with ``k`` the 1-based position of the note in the patient's time order
(charttime, then the file's note_seq, then file order). The patient layout always uses
``<patient_id>-n<k>`` with ``k`` the note's number in its ``Note k:`` marker.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import pandas as pd

from .errors import InputError

__all__ = [
    "NOTES_COLUMNS",
    "NotesSummary",
    "NotesTable",
    "load_notes",
    "patient_texts",
    "parse_label",
    "split_patient_text",
]

#: Columns of :attr:`NotesTable.notes`, in order (docs/DESIGN.md, "Notes table").
NOTES_COLUMNS = ["patient_id", "note_id", "note_seq", "charttime", "note_type", "text"]


def patient_texts(notes: pd.DataFrame) -> pd.Series:
    """All of each patient's notes joined in order: ``"Note 1: ...\\nNote 2: ..."``.

    ``notes`` is a notes table (:attr:`NotesTable.notes`: ``patient_id``, ``note_seq``,
    ``text``). Returns a Series indexed by ``patient_id`` (sorted), one string per patient; notes
    are numbered from 1 in ``note_seq`` order and separated by a newline.
    """
    if notes.empty:
        return pd.Series([], index=pd.Index([], dtype="str", name="patient_id"), dtype="str")
    ordered = notes.sort_values(["patient_id", "note_seq"], kind="stable")
    number = ordered.groupby("patient_id", sort=False).cumcount() + 1
    numbered = "Note " + number.astype("str") + ": " + ordered["text"].astype("str").fillna("")
    joined = numbered.groupby(ordered["patient_id"], sort=True).agg("\n".join)
    joined.index.name = "patient_id"
    joined.name = "text"
    return joined.astype("str")


# --- candidate column names (matched case-insensitively, in this order of preference) -------
PATIENT_COLUMNS = ("patient_id", "subject_id", "hadm_id")
TEXT_COLUMNS = ("text", "note_text", "notes", "note")
LABEL_COLUMNS = ("label", "ards", "has_ards", "is_ards", "ards_label")
NOTE_ID_COLUMNS = ("note_id",)
CHARTTIME_COLUMNS = ("charttime",)
NOTE_TYPE_COLUMNS = ("note_type",)
NOTE_SEQ_COLUMNS = ("note_seq",)

DEFAULT_CHUNKSIZE = 20_000

_TRUE = frozenset({"true", "t", "1", "1.0", "yes", "y"})
_FALSE = frozenset({"false", "f", "0", "0.0", "no", "n"})
_MISSING = frozenset({"", "nan", "na", "n/a", "<na>", "none", "null"})

# A note marker: "Note <k>:" at the start of the string or after whitespace, a literal "\n"
# (two characters, as in the course data) or sentence punctuation, so that "Note 12:" glued to
# a word or a number ("xNote 2:") is never a boundary, nor is a clock time ("Note 9:30").
_MARKER = re.compile(
    r"(?:^|(?<=\s)|(?<=\\n)|(?<=\\r)|(?<=\\t)|(?<=[.;,)\]]))Note\s+(\d+)\s*:(?!\d)"
)
_PATIENT_START = re.compile(r"^\s*Note\s+1\s*:")
_LITERAL_NEWLINE = re.compile(r"\\r\\n|\\n|\\r")

Fmt = Literal["auto", "long", "patient"]


@dataclass(frozen=True)
class NotesSummary:
    """Counts describing one load (never any note text)."""

    source: str
    file_format: str  # csv | parquet | jsonl | pickle
    layout: str  # long | patient
    rows_read: int
    notes: int
    patients: int
    labeled: int
    positives: int
    empty_skipped: int
    duplicates_dropped: int
    note_ids_derived: int
    patients_without_notes: int = 0
    columns: dict[str, str] = field(default_factory=dict)
    labels_source: str | None = None  # the separate labels file, if one was given
    missing_patient_skipped: int = 0  # rows without a patient id, left out on request
    labeled_without_notes: int = 0  # its labeled patients that have no note (ignored)

    @property
    def unlabeled(self) -> int:
        """Patients with no label (to be predicted)."""
        return self.patients - self.labeled

    def describe(self) -> str:
        """A few lines of human-readable counts."""
        name = Path(self.source).name
        lines = [
            f"{name} ({self.file_format}, {self.layout} format): {self.rows_read:,} rows read, "
            f"{self.notes:,} notes from {self.patients:,} patients",
            f"labels: {self.labeled:,} labeled ({self.positives:,} positive, "
            f"{self.labeled - self.positives:,} negative), {self.unlabeled:,} unlabeled",
        ]
        skipped = [f"{self.empty_skipped:,} empty notes skipped"]
        if self.duplicates_dropped:
            skipped.append(f"{self.duplicates_dropped:,} identical duplicate notes dropped")
        if self.note_ids_derived:
            skipped.append(f"{self.note_ids_derived:,} note ids derived")
        if self.patients_without_notes:
            skipped.append(f"{self.patients_without_notes:,} patients without any note ignored")
        if self.missing_patient_skipped:
            skipped.append(f"{self.missing_patient_skipped:,} rows without a patient id skipped")
        if self.labels_source is not None:
            lines[1] += f" (from {Path(self.labels_source).name})"
            if self.labeled_without_notes:
                skipped.append(f"{self.labeled_without_notes:,} labeled patients of "
                               f"{Path(self.labels_source).name} without notes ignored")
        lines.append(", ".join(skipped))
        return "\n".join(lines)


@dataclass
class NotesTable:
    """The loaded notes: ``notes`` (one row per non-empty note), ``labels`` (one row per patient),
    ``summary`` (counts), ``source`` (the file read) and ``labels_source`` (the separate labels
    file, if any).

    ``notes`` columns: ``patient_id: str, note_id: str, note_seq: int (0-based order within the
    patient), charttime: str ("YYYY-MM-DD HH:MM:SS" or empty), note_type: str (or empty),
    text: str``, sorted by ``patient_id`` then ``note_seq``. ``labels``: ``patient_id: str,
    label: "boolean"`` (``<NA>`` = unlabeled), sorted by ``patient_id``.
    """

    notes: pd.DataFrame
    labels: pd.DataFrame
    summary: NotesSummary
    source: Path
    labels_source: Path | None = None


# --- labels --------------------------------------------------------------------------------


def parse_label(value: Any) -> bool | None:
    """Parse one label: true/false, t/f, yes/no, y/n, 1/0 (any case), bools, 0/1 numbers.

    Returns ``None`` for an empty or missing value (unlabeled). Raises ``ValueError`` otherwise.
    """
    if value is None or value is pd.NA:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        if value in (0, 1):
            return bool(value)
        raise ValueError(value)
    if isinstance(value, (float, np.floating)):
        if np.isnan(value):
            return None
        if value in (0.0, 1.0):
            return bool(value)
        raise ValueError(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if text in _MISSING:
        return None
    raise ValueError(value)


def _parse_labels(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Labels of one chunk as a "boolean" Series, and the positions of unparseable values."""
    if pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("boolean"), np.array([], dtype=np.int64)
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    parsed: list[bool | None] = []
    bad_codes: list[int] = []
    for i, u in enumerate(uniques):
        try:
            parsed.append(parse_label(u))
        except ValueError:
            parsed.append(None)
            bad_codes.append(i)
    lookup = pd.array([*parsed, None], dtype="boolean")  # last slot: the NA sentinel (-1)
    out = pd.Series(lookup[codes], index=values.index)
    bad = np.flatnonzero(np.isin(codes, bad_codes)) if bad_codes else np.array([], dtype=np.int64)
    return out, bad


def _label_rows(src: _Source, chunk: pd.DataFrame, col: str, pid: pd.Series) -> pd.DataFrame:
    """``patient_id, label, _row`` for the rows of ``chunk`` whose label in ``col`` is not empty;
    an unparseable label is an InputError naming the file, rows and patient."""
    labels, bad = _parse_labels(chunk[col])
    if len(bad):
        value = chunk[col].iloc[int(bad[0])]
        raise InputError(
            f"{src.path}: label {str(value)[:40]!r} in column {col!r} at "
            f"{src.row_phrase(chunk['_row'].to_numpy()[bad])} (patient {pid.iloc[int(bad[0])]}) "
            "is not a label; use true/false, yes/no, 1/0, or leave it empty for unlabeled"
        )
    keep = labels.notna().to_numpy()
    return pd.DataFrame({"patient_id": pid[keep].to_numpy(), "label": labels[keep].astype(bool).to_numpy(),
                         "_row": chunk["_row"].to_numpy()[keep]})


def _one_label_per_patient(src: _Source, ev: pd.DataFrame, col: str) -> pd.Series:
    """The label of each patient of ``ev`` (``patient_id, label, _row``), indexed by patient id;
    a patient with both labels is an InputError naming the rows of each."""
    agg = ev.groupby("patient_id", sort=True)["label"].agg(["min", "max"])
    conflict = agg.index[agg["min"] != agg["max"]]
    if len(conflict):
        rows = ev.loc[ev["patient_id"] == conflict[0]]
        pos = np.sort(rows.loc[rows["label"], "_row"].to_numpy())
        neg = np.sort(rows.loc[~rows["label"], "_row"].to_numpy())
        more = f" ({len(conflict) - 1:,} more patients conflict)" if len(conflict) > 1 else ""
        raise InputError(
            f"{src.path}: patient {conflict[0]} has conflicting labels in column {col!r}: true at "
            f"{src.row_phrase(pos)}, false at {src.row_phrase(neg)}{more}; give each patient one label"
        )
    return agg["min"].astype(bool)


# --- patient layout ------------------------------------------------------------------------


def split_patient_text(text: str) -> list[tuple[int, str]]:
    """Split one patient's ``"Note 1: ... Note 2: ..."`` string into ``[(k, note_text), ...]``.

    Literal two-character ``\\n`` sequences become newlines and each note is stripped. Markers
    must be numbered 1, 2, 3, ... in order: a ``Note k:`` whose number is not the next one
    (e.g. ``"see Note 12: prior study"`` inside note 3) is part of the text. A string without a
    ``Note 1:`` marker is one note, numbered 1; text before ``Note 1:`` is kept as note 0.
    """
    cuts: list[tuple[int, int, int]] = []  # (number, marker start, text start)
    expected = 1
    for m in _MARKER.finditer(text):
        if int(m.group(1)) == expected:
            cuts.append((expected, m.start(), m.end()))
            expected += 1
    if not cuts:
        return [(1, _clean(text))]
    out: list[tuple[int, str]] = []
    head = text[: cuts[0][1]]
    if head.strip() and _clean(head):
        out.append((0, _clean(head)))
    for i, (k, _, start) in enumerate(cuts):
        end = cuts[i + 1][1] if i + 1 < len(cuts) else len(text)
        out.append((k, _clean(text[start:end])))
    return out


def _clean(text: str) -> str:
    return _LITERAL_NEWLINE.sub("\n", text).strip()


# --- readers -------------------------------------------------------------------------------

_COMPRESSIONS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def _file_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSIONS:
        suffixes = suffixes[:-1]
    ext = suffixes[-1] if suffixes else ""
    kinds = {
        ".csv": "csv",
        ".parquet": "parquet",
        ".pq": "parquet",
        ".jsonl": "jsonl",
        ".ndjson": "jsonl",
        ".pkl": "pickle",
        ".pickle": "pickle",
    }
    if ext not in kinds:
        raise InputError(
            f"{path}: unknown file type {ext or '(no extension)'!s}; use .csv, .csv.gz, .parquet, "
            ".jsonl/.ndjson, or .pkl/.pickle with --allow-pickle"
        )
    return kinds[ext]


def _open_binary(path: Path) -> IO[bytes]:
    opener = _COMPRESSIONS.get(path.suffix.lower())
    return opener(path, "rb") if opener else open(path, "rb")  # type: ignore[return-value]


def _first_bad_utf8_line(path: Path) -> tuple[int, int, int] | None:
    """(line number, column, byte) of the first line that is not valid UTF-8, or None.

    Decoding line by line is exact: a newline byte never occurs inside a UTF-8 sequence.
    """
    with _open_binary(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return lineno, exc.start + 1, line[exc.start]
    return None


def _encoding_error(path: Path) -> InputError:
    where = _first_bad_utf8_line(path)
    if where is None:
        return InputError(f"{path}: not valid UTF-8 text; re-save the file as UTF-8")
    line, col, byte = where
    return InputError(
        f"{path}: line {line} (the header is line 1), column {col}: byte 0x{byte:02x} is not valid "
        "UTF-8; re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
    )


class _Source:
    """A file read as chunks of raw DataFrames, each with a ``_row`` column (the row number a
    user sees, see ``row_phrase``)."""

    def __init__(self, path: Path, kind: str, chunksize: int) -> None:
        self.path = path
        self.kind = kind
        self.chunksize = chunksize
        self._pickle_df: pd.DataFrame | None = None
        self._jsonl_first: list[dict[str, Any]] | None = None
        self._jsonl_lines: list[int] | None = None

    def row_phrase(self, rows: list[int] | np.ndarray, *, limit: int = 5) -> str:
        """``"data rows 3, 7 (1-based, header not counted)"`` or ``"lines 3, 7"``."""
        rows = [int(r) for r in rows]
        shown = ", ".join(str(r) for r in rows[:limit])
        if len(rows) > limit:
            shown += f" and {len(rows) - limit:,} more"
        if self.kind == "jsonl":
            return f"line{'s' if len(rows) > 1 else ''} {shown}"
        if self.kind == "csv":
            return (
                f"data row{'s' if len(rows) > 1 else ''} {shown} (1-based, header not counted)"
            )
        return f"row{'s' if len(rows) > 1 else ''} {shown} (1-based)"

    # columns -------------------------------------------------------------------------------
    def columns(self) -> list[str]:
        """The column names of the file."""
        p = self.path
        if self.kind == "csv":
            try:
                head = pd.read_csv(p, nrows=0, encoding="utf-8", encoding_errors="strict")
                # A first data row longer than the header would silently become the index (or
                # be cut); with header=None pandas reports it like any later ragged row.
                pd.read_csv(p, header=None, nrows=2, dtype=str, na_filter=False)
            except UnicodeDecodeError:
                raise _encoding_error(p) from None
            except pd.errors.EmptyDataError:
                raise InputError(f"{p}: the file is empty; expected a header and data rows") from None
            except (pd.errors.ParserError, ValueError, OSError, EOFError) as exc:
                raise InputError(f"{p}: cannot be read as CSV ({_first_line(exc)})") from None
            return [str(c) for c in head.columns]
        if self.kind == "parquet":
            return list(self._parquet().schema_arrow.names)
        if self.kind == "pickle":
            return [str(c) for c in self._pickle().columns]
        first, _ = self._jsonl_head()
        names: dict[str, None] = {}
        for rec in first:
            names.update(dict.fromkeys(rec))
        return list(names)

    # chunks --------------------------------------------------------------------------------
    def chunks(self, usecols: list[str]) -> Iterator[pd.DataFrame]:
        """Chunks of the file restricted to ``usecols``, each with a ``_row`` column."""
        if self.kind == "csv":
            yield from self._csv_chunks(usecols)
        elif self.kind == "parquet":
            yield from self._parquet_chunks(usecols)
        elif self.kind == "pickle":
            df = self._pickle()
            for start in range(0, len(df), self.chunksize):
                part = df.iloc[start : start + self.chunksize][usecols].copy()
                part.columns = usecols
                part["_row"] = np.arange(start + 1, start + 1 + len(part), dtype=np.int64)
                yield part.reset_index(drop=True)
        else:
            yield from self._jsonl_chunks(usecols)

    def _csv_chunks(self, usecols: list[str]) -> Iterator[pd.DataFrame]:
        p = self.path
        start = 0
        try:
            # No usecols: with it pandas silently drops the extra fields of a ragged row (a
            # note with an unquoted comma); the unused columns are dropped chunk by chunk.
            reader = pd.read_csv(
                p,
                index_col=False,
                dtype=str,
                na_filter=False,  # every cell a string, "" when empty: no NaN guessing
                chunksize=self.chunksize,
                encoding="utf-8",
                encoding_errors="strict",
            )
            with reader:
                for chunk in reader:
                    chunk = chunk[usecols]
                    chunk["_row"] = np.arange(start + 1, start + 1 + len(chunk), dtype=np.int64)
                    start += len(chunk)
                    yield chunk.reset_index(drop=True)
        except UnicodeDecodeError:
            raise _encoding_error(p) from None
        except pd.errors.EmptyDataError:
            raise InputError(f"{p}: the file is empty; expected a header and data rows") from None
        except (pd.errors.ParserError, ValueError, OSError, EOFError) as exc:
            raise InputError(
                f"{p}: cannot be read as CSV after data row {start} ({_first_line(exc)})"
            ) from None

    def _parquet(self) -> Any:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"{self.path}: not a readable Parquet file ({_first_line(exc)})") from None

    def _parquet_chunks(self, usecols: list[str]) -> Iterator[pd.DataFrame]:
        import pyarrow as pa

        start = 0
        try:
            for batch in self._parquet().iter_batches(batch_size=self.chunksize, columns=usecols):
                chunk = batch.to_pandas()
                chunk["_row"] = np.arange(start + 1, start + 1 + len(chunk), dtype=np.int64)
                start += len(chunk)
                yield chunk
        except (pa.ArrowException, OSError) as exc:
            raise InputError(
                f"{self.path}: Parquet file unreadable after row {start} ({_first_line(exc)})"
            ) from None

    def _pickle(self) -> pd.DataFrame:
        if self._pickle_df is None:
            try:
                obj = pd.read_pickle(self.path)
            except Exception as exc:  # noqa: BLE001 - unpickling can raise anything
                raise InputError(
                    f"{self.path}: not a readable pandas pickle ({type(exc).__name__}: "
                    f"{_first_line(exc)})"
                ) from None
            if not isinstance(obj, pd.DataFrame):
                raise InputError(
                    f"{self.path}: the pickle holds a {type(obj).__name__}, not a pandas DataFrame"
                )
            self._pickle_df = obj
        return self._pickle_df

    def _jsonl_records(self) -> Iterator[tuple[int, dict[str, Any]]]:
        p = self.path
        with _open_binary(p) as fh:
            try:
                for lineno, raw in enumerate(fh, start=1):
                    try:
                        line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
                    except UnicodeDecodeError as exc:
                        raise InputError(
                            f"{p}: line {lineno}, column {exc.start + 1}: byte "
                            f"0x{raw[exc.start]:02x} is not valid UTF-8; re-save the file as UTF-8"
                        ) from None
                    if not line.strip():
                        continue
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise InputError(
                            f"{p}: line {lineno} is not valid JSON ({exc.msg}, column {exc.colno})"
                        ) from None
                    if not isinstance(rec, dict):
                        raise InputError(
                            f"{p}: line {lineno} is a JSON {type(rec).__name__}, expected an "
                            "object with one note (or one patient) per line"
                        )
                    yield lineno, rec
            except (OSError, EOFError) as exc:
                raise InputError(f"{p}: cannot be read ({_first_line(exc)})") from None

    def _jsonl_head(self) -> tuple[list[dict[str, Any]], list[int]]:
        if self._jsonl_first is None:
            recs: list[dict[str, Any]] = []
            lines: list[int] = []
            for lineno, rec in self._jsonl_records():
                recs.append(rec)
                lines.append(lineno)
                if len(recs) >= self.chunksize:
                    break
            if not recs:
                raise InputError(f"{self.path}: the file is empty; expected one JSON object per line")
            self._jsonl_first, self._jsonl_lines = recs, lines
        assert self._jsonl_lines is not None
        return self._jsonl_first, self._jsonl_lines

    def _jsonl_chunks(self, usecols: list[str]) -> Iterator[pd.DataFrame]:
        def frame(recs: list[dict[str, Any]], lines: list[int]) -> pd.DataFrame:
            cols = {c: [r.get(c) for r in recs] for c in usecols}
            df = pd.DataFrame(cols, columns=usecols)
            for c in usecols:  # a column of Python strings (and None) -> the str dtype
                if df[c].dtype == object and all(isinstance(v, (str, type(None))) for v in cols[c]):
                    df[c] = df[c].astype("str")
            df["_row"] = np.asarray(lines, dtype=np.int64)
            return df

        recs: list[dict[str, Any]] = []
        lines: list[int] = []
        for lineno, rec in self._jsonl_records():
            recs.append(rec)
            lines.append(lineno)
            if len(recs) >= self.chunksize:
                yield frame(recs, lines)
                recs, lines = [], []
        if recs:
            yield frame(recs, lines)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- column resolution ---------------------------------------------------------------------


def _find(columns: list[str], candidates: tuple[str, ...]) -> str | None:
    for cand in candidates:
        if cand in columns:
            return cand
    lowered = {c.strip().lower(): c for c in reversed(columns)}
    for cand in candidates:
        if cand in lowered:
            return lowered[cand]
    return None


def _named(path: Path, columns: list[str], name: str, option: str) -> str:
    if name in columns:
        return name
    found = _find(columns, (name.strip().lower(),))
    if found is None:
        raise InputError(
            f"{path}: column {name!r} given with {option} is not in the file; columns found: "
            f"{', '.join(columns) or '(none)'}"
        )
    return found


def _required(path: Path, columns: list[str], given: str | None, candidates: tuple[str, ...],
              option: str, what: str) -> str:
    """The column named with ``option``, else the first of ``candidates`` present, else an error."""
    if given is not None:
        return _named(path, columns, given, option)
    col = _find(columns, candidates)
    if col is None:
        found = ", ".join(columns) or "(none)"
        raise InputError(
            f"{path}: no {what} column; columns found: {found}; expected one of "
            f"{', '.join(candidates)} (or name one with {option})"
        )
    return col


def _resolve_columns(
    path: Path,
    columns: list[str],
    patient_column: str | None,
    text_column: str | None,
    label_column: str | None,
) -> dict[str, str]:
    """Map canonical names (patient_id, text, label, note_id, ...) to the file's columns."""
    out: dict[str, str] = {
        "patient_id": _required(path, columns, patient_column, PATIENT_COLUMNS,
                                "--patient-column", "patient id"),
        "text": _required(path, columns, text_column, TEXT_COLUMNS, "--text-column", "note text"),
    }
    if label_column is not None:
        out["label"] = _named(path, columns, label_column, "--label-column")
    else:
        col = _find(columns, LABEL_COLUMNS)
        if col is not None:
            out["label"] = col
    for canon, cands in (
        ("note_id", NOTE_ID_COLUMNS),
        ("charttime", CHARTTIME_COLUMNS),
        ("note_type", NOTE_TYPE_COLUMNS),
        ("note_seq", NOTE_SEQ_COLUMNS),
    ):
        col = _find(columns, cands)
        if col is not None:
            out[canon] = col
    used = list(out.values())
    dup = {c for c in used if used.count(c) > 1}
    if dup:
        raise InputError(
            f"{path}: column {sorted(dup)[0]!r} is used for two roles "
            f"({', '.join(k for k, v in out.items() if v in dup)}); name distinct columns"
        )
    return out


# --- per-chunk normalisation ---------------------------------------------------------------


def _as_str(values: pd.Series) -> pd.Series:
    """Any column as the str dtype with "" for missing values (ids keep no spurious ".0")."""
    if pd.api.types.is_float_dtype(values.dtype):
        finite = values.dropna()
        if len(finite) and (finite == np.floor(finite)).all():
            values = values.astype("Int64")
    elif pd.api.types.is_datetime64_any_dtype(values.dtype):
        return values.dt.strftime("%Y-%m-%d %H:%M:%S").fillna("").astype("str")
    if values.dtype != "str":
        values = values.astype("str")
    return values.fillna("")


def _is_blank(text: pd.Series) -> np.ndarray:
    """True for empty or whitespace-only notes, computed without copying the texts."""
    return ((text.str.len() == 0) | text.str.isspace()).to_numpy(dtype=bool)


class _Collector:
    """Accumulates normalised chunks and per-row label evidence."""

    def __init__(self, source: _Source, cols: dict[str, str], skip_missing_patient: bool = False,
                 labels_elsewhere: Path | None = None) -> None:
        self.source = source
        self.cols = cols
        self.labels_elsewhere = labels_elsewhere  # the labels file: no label may come from here
        self.skip_missing_patient = skip_missing_patient
        self.missing_patient_skipped = 0
        self.parts: list[pd.DataFrame] = []
        self.label_parts: list[pd.DataFrame] = []
        self.all_patients: list[pd.Series] = []  # unique patient ids of each chunk
        self.rows_read = 0
        self.empty_skipped = 0

    def _patients(self, chunk: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
        """The chunk and its patient ids; rows without one are skipped (counted) or an error."""
        pid = _as_str(chunk[self.cols["patient_id"]]).str.strip()
        blank = (pid == "").to_numpy()
        if blank.any():
            if not self.skip_missing_patient:
                rows = chunk["_row"].to_numpy()[blank]
                raise InputError(
                    f"{self.source.path}: empty patient id in column {self.cols['patient_id']!r} at "
                    f"{self.source.row_phrase(rows)}; every note needs a patient (pass "
                    "--skip-missing-patient to leave such notes out, e.g. MIMIC notes without a hadm_id)"
                )
            self.missing_patient_skipped += int(blank.sum())
            chunk = chunk[~blank].reset_index(drop=True)
            pid = pid[~blank].reset_index(drop=True)
        return chunk, pid

    def _labels(self, chunk: pd.DataFrame, pid: pd.Series) -> None:
        col = self.cols.get("label")
        if col is None:
            return
        rows = _label_rows(self.source, chunk, col, pid)
        if len(rows) and self.labels_elsewhere is not None:
            raise InputError(
                f"{self.source.path}: column {col!r} holds labels (from "
                f"{self.source.row_phrase(rows['_row'].to_numpy())}) and labels were also given in "
                f"{self.labels_elsewhere}; use one of the two"
            )
        if len(rows):
            self.label_parts.append(rows)

    def add_long(self, chunk: pd.DataFrame) -> None:
        """Normalise one chunk of the long layout."""
        c = self.cols
        self.rows_read += len(chunk)
        chunk, pid = self._patients(chunk)
        self._labels(chunk, pid)
        text = chunk[c["text"]]
        if text.dtype != "str":
            text = _as_str(text)
        else:
            text = text.fillna("")
        blank = _is_blank(text)
        self.empty_skipped += int(blank.sum())
        keep = ~blank
        self.all_patients.append(pd.Series(pid.unique()))
        out = pd.DataFrame({"patient_id": pid[keep], "text": text[keep]})
        out["note_id"] = (
            _as_str(chunk[c["note_id"]])[keep].str.strip() if "note_id" in c else ""
        )
        for canon in ("charttime", "note_type"):
            out[canon] = _as_str(chunk[c[canon]])[keep].str.strip() if canon in c else ""
        if "note_seq" in c:
            seq = pd.to_numeric(chunk[c["note_seq"]][keep].replace("", None), errors="coerce")
            raw = chunk[c["note_seq"]][keep]
            bad = seq.isna().to_numpy() & (_as_str(raw).str.strip() != "").to_numpy()
            if bad.any():
                rows = chunk["_row"].to_numpy()[keep][bad]
                raise InputError(
                    f"{self.source.path}: note_seq in column {c['note_seq']!r} is not a number at "
                    f"{self.source.row_phrase(rows)}"
                )
            out["_seq_in"] = seq.astype("float64").to_numpy()
        else:
            out["_seq_in"] = np.nan
        out["_row"] = chunk["_row"].to_numpy()[keep]
        self.parts.append(out.reset_index(drop=True))

    def add_patient(self, chunk: pd.DataFrame) -> None:
        """Normalise one chunk of the patient layout (one row per patient)."""
        c = self.cols
        self.rows_read += len(chunk)
        chunk, pid = self._patients(chunk)
        self._labels(chunk, pid)
        self.all_patients.append(pd.Series(pid.unique()))
        texts = _as_str(chunk[c["text"]])
        rows = chunk["_row"].to_numpy()
        p_out: list[str] = []
        id_out: list[str] = []
        k_out: list[int] = []
        t_out: list[str] = []
        r_out: list[int] = []
        for p, t, r in zip(pid.tolist(), texts.tolist(), rows.tolist(), strict=True):
            for k, note in split_patient_text(t):
                if not note:
                    self.empty_skipped += 1
                    continue
                p_out.append(p)
                id_out.append(f"{p}-n{k}")
                k_out.append(k)
                t_out.append(note)
                r_out.append(r)
        out = pd.DataFrame(
            {
                "patient_id": pd.Series(p_out, dtype="str"),
                "text": pd.Series(t_out, dtype="str"),
                "note_id": pd.Series(id_out, dtype="str"),
                "charttime": pd.Series([""] * len(p_out), dtype="str"),
                "note_type": pd.Series([""] * len(p_out), dtype="str"),
                "_seq_in": np.asarray(k_out, dtype="float64"),
                "_row": np.asarray(r_out, dtype=np.int64),
            }
        )
        self.parts.append(out)


# --- assembly ------------------------------------------------------------------------------


def _charttime_key(src: _Source, df: pd.DataFrame) -> tuple[pd.Series, np.ndarray]:
    """Normalised charttime strings and an int64 sort key (missing times sort last)."""
    raw = df["charttime"]
    present = (raw != "").to_numpy()
    if not present.any():
        return raw, np.zeros(len(df), dtype=np.int64)
    try:
        # utc=True: times with offsets are converted to UTC, naive ones are kept as they are
        parsed = pd.to_datetime(raw.where(present), errors="coerce", format="ISO8601", utc=True)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InputError(
            f"{src.path}: charttime cannot be read as date/times ({_first_line(exc)}); "
            "write times as YYYY-MM-DD HH:MM:SS"
        ) from None
    parsed = parsed.dt.tz_localize(None)
    bad = parsed.isna().to_numpy() & present
    if bad.any():
        rows = df["_row"].to_numpy()[bad]
        raise InputError(
            f"{src.path}: charttime is not an ISO-8601 date/time at {src.row_phrase(rows)}; "
            "write times as YYYY-MM-DD HH:MM:SS (or leave them empty)"
        )
    # any resolution pandas picked: only the order matters (and years past 2262 must not overflow)
    key = np.asarray(parsed.to_numpy()).view(np.int64).copy()
    key[~present] = np.iinfo(np.int64).max
    text = parsed.dt.strftime("%Y-%m-%d %H:%M:%S").fillna("").astype("str")
    return text, key


REORDER_BLOCK = 65_536  # output rows assembled at a time when reordering the note texts


def _arrow_chunks(values: pd.Series) -> list[Any]:
    """The pyarrow chunks behind a str Series (no copy)."""
    import pyarrow as pa

    arr = pa.array(values.array)  # pandas hands over its ChunkedArray
    chunks = arr.iterchunks() if isinstance(arr, pa.ChunkedArray) else [arr]
    return [c if c.type == pa.large_string() else c.cast(pa.large_string()) for c in chunks]


def _str_series(chunked: Any) -> pd.Series:
    """A str Series over a pyarrow (large_)string ChunkedArray (no copy)."""
    dtype = pd.StringDtype("pyarrow", na_value=np.nan)
    return pd.Series(pd.arrays.ArrowStringArray(chunked, dtype=dtype))


def _reorder(chunks: list[Any], order: np.ndarray, block_rows: int = REORDER_BLOCK) -> Any:
    """``concat(chunks).take(order)``, holding about one copy of the strings instead of three.

    pandas/pyarrow ``take`` on a chunked string column concatenates the chunks, then copies:
    three copies of 2.5 GB of notes at the peak. Here each source chunk (large_string) is cut
    into pieces by destination block of ``block_rows`` rows and released at once (``chunks`` is
    emptied), then each block is put in order.
    """
    import pyarrow as pa

    n = len(order)
    dest = np.empty(n, dtype=np.int64)
    dest[order] = np.arange(n, dtype=np.int64)
    n_blocks = (n + block_rows - 1) // block_rows
    pieces: list[list[Any]] = [[] for _ in range(n_blocks)]
    places: list[list[np.ndarray]] = [[] for _ in range(n_blocks)]
    start = 0
    released = 0
    pool = pa.default_memory_pool()
    chunks.reverse()  # pop() from the end = file order, each chunk freed after use
    while chunks:
        chunk = chunks.pop()
        d = dest[start : start + len(chunk)]
        local = np.argsort(d, kind="stable")
        d = d[local]
        bounds = np.searchsorted(d, np.arange(n_blocks + 1) * block_rows)
        for b in np.flatnonzero(np.diff(bounds)):
            lo, hi = bounds[b], bounds[b + 1]
            pieces[b].append(chunk.take(pa.array(local[lo:hi])))
            places[b].append(d[lo:hi])
        start += len(chunk)
        del chunk
        released += 1
        if released % 8 == 0:  # hand freed source chunks back, else RSS keeps them
            pool.release_unused()
    pool.release_unused()
    out = []
    for b in range(n_blocks):
        block = pa.concat_arrays(pieces[b])
        pos = np.concatenate(places[b])
        pieces[b] = places[b] = []  # type: ignore[assignment]
        out.append(block.take(pa.array(np.argsort(pos, kind="stable"))))
        del block
        if b % 8 == 7:
            pool.release_unused()
    return pa.chunked_array(out, type=pa.large_string())


def _assemble(src: _Source, col: _Collector, layout: str, external: pd.DataFrame | None = None,
              labels_src: _Source | None = None) -> NotesTable:
    path = src.path
    if col.rows_read == 0:
        raise InputError(f"{path}: the file has no data rows (only a header); nothing to load")
    df = pd.concat(col.parts, ignore_index=True) if col.parts else pd.DataFrame()
    col.parts.clear()
    if col.missing_patient_skipped == col.rows_read:
        raise InputError(
            f"{path}: all {col.rows_read:,} rows have an empty patient id (column "
            f"{col.cols['patient_id']!r}); nothing to load"
        )
    if df.empty:
        raise InputError(
            f"{path}: all {col.rows_read:,} rows have empty note text (column "
            f"{col.cols['text']!r}); nothing to load"
        )

    charttime, time_key = _charttime_key(src, df)
    df["charttime"] = charttime
    codes, uniques = pd.factorize(df["patient_id"], sort=True)
    seq_key = df["_seq_in"].to_numpy(dtype="float64", na_value=np.inf)
    row_key = df["_row"].to_numpy()
    order = np.lexsort((row_key, seq_key, time_key, codes))
    del seq_key, time_key
    codes = codes[order]
    # Most files (MIMIC included) are already in this order; skip the copy then.
    if not (np.diff(order) == 1).all():
        text_chunks = _arrow_chunks(df.pop("text"))
        df = df.take(order).reset_index(drop=True)
        df["text"] = _str_series(_reorder(text_chunks, order))
    del order

    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    counts = np.diff(np.r_[starts, len(codes)])
    position = np.arange(len(codes), dtype=np.int64) - np.repeat(starts, counts)

    missing_id = (df["note_id"] == "").to_numpy()
    derived = int(missing_id.sum())
    if derived:
        # <patient>-<k>, k = 1-based position in time order (see the module docstring)
        ids = df["patient_id"][missing_id] + "-" + pd.Series(
            position[missing_id] + 1, index=df.index[missing_id]
        ).astype("str")
        note_id = df["note_id"].copy()
        note_id[missing_id] = ids
        df["note_id"] = note_id

    df, dropped = _drop_duplicates(src, df)
    if dropped:
        codes, _ = pd.factorize(df["patient_id"], sort=True)
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        counts = np.diff(np.r_[starts, len(codes)])
        position = np.arange(len(codes), dtype=np.int64) - np.repeat(starts, counts)
    df["note_seq"] = position

    labels, without_notes = _patient_labels(src, col, df["patient_id"])
    labeled_without_notes = 0
    if external is not None and labels_src is not None:
        # only unlabeled rows came from the notes' own label column (see _Collector._labels)
        labels, labeled_without_notes = _join_labels(labels, external, src, labels_src,
                                                     col.cols["patient_id"])
    notes = df[NOTES_COLUMNS]
    summary = NotesSummary(
        source=str(path),
        file_format=src.kind,
        layout=layout,
        rows_read=col.rows_read,
        notes=len(notes),
        patients=len(labels),
        labeled=int(labels["label"].notna().sum()),
        positives=int(labels["label"].sum(skipna=True)),
        empty_skipped=col.empty_skipped,
        duplicates_dropped=dropped,
        note_ids_derived=derived,
        patients_without_notes=without_notes,
        columns=dict(col.cols),
        labels_source=str(labels_src.path) if labels_src is not None else None,
        missing_patient_skipped=col.missing_patient_skipped,
        labeled_without_notes=labeled_without_notes,
    )
    return NotesTable(notes=notes, labels=labels, summary=summary, source=path,
                      labels_source=labels_src.path if labels_src is not None else None)


def _join_labels(labels: pd.DataFrame, external: pd.DataFrame, src: _Source, labels_src: _Source,
                 patient_column: str) -> tuple[pd.DataFrame, int]:
    """The notes' patients labeled from ``external``; also how many labeled ids have no notes."""
    known = external.set_index("patient_id")["label"]
    matched = labels["patient_id"].isin(known.index)
    if len(known) and not matched.any():
        raise InputError(
            f"{labels_src.path}: none of its {len(known):,} labeled patients has notes in "
            f"{src.path} (joined on {patient_column!r}; e.g. {known.index[0]!r} in the labels, "
            f"{labels['patient_id'].iloc[0]!r} in the notes); both files must use the same patient ids"
        )
    out = labels[["patient_id"]].copy()
    out["label"] = out["patient_id"].map(known).astype("boolean")
    return out, int(len(known) - matched.sum())


def _drop_duplicates(src: _Source, df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Drop notes repeated with the same id, patient and text; error if the text differs."""
    dup = df["note_id"].duplicated(keep=False).to_numpy()
    if not dup.any():
        return df, 0
    sub = df.loc[dup, ["note_id", "patient_id", "text", "_row"]]
    for note_id, group in sub.groupby("note_id", sort=True):
        if group["text"].nunique() > 1 or group["patient_id"].nunique() > 1:
            what = "patients" if group["patient_id"].nunique() > 1 else "text"
            raise InputError(
                f"{src.path}: note id {note_id!r} appears at "
                f"{src.row_phrase(np.sort(group['_row'].to_numpy()))} with different {what}; "
                "note ids must be unique (fix or remove the duplicates)"
            )
    repeated = df.duplicated(subset=["note_id"], keep="first").to_numpy()
    return df[~repeated].reset_index(drop=True), int(repeated.sum())


def _patient_labels(
    src: _Source, col: _Collector, patient_ids: pd.Series
) -> tuple[pd.DataFrame, int]:
    """One label per patient with notes; raise on conflicting labels within a patient."""
    patients = pd.Index(patient_ids.unique()).sort_values()
    label = pd.Series(pd.NA, index=patients, dtype="boolean")
    if col.label_parts:
        known = _one_label_per_patient(src, pd.concat(col.label_parts, ignore_index=True),
                                       col.cols["label"])
        label = known.reindex(patients).astype("boolean")
    n_all = pd.concat(col.all_patients).nunique() if col.all_patients else 0
    without = n_all - len(patients)
    labels = pd.DataFrame(
        {"patient_id": pd.Series(patients, dtype="str"), "label": label.to_numpy()}
    )
    labels["label"] = labels["label"].astype("boolean")
    return labels, without


# --- entry point ---------------------------------------------------------------------------


DETECT_TEXTS = 100  # non-empty texts looked at to tell the patient layout from the long one


def _looks_like_patient_layout(texts: list[pd.Series]) -> bool:
    """Most of the first ``DETECT_TEXTS`` non-empty texts start with ``Note 1:``."""
    seen = 0
    starts = 0
    for chunk in texts:
        chunk = _as_str(chunk)
        nonblank = chunk[~_is_blank(chunk)].iloc[: DETECT_TEXTS - seen]
        seen += len(nonblank)
        starts += int(nonblank.str.contains(_PATIENT_START, regex=True).sum())
        if seen >= DETECT_TEXTS:
            break
    return seen > 0 and starts * 2 > seen


def _detect(cols: dict[str, str], texts: list[pd.Series]) -> str:
    if "note_id" not in cols and _looks_like_patient_layout(texts):
        return "patient"
    return "long"


def _count_nonblank(texts: pd.Series) -> int:
    return int((~_is_blank(_as_str(texts))).sum())


def load_notes(
    path: str | Path,
    *,
    fmt: Fmt = "auto",
    patient_column: str | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    labels: str | Path | None = None,
    skip_missing_patient: bool = False,
    allow_pickle: bool = False,
    chunksize: int = DEFAULT_CHUNKSIZE,
) -> NotesTable:
    """Read a notes file into a :class:`NotesTable` (see the module docstring for formats).

    ``fmt``: ``"long"`` (one row per note), ``"patient"`` (one row per patient, ``Note 1: ...``)
    or ``"auto"``: patient layout when the file has no ``note_id`` column and most texts of the
    first chunk start with ``Note 1:``. ``patient_column``/``text_column``/``label_column``
    name columns explicitly (default: the first of ``patient_id, subject_id, hadm_id``; of
    ``text, note_text, notes, note``; of ``label, ards, has_ards, is_ards, ards_label``, matched
    case-insensitively). ``labels``: a separate labels file (any of the same formats) with the
    notes' patient id column and a label column (``label_column`` then names that one); the notes
    file must then hold no labels of its own (an empty label column is fine). ``skip_missing_patient``: leave out notes
    whose patient id is empty (counted in the summary) instead of stopping. ``allow_pickle``: read ``.pkl``/``.pickle``
    (unpickling runs code from the file). ``chunksize``: rows read at a time.

    Raises :class:`~ards_rag.errors.InputError` (one line naming the file, row or column) for a
    missing, unreadable, empty or malformed file, a wrong encoding, missing columns, unparseable
    or conflicting labels, a labels file that shares no patient with the notes, and duplicate
    note ids with different text.
    """
    p = Path(path)
    if fmt not in ("auto", "long", "patient"):
        raise InputError(f"unknown notes format {fmt!r}; use auto, long or patient")
    if chunksize < 1:
        raise InputError(f"chunksize must be at least 1 (got {chunksize})")
    src = _open_source(p, "notes", allow_pickle, chunksize)
    columns = src.columns()
    if not columns:
        raise InputError(f"{p}: no columns found; expected a header with the note columns")
    labels_src: _Source | None = None
    if labels is not None:
        # read before the notes, so that a bad labels file fails in seconds, not after the notes
        labels_src = _open_source(Path(labels), "labels", allow_pickle, chunksize)
        # --label-column then names the labels file's column; a label column of the notes is
        # still read, and any label in it is an error (two sources of truth)
        cols = _resolve_columns(p, columns, patient_column, text_column, None)
        in_notes = _find(columns, ((label_column.strip().lower(),) if label_column else ()) + LABEL_COLUMNS)
        if in_notes is not None and in_notes not in cols.values():
            cols["label"] = in_notes
        external = _read_label_file(labels_src, cols["patient_id"], label_column)
    else:
        cols = _resolve_columns(p, columns, patient_column, text_column, label_column)
        external = None
    usecols = list(dict.fromkeys(cols.values()))
    collector = _Collector(src, cols, skip_missing_patient,
                           labels_src.path if labels_src is not None else None)

    layout: str = fmt
    pending: list[pd.DataFrame] = []  # chunks read before the layout is known (fmt="auto")
    seen = 0

    def feed(parts: list[pd.DataFrame]) -> None:
        for part in parts:
            if layout == "patient":
                collector.add_patient(part)
            else:
                collector.add_long(part)

    for chunk in src.chunks(usecols):
        if layout != "auto":
            feed([chunk])
            continue
        pending.append(chunk)
        seen += _count_nonblank(chunk[cols["text"]])
        if seen >= DETECT_TEXTS:
            layout = _detect(cols, [c[cols["text"]] for c in pending])
            feed(pending)
            pending = []
    if layout == "auto":  # fewer than DETECT_TEXTS non-empty texts in the whole file
        layout = _detect(cols, [c[cols["text"]] for c in pending])
        feed(pending)
    return _assemble(src, collector, layout, external, labels_src)


def _open_source(p: Path, what: str, allow_pickle: bool, chunksize: int) -> _Source:
    """A readable, non-empty file of a known format (pickles only with ``allow_pickle``)."""
    if not p.exists():
        raise InputError(f"{p}: {what} file not found; check the path")
    if p.is_dir():
        raise InputError(f"{p}: is a folder; pass the {what} file itself")
    try:
        with open(p, "rb") as fh:
            first = fh.read(1)
    except OSError as exc:
        raise InputError(f"{p}: cannot be read ({exc.strerror or _first_line(exc)})") from None
    kind = _file_format(p)
    if kind == "pickle" and not allow_pickle:
        raise InputError(
            f"{p}: pickle files are refused by default because unpickling runs code from the "
            "file; pass --allow-pickle if you trust it (or convert it to Parquet/CSV)"
        )
    if not first:
        raise InputError(f"{p}: the file is empty (0 bytes)")
    return _Source(p, kind, chunksize)


def _read_label_file(src: _Source, patient_column: str, label_column: str | None) -> pd.DataFrame:
    """``patient_id, label`` (one row per labeled patient) from a separate labels file.

    The file must have the notes' patient id column (same name, any case) and a label column
    (``label_column``, else the first of :data:`LABEL_COLUMNS`). Empty labels are skipped; a
    patient listed twice must have one label.
    """
    p = src.path
    columns = src.columns()
    if not columns:
        raise InputError(f"{p}: no columns found; expected a header with a patient id and a label")
    pid_col = _find(columns, (patient_column.strip().lower(),))
    if pid_col is None:
        raise InputError(
            f"{p}: no column {patient_column!r}, the notes' patient id column; columns found: "
            f"{', '.join(columns)}; the labels must use the same patient ids as the notes"
        )
    lab_col = _required(p, columns, label_column, LABEL_COLUMNS, "--label-column", "label")
    if lab_col == pid_col:
        raise InputError(f"{p}: column {lab_col!r} cannot be both the patient id and the label")
    parts: list[pd.DataFrame] = []
    rows_read = 0
    for chunk in src.chunks([pid_col, lab_col]):
        rows_read += len(chunk)
        pid = _as_str(chunk[pid_col]).str.strip()
        blank = (pid == "").to_numpy()
        if blank.any():
            raise InputError(
                f"{p}: empty patient id in column {pid_col!r} at "
                f"{src.row_phrase(chunk['_row'].to_numpy()[blank])}; every label needs a patient"
            )
        parts.append(_label_rows(src, chunk, lab_col, pid))
    if rows_read == 0:
        raise InputError(f"{p}: the file has no data rows (only a header); no labels to read")
    known = _one_label_per_patient(src, pd.concat(parts, ignore_index=True), lab_col)
    return pd.DataFrame({"patient_id": known.index.astype("str"), "label": known.to_numpy()})
