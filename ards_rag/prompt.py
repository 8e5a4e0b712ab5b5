"""The prompt given to the LLM, and the token budget left for the retrieved context.

The template (``cfg['prompt']['template']``) holds two placeholders: ``{instruction}``, filled from
``cfg['prompt']['instruction']``, and ``{context}``, the patient's context, which Ludwig fills from
the dataset column of that name. Ludwig keeps the *head* of an over-long input, which would cut
off the ``### Response:`` cue at the end of the template, so the context is budgeted in tokens so
that the whole prompt plus the answer always fits ``global_max_sequence_length``.
"""

from __future__ import annotations

import string
from typing import Any

from .errors import ConfigError

Config = dict[str, Any]

#: The answers the model is trained to give (Ludwig text output feature values).
ANSWERS = ("true", "false")

#: Token ids between the prompt and the answer in training: none. The answer is the first
#: token after the prompt, even with a tokenizer that starts every text with BOS
#: (:func:`ards_rag.training.answers_after_prompt`); runs record it as ``answer_prefix``.
ANSWER_PREFIX: tuple[int, ...] = ()

#: Tokens kept free for merges at the boundaries of the context (BPE joins across them).
BOUNDARY_MARGIN = 8


def input_column(cfg: Config) -> str:
    """Name of the Ludwig text input feature (the dataset column holding the context)."""
    try:
        return str(cfg["ludwig"]["input_features"][0]["name"])
    except (KeyError, IndexError, TypeError):
        raise ConfigError("ludwig.input_features: expected one text input feature with a name") from None


def output_column(cfg: Config) -> str:
    """Name of the Ludwig text output feature (the dataset column holding true/false)."""
    try:
        return str(cfg["ludwig"]["output_features"][0]["name"])
    except (KeyError, IndexError, TypeError):
        raise ConfigError("ludwig.output_features: expected one text output feature with a name") from None


def ludwig_template(cfg: Config) -> str:
    """The template given to Ludwig: ``{instruction}`` filled in, the context placeholder kept.

    Raises :class:`ConfigError` when the template lacks the context placeholder or holds any
    other placeholder (Ludwig would treat it as a dataset column).
    """
    prompt = cfg.get("prompt") or {}
    template = prompt.get("template")
    instruction = prompt.get("instruction")
    if not isinstance(template, str) or not isinstance(instruction, str):
        raise ConfigError("prompt.template and prompt.instruction must be strings")
    column = input_column(cfg)
    escaped = instruction.replace("{", "{{").replace("}", "}}")
    filled = template.replace("{instruction}", escaped)
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(filled) if f is not None}
    except ValueError as exc:
        raise ConfigError(f"prompt.template: invalid placeholder syntax ({exc})") from None
    if fields != {column}:
        raise ConfigError(
            f"prompt.template: expected the placeholders {{instruction}} and {{{column}}} only, "
            f"found {', '.join(sorted('{' + f + '}' for f in fields)) or 'none'}"
        )
    return filled


def render_prompt(cfg: Config, context: str) -> str:
    """The full prompt for one patient, exactly as Ludwig builds it from the template."""
    return ludwig_template(cfg).format(**{input_column(cfg): context})


def max_sequence_length(cfg: Config) -> int:
    """``ludwig.preprocessing.global_max_sequence_length``: prompt + answer tokens, at most."""
    value = (cfg.get("ludwig", {}).get("preprocessing") or {}).get("global_max_sequence_length")
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(
            "ludwig.preprocessing.global_max_sequence_length must be a positive integer "
            f"(got {value!r})"
        )
    return value


def answer_token_ids(tokenizer: Any, answer: str) -> list[int]:
    """Token ids Ludwig trains on for ``answer``: its tokenization (special tokens included,
    from the first BOS on, as ``remove_left_padding`` keeps them) followed by EOS."""
    ids = list(tokenizer.encode(answer, truncation=True))
    if tokenizer.bos_token_id is not None and tokenizer.bos_token_id in ids:
        ids = ids[ids.index(tokenizer.bos_token_id):]
    return ids + [tokenizer.eos_token_id]


def answer_tokens(tokenizer: Any) -> int:
    """Tokens taken by the longest answer (with EOS) after the prompt."""
    return max(len(answer_token_ids(tokenizer, a)) for a in ANSWERS)


def prompt_overhead(cfg: Config, tokenizer: Any) -> int:
    """Tokens of the prompt without context (template, instruction, special tokens)."""
    return len(tokenizer.encode(render_prompt(cfg, ""), truncation=True))


def input_max_length(cfg: Config, tokenizer: Any, max_length: int | None = None) -> int:
    """The longest prompt (input ids) that leaves room for the answer within the maximum."""
    limit = max_sequence_length(cfg)
    if max_length is not None:
        limit = min(limit, max_length)
    return limit - answer_tokens(tokenizer)


def context_budget(cfg: Config, tokenizer: Any, max_length: int | None = None) -> int:
    """Tokens available to the context so that the whole prompt and the answer fit.

    Derived from ``global_max_sequence_length`` (capped by ``max_length``, e.g. the model's
    context window), minus the template and instruction tokens, the special tokens, the
    answer tokens (with EOS) and a small margin for token merges at the context boundaries.
    ``retrieval.context_tokens`` set to an integer overrides the derived budget, but must fit.

    Raises :class:`ConfigError` when nothing is left for the context or the override is too big.
    """
    room = input_max_length(cfg, tokenizer, max_length) - prompt_overhead(cfg, tokenizer)
    derived = room - BOUNDARY_MARGIN
    if derived <= 0:
        raise ConfigError(
            f"ludwig.preprocessing.global_max_sequence_length ({max_sequence_length(cfg)}) leaves no "
            "room for the context after the prompt template; raise it or shorten prompt.template"
        )
    override = (cfg.get("retrieval") or {}).get("context_tokens", "auto")
    if override in (None, "auto"):
        return derived
    if not isinstance(override, int) or isinstance(override, bool) or override <= 0:
        raise ConfigError(f"retrieval.context_tokens must be 'auto' or a positive integer (got {override!r})")
    if override > derived:
        raise ConfigError(
            f"retrieval.context_tokens ({override}) does not fit: at most {derived} tokens are left for "
            f"the context with global_max_sequence_length {max_sequence_length(cfg)}; lower it or use 'auto'"
        )
    return override
