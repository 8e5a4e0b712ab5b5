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
import itertools
import os
import re
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .embedding import PackedIds
from .errors import ConfigError

if TYPE_CHECKING:  # pandas is imported where used: spawned chunking workers do without it
    import pandas as pd

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
    if ":" not in text:  # every header ends with a colon; the scan below costs far more
        return out
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

    ``workers``: processes that chunk parts of the notes in parallel (0: one per CPU core but one,
    up to 16, for tables of more than ``PARALLEL_MIN_NOTES`` notes; 1: in this process). Results
    are identical.
    """
    import pandas as pd

    parts = list(iter_chunks(notes, tokenizer, params, batch_size=batch_size, hashes=hashes, workers=workers))
    if not parts:
        return pd.DataFrame(columns=PASSAGE_COLUMNS), []
    table = pd.concat([p for p, _ in parts], ignore_index=True) if len(parts) > 1 else parts[0][0]
    return table, [a for _, ids in parts for a in ids]


# Below this many notes, starting worker processes (each imports numpy and loads the tokenizer,
# about a second) costs more than it saves.
PARALLEL_MIN_NOTES = 5_000
# Notes per part: small enough that the first parts reach the embedder early, large enough that
# per-part overheads (pickling, a DataFrame) stay small.
PART_NOTES = 2_048


def default_workers(n_notes: int) -> int:
    """Chunking processes used for ``n_notes`` notes when ``workers=0``: 1 (in process) for small
    tables, else one per available core but one (left to the process that embeds), up to 16."""
    if n_notes < PARALLEL_MIN_NOTES:
        return 1
    return max(1, min(available_cores() - 1, 16))


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def iter_chunks(
    notes: pd.DataFrame,
    tokenizer: Any,
    params: ChunkParams,
    *,
    batch_size: int = 512,
    hashes: Sequence[str] | None = None,
    workers: int = 0,
    stats: dict[str, float] | None = None,
) -> Iterator[tuple[pd.DataFrame, PackedIds]]:
    """Chunk ``notes`` part by part, in order: yields ``(passages, token_ids)`` per part.

    ``stats``, when given, receives ``chunk_busy`` (seconds spent chunking, summed over the
    processes that did it) and ``chunk_first_part`` (seconds until the first part was ready,
    worker start-up included): busy time far below ``workers x`` wall time means the workers
    waited.

    ``token_ids`` holds each passage's content token ids (a :class:`PackedIds`: ``len``,
    indexing and iteration as a list of arrays). With ``workers > 1`` the parts are chunked by
    worker processes ahead of the consumer, so a caller can embed one part while the next ones
    are being chunked. The workers are *spawned* (fresh interpreters that load the tokenizer from
    its JSON), never forked: this process may already run threads (torch, CUDA, the tokenizer's
    own pool), and forking those can deadlock. Close the iterator (or exhaust it) to stop them.
    """
    import pandas as pd

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

    def frame(part: _Part) -> tuple[pd.DataFrame, PackedIds]:
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
        workers = default_workers(len(texts))
    encoder = _raw_backend(tokenizer)
    step = PART_NOTES
    if workers > 1 and encoder is not None and len(texts) > 1:
        step = max(64, min(PART_NOTES, -(-len(texts) // (workers * 2))))
        parts = _chunk_parallel(texts, encoder.to_str(), params, budget, n_special, batch_size, workers, step)
    else:
        enc = encoder if encoder is not None else tokenizer
        parts = (
            _timed_chunk(texts[lo : lo + step], lo, enc, params, budget, n_special, batch_size)
            for lo in range(0, len(texts), step)
        )
    t0 = time.perf_counter()
    busy = 0.0
    try:
        for part, seconds in parts:
            busy += seconds
            if stats is not None:
                stats.setdefault("chunk_first_part", time.perf_counter() - t0)
                stats["chunk_busy"] = busy
            yield frame(part)
    finally:
        close = getattr(parts, "close", None)
        if close is not None:
            close()


_Part = tuple[np.ndarray, dict[str, list[str]], dict[str, np.ndarray], PackedIds]


def _chunk_texts(
    texts: Sequence[str], row0: int, encoder: Any, params: ChunkParams, budget: int, n_special: int,
    batch_size: int,
) -> _Part:
    """Chunk ``texts`` (rows ``row0 ..``): (rows, string columns, number columns, token ids).

    ``encoder`` is a ``tokenizers.Tokenizer`` without truncation or padding (fast) or a
    transformers tokenizer.
    """
    rows: list[int] = []
    sections: list[str] = []
    out_texts: list[str] = []
    nums: dict[str, list[int]] = {"char_start": [], "char_end": [], "n_tokens": []}
    all_ids: list[np.ndarray] = []
    for b0 in range(0, len(texts), batch_size):
        batch = list(texts[b0 : b0 + batch_size])
        for j, (ids, offs) in enumerate(_encode_notes(batch, encoder)):
            n = len(ids)
            if not n:
                continue
            text = batch[j]
            secs = find_sections(text)
            if n <= budget and len(secs) == 1:
                # One section that fits one window (the common case): what _note_spans would give.
                spans: list[tuple[str, int, int, bool]] = [(secs[0][1], 0, n, False)]
            else:
                spans = _note_spans(text, offs, params, budget, secs)
            for sec, a, b, hard in spans:
                cs, ce = int(offs[a, 0]), int(offs[b - 1, 1])
                while hard and b - a > 1 and _n_tokens(encoder, text[cs:ce]) > budget:
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
        PackedIds.from_sequences(all_ids),
    )


def _encode_notes(texts: list[str], encoder: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """Content token ids (int32) and character offsets (``(n, 2)`` int64) of each of ``texts``,
    exactly as ``encoder`` gives them (no special tokens).

    With a BERT WordPiece backend (MiniLM's), plain-ASCII notes take a fast path that gives the
    same tokens: words and punctuation are found with numpy over the whole batch and each distinct
    word is tokenized once per process (cached), since the Rust tokenizer's per-character
    normalization and per-token Python objects cost several times more than the rest of chunking.
    Other notes, and other tokenizers, go through ``encoder`` itself.
    """
    out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(texts)
    spec = _fast_spec(encoder)
    if spec is not None:
        ascii_rows = [i for i, t in enumerate(texts) if t.isascii()]
        if ascii_rows:
            for i, pair in zip(ascii_rows, _encode_ascii([texts[i] for i in ascii_rows], encoder, spec),
                               strict=True):
                out[i] = pair
    rest = [i for i, pair in enumerate(out) if pair is None]
    if rest:
        for i, pair in zip(rest, _encode_slow([texts[i] for i in rest], encoder), strict=True):
            out[i] = pair
    return out  # type: ignore[return-value]


def _encode_slow(texts: list[str], encoder: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    if hasattr(encoder, "encode_batch"):
        # The Rust tokenizer directly: the transformers wrapper's per-item dicts cost more
        # than the tokenization itself.
        encs = encoder.encode_batch(texts, add_special_tokens=False)
        pairs = [(e.ids, e.offsets) for e in encs]
    else:
        enc = encoder(texts, add_special_tokens=False, return_offsets_mapping=True,
                      return_attention_mask=False, return_token_type_ids=False, verbose=False)
        pairs = list(zip(enc["input_ids"], enc["offset_mapping"], strict=True))
    return [(np.asarray(i, dtype=np.int32), np.asarray(o, dtype=np.int64).reshape(-1, 2)) for i, o in pairs]


@dataclass
class _FastSpec:
    """What the ASCII fast path needs to know of a BERT WordPiece tokenizer."""

    lowercase: bool
    specials: tuple[str, ...]  # added tokens, matched in the raw text before normalization
    words: dict[str, tuple[int, ...]]  # word -> (id, start, end) per token, offsets in the word


_FAST_SPECS: dict[int, tuple[Any, _FastSpec | None]] = {}
_WORD_CACHE_MAX = 1_000_000
# Character classes of ASCII bytes, as the BERT normalizer and pre-tokenizer see them: 0 white
# space (split), 1 letter or digit (word), 2 punctuation (a token of its own), 3 anything else
# (control characters, removed by the normalizer: those notes take the slow path).
_ASCII_CLASS = np.full(256, 3, dtype=np.uint8)
_ASCII_CLASS[[9, 10, 13, 32]] = 0
_ASCII_CLASS[33:127] = 2
for _c in range(128):
    if chr(_c).isalnum():
        _ASCII_CLASS[_c] = 1
_WORD_RE = re.compile(r"[A-Za-z0-9]+|[^A-Za-z0-9\s]")


def fast_path_active(tokenizer: Any) -> bool:
    """Whether ASCII notes are chunked with the WordPiece fast path for ``tokenizer`` (a
    transformers fast BERT tokenizer), rather than through the tokenizer's own path."""
    backend = _raw_backend(tokenizer)
    return backend is not None and _fast_spec(backend) is not None


def _fast_spec(encoder: Any) -> _FastSpec | None:
    """The fast-path description of ``encoder`` if it is a BERT WordPiece ``tokenizers.Tokenizer``."""
    key = id(encoder)
    if key not in _FAST_SPECS:
        spec = None
        if hasattr(encoder, "encode_batch") and hasattr(encoder, "to_str"):
            import json

            try:
                cfg = json.loads(encoder.to_str())
            except Exception:  # noqa: BLE001 - no fast path then
                cfg = {}
            norm, pre, model = cfg.get("normalizer") or {}, cfg.get("pre_tokenizer") or {}, cfg.get("model") or {}
            if (
                norm.get("type") == "BertNormalizer"
                and norm.get("clean_text", True)
                and pre.get("type") == "BertPreTokenizer"
                and model.get("type") == "WordPiece"
            ):
                lower = bool(norm.get("lowercase", True))
                spec = _FastSpec(lower, tuple(t["content"] for t in cfg.get("added_tokens") or [] if t.get("content")), {})
        _FAST_SPECS[key] = (encoder, spec)  # keep the encoder alive so its id stays unique
    return _FAST_SPECS[key][1]


def _encode_ascii(texts: list[str], encoder: Any, spec: _FastSpec) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """Tokens of ASCII ``texts`` as the BERT tokenizer gives them; None for a note it cannot do
    (control characters, or an added token such as ``[CLS]`` written in the text)."""
    joined = "\n".join(texts)
    if spec.lowercase:
        joined = joined.lower()
    cls = _ASCII_CLASS[np.frombuffer(joined.encode("ascii"), dtype=np.uint8)]
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    bases = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(lengths + 1, out=bases[1:])
    bad = np.flatnonzero(cls == 3)
    skip = set((np.searchsorted(bases, bad, side="right") - 1).tolist()) if len(bad) else set()
    for tok in spec.specials:
        needle = tok.lower() if spec.lowercase else tok
        at = joined.find(needle)
        while at >= 0:
            skip.add(int(np.searchsorted(bases, at, side="right")) - 1)
            at = joined.find(needle, at + 1)
    if skip:  # rare: redo the batch without those notes
        keep = [i for i in range(len(texts)) if i not in skip]
        done = _encode_ascii([texts[i] for i in keep], encoder, spec) if keep else []
        out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(texts)
        for i, pair in zip(keep, done, strict=True):
            out[i] = pair
        return out

    # Word starts: a punctuation character is a word; so is a run of letters and digits.
    word = cls == 1
    prev_word = np.zeros_like(word)
    prev_word[1:] = word[:-1]
    w_starts = np.flatnonzero((cls == 2) | (word & ~prev_word))
    words = _WORD_RE.findall(joined)
    if len(words) != len(w_starts):  # cannot happen for text that passed the checks above
        return [None] * len(texts)

    cache = spec.words
    missing = {w for w in set(words) if w not in cache}
    if missing:
        if len(cache) + len(missing) > _WORD_CACHE_MAX:
            cache.clear()
        miss = sorted(missing)
        for w, e in zip(miss, encoder.encode_batch(miss, add_special_tokens=False), strict=True):
            cache[w] = tuple(v for i, (a, b) in zip(e.ids, e.offsets, strict=True) for v in (i, a, b))
    toks = [cache[w] for w in words]
    per_word = np.fromiter(map(len, toks), dtype=np.int64, count=len(toks)) // 3
    flat = np.fromiter(itertools.chain.from_iterable(toks), dtype=np.int64, count=int(per_word.sum()) * 3)
    flat = flat.reshape(-1, 3)
    base = np.repeat(w_starts, per_word)
    ids = flat[:, 0].astype(np.int32)
    offs = np.empty((len(flat), 2), dtype=np.int64)
    offs[:, 0] = base + flat[:, 1]
    offs[:, 1] = base + flat[:, 2]
    # Tokens of note k: those starting in [bases[k], bases[k + 1]); offsets relative to the note.
    cut = np.searchsorted(offs[:, 0], bases, side="left")
    return [
        (ids[cut[k] : cut[k + 1]], offs[cut[k] : cut[k + 1]] - bases[k])
        for k in range(len(texts))
    ]


_BACKENDS: dict[int, Any] = {}


def _raw_backend(tokenizer: Any) -> Any:
    """A copy of a fast tokenizer's Rust backend without truncation or padding (or None)."""
    key = id(tokenizer)
    if key not in _BACKENDS:
        backend = getattr(tokenizer, "_tokenizer", None)
        if backend is not None:
            try:
                backend = _backend_from_json(backend.to_str())
            except Exception:  # noqa: BLE001 - fall back to the transformers wrapper
                backend = None
        _BACKENDS[key] = (tokenizer, backend)  # keep the tokenizer alive so its id stays unique
    return _BACKENDS[key][1]


def _backend_from_json(tokenizer_json: str) -> Any:
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer_json)
    backend.no_truncation()
    backend.no_padding()
    return backend


# State of a chunking worker process, set once by _init_worker.
_WORKER_STATE: dict[str, Any] = {}


def _init_worker(tokenizer_file: str, params: ChunkParams, budget: int, n_special: int, batch_size: int) -> None:
    # One worker per core: the tokenizer's own thread pool would only oversubscribe them.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    with open(tokenizer_file, encoding="utf-8") as fh:
        encoder = _backend_from_json(fh.read())
    _WORKER_STATE.update(encoder=encoder, params=params, budget=budget, n_special=n_special,
                         batch_size=batch_size)


def _timed_chunk(texts: Sequence[str], row0: int, *args: Any) -> tuple[_Part, float]:
    """:func:`_chunk_texts` and the seconds it took."""
    t = time.perf_counter()
    part = _chunk_texts(texts, row0, *args)
    return part, time.perf_counter() - t


def _chunk_worker(task: tuple[list[str], int]) -> tuple[_Part, float]:
    texts, row0 = task
    st = _WORKER_STATE
    return _timed_chunk(texts, row0, st["encoder"], st["params"], st["budget"], st["n_special"], st["batch_size"])


def _chunk_parallel(
    texts: list[str], tokenizer_json: str, params: ChunkParams, budget: int, n_special: int, batch_size: int,
    workers: int, step: int,
) -> Iterator[tuple[_Part, float]]:
    """Chunk parts of ``step`` notes of ``texts`` in spawned worker processes, yielding them in order.

    At most ``3 * workers`` parts are queued or waiting to be consumed (bounded memory). A worker
    that dies (e.g. killed for memory) raises instead of leaving the build waiting forever.
    """
    import multiprocessing as mp
    import tempfile
    from concurrent.futures import Future, ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    # The workers get the tokenizer as a file, not as an argument: a spawned process reads its
    # arguments only after importing the caller's main module, and an argument larger than a
    # pipe's buffer (a tokenizer's JSON is ~0.5 MB) holds the parent until then, so the workers
    # would start one after another (~0.45 s each on the H100 machine: 6.7 s for 15).
    tmp_dir = tempfile.TemporaryDirectory(prefix="ards-rag-chunk-")
    tokenizer_file = os.path.join(tmp_dir.name, "tokenizer.json")
    with open(tokenizer_file, "w", encoding="utf-8") as fh:
        fh.write(tokenizer_json)
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                               initargs=(tokenizer_file, params, budget, n_special, batch_size))
    starts = iter(range(0, len(texts), step))
    pending: deque[Future[tuple[_Part, float]]] = deque()

    def submit() -> None:
        lo = next(starts, None)
        if lo is not None:
            pending.append(pool.submit(_chunk_worker, (texts[lo : lo + step], lo)))

    try:
        for _ in range(3 * workers):
            submit()
        while pending:
            try:
                part = pending.popleft().result()
            except BrokenProcessPool as exc:
                raise RuntimeError(
                    f"a chunking worker process died ({exc}); set chunking.workers: 1 to chunk in process"
                ) from None
            submit()
            yield part
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        tmp_dir.cleanup()


def _n_tokens(encoder: Any, text: str) -> int:
    if hasattr(encoder, "encode_batch"):
        return len(encoder.encode(text, add_special_tokens=False).ids)
    return len(encoder(text, add_special_tokens=False, verbose=False)["input_ids"])


_ASCII_ALNUM = np.array([chr(i).isalnum() for i in range(128)], dtype=bool)


def _col(df: pd.DataFrame, name: str, default: Any) -> pd.Series:
    import pandas as pd

    if name in df.columns:
        return df[name]
    return pd.Series([default] * len(df), index=df.index)


def _note_spans(
    text: str, offs: np.ndarray, params: ChunkParams, budget: int,
    sections: list[tuple[int, str]] | None = None,
) -> list[tuple[str, int, int, bool]]:
    """Token spans ``(section, first, end, cut_inside_a_word)`` of one note (``sections``: its
    :func:`find_sections`, computed here when not given)."""
    starts = offs[:, 0]
    n = len(starts)
    if sections is None:
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
