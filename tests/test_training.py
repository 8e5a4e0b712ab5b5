"""Training: split, oversampling, Ludwig config, the 4-bit checkpoint fix, end-to-end runs."""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from ards_rag.config import resolve_config
from ards_rag.errors import ConfigError, ModelError, RunError, TrainingError
from ards_rag.training import (
    adapter_only_checkpoints,
    ludwig_config,
    oversample,
    stratified_split,
    train,
)
from conftest import build_small_index, tiny_config

RUN_FILES = {"model", "config.yaml", "split.csv", "index_manifest.json", "training_statistics.json",
             "versions.json", "threshold.json", "summary.json"}


# ------------------------------------------------------------------------------------ split


def test_a_folder_that_is_not_a_run_is_never_replaced_by_one(tmp_path: Path, small_index_dir: Path) -> None:
    """`--run` pointing at the index (or any folder of other files) stops before any work, and
    leaves that folder as it was; an empty folder or an earlier run may be (re)written."""
    before = sorted(p.name for p in small_index_dir.iterdir())
    with pytest.raises(RunError, match=r"is not a run folder: it holds other files \(.*manifest\.json"):
        train(small_index_dir, resolve_config(), small_index_dir)
    assert sorted(p.name for p in small_index_dir.iterdir()) == before
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="notes.txt"):
        train(small_index_dir, resolve_config(), tmp_path)
    with pytest.raises(RunError, match="it holds a file"):
        train(small_index_dir, resolve_config(), tmp_path / "notes.txt")


def _labels(n_pos: int, n_neg: int) -> pd.DataFrame:
    ids = [f"P{i:04d}" for i in range(n_pos + n_neg)]
    return pd.DataFrame({"patient_id": ids, "label": [True] * n_pos + [False] * (n_neg)})


@pytest.mark.parametrize(("n_pos", "n_neg"), [(40, 120), (3, 9), (1, 5), (50, 50)])
def test_split_has_no_leakage_and_is_stratified(n_pos: int, n_neg: int) -> None:
    labels = _labels(n_pos, n_neg)
    split = stratified_split(labels, 0.15, 0.15, seed=7)
    assert sorted(split["patient_id"]) == sorted(labels["patient_id"])  # each patient exactly once
    assert not split["patient_id"].duplicated().any()
    sets = {s: set(split.loc[split["split"] == s, "patient_id"]) for s in ("train", "validation", "test")}
    assert not (sets["train"] & sets["validation"] or sets["train"] & sets["test"]
                or sets["validation"] & sets["test"])
    merged = split.merge(labels, on="patient_id", suffixes=("", "_true"))
    assert (merged["label"] == merged["label_true"]).all()
    for value, n in ((True, n_pos), (False, n_neg)):
        part = split[split["label"] == value]
        assert (part["split"] == "train").sum() >= 1  # every class is trained on
        if n >= 3:
            assert abs((part["split"] == "test").sum() - round(0.15 * n)) <= 1
            assert (part["split"] == "validation").sum() >= 1


def test_split_is_seeded() -> None:
    labels = _labels(20, 60)
    a = stratified_split(labels, 0.2, 0.2, seed=1)
    assert a.equals(stratified_split(labels.sample(frac=1, random_state=3), 0.2, 0.2, seed=1))
    assert not a.equals(stratified_split(labels, 0.2, 0.2, seed=2))


def test_oversample_balances_train_and_keeps_every_row() -> None:
    train_rows = pd.DataFrame({"patient_id": [f"P{i}" for i in range(11)], "label": [True] * 3 + [False] * 8})
    out = oversample(train_rows, seed=0)
    counts = out["label"].value_counts()
    assert counts[True] == counts[False] == 8
    assert set(out["patient_id"]) == set(train_rows["patient_id"])
    # Each minority patient appears 2 or 3 times (whole copies, then a sample of the rest).
    reps = out[out["label"]]["patient_id"].value_counts()
    assert set(reps) <= {2, 3}


# ----------------------------------------------------------------------------- Ludwig config


def test_ludwig_config_overrides_ludwig_defaults(smollm2_tokenizer) -> None:  # noqa: ANN001
    cfg = resolve_config()
    lc = ludwig_config(cfg, "/some/folder", smollm2_tokenizer)
    assert lc["base_model"] == "/some/folder"
    assert lc["trainer"]["type"] == "finetune"
    assert lc["generation"]["do_sample"] is False
    assert lc["backend"]["type"] == "local"
    assert lc["preprocessing"]["split"] == {"type": "fixed", "column": "split"}
    assert "{context}" in lc["prompt"]["template"] and "{instruction}" not in lc["prompt"]["template"]
    assert "quantization" not in lc  # null = full precision, not passed to Ludwig
    max_in = lc["input_features"][0]["preprocessing"]["max_sequence_length"]
    max_out = lc["output_features"][0]["preprocessing"]["max_sequence_length"]
    assert max_in + max_out == cfg["ludwig"]["preprocessing"]["global_max_sequence_length"]
    zs = ludwig_config(cfg, "/some/folder", smollm2_tokenizer, zero_shot=True)
    assert zs["trainer"] == {"type": "none"} and "adapter" not in zs


# ------------------------------------------------------------------ the 4-bit checkpoint fix


class _FakeDistributed:
    def local_rank(self) -> int:
        return 0

    def barrier(self) -> None:
        pass


def _model_with_a_4bit_layer() -> torch.nn.Module:
    import bitsandbytes as bnb

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.frozen = bnb.nn.Linear4bit(64, 64, bias=False, quant_type="nf4", compute_dtype=torch.float32)
            self.frozen.weight = bnb.nn.Params4bit(torch.randn(64, 64), requires_grad=False, quant_type="nf4")
            self.adapter = torch.nn.Linear(64, 4, bias=False)

    return Model().to("cpu")


def test_adapter_only_checkpoints_avoid_the_4bit_reload_crash() -> None:
    from ludwig.utils.checkpoint_utils import MultiNodeCheckpoint

    model = _model_with_a_4bit_layer()
    checkpoint = MultiNodeCheckpoint(_FakeDistributed(), model)
    # Ludwig 0.17.10 as is: the 4-bit quantization state is saved and comes back as unexpected keys.
    _, unexpected = model.load_state_dict(checkpoint.get_model_state_dict(), strict=False)
    assert any("absmax" in k or "quant_state" in k for k in unexpected)

    with adapter_only_checkpoints():
        state = {k: v.clone() for k, v in checkpoint.get_model_state_dict().items()}
    assert set(state) == {"adapter.weight"}
    with torch.no_grad():
        model.adapter.weight.add_(1.0)  # training goes on past the best checkpoint...
    _, unexpected = model.load_state_dict(state, strict=False)
    assert unexpected == []
    assert torch.equal(model.adapter.weight, state["adapter.weight"])  # ...and the best is restored
    assert MultiNodeCheckpoint.get_model_state_dict is not None
    assert "adapter_only" not in MultiNodeCheckpoint.get_model_state_dict.__name__  # patch undone


def test_eager_attention_is_switched_to_sdpa_with_the_same_outputs(tiny_llama_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    from ards_rag.training import use_sdpa

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, attn_implementation="eager").eval()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1]])
    with torch.no_grad():
        eager = model(input_ids=ids, attention_mask=mask).logits[0, -1]
        use_sdpa(model)
        assert model.config._attn_implementation == "sdpa"
        sdpa = model(input_ids=ids, attention_mask=mask).logits[0, -1]
    torch.testing.assert_close(eager, sdpa, atol=1e-5, rtol=1e-4)


def test_quantized_models_autocast_on_gpus_only_and_return_float32() -> None:
    import ludwig.models.llm as llm_module

    from ards_rag.training import autocast_for, compute_dtype, float32_outputs, quantized_autocast

    q = {"bits": 4, "bnb_4bit_compute_dtype": "bfloat16"}
    assert compute_dtype(q) is torch.bfloat16
    assert compute_dtype({"bits": 4}) is torch.float16  # bitsandbytes' default compute dtype
    assert compute_dtype(None) is None
    # CPU, or no quantization: numerics untouched.
    assert isinstance(autocast_for("cpu", q), contextlib.nullcontext)
    assert isinstance(autocast_for("cuda:0", None), contextlib.nullcontext)
    with warnings.catch_warnings():  # torch warns that CUDA is missing on CPU-only machines
        warnings.simplefilter("ignore", UserWarning)
        assert isinstance(autocast_for("cuda:0", q), torch.autocast)
    out = float32_outputs({"label::logits": torch.ones(2, 3, dtype=torch.bfloat16),
                           "nested": {"ids": torch.ones(2, dtype=torch.long)}})
    assert out["label::logits"].dtype == torch.float32
    assert out["nested"]["ids"].dtype == torch.long
    original = llm_module.LLM.forward
    with quantized_autocast():
        assert llm_module.LLM.forward is not original
    assert llm_module.LLM.forward is original  # patch undone


def test_tf32_matmuls_only_while_training_and_restored_after_errors() -> None:
    from ards_rag.training import ludwig_fixes, tf32_matmuls

    flags = torch.backends.cuda.matmul, torch.backends.cudnn
    before = (flags[0].allow_tf32, flags[1].allow_tf32)
    for start in (False, True):
        flags[0].allow_tf32 = flags[1].allow_tf32 = start
        with pytest.raises(RuntimeError), tf32_matmuls():
            assert flags[0].allow_tf32 and flags[1].allow_tf32
            raise RuntimeError("a failed training run")
        assert (flags[0].allow_tf32, flags[1].allow_tf32) == (start, start)
    flags[0].allow_tf32 = flags[1].allow_tf32 = False
    with ludwig_fixes():  # what `train` wraps Ludwig's training in
        assert flags[0].allow_tf32
    assert not flags[0].allow_tf32
    flags[0].allow_tf32, flags[1].allow_tf32 = before


def test_a_tokenizer_vocabulary_with_an_id_gap_does_not_break_ludwigs_metadata(tmp_path: Path) -> None:
    """Gemma-3-270M converted by transformers 5.17 lacks one token id; Ludwig's vocabulary then
    holds None and saving its training metadata (sorted JSON keys) failed."""
    from ludwig.utils.data_utils import save_json
    from ludwig.utils.strings_utils import _get_vocabulary
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    from ards_rag.training import ludwig_fixes

    hf = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"<unk>": 0, "true": 1, "false": 3},
                                                                      unk_token="<unk>")))

    def metadata() -> None:
        vocab = _get_vocabulary("hf_tokenizer", hf, None, "<unk>", False, "<pad>", None, 0)
        save_json(str(tmp_path / "meta.json"), {"str2idx": {u: i for i, u in enumerate(vocab)}})

    with pytest.raises(TypeError):
        metadata()
    with ludwig_fixes():
        metadata()
    str2idx = json.loads((tmp_path / "meta.json").read_text())["str2idx"]
    assert str2idx["true"] == 1 and str2idx["false"] == 3 and len(str2idx) == 4
    with pytest.raises(TypeError):  # restored afterwards
        metadata()


def _adapter_snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("bits", [None, pytest.param(4, marks=pytest.mark.slow)])
def test_ludwig_restores_the_best_checkpoint(tmp_path: Path, tiny_llama_dir: Path, smollm2_tokenizer,  # noqa: ANN001
                                             bits: int | None, request: pytest.FixtureRequest) -> None:
    """Real Ludwig training with a learning rate that diverges after the first epoch: the model
    Ludwig returns holds the adapter of the best validation loss, not the last one."""
    from ludwig.api import LudwigModel
    from ludwig.callbacks import Callback

    class Recorder(Callback):
        best: dict[str, torch.Tensor] = {}
        last: dict[str, torch.Tensor] = {}

        def on_save_best_checkpoint(self, trainer, progress_tracker, save_path, **kw) -> None:  # noqa: ANN001
            Recorder.best = _adapter_snapshot(trainer.model)

        def on_epoch_end(self, trainer, progress_tracker, save_path, **kw) -> None:  # noqa: ANN001
            Recorder.last = _adapter_snapshot(trainer.model)

    extra = {"quantization": {"bits": bits}} if bits else {}
    base = request.getfixturevalue("tiny_llama64_dir") if bits else tiny_llama_dir  # see that fixture
    cfg = tiny_config(base, trainer={"epochs": 3, "batch_size": 4, "learning_rate": 0.5}, **extra)
    lc = ludwig_config(cfg, str(base), smollm2_tokenizer)
    rows = pd.DataFrame({"context": [f"note {i} " * (5 + i) for i in range(12)],
                         "label": ["true", "false"] * 6, "split": [0] * 8 + [1] * 4})
    model = LudwigModel(lc, logging_level=logging.ERROR, backend="local", callbacks=[Recorder()])
    with adapter_only_checkpoints():
        model.train(dataset=rows, output_directory=str(tmp_path / "out"), skip_save_progress=True,
                    skip_save_log=True, skip_save_processed_input=True, random_seed=0)
    final = _adapter_snapshot(model.model)
    assert Recorder.best and set(final) == set(Recorder.best)
    for name, value in Recorder.best.items():
        assert torch.equal(final[name].cpu(), value.cpu()), name
    if any(not torch.equal(Recorder.last[n], Recorder.best[n]) for n in Recorder.best):
        # The last epoch was not the best, and was indeed replaced by the best.
        assert any(not torch.equal(final[n], Recorder.last[n]) for n in final)


# ------------------------------------------------------------------------------ end to end


def test_end_to_end_run_folder(tiny_run: Path, small_index_dir: Path) -> None:
    assert RUN_FILES <= {p.name for p in tiny_run.iterdir()}
    assert (tiny_run / "model" / "model_weights" / "adapter_model.safetensors").is_file()
    split = pd.read_csv(tiny_run / "split.csv", dtype={"patient_id": str})
    assert list(split.columns) == ["patient_id", "split", "label"]
    assert not split["patient_id"].duplicated().any() and len(split) == 16
    assert set(split["split"]) == {"train", "validation", "test"}
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert summary["patients"] == {s: int((split["split"] == s).sum()) for s in ("train", "validation", "test")}
    assert summary["epochs"] == 1 and summary["train_loss"] is not None
    assert summary["max_prompt_tokens"] <= 160 - 2
    threshold = json.loads((tiny_run / "threshold.json").read_text())
    assert 0.0 <= threshold["threshold"] <= 1.0 and threshold["chosen_on"] == "validation"
    manifest = json.loads((small_index_dir / "manifest.json").read_text())
    assert json.loads((tiny_run / "index_manifest.json").read_text()) == manifest
    cfg = yaml.safe_load((tiny_run / "config.yaml").read_text())
    assert cfg["ludwig"]["trainer"]["type"] == "finetune"
    versions = json.loads((tiny_run / "versions.json").read_text())
    assert versions["ludwig"] == "0.17.10" and "torch" in versions
    stats = json.loads((tiny_run / "training_statistics.json").read_text())
    assert stats["training"]["label"]["loss"]


def test_the_model_is_trained_on_the_answer_tokens_the_score_compares(
        tmp_path: Path, tiny_llama_dir: Path, small_index_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The token before the EOS of every sequence Ludwig trains on is the first token of the
    answer the scorer reads: "true" or "false" (a config whose output feature is named "label"
    once trained on "True"/"False" while the score compared "true"/"false")."""
    import ludwig.models.llm as llm_module

    from ards_rag.prediction import Scorer, run_answers

    answers: list[int] = []
    original = llm_module.LLM.train_loss

    def observed(self, targets, predictions, *args, **kwargs):  # noqa: ANN001, ANN202
        answers.extend(int(t) for t in self.model_inputs[:, -2])  # [..., answer, EOS]
        assert bool((self.model_inputs[:, -1] == self.tokenizer.eos_token_id).all())
        return original(self, targets, predictions, *args, **kwargs)

    monkeypatch.setattr(llm_module.LLM, "train_loss", observed)
    cfg = tiny_config(tiny_llama_dir)
    assert cfg["ludwig"]["output_features"][0]["name"] == "label"
    run = tmp_path / "run"
    train(small_index_dir, cfg, run, progress=False)
    assert json.loads((run / "summary.json").read_text())["answers"] == ["true", "false"]
    assert run_answers(run, cfg) == ("true", "false")
    scorer = Scorer.from_run(run)
    assert [scorer.tokenizer.decode([i]) for i in scorer.candidate_ids] == ["true", "false"]
    assert answers and set(answers) == set(scorer.candidate_ids)


def test_the_answer_follows_the_prompt_without_a_second_bos(
        tmp_path: Path, tiny_llama_bos_dir: Path, small_index_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a tokenizer that starts every text with BOS (Gemma, Llama-2), Ludwig tokenizes the
    answer as `<bos> true` and would train `prompt <bos> true <eos>`. Every sequence trained on
    is `<bos> prompt true <eos>` instead, and the score reads the answer right after the prompt.
    A run from before records no answer_prefix and is scored after the BOS it learned."""
    import shutil

    import ludwig.models.llm as llm_module

    from ards_rag.prediction import Scorer, run_answer_prefix

    sequences: list[list[int]] = []
    original = llm_module.LLM.train_loss

    def observed(self, targets, predictions, *args, **kwargs):  # noqa: ANN001, ANN202
        for row, mask in zip(self.model_inputs.tolist(), self.attention_masks.tolist(), strict=True):
            sequences.append([i for i, m in zip(row, mask, strict=True) if m])
        return original(self, targets, predictions, *args, **kwargs)

    monkeypatch.setattr(llm_module.LLM, "train_loss", observed)
    run = tmp_path / "run"
    train(small_index_dir, tiny_config(tiny_llama_bos_dir), run, progress=False)
    scorer = Scorer.from_run(run)
    tok = scorer.tokenizer
    assert tok.encode("true")[0] == tok.bos_token_id  # the tokenizer does prepend BOS
    assert run_answer_prefix(run) == [] and scorer.answer_prefix == []
    prompt_end = scorer.prompt_ids("")[-1]  # the template's last token ("\n" after "### Response:")
    assert sequences
    for ids in sequences:
        assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
        assert ids[-1] == tok.eos_token_id and ids[-2] in scorer.candidate_ids and ids[-3] == prompt_end
    assert {ids[-2] for ids in sequences} == set(scorer.candidate_ids)

    old = tmp_path / "old"
    shutil.copytree(run, old)
    summary = json.loads((old / "summary.json").read_text())
    del summary["answer_prefix"]
    (old / "summary.json").write_text(json.dumps(summary))
    assert run_answer_prefix(old) is None
    assert Scorer.from_run(old).answer_prefix == [tok.bos_token_id]


def test_training_reports_its_progress_within_an_epoch(
        tmp_path: Path, tiny_llama_dir: Path, small_index_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long CPU epoch says how far it is and how long is left (here after every batch)."""
    import ards_rag.training as training

    monkeypatch.setattr(training, "PROGRESS_EVERY_S", 0.0)
    messages: list[str] = []
    report = train(small_index_dir, tiny_config(tiny_llama_dir), tmp_path / "run", progress=messages.append)
    batches = [m for m in messages if m.startswith("batch ")]
    steps = report.extra["train_steps"]
    assert len(batches) == steps
    assert batches[-1].startswith(f"batch {steps}/{steps}, ") and "s per batch" in batches[-1]
    assert "min left" in batches[0]
    assert any(m.startswith(f"epoch 1/1 done: {steps} steps") for m in messages)


def test_runs_without_recorded_answers_were_trained_on_capitalized_ones(
        tiny_run: Path, small_index_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A run from before runs recorded their answers is scored on "True"/"False", and says that
    its threshold was chosen on the former score until `ards-rag threshold` chooses it again."""
    import shutil

    from ards_rag.evaluation import choose_threshold
    from ards_rag.prediction import Scorer, run_answers

    cfg = yaml.safe_load((tiny_run / "config.yaml").read_text())
    old = tmp_path / "old"
    shutil.copytree(tiny_run, old)
    summary = json.loads((old / "summary.json").read_text())
    del summary["answers"]
    (old / "summary.json").write_text(json.dumps(summary))
    record = json.loads((old / "threshold.json").read_text())
    del record["answers"]
    (old / "threshold.json").write_text(json.dumps(record))
    assert run_answers(old, cfg) == ("True", "False")
    renamed = {**cfg, "ludwig": {**cfg["ludwig"], "output_features": [
        {**cfg["ludwig"]["output_features"][0], "name": "answer"}]}}
    assert run_answers(old, renamed) == ("true", "false")  # its strings were never overwritten
    (old / "summary.json").write_text(json.dumps({**summary, "zero_shot": True}))
    assert run_answers(old, cfg) == ("true", "false")  # never trained: the prompt's answers
    (old / "summary.json").write_text(json.dumps(summary))

    with caplog.at_level(logging.WARNING, logger="ards_rag.prediction"):
        scorer = Scorer.from_run(old)
    assert [scorer.tokenizer.decode([i]) for i in scorer.candidate_ids] == ["True", "False"]
    assert f"run `ards-rag threshold --run {old}`" in caplog.text
    assert json.loads((tiny_run / "threshold.json").read_text())["answers"] == ["true", "false"]
    choose_threshold(old, small_index_dir)
    assert json.loads((old / "threshold.json").read_text())["answers"] == ["True", "False"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ards_rag.prediction"):
        Scorer.from_run(old)
    assert "ards-rag threshold" not in caplog.text


def test_zero_shot_and_truncate_runs(tmp_path: Path, tiny_llama_dir: Path, small_index_dir: Path) -> None:
    from ards_rag.prediction import Scorer

    report = train(small_index_dir, tiny_config(tiny_llama_dir), tmp_path / "zs", zero_shot=True,
                   context_strategy="truncate", progress=False)
    assert report.zero_shot and report.context_strategy == "truncate" and report.epochs == 0
    cfg = yaml.safe_load((tmp_path / "zs" / "config.yaml").read_text())
    assert cfg["ludwig"]["trainer"] == {"type": "none"}
    assert cfg["retrieval"]["strategy"] == "truncate"
    scorer = Scorer.from_run(tmp_path / "zs")
    contexts = ["Note 1: lungs clear", "Note 1: bilateral opacities"]
    p = scorer.score(contexts)
    assert ((p >= 0) & (p <= 1)).all()
    assert len(scorer.generated_answers(contexts, p)) == 2  # the base model answers through Ludwig too
    np.testing.assert_allclose(scorer.score(contexts), p, atol=1e-6)  # and scores as before after it


def test_full_fine_tuning_without_an_adapter(tmp_path: Path, tiny_llama_dir: Path, small_index_dir: Path) -> None:
    from ards_rag.prediction import Scorer

    cfg = tiny_config(tiny_llama_dir, adapter=None)
    report = train(small_index_dir, cfg, tmp_path / "full", progress=False)
    assert report.epochs == 1
    assert yaml.safe_load((tmp_path / "full" / "config.yaml").read_text())["ludwig"]["adapter"] is None
    scorer = Scorer.from_run(tmp_path / "full")
    assert not hasattr(scorer.model, "peft_config")  # the whole model was trained, no adapter
    p = scorer.score(["Note 1: lungs clear", "Note 1: bilateral opacities"])
    assert ((p >= 0) & (p <= 1)).all()


def test_training_views_multiply_the_training_rows_only(tiny_run: Path, tmp_path: Path, tiny_llama_dir: Path,
                                                       small_index_dir: Path) -> None:
    cfg = tiny_config(tiny_llama_dir)
    cfg["retrieval"].update(train_views=3, view_dropout=0.4)
    report = train(small_index_dir, cfg, tmp_path / "views", progress=False)
    one = json.loads((tiny_run / "summary.json").read_text())
    three = json.loads((tmp_path / "views" / "summary.json").read_text())
    assert three["extra"]["train_views"] == 3 and one["extra"]["train_views"] == 1
    # three contexts per training patient, oversampled as before; the same patients and split
    assert three["train_rows"] == report.train_rows == 3 * one["train_rows"]
    assert three["patients"] == one["patients"]
    assert (pd.read_csv(tmp_path / "views" / "split.csv").equals(pd.read_csv(tiny_run / "split.csv")))
    for bad in (0, 1.5, True):
        cfg["retrieval"]["train_views"] = bad
        with pytest.raises(ConfigError, match="train_views must be an integer >= 1"):
            train(small_index_dir, cfg, tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()


def test_a_failed_run_keeps_the_previous_one(tiny_run: Path, tmp_path: Path, tiny_llama_dir: Path,
                                             small_index_dir: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = {p.name: p.stat().st_mtime for p in run.iterdir()}
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_llama_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")  # fails inside Ludwig
    with pytest.raises(TrainingError, match="Ludwig training failed"):
        train(small_index_dir, tiny_config(broken), run, progress=False)
    assert {p.name: p.stat().st_mtime for p in run.iterdir()} == before
    assert not list(tmp_path.glob(".run.*"))  # no temporary folder left behind


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("labels", ["none", "one"])
def test_index_without_two_classes_is_a_training_error(tmp_path: Path, shared_embedder, labels: str) -> None:  # noqa: ANN001
    index = build_small_index(tmp_path, shared_embedder, n_patients=4, labels=labels)
    with pytest.raises(TrainingError, match="no labeled patient" if labels == "none" else "both classes"):
        train(index, resolve_config(), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_missing_base_model_is_a_model_error(tmp_path: Path, small_index_dir: Path) -> None:
    cfg = resolve_config(overrides={"ludwig": {"base_model": str(tmp_path / "no-such-model")}})
    with pytest.raises(ModelError, match="no-such-model"):
        train(small_index_dir, cfg, tmp_path / "run", progress=False)


def test_probabilities_in_unit_interval(tiny_run: Path) -> None:
    from ards_rag.prediction import Scorer

    p = Scorer.from_run(tiny_run).score(["a", "b " * 50, ""])
    assert p.shape == (3,) and np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()


@pytest.mark.slow
def test_4bit_training_finishes_and_reloads(tmp_path: Path, tiny_llama64_dir: Path, small_index_dir: Path) -> None:
    """The Ludwig 0.17.10 crash at the end of 4-bit training, as a regression test (CPU 4-bit)."""
    import bitsandbytes as bnb

    from ards_rag.prediction import Scorer

    quant = {"bits": 4, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": "float32"}
    cfg = tiny_config(tiny_llama64_dir, quantization=quant,
                      trainer={"epochs": 2, "batch_size": 4, "eval_batch_size": 8})
    report = train(small_index_dir, cfg, tmp_path / "q4", progress=False)
    assert report.quantization == "4-bit" and report.best_epoch in (1, 2)
    scorer = Scorer.from_run(tmp_path / "q4")
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in scorer.model.modules())
    assert scorer.model.get_base_model().config._attn_implementation == "sdpa"  # not Ludwig's eager
    contexts = ["Note 1: lungs clear", "Note 1: diffuse bilateral opacities"]
    p = scorer.score(contexts)
    assert ((p >= 0) & (p <= 1)).all()
    # Ludwig's own generation on the 4-bit model (predict --generated), scores unchanged after it
    checked = scorer.generated_answers(contexts, p)
    assert [g["most_likely"] for g in checked] == ["true" if q >= 0.5 else "false" for q in p]
    np.testing.assert_allclose(scorer.score(contexts), p, atol=1e-6)
