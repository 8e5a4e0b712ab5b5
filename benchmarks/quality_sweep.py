"""Which settings move quality: context information and fine-tuning variants on one cohort.

    python benchmarks/quality_sweep.py --patients 1000 --seed 0 --workdir /tmp/sweep [--device cuda]
    python benchmarks/quality_sweep.py --workdir /tmp/sweep --variants my_variants.yaml --only e3,e3_768

One synthetic cohort and one index (built once, reused from ``--workdir``), then for each
variant (a name and config overrides, deep-merged over ``--config`` or over the shipped config
the variant names in ``config``):

- ``context``: TF-IDF + logistic regression fitted on the variant's *retrieved contexts* of the
  training patients (threshold: best F1 on validation), scored on the test patients. It bounds
  how much of the label the context carries at that budget and query set, in seconds, before an
  LLM is trained on it.
- ``llm`` (variants marked ``llm: true``): ``training.train`` + ``evaluation.Evaluator`` on the
  test split, exactly as ``ards-rag train`` / ``ards-rag evaluate`` do.

Every variant uses the patient-level split of its own config (``split`` settings and ``seed``;
``--seed`` unless a variant overrides ``seed``), as training does, so rows with one seed are
comparable. One JSON object per variant is printed and appended to ``WORKDIR/sweep.jsonl``;
finished LLM runs (``WORKDIR/runs/NAME``) are reused, so an interrupted sweep resumes.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quality import workdir_and_config  # same folder

from ards_rag.config import DEFAULTS, read_yaml

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# The differential-diagnosis queries ("+differential", "dxq"): those configs/smollm2-full-1024.yaml
# adds to the default ones (cardiogenic edema, resolution after diuresis, the insult, chronic ILD).
DIFFERENTIAL_QUERIES: list[str] = read_yaml(CONFIGS / "smollm2-full-1024.yaml")["retrieval"]["queries"][
    len(DEFAULTS["retrieval"]["queries"]):]

# Berlin definition (ARDS Definition Task Force, JAMA 2012), as an instruction: the headers' days
# count from the patient's first note (retrieval.day_in_header)
BERLIN_INSTRUCTION = read_yaml(CONFIGS / "smollm2-full-2048.yaml")["prompt"]["instruction"] + (
    " ARDS (Berlin definition): bilateral opacities not fully explained by effusions, collapse or "
    "nodules; respiratory failure not fully explained by cardiac failure or fluid overload; onset "
    "within one week of a known clinical insult (compare the days in the note headers)."
)
# name -> {"llm": train an LLM too?, "config": a file in configs/ instead of --config,
# "overrides": config keys}. Budgets are prompt lengths
# (``ludwig.preprocessing.global_max_sequence_length``); the context gets what the prompt leaves.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {"llm": True, "overrides": {}},
    "prompt768": {"llm": False, "overrides": {"ludwig": {"preprocessing": {"global_max_sequence_length": 768}}}},
    "prompt1536": {"llm": False, "overrides": {"ludwig": {"preprocessing": {"global_max_sequence_length": 1536}}}},
    "dxq": {"llm": False, "overrides": {"retrieval": {"queries": "+differential"}}},
    "dxq_prompt768": {"llm": False, "overrides": {
        "retrieval": {"queries": "+differential"},
        "ludwig": {"preprocessing": {"global_max_sequence_length": 768}}}},
    "truncate": {"llm": False, "overrides": {"retrieval": {"strategy": "truncate"}}},
    "e3": {"llm": True, "overrides": {"ludwig": {"trainer": {"epochs": 3}}}},
    "e3_all_r16": {"llm": True, "overrides": {"ludwig": {
        "trainer": {"epochs": 3, "learning_rate": 0.001},
        "adapter": {"r": 16, "alpha": 32, "target_modules": ALL_LINEAR}}}},
    "e3_prompt768": {"llm": True, "overrides": {"ludwig": {
        "trainer": {"epochs": 3}, "preprocessing": {"global_max_sequence_length": 768}}}},
    "dxq_e3_p768": {"llm": True, "overrides": {
        "retrieval": {"queries": "+differential"},
        "ludwig": {"trainer": {"epochs": 3}, "preprocessing": {"global_max_sequence_length": 768}}}},
    "e5": {"llm": True, "overrides": {"ludwig": {"trainer": {"epochs": 5}}}},
    "dxq_e3": {"llm": True, "overrides": {"retrieval": {"queries": "+differential"},
                                          "ludwig": {"trainer": {"epochs": 3}}}},
    "lora_lr2e4_e3": {"llm": True, "overrides": {"ludwig": {"trainer": {"epochs": 3, "learning_rate": 0.0002}}}},
    "full_e3": {"llm": True, "config": "smollm2-full.yaml"},
    "full_dxq_e3": {"llm": True, "config": "smollm2-full.yaml",
                    "overrides": {"retrieval": {"queries": "+differential"}}},
    "full_dxq_p768_e2": {"llm": True, "config": "smollm2-full-1024.yaml", "overrides": {"ludwig": {
        "trainer": {"epochs": 2}, "preprocessing": {"global_max_sequence_length": 768}}}},
    "full_dxq_p1024_e3": {"llm": True, "config": "smollm2-full-1024.yaml"},
    "dxq_prompt1024": {"llm": False, "config": "smollm2-full-1024.yaml"},
    "dxq_prompt2048": {"llm": False, "config": "smollm2-full-1024.yaml", "overrides": {"ludwig": {
        "preprocessing": {"global_max_sequence_length": 2048}}}},
    "full_dxq_p2048_e2": {"llm": True, "config": "smollm2-full-2048.yaml"},
    # not run yet: a third epoch at 2,048 tokens (its first two are full_dxq_p2048_e2's: constant
    # learning rate; the best checkpoint by validation loss is kept)
    "full_dxq_p2048_e3": {"llm": True, "config": "smollm2-full-2048.yaml", "overrides": {"ludwig": {
        "trainer": {"epochs": 3}}}},
    # not run yet: the same model on the seed workflow's truncated notes at the same budget (the
    # goal's "above truncation" at 2,048 tokens)
    "full_p2048_e2_truncate": {"llm": True, "config": "smollm2-full-2048.yaml", "overrides": {
        "retrieval": {"strategy": "truncate"}}},
    # Gemma-3-270M (the gemma extra) on the 2,048-token recipe: its 262k-token vocabulary puts more
    # note text into the same 2,048 tokens
    "gemma_dxq_prompt2048": {"llm": False, "config": "smollm2-full-2048.yaml", "overrides": {
        "ludwig": {"base_model": "gemma3-270m"}}},
    "gemma_full_dxq_p2048_e2": {"llm": True, "config": "smollm2-full-2048.yaml", "overrides": {
        "ludwig": {"base_model": "gemma3-270m", "generation": {"max_new_tokens": 3}}}},
    # Gemma-3-270M on the one-epoch `max` + day-header recipe of the 6,000-patient cohort, where
    # SmolLM2-135M ties TF-IDF + LR and reads less of its context than a bag of words does: twice
    # the parameters, on the same context (its own 2,048-token budget). Measured after the BOS fix
    # (H100, 2026-12-07): 0.733 / 0.909 against SmolLM2's 0.866 / 0.976; it barely fits its
    # training rows (BENCHMARKS.md, "After the BOS fix")
    "gemma_full_dxq_p2048_e1_max_day": {"llm": True, "config": "smollm2-full-2048.yaml", "overrides": {
        "retrieval": {"fusion": "max", "day_in_header": True},
        "ludwig": {"base_model": "gemma3-270m", "generation": {"max_new_tokens": 3},
                   # batch 2 x 2 (the same 4 per step): its 262k-word logits, 8.6 GB in float32
                   # per 4 x 2,048 tokens, must fit an 80 GB H100 beside the optimizer
                   "trainer": {"epochs": 1, "batch_size": 2, "gradient_accumulation_steps": 2,
                               "eval_batch_size": 2}}}},
    # not run yet: Gemma and SmolLM2 on 512-token prompts, the same one-epoch recipe otherwise.
    # At 2,048 tokens Gemma trails SmolLM2 (0.909 against 0.976 AUROC); on the CPU's short
    # two-note probe it learned as well as SmolLM2 did (0.989 against 0.996). Within Gemma's
    # 512-token sliding window, does the gap close? A few minutes each on an H100.
    "gemma_full_dxq_p512_e1_max_day": {"llm": True, "config": "smollm2-full-2048.yaml", "overrides": {
        "retrieval": {"fusion": "max", "day_in_header": True},
        "ludwig": {"base_model": "gemma3-270m", "generation": {"max_new_tokens": 3},
                   "trainer": {"epochs": 1}, "preprocessing": {"global_max_sequence_length": 512}}}},
    "full_dxq_p512_e1_max_day": {"llm": True, "config": "smollm2-full-2048.yaml", "overrides": {
        "retrieval": {"fusion": "max", "day_in_header": True},
        "ludwig": {"trainer": {"epochs": 1}, "preprocessing": {"global_max_sequence_length": 512}}}},
    # not run yet: the same on the 2,000-patient cohort, two epochs (its SmolLM2 twin:
    # full_dxq_p2048_e2_max_day): about 60% of the one-epoch 6,000-patient run's GPU time
    "gemma_full_dxq_p2048_e2_max_day": {"llm": True, "config": "smollm2-full-2048.yaml", "overrides": {
        "retrieval": {"fusion": "max", "day_in_header": True},
        "ludwig": {"base_model": "gemma3-270m", "generation": {"max_new_tokens": 3},
                   "trainer": {"epochs": 2, "batch_size": 2, "gradient_accumulation_steps": 2,
                               "eval_batch_size": 2}}}},
    # the shipped recipe on another patient-level split (config seed 7; same cohort and index)
    "full_dxq_p2048_e2_seed7": {"llm": True, "config": "smollm2-full-2048.yaml", "overrides": {"seed": 7}},
    # not run yet: the shipped recipe with the day since the first note in each header, for the
    # errors benchmarks/error_analysis.py found (bilateral opacities outside the Berlin week,
    # overload that clears): timing a small model cannot work out from dates
    "full_dxq_p2048_e2_day": {"llm": True, "config": "smollm2-full-2048.yaml", "overrides": {
        "retrieval": {"day_in_header": True}}},
    # max fusion and day headers at 2,048 tokens: the context ceilings that the 400-patient
    # cross-validation put near TF-IDF + LR on all notes (BENCHMARKS.md, "2,048-token contexts
    # for the hard negatives")
    "dxq_prompt2048_day": {"llm": False, "config": "smollm2-full-2048.yaml", "overrides": {
        "retrieval": {"day_in_header": True}}},
    "dxq_prompt2048_max": {"llm": False, "config": "smollm2-full-2048.yaml", "overrides": {
        "retrieval": {"fusion": "max"}}},
    "dxq_prompt2048_max_day": {"llm": False, "config": "smollm2-full-2048.yaml", "overrides": {
        "retrieval": {"fusion": "max", "day_in_header": True}}},
    "full_dxq_p2048_e2_max_day": {"llm": True, "config": "smollm2-full-2048.yaml", "overrides": {
        "retrieval": {"fusion": "max", "day_in_header": True}}},
    # not run yet: one epoch on the 6,000-patient cohort, where the 2-epoch run's best checkpoint
    # was epoch 1 (validation loss 0.178, then 0.265): half the compute (BENCHMARKS.md, 2026-12-07)
    "full_dxq_p2048_e1_max_day": {"llm": True, "config": "smollm2-full-2048.yaml", "overrides": {
        "retrieval": {"fusion": "max", "day_in_header": True}, "ludwig": {"trainer": {"epochs": 1}}}},
    "full_dxq_p2048_e1_max_day_seed7": {"llm": True, "config": "smollm2-full-2048.yaml", "overrides": {
        "seed": 7, "retrieval": {"fusion": "max", "day_in_header": True}, "ludwig": {"trainer": {"epochs": 1}}}},
    # not run yet: the one-epoch recipe with Berlin's criteria in the instruction. Its false
    # positives are 19 late_bilateral negatives whose context holds the insult (day 0) and the
    # bilateral opacities (day 8 or later), and it reads late-onset positives right: it ignores
    # the interval (benchmarks/timing_evidence.py, BENCHMARKS.md "The Berlin week"). On the CPU
    # probes the instruction cost AUROC (LoRA 0.72 -> 0.50; full fine-tuning, five notes,
    # 0.86 -> 0.69): a low-priority run.
    "full_dxq_p2048_e1_max_day_berlin": {"llm": True, "config": "smollm2-full-2048.yaml", "overrides": {
        "retrieval": {"fusion": "max", "day_in_header": True}, "ludwig": {"trainer": {"epochs": 1}},
        "prompt": {"instruction": BERLIN_INSTRUCTION}}},
    # the same two recipes on more patient-level splits (config seeds 7 and 11)
    "full_dxq_p2048_e2_max_day_seed7": {"llm": True, "config": "smollm2-full-2048.yaml", "overrides": {
        "seed": 7, "retrieval": {"fusion": "max", "day_in_header": True}}},
    "full_dxq_p2048_e2_seed11": {"llm": True, "config": "smollm2-full-2048.yaml", "overrides": {"seed": 11}},
    "full_dxq_p2048_e2_max_day_seed11": {"llm": True, "config": "smollm2-full-2048.yaml", "overrides": {
        "seed": 11, "retrieval": {"fusion": "max", "day_in_header": True}}},
    # not run yet: training views (retrieval.train_views), more contexts per training patient
    # with passages left out, at the shipped recipe's compute (2 views x 1 epoch) and 1.5x of it
    "full_dxq_p2048_views2_e1": {"llm": True, "config": "smollm2-full-2048.yaml", "overrides": {
        "retrieval": {"train_views": 2}, "ludwig": {"trainer": {"epochs": 1}}}},
    "full_dxq_p2048_views3_e1": {"llm": True, "config": "smollm2-full-2048.yaml", "overrides": {
        "retrieval": {"train_views": 3}, "ludwig": {"trainer": {"epochs": 1}}}},
    # their context ceilings on those splits
    "dxq_prompt2048_seed7": {"llm": False, "config": "smollm2-full-2048.yaml", "overrides": {"seed": 7}},
    "dxq_prompt2048_max_day_seed7": {"llm": False, "config": "smollm2-full-2048.yaml", "overrides": {
        "seed": 7, "retrieval": {"fusion": "max", "day_in_header": True}}},
    "dxq_prompt2048_seed11": {"llm": False, "config": "smollm2-full-2048.yaml", "overrides": {"seed": 11}},
    "dxq_prompt2048_max_day_seed11": {"llm": False, "config": "smollm2-full-2048.yaml", "overrides": {
        "seed": 11, "retrieval": {"fusion": "max", "day_in_header": True}}},
    # context layout (retrieval.compact, retrieval.day_in_header)
    "compact": {"llm": False, "overrides": {"retrieval": {"compact": True}}},
    "day": {"llm": False, "overrides": {"retrieval": {"day_in_header": True}}},
    "compact_day": {"llm": False, "overrides": {"retrieval": {"compact": True, "day_in_header": True}}},
    "full_dxq_compact_day_e3": {"llm": True, "config": "smollm2-full.yaml", "overrides": {
        "retrieval": {"queries": "+differential", "compact": True, "day_in_header": True}}},
}


def log(msg: str) -> None:
    print(f"[sweep {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def expand(overrides: dict[str, Any], base_queries: list[str]) -> dict[str, Any]:
    """Replace the ``"+differential"`` shorthand by the default queries plus DIFFERENTIAL_QUERIES."""
    out = copy.deepcopy(overrides)
    if out.get("retrieval", {}).get("queries") == "+differential":
        out["retrieval"]["queries"] = list(base_queries) + DIFFERENTIAL_QUERIES
    return out


def context_ceiling(index: Any, cfg: dict[str, Any], split: Any) -> dict[str, Any]:
    """TF-IDF + LR on the variant's contexts: fit on train, threshold on validation, score test."""
    from ards_rag.baselines import tfidf_lr
    from ards_rag.evaluation import best_f1_threshold, binary_metrics
    from ards_rag.models import load_tokenizer
    from ards_rag.retrieval import Retriever

    retriever = Retriever(index, cfg, load_tokenizer(cfg))
    by_split = {s: split[split["split"] == s] for s in ("train", "validation", "test")}
    # One pass over the patients (one pool of context workers), one fit scoring validation + test.
    ctx = {c.patient_id: c.text for c in retriever.iter_contexts(split["patient_id"])}
    texts = {s: [ctx[str(p)] for p in df["patient_id"]] for s, df in by_split.items()}
    labels = {s: df["label"].astype(int).to_numpy() for s, df in by_split.items()}
    probs = tfidf_lr(texts["train"], labels["train"], texts["validation"] + texts["test"])
    n_val = len(texts["validation"])
    threshold = best_f1_threshold(labels["validation"], probs[:n_val])
    m = binary_metrics(labels["test"], probs[n_val:], threshold)
    return {"budget": retriever.budget, "f1": m["f1"], "auroc": m["auroc"], "auprc": m.get("auprc")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0, help="cohort and config seed")
    ap.add_argument("--prevalence", type=float, default=0.25)
    ap.add_argument("--config", default=None, help="base YAML config (default: built-in)")
    ap.add_argument("--workdir", default="quality-sweep")
    ap.add_argument("--device", default=None, help="embedder device (default auto)")
    ap.add_argument("--variants", default=None, help="YAML file: name -> {llm: bool, overrides: {...}}")
    ap.add_argument("--only", default=None, help="comma-separated variant names to run")
    ap.add_argument("--no-llm", action="store_true", help="context ceilings only")
    ap.add_argument("--no-ceiling", action="store_true",
                    help="skip the context ceilings (with --no-llm: only build the cohort and index)")
    args = ap.parse_args(argv)

    import yaml

    from ards_rag.config import deep_merge, resolve_config
    from ards_rag.evaluation import Evaluator
    from ards_rag.index import NotesIndex, build_index
    from ards_rag.notes import load_notes
    from ards_rag.synthetic import write_cohort
    from ards_rag.training import stratified_split, train

    variants = VARIANTS
    if args.variants:
        variants = yaml.safe_load(Path(args.variants).read_text("utf-8"))
    if args.only:
        wanted = [v.strip() for v in args.only.split(",") if v.strip()]
        unknown = [v for v in wanted if v not in variants]
        if unknown:
            ap.error(f"unknown variants: {', '.join(unknown)} (have {', '.join(variants)})")
        variants = {k: variants[k] for k in wanted}

    work, base_over, base_cfg = workdir_and_config(args)
    notes_csv = work / "cohort" / "notes.csv"
    if not notes_csv.is_file():
        t = time.perf_counter()
        write_cohort(work / "cohort", n_patients=args.patients, seed=args.seed, prevalence=args.prevalence)
        log(f"cohort: {args.patients} patients in {time.perf_counter() - t:.0f} s")
    index_dir = work / "index"
    if not (index_dir / "manifest.json").is_file():
        t = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):
            build_index(load_notes(notes_csv), index_dir, base_cfg)
        log(f"index built in {time.perf_counter() - t:.0f} s")
    index = NotesIndex.load(index_dir)
    labels = index.labels()
    labels = labels[labels["label"].notna()].copy()
    labels["label"] = labels["label"].astype(bool)
    labels["patient_id"] = labels["patient_id"].astype(str)
    out_path = work / "sweep.jsonl"
    for name, spec in variants.items():
        over = expand(spec.get("overrides") or {}, base_cfg["retrieval"]["queries"])
        cfg = resolve_config(CONFIGS / spec["config"] if spec.get("config") else args.config,
                             deep_merge(base_over, over))
        train_llm = bool(spec.get("llm")) and not args.no_llm
        if args.no_ceiling and not train_llm:
            continue
        split_cfg = cfg.get("split") or {}
        split = stratified_split(labels[["patient_id", "label"]], float(split_cfg.get("validation", 0.15)),
                                 float(split_cfg.get("test", 0.15)), int(cfg.get("seed", 42)))
        row: dict[str, Any] = {"variant": name, "overrides": over, "patients": len(labels),
                               "seed": args.seed, "split_seed": int(cfg.get("seed", 42)),
                               "test_patients": int((split["split"] == "test").sum())}
        if not args.no_ceiling:
            t = time.perf_counter()
            row["context_tfidf_lr"] = context_ceiling(index, cfg, split)
            row["context_s"] = round(time.perf_counter() - t, 1)
        if train_llm:
            run_dir = work / "runs" / name
            t = time.perf_counter()
            with contextlib.redirect_stdout(sys.stderr):
                if not (run_dir / "threshold.json").is_file():
                    train(index_dir, cfg, run_dir, progress=False)
                row["train_s"] = round(time.perf_counter() - t, 1)
                summary = json.loads((run_dir / "summary.json").read_text("utf-8"))
                row["epochs"] = summary.get("epochs")
                row["best_epoch"] = summary.get("best_epoch")
                row["validation_loss"] = summary.get("validation_loss")
                row["validation_f1"] = summary.get("validation_f1")
                metrics = Evaluator(run_dir, index_dir=index_dir, split="test", n_bootstrap=200).run()
            keys = ("f1", "auroc", "auprc", "sensitivity", "specificity", "threshold")
            row["llm"] = {k: metrics["model"].get(k) for k in keys}
            # Keyword rule and TF-IDF + LR on all notes, same split (the report's baselines).
            row["baselines"] = {name: {k: entry.get(k) for k in keys}
                                for name, entry in (metrics.get("baselines") or {}).items()}
            row["total_s"] = round(time.perf_counter() - t, 1)
        text = json.dumps(row)
        print(text, flush=True)
        with out_path.open("a", encoding="utf-8") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
