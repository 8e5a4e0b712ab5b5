"""The FAISS index on disk: exact patient-scoped search, manifest checks, incremental and atomic builds.

Uses the real packaged all-MiniLM-L6-v2 (loaded once per process) and real FAISS.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from ards_rag import index as index_mod  # noqa: E402
from ards_rag.chunking import chunk_notes  # noqa: E402
from ards_rag.config import resolve_config  # noqa: E402
from ards_rag.embedding import add_encode_hook, load_embedder  # noqa: E402
from ards_rag.errors import IndexStoreError, ManifestMismatchError, UnknownPatientError  # noqa: E402
from ards_rag.index import NotesIndex, build_index, update_index  # noqa: E402

FINDINGS = [
    "Diffuse bilateral airspace opacities, worse than on the prior study.",
    "Heart size is normal. No pleural effusion or pneumothorax.",
    "Endotracheal tube terminates 4 cm above the carina.",
    "Patchy ground-glass opacification with dependent consolidation in both lungs.",
    "Moderate cardiomegaly with vascular congestion and small bilateral effusions.",
    "Right lower lobe consolidation, consistent with pneumonia.",
    "Lungs are clear. No acute cardiopulmonary process.",
    "Stable left basilar atelectasis.",
]


def make_notes(n_patients: int = 5, notes_per_patient: int = 3, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        for s in range(notes_per_patient):
            picks = rng.choice(len(FINDINGS), size=3, replace=False)
            text = (
                "EXAMINATION:  CHEST (PORTABLE AP)\n\n"
                f"INDICATION:  Patient {p} on day {s}, intubated for hypoxemia.\n\n"
                f"FINDINGS:\n{' '.join(FINDINGS[i] for i in picks)}\n\n"
                f"IMPRESSION:\n{FINDINGS[picks[0]]}"
            )
            rows.append((f"P{p:02d}", f"P{p:02d}-N{s}", s, f"2180-05-{s + 1:02d} 09:00:00", "Radiology", text))
    return pd.DataFrame(rows, columns=["patient_id", "note_id", "note_seq", "charttime", "note_type", "text"])


def make_table(notes: pd.DataFrame, labels: dict[str, bool | None] | None = None) -> SimpleNamespace:
    pids = sorted(notes["patient_id"].unique())
    labels = labels or {p: i % 2 == 0 for i, p in enumerate(pids)}
    lab = pd.DataFrame({"patient_id": pids, "label": pd.array([labels.get(p) for p in pids], dtype="boolean")})
    return SimpleNamespace(notes=notes, labels=lab, source=None)


@pytest.fixture(scope="module")
def embedder():
    return load_embedder("minilm")


@pytest.fixture(scope="module")
def cfg():
    return resolve_config(overrides={"chunking": {"max_tokens": 64, "overlap_tokens": 8}})


@pytest.fixture
def counter():
    calls: list[int] = []
    remove = add_encode_hook(calls.append)
    yield calls
    remove()


@pytest.fixture(scope="module")
def built(tmp_path_factory, embedder, cfg):
    notes = make_notes()
    d = tmp_path_factory.mktemp("idx") / "default"
    report = build_index(make_table(notes), d, cfg, progress=False, embedder=embedder)
    return d, notes, report


# ------------------------------------------------------------------------------- exact search


def brute_topk(vectors: np.ndarray, rows: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    s = vectors[rows] @ q
    order = np.argsort(-s, kind="stable")[:k]
    return s[order], rows[order]


@pytest.mark.parametrize("method", ["matrix", "faiss"])
def test_patient_topk_equals_numpy_on_random_vectors(method):
    rng = np.random.default_rng(1)
    sizes = rng.integers(1, 40, size=60)
    pids = np.repeat([f"p{i:03d}" for i in range(len(sizes))], sizes)
    n, d = len(pids), 32
    vecs = rng.standard_normal((n, d)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    passages = pd.DataFrame({"patient_id": pids, "note_id": [f"n{i}" for i in range(n)]})
    idx = NotesIndex.from_arrays(vecs, passages)
    queries = rng.standard_normal((5, d)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    for pid in ["p000", "p007", "p033", "p059"]:
        rows = np.flatnonzero(pids == pid)
        scores, got = idx.search_patient(pid, queries, k=10, method=method)
        for qi in range(len(queries)):
            want_s, want_r = brute_topk(vecs, rows, queries[qi], 10)
            np.testing.assert_allclose(scores[qi], want_s, rtol=0, atol=1e-5)
            assert got[qi].tolist() == want_r.tolist()
            assert set(got[qi]) <= set(rows)  # never another patient's passage


def test_patient_topk_equals_numpy_on_real_embeddings(built, embedder, cfg):
    d, _, _ = built
    idx = NotesIndex.load(d, expect=cfg)
    queries = embedder.encode(cfg["retrieval"]["queries"], count=False)
    # Independent reference: embed every passage's text again through the tokenizer.
    ref = embedder.encode(idx.passages["text"].tolist(), count=False)
    np.testing.assert_allclose((ref * idx.vectors).sum(axis=1), 1.0, atol=1e-3)
    for pid in idx.patient_ids():
        rows = np.flatnonzero(idx.passages["patient_id"].to_numpy() == pid)
        for method in ("matrix", "faiss"):
            scores, got = idx.search_patient(pid, queries, k=4, method=method)
            for qi in range(len(queries)):
                want_s, _ = brute_topk(ref, rows, queries[qi], 4)
                np.testing.assert_allclose(scores[qi], want_s, atol=2e-3)
                np.testing.assert_allclose(ref[got[qi]] @ queries[qi], want_s, atol=2e-3)


def test_unknown_patient_says_how_many(built, cfg):
    idx = NotesIndex.load(built[0], expect=cfg)
    with pytest.raises(UnknownPatientError, match="holds 5 patients"):
        idx.search_patient("nobody", np.zeros((1, idx.faiss_index.d), np.float32), 3)


# ------------------------------------------------------------------------------ folder contents


def test_folder_holds_passages_patients_labels_manifest(built, embedder, cfg):
    d, notes, report = built
    for name in ("index.faiss", "passages.parquet", "patients.parquet", "notes.parquet", "manifest.json", "config.yaml"):
        assert (d / name).is_file()
    idx = NotesIndex.load(d, expect=cfg)
    assert report.passages == len(idx) == len(idx.passages) == report.embedded
    m = idx.manifest
    assert m["embedder"]["name"] == "minilm" and m["embedder"]["dimension"] == 384
    assert m["chunking"] == {"max_tokens": 64, "overlap_tokens": 8, "min_tokens": 24}
    assert m["counts"] == {"patients": 5, "notes": 15, "passages": len(idx), "labeled": 5, "positives": 3}
    assert idx.labels()["label"].tolist() == [True, False, True, False, True]
    # Contiguous rows per patient, matching patients.parquet.
    for r in idx.patients.itertuples():
        assert (idx.passages["patient_id"].iloc[r.first_row : r.first_row + r.n_rows] == r.patient_id).all()
    assert idx.patients["n_rows"].sum() == len(idx)
    assert idx.config["chunking"]["max_tokens"] == 64
    assert idx.patient_notes("P01")["note_id"].tolist() == ["P01-N0", "P01-N1", "P01-N2"]
    assert (idx.passages["n_tokens"] <= 64).all()


def test_unlabeled_patients_keep_na(tmp_path, embedder, cfg):
    notes = make_notes(2, 1)
    build_index(make_table(notes, {"P00": True, "P01": None}), tmp_path / "i", cfg, progress=False, embedder=embedder)
    labels = NotesIndex.load(tmp_path / "i").labels()
    assert labels["label"].iloc[0] is True or labels["label"].iloc[0] == True  # noqa: E712
    assert pd.isna(labels["label"].iloc[1])


# ---------------------------------------------------------------------------- manifest checks


def test_mismatched_manifest_is_refused(built, cfg):
    d = built[0]
    other_chunks = resolve_config(overrides={"chunking": {"max_tokens": 128, "overlap_tokens": 8}})
    with pytest.raises(ManifestMismatchError, match="max_tokens=64, config asks 128"):
        NotesIndex.load(d, expect=other_chunks)
    other_embedder = resolve_config(overrides={**cfg, "embedder": {"model": "/models/other-embedder"}})
    with pytest.raises(ManifestMismatchError, match="embedder 'minilm'"):
        NotesIndex.load(d, expect=other_embedder)


def test_missing_or_incomplete_folder_says_to_run_index(tmp_path, built):
    with pytest.raises(IndexStoreError, match="ards-rag index"):
        NotesIndex.load(tmp_path / "nothing")
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("index.faiss", "passages.parquet"):
        (partial / name).write_bytes((built[0] / name).read_bytes())
    with pytest.raises(IndexStoreError, match="incomplete index.*manifest.json.*ards-rag index"):
        NotesIndex.load(partial)


# ------------------------------------------------------------------------- incremental builds


def test_reindex_embeds_only_new_or_changed_notes(tmp_path, embedder, cfg, counter):
    notes = make_notes(4, 3, seed=3)
    d = tmp_path / "idx"
    first = build_index(make_table(notes), d, cfg, progress=False, embedder=embedder)
    assert sum(counter) == first.passages
    before = NotesIndex.load(d)
    old_vec = {(r.note_id, r.char_start): before.vectors[i].copy() for i, r in enumerate(before.passages.itertuples())}

    counter.clear()
    same = build_index(make_table(notes), d, cfg, progress=False, embedder=embedder)
    assert sum(counter) == 0 and same.embedded == 0 and same.reused == first.passages

    changed = notes.copy()
    changed.loc[changed.note_id == "P01-N1", "text"] += "\nAddendum: new bilateral infiltrates."
    changed = changed[changed.note_id != "P02-N0"]  # removed
    added = pd.DataFrame(
        [("P09", "P09-N0", 0, "2180-06-01 00:00:00", "Radiology", "IMPRESSION: Diffuse alveolar damage.")],
        columns=changed.columns,
    )
    changed = pd.concat([changed, added], ignore_index=True)
    expect = chunk_notes(changed[changed.note_id.isin(["P01-N1", "P09-N0"])], embedder.tokenizer, 64, 8)
    counter.clear()
    report = build_index(make_table(changed), d, cfg, progress=False, embedder=embedder)
    assert sum(counter) == len(expect) == report.embedded
    assert (report.notes_new, report.notes_changed, report.notes_removed) == (1, 1, 1)
    after = NotesIndex.load(d)
    assert "P02-N0" not in set(after.passages.note_id)
    assert after.n_patients == 5
    for i, r in enumerate(after.passages.itertuples()):
        if r.note_id not in ("P01-N1", "P09-N0"):
            np.testing.assert_array_equal(after.vectors[i], old_vec[(r.note_id, r.char_start)])
    # The re-embedded passages equal a fresh embedding of the same passages.
    fresh = after.passages.note_id.isin(["P01-N1", "P09-N0"]).to_numpy()
    ref = embedder.encode(after.passages.loc[fresh, "text"].tolist(), count=False)
    np.testing.assert_allclose((ref * after.vectors[fresh]).sum(axis=1), 1.0, atol=1e-3)


def test_update_index_adds_patients_and_keeps_the_rest(tmp_path, embedder, cfg, counter):
    d = tmp_path / "idx"
    base = make_notes(3, 2, seed=5)
    build_index(make_table(base), d, cfg, progress=False, embedder=embedder)
    new = pd.DataFrame(
        [("Z1", "Z1-N0", 0, "2181-01-01 00:00:00", "Radiology", "IMPRESSION: Bilateral ground-glass opacities.")],
        columns=base.columns,
    )
    counter.clear()
    report = update_index(d, make_table(new, {"Z1": None}), cfg, progress=False, embedder=embedder)
    assert report.mode == "update" and report.patients_added == 1 and sum(counter) == report.embedded == 1
    idx = NotesIndex.load(d, expect=cfg)
    assert idx.patient_ids() == ["P00", "P01", "P02", "Z1"]
    assert idx.labels()["label"].isna().tolist() == [False, False, False, True]
    assert len(idx.notes()) == 7


def test_update_index_without_labels_keeps_the_stored_ones(tmp_path, embedder, cfg):
    """New notes of already-labeled patients arrive without labels (as notes to score do): the
    stored labels stay, a label that is given replaces the stored one, and new patients without
    one stay unlabeled."""
    d = tmp_path / "idx"
    base = make_notes(3, 2, seed=5)
    build_index(make_table(base), d, cfg, progress=False, embedder=embedder)
    stored = NotesIndex.load(d).labels().set_index("patient_id")["label"]
    more = pd.DataFrame(
        [("P00", "P00-NEW", 9, "2181-01-01 00:00:00", "Radiology", "IMPRESSION: Bilateral opacities."),
         ("P01", "P01-NEW", 9, "2181-01-01 00:00:00", "Radiology", "IMPRESSION: Clear lungs."),
         ("Z1", "Z1-N0", 0, "2181-01-01 00:00:00", "Radiology", "IMPRESSION: Clear lungs.")],
        columns=base.columns,
    )
    flipped = not bool(stored["P01"])
    update_index(d, make_table(more, {"P00": None, "P01": flipped, "Z1": None}), cfg, progress=False,
                 embedder=embedder)
    labels = NotesIndex.load(d, expect=cfg).labels().set_index("patient_id")["label"]
    assert bool(labels["P00"]) == bool(stored["P00"])
    assert bool(labels["P01"]) == flipped
    assert bool(labels["P02"]) == bool(stored["P02"])
    assert pd.isna(labels["Z1"]) and len(labels) == 4


def test_a_folder_that_is_not_an_index_is_never_replaced(tmp_path, embedder, cfg):
    """`--index` pointing at a run folder (or any folder of other files) is refused and left as
    it was, instead of being replaced by an index."""
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "summary.json").write_text("{}")
    with pytest.raises(IndexStoreError, match=r"run is not an index: it holds other files \(model, summary\.json\)"):
        build_index(make_table(make_notes(2, 2, seed=3)), run, cfg, progress=False, embedder=embedder)
    assert sorted(p.name for p in run.iterdir()) == ["model", "summary.json"]
    empty = tmp_path / "empty"
    empty.mkdir()
    build_index(make_table(make_notes(2, 2, seed=3)), empty, cfg, progress=False, embedder=embedder)
    assert (empty / "manifest.json").exists()


def test_changed_chunking_rebuilds_everything(tmp_path, embedder, cfg, counter):
    d = tmp_path / "idx"
    notes = make_notes(2, 2, seed=9)
    build_index(make_table(notes), d, cfg, progress=False, embedder=embedder)
    other = resolve_config(overrides={"chunking": {"max_tokens": 48, "overlap_tokens": 8}})
    counter.clear()
    report = build_index(make_table(notes), d, other, progress=False, embedder=embedder)
    assert report.reused == 0 and sum(counter) == report.passages and "max_tokens" in report.reason
    assert NotesIndex.load(d).manifest["chunking"]["max_tokens"] == 48


# ---------------------------------------------------------------------------- atomic writes


def test_failed_write_leaves_previous_index_loadable(tmp_path, embedder, cfg, monkeypatch):
    d = tmp_path / "idx"
    notes = make_notes(2, 2, seed=11)
    build_index(make_table(notes), d, cfg, progress=False, embedder=embedder)
    before = NotesIndex.load(d)

    written: list[str] = []

    def fail_after_some_files(cfg_, path):  # the index, passages, patients, notes are on disk now
        written.extend(sorted(p.name for p in Path(path).parent.iterdir()))
        raise OSError("disk full")

    monkeypatch.setattr(index_mod, "save_config", fail_after_some_files)
    fewer = notes[notes.patient_id == "P00"]
    with pytest.raises(OSError, match="disk full"):
        build_index(make_table(fewer), d, cfg, progress=False, embedder=embedder)
    assert "index.faiss" in written and "passages.parquet" in written
    after = NotesIndex.load(d, expect=cfg)
    assert after.n_patients == before.n_patients == 2
    assert after.passages.equals(before.passages)
    assert not list(tmp_path.glob(".idx.tmp-*"))  # the half-written folder is gone


@pytest.mark.slow
def test_killed_build_leaves_previous_index_loadable(tmp_path, embedder, cfg):
    d = tmp_path / "idx"
    build_index(make_table(make_notes(2, 1, seed=12)), d, cfg, progress=False, embedder=embedder)
    before = NotesIndex.load(d)
    big = make_notes(30, 6, seed=13)
    big_path = tmp_path / "big.parquet"
    big.to_parquet(big_path)
    script = textwrap.dedent(
        f"""
        import pandas as pd
        from types import SimpleNamespace
        from ards_rag.config import resolve_config
        from ards_rag.index import build_index
        notes = pd.read_parquet({str(big_path)!r})
        labels = pd.DataFrame({{"patient_id": sorted(notes.patient_id.unique()), "label": None}})
        cfg = resolve_config(overrides={{"chunking": {{"max_tokens": 64, "overlap_tokens": 8}}}})
        build_index(SimpleNamespace(notes=notes, labels=labels, source=None), {str(d)!r}, cfg, progress=False)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(tmp_path.glob(".idx.tmp-*")):
            assert proc.poll() is None, "the build finished or failed before it could be interrupted"
            time.sleep(0.02)
        time.sleep(0.5)  # mid-embedding
        assert proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    after = NotesIndex.load(d)
    assert after.passages.equals(before.passages) and after.n_patients == 2
    # The next build cleans the stale temporary folder up.
    build_index(make_table(make_notes(2, 1, seed=12)), d, cfg, progress=False, embedder=embedder)
    assert not list(tmp_path.glob(".idx.tmp-*"))
