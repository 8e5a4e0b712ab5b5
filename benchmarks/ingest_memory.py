"""Time and peak memory of `load_notes` on a MIMIC-IV radiology.csv-shaped file.

Generates (unless --path names an existing file) a long-format CSV with the columns of
MIMIC-IV-Note ``radiology.csv`` (note_id, subject_id, hadm_id, note_type, note_seq, charttime,
storetime, text): by default 2.3 M notes of about 1.1 KB of multi-line report text each (about
2.5 GB, like the real table), about 10 notes per patient. Then loads it in a fresh process and
prints the load time, the peak RSS of that process (``resource.getrusage(RUSAGE_SELF).ru_maxrss``)
and the size of the resulting table.

    .venv/bin/python benchmarks/ingest_memory.py                 # full size, temp dir, deleted
    .venv/bin/python benchmarks/ingest_memory.py --notes 50000   # quick run
    .venv/bin/python benchmarks/ingest_memory.py --path /tmp/radiology.csv --keep
    .venv/bin/python benchmarks/ingest_memory.py --shuffle   # rows in random order: worst case
    .venv/bin/python benchmarks/ingest_memory.py --labels    # labels in a separate file (--labels)

Generated data is written to a temporary folder (or --path) and never into the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

EXAMS = [
    "CHEST (PORTABLE AP)",
    "CHEST (PA AND LAT)",
    "CT CHEST W/O CONTRAST",
    "CT ABD AND PELVIS WITH CONTRAST",
    "LIVER OR GALLBLADDER US (SINGLE ORGAN)",
    "RENAL U.S.",
    "CT HEAD W/O CONTRAST",
    "BILAT LOWER EXT VEINS",
]
INDICATIONS = [
    "___ year old man with respiratory failure, intubated.  // eval ETT placement",
    "___ year old woman with sepsis, hypoxia.  // r/o pneumonia",
    "History: ___ with SOB, fever  // ?PNA",
    "___ s/p fall, intubated for airway protection  // interval change",
    "___ with CHF exacerbation on diuresis  // eval for pulmonary edema",
    "NGT placement  // confirm position",
]
FINDINGS = [
    "The endotracheal tube terminates 4.5 cm above the carina.",
    "Enteric tube courses below the diaphragm, tip out of view.",
    "Right IJ central venous catheter tip in the low SVC.",
    "Heart size is normal.  Mediastinal and hilar contours are unremarkable.",
    "Moderate cardiomegaly is unchanged.  Pulmonary vascular congestion is mild.",
    "Diffuse bilateral airspace opacities are slightly worse compared to the prior study.",
    "Patchy opacity at the left base may reflect atelectasis, though infection is not excluded.",
    "Small bilateral pleural effusions with adjacent compressive atelectasis.",
    "No pneumothorax.  No focal consolidation.",
    "Lungs are clear.  No pleural effusion or pneumothorax is seen.",
    "Degenerative changes of the thoracic spine.  Surgical clips in the right upper quadrant.",
    "The liver is normal in echotexture without focal lesion.  No intrahepatic biliary dilation.",
    "Kidneys are normal in size without hydronephrosis, stones or masses.",
]
IMPRESSIONS = [
    "1.  Lines and tubes in appropriate position.\n2.  No acute cardiopulmonary process.",
    "Worsening diffuse bilateral opacities, which could reflect ARDS, edema or infection.",
    "Mild pulmonary edema, slightly improved.",
    "Left basilar opacity, atelectasis versus pneumonia.",
    "No acute intracranial process.",
    "No evidence of deep venous thrombosis in the bilateral lower extremities.",
]


def _wrap(text: str, width: int = 78) -> str:
    """Hard-wrap like the real reports (lines of about 78 characters)."""
    out, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            out.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    out.append(line)
    return "\n".join(out)


def report_pool(n: int, rng: np.random.Generator, mean_chars: int = 1100) -> list[str]:
    """``n`` distinct radiology-style reports, lengths log-normal around ``mean_chars``."""
    targets = rng.lognormal(np.log(mean_chars) - 0.18, 0.6, size=n).clip(250, 12_000)
    pool = []
    for i, target in enumerate(targets):
        head = (
            f"EXAMINATION:  {EXAMS[rng.integers(len(EXAMS))]}\n\n"
            f"INDICATION:  {INDICATIONS[rng.integers(len(INDICATIONS))]}\n\n"
            f"TECHNIQUE:  Single portable view of the chest.\n\n"
            f"COMPARISON:  ___ (report {i}).\n\nFINDINGS: \n\n"
        )
        tail = f"\n\nIMPRESSION: \n\n{IMPRESSIONS[rng.integers(len(IMPRESSIONS))]}"
        body: list[str] = []
        while len(head) + len(tail) + sum(len(b) + 1 for b in body) < target:
            body.append(FINDINGS[rng.integers(len(FINDINGS))])
        pool.append(head + _wrap(" ".join(body)) + tail)
    return pool


def generate(
    path: Path, n_notes: int, seed: int = 0, chunk: int = 200_000, shuffle: bool = False
) -> None:
    """Write a radiology.csv-shaped file of ``n_notes`` notes (about 10 per patient).

    ``shuffle``: rows in random order (patients interleaved), so that loading must reorder every
    note (the worst case for memory); otherwise rows come sorted like the real table.
    """
    rng = np.random.default_rng(seed)
    pool = np.array(report_pool(20_000, rng), dtype=object)
    # notes per patient: long-tailed, mean about 10
    per_patient: list[int] = []
    total = 0
    while total < n_notes:
        k = int(min(rng.geometric(0.1), n_notes - total))
        per_patient.append(k)
        total += k
    counts = np.asarray(per_patient)
    subject = np.repeat(10_000_032 + np.arange(len(counts)) * 7, counts)
    seq = np.arange(n_notes) - np.repeat(np.cumsum(counts) - counts, counts) + 1
    base = np.datetime64("2180-01-01T00:00:00") + rng.integers(0, 40 * 365 * 86400, len(counts))
    chart = np.repeat(base, counts) + (seq * 86400 * 0.7).astype("timedelta64[s]")
    text_idx = rng.integers(0, len(pool), n_notes)
    order = rng.permutation(n_notes) if shuffle else np.arange(n_notes)
    first = True
    for start in range(0, n_notes, chunk):
        rows = order[start : start + chunk]
        m = len(rows)
        subj = subject[rows]
        sq = seq[rows]
        ct = chart[rows]
        store = ct + rng.integers(600, 7200, m).astype("timedelta64[s]")
        hadm = 20_000_000 + subj % 9_999_991
        df = pd.DataFrame(
            {
                "note_id": [f"{s}-RR-{q}" for s, q in zip(subj, sq, strict=True)],
                "subject_id": subj,
                "hadm_id": np.where(rng.random(m) < 0.1, "", hadm.astype(str)),
                "note_type": np.where(rng.random(m) < 0.03, "AR", "RR"),
                "note_seq": sq,
                "charttime": pd.Series(ct).dt.strftime("%Y-%m-%d %H:%M:%S"),
                "storetime": pd.Series(store).dt.strftime("%Y-%m-%d %H:%M:%S"),
                "text": pool[text_idx[rows]],
            }
        )
        df.to_csv(path, mode="w" if first else "a", header=first, index=False)
        first = False


# ru_maxrss survives fork+exec on Linux (it would include the parent's peak), so the loader also
# reads VmHWM, the peak RSS of its own address space; the script generates data in another child.
LOADER = r"""
import json, resource, sys, time


def vm_hwm_kib():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


from ards_rag.notes import load_notes
rss_import = vm_hwm_kib()
t1 = time.perf_counter()
table = load_notes(sys.argv[1], chunksize=int(sys.argv[2]), labels=sys.argv[3] if len(sys.argv) > 3 else None)
t2 = time.perf_counter()
print(json.dumps({
    "load_s": t2 - t1,
    "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    "vm_hwm_kib": vm_hwm_kib(),
    "arrow_peak_bytes": __import__("pyarrow").default_memory_pool().max_memory(),
    "rss_after_import_kib": rss_import,
    "table_bytes": int(table.notes.memory_usage(deep=True).sum()),
    "notes": table.summary.notes,
    "patients": table.summary.patients,
    "describe": table.summary.describe(),
}))
"""


def write_labels(notes_csv: Path, out: Path, seed: int) -> int:
    """A MIMIC-cohort-shaped labels file: ``subject_id, ards`` (yes / no, 25% yes) for every
    patient of ``notes_csv``, in another order, plus 1% ids that have no notes."""
    rng = np.random.default_rng(seed)
    ids = pd.read_csv(notes_csv, usecols=["subject_id"])["subject_id"].unique()
    extra = np.arange(ids.max() + 1, ids.max() + 1 + max(1, len(ids) // 100))
    all_ids = rng.permutation(np.concatenate([ids, extra]))
    pd.DataFrame({"subject_id": all_ids, "ards": np.where(rng.random(len(all_ids)) < 0.25, "yes", "no")}
                 ).to_csv(out, index=False)
    return len(all_ids)


def measure(path: Path, chunksize: int, labels: Path | None = None) -> dict[str, object]:
    """Load ``path`` (with the ``labels`` file) in a fresh Python process; return its timings
    and peak RSS."""
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo))
    out = subprocess.run(
        [sys.executable, "-c", LOADER, str(path), str(chunksize)] + ([str(labels)] if labels else []),
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--notes", type=int, default=2_300_000, help="notes to generate")
    ap.add_argument("--path", type=Path, help="CSV to use (generated there if absent)")
    ap.add_argument("--keep", action="store_true", help="keep the generated file")
    ap.add_argument("--chunksize", type=int, default=20_000, help="rows per chunk read")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--shuffle", action="store_true", help="rows in random order (every note is reordered)"
    )
    ap.add_argument("--labels", action="store_true",
                    help="also write subject_id,ards beside the notes and load it with labels=")
    ap.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generate_only:
        generate(args.path, args.notes, seed=args.seed, shuffle=args.shuffle)
        return

    tmp: Path | None = None
    path = args.path
    if path is None:
        tmp = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
        path = tmp / "radiology.csv"
    try:
        if not path.exists():
            t = time.perf_counter()
            # in a child process, so that this process stays small (see LOADER)
            subprocess.run(
                [sys.executable, __file__, "--generate-only", "--path", str(path),
                 "--notes", str(args.notes), "--seed", str(args.seed)]
                + (["--shuffle"] if args.shuffle else []),
                check=True,
            )
            print(f"generated {path} ({args.notes:,} notes) in {time.perf_counter() - t:.0f} s")
        size = path.stat().st_size
        labels = None
        if args.labels:
            labels = path.with_name(path.stem + "-labels.csv")
            t = time.perf_counter()
            n = write_labels(path, labels, args.seed)
            print(f"wrote {labels} ({n:,} patients) in {time.perf_counter() - t:.0f} s")
        res = measure(path, args.chunksize, labels)
        gib = 1024**2
        print(f"file: {size / 1e9:.2f} GB, {res['notes']:,} notes, {res['patients']:,} patients")
        print(f"load_notes: {res['load_s']:.1f} s, chunksize {args.chunksize:,}")
        print(
            f"peak RSS of the loading process: {res['peak_rss_kib'] / gib:.2f} GiB (ru_maxrss), "
            f"{res['vm_hwm_kib'] / gib:.2f} GiB (VmHWM; after imports: "
            f"{res['rss_after_import_kib'] / gib:.2f} GiB)"
        )
        print(
            f"notes table in memory: {res['table_bytes'] / 1024**3:.2f} GiB; peak of live Arrow "
            f"memory: {res['arrow_peak_bytes'] / 1024**3:.2f} GiB (RSS also counts pages freed but "
            "kept by the allocator)"
        )
        print(res["describe"])
    finally:
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp is not None:
            print(f"kept {path}")


if __name__ == "__main__":
    main()
