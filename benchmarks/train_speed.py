"""Ludwig LoRA / QLoRA training speed and peak GPU memory, on synthetic rows of a fixed length.

Self-contained: rows are generated here (random note-like words filled to the context budget),
no index needed. Training goes through the project's own path (``ards_rag.training.ludwig_config``
+ ``ludwig_fixes``, as ``ards-rag train`` does). A Ludwig callback times every training
step (CUDA-synchronized); steady-state tokens/s excludes model loading, preprocessing, evaluation
and the first ``--warmup`` steps. Each sequence length runs in its own process, so that peak GPU
memory is per setting. One JSON line per setting on stdout.

Examples::

    # CPU, the embedded default (SmolLM2-135M, LoRA, 384-token prompts)
    python benchmarks/train_speed.py --steps 6
    # H100: Llama-2-7B architecture with random weights, 4-bit NF4 + LoRA, at the config's
    # budget (2,048) and at 4,096 tokens
    python benchmarks/train_speed.py --device cuda --config configs/llama2-7b-qlora.yaml \\
        --random-llama2-7b --seq-lens default,2048,4096 --steps 12
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORDS = (
    "FINDINGS: IMPRESSION: bilateral diffuse airspace opacities endotracheal tube terminates cm "
    "above the carina nasogastric tube below the diaphragm right internal jugular line SVC no "
    "pneumothorax small left pleural effusion atelectasis at the bases heart size normal "
    "mediastinal contours unchanged compared to prior study patient intubated PEEP FiO2 ___ "
    "worsening interstitial edema versus infection clinical correlation recommended"
).split()


def random_llama2_7b(folder: Path, device: str) -> Path:
    """Save a Llama-2-7B-shaped model with random weights (bf16) + the SmolLM2 tokenizer.

    Exact for speed and memory, not for accuracy. The vocabulary is SmolLM2's (49,152 words,
    not Llama-2's 32,000): the output layer is 1.5x larger, about 2% more FLOPs per token.
    """
    if (folder / "config.json").is_file() and list(folder.glob("*.safetensors")):
        return folder
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from ards_rag.models import PACKAGED, _fix_padding_token, find_gguf

    gguf = find_gguf(PACKAGED["smollm2-135m"])
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    _fix_padding_token(tok)
    config = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                         vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, dtype="bfloat16")
    torch.manual_seed(0)
    # Initialized directly on the device in bf16 (seconds on a GPU; a minute or two on a CPU).
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    tmp = folder.with_name(folder.name + ".tmp")
    model.save_pretrained(str(tmp), max_shard_size="5GB")
    tok.save_pretrained(str(tmp))
    tmp.rename(folder)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return folder


def synthetic_rows(tokenizer: Any, budget: int, n: int, seed: int = 0) -> list[str]:
    """``n`` contexts of exactly (at most) ``budget`` tokens of note-like words."""
    from ards_rag.retrieval import TokenCounter

    counter = TokenCounter(tokenizer)
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = " ".join(rng.choice(WORDS) for _ in range(budget * 2))
        out.append(counter.cut(words, budget))
    return out


def prepare(args: argparse.Namespace, seq_len: str) -> tuple[dict[str, Any], Any, int, str]:
    """Resolved config for one setting, the tokenizer, the context budget, the base model path."""
    from transformers import AutoTokenizer

    from ards_rag.config import resolve_config
    from ards_rag.models import resolve_base_model
    from ards_rag.prompt import context_budget

    cfg = resolve_config(args.config)
    if args.random_llama2_7b:
        base = str(random_llama2_7b(Path(args.model_dir), "cuda" if args.device == "cuda" else "cpu"))
    else:
        base = resolve_base_model(args.base_model or cfg["ludwig"]["base_model"])
    cfg["ludwig"]["base_model"] = base
    if seq_len != "default":
        cfg["ludwig"]["preprocessing"]["global_max_sequence_length"] = int(seq_len)
    if args.batch_size:
        cfg["ludwig"]["trainer"]["batch_size"] = args.batch_size
    if args.quantization == "4bit":
        cfg["ludwig"]["quantization"] = {"bits": 4, "bnb_4bit_quant_type": "nf4",
                                         "bnb_4bit_compute_dtype": "bfloat16", "bnb_4bit_use_double_quant": True}
    elif args.quantization == "none":
        cfg["ludwig"]["quantization"] = None
    cfg["ludwig"]["trainer"]["epochs"] = 1
    tok = AutoTokenizer.from_pretrained(base)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return cfg, tok, context_budget(cfg, tok), base


def ludwig_train(lc: dict[str, Any], frame: Any, out_dir: Path, callbacks: list[Any] | None = None,
                 no_tf32: bool = False) -> Any:
    """Train a LudwigModel on ``frame`` as ``ards-rag train`` does (``ludwig_fixes``), quietly."""
    from ludwig.api import LudwigModel

    from ards_rag import training

    if no_tf32:  # exact float32 matmuls, Ludwig's own setting, for an A/B of training.tf32_matmuls
        training.tf32_matmuls = contextlib.nullcontext  # type: ignore[assignment]
    model = LudwigModel(lc, logging_level=logging.ERROR, backend="local", callbacks=callbacks)
    with training.ludwig_fixes():
        model.train(dataset=frame, output_directory=str(out_dir),
                    skip_save_model=False, skip_save_progress=True, skip_save_log=True,
                    skip_save_processed_input=True, skip_save_training_description=True,
                    skip_save_training_statistics=True, random_seed=0)
    return model


def run_one(args: argparse.Namespace, seq_len: str) -> dict[str, Any]:
    """Train for ``--steps`` steps at one sequence length; return the measurements."""
    import pandas as pd
    import torch
    from ludwig.callbacks import Callback

    from ards_rag.prompt import ludwig_template
    from ards_rag.training import ludwig_config

    t0 = time.perf_counter()
    cfg, tok, budget, base = prepare(args, seq_len)
    lc = ludwig_config(cfg, base, tok)
    trainer = lc["trainer"]
    batch = int(trainer.get("batch_size", 1))
    n_train = args.steps * batch
    contexts = synthetic_rows(tok, budget, n_train + 2)
    template = ludwig_template(cfg)
    prompt_tokens = [len(tok.encode(template.format(context=c))) for c in contexts]
    seq_tokens = [n + 2 for n in prompt_tokens]  # + answer token + EOS
    labels = ["true" if i % 2 else "false" for i in range(len(contexts))]
    frame = pd.DataFrame({"context": contexts, "label": labels, "split": [0] * n_train + [1, 1]})
    cuda = torch.cuda.is_available() and args.device == "cuda"

    class Timer(Callback):
        def __init__(self) -> None:
            self.steps: list[float] = []
            self._t = 0.0

        def on_batch_start(self, trainer, progress_tracker, save_path, **kw) -> None:  # noqa: ANN001
            if cuda:
                torch.cuda.synchronize()
            self._t = time.perf_counter()

        def on_batch_end(self, trainer, progress_tracker, save_path, sync_step=True, **kw) -> None:  # noqa: ANN001
            if cuda:
                torch.cuda.synchronize()
            self.steps.append(time.perf_counter() - self._t)

    timer = Timer()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    ludwig_train(lc, frame, Path(args.out_dir) / f"train-{seq_len}", callbacks=[timer], no_tf32=args.no_tf32)
    total = time.perf_counter() - t0
    steady = timer.steps[args.warmup:]
    mean_tokens = sum(seq_tokens[:n_train]) / n_train
    out = {
        "benchmark": "train_speed",
        "device": torch.cuda.get_device_name(0) if cuda else f"cpu x{torch.get_num_threads()} threads",
        "base_model": Path(base).name if Path(base).exists() else base,
        "random_llama2_7b": bool(args.random_llama2_7b),
        "quantization": json.dumps(lc.get("quantization")),
        "tf32": cuda and not args.no_tf32,
        "gradient_checkpointing": bool(trainer.get("enable_gradient_checkpointing", False)),
        "global_max_sequence_length": cfg["ludwig"]["preprocessing"]["global_max_sequence_length"],
        "context_budget": budget,
        "tokens_per_row": round(mean_tokens, 1),
        "batch_size": batch,
        "steps_timed": len(steady),
        "step_s": round(sum(steady) / len(steady), 4) if steady else None,
        "tokens_per_s_steady": round(mean_tokens * batch * len(steady) / sum(steady), 1) if steady else None,
        "first_step_s": round(timer.steps[0], 3) if timer.steps else None,
        "total_s_including_load": round(total, 1),
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "peak_gpu_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2) if cuda else None,
    }
    return out


def add_model_args(ap: argparse.ArgumentParser) -> None:
    """Arguments shared with predict_speed.py: config, model, device, lengths, launcher."""
    ap.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    ap.add_argument("--base-model", default=None, help="override ludwig.base_model")
    ap.add_argument("--random-llama2-7b", action="store_true",
                    help="build (once) a random-weight Llama-2-7B folder in --model-dir and use it")
    ap.add_argument("--model-dir", default="/tmp/ards-rag-bench/llama2-7b-random")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--seq-lens", default="default",
                    help="comma list of global_max_sequence_length values; 'default' = the config's")
    ap.add_argument("--quantization", choices=["config", "4bit", "none"], default="config")
    ap.add_argument("--out-dir", default="/tmp/ards-rag-bench")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)


def run_per_length(args: argparse.Namespace, script: str, name: str,
                   run_one: Callable[[argparse.Namespace, str], list[dict[str, Any]]]) -> None:
    """Run ``run_one`` for each sequence length in its own process (peak GPU memory per length);
    print one JSON line per result, or an error line for a setting that failed."""
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    logging.basicConfig(level=logging.ERROR)
    if args.one is not None:
        for line in run_one(args, args.one):
            print(json.dumps(line), flush=True)
        return
    if args.random_llama2_7b:  # build the folder once, before the per-length processes
        random_llama2_7b(Path(args.model_dir), "cuda" if args.device == "cuda" else "cpu")
    for seq_len in args.seq_lens.split(","):
        cmd = [sys.executable, script, *sys.argv[1:], "--one", seq_len.strip()]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            print(json.dumps({"benchmark": name, "seq_len": seq_len, "error": " | ".join(tail)}), flush=True)
        for line in lines:
            print(line, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap)
    ap.add_argument("--steps", type=int, default=8, help="training steps per setting")
    ap.add_argument("--warmup", type=int, default=2, help="first steps left out of the steady state")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--no-tf32", action="store_true", help="exact float32 matmuls on a GPU (no TF32)")
    run_per_length(ap.parse_args(), __file__, "train_speed", lambda a, s: [run_one(a, s)])


if __name__ == "__main__":
    main()
