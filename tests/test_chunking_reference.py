"""Reference test: the ASCII fast path changes nothing in chunking's output.

A synthetic 20-patient cohort plus edge cases (empty, header-only, many-window, unicode, CRLF,
very long words ...) is chunked twice for several parameter sets: as shipped, and with the fast
path switched off so that every note goes through the Hugging Face tokenizer itself (the
reference). Passages (note, section, offsets, token counts) and each note's token ids must be
identical; every passage's text must be the exact slice of its note and carry the note's hash.
Nothing is stored: chunk output is generated data and is not kept in the repository.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ards_rag import chunking
from ards_rag.chunking import ChunkParams, chunk_notes_with_ids, note_hash
from ards_rag.embedding import resolve_embedder_path

PARAMS = [ChunkParams(128, 24, 24), ChunkParams(64, 8, 24), ChunkParams(32, 6, 0), ChunkParams(256, 0, 24),
          ChunkParams(128, 0, 0)]

_LONG = " ".join(
    f"Sentence {i} reports patchy bilateral opacities in the {['upper', 'middle', 'lower'][i % 3]} zones, "
    f"slightly {'worse' if i % 2 else 'better'} than on the prior study." for i in range(200)
)
EDGE_CASES = [
    "",
    "   \n\t  ",
    "x",
    "FINDINGS:",
    "FINDINGS:\nIMPRESSION:\n",
    "EXAMINATION: CHEST\nINDICATION:\nTECHNIQUE:\nCOMPARISON:\nFINDINGS:\nIMPRESSION:\n",
    f"EXAMINATION:  CHEST (PORTABLE AP)\n\nFINDINGS:\n{_LONG}\n\nIMPRESSION:\nDiffuse opacities, ARDS.\n",
    _LONG,
    _LONG.replace(". ", ".\n"),
    "Portable film. EXAMINATION: CHEST PA. FINDINGS: Clear lungs. IMPRESSION: No acute process.",
    "FINDINGS: " + "-".join(["opacity"] * 400) + " end.",
    "FINDINGS: " + "a" * 5000 + " end.",
    "FINDINGS: " + "1234567890" * 300,
    "IMPRESSION: Opacités bilatérales diffuses — SDRA probable. Patient intubé, FiO2 80%. " * 30,
    "印象：双肺弥漫性磨玻璃影，考虑急性呼吸窘迫综合征。" * 40,
    "肺" * 600,
    "Lungenentzündungsverdachtsdiagnose" * 3 + " " + "αβγδεζηθ" * 12 + " 🫁🫁 ok. " * 20,
    "FINDINGS:\r\nClear lungs.\r\n\r\nIMPRESSION:\r\nNormal.\r\n",
    "." * 700,
    "no sentence ends here just words " * 60,
    "  Leading spaces. FINDINGS : spaced colon. A/B: X. WET READ: yes. ASSESSMENT AND PLAN: go.",
    "IMPRESSION: " + "word " * 20 + "\n" * 5 + "PLAN: " + "x. " * 300,
]


def golden_notes() -> pd.DataFrame:
    """The cohort plus the edge cases."""
    from ards_rag.synthetic import generate_cohort

    cohort, _ = generate_cohort(n_patients=20, seed=3)
    texts = cohort["text"].astype(str).tolist() + EDGE_CASES
    return _frame(texts)


def _frame(texts: list[str]) -> pd.DataFrame:
    n = len(texts)
    return pd.DataFrame({"patient_id": [f"P{i // 10:03d}" for i in range(n)], "note_id": [f"N{i:04d}" for i in range(n)],
                         "note_seq": [i % 10 for i in range(n)], "text": texts})


def _ids_per_note(notes_col: list[int], ids, n_notes: int) -> list[str]:
    """One digest per note of its passages' token ids (lengths included); "" for no passage."""
    per: list[hashlib.blake2b | None] = [None] * n_notes
    for r, a in zip(notes_col, ids, strict=True):
        if per[r] is None:
            per[r] = hashlib.blake2b(digest_size=8)
        a = np.asarray(a, dtype=np.int32)
        per[r].update(np.int64(len(a)).tobytes() + a.tobytes())
    return [h.hexdigest() if h is not None else "" for h in per]


def chunk_summary(notes: pd.DataFrame, tokenizer, params: ChunkParams, **kw) -> dict[str, list]:
    """Passages and per-note token-id digests of one chunking run (and its invariants checked)."""
    table, ids = chunk_notes_with_ids(notes, tokenizer, params, **kw)
    row_of = {nid: i for i, nid in enumerate(notes["note_id"])}
    texts = notes["text"].tolist()
    notes_col = [row_of[n] for n in table["note_id"]]
    # The passage text is the exact slice of its note.
    for r, a, b, t, h in zip(notes_col, table["char_start"], table["char_end"], table["text"], table["note_hash"],
                             strict=True):
        assert texts[r][a:b] == t
        assert h == note_hash(texts[r])
    return {
        "note": notes_col,
        "section": table["section"].tolist(),
        "char_start": table["char_start"].astype(int).tolist(),
        "char_end": table["char_end"].astype(int).tolist(),
        "n_tokens": table["n_tokens"].astype(int).tolist(),
        "ids": _ids_per_note(notes_col, ids, len(texts)),
    }


def _key(p: ChunkParams) -> str:
    return f"{p.max_tokens}-{p.overlap_tokens}-{p.min_tokens}"


def _tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_embedder_path("minilm"))


@pytest.fixture(scope="module")
def notes() -> pd.DataFrame:
    return golden_notes()


@pytest.fixture(scope="module")
def tokenizer():
    return _tokenizer()


def reference_summary(notes: pd.DataFrame, tokenizer, params: ChunkParams) -> dict[str, list]:
    """The same chunking with the ASCII fast path off: every note through the tokenizer."""
    with mock.patch.object(chunking, "_fast_spec", lambda encoder: None):
        return chunk_summary(notes, tokenizer, params, workers=1)


@pytest.mark.parametrize("params", PARAMS, ids=_key)
def test_chunking_matches_the_tokenizer_reference(notes, tokenizer, params):
    got = chunk_summary(notes, tokenizer, params, workers=1)
    want = reference_summary(notes, tokenizer, params)
    assert sum(len(t) for t in notes["text"]) > 100_000 and len(want["note"]) > 500  # a real workload
    for col, values in want.items():
        assert got[col] == values, col


def test_reference_through_workers_and_small_batches(notes, tokenizer):
    params = PARAMS[1]
    assert chunk_summary(notes, tokenizer, params, workers=2, batch_size=7) == reference_summary(
        notes, tokenizer, params)


def test_note_hashes_are_stable():
    # Index folders store these hashes to re-embed only changed notes: they must never drift.
    assert note_hash("FINDINGS: Diffuse bilateral airspace opacities.") == "67e362583947e9b8d5bc7d9f"
    assert note_hash("") == "b8e1dda3ac0aa3820ad2990b"
    assert len({note_hash(t) for t in EDGE_CASES}) == len(set(EDGE_CASES))


def test_the_fast_path_is_what_is_compared(tokenizer):
    # Otherwise both sides of the reference test would run the same code.
    assert chunking._fast_spec(chunking._raw_backend(tokenizer)) is not None
    assert chunking.fast_path_active(tokenizer)
    with mock.patch.object(chunking, "_fast_spec", lambda encoder: None):
        assert not chunking.fast_path_active(tokenizer)
