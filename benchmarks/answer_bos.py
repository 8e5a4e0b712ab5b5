"""The answer after the prompt, or after a second BOS: Gemma-3-270M trained both ways (CPU-sized).

    ards-rag synth --patients 400 --seed 0 --out /tmp/c400
    ards-rag index /tmp/c400/notes.csv --index /tmp/i400
    python benchmarks/answer_bos.py --index /tmp/i400 --workdir /tmp/bos --probe      # seconds
    python benchmarks/answer_bos.py --index /tmp/i400 --workdir /tmp/bos --only after_prompt
    python benchmarks/answer_bos.py --index /tmp/i400 --workdir /tmp/bos --only after_bos

One variant at a time on a 24 GiB machine: a Gemma LoRA training process peaked at 12.5 GB
(resident) at 256-token prompts, and a second Gemma process beside it got the first killed.

Ludwig tokenizes the answer as it tokenizes the prompt, so a tokenizer that starts every text
with BOS (Gemma, Llama-2) made every training sequence ``prompt <bos> true <eos>``: the model
learned its answer at a BOS position. ``ards-rag train`` now trains ``prompt true <eos>``
(``training.answers_after_prompt``). This script measures the difference:

- ``--probe``: the base model's hidden-state norm halfway up its layers at the last prompt token
  and at a BOS appended to the prompt (a massive activation there means the position the score
  reads is dominated by one near-constant direction), over 24 patients' contexts.
- ``after_prompt`` / ``after_bos``: the same config, split and rows trained both ways
  (``after_bos`` restores Ludwig's own tokenization and records ``answer_prefix: [bos]`` so the
  score reads where that model learned to answer). Each prints its validation and test metrics
  and the log-loss of P(true) over both splits as one JSON line, appended to WORKDIR/answer_bos.jsonl.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "gemma3-270m.yaml"


def probe(cfg: dict[str, Any], index_dir: str, n: int = 24) -> dict[str, Any]:
    """Mid-layer hidden-state norms of the base model at the prompt's end and at an appended BOS."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from ards_rag.index import NotesIndex
    from ards_rag.models import load_tokenizer, resolve_base_model
    from ards_rag.prompt import ludwig_template
    from ards_rag.retrieval import Retriever

    tok = load_tokenizer(cfg)
    model = AutoModelForCausalLM.from_pretrained(resolve_base_model(cfg["ludwig"]["base_model"]),
                                                 dtype=torch.float32).eval()
    index = NotesIndex.load(index_dir, expect=cfg)
    ids = index.labels()["patient_id"].astype(str).tolist()[:n]
    template = ludwig_template(cfg)
    norms: dict[str, list[float]] = {"prompt_end": [], "appended_bos": []}
    for ctx in Retriever(index, cfg, tok).iter_contexts(ids):
        x = torch.tensor([tok.encode(template.format(context=ctx.text)) + [tok.bos_token_id]])
        with torch.no_grad():
            hidden = model(x, output_hidden_states=True).hidden_states
        mid = hidden[len(hidden) // 2][0]
        norms["prompt_end"].append(float(mid[-2].norm()))
        norms["appended_bos"].append(float(mid[-1].norm()))
    out = {k: round(float(np.mean(v)), 1) for k, v in norms.items()}
    out["ratio"] = round(out["appended_bos"] / out["prompt_end"], 1)
    out["layer"] = f"{len(hidden) // 2} of {len(hidden) - 1}"
    return out


def run_variant(name: str, cfg: dict[str, Any], index_dir: str, work: Path) -> dict[str, Any]:
    import numpy as np
    import pandas as pd

    import ards_rag.training as training
    from ards_rag.evaluation import binary_metrics
    from ards_rag.models import load_tokenizer
    from ards_rag.prediction import predict_patients

    run_dir = work / "runs" / name
    t = time.perf_counter()
    if not (run_dir / "summary.json").is_file():
        saved = training.answers_after_prompt, training.ANSWER_PREFIX
        if name == "after_bos":  # Ludwig's own answer tokenization, recorded as what it is
            training.answers_after_prompt = lambda *a, **k: contextlib.nullcontext()
            training.ANSWER_PREFIX = (int(load_tokenizer(cfg).bos_token_id),)
        try:
            with contextlib.redirect_stdout(sys.stderr):
                training.train(index_dir, cfg, run_dir, progress=True)
        finally:  # the next variant in this process trains as `ards-rag train` does
            training.answers_after_prompt, training.ANSWER_PREFIX = saved
    summary = json.loads((run_dir / "summary.json").read_text("utf-8"))
    train_s = float(summary.get("seconds") or time.perf_counter() - t)  # also for a finished run
    split = pd.read_csv(run_dir / "split.csv", dtype={"patient_id": str, "label": str})
    split = split[split["split"].isin(["validation", "test"])]
    preds = predict_patients(run_dir, index_dir, split["patient_id"].tolist()).set_index("patient_id")
    split["p"] = preds.loc[split["patient_id"], "probability"].to_numpy()
    split["y"] = (split["label"].str.lower() == "true").astype(int)
    threshold = float(summary["threshold"])
    row: dict[str, Any] = {"variant": name, "answer_prefix": summary.get("answer_prefix"),
                           "train_rows": summary["train_rows"], "train_s": round(train_s, 1),
                           "mean_prompt_tokens": round(summary["extra"]["mean_prompt_tokens"], 1),
                           "threshold": round(threshold, 4)}
    for part, df in [("validation", split[split["split"] == "validation"]),
                     ("test", split[split["split"] == "test"]), ("both", split)]:
        m = binary_metrics(df["y"].to_numpy(), df["p"].to_numpy(), threshold)
        p = np.clip(df["p"].to_numpy(), 1e-6, 1 - 1e-6)
        y = df["y"].to_numpy()
        logloss = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
        row[part] = {"n": int(len(df)), "f1": round(m["f1"], 3), "auroc": round(m["auroc"], 3),
                     "log_loss": round(logloss, 4), "mean_p_ards": round(float(df.loc[df["y"] == 1, "p"].mean()), 3),
                     "mean_p_other": round(float(df.loc[df["y"] == 0, "p"].mean()), 3)}
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", required=True, help="index folder (built with the config's embedder and chunking)")
    ap.add_argument("--workdir", default="answer-bos")
    ap.add_argument("--config", default=str(CONFIG))
    ap.add_argument("--prompt-tokens", type=int, default=256, help="ludwig.preprocessing.global_max_sequence_length")
    ap.add_argument("--balance", default="none", help="split.balance (none: fewer rows, CPU-sized)")
    ap.add_argument("--only", default="after_prompt,after_bos")
    ap.add_argument("--probe", action="store_true", help="only the hidden-state norms (seconds)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)

    import torch

    from ards_rag.config import resolve_config

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = resolve_config(args.config, {"ludwig": {"preprocessing": {"global_max_sequence_length": args.prompt_tokens}},
                                       "split": {"balance": args.balance}})
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    rows = [{"probe": probe(cfg, args.index)}] if args.probe else \
        [run_variant(v.strip(), cfg, args.index, work) for v in args.only.split(",") if v.strip()]
    for row in rows:
        row.update({"config": Path(args.config).name, "prompt_tokens": args.prompt_tokens, "balance": args.balance})
        text = json.dumps(row)
        print(text, flush=True)
        with (work / "answer_bos.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
