"""Prompt rendering and the context token budget, with the real SmolLM2 tokenizer."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import pytest

from ards_rag.config import DEFAULT_INSTRUCTION, resolve_config
from ards_rag.errors import ConfigError
from ards_rag.prompt import (
    BOUNDARY_MARGIN,
    answer_token_ids,
    answer_tokens,
    context_budget,
    input_max_length,
    ludwig_template,
    prompt_overhead,
    render_prompt,
)
from ards_rag.retrieval import TokenCounter

NOTE_WORDS = (
    "FINDINGS: IMPRESSION: bilateral diffuse airspace opacities ___ ETT 4.5 cm above carina, "
    "NG tube below diaphragm. PEEP 12 FiO2 0.6 P/F 110 ; r/o ARDS vs. CHF? ≥ µg ½ \n\n"
    "[Note 3 | 2180-05-02 | Radiology | FINDINGS] {braces} }{ pleural effusion, atelectasis"
).split(" ")


def _text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(NOTE_WORDS) for _ in range(n_words))


def test_render_prompt_fills_instruction_and_context() -> None:
    cfg = resolve_config()
    out = render_prompt(cfg, "CXR: clear lungs")
    assert DEFAULT_INSTRUCTION in out
    assert "CXR: clear lungs" in out
    assert out.endswith("### Response:\n")
    assert "{instruction}" not in out and "{context}" not in out


def test_ludwig_template_keeps_only_the_context_placeholder() -> None:
    cfg = resolve_config(overrides={"prompt": {"instruction": "Say {true} or {false}."}})
    template = ludwig_template(cfg)
    assert "{context}" in template and "{instruction}" not in template
    # Braces of the instruction are escaped for Ludwig's str.format, and render the same.
    assert template.format(context="X {y}") == render_prompt(cfg, "X {y}")
    assert "Say {true} or {false}." in render_prompt(cfg, "")


@pytest.mark.parametrize("template", ["{instruction} only", "{instruction} {context} {other}"])
def test_bad_templates_are_config_errors(template: str) -> None:
    cfg = resolve_config(overrides={"prompt": {"template": template}})
    with pytest.raises(ConfigError, match="prompt.template"):
        ludwig_template(cfg)


def test_answer_ids_end_with_eos(smollm2_tokenizer) -> None:  # noqa: ANN001
    tok = smollm2_tokenizer
    for answer in ("true", "false"):
        ids = answer_token_ids(tok, answer)
        assert ids[-1] == tok.eos_token_id and len(ids) >= 2
    assert answer_token_ids(tok, "true")[0] != answer_token_ids(tok, "false")[0]


@pytest.mark.parametrize("max_len", [160, 384, 512, 2048])
def test_prompt_at_full_budget_never_exceeds_the_maximum(smollm2_tokenizer, max_len: int) -> None:  # noqa: ANN001
    tok = smollm2_tokenizer
    cfg = resolve_config(overrides={"ludwig": {"preprocessing": {"global_max_sequence_length": max_len}}})
    budget = context_budget(cfg, tok)
    assert budget == max_len - answer_tokens(tok) - prompt_overhead(cfg, tok) - BOUNDARY_MARGIN
    counter = TokenCounter(tok)
    rng = random.Random(max_len)
    for trial in range(25):
        # Contexts filled to the budget, cut at arbitrary places (merges at both boundaries).
        context = counter.cut(_text(rng, 4 * max_len), budget - rng.randrange(0, 3))
        assert counter.count(context) <= budget
        n_prompt = len(tok.encode(render_prompt(cfg, context)))
        assert n_prompt <= input_max_length(cfg, tok), trial
        assert n_prompt + answer_tokens(tok) <= max_len


def test_budget_respects_a_model_window(smollm2_tokenizer) -> None:  # noqa: ANN001
    cfg = resolve_config(overrides={"ludwig": {"preprocessing": {"global_max_sequence_length": 4096}}})
    assert context_budget(cfg, smollm2_tokenizer, max_length=1024) < 1024
    assert context_budget(cfg, smollm2_tokenizer, max_length=1024) < context_budget(cfg, smollm2_tokenizer)


def test_context_tokens_override_must_fit(smollm2_tokenizer) -> None:  # noqa: ANN001
    cfg = resolve_config()
    derived = context_budget(cfg, smollm2_tokenizer)
    ok = copy.deepcopy(cfg)
    ok["retrieval"]["context_tokens"] = derived - 10
    assert context_budget(ok, smollm2_tokenizer) == derived - 10
    too_big = copy.deepcopy(cfg)
    too_big["retrieval"]["context_tokens"] = derived + 1
    with pytest.raises(ConfigError, match="does not fit"):
        context_budget(too_big, smollm2_tokenizer)
    bad = copy.deepcopy(cfg)
    bad["retrieval"]["context_tokens"] = "lots"
    with pytest.raises(ConfigError, match="context_tokens"):
        context_budget(bad, smollm2_tokenizer)


def test_a_maximum_below_the_template_is_a_config_error(smollm2_tokenizer) -> None:  # noqa: ANN001
    cfg = resolve_config(overrides={"ludwig": {"preprocessing": {"global_max_sequence_length": 30}}})
    with pytest.raises(ConfigError, match="global_max_sequence_length"):
        context_budget(cfg, smollm2_tokenizer)
    cfg["ludwig"]["preprocessing"]["global_max_sequence_length"] = None
    with pytest.raises(ConfigError, match="positive integer"):
        context_budget(cfg, smollm2_tokenizer)


# -------------------------------------------------------------------------------- configs

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_default_yaml_equals_the_built_in_defaults() -> None:
    from ards_rag.config import DEFAULTS, read_yaml

    assert read_yaml(CONFIGS / "default.yaml") == DEFAULTS
    assert resolve_config(CONFIGS / "default.yaml") == resolve_config()


@pytest.mark.parametrize(
    "name", ["default.yaml", "gemma3-270m.yaml", "llama2-7b-qlora.yaml", "smollm2-full.yaml", "smollm2-full-1024.yaml",
             "smollm2-full-2048.yaml"]
)
def test_shipped_configs_resolve_and_leave_room_for_context(name: str, smollm2_tokenizer) -> None:  # noqa: ANN001
    from ards_rag.config import DEFAULTS, read_yaml

    raw = read_yaml(CONFIGS / name)
    assert set(raw) == set(DEFAULTS)  # a full configuration...
    if name in ("smollm2-full-1024.yaml", "smollm2-full-2048.yaml"):  # ...with the default queries and four more
        queries = raw["retrieval"]["queries"]
        assert queries[: len(DEFAULTS["retrieval"]["queries"])] == DEFAULTS["retrieval"]["queries"]
        assert len(queries) == len(DEFAULTS["retrieval"]["queries"]) + 4
        raw["retrieval"]["queries"] = DEFAULTS["retrieval"]["queries"]
    assert all(raw[k] == DEFAULTS[k] for k in DEFAULTS if k != "ludwig")  # ...differing in ludwig only
    cfg = resolve_config(CONFIGS / name)
    assert cfg["ludwig"]["trainer"]["type"] == "finetune"
    assert cfg["ludwig"]["generation"]["do_sample"] is False
    assert cfg["ludwig"]["backend"]["type"] == "local"
    assert context_budget(cfg, smollm2_tokenizer) >= 256
    if name.startswith("llama2"):
        q = cfg["ludwig"]["quantization"]
        assert (q["bits"], q["bnb_4bit_quant_type"], q["bnb_4bit_compute_dtype"]) == (4, "nf4", "bfloat16")
        assert cfg["ludwig"]["trainer"]["enable_gradient_checkpointing"] is True
