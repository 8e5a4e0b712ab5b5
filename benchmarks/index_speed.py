"""Indexing throughput, peak memory and per-patient search latency; a MIMIC-IV radiology projection.

    .venv/bin/python benchmarks/index_speed.py                      # CPU, all parts
    .venv/bin/python benchmarks/index_speed.py --device cuda --passages 200000 --batch-size 512
    .venv/bin/python benchmarks/index_speed.py --skip-latency --dtype float32,bfloat16

Throughput is end to end through ``build_index`` (chunking with the embedder's tokenizer, embedding,
FAISS, Parquet, manifest) on a synthetic notes table whose notes are one passage of about
``--tokens`` tokens each, so passages/s is comparable with the issue's goal (150-token passages).
Each row also gives the build's stages (``stages_s``: they overlap, see ``IndexReport.stage_seconds``)
and the embedder alone on warm kernels (``embed_warm_passages_per_s``: ``--embed-sample`` passages of
the built lengths, after one untimed warm-up batch). On CUDA, one batch per padded width is run
before the timed build (``warmup_s``), so kernel selection and loading are not timed.
Latency uses random unit vectors (384-d) in an index of 10^4, 10^5, 10^6 passages with patients of
``--per-patient`` contiguous passages, and times the patient-scoped exact search both ways:
``matrix`` (slice of the FAISS storage @ queries) and ``faiss`` (IDSelectorRange); plus a
whole-index search for reference.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ards_rag.config import resolve_config  # noqa: E402
from ards_rag.embedding import load_embedder  # noqa: E402
from ards_rag.index import NotesIndex, build_index  # noqa: E402

SENTENCES = [
    "There are diffuse bilateral airspace opacities, slightly worse than on the prior study.",
    "The endotracheal tube terminates approximately 4 cm above the carina.",
    "Heart size is within normal limits and the mediastinal contours are unremarkable.",
    "No large pleural effusion or pneumothorax is seen on this portable radiograph.",
    "A right internal jugular central venous catheter ends in the mid superior vena cava.",
    "Patchy ground-glass opacification with dependent consolidation in both lower lobes.",
    "The nasogastric tube courses below the diaphragm with its tip out of view.",
    "Mild pulmonary vascular congestion without frank interstitial edema.",
    "Left basilar atelectasis is unchanged; the right lung is clear.",
    "Findings were discussed with the ICU team at the time of the study.",
]


def _cpu_seconds() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_table(n: int, tokens: int, tokenizer, seed: int = 0) -> SimpleNamespace:
    """``n`` notes of about ``tokens`` embedder tokens each (one passage per note)."""
    rng = np.random.default_rng(seed)
    per = np.mean([len(tokenizer(s, add_special_tokens=False)["input_ids"]) for s in SENTENCES])
    k = max(1, round((tokens - 2) / per))
    texts = [" ".join(SENTENCES[j] for j in rng.integers(0, len(SENTENCES), size=k)) + f" Study {i}." for i in range(n)]
    pids = [f"P{i // 20:07d}" for i in range(n)]
    notes = pd.DataFrame(
        {
            "patient_id": pids,
            "note_id": [f"N{i:08d}" for i in range(n)],
            "note_seq": [i % 20 for i in range(n)],
            "charttime": "2180-01-01 00:00:00",
            "note_type": "Radiology",
            "text": texts,
        }
    )
    labels = pd.DataFrame({"patient_id": sorted(set(pids)), "label": pd.array([None] * len(set(pids)), dtype="boolean")})
    return SimpleNamespace(notes=notes, labels=labels, source=None)


def warm_up(emb, batch_size: int, max_tokens: int) -> float:
    """On CUDA, one batch of every padded width up to ``max_tokens``; returns the seconds it took."""
    if not emb.device.startswith("cuda"):
        return 0.0
    import torch

    t0 = time.perf_counter()
    for width in range(8, max_tokens + 1, 8):
        n_content = width - len(emb.prefix_ids) - len(emb.suffix_ids)
        emb.encode_ids([np.full(n_content, 1000, dtype=np.int32)] * batch_size, batch_size, count=False)
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def embed_warm_rate(emb, n_tokens: np.ndarray, batch_size: int, sample: int) -> float:
    """Passages/s of the embedder alone on ``sample`` inputs of the given lengths (random ids),
    one untimed warm-up batch first."""
    from ards_rag.embedding import PackedIds

    rng = np.random.default_rng(1)
    lengths = rng.choice(n_tokens - len(emb.prefix_ids) - len(emb.suffix_ids), size=sample)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = PackedIds(rng.integers(1000, emb.tokenizer.vocab_size, size=int(offsets[-1]), dtype=np.int32), offsets)
    emb.encode_ids(ids.take(np.arange(min(batch_size, sample))), batch_size, count=False)
    t0 = time.perf_counter()
    emb.encode_ids(ids, batch_size, count=False)
    return sample / (time.perf_counter() - t0)


def throughput(args: argparse.Namespace) -> list[dict]:
    from ards_rag.chunking import default_workers, fast_path_active

    results = []
    for dtype in args.dtype.split(","):
        emb = load_embedder("minilm", args.device, dtype)
        table = synthetic_table(args.passages, args.tokens, emb.tokenizer)
        max_tokens = 256
        cfg = resolve_config(
            overrides={
                "embedder": {"device": args.device, "dtype": dtype, "batch_size": args.batch_size},
                "chunking": {"max_tokens": max_tokens, "overlap_tokens": 24, "workers": args.workers},
            }
        )
        # Warm-up (kernels, allocator) on a few passages and every padded width, not timed.
        with tempfile.TemporaryDirectory() as tmp:
            warm = SimpleNamespace(notes=table.notes.head(args.batch_size), labels=table.labels, source=None)
            build_index(warm, Path(tmp) / "w", cfg, progress=False, embedder=emb)
        warmup_s = warm_up(emb, args.batch_size, min(max_tokens, emb.max_seq_length))
        if emb.device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats()
        with tempfile.TemporaryDirectory() as tmp:
            c0 = _cpu_seconds()
            t0 = time.perf_counter()
            report = build_index(table, Path(tmp) / "idx", cfg, progress=args.progress, embedder=emb)
            wall = time.perf_counter() - t0
            cpu = _cpu_seconds() - c0
            idx = NotesIndex.load(Path(tmp) / "idx")
            n_tokens = idx.passages["n_tokens"].to_numpy()
            disk = sum(f.stat().st_size for f in (Path(tmp) / "idx").iterdir())
            del idx
        sample = args.embed_sample or (64 if emb.device.startswith("cuda") else 4) * args.batch_size
        sample = min(sample, report.passages)
        row = {
            "device": emb.device,
            "dtype": emb.dtype,
            "torch_threads": __import__("torch").get_num_threads(),
            "chunk_workers": args.workers or default_workers(len(table.notes)),
            # whether the WordPiece fast path chunks these notes (else the tokenizer's own path)
            "chunk_fast_path": fast_path_active(emb.tokenizer),
            "passages": report.passages,
            "mean_tokens": round(float(n_tokens.mean()), 1),
            "batch_size": args.batch_size,
            "warmup_s": round(warmup_s, 2),
            "end_to_end_s": round(wall, 2),
            "end_to_end_passages_per_s": round(report.passages / wall, 1),
            # Stages overlap (chunking, embedding and writing run at the same time): their sum
            # exceeds the total. embed = embedder busy time (GPU time on CUDA).
            "stages_s": report.stage_seconds,
            "embed_only_passages_per_s": round(report.passages_per_s, 1),
            "embed_warm_passages_per_s": round(embed_warm_rate(emb, n_tokens, args.batch_size, sample), 1),
            "embed_warm_sample": sample,
            # CPU seconds (all threads and chunking workers) per passage: on a shared, overloaded
            # machine, cores / this is what an idle machine would give.
            "cpu_seconds": round(cpu, 2),
            "passages_per_cpu_second": round(report.passages / cpu, 1),
            "peak_rss_mib": round(rss_mib()),
            "index_bytes_per_passage": round(disk / report.passages),
        }
        if emb.device.startswith("cuda"):
            import torch

            row["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
        print(json.dumps(row), flush=True)
        results.append(row)
    return results


def latency(args: argparse.Namespace) -> list[dict]:
    import faiss

    rng = np.random.default_rng(0)
    d, q = 384, 6
    queries = rng.standard_normal((q, d)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    results = []
    for n in [int(x) for x in args.sizes.split(",")]:
        vecs = rng.standard_normal((n, d)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        n_pat = max(1, n // args.per_patient)
        pids = np.repeat(np.arange(n_pat), args.per_patient)[:n]
        passages = pd.DataFrame({"patient_id": [f"p{i:07d}" for i in pids], "note_id": "n"})
        idx = NotesIndex.from_arrays(vecs, passages)
        del vecs
        sample = [f"p{i:07d}" for i in rng.integers(0, n_pat, size=args.trials)]
        row = {"passages": n, "patients": n_pat, "per_patient": args.per_patient, "queries": q}
        for method in ("matrix", "faiss"):
            idx.search_patient(sample[0], queries, 10, method=method)  # warm
            t0 = time.perf_counter()
            for pid in sample:
                idx.search_patient(pid, queries, 10, method=method)
            row[f"{method}_ms"] = round((time.perf_counter() - t0) / len(sample) * 1000, 3)
        # Fused scoring as the Retriever does it (all passages x all queries, then max).
        t0 = time.perf_counter()
        for pid in sample:
            _, s = idx.patient_scores(pid, queries)
            s.max(axis=1)
        row["patient_scores_ms"] = round((time.perf_counter() - t0) / len(sample) * 1000, 3)
        full = sample[: max(3, len(sample) // 50)]
        t0 = time.perf_counter()
        for _ in full:
            idx.faiss_index.search(queries, 10)
        row["whole_index_search_ms"] = round((time.perf_counter() - t0) / len(full) * 1000, 3)
        row["faiss_threads"] = faiss.omp_get_max_threads()
        print(json.dumps(row), flush=True)
        results.append(row)
        del idx
    return results


def projection(rows: list[dict], notes: int, passages_per_note: float) -> dict:
    n = notes * passages_per_note
    out = {"notes": notes, "passages_per_note": passages_per_note, "passages": round(n)}
    for r in rows:
        out[f"hours_{r['device']}_{r['dtype']}"] = round(n / r["end_to_end_passages_per_s"] / 3600, 2)
    out["faiss_gib"] = round(n * 384 * 4 / 2**30, 1)
    if rows:
        out["index_folder_gib"] = round(n * rows[0]["index_bytes_per_passage"] / 2**30, 1)
    print(json.dumps({"projection": out}), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    ap.add_argument("--dtype", default=None,
                    help="comma list of float32,bfloat16,float16,auto (default: float32,bfloat16 on a CPU, float16 on CUDA)")
    ap.add_argument("--passages", type=int, default=1000)
    ap.add_argument("--tokens", type=int, default=150, help="tokens per passage (special tokens included)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    ap.add_argument("--workers", type=int, default=0,
                    help="chunking worker processes (0: the default, one per core but one for big tables)")
    ap.add_argument("--embed-sample", type=int, default=0,
                    help="passages for the warm embedder-only rate (0: 64 batches on CUDA, 4 on a CPU)")
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--per-patient", type=int, default=50)
    ap.add_argument("--trials", type=int, default=500)
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--mimic-notes", type=int, default=2_300_000)
    ap.add_argument("--passages-per-note", type=float, default=0.0,
                    help="for the projection; 0: measure on a synthetic cohort with the default chunking")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--json", default=None, help="also write all results to this JSON file")
    args = ap.parse_args()
    if args.dtype is None:
        args.dtype = "float16" if args.device.startswith("cuda") else "float32,bfloat16"
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    print(json.dumps({"machine": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
                      "load_avg": os.getloadavg()}), flush=True)
    results: dict = {}
    if not args.skip_throughput:
        results["throughput"] = throughput(args)
    if not args.skip_latency:
        results["latency"] = latency(args)
    if results.get("throughput"):
        ppn = args.passages_per_note or passages_per_note()
        results["projection"] = projection(results["throughput"], args.mimic_notes, ppn)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def passages_per_note() -> float:
    """Passages per note with the default chunking on a synthetic radiology-style cohort."""
    from ards_rag.chunking import chunk_notes
    from ards_rag.synthetic import generate_cohort

    notes, _ = generate_cohort(60, seed=3)
    cfg = resolve_config()
    emb = load_embedder("minilm", "cpu", "float32")
    p = chunk_notes(notes.assign(note_seq=0), emb.tokenizer, cfg["chunking"]["max_tokens"],
                    cfg["chunking"]["overlap_tokens"], cfg["chunking"]["min_tokens"])
    ratio = len(p) / len(notes)
    print(json.dumps({"synthetic_passages_per_note": round(ratio, 2),
                      "synthetic_mean_passage_tokens": round(float(p["n_tokens"].mean()), 1)}), flush=True)
    return round(ratio, 2)


if __name__ == "__main__":
    main()
