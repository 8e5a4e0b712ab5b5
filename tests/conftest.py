"""Shared fixtures: a tiny random Llama (real architecture, real SmolLM2 tokenizer) in a folder.

``tiny_llama_dir`` is session-scoped (built once, about 20 s, mostly reading the tokenizer from the
packaged GGUF): a Hugging Face folder that Ludwig accepts as ``base_model`` and that trains in
seconds on a CPU. Its weights are random, so it learns only what a test teaches it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _build_smollm2_tokenizer(out_dir: Path) -> Path:
    from transformers import AutoTokenizer

    from ards_rag.models import PACKAGED, _fix_padding_token, find_gguf

    gguf = find_gguf(PACKAGED["smollm2-135m"])
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    _fix_padding_token(tokenizer)
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding only the real SmolLM2-135M tokenizer (read from the packaged GGUF)."""
    return _build_smollm2_tokenizer(tmp_path_factory.mktemp("smollm2-tokenizer"))


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_tokenizer_dir: Path):  # noqa: ANN201 - a transformers tokenizer
    """The real SmolLM2-135M tokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2_tokenizer_dir))


def build_tiny_llama(out_dir: Path, tokenizer_dir: Path, seed: int = 0, hidden_size: int = 32) -> Path:
    """Save a 2-layer, ``hidden_size``-wide (default 32) random LlamaForCausalLM with the given
    tokenizer to ``out_dir``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer_dir: Path) -> Path:
    """Folder of a tiny random Llama with the SmolLM2 tokenizer: a valid Ludwig ``base_model``."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), smollm2_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_llama64_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer_dir: Path) -> Path:
    """The same, 64 wide, for 4-bit tests: bitsandbytes quantizes in blocks of 64 inputs, and on a
    CPU with AVX-512 bf16 its inference path repacks weights per block, which fails for a layer
    narrower than one block (32 inputs: "shape '[32, 0]' is invalid"). Real models are far wider."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama64"), smollm2_tokenizer_dir, hidden_size=64)


@pytest.fixture(scope="session")
def tiny_llama_bos_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer_dir: Path) -> Path:
    """The tiny Llama with a tokenizer that starts every text with BOS, as Gemma's and
    Llama-2's do (the SmolLM2 tokenizer with a BOS-prepending post-processor)."""
    import json

    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("tiny-llama-bos")
    tokenizer_dir = folder / "tokenizer"
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_tokenizer_dir))
    tokenizer.save_pretrained(str(tokenizer_dir))
    path = tokenizer_dir / "tokenizer.json"
    spec = json.loads(path.read_text("utf-8"))
    bos = tokenizer.bos_token
    bos_id = next(t["id"] for t in spec["added_tokens"] if t["content"] == bos)
    spec["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}},
    }
    path.write_text(json.dumps(spec), "utf-8")
    return build_tiny_llama(folder / "model", tokenizer_dir)


# ------------------------------------------------------------------- a small index and a run

POSITIVE_TEXT = (
    "FINDINGS: Diffuse bilateral airspace opacities, worse than prior, not explained by "
    "effusion. Patient intubated for hypoxemic respiratory failure. IMPRESSION: ARDS pattern."
)
NEGATIVE_TEXT = (
    "FINDINGS: Lungs are clear. No focal consolidation, effusion or pneumothorax. Heart size "
    "normal. IMPRESSION: No acute cardiopulmonary process."
)
FILLER_TEXT = "EXAMINATION: Abdominal ultrasound. FINDINGS: Liver normal in size. No ascites."


def write_small_cohort(path: Path, n_patients: int = 16, labels: str = "mixed") -> Path:
    """A long-format notes CSV: 2 notes per patient; ``labels``: mixed (every 3rd patient
    positive), none (unlabeled) or one (all negative)."""
    import pandas as pd

    rows = []
    for i in range(n_patients):
        pid = f"P{i:03d}"
        positive = i % 3 == 0
        label = {"mixed": "true" if positive else "false", "none": "", "one": "false"}[labels]
        texts = [FILLER_TEXT + f" Visit {i}.", (POSITIVE_TEXT if positive else NEGATIVE_TEXT) + f" Bed {i}."]
        for k, text in enumerate(texts):
            rows.append({"patient_id": pid, "note_id": f"{pid}-N{k}", "charttime": f"2180-01-0{k + 1} 08:00:00",
                         "note_type": "Radiology", "text": text, "label": label})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def shared_embedder():  # noqa: ANN201 - an ards_rag.embedding.Embedder
    """The packaged all-MiniLM-L6-v2 embedder, loaded once."""
    from ards_rag.embedding import load_embedder

    return load_embedder("minilm", device="cpu")


def build_small_index(out: Path, embedder, n_patients: int = 16, labels: str = "mixed") -> Path:  # noqa: ANN001
    """Index a small cohort (see :func:`write_small_cohort`) at ``out/index``."""
    from ards_rag.config import resolve_config
    from ards_rag.index import build_index
    from ards_rag.notes import load_notes

    csv = write_small_cohort(out / "notes.csv", n_patients, labels)
    build_index(load_notes(csv), out / "index", resolve_config(), progress=False, embedder=embedder)
    return out / "index"


@pytest.fixture(scope="session")
def small_index_dir(tmp_path_factory: pytest.TempPathFactory, shared_embedder) -> Path:  # noqa: ANN001
    """An index of 16 labeled patients (6 ARDS), 2 short notes each."""
    return build_small_index(tmp_path_factory.mktemp("small-index"), shared_embedder)


def tiny_config(base_model: Path, **ludwig: object) -> dict:
    """The default config on the tiny Llama: 1 epoch, batch 4, 160-token prompts."""
    from ards_rag.config import resolve_config

    over = {"ludwig": {"base_model": str(base_model),
                       "trainer": {"epochs": 1, "batch_size": 4, "eval_batch_size": 8},
                       "preprocessing": {"global_max_sequence_length": 160}}}
    for key, value in ludwig.items():
        over["ludwig"][key] = value
    return resolve_config(overrides=over)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path, small_index_dir: Path) -> Path:
    """A finished run: the tiny Llama fine-tuned (LoRA, 1 epoch) on the small index."""
    from ards_rag.training import train

    run = tmp_path_factory.mktemp("runs") / "tiny"
    train(small_index_dir, tiny_config(tiny_llama_dir), run, progress=False)
    return run
