"""Chunking: passages measured in the embedder's tokens, never crossing notes, split at sections."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from ards_rag.chunking import PASSAGE_COLUMNS, chunk_notes, find_sections  # noqa: E402
from ards_rag.embedding import resolve_embedder_path  # noqa: E402
from ards_rag.errors import ConfigError  # noqa: E402

LONG_FINDINGS = " ".join(
    f"Sentence {i} reports patchy bilateral opacities in the {['upper', 'middle', 'lower'][i % 3]} "
    f"zones, slightly {'worse' if i % 2 else 'better'} than on the prior study."
    for i in range(45)
)
RADIOLOGY = f"""EXAMINATION:  CHEST (PORTABLE AP)

INDICATION:  ___ year old man with sepsis, intubated.  Evaluate ETT position.

TECHNIQUE:  Single frontal view of the chest.

COMPARISON:  ___.

FINDINGS:
{LONG_FINDINGS}

IMPRESSION:
Diffuse bilateral airspace opacities, concerning for ARDS.
"""
FLAT = "Portable film. EXAMINATION: CHEST PA. FINDINGS: Clear lungs. IMPRESSION: No acute process."
# One "word" far longer than a passage: a window must be cut inside it.
NO_SPACES = "FINDINGS: " + "-".join(["opacity"] * 150) + " end."
UNICODE = "IMPRESSION: Opacités bilatérales diffuses — SDRA probable. Patient intubé, FiO2 80%."


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_embedder_path("minilm"))


@pytest.fixture(scope="module")
def notes() -> pd.DataFrame:
    rows = [
        ("p1", "n1", 0, "2180-05-01 10:00:00", "Radiology", RADIOLOGY),
        ("p1", "n2", 1, "2180-05-02 08:00:00", "Radiology", FLAT),
        ("p2", "n3", 0, "", "", NO_SPACES),
        ("p2", "n4", 1, "2180-06-01 00:00:00", "Echo", UNICODE),
        ("p3", "n5", 0, "2180-07-01 00:00:00", "Radiology", RADIOLOGY.replace("ARDS", "edema")),
    ]
    return pd.DataFrame(rows, columns=["patient_id", "note_id", "note_seq", "charttime", "note_type", "text"])


@pytest.mark.parametrize("max_tokens,overlap", [(128, 24), (32, 6), (256, 0)])
def test_passages_fit_the_embedder_and_stay_inside_their_note(tokenizer, notes, max_tokens, overlap):
    passages = chunk_notes(notes, tokenizer, max_tokens, overlap)
    assert list(passages.columns) == PASSAGE_COLUMNS
    by_id = notes.set_index("note_id")
    for p in passages.itertuples():
        note = by_id.loc[p.note_id]
        assert p.patient_id == note.patient_id
        # Never crosses notes: the text is exactly a slice of its own note.
        assert note.text[p.char_start : p.char_end] == p.text
        # Never longer than the limit, counted with [CLS]/[SEP], also when re-tokenized from text.
        assert p.n_tokens <= max_tokens
        assert len(tokenizer(p.text)["input_ids"]) <= max_tokens
    # Each patient's passages are contiguous and in note order.
    assert passages["patient_id"].tolist() == sorted(passages["patient_id"].tolist())
    firsts = passages.groupby("patient_id")["note_seq"].apply(lambda s: s.is_monotonic_increasing)
    assert firsts.all()


def test_every_token_of_a_note_is_in_some_passage(tokenizer, notes):
    passages = chunk_notes(notes, tokenizer, 48, 8)
    for nid, text in zip(notes["note_id"], notes["text"], strict=True):
        covered = [False] * len(text)
        for a, b in zip(*[passages.loc[passages.note_id == nid, c] for c in ("char_start", "char_end")], strict=True):
            covered[a:b] = [True] * (b - a)
        missed = "".join(ch for ch, c in zip(text, covered, strict=True) if not c and not ch.isspace())
        assert missed == ""


def test_long_sections_are_windowed_with_overlap_at_sentence_ends(tokenizer, notes):
    passages = chunk_notes(notes, tokenizer, 128, 24)
    findings = passages[(passages.note_id == "n1") & (passages.section == "FINDINGS")]
    assert len(findings) >= 4
    starts, ends = findings["char_start"].tolist(), findings["char_end"].tolist()
    for (a1, b1), (a2, b2) in zip(zip(starts, ends), zip(starts[1:], ends[1:]), strict=False):
        assert a1 < a2 < b1 < b2  # consecutive windows overlap
    # Windows end at a sentence end (a period) when the section has sentences.
    assert all(t.rstrip().endswith(".") for t in findings["text"].iloc[:-1])


def test_sections_are_named_and_short_headers_join_the_next(tokenizer, notes):
    passages = chunk_notes(notes, tokenizer, 128, 24)
    n1 = passages[passages.note_id == "n1"]
    assert n1["section"].iloc[-1] == "IMPRESSION"
    assert n1["text"].iloc[-1].startswith("IMPRESSION:")
    assert "ARDS" in n1["text"].iloc[-1]
    assert n1["section"].iloc[0].startswith("EXAMINATION")
    assert not (n1["section"] == "COMPARISON").any()  # a one-line section is not a passage alone
    assert [name for _, name in find_sections(FLAT)] == ["", "EXAMINATION", "FINDINGS", "IMPRESSION"]
    sep = chunk_notes(notes, tokenizer, 128, 24, min_tokens=0)
    assert {"EXAMINATION", "INDICATION", "TECHNIQUE", "COMPARISON", "FINDINGS", "IMPRESSION"} <= set(
        sep.loc[sep.note_id == "n1", "section"]
    )


def test_metadata_is_carried(tokenizer, notes):
    passages = chunk_notes(notes, tokenizer, 128, 24)
    row = passages[passages.note_id == "n4"].iloc[0]
    assert (row.patient_id, row.note_seq, row.charttime, row.note_type) == ("p2", 1, "2180-06-01 00:00:00", "Echo")
    assert passages.groupby("note_id")["note_hash"].nunique().eq(1).all()
    # Same text, same hash: copy-forward duplicates can share vectors.
    a = chunk_notes(notes.assign(note_id=notes.note_id + "x"), tokenizer, 128, 24)
    assert a["note_hash"].tolist() == passages["note_hash"].tolist()


def test_bad_parameters_are_refused(tokenizer, notes):
    with pytest.raises(ConfigError, match="max_tokens"):
        chunk_notes(notes, tokenizer, 4096, 24)
    with pytest.raises(ConfigError, match="overlap_tokens"):
        chunk_notes(notes, tokenizer, 64, 40)
    with pytest.raises(ConfigError, match="text"):
        chunk_notes(notes.drop(columns="text"), tokenizer, 64, 8)


def test_parallel_chunking_gives_identical_passages(tokenizer, notes):
    from ards_rag.chunking import ChunkParams, chunk_notes_with_ids

    many = pd.concat([notes.assign(note_id=notes.note_id + f"-{k}") for k in range(6)], ignore_index=True)
    one, ids1 = chunk_notes_with_ids(many, tokenizer, ChunkParams(64, 8, 24), workers=1)
    two, ids2 = chunk_notes_with_ids(many, tokenizer, ChunkParams(64, 8, 24), workers=2, batch_size=4)
    pd.testing.assert_frame_equal(one, two)
    assert len(ids1) == len(ids2) == len(one)
    assert all(np.array_equal(a, b) for a, b in zip(ids1, ids2, strict=True))
    # The token ids are the note's tokens: [CLS] + ids + [SEP] is what the embedder reads.
    for row, ids in zip(one.itertuples(), ids1, strict=True):
        assert len(ids) + 2 == row.n_tokens


def test_worker_start_arguments_fit_a_pipe_buffer(tokenizer, notes, monkeypatch):
    """A spawned worker reads its start arguments only after importing the caller's main module;
    arguments larger than a pipe's buffer (64 KiB) would hold the parent until then, so workers
    would start one after another. The tokenizer therefore goes to them as a file."""
    import concurrent.futures
    import pickle

    from ards_rag.chunking import ChunkParams, chunk_notes_with_ids

    seen: list[tuple] = []
    real = concurrent.futures.ProcessPoolExecutor

    def recording(*args, **kwargs):
        seen.append(kwargs["initargs"])
        return real(*args, **kwargs)

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", recording)
    many = pd.concat([notes.assign(note_id=notes.note_id + f"-{k}") for k in range(3)], ignore_index=True)
    one, _ = chunk_notes_with_ids(many, tokenizer, ChunkParams(64, 8, 24), workers=1)
    two, _ = chunk_notes_with_ids(many, tokenizer, ChunkParams(64, 8, 24), workers=2, batch_size=4)
    pd.testing.assert_frame_equal(one, two)
    assert len(seen) == 1 and len(pickle.dumps(seen[0])) < 64 * 1024
    assert not os.path.exists(seen[0][0])  # the tokenizer file is removed with the pool


@pytest.mark.timeout(180)
def test_parallel_chunking_after_the_embedder_ran_is_safe_and_identical(notes):
    """Worker processes started after torch (threads) and the tokenizer were used give the same
    passages as chunking in process, and do not hang (they are spawned, not forked)."""
    from ards_rag.chunking import ChunkParams, chunk_notes_with_ids, iter_chunks
    from ards_rag.embedding import load_embedder

    emb = load_embedder("minilm", device="cpu")
    emb.encode(["warm the model up: torch's thread pool is running now"], count=False)
    many = pd.concat([notes.assign(note_id=notes.note_id + f"-{k}") for k in range(60)], ignore_index=True)
    params = ChunkParams(64, 8, 24)
    one, ids1 = chunk_notes_with_ids(many, emb.tokenizer, params, workers=1)
    two, ids2 = chunk_notes_with_ids(many, emb.tokenizer, params, workers=2)
    pd.testing.assert_frame_equal(one, two)
    assert len(ids1) == len(ids2) == len(one) > len(many)
    assert all(np.array_equal(a, b) for a, b in zip(ids1, ids2, strict=True))
    # Parts come in order, each with its packed token ids; stopping early stops the workers.
    parts = iter_chunks(many, emb.tokenizer, params, workers=2)
    first, first_ids = next(parts)
    parts.close()
    pd.testing.assert_frame_equal(first, one.iloc[: len(first)])
    assert len(first_ids) == len(first)


def test_fast_ascii_tokenization_equals_the_rust_tokenizer(tokenizer):
    """The ASCII fast path gives exactly the ids and offsets of the tokenizer itself, also for
    control characters, added tokens written in the text, over-long words and batch edges."""
    from ards_rag.chunking import _encode_notes, _encode_slow, _raw_backend

    enc = _raw_backend(tokenizer)
    rng = np.random.default_rng(7)
    pieces = ["opacity", "ARDS", "FiO2", "80%", "(PEEP)", "x-ray", "s/p", "Unaffable", "tachypnea", " ", "  ",
              "\n", "\t", "\r\n", ".", ",", ":", "'", '"', "~", "`", "\\", "[CLS]", "[mask]", "[SEP", "\x00",
              "\x0b", "\x7f", "a" * 101, "b" * 100, "12345678901234", "___", "e.g.", "ETT", "IMPRESSION:"]
    texts = ["", " ", "\n\n", "a", "[UNK]"] + [
        "".join(rng.choice(pieces, size=int(rng.integers(1, 60)))) for _ in range(400)
    ]
    got = _encode_notes(texts, enc)
    want = _encode_slow(texts, enc)
    for (gi, go), (wi, wo) in zip(got, want, strict=True):
        assert gi.tolist() == wi.tolist()
        assert go.tolist() == wo.tolist()
