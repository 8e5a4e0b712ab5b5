"""Where Ludwig's generated answer and the score part: the first answer token, path by path.

    python benchmarks/generated_agreement.py --run RUN --index INDEX [--split test] [--limit 200]

``ards-rag predict --generated`` compares Ludwig's greedy answer with the scorer's
P("true") >= 0.5. For each patient of the split this script computes the logit margin
``logit("true") - logit("false")`` at the first answer token four ways, from the same loaded run:

- ``batched``: ``Scorer.score`` as predict runs it (batches of 8, left padding, position ids);
- ``single``: ``Scorer.score`` one context at a time (no padding);
- ``forward``: one plain forward pass of the model on the scorer's prompt ids (no padding, no
  position ids, all logits), under the scorer's autocast;
- ``ludwig``: the first-step scores of the ``generate`` call Ludwig's own ``predict`` makes (its
  preprocessing, its prompt ids), captured by wrapping the model's ``generate``.

It reports the most likely first token of Ludwig's generation (one of the two the score compares,
or another: ``False``, a blank), whether Ludwig's prompt ids equal the scorer's, the margin differences between the
paths (mean, largest, mean signed), and how many answers each path gives ``true``; so a
disagreement can be put on the prompt (ids differ), on padding or batching (batched vs single),
or on Ludwig's generation (forward vs ludwig). Prints one JSON line; ``--out`` also writes the
per-patient margins as CSV.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--index", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=200, help="at most this many patients")
    parser.add_argument("--out", help="per-patient margins (CSV)")
    args = parser.parse_args(argv)

    import torch

    from ards_rag.index import NotesIndex
    from ards_rag.prediction import Scorer, check_index_matches, read_run_config
    from ards_rag.prompt import context_budget
    from ards_rag.retrieval import Retriever

    run = Path(args.run)
    split = pd.read_csv(run / "split.csv", dtype={"patient_id": str})
    ids = split.loc[split["split"] == args.split, "patient_id"].tolist()[: args.limit]
    index = NotesIndex.load(args.index)
    check_index_matches(run, index)
    scorer = Scorer.from_run(run)
    retriever = Retriever(index, read_run_config(run), scorer.tokenizer,
                          context_budget(read_run_config(run), scorer.tokenizer))
    contexts = [c.text for c in retriever.iter_contexts(ids)]

    batched = logit(scorer.score(contexts, batch_size=8))
    single = logit(np.concatenate([scorer.score([c], batch_size=1) for c in contexts]))
    cand = list(scorer.candidate_ids)
    forward = []
    with torch.inference_mode():
        for c in contexts:
            ids_t = torch.tensor([scorer.prompt_ids(c)], device=scorer.device)
            with scorer._autocast():
                out = scorer.model(input_ids=ids_t, use_cache=False).logits[0, -1].float()
            forward.append(float(out[cand[0]] - out[cand[1]]))

    captured: list[dict[str, Any]] = []
    model = scorer.model
    original = model.generate

    def generate(*a: Any, **kw: Any) -> Any:
        result = original(*a, **kw)
        first = result.scores[0][0].float()
        captured.append({"ids": kw["input_ids"][0].tolist(),
                         "margin": float(first[cand[0]] - first[cand[1]]),
                         "top": int(first.argmax()), "dtype": str(result.scores[0].dtype)})
        return result

    model.generate = generate
    try:
        answers = scorer.generated_answers(contexts, 1 / (1 + np.exp(-batched)))
    finally:
        del model.generate
    if len(captured) != len(contexts):
        raise SystemExit(f"captured {len(captured)} generations for {len(contexts)} contexts")
    ludwig = np.array([g["margin"] for g in captured])
    forward_a = np.array(forward)
    same_ids = [g["ids"] == scorer.prompt_ids(c) for g, c in zip(captured, contexts, strict=True)]

    def gap(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
        d = a - b
        return {"mean_abs": round(float(np.abs(d).mean()), 4), "max_abs": round(float(np.abs(d).max()), 4),
                "mean_signed": round(float(d.mean()), 4)}

    result = {
        "run": str(run), "split": args.split, "patients": len(contexts),
        "device": str(scorer.device), "autocast": type(scorer._autocast()).__name__,
        "prompt_ids_equal": int(sum(same_ids)),
        "ludwig_score_dtype": captured[0]["dtype"] if captured else None,
        "true_answers": {"batched": int((batched >= 0).sum()), "single": int((single >= 0).sum()),
                         "forward": int((forward_a >= 0).sum()), "ludwig": int((ludwig >= 0).sum()),
                         "generated_text": sum(a["answer"] == "true" for a in answers)},
        "generated_agrees": sum(bool(a["agrees"]) for a in answers),
        "top_token_outside_pair": sum(g["top"] not in cand for g in captured),
        "top_tokens": pd.Series([scorer.tokenizer.decode([g["top"]]) for g in captured]).value_counts().to_dict(),
        "margin_gaps": {"batched-single": gap(batched, single), "single-forward": gap(single, forward_a),
                        "forward-ludwig": gap(forward_a, ludwig), "batched-ludwig": gap(batched, ludwig)},
    }
    print(json.dumps(result))
    if args.out:
        pd.DataFrame({"patient_id": ids, "batched": batched, "single": single, "forward": forward_a,
                      "ludwig": ludwig, "prompt_ids_equal": same_ids,
                      "ludwig_prompt_tokens": [len(g["ids"]) for g in captured],
                      "scorer_prompt_tokens": [len(scorer.prompt_ids(c)) for c in contexts],
                      "top_token": [scorer.tokenizer.decode([g["top"]]) for g in captured],
                      "generated": [a["text"] for a in answers]}).to_csv(args.out, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
