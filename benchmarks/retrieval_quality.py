"""Evidence recall of the retrieved context on a synthetic cohort, against truncation and BM25.

    .venv/bin/python benchmarks/retrieval_quality.py --patients 50 --prevalence 0.6 --budgets auto,380,1500

Generates a cohort (``ards_rag.synthetic.write_cohort``: notes.csv + evidence.csv), indexes it
with the default config (the index folder is kept under ``--work`` so a rerun re-embeds nothing),
then for every positive patient builds a context of each strategy at each budget (LLM tokens) and
reports:

- ``patients_hit``: share of positive patients whose context contains at least one evidence note
  (non-``trap_*`` rows of evidence.csv);
- ``evidence_notes``: share of all their evidence notes that appear in the context;
- ``bilateral_hit``: share of positives whose context contains a ``bilateral_opacities`` note.

A note "appears" when any passage of it (for truncation: any part of it) is in the context.
Strategies: ``retrieval/<fusion>`` (the ranker, each fusion rule), ``truncate_head`` (the seed
workflow: notes from the first, cut to the budget), ``truncate_tail`` (the last notes),
``bm25`` (Okapi BM25 of the passages against the query words, same packing and de-duplication as
the ranker) and ``keywords`` (passages ranked by the number of ARDS keyword stems they contain,
same packing). The budget is counted in the LLM tokenizer (``--tokenizer``: the configured
SmolLM2 tokenizer through ``ards_rag.models.load_tokenizer``; the Llama-2 tokenizer is not
available offline, so the 1,500-token setting is counted with SmolLM2's tokenizer too).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ards_rag.config import resolve_config  # noqa: E402
from ards_rag.index import NotesIndex, build_index  # noqa: E402
from ards_rag.retrieval import FUSIONS, Retriever, TokenCounter, select_passages, truncate_context  # noqa: E402

WORD = re.compile(r"[a-z0-9]+")
STOP = {"the", "a", "an", "of", "on", "with", "and", "or", "not", "by", "to", "in", "for", "is", "are"}
KEYWORDS = ("ards", "respiratory distress", "bilateral", "diffuse", "opacit", "infiltrat", "ground-glass",
            "ground glass", "consolidat", "alveolar", "intubat", "ventilat", "hypox", "edema")


class BM25:
    """Okapi BM25 (k1=1.2, b=0.75) over a list of texts."""

    def __init__(self, texts: list[str], k1: float = 1.2, b: float = 0.75) -> None:
        self.docs = [Counter(WORD.findall(t.lower())) for t in texts]
        self.len = np.array([sum(d.values()) for d in self.docs], dtype=np.float64)
        self.avg = float(self.len.mean()) if len(self.len) else 1.0
        df = Counter(w for d in self.docs for w in d)
        n = len(self.docs)
        self.idf = {w: math.log(1 + (n - c + 0.5) / (c + 0.5)) for w, c in df.items()}
        self.k1, self.b = k1, b

    def scores(self, rows: np.ndarray, query: list[str]) -> np.ndarray:
        out = np.zeros(len(rows))
        for j, r in enumerate(rows):
            d, norm = self.docs[r], self.k1 * (1 - self.b + self.b * self.len[r] / self.avg)
            out[j] = sum(self.idf.get(w, 0.0) * d[w] * (self.k1 + 1) / (d[w] + norm) for w in query if w in d)
        return out


def keyword_scores(texts: list[str]) -> np.ndarray:
    return np.array([sum(k in t.lower() for k in KEYWORDS) for t in texts], dtype=np.float64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=80)
    ap.add_argument("--prevalence", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--budgets", default="auto,380,1500", help="LLM tokens; auto: the config's default budget")
    ap.add_argument("--work", default="/tmp/ards-rag-retrieval-quality")
    ap.add_argument("--tokenizer", default="llm", help="llm (the config's, via models.load_tokenizer) | minilm")
    ap.add_argument("--config", default=None, help="YAML config merged over the defaults")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from ards_rag.notes import load_notes
    from ards_rag.synthetic import write_cohort

    cfg = resolve_config(args.config)
    work = Path(args.work) / f"n{args.patients}-p{args.prevalence}-s{args.seed}"
    notes_path, evidence_path = write_cohort(work, n_patients=args.patients, seed=args.seed,
                                             prevalence=args.prevalence)
    table = load_notes(notes_path)
    t0 = time.perf_counter()
    report = build_index(table, work / "index", cfg, progress=True)
    print(str(report), file=sys.stderr)
    index = NotesIndex.load(work / "index", expect=cfg)

    if args.tokenizer == "minilm":
        from ards_rag.embedding import load_embedder

        tokenizer = load_embedder("minilm").tokenizer
        tok_name = "all-MiniLM-L6-v2 (stand-in)"
    else:
        from ards_rag.models import load_tokenizer

        tokenizer = load_tokenizer(cfg)
        tok_name = str(cfg["ludwig"]["base_model"])
    counter = TokenCounter(tokenizer)

    ev = pd.read_csv(evidence_path, dtype=str)
    ev = ev[~ev["kind"].str.startswith("trap")]
    pos = index.patients.loc[index.patients["label"] == True, "patient_id"].tolist()  # noqa: E712
    ev = ev[ev["patient_id"].isin(pos)]
    ev_notes = ev.groupby("patient_id")["note_id"].apply(set).to_dict()
    bil_notes = ev[ev["kind"] == "bilateral_opacities"].groupby("patient_id")["note_id"].apply(set).to_dict()
    n_ev = sum(len(v) for v in ev_notes.values())

    bm25 = BM25(index.passages["text"].tolist())
    query_words = [w for w in dict.fromkeys(WORD.findall(" ".join(cfg["retrieval"]["queries"]).lower())) if w not in STOP]
    kw_all = keyword_scores(index.passages["text"].tolist())

    results = []
    budgets = []
    for b in args.budgets.split(","):
        if b == "auto":  # the default budget: what the prompt template leaves (prompt.context_budget)
            from ards_rag.prompt import context_budget

            budgets.append(int(context_budget(cfg, tokenizer)))
        else:
            budgets.append(int(b))
    for budget in budgets:
        contexts: dict[str, dict[str, set[str]]] = {}
        tokens: dict[str, list[int]] = {}
        for fusion in FUSIONS:
            c = resolve_config(args.config, {"retrieval": {"fusion": fusion}})
            r = Retriever(index, c, tokenizer, budget)
            name = f"retrieval/{fusion}" + (" (default)" if fusion == cfg["retrieval"]["fusion"] else "")
            t1 = time.perf_counter()
            ctxs = r.contexts(pos)
            per_patient_ms = (time.perf_counter() - t1) / max(1, len(pos)) * 1000
            contexts[name] = {x.patient_id: set(x.note_ids) for x in ctxs}
            tokens[name] = [x.context_tokens for x in ctxs]
            if fusion == cfg["retrieval"]["fusion"]:
                print(json.dumps({"budget": budget, "context_ms_per_patient": round(per_patient_ms, 1)}), file=sys.stderr)
        for side in ("head", "tail"):
            name = f"truncate_{side}"
            contexts[name], tokens[name] = {}, []
            for pid in pos:
                _, included, n = truncate_context(index.patient_notes(pid), budget, counter, side=side)
                contexts[name][pid] = {p["note_id"] for p in included}
                tokens[name].append(n)
        for name, scorer in (("bm25", "bm25"), ("keywords", "kw")):
            contexts[name], tokens[name] = {}, []
            for pid in pos:
                first, n = index.patient_rows(pid)
                rows = np.arange(first, first + n)
                s = bm25.scores(rows, query_words) if scorer == "bm25" else kw_all[first : first + n]
                _, chosen, nt, _ = select_passages(index.passages.iloc[first : first + n], s.astype(np.float32),
                                                   index.vectors[first : first + n], budget, counter,
                                                   cfg["retrieval"]["dedup_threshold"])
                contexts[name][pid] = {p["note_id"] for p in chosen}
                tokens[name].append(nt)
        for name, got in contexts.items():
            hit = np.mean([bool(ev_notes.get(p, set()) & got[p]) for p in pos])
            covered = sum(len(ev_notes.get(p, set()) & got[p]) for p in pos) / max(1, n_ev)
            bil = [bool(bil_notes[p] & got[p]) for p in pos if p in bil_notes]
            row = {
                "budget": budget,
                "strategy": name,
                "patients_hit": round(float(hit), 3),
                "evidence_notes": round(covered, 3),
                "bilateral_hit": round(float(np.mean(bil)), 3) if bil else None,
                "mean_context_tokens": round(float(np.mean(tokens[name])), 1),
                "max_context_tokens": int(max(tokens[name])),
            }
            results.append(row)
    summary = {
        "machine": platform.node(),
        "cpus": os.cpu_count(),
        "patients": args.patients,
        "positives": len(pos),
        "evidence_notes": n_ev,
        "notes": int(len(index.notes())),
        "passages": len(index),
        "mean_notes_per_patient": round(len(index.notes()) / index.n_patients, 1),
        "tokenizer": tok_name,
        "index_seconds": round(time.perf_counter() - t0, 1),
        "chunking": cfg["chunking"],
    }
    print(json.dumps(summary))
    print("\n| budget | strategy | positives hit | evidence notes covered | bilateral-opacity note hit | mean tokens |")
    print("|---:|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['budget']} | {r['strategy']} | {r['patients_hit']:.3f} | {r['evidence_notes']:.3f} | "
              f"{r['bilateral_hit']} | {r['mean_context_tokens']} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "results": results}, indent=2))


if __name__ == "__main__":
    main()
