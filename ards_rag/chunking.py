"""Cutting notes into passages measured in the embedder's own tokens.

Rules, in order of preference:

1. A passage never crosses notes.
2. A passage never holds more than ``max_tokens`` tokens of the embedder's tokenizer *including*
   its special tokens ([CLS], [SEP]), so the embedder never truncates it.
3. Notes are split at section headers (``EXAMINATION:``, ``INDICATION:``, ``FINDINGS:``,
   ``IMPRESSION:``, ... at the start of a line, or a known header anywhere); each passage keeps
   its section name. Sections shorter than ``min_tokens`` are joined to the following section
   (section names joined with ``" / "``) so that short header lines do not become passages of their own.
4. A section longer than the limit is cut into windows that end at a sentence end where one lies in
   the second half of the window (else at a word start), and consecutive windows overlap by about
   ``overlap_tokens`` tokens (the next window starts at a sentence or word start in that overlap).

Each note is tokenized once (fast tokenizer, in batches, with character offsets); passage text is
the exact slice ``text[char_start:char_end]`` of the note.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .errors import ConfigError

PASSAGE_COLUMNS = [
    "patient_id",
    "note_id",
    "note_seq",
    "charttime",
    "note_type",
    "section",
    "char_start",
    "char_end",
    "n_tokens",
    "text",
    "note_hash",
]

KNOWN_HEADERS = (
    "EXAMINATION",
    "EXAM",
    "INDICATION",
    "CLINICAL INDICATION",
    "HISTORY",
    "CLINICAL HISTORY",
    "REASON FOR EXAM",
    "REASON FOR EXAMINATION",
    "TECHNIQUE",
    "COMPARISON",
    "COMPARISONS",
    "FINDINGS",
    "IMPRESSION",
    "CONCLUSION",
    "CONCLUSIONS",
    "RECOMMENDATION",
    "RECOMMENDATIONS",
    "WET READ",
    "FINAL REPORT",
    "ADDENDUM",
    "ASSESSMENT",
    "PLAN",
    "ASSESSMENT AND PLAN",
    "HOSPITAL COURSE",
    "NOTIFICATION",
)
# A header: upper-case words followed by a colon, at the start of a line (generic), or one of the
# known radiology headers anywhere after whitespace (notes flattened onto one line).
_LINE_HEADER = r"(?m)^[ \t]*(?P<h1>[A-Z][A-Z0-9 /&()'-]{1,38}[A-Z)])[ \t]*:"
_KNOWN = "|".join(sorted((re.escape(h) for h in KNOWN_HEADERS), key=len, reverse=True))
_INLINE_HEADER = rf"(?:(?<=\s)|^)(?P<h2>{_KNOWN})[ \t]*:"
HEADER_RE = re.compile(f"{_LINE_HEADER}|{_INLINE_HEADER}")
# Where a new sentence starts: after . ! ? followed by space, or after a line break.
SENTENCE_RE = re.compile(r"(?<=[.!?])\s+(?=\S)|\n\s*(?=\S)")

PREAMBLE = ""


@dataclass(frozen=True)
class ChunkParams:
    """Chunking parameters; ``max_tokens`` counts the embedder's special tokens."""

    max_tokens: int = 128
    overlap_tokens: int = 24
    min_tokens: int = 24

    def as_dict(self) -> dict[str, int]:
        """Plain dict for the manifest."""
        return {
            "max_tokens": self.max_tokens,
            "overlap_tokens": self.overlap_tokens,
            "min_tokens": self.min_tokens,
        }


def note_hash(text: str) -> str:
    """Content hash of a note's text (what its passages and vectors depend on)."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()


def find_sections(text: str) -> list[tuple[int, str]]:
    """Start offsets and names of the sections of ``text``; the first starts at 0.

    Text before the first header is a section named ``""`` (the preamble).
    """
    out: list[tuple[int, str]] = [(0, PREAMBLE)]
    for m in HEADER_RE.finditer(text):
        name = (m.group("h1") or m.group("h2")).strip()
        if sum(c.isalpha() for c in name) < 3:
            continue
        start = m.start("h1") if m.group("h1") else m.start("h2")
        if start == 0:
            out[0] = (0, name)
        elif start > out[-1][0]:
            out.append((start, name))
    return out


def _special_count(tokenizer: Any) -> int:
    plain = tokenizer("note", add_special_tokens=False)["input_ids"]
    full = tokenizer("note", add_special_tokens=True)["input_ids"]
    return len(full) - len(plain)


def chunk_notes(
    notes: pd.DataFrame,
    tokenizer: Any,
    max_tokens: int = 128,
    overlap_tokens: int = 24,
    min_tokens: int = 24,
    *,
    batch_size: int = 512,
) -> pd.DataFrame:
    """Cut each note into passages (see module doc); returns the passages table of DESIGN.md.

    ``notes`` has the notes-table columns (``patient_id, note_id, note_seq, charttime, note_type,
    text``); ``tokenizer`` is the embedder's fast Hugging Face tokenizer. Rows keep the order of
    ``notes`` (sorted by patient, then note order), so each patient's passages are contiguous.
    ``n_tokens`` counts the passage's tokens plus the embedder's special tokens.
    """
    table, _ = chunk_notes_with_ids(
        notes, tokenizer, ChunkParams(max_tokens, overlap_tokens, min_tokens), batch_size=batch_size
    )
    return table


def chunk_notes_with_ids(
    notes: pd.DataFrame,
    tokenizer: Any,
    params: ChunkParams,
    *,
    batch_size: int = 512,
    hashes: Sequence[str] | None = None,
    workers: int = 0,
) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """Like :func:`chunk_notes`, also returning each passage's content token ids (no specials).

    ``workers``: processes that chunk parts of the notes in parallel (0: one per CPU core, up to
    16, for tables of more than 20,000 notes; 1: in this process). Results are identical.
    """
    parts = list(iter_chunks(notes, tokenizer, params, batch_size=batch_size, hashes=hashes, workers=workers))
    if not parts:
        return pd.DataFrame(columns=PASSAGE_COLUMNS), []
    table = pd.concat([p for p, _ in parts], ignore_index=True) if len(parts) > 1 else parts[0][0]
    return table, [a for _, ids in parts for a in ids]


def iter_chunks(
    notes: pd.DataFrame,
    tokenizer: Any,
    params: ChunkParams,
    *,
    batch_size: int = 512,
    hashes: Sequence[str] | None = None,
    workers: int = 0,
) -> Iterator[tuple[pd.DataFrame, list[np.ndarray]]]:
    """Chunk ``notes`` part by part, in order: yields ``(passages, token_ids)`` per part.

    With ``workers > 1`` the parts are chunked by forked processes ahead of the consumer, so a
    caller can embed one part while the next ones are being chunked.
    """
    n_special = _special_count(tokenizer)
    limit = getattr(tokenizer, "model_max_length", None)
    if limit is not None and limit < 100_000 and params.max_tokens > limit:
        raise ConfigError(
            f"chunking.max_tokens={params.max_tokens} exceeds the embedder tokenizer's limit {limit}"
        )
    budget = params.max_tokens - n_special
    if budget < 8:
        raise ConfigError(f"chunking.max_tokens={params.max_tokens} is too small (need >= {8 + n_special})")
    if not 0 <= params.overlap_tokens < budget // 2:
        raise ConfigError(
            f"chunking.overlap_tokens={params.overlap_tokens} must be >= 0 and < {budget // 2} "
            f"(half of max_tokens minus {n_special} special tokens)"
        )
    missing = [c for c in ("patient_id", "note_id", "text") if c not in notes.columns]
    if missing:
        raise ConfigError(f"notes table: missing column(s) {', '.join(missing)}")

    texts: list[str] = notes["text"].astype(str).tolist()
    if hashes is None:
        hashes = [note_hash(t) for t in texts]
    hash_arr = np.asarray(hashes, dtype=object)
    src = notes.reset_index(drop=True)
    meta = {
        "patient_id": src["patient_id"].astype(str).to_numpy(),
        "note_id": src["note_id"].astype(str).to_numpy(),
        "note_seq": _col(src, "note_seq", 0).astype(np.int64).to_numpy(),
        "charttime": _col(src, "charttime", "").fillna("").astype(str).to_numpy(),
        "note_type": _col(src, "note_type", "").fillna("").astype(str).to_numpy(),
    }

    def frame(part: _Part) -> tuple[pd.DataFrame, list[np.ndarray]]:
        rows, strs, nums, ids = part
        out = pd.DataFrame(
            {
                **{k: v[rows] for k, v in meta.items()},
                "section": strs["section"],
                "char_start": nums["char_start"],
                "char_end": nums["char_end"],
                "n_tokens": nums["n_tokens"],
                "text": strs["text"],
                "note_hash": hash_arr[rows],
            },
            columns=PASSAGE_COLUMNS,
        )
        return out, ids

    if workers <= 0:
        workers = min(os.cpu_count() or 1, 16) if len(texts) > 20_000 else 1
    if workers > 1 and len(texts) > 1:
        for part in _chunk_parallel(texts, tokenizer, params, budget, n_special, batch_size, workers):
            yield frame(part)
    elif texts:
        yield frame(_chunk_texts(texts, 0, tokenizer, params, budget, n_special, batch_size))


_Part = tuple[np.ndarray, dict[str, list[str]], dict[str, np.ndarray], list[np.ndarray]]


def _chunk_texts(
    texts: Sequence[str], row0: int, tokenizer: Any, params: ChunkParams, budget: int, n_special: int,
    batch_size: int,
) -> _Part:
    """Chunk ``texts`` (rows ``row0 ..``): (rows, string columns, number columns, token ids)."""
    rows: list[int] = []
    sections: list[str] = []
    out_texts: list[str] = []
    nums: dict[str, list[int]] = {"char_start": [], "char_end": [], "n_tokens": []}
    all_ids: list[np.ndarray] = []
    backend = _raw_backend(tokenizer)
    for b0 in range(0, len(texts), batch_size):
        batch = list(texts[b0 : b0 + batch_size])
        if backend is not None:
            # The Rust tokenizer directly: the transformers wrapper's per-item dicts cost more
            # than the tokenization itself.
            encs = backend.encode_batch(batch, add_special_tokens=False)
            pairs = [(e.ids, e.offsets) for e in encs]
        else:
            enc = tokenizer(batch, add_special_tokens=False, return_offsets_mapping=True,
                            return_attention_mask=False, return_token_type_ids=False, verbose=False)
            pairs = list(zip(enc["input_ids"], enc["offset_mapping"], strict=True))
        for j, (id_list, off_list) in enumerate(pairs):
            if not id_list:
                continue
            text = batch[j]
            ids = np.asarray(id_list, dtype=np.int32)
            offs = np.asarray(off_list, dtype=np.int64).reshape(-1, 2)
            for sec, a, b, hard in _note_spans(text, offs, params, budget):
                cs, ce = int(offs[a, 0]), int(offs[b - 1, 1])
                while hard and b - a > 1 and _n_tokens(tokenizer, text[cs:ce]) > budget:
                    b -= 1
                    ce = int(offs[b - 1, 1])
                rows.append(row0 + b0 + j)
                sections.append(sec)
                nums["char_start"].append(cs)
                nums["char_end"].append(ce)
                nums["n_tokens"].append(b - a + n_special)
                out_texts.append(text[cs:ce])
                all_ids.append(ids[a:b])
    return (
        np.asarray(rows, dtype=np.int64),
        {"section": sections, "text": out_texts},
        {k: np.asarray(v, dtype=np.int64) for k, v in nums.items()},
        all_ids,
    )


_BACKENDS: dict[int, Any] = {}


def _raw_backend(tokenizer: Any) -> Any:
    """A copy of a fast tokenizer's Rust backend without truncation or padding (or None)."""
    key = id(tokenizer)
    if key not in _BACKENDS:
        backend = getattr(tokenizer, "_tokenizer", None)
        if backend is not None:
            try:
                from tokenizers import Tokenizer

                backend = Tokenizer.from_str(backend.to_str())
                backend.no_truncation()
                backend.no_padding()
            except Exception:  # noqa: BLE001 - fall back to the transformers wrapper
                backend = None
        _BACKENDS[key] = (tokenizer, backend)  # keep the tokenizer alive so its id stays unique
    return _BACKENDS[key][1]


_WORKER_STATE: dict[str, Any] = {}


def _chunk_worker(args: tuple[int, int]) -> _Part:
    lo, hi = args
    st = _WORKER_STATE
    return _chunk_texts(st["texts"][lo:hi], lo, st["tokenizer"], st["params"], st["budget"], st["n_special"],
                        st["batch_size"])


def _chunk_parallel(
    texts: list[str], tokenizer: Any, params: ChunkParams, budget: int, n_special: int, batch_size: int,
    workers: int,
) -> Iterator[_Part]:
    """Chunk parts of ``texts`` in forked worker processes (they inherit the tokenizer and texts)."""
    import multiprocessing as mp

    step = max(batch_size, -(-len(texts) // (workers * 4)))
    bounds = [(lo, min(lo + step, len(texts))) for lo in range(0, len(texts), step)]
    _WORKER_STATE.update(texts=texts, tokenizer=tokenizer, params=params, budget=budget,
                         n_special=n_special, batch_size=batch_size)
    ctx = mp.get_context("fork")
    pool = ctx.Pool(workers)
    _WORKER_STATE.clear()  # the forked workers have their copy
    try:
        yield from pool.imap(_chunk_worker, bounds, chunksize=1)
    finally:
        pool.terminate()
        pool.join()


def _n_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


_ASCII_ALNUM = np.array([chr(i).isalnum() for i in range(128)], dtype=bool)


def _col(df: pd.DataFrame, name: str, default: Any) -> pd.Series:
    if name in df.columns:
        return df[name]
    return pd.Series([default] * len(df), index=df.index)


def _note_spans(
    text: str, offs: np.ndarray, params: ChunkParams, budget: int
) -> list[tuple[str, int, int, bool]]:
    """Token spans ``(section, first, end, cut_inside_a_word)`` of one note."""
    starts = offs[:, 0]
    n = len(starts)
    sections = find_sections(text)
    sec_chars = np.asarray([s for s, _ in sections], dtype=np.int64)
    # First token of each section (tokens are assigned by their start character).
    sec_tok = np.searchsorted(starts, sec_chars, side="left")
    bounds = list(zip(sec_tok.tolist(), [*sec_tok[1:].tolist(), n], (name for _, name in sections)))
    bounds = [(a, b, name) for a, b, name in bounds if b > a]
    # Join short sections to the next one while the union still fits one passage.
    merged: list[tuple[int, int, str]] = []
    for a, b, name in bounds:
        if merged:
            pa, pb, pname = merged[-1]
            if pb - pa < params.min_tokens and b - pa <= budget:
                merged[-1] = (pa, b, f"{pname} / {name}" if pname and name else (pname or name))
                continue
        merged.append((a, b, name))

    need_split = any(b - a > budget for a, b, _ in merged)
    if need_split:
        sent_chars = np.fromiter((m.end() for m in SENTENCE_RE.finditer(text)), dtype=np.int64)
        sent_tok = np.zeros(n + 1, dtype=bool)
        sent_tok[np.searchsorted(starts, sent_chars, side="left")] = True
        # A token starts a word when a gap (whitespace) separates it from the previous token.
        word_tok = np.ones(n + 1, dtype=bool)
        word_tok[1:n] = starts[1:] > offs[:-1, 1]
        sent_tok[n] = True
        word_tok |= sent_tok
        # Else a boundary between a letter/digit run and punctuation ("opacity-opacity").
        cp = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        alnum = (cp >= 128) | _ASCII_ALNUM[np.minimum(cp, 127)]
        punct_tok = np.ones(n + 1, dtype=bool)
        if n > 1:
            punct_tok[1:n] = ~alnum[starts[1:]] | ~alnum[offs[:-1, 1] - 1]
        punct_tok |= word_tok
        sent_idx = np.flatnonzero(sent_tok)
        word_idx = np.flatnonzero(word_tok)
        punct_idx = np.flatnonzero(punct_tok)
    spans: list[tuple[str, int, int, bool]] = []
    for a, b, name in merged:
        if b - a <= budget:
            spans.append((name, a, b, False))
            continue
        s = a
        hard_start = False
        while True:
            if b - s <= budget:
                spans.append((name, s, b, hard_start))
                break
            hi = s + budget
            lo = s + budget // 2
            end = _last_in(sent_idx, lo, hi) or _last_in(word_idx, lo, hi) or _last_in(punct_idx, lo, hi)
            hard = end is None
            end = end or hi
            # A window cut inside a word may re-tokenize longer from its text: flag it for a check.
            spans.append((name, s, end, hard or hard_start))
            ov_lo = max(s + 1, end - params.overlap_tokens)
            nxt = _first_in(sent_idx, ov_lo, end) or _first_in(word_idx, ov_lo, end) or _first_in(
                punct_idx, ov_lo, end
            )
            hard_start = nxt is None if params.overlap_tokens else hard
            nxt = nxt or ov_lo
            s = nxt if params.overlap_tokens else end
    return spans


def _last_in(idx: np.ndarray, lo: int, hi: int) -> int | None:
    """Largest value of sorted ``idx`` in ``(lo, hi]``, or None."""
    k = int(np.searchsorted(idx, hi, side="right")) - 1
    if k >= 0 and idx[k] > lo:
        return int(idx[k])
    return None


def _first_in(idx: np.ndarray, lo: int, hi: int) -> int | None:
    """Smallest value of sorted ``idx`` in ``[lo, hi)``, or None."""
    k = int(np.searchsorted(idx, lo, side="left"))
    if k < len(idx) and idx[k] < hi:
        return int(idx[k])
    return None
