"""Does the context show the Berlin week? The insult and the bilateral opacities, and their days.

Berlin's timing criterion: ARDS begins within one week of a known clinical insult. The synthetic
cohort's ``late_bilateral`` negatives have the insult in their first note and the same bilateral
picture as a positive more than a week later (8.5 days or more); a positive's insult note, when it
has one, lies at most 7 days before its onset, and the onset itself can fall anywhere in the stay.
So the onset's day alone does not decide; a reader needs both notes in its context, with days.

    python benchmarks/timing_evidence.py subset --patients 6000 --seed 0 --out /tmp/lb
    ards-rag index /tmp/lb/notes.csv --index /tmp/lb/idx --config configs/smollm2-full-2048.yaml
    python benchmarks/timing_evidence.py measure --cohort /tmp/lb --index /tmp/lb/idx \\
        --config configs/smollm2-full-2048.yaml --variants shipped,max_day \\
        [--predictions RUN/predictions.csv ...]
    python benchmarks/timing_evidence.py probe --cohort /tmp/lb --workdir /tmp/probe --gap days
    python benchmarks/timing_evidence.py probe --cohort /tmp/lb --workdir /tmp/probe --gap flat

``subset`` regenerates a cohort (``ards-rag synth``'s generator, same ``--patients``/``--seed``)
and keeps every ``late_bilateral`` patient, a sample of positives and of fluid-overload mimics:
indexing all 6,000 patients would take over an hour on 2 CPU cores. Contexts depend only on the
patient's own passages, so they are those of the whole cohort's index. ``measure`` builds every
kept patient's context as ``ards-rag train`` does (config overrides of
``context_scenarios.VARIANTS``) and counts, per variant, how often each note is in it; with
``--predictions`` (a run's ``evaluate`` output on the same cohort), it splits that run's errors
by what it read (``evidence_note_ids``: the notes of its context). Prints tables and one JSON line.

``probe`` asks whether the fine-tuned LLM can learn the interval when it is all that separates
two classes: every ``late_bilateral`` patient and as many positives with an insult note, two
notes each (the insult note and the first bilateral study, cut to INDICATION and IMPRESSION),
day headers on, ``configs/default.yaml`` (SmolLM2 LoRA) for ``--epochs`` epochs, evaluated on
the test split. ``--gap flat`` moves each late_bilateral onset to an interval drawn from the
positives', so only the text is left: the control. ``--config configs/smollm2-full.yaml``
trains every weight, as the GPU recipes do; ``--instruction berlin`` gives the Berlin criteria
in the instruction (``quality_sweep.BERLIN_INSTRUCTION``); ``--distractors K`` adds K more of the
patient's notes, so that the two must be found among others. One JSON line per run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from context_scenarios import VARIANTS  # noqa: E402  (same folder)
from ranker_ceiling import comma_choices  # noqa: E402

BERLIN_DAYS = 7.0
SECTION = re.compile(r"(?ms)^(?:INDICATION|IMPRESSION):.*?(?=^[A-Z][A-Z ]+:|\Z)")


def subset(args: argparse.Namespace) -> int:
    from ards_rag.synthetic import generate_cohort, patient_scenarios

    notes, evidence = generate_cohort(args.patients, args.seed)
    scen = patient_scenarios(args.patients, args.seed)
    keep = set(scen.loc[scen["scenario"] == "late_bilateral", "patient_id"])
    # samples from every split: contexts are counted over all kept patients, and a run's test
    # errors (measure --predictions) over the whole regenerated cohort
    rng = np.random.default_rng(args.seed)
    for name, n in (("ards", args.positives), ("overload_mimic", args.mimics)):
        pool = scen.loc[scen["scenario"] == name, "patient_id"]
        keep |= set(pool.sample(min(n, len(pool)), random_state=rng))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "subset.json").write_text(json.dumps({"patients": args.patients, "seed": args.seed}), "utf-8")
    notes[notes["patient_id"].isin(keep)].to_csv(out / "notes.csv", index=False)
    evidence[evidence["patient_id"].isin(keep)].to_csv(out / "evidence.csv", index=False)
    scen[scen["patient_id"].isin(keep)].to_csv(out / "scenarios.csv", index=False)
    counts = scen.loc[scen["patient_id"].isin(keep), "scenario"].value_counts()
    print(f"{len(keep)} patients of {args.patients} written to {out}: "
          + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def timeline(notes: pd.DataFrame, ev: pd.DataFrame, scen: pd.DataFrame) -> pd.DataFrame:
    """One row per patient of ``scen``: scenario, label, insult note and day, onset day and notes
    (days from the first note; ``NaN`` where the patient has no such note). ``notes`` and ``ev``
    are the generator's notes (in time order) and evidence."""
    ev = ev.copy()
    t = pd.to_datetime(notes["charttime"])
    since_first = t - t.groupby(notes["patient_id"]).transform("min")
    day = dict(zip(notes["note_id"], since_first.dt.total_seconds() / 86400))
    first_note = notes.groupby("patient_id")["note_id"].first()  # notes.csv is in time order
    ev["day"] = ev["note_id"].map(day)
    # onset: a positive's first bilateral-opacities note; a late_bilateral's first mimic study
    onset_kind = scen.set_index("patient_id")["scenario"].map(
        {"ards": "bilateral_opacities", "late_bilateral": "trap_mimic"})
    onset_ev = ev[ev["kind"] == ev["patient_id"].map(onset_kind)].groupby("patient_id")
    # the insult note: a positive's ``onset_insult`` evidence, a late_bilateral's first note
    ins = ev[ev["kind"] == "onset_insult"].sort_values("day").groupby("patient_id")["note_id"].last()
    lb = scen.loc[scen["scenario"] == "late_bilateral", "patient_id"]
    ins = pd.concat([ins, first_note.loc[lb]])
    out = scen[["patient_id", "scenario", "label"]].set_index("patient_id")
    out["insult_note"] = ins
    out["insult_day"] = out["insult_note"].map(day)
    out["onset_day"] = onset_ev["day"].min()
    out["onset_note"] = onset_ev.apply(lambda g: g.loc[g["day"].idxmin(), "note_id"])
    out["onset_notes"] = onset_ev["note_id"].agg(set)
    return out


def read_counts(tl: pd.DataFrame, read: dict[str, set[str]]) -> dict[str, Any]:
    """Per scenario: how many patients had their insult note, an onset note, both, in ``read``."""
    rows: dict[str, Any] = {}
    for scen in ("late_bilateral", "ards"):
        part = tl[(tl["scenario"] == scen) & tl.index.isin(list(read))]
        ins = [isinstance(n, str) and n in read[p] for p, n in part["insult_note"].items()]
        ons = [isinstance(s, set) and bool(s & read[p]) for p, s in part["onset_notes"].items()]
        rows[scen] = {"patients": len(part), "with_insult_note": int(part["insult_note"].notna().sum()),
                      "insult_read": int(sum(ins)), "onset_read": int(sum(ons)),
                      "both_read": int(sum(a and b for a, b in zip(ins, ons)))}
    return rows


def prediction_errors(tl: pd.DataFrame, path: str) -> dict[str, Any]:
    """A run's test errors (``predictions.csv`` at ``path``) per scenario, by what it read."""
    pr = pd.read_csv(path, dtype={"patient_id": str}).set_index("patient_id")
    pr = pr[pr.index.isin(tl.index)]
    read = {p: set(str(e).split(";")) for p, e in pr["evidence_note_ids"].items()}
    part = tl.loc[pr.index]
    wrong = pr["prediction"].astype(str).str.lower() != pr["label"].astype(str).str.lower()
    ins_read = pd.Series({p: isinstance(n, str) and n in read[p] for p, n in part["insult_note"].items()})
    entry: dict[str, Any] = {}
    for scen in ("late_bilateral", "ards"):
        m = part["scenario"] == scen
        late = m & (part["onset_day"] > BERLIN_DAYS)
        entry[scen] = {"patients": int(m.sum()), "errors": int(wrong[m].sum()),
                       "with_insult_note": int(part.loc[m, "insult_note"].notna().sum()),
                       "insult_read": int((m & ins_read).sum()),
                       "errors_insult_read": int(wrong[m & ins_read].sum()),
                       "median_p": round(float(pr.loc[m, "probability"].median()), 3) if m.any() else None,
                       "onset_after_day_7": {"patients": int(late.sum()), "errors": int(wrong[late].sum())}}
    return entry


def measure(args: argparse.Namespace, ap: argparse.ArgumentParser) -> int:
    from ards_rag.config import resolve_config
    from ards_rag.index import NotesIndex
    from ards_rag.models import load_tokenizer
    from ards_rag.retrieval import Retriever

    from ards_rag.synthetic import generate_cohort, patient_scenarios

    cohort = Path(args.cohort)
    tl = timeline(pd.read_csv(cohort / "notes.csv", dtype=str, usecols=["patient_id", "note_id", "charttime"]),
                  pd.read_csv(cohort / "evidence.csv", dtype=str),
                  pd.read_csv(cohort / "scenarios.csv", dtype={"patient_id": str}))
    gap = tl["onset_day"] - tl["insult_day"]
    summary: dict[str, Any] = {"benchmark": "timing_evidence", "patients": len(tl)}
    print("days from the insult note to the onset (min / median / max), onset after day 7 of the stay:")
    for scen in ("late_bilateral", "ards"):
        g = gap[tl["scenario"] == scen].dropna()
        late = (tl.loc[tl["scenario"] == scen, "onset_day"] > BERLIN_DAYS)
        summary[scen] = {"gap_days": [round(g.min(), 1), round(g.median(), 1), round(g.max(), 1)],
                         "onset_after_day_7": int(late.sum()), "patients": int(late.size)}
        print(f"  {scen}: {g.min():.1f} / {g.median():.1f} / {g.max():.1f} days ({len(g)} with an insult note); "
              f"onset after day 7: {int(late.sum())} of {late.size}")

    index = NotesIndex.load(args.index)
    indexed = set(index.labels()["patient_id"].astype(str))
    pids = [p for p in tl.index if p in indexed]
    if len(pids) < len(tl):
        ap.error(f"{args.index} lacks {len(tl) - len(pids)} of the cohort's patients: index {cohort}/notes.csv")
    summary["variants"] = {}
    for name in comma_choices(ap, args.variants, VARIANTS, "variants"):
        cfg = resolve_config(args.config, VARIANTS[name])
        retriever = Retriever(index, cfg, load_tokenizer(cfg))
        read = {c.patient_id: set(c.note_ids) for c in retriever.iter_contexts(pids)}
        summary["variants"][name] = counts = read_counts(tl, read)
        print(f"{name} (budget {retriever.budget} tokens): " + "; ".join(
            f"{s}: insult note read {c['insult_read']} of {c['with_insult_note']}, onset read "
            f"{c['onset_read']} of {c['patients']}, both {c['both_read']}" for s, c in counts.items()))

    summary["predictions"] = {}
    if args.predictions:  # the runs' test patients are of the whole cohort, not only the subset
        made = json.loads((cohort / "subset.json").read_text("utf-8"))
        notes, ev = generate_cohort(made["patients"], made["seed"])
        tl = timeline(notes, ev, patient_scenarios(made["patients"], made["seed"]))
    for path in args.predictions or []:
        summary["predictions"][path] = entry = prediction_errors(tl, path)
        print(f"{path}:")
        for scen, e in entry.items():
            late = e["onset_after_day_7"]
            print(f"  {scen}: {e['errors']} errors of {e['patients']} (median P(ARDS) {e['median_p']}); "
                  f"insult note read for {e['insult_read']} of {e['with_insult_note']}, "
                  f"{e['errors_insult_read']} of them wrong; "
                  f"onset after day 7: {late['errors']} errors of {late['patients']}")
    print(json.dumps(summary))
    return 0


def _short(text: str) -> str:
    """A note's INDICATION and IMPRESSION sections: two such notes fit a 384-token prompt."""
    keep = [m.group(0).strip() for m in SECTION.finditer(text)]
    return "\n".join(keep) if keep else text[:600]


def probe_notes(made: dict[str, Any], gap_from: str, seed: int, distractors: int = 0) -> pd.DataFrame:
    """Two notes per patient, the insult note and the first bilateral study, shortened: every
    ``late_bilateral`` patient (label false) and as many positives with an insult note (true).
    ``gap_from``: ``days``, the true interval; ``flat``, each late_bilateral's onset moved to
    an interval drawn from the positives' ones, so that only the text can tell them apart.
    ``distractors``: that many more of the patient's notes (drawn at random, at their own
    times, shortened too), so that the two must be found among others."""
    from ards_rag.synthetic import generate_cohort, patient_scenarios

    notes, ev = generate_cohort(made["patients"], made["seed"])
    tl = timeline(notes, ev, patient_scenarios(made["patients"], made["seed"]))
    lb = tl[tl["scenario"] == "late_bilateral"]
    pos = tl[(tl["scenario"] == "ards") & tl["insult_note"].notna()]
    rng = np.random.default_rng(seed)
    pos = pos.loc[rng.choice(pos.index.to_numpy(), size=min(len(lb), len(pos)), replace=False)]
    text = dict(zip(notes["note_id"], notes["text"]))
    when = dict(zip(notes["note_id"], pd.to_datetime(notes["charttime"])))
    gaps = (pos["onset_day"] - pos["insult_day"]).to_numpy()
    of_patient = notes.groupby("patient_id")["note_id"].agg(list)
    rows = []
    for pid, r in pd.concat([lb, pos]).iterrows():
        t0, t1 = when[r["insult_note"]], when[r["onset_note"]]
        if gap_from == "flat" and r["scenario"] == "late_bilateral":
            t1 = t0 + pd.Timedelta(days=max(float(rng.choice(gaps)), 0.01))
        others = [n for n in of_patient[pid] if n not in (r["insult_note"], r["onset_note"])]
        extra = rng.choice(others, size=min(distractors, len(others)), replace=False) if others else []
        for nid, t in sorted(((r["insult_note"], t0), (r["onset_note"], t1), *((n, when[n]) for n in extra)),
                             key=lambda nt: nt[1]):
            rows.append({"patient_id": pid, "note_id": nid, "charttime": t.strftime("%Y-%m-%d %H:%M:%S"),
                         "note_type": "Radiology", "text": _short(text[nid]),
                         "label": "true" if r["scenario"] == "ards" else "false"})
    return pd.DataFrame(rows)


def probe(args: argparse.Namespace) -> int:
    """Can the fine-tuned LLM learn the interval when it is all that separates two classes?"""
    from quality import pick, timed  # same folder

    from ards_rag.config import resolve_config
    from ards_rag.evaluation import Evaluator
    from ards_rag.index import build_index
    from ards_rag.notes import load_notes
    from ards_rag.training import train

    made = json.loads((Path(args.cohort) / "subset.json").read_text("utf-8"))
    name = "_".join([args.gap, *([] if args.instruction == "config" else [args.instruction]),
                     *([f"d{args.distractors}"] if args.distractors else []),
                     *([] if Path(args.config).name == "default.yaml" else [Path(args.config).stem])])
    work = Path(args.workdir) / name
    work.mkdir(parents=True, exist_ok=True)
    notes = probe_notes(made, args.gap, args.seed, args.distractors)
    notes.to_csv(work / "notes.csv", index=False)
    overrides: dict[str, Any] = {"seed": args.seed, "retrieval": {"day_in_header": True},
                                 "ludwig": {"trainer": {"epochs": args.epochs}}}
    if args.instruction == "berlin":
        from quality_sweep import BERLIN_INSTRUCTION

        overrides["prompt"] = {"instruction": BERLIN_INSTRUCTION}
    cfg = resolve_config(args.config, overrides)
    # room for every note: a shortened note takes at most ~100 tokens
    cfg["ludwig"]["preprocessing"]["global_max_sequence_length"] += 128 * args.distractors
    seconds: dict[str, float] = {}
    timed("index", seconds, build_index, load_notes(work / "notes.csv"), work / "index", cfg, progress=False)
    timed("train", seconds, train, work / "index", cfg, work / "run", progress=False)
    metrics = timed("evaluate", seconds, Evaluator(work / "run", index_dir=work / "index", split="test",
                                                   n_bootstrap=200).run)
    summary = json.loads((work / "run" / "summary.json").read_text("utf-8"))
    row = {"benchmark": "timing_probe", "gap": args.gap, "instruction": args.instruction,
           "distractors": args.distractors, "config": Path(args.config).name,
           "patients": int(notes["patient_id"].nunique()), "epochs": args.epochs,
           "best_epoch": summary.get("best_epoch"), "validation_loss": summary.get("validation_loss"),
           "llm": pick(metrics["model"]), "baselines": {n: pick(e) for n, e in (metrics.get("baselines") or {}).items()},
           **{f"{k}_s": v for k, v in seconds.items()}}
    print(json.dumps(row))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("subset", help="write the late_bilateral patients and samples of others")
    s.add_argument("--patients", type=int, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--positives", type=int, default=250)
    s.add_argument("--mimics", type=int, default=100)
    s.add_argument("--out", required=True)
    m = sub.add_parser("measure", help="which notes the contexts (and runs) read")
    m.add_argument("--cohort", required=True, help="subset's --out")
    m.add_argument("--index", required=True, help="index of COHORT/notes.csv")
    m.add_argument("--config", default=None, help="base YAML config")
    m.add_argument("--variants", default="shipped,max_day", help=f"comma list of: {', '.join(VARIANTS)}")
    m.add_argument("--predictions", nargs="*", help="predictions.csv files of runs on the same cohort")
    p = sub.add_parser("probe", help="train on two short notes per patient: does the LLM learn the interval?")
    p.add_argument("--cohort", required=True, help="subset's --out (for the cohort's size and seed)")
    p.add_argument("--workdir", required=True)
    p.add_argument("--gap", choices=("days", "flat"), default="days")
    p.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "default.yaml"))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--distractors", type=int, default=0, help="more notes of each patient beside the two")
    p.add_argument("--instruction", choices=("config", "berlin"), default="config",
                   help="the config's instruction, or quality_sweep's Berlin-criteria one")
    p.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.command == "subset":
        return subset(args)
    if args.command == "probe":
        return probe(args)
    return measure(args, m)


if __name__ == "__main__":
    sys.exit(main())
