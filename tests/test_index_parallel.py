"""Building with chunking worker processes and the overlapped embedder gives the same index."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from test_index import make_notes, make_table

from ards_rag.config import resolve_config
from ards_rag.embedding import add_encode_hook, load_embedder
from ards_rag.index import NotesIndex, build_index


@pytest.mark.timeout(300)
def test_parallel_build_equals_serial_build_and_reuses_vectors(tmp_path):
    # float32: in bfloat16 (the auto dtype on CPUs with native bf16) a passage's vector depends on
    # the padded width of its batch, and parallel chunking groups the batches differently.
    emb = load_embedder("minilm", device="cpu", dtype="float32")
    notes = make_notes(n_patients=40, notes_per_patient=5, seed=3)  # 200 notes
    over = {"chunking": {"max_tokens": 64, "overlap_tokens": 8}, "embedder": {"batch_size": 16}}
    serial = resolve_config(overrides={**over, "chunking": {**over["chunking"], "workers": 1}})
    parallel = resolve_config(overrides={**over, "chunking": {**over["chunking"], "workers": 2}})
    r1 = build_index(make_table(notes), tmp_path / "serial", serial, progress=False, embedder=emb)
    r2 = build_index(make_table(notes), tmp_path / "parallel", parallel, progress=False, embedder=emb)
    a, b = NotesIndex.load(tmp_path / "serial"), NotesIndex.load(tmp_path / "parallel")
    pd.testing.assert_frame_equal(a.passages, b.passages)
    pd.testing.assert_frame_equal(a.patients, b.patients)
    np.testing.assert_allclose(a.vectors, b.vectors, rtol=0, atol=1e-5)
    assert r1.embedded == r2.embedded == len(b.passages) > len(notes)
    for stage in ("prepare", "chunk", "embed", "faiss", "write", "total"):
        assert r2.stage_seconds[stage] >= 0
    for r in (r1, r2):  # chunking time, and when the first part came (worker start-up included)
        assert 0 < r.stage_seconds["chunk_busy"] and 0 <= r.stage_seconds["chunk_first_part"] <= r.stage_seconds["chunk"]
    # The vectors are the passages' own: embedding their text again gives them back.
    ref = emb.encode(b.passages["text"].tolist(), count=False)
    np.testing.assert_allclose((ref * b.vectors).sum(axis=1), 1.0, atol=1e-4)

    # Rebuilding with two notes changed embeds only their passages, in parallel too.
    changed = notes.copy()
    changed.loc[[5, 100], "text"] = changed.loc[[5, 100], "text"] + " New small effusion."
    calls: list[int] = []
    remove = add_encode_hook(calls.append)
    try:
        r3 = build_index(make_table(changed), tmp_path / "parallel", parallel, progress=False, embedder=emb)
    finally:
        remove()
    c = NotesIndex.load(tmp_path / "parallel")
    fresh = c.passages["note_id"].isin(changed.loc[[5, 100], "note_id"]).to_numpy()
    assert sum(calls) == r3.embedded == fresh.sum() and r3.reused == len(c.passages) - fresh.sum()
    np.testing.assert_allclose(c.vectors[~fresh], b.vectors[b.passages["note_id"].isin(
        changed.loc[~changed.index.isin([5, 100]), "note_id"]).to_numpy()], rtol=0, atol=0)
