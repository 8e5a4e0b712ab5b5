"""Fine-tuning with Ludwig: labeled patients' contexts -> "true"/"false", into a run folder.

:func:`train` builds one row per labeled patient of an index (the patient's context from
:class:`ards_rag.retrieval.Retriever`, or the seed's truncated notes), splits the patients
(stratified, seeded, patient-level) into train/validation/test, oversamples the minority class
in train, hands Ludwig a config built from the resolved project config, and writes the run folder
atomically (see docs/DESIGN.md): the Ludwig model (LoRA adapter), ``config.yaml``, ``split.csv``,
``index_manifest.json``, ``training_statistics.json``, ``versions.json``, ``threshold.json``
(best F1 on validation) and ``summary.json``.

Ludwig 0.17.10 crashes at the end of 4-bit training when it reloads the best checkpoint
(bitsandbytes' quantization state is saved with the weights and then reported as unexpected
keys). :func:`adapter_only_checkpoints` makes Ludwig's checkpoints hold only the trainable
(adapter) weights, so the reload restores exactly the best adapter and nothing else. Ludwig also
forces eager attention on quantized models; :func:`sdpa_attention` switches them to SDPA. And
peft's ``prepare_model_for_kbit_training`` (which Ludwig calls) casts every non-quantized weight
to float32, so without autocast the residual stream and attention of a 4-bit model run in float32;
:func:`quantized_autocast` runs its forward passes on a GPU in the quantization's compute dtype
(bfloat16 in ``configs/llama2-7b-qlora.yaml``), as the QLoRA recipe does.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .config import Config, first_unknown_key, save_config
from .errors import ConfigError, RunError, TrainingError
from .fsutil import atomic_dir, foreign_contents
from .prompt import (
    ANSWER_PREFIX,
    ANSWERS,
    answer_tokens,
    context_budget,
    input_column,
    input_max_length,
    ludwig_template,
    output_column,
)

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
# Files every run folder has: a folder holding none of them is not replaced by a run.
RUN_MARKERS = ("summary.json", "split.csv")
_SPLIT_CODE = {"train": 0, "validation": 1, "test": 2}  # Ludwig's fixed-split codes
_TRUTH = "__is_ards"  # the training rows' boolean label (the answer column holds the strings)
SPLIT_COLUMN = "split"
KEY_PACKAGES = ("ards-rag", "ludwig", "torch", "transformers", "peft", "bitsandbytes",
                "sentence-transformers", "faiss-cpu", "numpy", "pandas")


# ----------------------------------------------------------------------------------- report


@dataclass
class TrainReport:
    """What :func:`train` did; ``str()`` is the summary printed by ``ards-rag train``."""

    run_dir: str
    base_model: str
    zero_shot: bool
    context_strategy: str
    patients: dict[str, int]  # labeled patients per split
    positives: dict[str, int]  # ARDS patients per split
    train_rows: int  # after oversampling
    epochs: int
    best_epoch: int | None
    train_loss: float | None
    validation_loss: float | None
    threshold: float
    validation_f1: float | None
    context_budget: int
    max_prompt_tokens: int
    seconds: float
    train_seconds: float
    train_tokens_per_s: float | None
    quantization: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form (``summary.json``)."""
        return asdict(self)

    def __str__(self) -> str:
        p, pos = self.patients, self.positives
        mode = "zero-shot (base model, prompt only)" if self.zero_shot else "LoRA fine-tuning"
        lines = [
            f"Run: {self.run_dir}",
            f"  model: {self.base_model} ({mode}, quantization: {self.quantization})",
            f"  context: {self.context_strategy}, budget {self.context_budget} tokens "
            f"(longest prompt {self.max_prompt_tokens} tokens)",
            "  patients: " + ", ".join(f"{s} {p.get(s, 0)} ({pos.get(s, 0)} ARDS)" for s in SPLITS)
            + (f"; {self.train_rows} training rows after oversampling" if not self.zero_shot else ""),
        ]
        if not self.zero_shot:
            def fmt(x: float | None) -> str:
                return "-" if x is None else f"{x:.4f}"

            speed = f", {self.train_tokens_per_s:.0f} tokens/s" if self.train_tokens_per_s else ""
            lines.append(
                f"  epochs: {self.epochs} (best {self.best_epoch if self.best_epoch is not None else '-'}),"
                f" train loss {fmt(self.train_loss)}, validation loss {fmt(self.validation_loss)}"
            )
            lines.append(f"  training: {self.train_seconds:.0f} s{speed}")
        f1 = "-" if self.validation_f1 is None else f"{self.validation_f1:.3f}"
        lines.append(f"  threshold: {self.threshold:.4f} (best F1 on validation: {f1})")
        lines.append(f"  total time: {self.seconds:.0f} s")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------ split


def stratified_split(labels: pd.DataFrame, validation: float, test: float, seed: int) -> pd.DataFrame:
    """Patient-level split, stratified by label and seeded: ``patient_id, split, label``.

    ``labels``: ``patient_id``, ``label`` (bool) of labeled patients, one row each. Each class is
    shuffled and cut into test, validation and train by the given fractions (rounded; a class of
    at least 3 patients puts at least one in each non-empty fraction and keeps one in train).
    """
    for name, frac in (("split.validation", validation), ("split.test", test)):
        if not isinstance(frac, (int, float)) or isinstance(frac, bool) or not 0 <= frac < 1:
            raise ConfigError(f"{name} must be a fraction in [0, 1) (got {frac!r})")
    if validation + test >= 1:
        raise ConfigError("split.validation + split.test must leave patients for training (< 1)")
    if labels["patient_id"].duplicated().any():
        raise TrainingError(f"patient {labels.loc[labels['patient_id'].duplicated(), 'patient_id'].iloc[0]!r} "
                            "is labeled twice")
    rng = np.random.default_rng(seed)
    parts = []
    for value in (True, False):
        ids = np.array(sorted(labels.loc[labels["label"] == value, "patient_id"].astype(str)))
        ids = ids[rng.permutation(len(ids))]
        n = len(ids)
        n_test = _count(n, test)
        n_val = _count(n, validation)
        while n_test + n_val >= n and (n_test or n_val):  # keep one in train
            if n_val >= n_test:
                n_val -= 1
            else:
                n_test -= 1
        assigned = ["test"] * n_test + ["validation"] * n_val + ["train"] * (n - n_test - n_val)
        parts.append(pd.DataFrame({"patient_id": ids, "split": assigned, "label": value}))
    out = pd.concat(parts, ignore_index=True)
    order = {s: i for i, s in enumerate(SPLITS)}
    out["_o"] = out["split"].map(order)
    return out.sort_values(["_o", "patient_id"], kind="stable").drop(columns="_o").reset_index(drop=True)


def _count(n: int, frac: float) -> int:
    if frac <= 0 or n == 0:
        return 0
    k = int(math.floor(n * frac + 0.5))
    return max(k, 1) if n >= 3 else k


def oversample(train: pd.DataFrame, seed: int, label_column: str = "label") -> pd.DataFrame:
    """Repeat minority-class rows (whole copies, then a seeded sample of the remainder) until
    both classes have as many rows as the majority; rows are then shuffled (seeded)."""
    rng = np.random.default_rng(seed)
    counts = train[label_column].value_counts()
    if len(counts) < 2:
        return train.reset_index(drop=True)
    major, minor = counts.idxmax(), counts.idxmin()
    n_major, n_minor = int(counts.max()), int(counts.min())
    minority = train[train[label_column] == minor]
    reps, rest = divmod(n_major, n_minor)
    extra = [minority] * (reps - 1)
    if rest:
        extra.append(minority.iloc[np.sort(rng.choice(n_minor, size=rest, replace=False))])
    out = pd.concat([train, *extra], ignore_index=True)
    del major
    return out.iloc[rng.permutation(len(out))].reset_index(drop=True)


# ------------------------------------------------------------------------ Ludwig plumbing


def check_ludwig_keys(cfg: Config) -> None:
    """Refuse an unknown key at the top of ``ludwig`` or in ``ludwig.trainer`` (a typo such as
    ``trainer.epoch``), which Ludwig 0.17 would drop silently and train with its default. The
    known keys are Ludwig's own schema's (LLM model config, fine-tune trainer). Raises
    :class:`ConfigError` naming the key and the closest known one."""
    from ludwig.schema.model_types.llm import LLMModelConfig
    from ludwig.schema.trainer import FineTuneTrainerConfig

    lc = cfg.get("ludwig")
    if not isinstance(lc, dict):
        raise ConfigError(f"ludwig must be a mapping of Ludwig settings (got {lc!r})")
    trainer = lc.get("trainer") or {}
    if not isinstance(trainer, dict):
        raise ConfigError(f"ludwig.trainer must be a mapping (got {trainer!r})")
    checks = [("ludwig", lc, LLMModelConfig.model_fields)]
    if trainer.get("type", "finetune") == "finetune":
        checks.append(("ludwig.trainer", trainer, FineTuneTrainerConfig.model_fields))
    for where, section, known in checks:
        unknown = first_unknown_key(section, known)
        if unknown is not None:
            key, close = unknown
            hint = f"; did you mean {where}.{close}?" if close else ""
            raise ConfigError(f"unknown Ludwig setting {where}.{key}{hint}")


def ludwig_config(cfg: Config, base_model_path: str, tokenizer: Any, *, zero_shot: bool = False) -> dict[str, Any]:
    """The Ludwig config for ``cfg``: resolved base model, the prompt template, a fixed split
    column, the local backend, greedy generation, and input/output lengths that keep the whole
    prompt and answer within ``global_max_sequence_length``."""
    lc = {k: copy.deepcopy(v) for k, v in cfg["ludwig"].items() if v is not None}
    if lc.get("model_type", "llm") != "llm":
        raise ConfigError("ludwig.model_type must be llm")
    lc["model_type"] = "llm"
    lc["base_model"] = base_model_path
    lc["prompt"] = {"template": ludwig_template(cfg)}
    pre = dict(lc.get("preprocessing") or {})
    pre["split"] = {"type": "fixed", "column": SPLIT_COLUMN}
    lc["preprocessing"] = pre
    lc["backend"] = {**(lc.get("backend") or {}), "type": "local"}
    gen = dict(lc.get("generation") or {})
    gen["do_sample"] = False
    # Greedy decoding ignores the temperature; Ludwig's default (0.1) makes transformers refuse to
    # save a fully fine-tuned model's generation config ("temperature is only used in sampling").
    gen["temperature"] = 1.0
    # Room for any answer-prefix tokens (a BOS some tokenizers put before the answer) + 1.
    gen["max_new_tokens"] = max(int(gen.get("max_new_tokens") or 1), answer_tokens(tokenizer) - 1)
    lc["generation"] = gen
    inputs = copy.deepcopy(lc["input_features"])
    if len(inputs) != 1 or inputs[0].get("type") != "text":
        raise ConfigError("ludwig.input_features: exactly one text input feature is supported")
    inputs[0].setdefault("preprocessing", {})["max_sequence_length"] = input_max_length(cfg, tokenizer)
    lc["input_features"] = inputs
    outputs = copy.deepcopy(lc["output_features"])
    if len(outputs) != 1 or outputs[0].get("type") != "text":
        raise ConfigError("ludwig.output_features: exactly one text output feature is required")
    outputs[0].setdefault("preprocessing", {})["max_sequence_length"] = answer_tokens(tokenizer)
    lc["output_features"] = outputs
    trainer = dict(lc.get("trainer") or {})
    if zero_shot:
        trainer = {"type": "none"}
        # Without training there are no adapter weights to save; Ludwig then reloads the base.
        lc.pop("adapter", None)
    else:
        trainer["type"] = "finetune"
    lc["trainer"] = trainer
    return lc


def _adapter_only_state_dict(self: Any) -> dict[str, Any]:
    return {n: p.detach() for n, p in self.model.named_parameters() if p.requires_grad}


@contextlib.contextmanager
def adapter_only_checkpoints() -> Iterator[None]:
    """Make Ludwig's training checkpoints hold only the trainable parameters.

    Ludwig 0.17.10 saves every non-frozen entry of ``state_dict()``, which for bitsandbytes 4-bit
    layers includes their quantization state (``weight.absmax``, ``weight.quant_map``,
    ``weight.quant_state.bitsandbytes__nf4``); reloading the best checkpoint at the end of
    training then fails with "Unexpected keys found in state dict". Frozen weights never
    change during LoRA training, so a checkpoint of the trainable (adapter) parameters alone
    restores the best model exactly; it is also much smaller and faster to write.
    """
    from ludwig.utils.checkpoint_utils import MultiNodeCheckpoint

    original = MultiNodeCheckpoint.get_model_state_dict
    MultiNodeCheckpoint.get_model_state_dict = _adapter_only_state_dict  # type: ignore[method-assign]
    try:
        yield
    finally:
        MultiNodeCheckpoint.get_model_state_dict = original  # type: ignore[method-assign]


def use_sdpa(model: Any) -> Any:
    """Switch a model Ludwig loaded with eager attention to PyTorch SDPA, where supported."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    current = getattr(getattr(base, "config", None), "_attn_implementation", None)
    if current == "eager" and hasattr(base, "set_attn_implementation"):
        try:
            base.set_attn_implementation("sdpa")
        except (ValueError, ImportError, NotImplementedError) as exc:  # model without SDPA support
            logger.info("keeping eager attention: %s", exc)
    return model


@contextlib.contextmanager
def sdpa_attention() -> Iterator[None]:
    """Load Ludwig LLMs with SDPA attention instead of the eager attention Ludwig 0.17.10 forces
    on bitsandbytes-quantized models (``attn_implementation="eager"`` in
    ``load_pretrained_from_config``), which materializes every attention matrix: slower and
    memory-hungry at 2k-4k tokens (BENCHMARKS.md, H100 section)."""
    import ludwig.models.llm as llm_module

    original = llm_module.load_pretrained_from_config

    def load(*args: Any, **kwargs: Any) -> Any:
        return use_sdpa(original(*args, **kwargs))

    llm_module.load_pretrained_from_config = load
    try:
        yield
    finally:
        llm_module.load_pretrained_from_config = original


def compute_dtype(quantization: Any) -> Any:
    """The torch dtype a quantized model computes in (``bnb_4bit_compute_dtype``), or None when
    ``quantization`` (a Ludwig config object or dict) is unset."""
    import torch

    if not quantization:
        return None
    name = (quantization.get("bnb_4bit_compute_dtype") if isinstance(quantization, dict)
            else getattr(quantization, "bnb_4bit_compute_dtype", None))
    dtype = getattr(torch, str(name or "float16"), None)
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.float16


def autocast_for(device: Any, quantization: Any) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` in the compute dtype of a quantized model on a CUDA device; a no-op
    context for a model that is not quantized or not on a GPU (numerics unchanged there)."""
    import torch

    dtype = compute_dtype(quantization)
    if dtype is None or torch.device(device).type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=dtype)


def float32_outputs(outputs: Any) -> Any:
    """``outputs`` (a tensor, or a dict of them, nested) with floating tensors in float32."""
    import torch

    if isinstance(outputs, torch.Tensor):
        return outputs.float() if outputs.is_floating_point() else outputs
    if isinstance(outputs, dict):
        return {k: float32_outputs(v) for k, v in outputs.items()}
    return outputs


@contextlib.contextmanager
def quantized_autocast() -> Iterator[None]:
    """Run the forward passes of quantized Ludwig LLMs on a GPU under autocast in their compute
    dtype; their outputs (logits) are returned in float32, so losses are computed as before.

    Without it, the float32 layers that ``prepare_model_for_kbit_training`` leaves keep the whole
    residual stream, attention included, in float32 (no flash attention; BENCHMARKS.md).
    """
    import ludwig.models.llm as llm_module

    original = llm_module.LLM.forward

    def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        quantization = getattr(self.config_obj, "quantization", None)
        device = getattr(self, "curr_device", None) or next(self.model.parameters()).device
        ctx = autocast_for(device, quantization)
        if isinstance(ctx, contextlib.nullcontext):
            return original(self, *args, **kwargs)
        with ctx:
            out = original(self, *args, **kwargs)
        return float32_outputs(out)

    llm_module.LLM.forward = forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        llm_module.LLM.forward = original  # type: ignore[method-assign]


@contextlib.contextmanager
def ludwig_fixes() -> Iterator[None]:
    """The work-arounds for Ludwig 0.17.10 LLM training: adapter-only checkpoints (the 4-bit
    reload crash), SDPA attention, compute-dtype autocast on quantized models, TF32 matmuls and
    tokenizer vocabularies with id gaps."""
    with (adapter_only_checkpoints(), sdpa_attention(), quantized_autocast(), tf32_matmuls(),
          vocab_without_holes()):
        yield


@contextlib.contextmanager
def answers_after_prompt(output_name: str, tokenizer: Any) -> Iterator[None]:
    """Train the answer as the first token after the prompt, not after a second BOS.

    Ludwig tokenizes the output text as it tokenizes the prompt, so with a tokenizer that starts
    every text with BOS (Gemma, Llama-2) each training sequence reads ``prompt <bos> answer
    <eos>``: the model learns to emit BOS, then reads its answer off a BOS position, where these
    models carry massive activations (Gemma-3-270M: 17 times the hidden-state norm of the token
    before it, halfway up the layers; BENCHMARKS.md). Here the leading BOS of each answer in
    Ludwig's preprocessed output column becomes left padding, which Ludwig strips before it
    joins prompt and answer: every sequence reads ``prompt answer <eos>``, and the score reads
    P("true") against P("false") right after the prompt (``answer_prefix: []`` in the run's
    summary). The answers are also left-aligned, which Ludwig's padding removal needs when two
    answers differ in length (it keeps what follows the last padding token).
    """
    from ludwig.constants import NAME, PROC_COLUMN
    from ludwig.features.text_feature import TextFeatureMixin

    bos, pad = tokenizer.bos_token_id, tokenizer.pad_token_id  # load_tokenizer: pad as Ludwig's
    original = TextFeatureMixin.__dict__["add_feature_data"]

    def realign(vector: Any) -> Any:
        v = np.asarray(vector)
        tokens = v[v != pad]
        if bos is not None and len(tokens) and tokens[0] == bos:
            tokens = tokens[1:]
        out = np.full_like(v, pad)
        if len(tokens):
            out[len(v) - len(tokens):] = tokens
        return out

    def add_feature_data(feature_config: Any, input_df: Any, proc_df: Any, *args: Any, **kwargs: Any) -> Any:
        proc_df = original.__func__(feature_config, input_df, proc_df, *args, **kwargs)
        if feature_config[NAME] == output_name:
            column = feature_config[PROC_COLUMN]
            proc_df[column] = proc_df[column].map(realign)
        return proc_df

    TextFeatureMixin.add_feature_data = staticmethod(add_feature_data)
    try:
        yield
    finally:
        TextFeatureMixin.add_feature_data = original


@contextlib.contextmanager
def vocab_without_holes() -> Iterator[None]:
    """Fill the gaps of a tokenizer vocabulary whose ids are not contiguous.

    Ludwig lists an HF tokenizer's vocabulary by id with ``None`` for an id that no token has;
    saving its training metadata (JSON with sorted keys) then fails with ``'<' not supported
    between instances of 'NoneType' and 'str'``. Gemma-3-270M converted from its GGUF by
    transformers 5.17 had one such id (that conversion is now refused for another reason,
    :func:`ards_rag.models.check_tokenizer`; a local model folder can still have gaps). A gap
    becomes ``<unused-id-N>``, a string no text tokenizes to, so ids and tokens are unchanged.
    """
    from ludwig.utils import strings_utils

    original = strings_utils._get_vocab_from_dict

    def filled(vocab: dict[str, int]) -> list[str]:
        return [f"<unused-id-{i}>" if t is None else t for i, t in enumerate(original(vocab))]

    strings_utils._get_vocab_from_dict = filled
    try:
        yield
    finally:
        strings_utils._get_vocab_from_dict = original


@contextlib.contextmanager
def tf32_matmuls() -> Iterator[None]:
    """Let float32 matmuls and convolutions use TF32 tensor cores on a GPU while training.

    Ludwig leaves PyTorch's default (exact float32), which leaves an Ampere/Hopper GPU's tensor
    cores idle when a small model is fully fine-tuned in float32. TF32 keeps float32's range and
    10 mantissa bits, what mixed-precision training also accepts; CPUs are unaffected.
    """
    import torch

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


#: Seconds between two progress lines while an epoch trains (a CPU epoch can take an hour).
PROGRESS_EVERY_S = 60.0


def _step_timer(say: Callable[[str], None] = lambda msg: None, epochs: int = 0) -> Any:
    """A Ludwig callback recording the wall time of each training step and evaluation, and
    reporting through ``say`` the batches done (at most every :data:`PROGRESS_EVERY_S`, with the
    time left) and each finished epoch."""
    from ludwig.callbacks import Callback

    class StepTimer(Callback):
        def __init__(self) -> None:
            self.steps: list[float] = []
            self.evals: list[float] = []
            self.epoch_ends: list[float] = []
            self._t0 = 0.0
            self._e0 = 0.0
            self.first_batch_start: float | None = None
            self.train_end: float | None = None
            self._reported = 0.0  # when the last progress line was said (or training started)

        def on_batch_start(self, trainer: Any, progress_tracker: Any, save_path: str, **kw: Any) -> None:
            self._t0 = time.perf_counter()
            if self.first_batch_start is None:
                self.first_batch_start = self._reported = self._t0

        def on_batch_end(self, trainer: Any, progress_tracker: Any, save_path: str,
                         sync_step: bool = True, **kw: Any) -> None:
            now = time.perf_counter()
            self.steps.append(now - self._t0)
            if now - self._reported < PROGRESS_EVERY_S:
                return
            self._reported = now
            total = int(getattr(trainer, "total_steps", 0) or 0)  # Ludwig's steps are batches
            done = len(self.steps)
            per = (now - (self.first_batch_start or self._t0)) / done
            left = f", about {per * (total - done) / 60:.0f} min left" if total > done else ""
            say(f"batch {done}/{total or '?'}, {per:.1f} s per batch{left}")

        def on_eval_start(self, trainer: Any, progress_tracker: Any, save_path: str, **kw: Any) -> None:
            self._e0 = time.perf_counter()

        def on_eval_end(self, trainer: Any, progress_tracker: Any, save_path: str, **kw: Any) -> None:
            self.evals.append(time.perf_counter() - self._e0)

        def on_epoch_end(self, trainer: Any, progress_tracker: Any, save_path: str, **kw: Any) -> None:
            self.epoch_ends.append(time.perf_counter())
            start = self.first_batch_start or self.epoch_ends[-1]
            best = getattr(progress_tracker, "best_eval_metric_value", None)
            best_txt = f", best validation loss {best:.4f}" if isinstance(best, float) and math.isfinite(best) else ""
            say(f"epoch {len(self.epoch_ends)}/{epochs or '?'} done: {len(self.steps)} steps, "
                f"{self.epoch_ends[-1] - start:.0f} s{best_txt}")

        def on_trainer_train_teardown(self, trainer: Any, progress_tracker: Any, save_path: str,
                                      is_coordinator: bool, **kw: Any) -> None:
            self.train_end = time.perf_counter()

    return StepTimer()


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in KEY_PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    try:
        import torch

        out["cuda"] = str(torch.version.cuda)
        if torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - versions are informative only
        pass
    return out


def _stats_to_dict(stats: Any) -> dict[str, Any]:
    """Ludwig's training statistics (an object or a dict) as plain JSON data."""
    if stats is None:
        return {}
    if hasattr(stats, "to_dict"):
        stats = stats.to_dict()
    elif not isinstance(stats, dict):
        stats = {k: getattr(stats, k) for k in ("training", "validation", "test") if hasattr(stats, k)}

    def plain(x: Any) -> Any:
        if isinstance(x, dict):
            return {str(k): plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        if hasattr(x, "item"):
            return x.item()
        if isinstance(x, float) and not math.isfinite(x):
            return None
        return x

    return plain(stats)


def _loss_curve(stats: dict[str, Any], split: str, out_name: str) -> list[float]:
    part = stats.get(split) or {}
    for key in (out_name, "combined"):
        curve = (part.get(key) or {}).get("loss")
        if curve:
            return [float(v) for v in curve if v is not None]
    return []


def _say(progress: bool | Callable[[str], None]) -> Callable[[str], None]:
    if callable(progress):
        return progress
    if progress:
        return lambda msg: print(f"[train] {msg}", file=sys.stderr, flush=True)
    return lambda msg: None


def default_run_dir(root: str | Path = "runs") -> Path:
    """``runs/<YYYYmmdd-HHMMSS>`` (with a numeric suffix if that name is taken)."""
    base = Path(root) / time.strftime("%Y%m%d-%H%M%S")
    path, k = base, 2
    while path.exists():
        path = base.with_name(f"{base.name}-{k}")
        k += 1
    return path


# ------------------------------------------------------------------------------------ train


def train(
    index_dir: str | Path,
    cfg: Config,
    run_dir: str | Path | None = None,
    *,
    zero_shot: bool = False,
    context_strategy: str | None = None,
    progress: bool | Callable[[str], None] = True,
) -> TrainReport:
    """Fine-tune the configured LLM on the labeled patients of the index at ``index_dir``.

    ``cfg`` is a resolved config (:func:`ards_rag.config.resolve_config`). ``run_dir``: the run
    folder to write (default ``runs/<time>``); it is written atomically, so a failed run
    never replaces a previous one. ``zero_shot`` records the base model with the prompt only
    (Ludwig ``trainer: {type: none}``). ``context_strategy`` overrides ``retrieval.strategy``
    (``retrieval``, or ``truncate``: the seed's notes cut to the same budget). ``progress``:
    print progress to stderr (True), stay quiet (False), or a callable receiving each message.

    Raises :class:`TrainingError` when the index holds no labeled patient or one class only,
    :class:`ModelError` for a missing base model, :class:`ConfigError` for bad settings,
    :class:`RunError` when ``run_dir`` exists and holds something other than a run (an index, a
    file): it would be replaced.
    """
    from .index import NotesIndex
    from .models import load_tokenizer, resolve_base_model
    from .retrieval import Retriever

    t_start = time.perf_counter()
    say = _say(progress)
    cfg = copy.deepcopy(cfg)
    if context_strategy is not None:
        cfg.setdefault("retrieval", {})["strategy"] = context_strategy
    if zero_shot:
        cfg["ludwig"]["trainer"] = {"type": "none"}
        cfg["ludwig"].pop("adapter", None)
    strategy = str(cfg.get("retrieval", {}).get("strategy", "retrieval"))
    seed = int(cfg.get("seed", 42))
    split_cfg = cfg.get("split") or {}
    balance = split_cfg.get("balance", "oversample")
    if balance not in ("oversample", "none"):
        raise ConfigError(f"split.balance must be 'oversample' or 'none' (got {balance!r})")
    views = cfg.get("retrieval", {}).get("train_views", 1)
    if isinstance(views, bool) or not isinstance(views, int) or views < 1:
        raise ConfigError(f"retrieval.train_views must be an integer >= 1 (got {views!r})")
    if zero_shot:
        views = 1
    check_ludwig_keys(cfg)
    run = Path(run_dir) if run_dir is not None else default_run_dir()
    held = foreign_contents(run, RUN_MARKERS)
    if held is not None:
        raise RunError(f"{run} is not a run folder: it holds {held}; pass a new folder to --run "
                       "(an existing run there is replaced)")

    # -- inputs: index, labels, model, budget -----------------------------------------------
    index = NotesIndex.load(index_dir, expect=cfg)
    labels = index.labels()
    labeled = labels[labels["label"].notna()].copy()
    if labeled.empty:
        raise TrainingError(f"{index_dir}: the index holds no labeled patient; index notes with a label "
                            "column (true/false) to train")
    labeled["label"] = labeled["label"].astype(bool)
    labeled["patient_id"] = labeled["patient_id"].astype(str)
    classes = labeled["label"].value_counts()
    if len(classes) < 2:
        only = "ARDS (true)" if bool(classes.index[0]) else "non-ARDS (false)"
        raise TrainingError(f"{index_dir}: all {len(labeled)} labeled patients are {only}; "
                            "training needs patients of both classes")
    base_name = str(cfg["ludwig"]["base_model"])
    say(f"base model {base_name}")
    base_path = resolve_base_model(base_name)
    tokenizer = load_tokenizer(cfg)
    budget = context_budget(cfg, tokenizer)
    max_input = input_max_length(cfg, tokenizer)

    split = stratified_split(labeled[["patient_id", "label"]], float(split_cfg.get("validation", 0.15)),
                             float(split_cfg.get("test", 0.15)), seed)
    counts = split["split"].value_counts().to_dict()
    positives = split[split["label"]].groupby("split").size().to_dict()
    if counts.get("validation", 0) == 0 and not zero_shot:
        say("warning: no validation patients; the best checkpoint is chosen on training loss")

    # -- contexts (train + validation rows; test is scored by `evaluate`) -------------------
    used = split[split["split"].isin(["train", "validation"])].reset_index(drop=True)
    say(f"building {strategy} contexts of {len(used)} patients (budget {budget} tokens)")
    retriever = Retriever(index, cfg, tokenizer, budget)
    # views are checked here, before any context is built (bad dropout, truncation strategy)
    views_of = [retriever.view(cfg["retrieval"].get("view_dropout", 0.3), seed, v) for v in range(1, views)]
    template = ludwig_template(cfg)
    in_col, out_col = input_column(cfg), output_column(cfg)
    contexts = [ctx.text for ctx in retriever.iter_contexts(used["patient_id"])]
    if views_of:
        # more contexts of the training patients only (validation picks the checkpoint and the
        # threshold on the contexts that predict will read)
        train_part = used[used["split"] == "train"]
        say(f"building {len(views_of)} more view(s) of {len(train_part)} training patients "
            f"(passage dropout {views_of[0].view_dropout})")
        for view in views_of:
            contexts += [ctx.text for ctx in view.iter_contexts(train_part["patient_id"])]
        used = pd.concat([used] + [train_part] * len(views_of), ignore_index=True)
    prompt_lengths = [len(tokenizer.encode(template.format(**{in_col: c}), truncation=True)) for c in contexts]
    longest = int(max(prompt_lengths)) if prompt_lengths else 0
    if longest > max_input:
        pid = used["patient_id"].iloc[int(np.argmax(prompt_lengths))]
        raise TrainingError(f"patient {pid!r}: prompt of {longest} tokens exceeds the {max_input} allowed by "
                            "global_max_sequence_length; lower retrieval.context_tokens")
    # The answer column holds the exact answer strings the scorer compares (ANSWERS). It must
    # not share a name with the bookkeeping columns: a config whose output feature is "label"
    # once had its "true"/"false" strings replaced by booleans here, and Ludwig trained on
    # str(bool), "True"/"False" (runs without "answers" in summary.json: run_answers).
    columns = {"patient_id": used["patient_id"], in_col: contexts,
               out_col: np.where(used["label"], ANSWERS[0], ANSWERS[1]),
               SPLIT_COLUMN: used["split"].map(_SPLIT_CODE).astype(int),
               _TRUTH: used["label"].astype(bool), "n_tokens": prompt_lengths}
    if len({"patient_id", in_col, out_col, SPLIT_COLUMN, _TRUTH, "n_tokens"}) < 6:
        raise ConfigError(f"ludwig: the input and output feature names ({in_col!r}, {out_col!r}) must "
                          f"differ from each other and from 'patient_id' and {SPLIT_COLUMN!r}")
    rows = pd.DataFrame(columns)
    train_rows = rows[rows[SPLIT_COLUMN] == 0]
    if balance == "oversample" and not zero_shot:
        train_rows = oversample(train_rows, seed, label_column=_TRUTH)
    dataset = pd.concat([train_rows, rows[rows[SPLIT_COLUMN] == 1]], ignore_index=True)

    lcfg = ludwig_config(cfg, base_path, tokenizer, zero_shot=zero_shot)
    epochs = 0 if zero_shot else int(lcfg["trainer"].get("epochs", 1))
    quant = lcfg.get("quantization")
    quant_desc = f"{quant.get('bits')}-bit" if isinstance(quant, dict) and quant.get("bits") else "none"

    say(f"{len(train_rows)} training rows, {int((rows[SPLIT_COLUMN] == 1).sum())} validation rows; "
        f"{'zero-shot' if zero_shot else f'{epochs} epoch(s)'} -> {run}")

    with atomic_dir(run) as tmp:
        model, stats, timer = _run_ludwig(lcfg, dataset[[in_col, out_col, SPLIT_COLUMN]], tmp, seed,
                                          progress=bool(progress), zero_shot=zero_shot,
                                          tokenizer=tokenizer, say=say)
        t_trained = time.perf_counter()
        model.save(str(tmp / "model"))

        # Threshold: best F1 on validation, from the same scorer `predict` uses.
        from .evaluation import best_f1_threshold
        from .prediction import Scorer

        scorer = Scorer(model, cfg, answer_prefix=ANSWER_PREFIX)
        val = rows[rows[SPLIT_COLUMN] == 1]
        f1_val: float | None = None
        if len(val) and val[_TRUTH].nunique() == 2:
            say(f"scoring {len(val)} validation patients for the threshold")
            p_val = scorer.score(val[in_col].tolist(), batch_size=int(lcfg["trainer"].get("eval_batch_size", 8)))
            threshold = float(best_f1_threshold(val[_TRUTH].to_numpy(), p_val))
            f1_val = _f1(val[_TRUTH].to_numpy(), p_val >= threshold)
            rule = "best F1"
        else:
            threshold, rule = 0.5, "default 0.5 (validation lacks a class)"
        (tmp / "threshold.json").write_text(json.dumps(
            {"threshold": threshold, "chosen_on": "validation", "rule": rule, "validation_f1": f1_val,
             "answers": list(ANSWERS)},
            indent=2), encoding="utf-8")

        split_out = split.copy()
        split_out["label"] = np.where(split_out["label"], ANSWERS[0], ANSWERS[1])
        split_out[["patient_id", "split", "label"]].to_csv(tmp / "split.csv", index=False)
        save_config(cfg, tmp / "config.yaml")
        (tmp / "index_manifest.json").write_text(json.dumps(index.manifest, indent=2, default=str),
                                                 encoding="utf-8")
        (tmp / "training_statistics.json").write_text(json.dumps(stats, indent=2), encoding="utf-8")
        (tmp / "versions.json").write_text(json.dumps(_versions(), indent=2), encoding="utf-8")

        train_curve = _loss_curve(stats, "training", out_col)
        val_curve = _loss_curve(stats, "validation", out_col)
        best_epoch = int(np.argmin(val_curve)) + 1 if val_curve else None
        step_time = float(sum(timer.steps)) if timer is not None else 0.0
        train_tokens = int(train_rows["n_tokens"].sum() + len(train_rows) * answer_tokens(tokenizer)) * epochs
        report = TrainReport(
            run_dir=str(run),
            base_model=base_name,
            zero_shot=zero_shot,
            context_strategy=strategy,
            patients={s: int(counts.get(s, 0)) for s in SPLITS},
            positives={s: int(positives.get(s, 0)) for s in SPLITS},
            train_rows=int(len(train_rows)),
            epochs=epochs,
            best_epoch=best_epoch,
            train_loss=train_curve[best_epoch - 1] if best_epoch and len(train_curve) >= best_epoch
            else (train_curve[-1] if train_curve else None),
            validation_loss=min(val_curve) if val_curve else None,
            threshold=threshold,
            validation_f1=f1_val,
            context_budget=int(budget),
            max_prompt_tokens=longest,
            seconds=0.0,
            train_seconds=float(timer.train_end - timer.first_batch_start)
            if timer is not None and timer.first_batch_start is not None and timer.train_end else 0.0,
            train_tokens_per_s=(train_tokens / step_time) if step_time > 0 else None,
            quantization=quant_desc,
            extra={
                "index_dir": str(Path(index_dir).resolve()),
                "base_model_path": base_path,
                "seed": seed,
                "balance": balance,
                "train_views": views,
                "mean_prompt_tokens": float(np.mean(prompt_lengths)) if prompt_lengths else 0.0,
                "train_steps": len(timer.steps) if timer is not None else 0,
                "eval_seconds": float(sum(timer.evals)) if timer is not None else 0.0,
                "save_and_threshold_seconds": time.perf_counter() - t_trained,
            },
        )
        report.seconds = time.perf_counter() - t_start
        summary = report.to_dict()
        # Keys other modules read (evaluation.run_kind).
        # "answers": the strings the model was trained to answer; "answer_prefix": the token ids
        # between prompt and answer in training, none since answers_after_prompt (Scorer.from_run).
        summary.update({"index_dir": str(Path(index_dir).resolve()), "strategy": strategy,
                        "answers": list(ANSWERS), "answer_prefix": list(ANSWER_PREFIX)})
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    say(f"done in {report.seconds:.0f} s: {run}")
    return report


def _f1(y: np.ndarray, pred: np.ndarray) -> float:
    y, pred = np.asarray(y, bool), np.asarray(pred, bool)
    tp = int((y & pred).sum())
    denom = int(y.sum() + pred.sum())
    return 2 * tp / denom if denom else 0.0


def _run_ludwig(lcfg: dict[str, Any], dataset: pd.DataFrame, out_dir: Path, seed: int, *,
                progress: bool, zero_shot: bool, tokenizer: Any,
                say: Callable[[str], None] = lambda msg: None) -> tuple[Any, dict[str, Any], Any]:
    """Train (or, zero-shot, only preprocess) with Ludwig; return the model, its statistics and
    the step timer. Ludwig's own output folder is removed afterwards (checkpoints)."""
    import shutil

    from ludwig.api import LudwigModel

    epochs = int((lcfg.get("trainer") or {}).get("epochs", 0) or 0)
    timer = None if zero_shot else _step_timer(say, epochs)
    level = logging.WARNING if progress else logging.ERROR
    model = LudwigModel(config=lcfg, logging_level=level, backend="local",
                        callbacks=[timer] if timer is not None else None)
    work = out_dir / "ludwig"
    try:
        with ludwig_fixes(), answers_after_prompt(lcfg["output_features"][0]["name"], tokenizer):
            results = model.train(
                dataset=dataset,
                output_directory=str(work),
                experiment_name="train",
                model_name="run",
                skip_save_training_description=True,
                skip_save_training_statistics=True,
                skip_save_progress=True,
                skip_save_log=True,
                skip_save_processed_input=True,
                random_seed=seed,
            )
    except Exception as exc:  # noqa: BLE001 - whatever Ludwig raises, one line for the user
        first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise TrainingError(f"Ludwig training failed ({type(exc).__name__}: {first})") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    stats = getattr(results, "train_stats", None)
    if stats is None and isinstance(results, tuple):
        stats = results[0]
    return model, _stats_to_dict(stats), timer
