"""The on-disk index: passages, their embeddings in FAISS, notes, labels and a manifest.

Folder layout (``indexes/default``)::

    index.faiss        faiss.IndexFlatIP of unit vectors (inner product = cosine); id = row number
    passages.parquet   one row per passage (DESIGN.md columns); row i <-> FAISS id i
    patients.parquet   patient_id, label (boolean, <NA> = unlabeled), first_row, n_rows, n_notes
    notes.parquet      the notes table (for the truncation strategy and re-indexing), with note_hash
    manifest.json      format version, embedder, chunking, source hash, counts (written last)
    config.yaml        the resolved configuration the index was built with

Each patient's passages are contiguous (rows ``first_row .. first_row + n_rows``), so a
patient-scoped search touches only that slice of vectors: an exact ``(n_rows x d) @ (d x q)``
product on a zero-copy view of FAISS's storage (``search_patient(method="matrix")``, the default)
or FAISS itself restricted by ``IDSelectorRange`` (``method="faiss"``); both are exact and both
cost O(n_rows), not O(index). ``benchmarks/index_speed.py`` measures the two.

Building is incremental and atomic: vectors of passages whose note text (content hash), chunking
and embedder are unchanged are copied from the previous index; only new or changed notes are
embedded; removed notes disappear. Everything is written into a temporary folder that replaces
the previous index in one rename (``fsutil.atomic_dir``), so an interrupted or failed build leaves
the previous index as it was.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .chunking import PASSAGE_COLUMNS, ChunkParams, iter_chunks, note_hash
from .config import Config, save_config
from .embedding import (
    Embedder,
    PackedIds,
    PendingEmbeddings,
    embedder_from_config,
    resolve_embedder_path,
)
from .errors import ConfigError, IndexStoreError, ManifestMismatchError
from .fsutil import atomic_dir, file_sha256, foreign_contents, recover

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
INDEX_FILE = "index.faiss"
PASSAGES_FILE = "passages.parquet"
PATIENTS_FILE = "patients.parquet"
NOTES_FILE = "notes.parquet"
MANIFEST_FILE = "manifest.json"
CONFIG_FILE = "config.yaml"
REQUIRED_FILES = (INDEX_FILE, PASSAGES_FILE, PATIENTS_FILE, NOTES_FILE, MANIFEST_FILE)
NOTE_COLUMNS = ["patient_id", "note_id", "note_seq", "charttime", "note_type", "text"]


# ------------------------------------------------------------------------------------ report


@dataclass
class IndexReport:
    """What one build did (counts and timings; never note text)."""

    index_dir: str
    mode: str  # "full" | "incremental" | "update"
    patients: int
    notes: int
    passages: int
    embedded: int  # passages sent to the embedder in this build
    reused: int  # passages whose vectors were copied from the previous index
    notes_new: int
    notes_changed: int
    notes_unchanged: int
    notes_removed: int
    patients_added: int
    labeled: int
    positives: int
    seconds: float
    embed_seconds: float
    embedder: str
    device: str
    dtype: str
    reason: str = ""  # why a previous index was not reused, if it was not
    # Seconds per stage (they overlap: chunking, embedding and writing run at the same time):
    # prepare (normalize, hash, open the previous index), chunk (until the last part came;
    # chunk_busy: chunking seconds summed over the processes doing it, chunk_first_part: until
    # the first part came, worker start-up included),
    # embed (embedder busy; GPU time on CUDA), embed_wait (waiting for it after chunking ended),
    # faiss (add + write), write (Parquet files, in background threads), write_wait (waiting for
    # them at the end), total.
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def passages_per_s(self) -> float:
        """Embedding throughput of this build (passages embedded per second of embedding)."""
        return self.embedded / self.embed_seconds if self.embed_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serializable)."""
        return {**asdict(self), "passages_per_s": round(self.passages_per_s, 1)}

    def __str__(self) -> str:
        lines = [
            f"Index {self.index_dir} ({self.mode}): {self.patients:,} patients "
            f"({self.labeled:,} labeled, {self.positives:,} positive), {self.notes:,} notes, "
            f"{self.passages:,} passages",
            f"notes: {self.notes_new:,} new, {self.notes_changed:,} changed, "
            f"{self.notes_unchanged:,} unchanged, {self.notes_removed:,} removed"
            + (f"; {self.patients_added:,} patients added" if self.mode == "update" else ""),
            f"embedded {self.embedded:,} passages ({self.reused:,} reused) with {self.embedder} on "
            f"{self.device} ({self.dtype}) in {self.embed_seconds:.1f} s "
            f"({self.passages_per_s:,.0f} passages/s); total {self.seconds:.1f} s",
        ]
        if self.reason:
            lines.append(f"previous index not reused: {self.reason}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------- build


def chunk_params(cfg: Config) -> ChunkParams:
    """The chunking parameters of a resolved configuration."""
    sec = cfg.get("chunking", {})
    try:
        return ChunkParams(
            int(sec.get("max_tokens", 128)),
            int(sec.get("overlap_tokens", 24)),
            int(sec.get("min_tokens", 24)),
        )
    except (TypeError, ValueError):
        raise ConfigError(f"chunking: max_tokens/overlap_tokens/min_tokens must be integers ({sec})") from None


def build_index(
    table: Any,
    index_dir: str | Path,
    cfg: Config,
    *,
    progress: bool = True,
    embedder: Embedder | None = None,
) -> IndexReport:
    """Build (or incrementally rebuild) the index of a notes table at ``index_dir``.

    ``table`` is a :class:`ards_rag.notes.NotesTable` (``notes``, ``labels``, ``source``). The
    index then holds exactly these notes: vectors of unchanged notes are reused from a
    compatible previous index at ``index_dir`` (same embedder and chunking), new and changed
    notes are embedded, notes absent from ``table`` are dropped. ``embedder`` overrides the one
    named in ``cfg`` (already loaded). The folder is replaced atomically.
    """
    return _build(table.notes, table.labels, getattr(table, "source", None), index_dir, cfg,
                  progress=progress, embedder=embedder, merge=False,
                  labels_source=getattr(table, "labels_source", None))


def update_index(
    index_dir: str | Path,
    table: Any,
    cfg: Config,
    *,
    progress: bool = True,
    embedder: Embedder | None = None,
) -> IndexReport:
    """Merge a notes table into an existing index (e.g. new patients to score).

    Notes of ``table`` are added (a note id already in the index is replaced by its new text);
    every other note already indexed is kept, with its vector. Labels given in ``table``
    override the stored ones; a patient absent from ``table``, or in it without a label, keeps
    its stored label. The index's own
    embedder and chunking are used (``cfg`` must match them, else ManifestMismatchError). With
    no index at ``index_dir`` this is :func:`build_index`.
    """
    index_dir = Path(index_dir)
    recover(index_dir)
    if not (index_dir / MANIFEST_FILE).exists():
        return build_index(table, index_dir, cfg, progress=progress, embedder=embedder)
    old = NotesIndex.load(index_dir, expect=cfg)
    old_notes = old.notes()
    new_notes = _normalize_notes(table.notes)
    keep = old_notes[~old_notes["note_id"].isin(set(new_notes["note_id"]))]
    notes = pd.concat([keep[NOTE_COLUMNS], new_notes[NOTE_COLUMNS]], ignore_index=True)
    old_labels = old.patients[["patient_id", "label"]]
    new_labels = table.labels[["patient_id", "label"]].copy()
    new_labels["patient_id"] = new_labels["patient_id"].astype(str)
    # An empty label is no label given: new notes of a labeled patient (new notes to score
    # rarely carry labels) must not erase the label it was trained or split with.
    merged = (new_labels.set_index("patient_id")["label"]
              .combine_first(old_labels.set_index("patient_id")["label"]))
    labels = merged.rename("label").rename_axis("patient_id").reset_index()
    source = getattr(table, "source", None)
    return _build(notes, labels, source, index_dir, cfg, progress=progress, embedder=embedder,
                  merge=True, previous=old, labels_source=getattr(table, "labels_source", None))


def _normalize_notes(notes: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("patient_id", "note_id", "text") if c not in notes.columns]
    if missing:
        raise ConfigError(f"notes table: missing column(s) {', '.join(missing)}")
    df = pd.DataFrame(
        {
            "patient_id": notes["patient_id"].astype(str),
            "note_id": notes["note_id"].astype(str),
            "note_seq": notes["note_seq"].astype(np.int64) if "note_seq" in notes else 0,
            "charttime": notes["charttime"].fillna("").astype(str) if "charttime" in notes else "",
            "note_type": notes["note_type"].fillna("").astype(str) if "note_type" in notes else "",
            "text": notes["text"].astype(str),
        }
    )
    if "note_seq" not in notes:
        df["note_seq"] = df.groupby("patient_id", sort=False).cumcount()
    dup = df["note_id"].duplicated()
    if dup.any():
        raise ConfigError(f"notes table: note id {df['note_id'][dup].iloc[0]!r} appears twice")
    return df.sort_values(["patient_id", "note_seq"], kind="stable").reset_index(drop=True)


def _build(
    notes_in: pd.DataFrame,
    labels_in: pd.DataFrame,
    source: Any,
    index_dir: str | Path,
    cfg: Config,
    *,
    progress: bool,
    embedder: Embedder | None,
    merge: bool,
    previous: NotesIndex | None = None,
    labels_source: Any = None,
) -> IndexReport:
    import faiss

    t0 = time.perf_counter()
    index_dir = Path(index_dir)
    params = chunk_params(cfg)
    emb = embedder or embedder_from_config(cfg)
    if params.max_tokens > emb.max_seq_length:
        raise ConfigError(
            f"chunking.max_tokens={params.max_tokens} exceeds the embedder's max_seq_length "
            f"{emb.max_seq_length} ({emb.name}); lower it"
        )
    notes = _normalize_notes(notes_in)
    hashes = [note_hash(t) for t in notes["text"].tolist()]
    notes["note_hash"] = hashes

    # A previous index is reused only if built with the same embedder and chunking.
    reason = ""
    if previous is None:
        recover(index_dir)
        if (index_dir / MANIFEST_FILE).exists():
            try:
                previous = NotesIndex.load(index_dir, expect=_expect_from(emb, params))
            except IndexStoreError as exc:  # mismatch or damage: rebuild from scratch
                reason = str(exc)
                previous = None
        elif (held := foreign_contents(index_dir, (MANIFEST_FILE,))) is not None:
            # Index writes are atomic, so this is not a broken index but something else: a run
            # folder or the user's own files, which replacing would destroy.
            raise IndexStoreError(f"{index_dir} is not an index: it holds {held}; pass a new or "
                                  "empty folder to --index, or an existing index")

    stages: dict[str, float] = {"prepare": time.perf_counter() - t0}
    # Stages overlap: notes.parquet is written while chunking runs (worker processes for big
    # tables) and while the embedder (GPU) embeds the parts chunked so far; passages.parquet while
    # the last vectors are computed. Vectors of unchanged passages come from the old index.
    with atomic_dir(index_dir) as tmp, ThreadPoolExecutor(3, thread_name_prefix="index-write") as io:
        # The writers get shallow copies: this thread keeps reading the same tables meanwhile.
        writes: list[Future[float]] = [
            io.submit(_timed, notes.copy(deep=False).to_parquet, tmp / NOTES_FILE, index=False)
        ]
        key = ["note_hash", "char_start", "char_end"]
        old_rows = None
        old_ids: dict[str, str] = {}
        if previous is not None:
            old_rows = previous.passages[key].copy()
            old_rows["old_row"] = np.arange(len(previous.passages), dtype=np.int64)
            old_rows = old_rows.drop_duplicates(key)
            old_notes = previous.notes()
            old_ids = dict(zip(old_notes["note_id"], old_notes["note_hash"], strict=True))
        batch = int(cfg.get("embedder", {}).get("batch_size", 64))
        queue = _EmbedQueue(emb, batch, progress)
        frames: list[pd.DataFrame] = []
        reused: list[tuple[np.ndarray, np.ndarray]] = []
        n = 0
        workers = int(cfg.get("chunking", {}).get("workers", 0) or 0)
        t_chunk = time.perf_counter()
        chunk_stats: dict[str, float] = {}
        parts = iter_chunks(notes, emb.tokenizer, params, hashes=hashes, workers=workers, stats=chunk_stats)
        try:
            for part, ids in parts:
                todo = np.ones(len(part), dtype=bool)
                if old_rows is not None and len(part):
                    hit = part[key].merge(old_rows, on=key, how="left")["old_row"].to_numpy()
                    found = ~pd.isna(hit)
                    if found.any():
                        reused.append((n + np.flatnonzero(found), previous.vectors[hit[found].astype(np.int64)]))
                    todo = ~found
                todo_rows = np.flatnonzero(todo)
                if len(todo_rows):
                    queue.add(n + todo_rows, ids if len(todo_rows) == len(ids) else ids.take(todo_rows))
                frames.append(part)
                n += len(part)
        finally:
            parts.close()  # stops chunking workers if the loop failed
        stages["chunk"] = time.perf_counter() - t_chunk
        stages.update(chunk_stats)
        passages = (
            pd.concat(frames, ignore_index=True) if len(frames) > 1
            else (frames[0] if frames else pd.DataFrame(columns=PASSAGE_COLUMNS))
        )
        del frames
        writes.append(io.submit(_timed, passages.copy(deep=False).to_parquet, tmp / PASSAGES_FILE, index=False))
        patients = _patients_table(notes, passages, labels_in)
        writes.append(io.submit(_timed, patients.to_parquet, tmp / PATIENTS_FILE, index=False))

        t_wait = time.perf_counter()
        embedded = queue.finish()
        stages["embed_wait"] = time.perf_counter() - t_wait
        stages["embed"] = queue.seconds
        t_faiss = time.perf_counter()
        vectors = np.empty((n, emb.dimension), dtype=np.float32)
        for rows, vecs in (*reused, *embedded):
            vectors[rows] = vecs
        del reused, embedded
        index = faiss.IndexFlatIP(emb.dimension)
        if n:
            index.add(vectors)
        del vectors
        faiss_write = io.submit(_timed, faiss.write_index, index, str(tmp / INDEX_FILE))
        src_info = _source_info(source, notes, labels_source)
        counts = {
            "patients": len(patients),
            "notes": len(notes),
            "passages": n,
            "labeled": int(patients["label"].notna().sum()),
            "positives": int((patients["label"] == True).sum()),  # noqa: E712 - nullable boolean
        }
        manifest = {
            "format_version": FORMAT_VERSION,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "embedder": {
                "name": emb.name,
                "path": emb.path,
                "dimension": emb.dimension,
                "max_seq_length": emb.max_seq_length,
                "dtype": emb.dtype,
            },
            "chunking": params.as_dict(),
            "faiss": {"type": "IndexFlatIP", "metric": "inner_product", "normalized": True},
            "source": src_info,
            "counts": counts,
            "python": platform.python_version(),
        }
        t_wait = time.perf_counter()
        faiss_write.result()
        stages["faiss"] = time.perf_counter() - t_faiss
        stages["write"] = sum(f.result() for f in writes)
        stages["write_wait"] = time.perf_counter() - t_wait
        save_config(cfg, tmp / CONFIG_FILE)
        # The manifest is written last: a folder without it is never taken for an index.
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    n_todo = queue.n

    new_ids = dict(zip(notes["note_id"], notes["note_hash"], strict=True))
    n_new = sum(1 for k in new_ids if k not in old_ids)
    n_changed = sum(1 for k, h in new_ids.items() if k in old_ids and old_ids[k] != h)
    old_patients = set(previous.patients["patient_id"]) if previous is not None else set()
    mode = "update" if merge else ("incremental" if previous is not None else "full")
    report = IndexReport(
        index_dir=str(index_dir),
        mode=mode,
        patients=counts["patients"],
        notes=counts["notes"],
        passages=n,
        embedded=int(n_todo),
        reused=int(n - n_todo),
        notes_new=n_new,
        notes_changed=n_changed,
        notes_unchanged=len(new_ids) - n_new - n_changed,
        notes_removed=sum(1 for k in old_ids if k not in new_ids),
        patients_added=len(set(patients["patient_id"]) - old_patients),
        labeled=counts["labeled"],
        positives=counts["positives"],
        seconds=time.perf_counter() - t0,
        embed_seconds=queue.seconds,
        embedder=emb.name,
        device=emb.device,
        dtype=emb.dtype,
        reason=reason,
        stage_seconds={**{k: round(v, 3) for k, v in stages.items()}, "total": round(time.perf_counter() - t0, 3)},
    )
    log.info("index built: %s", report.to_dict())
    return report


def _timed(fn: Any, *args: Any, **kwargs: Any) -> float:
    """Run ``fn(*args, **kwargs)``; return the seconds it took."""
    t = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t


class _EmbedQueue:
    """Passages waiting for the embedder, sent in calls of at least ``16 * batch_size`` passages.

    One call runs (queued on the GPU) while the next one is being filled: the vectors of a call
    are fetched only once the following call has been queued, so the GPU keeps busy while this
    thread takes in chunked parts. Calls are large so that sorting by length leaves little
    padding and few partial batches.
    """

    def __init__(self, emb: Embedder, batch_size: int, progress: bool) -> None:
        from tqdm.auto import tqdm

        self.emb = emb
        self.batch_size = batch_size
        self.min_call = 16 * batch_size
        self.n = 0  # passages sent to the embedder
        self.seconds = 0.0  # embedder time of the calls finished so far
        self._rows: list[np.ndarray] = []
        self._ids: list[PackedIds] = []
        self._buffered = 0
        self._running: deque[tuple[np.ndarray, PendingEmbeddings]] = deque()
        self._done: list[tuple[np.ndarray, np.ndarray]] = []
        self._bar = tqdm(desc="embedding passages", unit="passage", disable=not progress, leave=False)

    def add(self, rows: np.ndarray, ids: PackedIds) -> None:
        """Queue passages (their final row numbers and content token ids)."""
        self._rows.append(rows)
        self._ids.append(ids)
        self._buffered += len(rows)
        if self._buffered >= self.min_call:
            self._send()

    def finish(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Embed what is left, wait for everything; ``(rows, vectors)`` pieces."""
        try:
            if self._buffered:
                self._send()
            while self._running:
                self._collect()
        finally:
            self._bar.close()
        return self._done

    def _send(self) -> None:
        rows = np.concatenate(self._rows)
        ids = PackedIds.concat(self._ids)
        self._rows, self._ids, self._buffered = [], [], 0
        self._running.append((rows, self.emb.start_encode(ids, self.batch_size)))
        self.n += len(rows)
        while len(self._running) > 1:
            self._collect()

    def _collect(self) -> None:
        rows, pending = self._running.popleft()
        self._done.append((rows, pending.result()))
        self.seconds += pending.seconds
        self._bar.update(len(rows))


def _patients_table(notes: pd.DataFrame, passages: pd.DataFrame, labels: pd.DataFrame | None) -> pd.DataFrame:
    pids = pd.unique(notes["patient_id"])
    pos = passages.groupby("patient_id", sort=False).size()
    n_rows = pos.reindex(pids, fill_value=0).to_numpy(dtype=np.int64)
    first = np.concatenate([[0], np.cumsum(n_rows)[:-1]]).astype(np.int64) if len(pids) else np.zeros(0, np.int64)
    n_notes = notes.groupby("patient_id", sort=False).size().reindex(pids).to_numpy(dtype=np.int64)
    out = pd.DataFrame({"patient_id": pids.astype(str), "first_row": first, "n_rows": n_rows, "n_notes": n_notes})
    label = pd.Series(pd.NA, index=out.index, dtype="boolean")
    if labels is not None and len(labels):
        lab = labels.assign(patient_id=labels["patient_id"].astype(str)).drop_duplicates("patient_id", keep="last")
        label = out["patient_id"].map(lab.set_index("patient_id")["label"]).astype("boolean")
    out.insert(1, "label", label)
    # Contiguity is what makes patient-scoped search a slice; check it once here.
    if len(passages):
        starts = passages["patient_id"].to_numpy()[first[n_rows > 0]]
        if not np.array_equal(starts.astype(str), out["patient_id"].to_numpy()[n_rows > 0].astype(str)):
            raise IndexStoreError("internal: passages of a patient are not contiguous")
    return out


def _source_info(source: Any, notes: pd.DataFrame, labels_source: Any = None) -> dict[str, Any]:
    info: dict[str, Any] = {"path": None, "sha256": None}
    if source is not None and Path(source).is_file():
        info = {"path": str(source), "sha256": file_sha256(source)}
    if labels_source is not None and Path(labels_source).is_file():
        info["labels"] = {"path": str(labels_source), "sha256": file_sha256(labels_source)}
    h = hashlib.sha256()
    for nid, nh in zip(notes["note_id"], notes["note_hash"], strict=True):
        h.update(f"{nid}\t{nh}\n".encode())
    info["notes_sha256"] = h.hexdigest()
    return info


def _expect_from(emb: Embedder, params: ChunkParams) -> dict[str, Any]:
    return {"embedder": {"model": emb.name}, "chunking": params.as_dict()}


# -------------------------------------------------------------------------------------- load


class NotesIndex:
    """A loaded index folder (see module doc). Use :meth:`load`.

    Attributes: ``dir``, ``manifest``, ``passages`` (DataFrame, row = FAISS id), ``patients``
    (DataFrame), ``faiss_index``, ``vectors`` (zero-copy ``(n, d)`` float32 view of the FAISS
    storage), ``config`` (the resolved config it was built with).
    """

    def __init__(
        self,
        directory: Path | None,
        manifest: dict[str, Any],
        passages: pd.DataFrame,
        patients: pd.DataFrame,
        faiss_index: Any,
        config: Config | None = None,
        notes: pd.DataFrame | None = None,
    ) -> None:
        import faiss

        self.dir = directory
        self.manifest = manifest
        self.passages = passages
        self.patients = patients
        self.faiss_index = faiss_index
        self.config = config or {}
        self._notes = notes
        n, d = faiss_index.ntotal, faiss_index.d
        if n:
            self.vectors = faiss.rev_swig_ptr(faiss_index.get_xb(), n * d).reshape(n, d)
        else:
            self.vectors = np.zeros((0, d), dtype=np.float32)
        self._pos = {pid: i for i, pid in enumerate(patients["patient_id"].tolist())}
        self._first = patients["first_row"].to_numpy(dtype=np.int64)
        self._n = patients["n_rows"].to_numpy(dtype=np.int64)

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def load(cls, index_dir: str | Path, expect: Config | dict[str, Any] | None = None) -> NotesIndex:
        """Open an index folder, checking it is complete and (with ``expect``) compatible.

        ``expect`` is a resolved config (or ``{"embedder": {"model": ...}, "chunking": {...}}``):
        an index built with another embedder or other chunking parameters raises
        :class:`ManifestMismatchError`. A missing or incomplete folder raises
        :class:`IndexStoreError` telling to run ``ards-rag index``.
        """
        import faiss

        d = Path(index_dir)
        recover(d)
        hint = f"run `ards-rag index NOTES --index {d}` first"
        if not d.is_dir():
            raise IndexStoreError(f"{d}: no index here; {hint}")
        missing = [f for f in REQUIRED_FILES if not (d / f).is_file()]
        if missing:
            raise IndexStoreError(f"{d}: incomplete index (missing {', '.join(missing)}); {hint}")
        try:
            manifest = json.loads((d / MANIFEST_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise IndexStoreError(f"{d / MANIFEST_FILE}: unreadable ({exc}); {hint}") from None
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise ManifestMismatchError(
                f"{d}: index format version {version}, this ards-rag reads version {FORMAT_VERSION}; {hint}"
            )
        if expect is not None:
            check_manifest(manifest, expect, d)
        try:
            try:
                index = faiss.read_index(str(d / INDEX_FILE), faiss.IO_FLAG_MMAP_IFC)
            except (RuntimeError, AttributeError):
                index = faiss.read_index(str(d / INDEX_FILE))
            passages = pd.read_parquet(d / PASSAGES_FILE)
            patients = pd.read_parquet(d / PATIENTS_FILE)
        except Exception as exc:  # noqa: BLE001 - damaged files: one clear line
            raise IndexStoreError(f"{d}: damaged index ({type(exc).__name__}: {str(exc)[:120]}); {hint}") from None
        if index.ntotal != len(passages) or index.ntotal != manifest["counts"]["passages"]:
            raise IndexStoreError(
                f"{d}: {INDEX_FILE} holds {index.ntotal} vectors but {PASSAGES_FILE} "
                f"{len(passages)} passages; {hint}"
            )
        cfg = None
        if (d / CONFIG_FILE).is_file():
            import yaml

            cfg = yaml.safe_load((d / CONFIG_FILE).read_text(encoding="utf-8"))
        patients["label"] = patients["label"].astype("boolean")
        return cls(d, manifest, passages, patients, index, cfg)

    @classmethod
    def from_arrays(
        cls,
        vectors: np.ndarray,
        passages: pd.DataFrame,
        labels: pd.DataFrame | None = None,
        embedder: str = "custom",
    ) -> NotesIndex:
        """An in-memory index of given unit vectors (row i = passage i; patients contiguous)."""
        import faiss

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        notes = passages.drop_duplicates(["patient_id", "note_id"])[["patient_id", "note_id"]]
        patients = _patients_table(notes, passages, labels)
        manifest = {
            "format_version": FORMAT_VERSION,
            "embedder": {"name": embedder, "dimension": int(vectors.shape[1])},
            "chunking": {},
            "counts": {"passages": len(passages), "patients": len(patients)},
        }
        return cls(None, manifest, passages.reset_index(drop=True), patients, index)

    # -- metadata -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.faiss_index.ntotal)

    @property
    def n_patients(self) -> int:
        """Number of patients in the index."""
        return len(self.patients)

    @property
    def embedder_name(self) -> str:
        """The embedder the passages were embedded with (as configured)."""
        return str(self.manifest["embedder"]["name"])

    def patient_ids(self) -> list[str]:
        """All patient ids, in index order."""
        return self.patients["patient_id"].tolist()

    def has_patient(self, patient_id: str) -> bool:
        """Whether ``patient_id`` is in the index."""
        return str(patient_id) in self._pos

    def patient_rows(self, patient_id: str) -> tuple[int, int]:
        """``(first_row, n_rows)`` of a patient's passages; UnknownPatientError if absent."""
        i = self._pos.get(str(patient_id))
        if i is None:
            from .errors import UnknownPatientError

            where = f" {self.dir}" if self.dir else ""
            raise UnknownPatientError(
                f"patient {patient_id!r} is not in the index{where}, which holds "
                f"{self.n_patients:,} patients (e.g. {', '.join(map(repr, self.patient_ids()[:3]))})"
            )
        return int(self._first[i]), int(self._n[i])

    def labels(self) -> pd.DataFrame:
        """``patient_id, label`` of every patient (label ``<NA>`` = unlabeled)."""
        return self.patients[["patient_id", "label"]].copy()

    def notes(self) -> pd.DataFrame:
        """The indexed notes (``notes.parquet``, with ``note_hash``), read on first use."""
        if self._notes is None:
            if self.dir is None:
                raise IndexStoreError("this in-memory index keeps no notes")
            self._notes = pd.read_parquet(self.dir / NOTES_FILE)
        return self._notes

    def patient_notes(self, patient_id: str) -> pd.DataFrame:
        """The notes of one patient in note order."""
        self.patient_rows(patient_id)
        notes = self.notes()
        return notes[notes["patient_id"] == str(patient_id)].sort_values("note_seq", kind="stable")

    # -- search ---------------------------------------------------------------------------------

    def patient_vectors(self, patient_id: str) -> tuple[int, np.ndarray]:
        """``(first_row, vectors)``: a zero-copy view of one patient's passage vectors."""
        first, n = self.patient_rows(patient_id)
        return first, self.vectors[first : first + n]

    def patient_scores(self, patient_id: str, queries: np.ndarray) -> tuple[int, np.ndarray]:
        """``(first_row, scores)``: cosine of each of the patient's passages to each query.

        ``queries`` is ``(q, d)`` unit vectors; ``scores`` is ``(n_rows, q)``; exact, and touches
        only the patient's slice of the index.
        """
        first, vecs = self.patient_vectors(patient_id)
        return first, vecs @ np.asarray(queries, dtype=np.float32).T

    def search_patient(
        self, patient_id: str, queries: np.ndarray, k: int, method: str = "matrix"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` passages of one patient per query: ``(scores, rows)``, each ``(q, k')``.

        ``k' = min(k, n_rows)``; rows are FAISS ids (= passages-table rows), best first.
        ``method="matrix"`` multiplies the patient's slice of vectors; ``method="faiss"`` calls
        FAISS with ``IDSelectorRange`` over the same slice. Both are exact.
        """
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        first, n = self.patient_rows(patient_id)
        kk = min(int(k), n)
        if kk <= 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        if method == "faiss":
            import faiss

            params = faiss.SearchParameters(sel=faiss.IDSelectorRange(first, first + n))
            scores, rows = self.faiss_index.search(q, kk, params=params)
            return scores, rows.astype(np.int64)
        if method != "matrix":
            raise ValueError(f"unknown search method {method!r}; use matrix or faiss")
        s = self.vectors[first : first + n] @ q.T  # (n, q)
        s = s.T
        if kk < n:
            part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        else:
            part = np.broadcast_to(np.arange(n), s.shape).copy()
        ps = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-ps, axis=1, kind="stable")
        return np.take_along_axis(ps, order, axis=1), np.take_along_axis(part, order, axis=1) + first


def check_manifest(manifest: dict[str, Any], expect: Config | dict[str, Any], where: Path | str) -> None:
    """Raise ManifestMismatchError if the index was built with another embedder or chunking."""
    have_emb = manifest.get("embedder", {})
    want_name = str(expect.get("embedder", {}).get("model", have_emb.get("name")))
    problems = []
    if want_name != have_emb.get("name"):
        same_path = False
        try:
            same_path = resolve_embedder_path(want_name) == have_emb.get("path")
        except Exception:  # noqa: BLE001 - an unresolvable name is simply a mismatch
            same_path = False
        if not same_path:
            problems.append(f"embedder {have_emb.get('name')!r} ({have_emb.get('dimension')}-d), config asks {want_name!r}")
    want_chunk = expect.get("chunking")
    if want_chunk:
        have = manifest.get("chunking", {})
        defaults = ChunkParams().as_dict()
        for key in ("max_tokens", "overlap_tokens", "min_tokens"):
            w = int(want_chunk.get(key, defaults[key]))
            if key in have and int(have[key]) != w:
                problems.append(f"chunking.{key}={have[key]}, config asks {w}")
    if problems:
        raise ManifestMismatchError(
            f"{where}: index built with {'; '.join(problems)}; rebuild it with "
            f"`ards-rag index NOTES --index {where}` or use the config it was built with"
        )


def load_index(index_dir: str | Path, cfg: Config | None = None) -> NotesIndex:
    """Shorthand for :meth:`NotesIndex.load` (checking against ``cfg`` when given)."""
    return NotesIndex.load(index_dir, expect=cfg)


__all__ = [
    "IndexReport",
    "NotesIndex",
    "build_index",
    "update_index",
    "load_index",
    "check_manifest",
    "chunk_params",
]
