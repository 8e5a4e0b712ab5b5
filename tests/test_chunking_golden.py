"""Golden test: chunking gives exactly the passages and token ids frozen in tests/data.

The fixture was written by the chunking code of commit fe6361d (before the per-note speed-ups) on a
synthetic 20-patient cohort plus edge cases, for several parameter sets. It holds the note texts
themselves (so changes to the synthetic generator do not move it) and, per passage, its note,
section, offsets and token count, and per note a digest of its passages' token ids. Regenerate only for an intended
change of chunking output::

    .venv/bin/python tests/test_chunking_golden.py --write
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ards_rag.chunking import ChunkParams, chunk_notes_with_ids, note_hash  # noqa: E402
from ards_rag.embedding import resolve_embedder_path  # noqa: E402

FIXTURE = Path(__file__).parent / "data" / "chunking_golden.json.gz"
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
    """The cohort (generated; used only to write the fixture) plus the edge cases."""
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
    """What the fixture holds for one parameter set, from the current code."""
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
def golden() -> dict:
    with gzip.open(FIXTURE, "rt", encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def tokenizer():
    return _tokenizer()


@pytest.mark.parametrize("params", PARAMS, ids=_key)
def test_chunking_matches_the_golden_fixture(golden, tokenizer, params):
    notes = _frame(golden["texts"])
    got = chunk_summary(notes, tokenizer, params, workers=1)
    want = golden["results"][_key(params)]
    for col, values in want.items():
        assert got[col] == values, col


def test_golden_fixture_through_workers_and_small_batches(golden, tokenizer):
    notes = _frame(golden["texts"])
    params = PARAMS[1]
    assert chunk_summary(notes, tokenizer, params, workers=2, batch_size=7) == golden["results"][_key(params)]


def test_note_hashes_match(golden):
    assert [note_hash(t) for t in golden["texts"]] == golden["note_hashes"]


def write_fixture() -> None:
    """Write the fixture from the current code."""
    notes = golden_notes()
    tok = _tokenizer()
    out = {"texts": notes["text"].tolist(), "note_hashes": [note_hash(t) for t in notes["text"]],
           "results": {_key(p): chunk_summary(notes, tok, p, workers=1) for p in PARAMS}}
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(FIXTURE, "wt", encoding="utf-8", compresslevel=9) as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
    print(f"{FIXTURE}: {FIXTURE.stat().st_size} bytes, {len(notes)} notes, "
          + ", ".join(f"{k}: {len(v['note'])} passages" for k, v in out["results"].items()))


if __name__ == "__main__" and "--write" in sys.argv:
    write_fixture()
