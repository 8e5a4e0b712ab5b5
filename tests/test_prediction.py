"""Scoring with a trained run: Ludwig-identical tokenization, batch invariance, patient frames,
and clear errors for missing runs, unknown patients and index mismatches."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ards_rag.errors import InputError, ManifestMismatchError, RunError, UnknownPatientError
from ards_rag.prediction import (
    Scorer,
    format_prediction,
    get_scorer,
    parse_answer,
    predict_one,
    predict_patients,
    read_patient_ids,
    resolve_run,
)

CONTEXTS = [
    "short",
    "[Note 1 | 2180-01-01 | Radiology | FINDINGS] Diffuse bilateral airspace opacities. " * 6,
    "Lungs CLEAR. {braces} ___ ≥ ½",
    "x" * 1500,  # longer than the input maximum: truncated exactly as Ludwig does
    "",
]


@pytest.fixture(scope="module")
def scorer(tiny_run: Path) -> Scorer:
    return get_scorer(tiny_run)


def test_prompt_ids_are_ludwigs_own(scorer: Scorer) -> None:
    """Our prompt ids equal what Ludwig's preprocessing + remove_left_padding feed the model.

    Ludwig records the longest training prompt as the input's length limit; the scorer cuts at
    the config's limit instead (>= that), so that a longer context within the budget keeps its
    answer cue. Ludwig's own pipeline is run here with the scorer's limit."""
    from ludwig.utils.llm_utils import remove_left_padding
    from ludwig.utils.strings_utils import build_sequence_matrix

    meta = scorer.ludwig_model.training_set_metadata["context"]
    pre = meta["preprocessing"]
    prompts = pd.Series([scorer.template.format(context=c) for c in CONTEXTS])
    matrix = build_sequence_matrix(
        sequences=prompts, inverse_vocabulary=meta["str2idx"], tokenizer_type=pre["tokenizer"],
        length_limit=scorer.max_input_tokens, padding_symbol=pre["padding_symbol"],
        padding=pre["padding"], unknown_symbol=pre["unknown_symbol"], lowercase=pre["lowercase"],
        tokenizer_vocab_file=pre["vocab_file"], pretrained_model_name_or_path=pre["pretrained_model_name_or_path"],
    )
    for context, row in zip(CONTEXTS, matrix, strict=True):
        ludwig_ids = remove_left_padding(torch.tensor(np.asarray(row, dtype=np.int64)), scorer.tokenizer)[0]
        ours = scorer.prompt_ids(context)
        assert ours[: len(ours) - len(scorer.answer_prefix)] == ludwig_ids.tolist()
    assert scorer.candidate_ids[0] != scorer.candidate_ids[1]
    assert scorer.max_input_tokens >= meta["max_sequence_length"]


def test_scores_are_probabilities_and_batch_invariant(scorer: Scorer) -> None:
    batched = scorer.score(CONTEXTS, batch_size=len(CONTEXTS))
    assert batched.shape == (len(CONTEXTS),)
    assert ((batched >= 0) & (batched <= 1)).all()
    alone = np.array([scorer.score([c], batch_size=1)[0] for c in CONTEXTS])
    np.testing.assert_allclose(batched, alone, atol=1e-5)  # left padding is masked out
    np.testing.assert_allclose(scorer.score(CONTEXTS[::-1], batch_size=2)[::-1], alone, atol=1e-5)
    assert scorer.score([]).shape == (0,)


def test_score_matches_the_models_own_next_token_softmax(scorer: Scorer) -> None:
    ids = torch.tensor([scorer.prompt_ids(CONTEXTS[1])])
    with torch.inference_mode():
        logits = scorer.model(input_ids=ids).logits[0, -1]
    t, f = scorer.candidate_ids
    expected = torch.softmax(logits[[t, f]].float(), -1)[0].item()
    assert scorer.score([CONTEXTS[1]])[0] == pytest.approx(expected, abs=1e-6)


def test_predict_patients_frame(tiny_run: Path, small_index_dir: Path) -> None:
    ids = ["P003", "P000", "P001"]
    frame = predict_patients(tiny_run, small_index_dir, ids, batch_size=2)
    assert list(frame.columns) == ["patient_id", "prediction", "probability", "evidence_note_ids"]
    assert frame["patient_id"].tolist() == ids
    threshold = json.loads((tiny_run / "threshold.json").read_text())["threshold"]
    assert (frame["prediction"] == (frame["probability"] >= threshold)).all()
    assert frame["evidence_note_ids"].str.startswith(tuple(ids)).all()
    one = predict_one(tiny_run, small_index_dir, "P003")
    assert one["probability"] == pytest.approx(float(frame["probability"].iloc[0]), abs=1e-6)
    assert one["prediction"] == bool(frame["prediction"].iloc[0]) and one["evidence"]
    shown = format_prediction(one).splitlines()
    assert shown[0].startswith(f"patient P003: {'true' if one['prediction'] else 'false'}")
    assert f"{one['probability']:.3f}" in shown[0]
    for e in one["evidence"]:  # every passage read is shown with its note id, section and snippet
        assert any(e["note_id"] in line and (e["section"] or "") in line for line in shown)
        assert any(e["snippet"] in line for line in shown)
    assert any(e["section"] for e in one["evidence"])


@pytest.mark.parametrize(("text", "expected"), [
    ("true", "true"), (" False.", "false"), ("TRUE\n", "true"), ("true false", "true"),
    ("truest", None), ("", None), ("\n\n", None), ("no", None), ("not true", None),
])
def test_parse_answer(text: str, expected: str | None) -> None:
    assert parse_answer(text) == expected


def test_ludwigs_generation_starts_with_the_scorers_top_token(scorer: Scorer) -> None:
    """Ludwig's own predict, on the same contexts, generates first the token that the scorer's
    forward pass ranks first over the whole vocabulary: the two read the same prompt, so a
    generated true/false is the score's more likely answer (P(ARDS) >= 0.5 or < 0.5). Contexts
    longer than the longest training prompt included: Ludwig alone would cut off their cue."""
    contexts = CONTEXTS[:4]
    preds = scorer.ludwig_predict(contexts)
    for context, tokens in zip(contexts, preds["label_predictions"], strict=True):
        ids = torch.tensor([scorer.prompt_ids(context)])
        with torch.inference_mode():
            logits = scorer.model(input_ids=ids).logits[0, -1].float()
        # the tiny random model's logits are nearly flat: accept any token tied with the top one
        near_top = torch.nonzero(logits >= logits.max() - 1e-4).flatten().tolist()
        assert tokens[0] in [scorer.tokenizer.decode([i]) for i in near_top]
    assert scorer.ludwig_model.training_set_metadata["context"]["max_sequence_length"] < len(
        scorer.prompt_ids(CONTEXTS[1]))  # Ludwig's own limit is restored


def test_scores_after_ludwigs_predict_are_unchanged(scorer: Scorer) -> None:
    """Ludwig's predict leaves the model in training mode (LoRA dropout on): scores after it
    must be the scores before it."""
    before = scorer.score(CONTEXTS, batch_size=2)
    scorer.ludwig_predict(CONTEXTS[:1])
    assert not scorer.model.training
    np.testing.assert_allclose(scorer.score(CONTEXTS, batch_size=3), before, atol=1e-6)


def test_generated_answer_is_shown_and_checked(tiny_run: Path, small_index_dir: Path) -> None:
    ids = ["P003", "P000"]
    frame = predict_patients(tiny_run, small_index_dir, ids, generate=True)
    assert list(frame.columns) == ["patient_id", "prediction", "probability", "evidence_note_ids",
                                   "generated", "generated_agrees", "generated_scored_token"]
    one = predict_one(tiny_run, small_index_dir, "P003", generate=True)
    g = one["generated"]
    assert g["text"] == frame["generated"].iloc[0]
    assert g["most_likely"] == ("true" if one["probability"] >= 0.5 else "false")
    # the barely trained tiny model answers with neither answer token: reported as such, never
    # taken as agreement
    assert g["answer"] is None and g["scored_token"] is False
    assert g["agrees"] is False and not frame["generated_agrees"].any()
    assert not frame["generated_scored_token"].any()
    assert "its first token is neither of the two answers the score compares" in format_prediction(one)


@pytest.mark.parametrize(("p", "threshold", "text", "expected"), [
    (0.8, 0.5, "true", "Ludwig's generated answer: 'true': the model's more likely answer (P(ARDS) >= 0.5)"),
    (0.4, 0.342, "false", "Ludwig's generated answer: 'false': the model's more likely answer "
                          "(P(ARDS) < 0.5); the run's threshold 0.342 makes the answer true"),
    (0.8, 0.5, "false", "Ludwig's generated answer: 'false': does not agree with the model's more "
                        "likely answer (true, P(ARDS) 0.800 against 0.5)"),
    (0.4, 0.5, "True", "Ludwig's generated answer: 'True': does not agree with the model's more "
                       "likely answer (false, P(ARDS) 0.400 against 0.5); its first token is neither "
                       "of the two answers the score compares: the model answers in another form "
                       "than it was trained on (e.g. 'False' for 'false'; train it longer)"),
    # agreeing in another form: agreement, and the form is still reported
    (0.3, 0.5, "False", "Ludwig's generated answer: 'False': the model's more likely answer "
                        "(P(ARDS) < 0.5); its first token is neither of the two answers the score "
                        "compares: the model answers in another form than it was trained on "
                        "(e.g. 'False' for 'false'; train it longer)"),
])
def test_generated_answer_line(p: float, threshold: float, text: str, expected: str) -> None:
    answer = "true" if p >= threshold else "false"
    likely = "true" if p >= 0.5 else "false"
    result = {"patient_id": "A", "answer": answer, "probability": p, "threshold": threshold, "evidence": [],
              "generated": {"text": text, "answer": parse_answer(text), "most_likely": likely,
                            "agrees": parse_answer(text) == likely,
                            "scored_token": text in ("true", "false")}}
    assert format_prediction(result).splitlines()[-1] == expected


def test_predict_patients_in_windows_with_context_workers(tiny_run: Path, small_index_dir: Path) -> None:
    from ards_rag.config import read_yaml
    from ards_rag.index import NotesIndex
    from ards_rag.prediction import SCORE_WINDOW_BATCHES, get_scorer
    from ards_rag.prompt import context_budget
    from ards_rag.retrieval import Retriever

    index = NotesIndex.load(small_index_dir)
    ids = list(reversed(index.patient_ids()))  # 16 patients: two windows of 8 at batch size 1
    assert len(ids) > SCORE_WINDOW_BATCHES
    frame = predict_patients(tiny_run, index, ids, batch_size=1)
    scorer = get_scorer(tiny_run)
    cfg = read_yaml(tiny_run / "config.yaml")
    cfg["retrieval"]["workers"] = 3  # the same contexts from forked workers
    contexts = Retriever(index, cfg, scorer.tokenizer, context_budget(cfg, scorer.tokenizer)).contexts(ids)
    assert frame["patient_id"].tolist() == ids
    assert frame["evidence_note_ids"].tolist() == [";".join(c.note_ids) for c in contexts]
    whole = scorer.score([c.text for c in contexts], batch_size=4)  # one window, other batches
    np.testing.assert_allclose(frame["probability"].to_numpy(), whole, atol=1e-5)


def test_unknown_patient(tiny_run: Path, small_index_dir: Path) -> None:
    with pytest.raises(UnknownPatientError, match="NOPE"):
        predict_patients(tiny_run, small_index_dir, ["P000", "NOPE"])


@pytest.mark.parametrize(("content", "expected"), [
    ("P1\nP2\n\nP1\n", ["P1", "P2"]),                          # one per line, blanks and repeats dropped
    ("patient_id\nP1\nP2\n", ["P1", "P2"]),                       # a one-column CSV: its header is no id
    ("\ufeffSubject_ID\r\n 10001 \r\n10002\r\n", ["10001", "10002"]),  # BOM, CRLF, MIMIC's column
    ("patient_id,prediction,probability\nP2,True,0.9\nP1,False,0.1\n", ["P2", "P1"]),  # predictions.csv
    ('"note","hadm_id"\n"a, b",H1\n', ["H1"]),                     # quoted fields
    # both MIMIC columns: the one whose values the index holds
    ("subject_id,hadm_id\nS1,H1\nS2,H2\n", ["H1", "H2"]),
])
def test_patients_file_formats(tmp_path: Path, content: str, expected: list[str]) -> None:
    path = tmp_path / "ids.csv"
    path.write_text(content, encoding="utf-8")
    assert read_patient_ids(path, known=["H1", "H2", "P1", "P2", "10001", "10002"]) == expected


@pytest.mark.parametrize(("content", "message"), [
    ("id,score\nP1,0.5\n", "header has no patient id column"),
    ("\n\n", "no patient ids"),
    (b"P1\n\xff\xfe\n", "not UTF-8"),
])
def test_bad_patients_file(tmp_path: Path, content: str | bytes, message: str) -> None:
    path = tmp_path / "ids.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(InputError, match=message) as err:
        read_patient_ids(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InputError, match="not found"):
        read_patient_ids(tmp_path / "missing.csv")


def test_missing_or_incomplete_run(tmp_path: Path, tiny_run: Path, small_index_dir: Path) -> None:
    with pytest.raises(RunError, match="not found"):
        predict_patients(tmp_path / "nothing", small_index_dir, ["P000"])
    partial = tmp_path / "partial"
    shutil.copytree(tiny_run, partial)
    (partial / "threshold.json").unlink()
    with pytest.raises(RunError, match="threshold.json"):
        predict_patients(partial, small_index_dir, ["P000"])
    with pytest.raises(RunError, match="no finished run"):
        resolve_run(None, tmp_path / "empty-runs")
    assert resolve_run(None, tiny_run.parent) == tiny_run


def test_run_trained_against_another_index(tmp_path: Path, tiny_run: Path, small_index_dir: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(tiny_run, other)
    manifest = json.loads((other / "index_manifest.json").read_text())
    manifest["chunking"]["max_tokens"] = int(manifest["chunking"]["max_tokens"]) + 64
    (other / "index_manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestMismatchError, match="chunking"):
        predict_patients(other, small_index_dir, ["P000"])


# ------------------------------------------------------------------ scoring precision


def test_dense_conversion_merges_the_lora_adapter_exactly(tiny_run: Path, scorer: Scorer) -> None:
    """Dense weights with the adapter merged (the bf16/fp8 path, here kept in float32) give the
    run's own scores: the merge is exact, and the adapter is not a no-op."""
    from ards_rag.precision import convert_for_scoring

    fresh = Scorer.from_run(tiny_run)
    lora_b = [p for n, p in fresh.model.named_parameters() if "lora_B" in n]
    assert lora_b and any(float(p.abs().sum()) > 0 for p in lora_b)
    converted = convert_for_scoring(fresh.model, "bf16", torch.float32)
    assert converted == 14  # 2 decoder layers x 7 projections; the output head stays
    assert not any("lora" in n for n, _ in fresh.model.named_parameters())
    np.testing.assert_allclose(fresh.score(CONTEXTS), scorer.score(CONTEXTS), atol=1e-5)


@pytest.mark.parametrize("precision", ["bf16", "fp8"])
def test_low_precision_scores_stay_close(tiny_run: Path, scorer: Scorer, precision: str) -> None:
    low = Scorer.from_run(tiny_run, precision=precision)
    assert low.precision == precision
    if precision == "fp8":
        fp8 = [m for m in low.model.modules() if getattr(m, "weight", None) is not None
               and getattr(m.weight, "dtype", None) == torch.float8_e4m3fn]
        assert len(fp8) == 14  # every projection of the 2 decoder layers
    else:
        assert {p.dtype for p in low.model.parameters()} == {torch.bfloat16}
    p_low, p_ref = low.score(CONTEXTS, batch_size=2), scorer.score(CONTEXTS)
    assert ((p_low >= 0) & (p_low <= 1)).all()
    np.testing.assert_allclose(p_low, p_ref, atol=0.02)
    # The whole next-token distribution moves little against how much it varies.
    ids = torch.tensor([scorer.prompt_ids(CONTEXTS[1])])
    with torch.inference_mode():
        ref = scorer.model(input_ids=ids).logits[0, -1].float()
        got = low.model(input_ids=ids).logits[0, -1].float()
    assert float((got - ref).abs().max()) < 0.1 * float(ref.std())


def test_unknown_precision_is_refused(tiny_run: Path) -> None:
    from ards_rag.errors import ConfigError
    from ards_rag.precision import check_precision

    with pytest.raises(ConfigError, match="not one of model, bf16, fp8"):
        check_precision("int3", "cpu")
    check_precision("fp8", "cpu")  # PyTorch runs FP8 matmuls on CPUs


def test_fp8_input_quantizer_round_trips_and_falls_back_from_a_failed_compile() -> None:
    from ards_rag.precision import _quantize, _SharedInput

    def broken(x: torch.Tensor, per_row: bool) -> tuple[torch.Tensor, torch.Tensor]:
        raise RuntimeError("no C compiler")

    shared = _SharedInput(broken)
    torch.manual_seed(0)
    x = torch.randn(3, 5, 64).to(torch.bfloat16) * torch.tensor([1e-3, 1.0, 300.0]).view(3, 1, 1).to(torch.bfloat16)
    q, scale = shared.get(x, True)
    assert shared.quantize is _quantize and q.dtype == torch.float8_e4m3fn
    assert scale.shape == (3, 5, 1)
    # e4m3 keeps 3 mantissa bits down to 2^-6 of a row's largest value: relative error <= 2^-4
    back, ref = q.float() * scale, x.float()
    normal = ref.abs() >= ref.abs().amax(dim=-1, keepdim=True) * 2**-5
    assert float(((back - ref).abs() / ref.abs().clamp(min=1e-30))[normal].max()) <= 2**-4 + 1e-3
    assert shared.get(x, True)[0] is q  # the same input is quantized once
    whole, s1 = _quantize(x, False)
    assert s1.numel() == 1 and torch.isfinite(whole.float()).all()


def test_one_model_per_run_stays_loaded(tiny_run: Path) -> None:
    """Scorers are cached per run; another precision replaces the loaded model, not adds one."""
    from ards_rag.prediction import _SCORERS

    own = get_scorer(tiny_run)
    assert get_scorer(tiny_run) is own
    low = get_scorer(tiny_run, "bf16")
    assert low is not own and low.precision == "bf16"
    assert [k[2] for k in _SCORERS if k[0] == str(tiny_run.resolve())] == ["bf16"]
