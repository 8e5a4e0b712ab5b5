"""Per-patient ARDS ranking and context building.

For each patient, every passage is scored against the configured queries (``retrieval.queries``,
embedded once per :class:`Retriever`) by cosine similarity on the patient's own slice of the
index (exact; see :meth:`ards_rag.index.NotesIndex.patient_scores`). The per-query scores are
fused into one relevance score by ``retrieval.fusion``:

- ``mean`` (default): the mean cosine over all queries. A passage ranks high when it is close to
  the ARDS picture as a whole (bilateral opacities *and* ventilation *and* ...), rather than to one
  phrase; on the synthetic cohort it hits every positive patient at 340 tokens where ``max``
  misses 7% (BENCHMARKS.md).
- ``max``: the best cosine over the queries. A passage matching any one ARDS facet ranks high,
  including generic ones ("intubated for respiratory failure").
- ``mean_top2``: the mean of a passage's two best query cosines.
- ``rrf``: reciprocal-rank fusion within the patient, ``sum_q 1 / (60 + rank_q)``.

``benchmarks/retrieval_quality.py`` compares them on a synthetic cohort (results in BENCHMARKS.md).
With ``retrieval.reranker`` set to a local cross-encoder folder, the ``retrieval.candidates`` best
passages are re-scored by it (max over queries) and re-ordered.

Selection: passages in decreasing score; a passage is skipped when its cosine to one already
chosen exceeds ``retrieval.dedup_threshold`` (copy-forward text), or when it no longer fits the
token budget, which is measured in the LLM's tokenizer and includes headers and separators; the
final context is re-counted and never exceeds the budget. The chosen passages are then laid out
in time order, grouped by note under one header per note, ``[Note 3 | 2180-05-02 | Radiology]``
(note number within the patient, date, type). Passages start at their section's header line
(``IMPRESSION: ...``), so the section is visible at the start of each; a window from the middle of
a long section is prefixed ``(FINDINGS, cont.)``. Overlapping windows of one note are merged.
Keeping the section out of the bracket and one bracket per note leaves more of a small budget
(340 SmolLM2 tokens by default) to note text.

``retrieval.compact`` (off by default: no gain measured on the synthetic cohort, BENCHMARKS.md)
spends that budget on findings rather than layout: in the context, each passage loses the
sections named in ``retrieval.drop_sections`` (``TECHNIQUE``, ``COMPARISON``: boilerplate), rule
lines (``____``), runs of spaces and blank lines; a passage with nothing left is not chosen.
Passages are costed as they will be printed, and the evidence shown to users keeps the
passage's own text. ``retrieval.day_in_header`` puts the day since the
patient's first note in each header instead of the date (``[Note 3 | day 2 | Radiology]``): how
far apart the notes lie, which a small model cannot work out from dates, in 8 fewer tokens (a
SmolLM2 token per digit). Dates stay in the evidence that ``retrieve`` and ``predict`` show.

``retrieval.train_views`` (1 by default: unmeasured) gives each training patient more than one
context: every view after the first is built as above with each passage left out of the ranking
with probability ``retrieval.view_dropout``, seeded by the config seed, the view and the patient
(:meth:`Retriever.view`). Oversampled patients then repeat with other evidence. Validation, test
and ``predict`` always read the one full context.

``retrieval.strategy: truncate`` is the seed workflow instead: all of the patient's notes as
``Note 1: ... Note 2: ...``, cut to the same budget (head kept; ``truncate_tail`` keeps the end).
"""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
import re
import signal
import warnings
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .chunking import available_cores
from .config import Config
from .errors import ConfigError, ModelError
from .index import NotesIndex

FUSIONS = ("max", "mean", "mean_top2", "rrf")
STRATEGIES = ("retrieval", "truncate", "truncate_tail")
SEPARATOR = "\n\n"
RRF_K = 60
# With retrieval.workers 0 (auto), contexts are built in worker processes from this many patients,
# on machines with at least PARALLEL_MIN_CORES cores (on 2 cores, the in-process build already
# keeps both busy: the tokenizer's own threads, and scoring on the CPU).
PARALLEL_MIN_PATIENTS = 64
PARALLEL_MIN_CORES = 4
MAX_CONTEXT_WORKERS = 16


# ------------------------------------------------------------------------------ token counting


class TokenCounter:
    """Counts tokens in the LLM's tokenizer: a Hugging Face tokenizer or a ``count(text)`` callable.

    Counts exclude special tokens (BOS/EOS belong to the prompt, whose overhead
    ``prompt.context_budget`` already subtracts).
    """

    def __init__(self, tokenizer: Any) -> None:
        if isinstance(tokenizer, TokenCounter):
            self._tok, self._fn = tokenizer._tok, tokenizer._fn
            return
        if hasattr(tokenizer, "encode") and callable(tokenizer) and hasattr(tokenizer, "convert_ids_to_tokens"):
            self._tok, self._fn = tokenizer, None
        elif callable(tokenizer):
            self._tok, self._fn = None, tokenizer
        else:
            raise ConfigError(f"tokenizer: expected a Hugging Face tokenizer or a callable, got {type(tokenizer).__name__}")

    def count(self, text: str) -> int:
        """Tokens of ``text``."""
        if self._fn is not None:
            return int(self._fn(text))
        return len(self._tok(text, add_special_tokens=False, verbose=False)["input_ids"])

    def counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text (one batched call for a HF tokenizer)."""
        if not texts:
            return []
        if self._fn is not None:
            return [int(self._fn(t)) for t in texts]
        enc = self._tok(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
        return [len(e) for e in enc]

    def cut(self, text: str, budget: int, side: str = "head") -> str:
        """The longest head (or tail) of ``text`` within ``budget`` tokens (cut at a token end)."""
        if budget <= 0 or not text:
            return ""
        if self.count(text) <= budget:
            return text
        if self._tok is not None and getattr(self._tok, "is_fast", False):
            offs = self._tok(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)[
                "offset_mapping"
            ]
            guess = text[: offs[budget - 1][1]] if side == "head" else text[offs[-budget][0] :]
            # Re-tokenizing a cut string can merge differently; shrink until it fits.
            while guess and self.count(guess) > budget:
                guess = guess[: -max(1, len(guess) // 200)] if side == "head" else guess[max(1, len(guess) // 200) :]
            return guess
        lo, hi = 0, len(text)  # binary search on characters: count() is monotone in length
        while lo < hi:
            mid = (lo + hi + 1) // 2
            part = text[:mid] if side == "head" else text[len(text) - mid :]
            if self.count(part) <= budget:
                lo = mid
            else:
                hi = mid - 1
        return text[:lo] if side == "head" else text[len(text) - lo :]


# ------------------------------------------------------------------------------- the context


@dataclass
class PatientContext:
    """The context built for one patient (DESIGN.md contract).

    ``passages``: dicts ``note_id, note_seq, charttime, note_type, section, score, text,
    n_tokens`` (LLM tokens the passage added: its text, plus the note header and a separator
    for the first passage of a note), strongest first. For the
    truncation strategies each included note (possibly cut) is one entry with ``score`` None.
    """

    patient_id: str
    text: str
    passages: list[dict[str, Any]]
    context_tokens: int
    budget: int
    strategy: str
    label: bool | None = None
    n_candidates: int = 0  # passages (or notes) the patient has
    dropped_duplicates: int = 0

    @property
    def note_ids(self) -> list[str]:
        """Distinct note ids present in the context."""
        return list(dict.fromkeys(p["note_id"] for p in self.passages))

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-serializable (``retrieve --json``)."""
        return {
            "patient_id": self.patient_id,
            "label": self.label,
            "strategy": self.strategy,
            "budget": self.budget,
            "context_tokens": self.context_tokens,
            "n_candidates": self.n_candidates,
            "dropped_duplicates": self.dropped_duplicates,
            "passages": self.passages,
            "context": self.text,
        }

    def to_record(self) -> dict[str, Any]:
        """The ``retrieve --all`` JSONL record: patient_id, context_tokens, passages."""
        return {
            "patient_id": self.patient_id,
            "context_tokens": self.context_tokens,
            "passages": [
                {"note_id": p["note_id"], "score": p["score"], "section": p["section"], "text": p["text"]}
                for p in self.passages
            ],
        }


DROP_SECTIONS = ("TECHNIQUE", "COMPARISON", "COMPARISONS")
_RULE_LINE = re.compile(r"(?m)^[ \t]*[_=*~-]{5,}[ \t]*(?:\n|$)")
_SPACES = re.compile(r"[ \t]{2,}")
_BLANK_LINES = re.compile(r"[ \t]*\n(?:[ \t]*\n)+")


def compact_text(text: str, drop_sections: Sequence[str] = DROP_SECTIONS) -> str:
    """``text`` as the LLM context shows it with ``retrieval.compact``: the sections named in
    ``drop_sections`` (case-insensitive) removed, rule lines (``_____``, ``-----``) removed, runs
    of spaces or tabs cut to one space, blank lines removed, ends stripped. May be empty."""
    return _compact(text, _section_set(drop_sections))


def _section_set(names: Sequence[str]) -> frozenset[str]:
    return frozenset(n.strip().upper() for n in names)


def _compact(text: str, drop: frozenset[str]) -> str:
    from .chunking import find_sections

    if drop:
        secs = find_sections(text)
        keep = [
            text[a : (secs[k + 1][0] if k + 1 < len(secs) else len(text))]
            for k, (a, name) in enumerate(secs)
            if name.upper() not in drop
        ]
        text = "".join(keep)
    text = _RULE_LINE.sub("", text)
    text = _SPACES.sub(" ", text)
    text = _BLANK_LINES.sub("\n", text)
    return "\n".join(line.rstrip() for line in text.strip().split("\n"))


def passage_header(note_seq: int, charttime: str, note_type: str, section: str = "", day: int | None = None) -> str:
    """``[Note 3 | 2180-05-02 | Radiology | IMPRESSION]`` (empty fields left out); with ``day``,
    the day replaces the date: ``[Note 3 | day 2 | Radiology ...]``."""
    parts = [f"Note {int(note_seq) + 1}"]
    if day is not None:
        parts.append(f"day {int(day)}")
    elif charttime:
        parts.append(str(charttime)[:10])
    if note_type:
        parts.append(str(note_type))
    if section:
        parts.append(str(section))
    return "[" + " | ".join(parts) + "]"


def passage_label(section: str, text: str) -> str:
    """Text shown before a passage inside its note block: empty when the passage opens with its
    own section header (``IMPRESSION: ...``), else ``"(FINDINGS, cont.) "``."""
    if not section:
        return ""
    first = section.split(" / ")[0]
    if first.upper() in text[: len(first) + 40].upper():
        return ""
    return f"({section.split(' / ')[-1]}, cont.) "


def fuse(scores: np.ndarray, rule: str) -> np.ndarray:
    """Fuse an ``(n_passages, n_queries)`` cosine matrix into one score per passage (module doc)."""
    if scores.shape[0] == 0:
        return np.zeros(0, dtype=np.float32)
    if rule == "max":
        return scores.max(axis=1)
    if rule == "mean":
        return scores.mean(axis=1)
    if rule == "mean_top2":
        k = min(2, scores.shape[1])
        return -np.sort(-scores, axis=1)[:, :k].mean(axis=1)
    if rule == "rrf":
        ranks = (-scores).argsort(axis=0).argsort(axis=0) + 1
        return (1.0 / (RRF_K + ranks)).sum(axis=1).astype(np.float32)
    raise ConfigError(f"retrieval.fusion: {rule!r} is not one of {', '.join(FUSIONS)}")


def select_passages(
    rows: pd.DataFrame,
    scores: np.ndarray,
    vectors: np.ndarray | None,
    budget: int,
    counter: TokenCounter,
    dedup_threshold: float | None = 0.95,
    min_score: float | None = None,
    *,
    compact: bool = False,
    drop_sections: Sequence[str] = DROP_SECTIONS,
    day_in_header: bool = False,
    exclude: np.ndarray | None = None,
) -> tuple[str, list[dict[str, Any]], int, int]:
    """Pick passages by score within ``budget`` LLM tokens; returns ``(text, chosen, tokens, dups)``.

    ``rows``: the patient's passages (columns of ``passages.parquet``), ``scores`` and
    ``vectors`` aligned with them (``vectors`` None: no de-duplication). ``chosen`` is strongest
    first. The text groups the chosen passages by note, in time order: one header per note
    (``[Note 3 | 2180-05-02 | Radiology]``), then its passages in reading order; a passage that
    does not open with its section header is prefixed ``(FINDINGS, cont.)``; overlapping windows
    of one note are merged. A passage's cost is its text plus, for the first one of a note, the
    header and separator; the real count of the final text is checked and never exceeds ``budget``.
    ``compact``, ``drop_sections``, ``day_in_header``: see the module doc (``chosen`` keeps each
    passage's own text either way). ``exclude``: a mask of passages never chosen (a training
    view); the day numbers still count from the patient's first note.
    """
    order = np.argsort(-scores, kind="stable")
    if min_score is not None:
        order = order[scores[order] >= min_score]
    if exclude is not None:
        order = order[~exclude[order]]
    seq = rows["note_seq"].to_numpy()
    start = rows["char_start"].to_numpy()
    end = rows["char_end"].to_numpy()
    note_ids = rows["note_id"].astype(str).tolist()
    texts = rows["text"].tolist()
    sections = rows["section"].astype(str).tolist()
    days: dict[str, int | None] = dict.fromkeys(note_ids)
    if day_in_header:
        times = pd.to_datetime(rows["charttime"], errors="coerce")
        if times.notna().any():
            days = {nid: (None if pd.isna(t) else int((t - times.min()).days))
                    for nid, t in zip(note_ids, times, strict=True)}
    headers = {
        nid: passage_header(s_, c, t, day=days[nid])
        for nid, s_, c, t in zip(note_ids, seq, rows["charttime"], rows["note_type"], strict=True)
    }

    drop = _section_set(drop_sections)

    def shown(i: int) -> str:
        label = passage_label(sections[i], texts[i])
        if not compact:
            return label + texts[i]
        if label and sections[i].split(" / ")[-1].upper() in drop:  # a window inside a dropped section
            return ""
        return _compact(label + texts[i], drop)

    sep = counter.count(SEPARATOR) if budget > 0 else 0
    chosen: list[int] = []
    notes_in: set[str] = set()
    header_tokens: dict[str, int] = {}
    block_tokens: dict[int, int] = {}
    used = 0
    dups = 0
    batch = 16
    pending = list(order)
    while pending and budget - used > 0:
        head, pending = pending[:batch], pending[batch:]
        head_text = [shown(i) for i in head]
        head = [i for i, t in zip(head, head_text, strict=True) if t]
        counts = counter.counts([t for t in head_text if t])
        new_notes = [note_ids[i] for i in head if note_ids[i] not in header_tokens]
        for nid, n_h in zip(new_notes, counter.counts([headers[n] + "\n" for n in new_notes]), strict=True):
            header_tokens[nid] = n_h
        for i, n_tok in zip(head, counts, strict=True):
            nid = note_ids[i]
            cost = n_tok + (sep if chosen else 0) + (0 if nid in notes_in else header_tokens[nid])
            if cost > budget - used:
                continue
            if vectors is not None and chosen and dedup_threshold is not None:
                if float((vectors[chosen] @ vectors[i]).max()) > dedup_threshold:
                    dups += 1
                    continue
            chosen.append(int(i))
            notes_in.add(nid)
            block_tokens[int(i)] = cost
            used += cost
        batch = min(batch * 2, 128)

    def render(sel: list[int]) -> str:
        blocks: list[str] = []
        by_note: dict[str, list[int]] = {}
        for i in sorted(sel, key=lambda i: (seq[i], note_ids[i], start[i])):
            by_note.setdefault(note_ids[i], []).append(i)
        for nid, members in by_note.items():
            parts: list[str] = []
            last_end = -1
            for i in members:
                if parts and start[i] < last_end:  # overlapping window of the same note: extend
                    if end[i] > last_end:
                        parts[-1] += texts[i][last_end - start[i] :]
                else:
                    parts.append(passage_label(sections[i], texts[i]) + texts[i])
                last_end = max(last_end, int(end[i]))
            if compact:
                parts = [c for c in (_compact(p_, drop) for p_ in parts) if c]
            if parts:
                blocks.append(headers[nid] + "\n" + SEPARATOR.join(parts))
        return SEPARATOR.join(blocks)

    text = render(chosen)
    total = counter.count(text) if chosen else 0
    # Token merges across block boundaries can make the whole differ from the sum; drop the
    # weakest passages until the real count fits.
    while total > budget and chosen:
        chosen.pop()
        text = render(chosen)
        total = counter.count(text) if chosen else 0
    out = []
    for i in chosen:
        out.append(
            {
                "note_id": note_ids[i],
                "note_seq": int(seq[i]),
                "charttime": str(rows["charttime"].iloc[i]),
                "note_type": str(rows["note_type"].iloc[i]),
                "section": sections[i],
                "score": round(float(scores[i]), 6),
                "n_tokens": int(block_tokens[i]),
                "text": texts[i],
            }
        )
    return text, out, total, dups


def truncate_context(
    notes_of_patient: pd.DataFrame, budget: int, tokenizer: Any, side: str = "head"
) -> tuple[str, list[dict[str, Any]], int]:
    """The seed's context: all notes as ``Note 1: ... Note 2: ...`` cut to ``budget`` tokens.

    ``notes_of_patient``: the patient's notes (``note_id``, ``text``; ordered by ``note_seq`` if
    present). ``side="head"`` keeps the beginning, ``"tail"`` the end. Returns ``(text,
    included, tokens)``: ``included`` lists each note with any part in the text (``text`` = that
    part, ``score`` None).
    """
    counter = TokenCounter(tokenizer)
    df = notes_of_patient
    if "note_seq" in df.columns:
        df = df.sort_values("note_seq", kind="stable")
    pieces = [f"Note {k}: {str(t).strip()}" for k, t in enumerate(df["text"], start=1)]
    full = " ".join(pieces)
    cut = counter.cut(full, budget, side="head" if side == "head" else "tail")
    # Which notes made it in (character spans of each piece in ``full``).
    spans, pos = [], 0
    for piece in pieces:
        spans.append((pos, pos + len(piece)))
        pos += len(piece) + 1
    lo, hi = (0, len(cut)) if side == "head" else (len(full) - len(cut), len(full))
    included = []
    for (a, b), (_, r) in zip(spans, df.iterrows(), strict=True):
        if b > lo and a < hi and cut:
            part = full[max(a, lo) : min(b, hi)]
            included.append(
                {
                    "note_id": str(r["note_id"]),
                    "note_seq": int(r.get("note_seq", 0)),
                    "charttime": str(r.get("charttime", "") or ""),
                    "note_type": str(r.get("note_type", "") or ""),
                    "section": "",
                    "score": None,
                    "n_tokens": counter.count(part),
                    "text": part,
                }
            )
    return cut, included, counter.count(cut) if cut else 0


# -------------------------------------------------------------------------------- retriever


class Retriever:
    """Builds patients' contexts from an index (see module doc).

    ``tokenizer``: the LLM's tokenizer (HF) or a ``count(text) -> int`` callable; ``budget``:
    context tokens (default: ``retrieval.context_tokens`` if an integer, else
    ``prompt.context_budget(cfg, tokenizer)``). The queries are embedded once, here, with the
    embedder the index was built with.
    """

    def __init__(
        self,
        index: NotesIndex,
        cfg: Config,
        tokenizer: Any,
        budget: int | None = None,
        *,
        embedder: Any = None,
    ) -> None:
        sec = cfg.get("retrieval", {})
        self.index = index
        self.cfg = cfg
        self.strategy = str(sec.get("strategy", "retrieval"))
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"retrieval.strategy: {self.strategy!r} is not one of {', '.join(STRATEGIES)}")
        self.fusion = str(sec.get("fusion", "mean"))
        fuse(np.zeros((1, 1), np.float32), self.fusion)  # validates the rule name
        self.dedup_threshold = sec.get("dedup_threshold", 0.95)
        self.min_score = sec.get("min_score")
        self.candidates = int(sec.get("candidates", 64))
        # A run's saved config without these keys predates them: its contexts were built without.
        self.compact = bool(sec.get("compact", False))
        drop = sec.get("drop_sections", list(DROP_SECTIONS))
        if not isinstance(drop, list) or not all(isinstance(d, str) for d in drop):
            raise ConfigError("retrieval.drop_sections: give a list of section names, e.g. [TECHNIQUE, COMPARISON]")
        self.drop_sections = tuple(drop)
        self.day_in_header = bool(sec.get("day_in_header", False))
        self.view_dropout = 0.0  # set by view(): the share of passages a training view leaves out
        self.view_seed: tuple[int, ...] = ()
        workers = sec.get("workers", 0)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ConfigError(f"retrieval.workers must be an integer >= 0 (0: automatic), got {workers!r}")
        self.workers = workers
        self.counter = TokenCounter(tokenizer)
        self.budget = int(budget) if budget is not None else _default_budget(cfg, tokenizer)
        if self.budget <= 0:
            raise ConfigError(f"retrieval: the context budget must be positive (got {self.budget})")
        self.queries = [str(q) for q in sec.get("queries", [])]
        self.query_vectors: np.ndarray | None = None
        self.reranker = None
        if self.strategy == "retrieval":
            if not self.queries:
                raise ConfigError("retrieval.queries: give at least one query")
            emb = embedder or _index_embedder(index, cfg)
            self.query_vectors = emb.encode(self.queries)
            if self.query_vectors.shape[1] != index.faiss_index.d:
                raise ConfigError(
                    f"queries embedded in {self.query_vectors.shape[1]} dimensions, the index has {index.faiss_index.d}"
                )
            if sec.get("reranker"):
                self.reranker = _load_reranker(str(sec["reranker"]), str(cfg.get("embedder", {}).get("device", "auto")))

    def scores(self, patient_id: str) -> tuple[int, np.ndarray, np.ndarray]:
        """``(first_row, per_query, fused)`` relevance of each of the patient's passages."""
        assert self.query_vectors is not None
        first, per_query = self.index.patient_scores(patient_id, self.query_vectors)
        return first, per_query, fuse(per_query, self.fusion)

    def context(self, patient_id: str) -> PatientContext:
        """The context of one patient; UnknownPatientError if the index lacks it."""
        pid = str(patient_id)
        first, n = self.index.patient_rows(pid)
        label = self._label(pid)
        if self.strategy != "retrieval":
            notes = self.index.patient_notes(pid)
            side = "tail" if self.strategy == "truncate_tail" else "head"
            text, included, tokens = truncate_context(notes, self.budget, self.counter, side=side)
            return PatientContext(pid, text, included, tokens, self.budget, self.strategy, label, len(notes))
        _, per_query, fused = self.scores(pid)
        rows = self.index.passages.iloc[first : first + n]
        vectors = self.index.vectors[first : first + n]
        if self.reranker is not None and n:
            fused = self._rerank(rows, fused)
        exclude = None
        if self.view_dropout > 0 and n:
            rng = np.random.default_rng([*self.view_seed, zlib.crc32(pid.encode("utf-8"))])
            exclude = rng.random(n) < self.view_dropout
        text, chosen, tokens, dups = select_passages(
            rows, fused, vectors, self.budget, self.counter, self.dedup_threshold, self.min_score,
            compact=self.compact, drop_sections=self.drop_sections, day_in_header=self.day_in_header,
            exclude=exclude,
        )
        return PatientContext(pid, text, chosen, tokens, self.budget, self.strategy, label, n, dups)

    def view(self, dropout: float, seed: int, view: int) -> Retriever:
        """A copy that builds training view ``view`` (>= 1): each passage of a patient is left
        out with probability ``dropout``, drawn from ``(seed, view, patient id)``, so a view is
        the same on every run and machine. ConfigError for a dropout outside [0, 1) or a
        truncation strategy (nothing to leave out)."""
        if self.strategy != "retrieval":
            raise ConfigError(f"retrieval.train_views needs strategy retrieval (got {self.strategy!r})")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ConfigError(f"retrieval.view_dropout must be in [0, 1) (got {dropout!r})")
        out = copy.copy(self)
        out.view_dropout = float(dropout)
        out.view_seed = (int(seed), int(view))
        return out

    def contexts(self, patient_ids: Iterable[str] | None = None) -> list[PatientContext]:
        """Contexts of many patients (default: all in the index), in the order given; built in
        :meth:`context_workers` processes."""
        return list(self.iter_contexts(patient_ids))

    def iter_contexts(self, patient_ids: Iterable[str] | None = None) -> Iterator[PatientContext]:
        """Like :meth:`contexts`, one at a time, in order.

        With more than one worker, the patients are handed to forked processes, which share the
        loaded index and tokenizer with this one and work ahead of the caller; each context is
        the one :meth:`context` returns. An error of a worker (an unknown patient id) is raised
        here, at that patient's turn.
        """
        ids = self.index.patient_ids() if patient_ids is None else [str(p) for p in patient_ids]
        workers = self.context_workers(len(ids))
        if workers <= 1:
            for p in ids:
                yield self.context(p)
            return
        # Forked children may not use the Rust tokenizer's thread pool once the parent has; saying
        # so up front spares the "process just got forked" warning (a user's own setting wins).
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        with warnings.catch_warnings():
            # Python 3.12 warns about fork() in a process with threads (torch's, the tokenizer's):
            # the children run only this module's Python, numpy and the tokenizer, never them.
            warnings.simplefilter("ignore", DeprecationWarning)
            pool = multiprocessing.get_context("fork").Pool(
                workers, initializer=_init_context_worker, initargs=(self,))
        try:
            chunk = max(1, min(16, len(ids) // (workers * 8)))
            yield from pool.imap(_context_in_worker, ids, chunksize=chunk)
        finally:
            pool.terminate()
            pool.join()

    def context_workers(self, n_patients: int) -> int:
        """Processes that build ``n_patients`` contexts: ``retrieval.workers``, or with 0 (auto)
        one per available core up to 16, from 64 patients and 4 cores on. 1 (in this process)
        where fork() is unavailable or a reranker runs (a model that may sit on a GPU, which a
        forked child cannot use)."""
        if n_patients < 2 or self.reranker is not None:
            return 1
        if "fork" not in multiprocessing.get_all_start_methods():
            return 1
        if self.workers:
            return min(self.workers, n_patients)
        cores = available_cores()
        if n_patients < PARALLEL_MIN_PATIENTS or cores < PARALLEL_MIN_CORES:
            return 1
        return min(cores, MAX_CONTEXT_WORKERS)

    def _label(self, pid: str) -> bool | None:
        i = self.index._pos[pid]
        v = self.index.patients["label"].iloc[i]
        return None if pd.isna(v) else bool(v)

    def _rerank(self, rows: pd.DataFrame, fused: np.ndarray) -> np.ndarray:
        top = np.argsort(-fused, kind="stable")[: self.candidates]
        texts = rows["text"].tolist()
        pairs = [(q, texts[i]) for i in top for q in self.queries]
        ce = np.asarray(self.reranker.predict(pairs, show_progress_bar=False), dtype=np.float32)
        ce = ce.reshape(len(top), len(self.queries)).max(axis=1)
        out = np.full_like(fused, -np.inf, dtype=np.float32)
        # Re-ranked candidates first (by cross-encoder score), the rest after, in embedding order.
        out[top] = ce
        rest = np.setdiff1d(np.arange(len(fused)), top)
        if len(rest):
            out[rest] = float(ce.min()) - 1.0 - np.argsort(np.argsort(-fused[rest])) * 1e-6
        return out


_WORKER_RETRIEVER: Retriever | None = None


def _init_context_worker(retriever: Retriever) -> None:
    """Pool initializer (in a forked child): keep the inherited retriever; Ctrl-C is the
    parent's to handle (it terminates the pool)."""
    global _WORKER_RETRIEVER
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A forked child has none of the parent's threads. Where the parent has set tokenizer
    # parallelism on (the user, or embedding.py on a GPU) and already used it, the Rust
    # tokenizer's batch calls would wait forever on that missing thread pool (seen on a 16-core
    # host); it reads this variable on every call, so the child counts serially.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _WORKER_RETRIEVER = retriever


def _context_in_worker(patient_id: str) -> PatientContext:
    assert _WORKER_RETRIEVER is not None
    return _WORKER_RETRIEVER.context(patient_id)


def _default_budget(cfg: Config, tokenizer: Any) -> int:
    value = cfg.get("retrieval", {}).get("context_tokens", "auto")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    from .prompt import context_budget

    return int(context_budget(cfg, tokenizer))


def _index_embedder(index: NotesIndex, cfg: Config) -> Any:
    """The embedder the index was built with, on the configured device."""
    from .embedding import load_embedder

    info = index.manifest.get("embedder", {})
    sec = cfg.get("embedder", {})
    path = info.get("path")
    name = path if path and Path(path).exists() else info.get("name", sec.get("model", "minilm"))
    return load_embedder(str(name), str(sec.get("device", "auto")), str(sec.get("dtype", "auto")))


def _load_reranker(path: str, device: str) -> Any:
    from sentence_transformers import CrossEncoder

    from .embedding import resolve_device

    if not Path(path).expanduser().exists():
        raise ModelError(f"retrieval.reranker: {path} is not a local folder; set it to a cross-encoder folder or null")
    try:
        return CrossEncoder(str(Path(path).expanduser()), device=resolve_device(device), local_files_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"retrieval.reranker: cannot load {path} ({str(exc).splitlines()[0][:120]})") from None


def open_retriever(
    index_dir: str | Path, cfg: Config, tokenizer: Any = None, budget: int | None = None
) -> Retriever:
    """Load the index at ``index_dir`` and the LLM tokenizer of ``cfg``; return a Retriever.

    The queries are embedded with the index's own embedder, so any index can be queried.
    """
    index = NotesIndex.load(index_dir)
    if tokenizer is None:
        from .models import load_tokenizer

        tokenizer = load_tokenizer(cfg)
    return Retriever(index, cfg, tokenizer, budget)


# ------------------------------------------------------------------------------- formatting


def format_context(ctx: PatientContext, preview_chars: int = 160) -> str:
    """Human-readable view of a context (``retrieve --patient-id``): ranked passages, then the text."""
    label = {True: "positive", False: "negative", None: "unlabeled"}[ctx.label]
    lines = [
        f"Patient {ctx.patient_id} ({label}): {len(ctx.passages)} of {ctx.n_candidates} "
        f"{'passages' if ctx.strategy == 'retrieval' else 'notes'} chosen, "
        f"{ctx.context_tokens} / {ctx.budget} context tokens, strategy {ctx.strategy}"
        + (f", {ctx.dropped_duplicates} near-duplicates dropped" if ctx.dropped_duplicates else ""),
        "",
        f"{'rank':>4}  {'score':>6}  {'tokens':>6}  {'note_id':<14} {'date':<10}  {'section':<20}  text",
    ]
    for k, p in enumerate(ctx.passages, start=1):
        score = "" if p["score"] is None else f"{p['score']:.3f}"
        snippet = " ".join(p["text"].split())
        if len(snippet) > preview_chars:
            snippet = snippet[: preview_chars - 3] + "..."
        lines.append(
            f"{k:>4}  {score:>6}  {p['n_tokens']:>6}  {p['note_id']:<14} {p['charttime'][:10]:<10}  "
            f"{p['section'][:20]:<20}  {snippet}"
        )
    lines += ["", "--- context given to the LLM (time order) ---", ctx.text]
    return "\n".join(lines)


def write_contexts_jsonl(
    retriever: Retriever,
    out_path: str | Path,
    patient_ids: Iterable[str] | None = None,
    progress: bool = True,
) -> int:
    """Write one JSON object per patient (:meth:`PatientContext.to_record`) to ``out_path``.

    Written to a temporary file and renamed into place. Returns the number of patients.
    """
    from tqdm.auto import tqdm

    from .fsutil import atomic_file

    ids = retriever.index.patient_ids() if patient_ids is None else [str(p) for p in patient_ids]
    n = 0

    def write(tmp: Path) -> None:
        nonlocal n
        with open(tmp, "w", encoding="utf-8") as fh:
            for ctx in tqdm(retriever.iter_contexts(ids), total=len(ids), desc="contexts", unit="patient",
                            disable=not progress, file=_stderr(), leave=False):
                fh.write(json.dumps(ctx.to_record(), ensure_ascii=False) + "\n")
                n += 1

    atomic_file(out_path, write)
    return n


def _stderr() -> Any:
    import sys

    return sys.stderr


__all__ = [
    "FUSIONS",
    "STRATEGIES",
    "PatientContext",
    "Retriever",
    "TokenCounter",
    "compact_text",
    "format_context",
    "fuse",
    "open_retriever",
    "passage_header",
    "select_passages",
    "truncate_context",
    "write_contexts_jsonl",
]
