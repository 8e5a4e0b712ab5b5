"""Scoring patients with a trained run: P(ARDS) from one batched forward pass, never free text.

Ludwig's ``predict`` generates one sample at a time and returns free text. A probability for ROC
curves and thresholds is P("true") against P("false") at the first answer token: the softmax
over the logits of the two candidate tokens at the last prompt position. :class:`Scorer`
computes it for a batch of contexts in one forward pass of the trained (PEFT) model, with the
prompt tokenized exactly as Ludwig tokenized it at training time (template, lowercasing,
tokenizer, truncation, from the first BOS on) followed by the answer tokens common to both
answers (e.g. a BOS that some tokenizers prepend to the target).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .errors import ManifestMismatchError, RunError, UnknownPatientError
from .prompt import ANSWERS, input_column, input_max_length, ludwig_template, output_column

if TYPE_CHECKING:
    from .index import IndexReport

logger = logging.getLogger(__name__)

MODEL_DIR = "model"
RUN_FILES = ("config.yaml", "split.csv", "index_manifest.json", "threshold.json", "summary.json")
DEFAULT_BATCH_SIZE = 8
# predict_patients scores this many batches at a time (sorted by length within them), so that
# scoring overlaps the building of the next contexts.
SCORE_WINDOW_BATCHES = 8


# ------------------------------------------------------------------------------------ runs


def check_run(run_dir: str | Path) -> Path:
    """Return ``run_dir`` as a Path if it holds a complete run; :class:`RunError` otherwise."""
    run = Path(run_dir)
    if not run.is_dir():
        raise RunError(f"{run}: run folder not found; train one with `ards-rag train`")
    missing = [f for f in RUN_FILES if not (run / f).is_file()]
    if not (run / MODEL_DIR / "model_hyperparameters.json").is_file():
        missing.append(f"{MODEL_DIR}/model_hyperparameters.json")
    if missing:
        raise RunError(f"{run}: incomplete run (missing {', '.join(missing)}); train it again")
    return run


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The resolved config saved in the run."""
    import yaml

    path = Path(run_dir) / "config.yaml"
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RunError(f"{path}: unreadable ({str(exc).splitlines()[0]}); train the run again") from None
    if not isinstance(cfg, dict):
        raise RunError(f"{path}: not a config mapping; train the run again")
    return cfg


def read_threshold(run_dir: str | Path) -> float:
    """The decision threshold saved with the run (best F1 on validation)."""
    path = Path(run_dir) / "threshold.json"
    try:
        value = float(json.loads(path.read_text(encoding="utf-8"))["threshold"])
    except (OSError, ValueError, KeyError, TypeError):
        raise RunError(f"{path}: no numeric 'threshold'; train the run again") from None
    if not math.isfinite(value):
        raise RunError(f"{path}: threshold is {value}; train the run again")
    return value


def resolve_run(run_dir: str | Path | None, runs_root: str | Path = "runs") -> Path:
    """``run_dir``, or the most recent complete run under ``runs_root``; checked complete."""
    if run_dir is not None:
        return check_run(run_dir)
    root = Path(runs_root)
    candidates = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")] \
        if root.is_dir() else []
    complete = []
    for p in candidates:
        try:
            complete.append(check_run(p))
        except RunError:
            continue
    if not complete:
        raise RunError(f"{root}: no finished run; train one with `ards-rag train` or pass --run")
    return max(complete, key=lambda p: (p / "summary.json").stat().st_mtime)


MANIFEST_KEYS = ("format_version", "embedder", "chunking")


def check_index_matches(run_dir: str | Path, index: Any) -> None:
    """Raise :class:`ManifestMismatchError` unless ``index`` was built like the run's index
    (same format version, embedder and chunking; patients may have been added since)."""
    path = Path(run_dir) / "index_manifest.json"
    try:
        trained = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise RunError(f"{path}: unreadable; train the run again") from None
    current = index.manifest
    diffs = []
    for key in MANIFEST_KEYS:
        a, b = _comparable(trained.get(key)), _comparable(current.get(key))
        if a != b:
            diffs.append(f"{key} {_short(a)} vs {_short(b)}")
    if diffs:
        where = getattr(index, "dir", None) or "the index"
        raise ManifestMismatchError(
            f"{where}: not built like the index run {Path(run_dir)} was trained on "
            f"({'; '.join(diffs)}); use that index or retrain the run on this one"
        )


def _comparable(value: Any) -> Any:
    if isinstance(value, dict):
        # Where the embedder was found on disk may change between machines; what it is may not.
        return {k: _comparable(v) for k, v in value.items() if k not in ("path", "seconds", "dtype")}
    return value


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


# ----------------------------------------------------------------------------------- scorer


class Scorer:
    """P("true") for prompts, from batched forward passes of a trained Ludwig LLM.

    Build it with :meth:`from_run` (loads the Ludwig model once) or from an in-memory
    ``LudwigModel`` and the resolved config it was trained with. ``precision``: ``model`` (as
    trained), ``bf16`` or ``fp8`` (dense merged weights, faster on a GPU; see
    :mod:`ards_rag.precision`). ``bf16`` and ``fp8`` convert the Ludwig model in place: use
    them only on a model loaded for scoring. ``answers``: the (true, false) strings the model
    was trained to answer (:func:`run_answers`); the score compares their first tokens.
    ``answer_prefix``: the token ids the model was trained to emit between prompt and answer
    (:func:`run_answer_prefix`; none for runs trained now); ``None``: what Ludwig's tokenization
    of the answers starts with (a BOS for Gemma or Llama-2), as runs trained before
    :func:`ards_rag.training.answers_after_prompt` learned.
    """

    def __init__(self, ludwig_model: Any, cfg: dict[str, Any], precision: str = "model",
                 answers: tuple[str, str] = ANSWERS, answer_prefix: Sequence[int] | None = None) -> None:
        import torch

        from .precision import check_precision, convert_for_scoring

        self.ludwig_model = ludwig_model
        self.cfg = cfg
        llm = ludwig_model.model
        from .training import autocast_for, compute_dtype, use_sdpa

        self.model = use_sdpa(llm.model)  # PeftModel, or the plain base model (zero-shot)
        self.tokenizer = llm.tokenizer
        self.model.eval()
        self.device = next(self.model.parameters()).device
        check_precision(precision, self.device)
        self.precision = precision
        quantization = getattr(getattr(llm, "config_obj", None), "quantization", None)
        if precision != "model" or (quantization and self.device.type == "cuda"):
            # A quantized model on a GPU: its float32 norms and embeddings go to the compute
            # dtype too (Ludwig keeps them float32 for training; scoring does not need it).
            convert_for_scoring(self.model, precision, compute_dtype(quantization) or torch.bfloat16)
        self.template = ludwig_template(cfg)
        self.input_name = input_column(cfg)
        meta = ludwig_model.training_set_metadata
        in_meta = meta[self.input_name]
        out_meta = meta[output_column(cfg)]
        self.lowercase = bool(in_meta["preprocessing"].get("lowercase", False))
        # Ludwig records the longest training prompt as the input's max length; a patient whose
        # context is longer (still within the budget) must not lose the prompt's answer cue.
        self.max_input_tokens = max(
            int(in_meta["max_sequence_length"]), input_max_length(cfg, self.tokenizer)
        )
        self.global_max = int(getattr(llm, "global_max_sequence_length", 0) or 0) or None
        out_lower = bool(out_meta["preprocessing"].get("lowercase", False))
        out_max = int(out_meta["max_sequence_length"])
        self.answers = answers
        true_ids = self.ludwig_ids(answers[0], out_lower, out_max)
        false_ids = self.ludwig_ids(answers[1], out_lower, out_max)
        k = 0
        while k < min(len(true_ids), len(false_ids)) and true_ids[k] == false_ids[k]:
            k += 1
        if k >= min(len(true_ids), len(false_ids)):
            raise RunError("the tokenizer gives 'true' and 'false' no distinguishing token")
        # Tokens both answers start with (e.g. a BOS the tokenizer prepends), then the first
        # token where they differ: the one whose probability is compared.
        self.answer_prefix = true_ids[:k] if answer_prefix is None else [int(i) for i in answer_prefix]
        self.candidate_ids = (true_ids[k], false_ids[k])
        forward = getattr(self.model, "get_base_model", lambda: self.model)().forward
        self._keep_kw = "logits_to_keep" in inspect.signature(forward).parameters
        self._torch = torch
        # Quantized models compute in their compute dtype on a GPU, as in training.
        self._autocast = lambda: autocast_for(self.device, quantization)

    @classmethod
    def from_run(cls, run_dir: str | Path, precision: str = "model") -> Scorer:
        """Load the run's Ludwig model (once) on the best available device."""
        from .models import resolve_base_model

        run = check_run(run_dir)
        cfg = read_run_config(run)
        # A packaged base model is re-converted into the cache if the cache was cleared.
        hyper = json.loads((run / MODEL_DIR / "model_hyperparameters.json").read_text("utf-8"))
        recorded = str(hyper.get("base_model", ""))
        if recorded and not Path(recorded).exists() and recorded.startswith(("/", "~", ".")):
            resolved = resolve_base_model(str(cfg["ludwig"]["base_model"]))
            if Path(resolved).resolve() != Path(recorded).resolve():
                raise RunError(
                    f"{run}: base model folder {recorded} no longer exists; restore it or retrain"
                )
        ludwig_model = _load_ludwig(run / MODEL_DIR)
        _move_to_gpu(ludwig_model)
        answers = run_answers(run, cfg)
        _warn_if_threshold_predates(run, answers)
        return cls(ludwig_model, cfg, precision, answers, run_answer_prefix(run))

    # -- tokenization, as Ludwig does it --------------------------------------------------------

    def ludwig_ids(self, text: str, lowercase: bool, max_len: int) -> list[int]:
        """Token ids of ``text`` as Ludwig's preprocessing + ``remove_left_padding`` give them."""
        ids = list(self.tokenizer.encode(text.lower() if lowercase else text, truncation=True))
        ids = ids[:max_len]
        pad = self.tokenizer.pad_token_id
        if pad is not None and pad in ids:  # Ludwig drops everything up to the last PAD
            ids = ids[len(ids) - ids[::-1].index(pad):]
        bos = self.tokenizer.bos_token_id
        if bos is not None and bos in ids:
            ids = ids[ids.index(bos):]
        return ids

    def prompt_ids(self, context: str) -> list[int]:
        """The model input for one context: Ludwig's prompt ids + the common answer prefix."""
        prompt = self.template.format(**{self.input_name: context})
        ids = self.ludwig_ids(prompt, self.lowercase, self.max_input_tokens)
        return ids + list(self.answer_prefix)

    # -- scoring --------------------------------------------------------------------------------

    def score(self, contexts: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """P("true") vs P("false") at the first answer token for each context, in input order."""
        torch = self._torch
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        seqs = [self.prompt_ids(c) for c in contexts]
        out = np.empty(len(seqs), dtype=np.float64)
        # Similar lengths together: less padding, same results (padding is masked).
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        cand = torch.tensor(self.candidate_ids, device=self.device)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                width = max(len(seqs[i]) for i in idx)
                ids = torch.full((len(idx), width), pad, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for row, i in enumerate(idx):  # left padding: the last position is the prompt's end
                    n = len(seqs[i])
                    ids[row, width - n :] = torch.tensor(seqs[i], dtype=torch.long)
                    mask[row, width - n :] = 1
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                kwargs: dict[str, Any] = {
                    "input_ids": ids.to(self.device),
                    "attention_mask": mask.to(self.device),
                    "position_ids": positions.to(self.device),
                    "use_cache": False,
                }
                if self._keep_kw:
                    kwargs["logits_to_keep"] = 1
                with self._autocast():
                    logits = self.model(**kwargs).logits[:, -1, :]
                pair = logits.index_select(-1, cand).float()
                p_true = torch.softmax(pair, dim=-1)[:, 0].cpu().numpy()
                out[idx] = p_true
        return out

    def ludwig_predict(self, contexts: Sequence[str]) -> pd.DataFrame:
        """Ludwig's own ``predict`` frame (one greedy generation per row: ``<out>_predictions``
        tokens, ``<out>_response`` text, ...).

        Ludwig cuts a prompt at the longest *training* prompt, which would drop the answer cue of
        a longer context that still fits the budget; it reads the prompt the scorer reads here
        (cut at the config's limit), so that its answer and the score come from the same input.
        Ludwig leaves the model in training mode (dropout on); it is put back in eval mode, or
        every later score would be noisy.
        """
        frame = pd.DataFrame({self.input_name: list(contexts)})
        meta = self.ludwig_model.training_set_metadata[self.input_name]
        recorded = meta["max_sequence_length"]
        meta["max_sequence_length"] = self.max_input_tokens
        try:
            with self._autocast():  # a quantized model on a GPU computes as it does when scored
                preds, _ = self.ludwig_model.predict(dataset=frame, skip_save_predictions=True)
        finally:
            meta["max_sequence_length"] = recorded
            self.model.eval()
        return preds

    def generated_answers(self, contexts: Sequence[str],
                          probabilities: Sequence[float]) -> list[dict[str, Any]]:
        """Ludwig's generated answer for each context, checked against the score.

        Greedy generation answers with the most likely first answer token. When that token is
        one of the two the score compares (``scored_token``), the answer is ``true`` exactly when
        P("true") >= 0.5 (``most_likely``), whatever the run's threshold. ``agrees`` is False
        when the answer differs from ``most_likely`` or is neither answer (``answer`` None); a
        first token outside the two (``True``, a newline) means a model not trained enough to
        answer in the form it was trained on.
        """
        preds = self.ludwig_predict(contexts)
        out_name = output_column(self.cfg)
        k = len(self.answer_prefix)
        scored = {self.tokenizer.decode([i]) for i in self.candidate_ids}
        out = []
        for text, tokens, p in zip(preds[f"{out_name}_response"], preds[f"{out_name}_predictions"],
                                   probabilities, strict=True):
            text = str(text).strip()
            answer = parse_answer(text)
            likely = ANSWERS[0] if float(p) >= 0.5 else ANSWERS[1]
            first = str(tokens[k]) if len(tokens) > k else ""
            out.append({"text": text, "answer": answer, "most_likely": likely,
                        "agrees": answer == likely, "scored_token": first in scored})
        return out


#: Said of generated answers whose first token is neither of the two the score compares.
OTHER_FORM = ("neither of the two answers the score compares: the model answers in another form "
              "than it was trained on (e.g. 'False' for 'false'; train it longer)")


def run_answers(run_dir: str | Path, cfg: dict[str, Any]) -> tuple[str, str]:
    """The (true, false) answer strings the run's model was trained on, which the score compares.

    Runs record them (``answers`` in ``summary.json``). Fine-tuned runs from before that record,
    whose config named the output feature ``label``, were trained on ``"True"``/``"False"``: the
    training rows' boolean label column overwrote the answer strings and Ludwig trained on
    ``str(bool)``.
    """
    summary = json.loads((Path(run_dir) / "summary.json").read_text("utf-8"))
    recorded = summary.get("answers")
    if isinstance(recorded, list) and len(recorded) == 2 and all(isinstance(a, str) for a in recorded):
        return recorded[0], recorded[1]
    if not summary.get("zero_shot") and output_column(cfg) == "label":
        return "True", "False"
    return ANSWERS


def run_answer_prefix(run_dir: str | Path) -> list[int] | None:
    """The token ids between prompt and answer that the run's model was trained on (``[]`` for
    runs trained since :func:`ards_rag.training.answers_after_prompt`); ``None`` for older runs,
    which learned whatever Ludwig's tokenization of the answers starts with (:class:`Scorer`)."""
    summary = json.loads((Path(run_dir) / "summary.json").read_text("utf-8"))
    recorded = summary.get("answer_prefix")
    if isinstance(recorded, list) and all(isinstance(i, int) for i in recorded):
        return recorded
    return None


def _warn_if_threshold_predates(run: Path, answers: tuple[str, str]) -> None:
    """A run trained before runs recorded their answers has its threshold chosen on the former
    score (P("true") against P("false"), tokens it was not trained on) until it is chosen again."""
    summary = json.loads((run / "summary.json").read_text("utf-8"))
    if "answers" in summary or summary.get("zero_shot"):
        return
    try:
        chosen_with = json.loads((run / "threshold.json").read_text("utf-8")).get("answers")
    except (OSError, ValueError, AttributeError):
        return  # read_threshold reports a missing or damaged file where the threshold is used
    if chosen_with != list(answers):
        logger.warning(
            "%s was trained on the answers %r/%r, which the score now compares; its threshold was "
            "chosen on the former score: run `ards-rag threshold --run %s` (then `ards-rag evaluate`) "
            "or train it again", run, answers[0], answers[1], run)


def parse_answer(text: str) -> str | None:
    """``"true"`` or ``"false"`` when a generated text is that answer (case, surrounding blanks and
    trailing punctuation ignored, as in ``"True."``), else None."""
    words = str(text).strip().lower().split(maxsplit=1)
    head = words[0].rstrip(".,;:!") if words else ""
    return head if head in ANSWERS else None


@contextlib.contextmanager
def _tolerant_ludwig_configs() -> Iterator[None]:
    """Let Ludwig 0.17.10 load the LLM configs it saves.

    ``LudwigModel.load`` validates the saved config, then re-validates ``config_obj.to_dict()``,
    which carries ``adapters: null``; the JSON schema rejects that null ("None is not of type
    'object'"), so no saved LLM model loads. A top-level null means "the default", so nulls are
    dropped before validation.
    """
    from ludwig.schema.model_types.base import ModelConfig

    original = ModelConfig.__dict__["from_dict"]

    def from_dict(config: dict[str, Any]) -> Any:
        if isinstance(config, dict):
            config = {k: v for k, v in config.items() if v is not None}
        return original.__func__(config)

    ModelConfig.from_dict = staticmethod(from_dict)  # type: ignore[method-assign]
    try:
        yield
    finally:
        ModelConfig.from_dict = original  # type: ignore[method-assign]


def _load_ludwig(model_dir: Path) -> Any:
    from ludwig.api import LudwigModel

    from .training import sdpa_attention

    try:
        with _tolerant_ludwig_configs(), sdpa_attention():
            return LudwigModel.load(str(model_dir), logging_level=logging.ERROR, backend="local")
    except Exception as exc:  # noqa: BLE001 - a damaged model folder: one clear line
        first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise RunError(f"{model_dir}: cannot load the Ludwig model ({first}); train the run again") from None


def _move_to_gpu(ludwig_model: Any) -> None:
    """Put a loaded run's model on the GPU, when there is one and the model sits on the CPU.

    ``LudwigModel.load`` builds full-precision models on the CPU (only bitsandbytes 4-bit loads
    land on the GPU) and moves them only inside its own ``predict``; scoring would otherwise run
    on the CPU beside an idle GPU. A model that does not fit the GPU stays on the CPU.
    """
    import torch

    llm = ludwig_model.model
    if not torch.cuda.is_available() or next(llm.model.parameters()).device.type != "cpu":
        return
    try:
        # An indexed device: Ludwig's to_device shards over all GPUs for a bare "cuda".
        llm.to_device(torch.device("cuda", torch.cuda.current_device()))
    except torch.cuda.OutOfMemoryError:
        llm.to_device(torch.device("cpu"))
        torch.cuda.empty_cache()
        logger.warning("the run's model does not fit in the GPU's free memory: scoring on the CPU")


_SCORERS: dict[tuple[str, float, str], Scorer] = {}


def get_scorer(run_dir: str | Path, precision: str = "model") -> Scorer:
    """A :class:`Scorer` for the run in ``precision``, loaded once per process (and reloaded if
    retrained). One model per run stays loaded: asking for another precision replaces it."""
    run = check_run(run_dir).resolve()
    key = (str(run), (run / "summary.json").stat().st_mtime, precision)
    if key not in _SCORERS:
        for old in [k for k in _SCORERS if k[0] == key[0]]:
            del _SCORERS[old]
        _SCORERS[key] = Scorer.from_run(run, precision)
    return _SCORERS[key]


# ------------------------------------------------------------------------------ patients


def _open_index(index: Any) -> Any:
    if isinstance(index, (str, os.PathLike)):
        from .index import NotesIndex

        return NotesIndex.load(index)
    return index


def predict_patients(
    run_dir: str | Path,
    index: Any,
    patient_ids: Iterable[str],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    scorer: Scorer | None = None,
    precision: str = "model",
    generate: bool = False,
) -> pd.DataFrame:
    """Score patients with the run: ``patient_id, prediction, probability, evidence_note_ids``.

    ``index``: an index folder or a loaded :class:`~ards_rag.index.NotesIndex`, built like the
    run's (else :class:`ManifestMismatchError`). Contexts are rebuilt with the run's retrieval
    settings; ``prediction`` is ``probability >= threshold`` (the run's ``threshold.json``);
    ``evidence_note_ids`` are the notes of the passages the model read, strongest first, joined
    by ``;``. Unknown ids raise :class:`UnknownPatientError`. ``precision``: see :class:`Scorer`.
    ``generate``: also run Ludwig's own ``predict`` on each context (slow: one generation per
    patient) and add ``generated`` (its answer text), ``generated_agrees`` and
    ``generated_scored_token`` (:meth:`Scorer.generated_answers`).
    """
    from .retrieval import Retriever

    run = check_run(run_dir)
    ids = [str(p) for p in patient_ids]
    notes_index = _open_index(index)
    check_index_matches(run, notes_index)
    unknown = [p for p in ids if not notes_index.has_patient(p)]
    if unknown:
        raise UnknownPatientError(
            f"patient {unknown[0]!r} is not in the index {getattr(notes_index, 'dir', '')}"
            + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
        )
    cfg = read_run_config(run)
    threshold = read_threshold(run)
    scorer = scorer or get_scorer(run, precision)
    from .prompt import context_budget

    retriever = Retriever(notes_index, cfg, scorer.tokenizer, context_budget(cfg, scorer.tokenizer))
    # Scored a window at a time, while the context workers (if any) build the next windows.
    window = batch_size * SCORE_WINDOW_BATCHES
    parts: list[np.ndarray] = []
    pending: list[str] = []
    evidence: list[str] = []
    generated: list[dict[str, Any]] = []

    def flush() -> None:
        parts.append(scorer.score(pending, batch_size=batch_size))
        if generate:
            generated.extend(scorer.generated_answers(pending, parts[-1]))
        pending.clear()

    for ctx in retriever.iter_contexts(ids):
        pending.append(ctx.text)
        evidence.append(";".join(ctx.note_ids))
        if len(pending) == window:
            flush()
    if pending:
        flush()
    probs = np.concatenate(parts) if parts else np.array([], dtype=float)
    frame = pd.DataFrame(
        {
            "patient_id": ids,
            "prediction": [bool(p >= threshold) for p in probs],
            "probability": probs.astype(float),
            "evidence_note_ids": evidence,
        }
    )
    if generate:
        frame["generated"] = [g["text"] for g in generated]
        frame["generated_agrees"] = [g["agrees"] for g in generated]
        frame["generated_scored_token"] = [g["scored_token"] for g in generated]
    return frame


def predict_one(run_dir: str | Path, index: Any, patient_id: str, *, evidence_chars: int = 200,
                precision: str = "model", generate: bool = False) -> dict[str, Any]:
    """One patient's answer with its evidence (for ``ards-rag predict --patient-id``).

    ``generate``: also run Ludwig's own ``predict`` on the context and add its answer under
    ``generated`` (:meth:`Scorer.generated_answers`)."""
    from .prompt import context_budget
    from .retrieval import Retriever

    run = check_run(run_dir)
    notes_index = _open_index(index)
    check_index_matches(run, notes_index)
    cfg = read_run_config(run)
    threshold = read_threshold(run)
    scorer = get_scorer(run, precision)
    retriever = Retriever(notes_index, cfg, scorer.tokenizer, context_budget(cfg, scorer.tokenizer))
    ctx = retriever.context(str(patient_id))
    p = float(scorer.score([ctx.text])[0])
    evidence = []
    for psg in ctx.passages:
        text = " ".join(str(psg.get("text", "")).split())
        evidence.append({
            "note_id": psg.get("note_id"),
            "charttime": psg.get("charttime"),
            "note_type": psg.get("note_type"),
            "section": psg.get("section"),
            "score": psg.get("score"),
            "snippet": text if len(text) <= evidence_chars else text[: evidence_chars - 3] + "...",
        })
    result = {
        "patient_id": str(patient_id),
        "prediction": bool(p >= threshold),
        "answer": "true" if p >= threshold else "false",
        "probability": p,
        "threshold": threshold,
        "run": str(run),
        "evidence": evidence,
    }
    if generate:
        result["generated"] = scorer.generated_answers([ctx.text], [p])[0]
    return result


def format_prediction(result: dict[str, Any]) -> str:
    """Human-readable view of :func:`predict_one`'s result."""
    lines = [
        f"patient {result['patient_id']}: {result['answer']}  "
        f"(P(ARDS) = {result['probability']:.3f}, threshold {result['threshold']:.3f})",
        "evidence (strongest first):",
    ]
    for e in result["evidence"]:
        score = f"{e['score']:.3f}" if isinstance(e.get("score"), (int, float)) else "-"
        head = " | ".join(
            str(x) for x in (e["note_id"], e.get("charttime"), e.get("note_type"), e.get("section")) if x
        )
        lines.append(f"  [{score}] {head}")
        lines.append(f"          {e['snippet']}")
    if "generated" in result:
        lines.append(_format_generated(result))
    return "\n".join(lines)


def _format_generated(result: dict[str, Any]) -> str:
    g = result["generated"]
    line = f"Ludwig's generated answer: {g['text']!r}"
    if not g["agrees"]:
        line += (f": does not agree with the model's more likely answer ({g['most_likely']}, "
                 f"P(ARDS) {result['probability']:.3f} against 0.5)")
    else:
        line += f": the model's more likely answer (P(ARDS) {'>=' if g['answer'] == 'true' else '<'} 0.5)"
        if g["answer"] != result["answer"]:
            line += f"; the run's threshold {result['threshold']:.3f} makes the answer {result['answer']}"
    if not g["scored_token"]:
        line += f"; its first token is {OTHER_FORM}"
    return line


def select_patients(
    run_dir: str | Path,
    index: Any,
    *,
    unlabeled: bool = False,
    all_patients: bool = False,
    patients_file: str | Path | None = None,
    new_ids: Sequence[str] = (),
) -> list[str]:
    """Patient ids for batch prediction: ``--unlabeled``, ``--all``, ``--patients FILE`` or the
    patients just added with ``--notes``. A patients file is read by :func:`read_patient_ids`."""
    notes_index = _open_index(index)
    if all_patients:
        return notes_index.patient_ids()
    if unlabeled:
        labels = notes_index.labels()
        return labels.loc[labels["label"].isna(), "patient_id"].astype(str).tolist()
    if patients_file is not None:
        return read_patient_ids(patients_file, known=notes_index.patient_ids())
    return [str(p) for p in new_ids]


def read_patient_ids(path: str | Path, known: Sequence[str] = ()) -> list[str]:
    """The patient ids of a ``--patients`` file, in file order, duplicates and blanks dropped.

    Either one id per line (no header, or a first line that is a patient id column's name), or a
    CSV with any columns whose header names one of ``patient_id``, ``subject_id`` or ``hadm_id``
    (case-insensitive), e.g. a ``predictions.csv`` written by ``predict --out``. When the header
    names several, the one with the most ids among ``known`` (the index's patients) is read,
    ties going to that order. Raises :class:`~ards_rag.errors.InputError` naming the file for a
    missing or non-UTF-8 file, a CSV header without a patient id column, or a file with no id.
    """
    from .errors import InputError
    from .notes import PATIENT_COLUMNS

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: patients file not found")
    try:
        text = p.read_text(encoding="utf-8-sig")  # -sig: a spreadsheet's byte-order mark
    except UnicodeDecodeError as exc:
        raise InputError(f"{p}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), "")
    header = [c.strip().strip('"').strip().lower() for c in first.split(",")]
    present = [c for c in PATIENT_COLUMNS if c in header]
    if present:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
        frame.columns = [str(c).strip().lower() for c in frame.columns]
        known_set = set(known)
        column = max(present, key=lambda c: (frame[c].str.strip().isin(known_set).sum(),
                                             -present.index(c)))
        ids = frame[column].str.strip().tolist()
    elif len(header) > 1:
        raise InputError(
            f"{p}: the CSV header has no patient id column ({', '.join(PATIENT_COLUMNS)}); "
            f"columns found: {', '.join(header)}. Name the column patient_id, or give one id per line"
        )
    else:
        ids = [line.strip() for line in lines]
    ids = [i for i in dict.fromkeys(ids) if i]
    if not ids:
        raise InputError(f"{p}: no patient ids (one per line, or a CSV with a patient_id column)")
    return ids


def add_notes_to_index(run_dir: str | Path, index_dir: str | Path, table: Any) -> tuple[list[str], IndexReport]:
    """Merge a notes table (new patients, or new notes of known ones) into the index, with the
    run's embedder and chunking; return the ids of the patients in ``table`` and the index's
    :class:`~ards_rag.index.IndexReport` (``patients_added``: those it did not hold before)."""
    from .index import update_index

    run = check_run(run_dir)
    cfg = read_run_config(run)
    report = update_index(index_dir, table, cfg)
    return list(dict.fromkeys(str(p) for p in table.notes["patient_id"])), report
