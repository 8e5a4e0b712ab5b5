"""Which passage ranker carries most of the label into the context: out-of-fold context ceilings.

    python benchmarks/ranker_ceiling.py --index /tmp/i400 --config configs/smollm2-full-1024.yaml \\
        --prompt-tokens 1024,2048 --rankers queries,lexical_abs,embedding_abs

For every labeled patient of an index, 5-fold cross-validation over patients (stratified, seed
0): in each fold, the rankers that learn (below) are fitted on the training folds' patients only,
every patient's context is built with each ranker through ``retrieval.select_passages`` (the
same budget, de-duplication and layout as ``ards-rag train``), and TF-IDF + logistic regression
(``baselines.tfidf_lr``) is fitted on the training folds' contexts and scores the held-out fold.
The out-of-fold scores of all patients give one AUROC and best-threshold F1 per ranker: how
much of the label each ranker's context carries (``quality_sweep.py``'s "context ceiling", on
every patient instead of one test split). ``all_notes`` is TF-IDF + LR on every note, the
reference the goal is set against.

Rankers (passage scores; the context takes passages by score until the budget):

- ``queries``: the configured ``retrieval.queries`` and ``fusion`` (what the product does).
- ``embedding_abs`` / ``embedding_pos``: logistic regression on the passage embeddings, each
  passage labeled with its patient's label (patients weighted equally, classes balanced); score
  ``|w.e + b|`` (evidence either way) or ``w.e + b``. A linear scorer is an inner-product query,
  so it would run through FAISS like the text queries.
- ``queries+embedding``: z-scored query score plus ``|w.e + b|`` over its spread.
- ``lexical_abs``: TF-IDF + LR fitted on the training patients' notes; a passage scores
  ``|tfidf(passage) . w|``, the part of that model's evidence it holds.
- ``section_impression``, ``section_indication_impression``: the query score plus 1 for passages
  of those sections (a timeline of reports' conclusions and reasons).
- ``compact``: the query ranker with ``retrieval.compact`` on; ``no_dedup``: without
  near-duplicate removal; ``time_order``: the first passages of the stay; ``truncate``: the seed
  workflow (all notes as ``Note 1: ...`` cut to the budget).
- ``queries+indications``: a digest of the distinct INDICATION lines of all the patient's notes
  (``indication_digest``, at most ``--digest-tokens``), then the query ranker's passages in what
  is left; ``indications``: the digest alone, given the whole budget.

Prints one JSON line per (prompt length, ranker).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

RANKERS = ("queries", "embedding_abs", "embedding_pos", "queries+embedding", "lexical_abs",
           "section_impression", "section_indication_impression", "compact", "no_dedup", "time_order",
           "truncate", "queries+indications", "indications")
SECTION_BOOSTS = {"section_impression": ("IMPRESSION",),
                  "section_indication_impression": ("INDICATION", "IMPRESSION")}


_INDICATION = re.compile(r"^INDICATION:[ \t]*(.+?)(?=\n[ \t]*\n|\n[A-Z][A-Z /()]+:|\Z)", re.M | re.S)
_AGE_SEX = re.compile(r"^(?:_+|\d+)?[- ]*(?:year[- ]old|y/?o|yo)?[ -]*(?:woman|man|female|male|[MF])?\b[ ,]*(?:with|w/)?\s*",
                      re.I)


def indication_digest(notes: Any, budget: int, counter: Any) -> str:
    """The distinct INDICATION lines of a patient's notes in time order (``day 3: ...``), cut to
    ``budget`` tokens: the reasons for every exam, which TF-IDF on all notes reads."""
    import pandas as pd

    times = pd.to_datetime(notes["charttime"], errors="coerce")
    first = times.min()
    seen: set[str] = set()
    lines: list[str] = []
    for text, t in zip(notes["text"].astype(str), times, strict=True):
        m = _INDICATION.search(text)
        if not m:
            continue
        line = _AGE_SEX.sub("", " ".join(m.group(1).split())).strip(" .")
        key = re.sub(r"[^a-z0-9]+", " ", line.lower()).strip()
        if not key or key in seen:
            continue
        seen.add(key)
        day = "" if pd.isna(t) or pd.isna(first) else f"day {int((t - first).days)}: "
        lines.append(day + line)
    out = "Reasons for the exams:"
    for line in lines:
        nxt = out + "\n" + line
        if counter.count(nxt) > budget:
            break
        out = nxt
    return out if lines else ""


def _zscore(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / (x.std() + 1e-6)


def embedding_scorer(index: Any, rows: dict[str, tuple[int, int]], train_ids: list[str],
                     labels: dict[str, int]) -> tuple[np.ndarray, float]:
    """Passage-level logistic regression on embeddings; each patient weighs 1, classes balanced."""
    from sklearn.linear_model import LogisticRegression

    xs, ys, ws = [], [], []
    for p in train_ids:
        a, n = rows[p]
        xs.append(index.vectors[a:a + n])
        ys.append(np.full(n, labels[p]))
        ws.append(np.full(n, 1.0 / max(n, 1)))
    x, y, w = np.concatenate(xs), np.concatenate(ys), np.concatenate(ws)
    w = w * np.where(y == 1, 0.5 / w[y == 1].sum(), 0.5 / w[y == 0].sum()) * len(train_ids)
    lr = LogisticRegression(C=1.0, max_iter=2000).fit(x, y, sample_weight=w)
    return lr.coef_[0].astype(np.float32), float(lr.intercept_[0])


def lexical_scorer(texts: list[str], y: np.ndarray) -> Callable[[list[str]], np.ndarray]:
    """TF-IDF + LR on whole patients; returns passages -> tfidf(passage) . w."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from ards_rag.baselines import _TOKEN_PATTERN

    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2, token_pattern=_TOKEN_PATTERN)
    lr = LogisticRegression(C=10, class_weight="balanced", max_iter=3000).fit(vec.fit_transform(texts), y)
    w = lr.coef_[0]
    return lambda passages: np.asarray(vec.transform(passages) @ w).ravel()


def comma_choices(ap: argparse.ArgumentParser, text: str, allowed: Iterable[str], what: str) -> list[str]:
    """The names of a comma list, in order; ``ap.error`` (exit 2) naming any not in ``allowed``."""
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        ap.error(f"unknown {what}: {', '.join(unknown)}")
    return names


def labeled_patients(index: Any) -> tuple[list[str], np.ndarray]:
    """The index's labeled patient ids and their labels (1 = ARDS), in index order."""
    lab = index.labels()
    lab = lab[lab["label"].notna()]
    return lab["patient_id"].astype(str).tolist(), lab["label"].astype(bool).astype(int).to_numpy()


def all_notes_text(index: Any, pids: list[str]) -> dict[str, str]:
    """Each patient's whole notes: the text of the evaluation's TF-IDF + LR baseline."""
    from ards_rag.evaluation import Evaluator

    texts = Evaluator.patient_texts(index)
    return {p: str(texts[p]) for p in pids}


def out_of_fold(texts: dict[str, str], pids: list[str], y: np.ndarray,
                folds: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """TF-IDF + LR scores of each patient's text, fitted on the other folds."""
    from ards_rag.baselines import tfidf_lr

    out = np.zeros(len(pids))
    for tr, te in folds:
        out[te] = tfidf_lr([texts[pids[i]] for i in tr], y[tr], [texts[pids[i]] for i in te])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", required=True, help="an index folder with labeled patients")
    ap.add_argument("--config", default=None, help="YAML config (queries, fusion, LLM tokenizer)")
    ap.add_argument("--prompt-tokens", default="1024", help="comma list of global_max_sequence_length values")
    ap.add_argument("--rankers", default=",".join(RANKERS), help=f"comma list of: {', '.join(RANKERS)}")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--digest-tokens", type=int, default=256,
                    help="tokens of the context given to the indications digest (queries+indications)")
    args = ap.parse_args(argv)
    rankers = comma_choices(ap, args.rankers, RANKERS, "rankers")

    from sklearn.metrics import f1_score, roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    from ards_rag.baselines import tfidf_lr
    from ards_rag.config import resolve_config
    from ards_rag.index import NotesIndex
    from ards_rag.models import load_tokenizer
    from ards_rag.retrieval import Retriever, select_passages, truncate_context

    index = NotesIndex.load(args.index)
    pids, y = labeled_patients(index)
    label_of = dict(zip(pids, y.tolist(), strict=True))
    rows = {p: index.patient_rows(p) for p in pids}
    notes_text = all_notes_text(index, pids)
    folds = list(StratifiedKFold(args.folds, shuffle=True, random_state=0).split(pids, y))

    def report(prompt: int, name: str, scores: np.ndarray, seconds: float, budget: int | None) -> None:
        best_f1 = max(f1_score(y, scores >= t) for t in np.unique(scores))
        print(json.dumps({"benchmark": "ranker_ceiling", "patients": len(pids), "positives": int(y.sum()),
                          "prompt_tokens": prompt, "context_budget": budget, "ranker": name,
                          "auroc": round(float(roc_auc_score(y, scores)), 4), "best_f1": round(float(best_f1), 4),
                          "seconds": round(seconds, 1)}), flush=True)

    for prompt in (int(v) for v in args.prompt_tokens.split(",")):
        cfg = resolve_config(args.config, {"ludwig": {"preprocessing": {"global_max_sequence_length": prompt}}})
        retriever = Retriever(index, cfg, load_tokenizer(cfg))
        query_scores = {p: retriever.scores(p)[2] for p in pids}

        def context(p: str, scores: np.ndarray, *, compact: bool = False, dedup: bool = True,
                    budget: int | None = None) -> str:
            a, n = rows[p]
            text, *_ = select_passages(index.passages.iloc[a:a + n], scores, index.vectors[a:a + n],
                                       retriever.budget if budget is None else budget, retriever.counter,
                                       retriever.dedup_threshold if dedup else None, compact=compact)
            return text

        for name in rankers:
            t0 = time.perf_counter()
            out = np.zeros(len(pids))
            fixed: dict[str, str] | None = None  # contexts that do not depend on the fold
            for tr, te in folds:
                train_ids = [pids[i] for i in tr]
                texts: dict[str, str]
                if name in ("queries", "compact", "no_dedup", "time_order", "truncate", "queries+indications",
                            "indications") or name in SECTION_BOOSTS:
                    if fixed is None:
                        fixed = {}
                        for p in pids:
                            q = query_scores[p]
                            if name == "truncate":
                                fixed[p] = truncate_context(index.patient_notes(p), retriever.budget,
                                                            retriever.counter)[0]
                            elif name == "indications":
                                fixed[p] = indication_digest(index.patient_notes(p), retriever.budget,
                                                             retriever.counter)
                            elif name == "queries+indications":
                                digest = indication_digest(index.patient_notes(p), args.digest_tokens,
                                                           retriever.counter)
                                used = retriever.counter.count(digest + "\n\n") if digest else 0
                                text = context(p, q, budget=retriever.budget - used)
                                fixed[p] = (digest + "\n\n" + text) if digest else text
                            elif name == "time_order":
                                fixed[p] = context(p, -np.arange(len(q), dtype=np.float32))
                            elif name in SECTION_BOOSTS:
                                a, n = rows[p]
                                sec = index.passages["section"].iloc[a:a + n].astype(str).str.upper()
                                boost = np.zeros(n, np.float32)
                                for key in SECTION_BOOSTS[name]:
                                    boost = np.maximum(boost, sec.str.contains(key, regex=False).to_numpy(np.float32))
                                fixed[p] = context(p, q + boost)
                            else:
                                fixed[p] = context(p, q, compact=name == "compact", dedup=name != "no_dedup")
                    texts = fixed
                elif name == "lexical_abs":
                    lex = lexical_scorer([notes_text[p] for p in train_ids], y[tr])
                    texts = {}
                    for p in pids:
                        a, n = rows[p]
                        texts[p] = context(p, np.abs(lex(index.passages["text"].iloc[a:a + n].tolist())))
                else:
                    w, b = embedding_scorer(index, rows, train_ids, label_of)
                    texts = {}
                    for p in pids:
                        a, n = rows[p]
                        logit = index.vectors[a:a + n] @ w + b
                        s = {"embedding_abs": np.abs(logit), "embedding_pos": logit,
                             "queries+embedding": _zscore(query_scores[p]) + np.abs(logit) / (np.abs(logit).std() + 1e-6),
                             }[name]
                        texts[p] = context(p, s)
                out[te] = tfidf_lr([texts[pids[i]] for i in tr], y[tr], [texts[pids[i]] for i in te])
            report(prompt, name, out, time.perf_counter() - t0, retriever.budget)

    t0 = time.perf_counter()
    report(0, "all_notes", out_of_fold(notes_text, pids, y, folds), time.perf_counter() - t0, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
