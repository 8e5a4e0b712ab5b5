"""The command line: real commands in-process, one-line errors with non-zero exits, no tracebacks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

from ards_rag.cli import cli


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def invoke_json(*args: str) -> tuple[int, Any, str]:
    """Run a ``--json`` command: exit code, its stdout parsed as JSON (progress bars and messages
    go to stderr, which a pipe into ``jq`` never sees), and everything printed."""
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    if result.exit_code != 0:
        return result.exit_code, None, result.output
    return result.exit_code, json.loads(result.stdout), result.output


def assert_one_line_error(output: str, *fragments: str) -> None:
    lines = [ln for ln in output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope="module")
def small_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real index (packaged MiniLM, FAISS) of three patients with short radiology notes."""
    root = tmp_path_factory.mktemp("cli")
    notes = pd.DataFrame(
        {
            "patient_id": ["A", "A", "B", "B", "C"],
            "note_id": ["a1", "a2", "b1", "b2", "c1"],
            "charttime": ["2150-01-01 10:00", "2150-01-02 09:00", "2150-02-01 08:00",
                          "2150-02-03 08:00", "2150-03-01 12:00"],
            "text": [
                "FINDINGS: Diffuse bilateral airspace opacities. ETT in place.\nIMPRESSION: ARDS pattern.",
                "IMPRESSION: Persistent bilateral opacities, intubated, no effusion.",
                "FINDINGS: Right lower lobe consolidation.\nIMPRESSION: Lobar pneumonia.",
                "IMPRESSION: Improving right lower lobe pneumonia.",
                "IMPRESSION: No acute cardiopulmonary process.",
            ],
            "label": ["true", "", "FALSE", "false", ""],
        }
    )
    path = root / "notes.csv"
    notes.to_csv(path, index=False)
    code, out = invoke("index", str(path), "--index", str(root / "index"))
    assert code == 0, out
    return root


def test_help_lists_every_command() -> None:
    code, out = invoke("--help")
    assert code == 0
    for command in ("synth", "index", "retrieve", "train", "predict", "evaluate"):
        assert command in out


def test_missing_notes_file_is_one_line_exit_2(tmp_path: Path) -> None:
    code, out = invoke("index", str(tmp_path / "nope.csv"), "--index", str(tmp_path / "i"))
    assert code == 2
    assert_one_line_error(out, "nope.csv")
    assert not (tmp_path / "i").exists()


def test_missing_text_column_names_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    pd.DataFrame({"patient_id": ["1"], "body": ["x"]}).to_csv(path, index=False)
    code, out = invoke("index", str(path), "--index", str(tmp_path / "i"))
    assert code == 2
    assert_one_line_error(out, "bad.csv", "body")


def test_invalid_config_is_one_line_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("ludwig: [unclosed\n")
    code, out = invoke("retrieve", "--patient-id", "A", "--config", str(cfg),
                       "--index", str(tmp_path / "i"))
    assert code == 2
    assert_one_line_error(out, "c.yaml")


def test_index_summary_and_labels(small_index: Path) -> None:
    patients = pd.read_parquet(small_index / "index" / "patients.parquet")
    assert sorted(patients["patient_id"]) == ["A", "B", "C"]
    labels = dict(zip(patients["patient_id"], patients["label"], strict=True))
    assert labels["A"] is True or labels["A"] == True  # noqa: E712 (pandas boolean)
    assert labels["B"] == False  # noqa: E712
    assert pd.isna(labels["C"])


def test_retrieve_json_and_unknown_patient(small_index: Path) -> None:
    index = str(small_index / "index")
    code, ctx, out = invoke_json("retrieve", "--patient-id", "A", "--json", "--index", index)
    assert code == 0, out
    assert ctx["patient_id"] == "A"
    assert {p["note_id"] for p in ctx["passages"]} <= {"a1", "a2"}
    assert ctx["context_tokens"] > 0

    code, out = invoke("retrieve", "--patient-id", "ZZZ", "--index", index)
    assert code == 1
    assert_one_line_error(out, "ZZZ", "3 patients")


def test_retrieve_all_writes_one_line_per_patient(small_index: Path) -> None:
    out_path = small_index / "contexts.jsonl"
    code, out = invoke("retrieve", "--all", "--out", str(out_path),
                       "--index", str(small_index / "index"))
    assert code == 0, out
    rows = [json.loads(line) for line in out_path.read_text().splitlines()]
    assert [r["patient_id"] for r in rows] == ["A", "B", "C"]
    assert all(set(r) >= {"patient_id", "context_tokens", "passages"} for r in rows)


def test_train_refuses_an_index_with_one_labeled_patient_per_class(small_index: Path) -> None:
    code, out = invoke("train", "--index", str(small_index / "index"),
                       "--run", str(small_index / "runs" / "r"))
    assert code == 1
    assert "Traceback" not in out
    assert not (small_index / "runs" / "r").exists()


def test_predict_without_any_run_says_what_to_do(small_index: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out = invoke("predict", "--patient-id", "A", "--index", str(small_index / "index"))
    assert code == 1
    assert_one_line_error(out, "train")


def test_predict_needs_exactly_one_selection(small_index: Path) -> None:
    code, out = invoke("predict", "--all", "--unlabeled", "--index", str(small_index / "index"))
    assert code == 2
    assert "choose one of" in out


def test_predict_new_notes_unlabeled_batch(tiny_run: Path, small_index_dir: Path, tmp_path: Path) -> None:
    """`predict --notes new.csv --unlabeled --out`: new patients are indexed, then scored."""
    import shutil

    from conftest import write_small_cohort

    index = tmp_path / "index"
    shutil.copytree(small_index_dir, index)
    new = write_small_cohort(tmp_path / "new.csv", n_patients=2, labels="none")
    frame = pd.read_csv(new)
    frame["patient_id"] = "NEW" + frame["patient_id"]
    frame["note_id"] = "NEW" + frame["note_id"]
    frame.to_csv(new, index=False)
    out_csv = tmp_path / "preds.csv"
    code, out = invoke("predict", "--run", str(tiny_run), "--index", str(index),
                       "--notes", str(new), "--unlabeled", "--out", str(out_csv))
    assert code == 0, out
    preds = pd.read_csv(out_csv)
    assert list(preds.columns) == ["patient_id", "prediction", "probability", "evidence_note_ids"]
    assert sorted(preds["patient_id"]) == ["NEWP000", "NEWP001"]
    assert preds["probability"].between(0, 1).all()
    assert preds["evidence_note_ids"].str.startswith("NEWP").all()

    ids = tmp_path / "ids.txt"
    ids.write_text("P000\nNEWP001\n")
    code, rows, out = invoke_json("predict", "--run", str(tiny_run), "--index", str(index),
                                  "--patients", str(ids), "--json")
    assert code == 0, out
    assert [r["patient_id"] for r in rows] == ["P000", "NEWP001"]

    # the same notes again with a labels file: the index now holds NEWP000's label
    labels = tmp_path / "labels.csv"
    labels.write_text("patient_id,label\nNEWP000,true\n")
    code, out = invoke("predict", "--run", str(tiny_run), "--index", str(index), "--notes", str(new),
                       "--labels", str(labels), "--patient-id", "NEWP000")
    assert code == 0, out
    stored = pd.read_parquet(index / "patients.parquet").set_index("patient_id")["label"]
    assert stored["NEWP000"] == True and pd.isna(stored["NEWP001"])  # noqa: E712


def test_predict_generated_shows_ludwigs_answer(tiny_run: Path, small_index_dir: Path, tmp_path: Path) -> None:
    """`--generated`: Ludwig's own answer beside the score, in JSON and in batch output."""
    code, answer, out = invoke_json("predict", "--run", str(tiny_run), "--index", str(small_index_dir),
                                    "--patient-id", "P003", "--json", "--generated")
    assert code == 0, out
    assert set(answer["generated"]) == {"text", "answer", "most_likely", "agrees", "scored_token"}
    ids = tmp_path / "ids.txt"
    ids.write_text("P003\nP001\n")
    preds = tmp_path / "preds.csv"
    code, out = invoke("predict", "--run", str(tiny_run), "--index", str(small_index_dir),
                       "--patients", str(ids), "--generated", "--out", str(preds))
    assert code == 0, out
    frame = pd.read_csv(preds, dtype={"patient_id": str})
    assert frame["patient_id"].tolist() == ["P003", "P001"]
    assert list(frame.columns)[-3:] == ["generated", "generated_agrees", "generated_scored_token"]
    agreed = int(frame["generated_agrees"].sum())
    assert f"agreed with the score's more likely answer for {agreed} of 2 patient(s)" in out
    other = 2 - int(frame["generated_scored_token"].sum())
    assert (f"For {other} of them the first token was neither of the two answers" in out) == (other > 0)


def test_predict_and_evaluate_in_fp8(tiny_run: Path, small_index_dir: Path, tmp_path: Path) -> None:
    """`--precision fp8` scores with FP8 weights; close to the run's own answer, and the report
    says which precision it used."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    code, answer, out = invoke_json("predict", "--run", str(run), "--index", str(small_index_dir),
                                    "--patient-id", "P003", "--json")
    assert code == 0, out
    own = answer["probability"]
    code, answer, out = invoke_json("predict", "--run", str(run), "--index", str(small_index_dir),
                                    "--patient-id", "P003", "--json", "--precision", "fp8")
    assert code == 0, out
    assert abs(answer["probability"] - own) < 0.02
    code, out = invoke("evaluate", "--run", str(run), "--index", str(small_index_dir), "--precision", "fp8")
    assert code == 0, out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["run"]["precision"] == "fp8"
    assert any("scored in fp8" in r for r in metrics["remarks"])
    code, out = invoke("predict", "--run", str(run), "--index", str(small_index_dir),
                       "--patient-id", "P003", "--precision", "int4")
    assert code == 2 and "int4" in out


def test_threshold_is_chosen_again_and_used_by_predict(tiny_run: Path, small_index_dir: Path,
                                                      tmp_path: Path) -> None:
    """`ards-rag threshold --sensitivity 1` picks the highest cut that finds every validation ARDS
    patient, keeps the training-time record in its history, and `predict` cuts at it."""
    import shutil

    from ards_rag.evaluation import binary_metrics, read_split

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    old = json.loads((run / "threshold.json").read_text())
    index = str(small_index_dir)
    code, out = invoke("threshold", "--run", str(run), "--index", index, "--sensitivity", "1")
    assert code == 0, out
    rec = json.loads((run / "threshold.json").read_text())
    assert rec["rule"] == "sensitivity >= 1" and rec["chosen_on"] == "validation"
    assert rec["history"] == [old]
    assert f"-> {rec['threshold']:.4f}" in out

    split = read_split(run)
    val = split[split["split"] == "validation"]
    preds = tmp_path / "preds.csv"
    code, out = invoke("predict", "--run", str(run), "--index", index, "--patients",
                       str(_ids_file(tmp_path, val["patient_id"])), "--out", str(preds))
    assert code == 0, out
    rows = pd.read_csv(preds).merge(val, on="patient_id")
    y, p = rows["label"].astype(bool).to_numpy(), rows["probability"].to_numpy()
    assert (rows["prediction"] == (p >= rec["threshold"])).all()
    m = binary_metrics(y, p, rec["threshold"])
    assert m["sensitivity"] == 1.0 == rec["validation_sensitivity"]
    # The most specific such cut: the lowest-scoring ARDS patient sits just above it.
    assert p[y].min() >= rec["threshold"] > max([q for q in p if q < p[y].min()], default=-1.0)

    code, out = invoke("threshold", "--run", str(run), "--index", index, "--value", "0.5")
    assert code == 0, out
    rec2 = json.loads((run / "threshold.json").read_text())
    assert rec2["threshold"] == 0.5 and rec2["chosen_on"] == "user"
    assert [h["rule"] for h in rec2["history"]] == [old["rule"], "sensitivity >= 1"]
    code, out = invoke("evaluate", "--run", str(run), "--index", index)
    assert code == 0, out
    assert "threshold 0.500 (a value set by the user)" in out
    assert "0.5000 (predict ARDS when probability >= threshold), a value set by the user" in (
        run / "report.md").read_text()

    code, out = invoke("threshold", "--run", str(run), "--index", index, "--value", "0.5",
                       "--specificity", "0.9")
    assert code == 2 and "at most one of" in out
    code, out = invoke("threshold", "--run", str(tmp_path / "missing"), "--index", index)
    assert code != 0
    assert_one_line_error(out, "missing")


def _ids_file(tmp_path: Path, ids: pd.Series) -> Path:
    path = tmp_path / "ids.txt"
    path.write_text("\n".join(ids) + "\n", encoding="utf-8")
    return path


def test_index_with_a_separate_labels_file(tmp_path: Path) -> None:
    notes = tmp_path / "radiology.csv"
    pd.DataFrame({"subject_id": [1, 1, 2, 3], "note_id": ["n1", "n2", "n3", "n4"],
                  "text": ["IMPRESSION: Diffuse bilateral opacities.", "Intubated.",
                           "IMPRESSION: Clear lungs.", "IMPRESSION: Normal."]}).to_csv(notes, index=False)
    labels = tmp_path / "cohort.csv"
    pd.DataFrame({"subject_id": [1, 2], "ards": ["yes", "no"]}).to_csv(labels, index=False)
    index = tmp_path / "index"
    result = CliRunner().invoke(cli, ["index", str(notes), "--labels", str(labels), "--index", str(index)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "2 labeled (1 positive, 1 negative), 1 unlabeled (from cohort.csv)" in result.stderr
    patients = pd.read_parquet(index / "patients.parquet")
    got = dict(zip(patients["patient_id"], patients["label"], strict=True))
    assert got["1"] == True and got["2"] == False and pd.isna(got["3"])  # noqa: E712
    manifest = json.loads((index / "manifest.json").read_text())
    assert manifest["source"]["labels"]["path"] == str(labels)
    assert len(manifest["source"]["labels"]["sha256"]) == 64

    labels.write_text("subject_id,ards\n7,yes\n")
    code, out = invoke("index", str(notes), "--labels", str(labels), "--index", str(index))
    assert code == 2
    assert_one_line_error(out, "cohort.csv", "none of its 1 labeled patients has notes")
    kept = pd.read_parquet(index / "patients.parquet").set_index("patient_id")["label"]
    assert kept["1"] == True  # noqa: E712 - the previous index is intact
