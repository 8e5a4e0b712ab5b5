"""Command-line interface: parses arguments, calls the library, reports.

Every library error (:class:`ards_rag.errors.ArdsRagError`) becomes a one-line message and a
non-zero exit, never a traceback. Heavy libraries (torch, Ludwig, FAISS) are imported inside the
commands so that ``ards-rag --help`` is instant.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from . import __version__
from .errors import ArdsRagError, ConfigError, InputError
from .fsutil import atomic_file

DEFAULT_INDEX = "indexes/default"
DEFAULT_RUNS = "runs"

F = TypeVar("F", bound=Callable[..., Any])


def _quiet_libraries() -> None:
    """Keep third-party chatter (and anything that might echo note text) out of the terminal."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    import torch  # noqa: F401  (imported first so that its logger levels set below stick)
    import transformers

    for name in ("transformers", "ludwig", "sentence_transformers", "peft", "datasets", "torch",
                 "torch.utils._pytree", "bitsandbytes", "kernels", "faiss"):
        logging.getLogger(name).setLevel(logging.ERROR)
    transformers.utils.logging.disable_progress_bar()


class BadInput(click.ClickException):
    """Bad input file or config: one line on stderr, exit code 2 (as for usage errors)."""

    exit_code = 2


def reports_errors(func: F) -> F:
    """Turn library errors into one-line click errors (exit 1), and Ctrl-C into exit 130."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            _quiet_libraries()
            return func(*args, **kwargs)
        except (InputError, ConfigError) as exc:
            raise BadInput(str(exc)) from None
        except ArdsRagError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("Interrupted; nothing was changed.", err=True)
            sys.exit(130)
        except click.ClickException:
            raise
        except Exception as exc:  # an unexpected failure: still one line unless debugging
            if os.environ.get("ARDS_RAG_DEBUG"):
                raise
            raise click.ClickException(
                f"unexpected {type(exc).__name__}: {_first_line(exc)} "
                "(set ARDS_RAG_DEBUG=1 to see the traceback)"
            ) from None

    return wrapper  # type: ignore[return-value]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _config(path: str | None) -> dict[str, Any]:
    from .config import resolve_config

    return resolve_config(path)


index_option = click.option(
    "--index",
    "index_dir",
    default=DEFAULT_INDEX,
    show_default=True,
    type=click.Path(file_okay=False),
    help="Index folder.",
)
config_option = click.option(
    "--config",
    "config_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="YAML config (see configs/); default: the built-in configs/default.yaml.",
)
run_option = click.option(
    "--run",
    "run_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Run folder; default: the latest run in runs/.",
)
precision_option = click.option(
    "--precision",
    type=click.Choice(["model", "bf16", "fp8"]),
    default="model",
    show_default=True,
    help="Scoring precision: as trained, or dense bf16 / FP8 weights with the LoRA adapter "
    "merged (faster on a GPU; fp8 needs compute capability 8.9+).",
)
notes_options = [
    click.option(
        "--format",
        "fmt",
        type=click.Choice(["auto", "long", "patient"]),
        default="auto",
        show_default=True,
        help="long: one row per note; patient: one row per patient with 'Note 1: ... Note 2: ...'.",
    ),
    click.option("--patient-column", default=None, help="Column holding the patient id."),
    click.option("--text-column", default=None, help="Column holding the note text."),
    click.option("--label-column", default=None,
                 help="Column holding the true/false label (of the --labels file, if given)."),
    click.option("--labels", "labels_path", default=None, type=click.Path(dir_okay=False),
                 help="Separate labels file (CSV/Parquet/JSONL) with the notes' patient id "
                      "column and a label column, e.g. a MIMIC-IV cohort's subject_id, ards."),
    click.option("--skip-missing-patient", is_flag=True,
                 help="Leave out notes with an empty patient id (counted) instead of stopping, "
                      "e.g. MIMIC radiology notes without a hadm_id."),
    click.option(
        "--allow-pickle",
        is_flag=True,
        help="Allow reading a pandas pickle (unpickling runs code from the file).",
    ),
]


def with_notes_options(func: F) -> F:
    """Add the notes-reading options; the command receives them as one ``notes_opts`` dict."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["notes_opts"] = {
            "fmt": kwargs.pop("fmt"),
            "patient_column": kwargs.pop("patient_column"),
            "text_column": kwargs.pop("text_column"),
            "label_column": kwargs.pop("label_column"),
            "labels": kwargs.pop("labels_path"),
            "skip_missing_patient": kwargs.pop("skip_missing_patient"),
            "allow_pickle": kwargs.pop("allow_pickle"),
        }
        return func(*args, **kwargs)

    for option in reversed(notes_options):
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]


def _check_writable(path: str) -> None:
    """Create the output file's folder, or stop with a one-line error, before any long work."""
    parent = Path(path).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.ClickException(f"{path}: cannot create its folder {parent} ({exc.strerror})") from None
    if not os.access(parent, os.W_OK):
        raise click.ClickException(f"{path}: the folder {parent} is not writable")


def _load_notes(path: str, notes_opts: dict[str, Any]) -> Any:
    from .notes import load_notes

    return load_notes(path, **notes_opts)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ards-rag")
def cli() -> None:
    """ARDS detection from ICU clinical notes: retrieve the relevant passages, ask a fine-tuned LLM.

    Typical flow: index -> train -> evaluate -> predict. Everything runs offline.
    """


# --------------------------------------------------------------------------------------- synth
@cli.command()
@click.option("--patients", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--prevalence", type=click.FloatRange(0, 1), default=0.25, show_default=True)
@click.option("--noise", type=click.FloatRange(0, 0.5), default=0.0, show_default=True,
              help="Share of labels flipped (clinicians agree on ARDS only moderately).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@reports_errors
def synth(patients: int, seed: int, prevalence: float, noise: float, out_dir: str) -> None:
    """Write a synthetic ICU cohort: OUT/notes.csv and OUT/evidence.csv."""
    from .synthetic import write_cohort

    notes_path, evidence_path = write_cohort(
        out_dir, n_patients=patients, seed=seed, prevalence=prevalence, noise=noise
    )
    click.echo(f"Wrote {notes_path} and {evidence_path} ({patients} patients, seed {seed}).")


# --------------------------------------------------------------------------------------- index
@cli.command()
@click.argument("notes", type=click.Path(dir_okay=False))
@index_option
@config_option
@with_notes_options
@reports_errors
def index(
    notes: str,
    index_dir: str,
    config_path: str | None,
    notes_opts: dict[str, Any],
) -> None:
    """Split NOTES into passages, embed them and store a FAISS index (incremental, atomic)."""
    from .index import build_index

    cfg = _config(config_path)
    table = _load_notes(notes, notes_opts)
    click.echo(table.summary.describe(), err=True)
    report = build_index(table, index_dir, cfg)
    click.echo(str(report))


# ------------------------------------------------------------------------------------ retrieve
@cli.command()
@click.option("--patient-id", default=None, help="Show the context chosen for one patient.")
@click.option("--all", "all_patients", is_flag=True, help="Write every patient's context.")
@click.option("--out", "out_path", default=None, type=click.Path(dir_okay=False),
              help="JSONL output for --all.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@index_option
@config_option
@reports_errors
def retrieve(
    patient_id: str | None,
    all_patients: bool,
    out_path: str | None,
    as_json: bool,
    index_dir: str,
    config_path: str | None,
) -> None:
    """Show the passages the ranker picks for a patient, or write them all (--all --out)."""
    from .retrieval import format_context, open_retriever, write_contexts_jsonl

    if bool(patient_id) == all_patients:
        raise click.UsageError("give either --patient-id ID or --all --out FILE.jsonl")
    if all_patients and not out_path:
        raise click.UsageError("--all needs --out FILE.jsonl")
    retriever = open_retriever(index_dir, _config(config_path))
    if patient_id:
        ctx = retriever.context(str(patient_id))
        click.echo(json.dumps(ctx.to_dict(), indent=2) if as_json else format_context(ctx))
    else:
        n = write_contexts_jsonl(retriever, out_path)
        click.echo(f"Wrote {n} patients' contexts to {out_path}.")


# --------------------------------------------------------------------------------------- train
@cli.command()
@index_option
@config_option
@click.option("--run", "run_dir", default=None, type=click.Path(file_okay=False),
              help="Run folder to create; default: runs/<time>.")
@click.option("--zero-shot", is_flag=True,
              help="Record the base model with the prompt only (no fine-tuning).")
@click.option("--context", "context_strategy", type=click.Choice(["retrieval", "truncate"]),
              default=None, help="truncate: the seed workflow (all notes cut to the budget).")
@reports_errors
def train(
    index_dir: str,
    config_path: str | None,
    run_dir: str | None,
    zero_shot: bool,
    context_strategy: str | None,
) -> None:
    """Fine-tune the LLM (Ludwig, LoRA) on the labeled patients of the index."""
    from .training import train as train_run

    report = train_run(
        index_dir,
        _config(config_path),
        run_dir,
        zero_shot=zero_shot,
        context_strategy=context_strategy,
    )
    click.echo(str(report))


# ------------------------------------------------------------------------------------- predict
@cli.command()
@click.option("--patient-id", default=None, help="One patient.")
@click.option("--unlabeled", is_flag=True, help="Every patient without a label.")
@click.option("--all", "all_patients", is_flag=True, help="Every patient in the index.")
@click.option("--patients", "patients_file", default=None, type=click.Path(dir_okay=False),
              help="A file with one patient id per line, or a CSV with a patient_id, "
                   "subject_id or hadm_id column (e.g. a predictions.csv).")
@click.option("--notes", "new_notes", default=None, type=click.Path(dir_okay=False),
              help="Add these patients' notes to the index first.")
@click.option("--out", "out_path", default=None, type=click.Path(dir_okay=False),
              help="CSV output for batch predictions.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--generated", is_flag=True,
              help="Also run Ludwig's own predict and show its generated answer, checked against "
                   "the score (one generation per patient: slow).")
@precision_option
@run_option
@index_option
@with_notes_options
@reports_errors
def predict(
    patient_id: str | None,
    unlabeled: bool,
    all_patients: bool,
    patients_file: str | None,
    new_notes: str | None,
    out_path: str | None,
    as_json: bool,
    generated: bool,
    precision: str,
    run_dir: str | None,
    index_dir: str,
    notes_opts: dict[str, Any],
) -> None:
    """Answer true/false with the probability of ARDS and the passages the model read."""
    from . import prediction

    chosen = [bool(patient_id), unlabeled, all_patients, bool(patients_file)]
    if sum(chosen) != 1 and not (new_notes and sum(chosen) == 0):
        raise click.UsageError(
            "choose one of --patient-id ID, --unlabeled, --all, --patients FILE"
        )
    run = prediction.resolve_run(run_dir, DEFAULT_RUNS)
    new_ids: list[str] = []
    if new_notes:
        table = _load_notes(new_notes, notes_opts)
        new_ids, report = prediction.add_notes_to_index(run, index_dir, table)
        known = len(new_ids) - report.patients_added
        click.echo(f"Indexed the notes of {len(new_ids)} patient(s) from {new_notes} in {index_dir}: "
                   f"{report.patients_added} new, {known} already there (stored labels kept unless "
                   "the file gives one).", err=True)
    if patient_id:
        result = prediction.predict_one(run, index_dir, str(patient_id), precision=precision,
                                        generate=generated)
        click.echo(json.dumps(result, indent=2) if as_json else prediction.format_prediction(result))
        return
    if out_path:
        _check_writable(out_path)  # before the scoring, not after it
    ids = prediction.select_patients(
        run, index_dir, unlabeled=unlabeled, all_patients=all_patients,
        patients_file=patients_file, new_ids=new_ids,
    )
    frame = prediction.predict_patients(run, index_dir, ids, precision=precision, generate=generated)
    if generated:
        other = len(frame) - int(frame["generated_scored_token"].sum())
        click.echo(f"Ludwig's generated answer agreed with the score's more likely answer for "
                   f"{int(frame['generated_agrees'].sum())} of {len(frame)} patient(s)."
                   + (f" For {other} of them the first token was {prediction.OTHER_FORM}." if other else ""), err=True)
    if out_path:
        atomic_file(out_path, lambda tmp: frame.to_csv(tmp, index=False))
        click.echo(f"Wrote {len(frame)} predictions to {out_path}.")
    elif as_json:
        click.echo(frame.to_json(orient="records", indent=2))
    else:
        click.echo(frame.to_string(index=False))


# ------------------------------------------------------------------------------------ evaluate
@cli.command()
@run_option
@index_option
@click.option("--split", type=click.Choice(["test", "validation", "train"]), default="test",
              show_default=True)
@precision_option
@reports_errors
def evaluate(run_dir: str | None, index_dir: str, split: str, precision: str) -> None:
    """Score a split; write metrics.json, predictions.csv, plots and report.md in the run."""
    from .evaluation import Evaluator
    from .prediction import resolve_run

    run = resolve_run(run_dir, DEFAULT_RUNS)
    evaluator = Evaluator(run, index_dir=index_dir, split=split, precision=precision)
    evaluator.run()
    click.echo(evaluator.summary())
    click.echo(f"Report: {Path(run) / 'report.md'}")


# ----------------------------------------------------------------------------------- threshold
@cli.command()
@run_option
@index_option
@click.option("--sensitivity", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="The most specific cut reaching this sensitivity on validation.")
@click.option("--specificity", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="The most sensitive cut reaching this specificity on validation.")
@click.option("--value", type=click.FloatRange(0, 1), default=None, help="Use this threshold.")
@precision_option
@reports_errors
def threshold(run_dir: str | None, index_dir: str, sensitivity: float | None,
              specificity: float | None, value: float | None, precision: str) -> None:
    """Choose the run's decision threshold again (default: best F1 on validation)."""
    from .evaluation import METRICS_FILE, choose_threshold
    from .prediction import resolve_run

    given = {k: v for k, v in (("sensitivity", sensitivity), ("specificity", specificity),
                               ("value", value)) if v is not None}
    if len(given) > 1:
        raise click.UsageError("pass at most one of --sensitivity, --specificity and --value")
    rule, target = next(iter(given.items())) if given else ("best-f1", None)
    run = resolve_run(run_dir, DEFAULT_RUNS)
    rec = choose_threshold(run, index_dir, rule=rule, target=target, precision=precision)
    old = rec["history"][-1]["threshold"]

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    click.echo(f"{run.name}: threshold {old:.4f} -> {rec['threshold']:.4f} ({rec['rule']})")
    if rec["validation_patients"]:
        click.echo(f"on {rec['validation_patients']} validation patients: F1 {fmt(rec['validation_f1'])}, "
                   f"sensitivity {fmt(rec['validation_sensitivity'])}, "
                   f"specificity {fmt(rec['validation_specificity'])}")
    if (Path(run) / METRICS_FILE).is_file():
        click.echo("metrics.json and report.md still hold the old threshold: run `ards-rag evaluate` again")


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="ards-rag")


if __name__ == "__main__":
    main()
