"""Ranking and context building: relevance, budget, de-duplication, time order, truncation, output."""

from __future__ import annotations

import json
import os
import zlib
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from ards_rag.config import resolve_config  # noqa: E402
from ards_rag.embedding import add_encode_hook, load_embedder  # noqa: E402
from ards_rag.errors import ConfigError, UnknownPatientError  # noqa: E402
from ards_rag.index import NotesIndex, build_index  # noqa: E402
from ards_rag.retrieval import (  # noqa: E402
    Retriever,
    TokenCounter,
    compact_text,
    format_context,
    fuse,
    passage_header,
    truncate_context,
    write_contexts_jsonl,
)

NORMAL = [
    "EXAMINATION:  CHEST (PORTABLE AP)\n\nINDICATION:  Line placement.\n\nFINDINGS:\nRight IJ catheter "
    "tip in the mid SVC. Heart size is normal. Lungs are clear.\n\nIMPRESSION:\nNo acute process.",
    "EXAMINATION:  RENAL U.S.\n\nINDICATION:  Acute kidney injury.\n\nFINDINGS:\nThe kidneys are normal "
    "in size without hydronephrosis. The bladder is decompressed.\n\nIMPRESSION:\nNo hydronephrosis.",
    "EXAMINATION:  CT HEAD W/O CONTRAST\n\nINDICATION:  Altered mental status.\n\nFINDINGS:\nNo "
    "hemorrhage, mass effect or acute infarction. Ventricles are normal.\n\nIMPRESSION:\nNo acute "
    "intracranial abnormality.",
    "EXAMINATION:  LIVER OR GALLBLADDER US\n\nINDICATION:  Elevated LFTs.\n\nFINDINGS:\nThe liver "
    "is normal in echotexture. No gallstones.\n\nIMPRESSION:\nUnremarkable right upper quadrant ultrasound.",
]
ARDS = (
    "EXAMINATION:  CHEST (PORTABLE AP)\n\nINDICATION:  Intubated for hypoxemic respiratory failure after "
    "aspiration.\n\nFINDINGS:\nNew diffuse bilateral airspace opacities with dependent consolidation. "
    "Heart size is normal. No effusion.\n\nIMPRESSION:\nDiffuse bilateral opacities, consistent with ARDS."
)


def _notes() -> pd.DataFrame:
    rows = []
    # P1: the ARDS note is in the middle of normal notes; P2: copy-forward duplicates of one note;
    # P3: only normal notes.
    for s, text in enumerate([NORMAL[0], NORMAL[1], ARDS, NORMAL[2], NORMAL[3]]):
        rows.append(("P1", f"P1-{s}", s, f"2180-05-{s + 1:02d} 08:00:00", "Radiology", text))
    for s in range(4):
        rows.append(("P2", f"P2-{s}", s, f"2181-01-{s + 1:02d} 08:00:00", "Radiology", ARDS))
    for s, text in enumerate(NORMAL):
        rows.append(("P3", f"P3-{s}", s, "", "", text))
    return pd.DataFrame(rows, columns=["patient_id", "note_id", "note_seq", "charttime", "note_type", "text"])


@pytest.fixture(scope="module")
def cfg():
    return resolve_config()


@pytest.fixture(scope="module")
def embedder():
    return load_embedder("minilm")


@pytest.fixture(scope="module")
def index(tmp_path_factory, cfg, embedder) -> NotesIndex:
    notes = _notes()
    labels = pd.DataFrame({"patient_id": ["P1", "P2", "P3"], "label": pd.array([True, True, None], dtype="boolean")})
    d = tmp_path_factory.mktemp("ridx") / "default"
    build_index(SimpleNamespace(notes=notes, labels=labels, source=None), d, cfg, progress=False, embedder=embedder)
    return NotesIndex.load(d, expect=cfg)


@pytest.fixture(scope="module")
def bert_tokenizer(embedder):
    return embedder.tokenizer


def words(text: str) -> int:
    return len(text.split())


# ----------------------------------------------------------------------------------- scoring


def test_fusion_rules_by_hand():
    s = np.array([[0.9, 0.1, 0.2], [0.5, 0.6, 0.4], [0.3, 0.2, 0.7]], dtype=np.float32)
    np.testing.assert_allclose(fuse(s, "max"), [0.9, 0.6, 0.7])
    np.testing.assert_allclose(fuse(s, "mean"), [0.4, 0.5, 0.4], rtol=1e-6)
    np.testing.assert_allclose(fuse(s, "mean_top2"), [0.55, 0.55, 0.5], rtol=1e-6)
    # ranks per query: q0 (1,2,3), q1 (3,1,2), q2 (3,2,1)
    np.testing.assert_allclose(
        fuse(s, "rrf"), [1 / 61 + 1 / 63 + 1 / 63, 1 / 62 + 1 / 61 + 1 / 62, 1 / 63 + 1 / 62 + 1 / 61], rtol=1e-6
    )
    with pytest.raises(ConfigError, match="fusion"):
        fuse(s, "median")


def test_ards_passages_rank_first(index, cfg, bert_tokenizer):
    r = Retriever(index, cfg, bert_tokenizer, budget=120)
    ctx = r.context("P1")
    # Every passage of the ARDS note outranks every passage of the normal notes.
    n_ards = int((index.passages["note_id"] == "P1-2").sum())
    assert {p["note_id"] for p in ctx.passages[:n_ards]} == {"P1-2"}
    assert any("bilateral opacities" in p["text"] for p in ctx.passages[:n_ards])
    assert ctx.label is True and ctx.n_candidates == index.patient_rows("P1")[1]
    scores = [p["score"] for p in ctx.passages]
    assert scores == sorted(scores, reverse=True)


# ------------------------------------------------------------------------------------ budget


@pytest.mark.parametrize("budget", [12, 40, 97, 200, 340, 5000])
def test_budget_is_never_exceeded_in_the_llm_tokenizer(index, cfg, smollm2_tokenizer, budget):
    r = Retriever(index, cfg, smollm2_tokenizer, budget=budget)
    for ctx in r.contexts():
        real = len(smollm2_tokenizer(ctx.text, add_special_tokens=False)["input_ids"])
        assert real == ctx.context_tokens <= budget
        assert sum(p["n_tokens"] for p in ctx.passages) <= budget
    if budget >= 97:
        assert all(r.context(p).passages for p in ("P1", "P2"))


@pytest.mark.parametrize("budget", [5, 33, 150, 600])
def test_budget_with_a_callable_counter_and_truncation(index, cfg, bert_tokenizer, budget):
    for counter in (words, bert_tokenizer):
        tc = TokenCounter(counter)
        for strategy in ("retrieval", "truncate", "truncate_tail"):
            c = resolve_config(overrides={"retrieval": {"strategy": strategy}})
            for ctx in Retriever(index, c, counter, budget=budget).contexts():
                assert tc.count(ctx.text) == ctx.context_tokens <= budget


def test_default_budget_comes_from_the_prompt(index, cfg, smollm2_tokenizer):
    from ards_rag.prompt import context_budget

    r = Retriever(index, cfg, smollm2_tokenizer)
    assert r.budget == context_budget(cfg, smollm2_tokenizer)
    fixed = resolve_config(overrides={"retrieval": {"context_tokens": 77}})
    assert Retriever(index, fixed, smollm2_tokenizer).budget == 77


# ----------------------------------------------------------------------- layout and duplicates


def test_near_duplicates_dropped_and_time_order_with_headers(index, cfg, bert_tokenizer):
    r = Retriever(index, cfg, bert_tokenizer, budget=400)
    ctx = r.context("P2")  # four identical copy-forward notes
    texts = [p["text"] for p in ctx.passages]
    assert len(texts) == len(set(texts))
    assert ctx.dropped_duplicates >= 3
    ctx1 = r.context("P1")
    headers = [line for line in ctx1.text.splitlines() if line.startswith("[Note ")]
    assert len(headers) == len({p["note_id"] for p in ctx1.passages}) >= 2  # one header per note
    seqs = [int(h.split()[1]) for h in headers]
    assert seqs == sorted(seqs)  # time order
    first = min(ctx1.passages, key=lambda p: p["note_seq"])
    assert headers[0] == passage_header(first["note_seq"], first["charttime"], first["note_type"])
    assert headers[0] == f"[Note {first['note_seq'] + 1} | 2180-05-0{first['note_seq'] + 1} | Radiology]"
    for p in ctx1.passages:  # each passage shows its section at its start
        assert p["text"] in ctx1.text and p["text"].startswith(p["section"].split(" / ")[0])
    assert passage_header(2, "2180-05-02 10:00:00", "CHEST (PORTABLE AP)", "IMPRESSION") == (
        "[Note 3 | 2180-05-02 | CHEST (PORTABLE AP) | IMPRESSION]"
    )
    assert passage_header(0, "", "", "") == "[Note 1]"


def test_compact_text_drops_boilerplate_sections_rules_and_blanks():
    text = (
        "WET READ: ___ 1:40 PM\n  Multifocal b/l opacities, new.\n"
        + "_" * 78 + "\n\nCHEST (PORTABLE AP)                      Clip # ___\n\n"
        "TECHNIQUE: Chest AP portable.\n\nCOMPARISON: ___\n\n"
        "FINDINGS:  \nSevere bilateral opacities.   The heart is normal in size.\n\n\n"
        "IMPRESSION:\nNew bilateral opacities.\n"
    )
    assert compact_text(text) == (
        "WET READ: ___ 1:40 PM\n Multifocal b/l opacities, new.\nCHEST (PORTABLE AP) Clip # ___\n"
        "FINDINGS:\nSevere bilateral opacities. The heart is normal in size.\nIMPRESSION:\nNew bilateral opacities."
    )
    # Section names match case-insensitively; an empty list keeps every section.
    assert "TECHNIQUE" in compact_text(text, [])
    assert "FINDINGS" not in compact_text(text, ["findings", "technique", "comparison"])
    assert compact_text("TECHNIQUE: Chest AP portable.\n\nCOMPARISON: ___") == ""


def test_compact_layout_and_day_headers(index, smollm2_tokenizer):
    plain = resolve_config()
    compact = resolve_config(overrides={"retrieval": {"compact": True, "day_in_header": True,
                                                      "drop_sections": ["EXAMINATION", "INDICATION"]}})
    for budget in (40, 97, 340):
        a = Retriever(index, plain, smollm2_tokenizer, budget=budget).context("P1")
        b = Retriever(index, compact, smollm2_tokenizer, budget=budget).context("P1")
        real = len(smollm2_tokenizer(b.text, add_special_tokens=False)["input_ids"])
        assert real == b.context_tokens <= budget
        assert "EXAMINATION:" not in b.text and "INDICATION:" not in b.text and "\n\n\n" not in b.text
        # The same passages cost less, so at least as many fit; the evidence keeps their own text.
        assert len(b.passages) >= len(a.passages)
        assert {p["text"] for p in b.passages} <= set(index.passages["text"])
    assert any("EXAMINATION:" in p["text"] for p in b.passages)  # the evidence as written
    # P1's notes are one day apart: headers give the day since the first note, not the date.
    headers = [line for line in b.text.splitlines() if line.startswith("[Note ")]
    assert headers and all(h == f"[Note {int(h.split()[1])} | day {int(h.split()[1]) - 1} | Radiology]"
                           for h in headers)
    # No dates (P3): headers fall back to the note number alone.
    c = Retriever(index, compact, smollm2_tokenizer, budget=340).context("P3")
    assert all(line.startswith("[Note ") and line.endswith("]") and "day" not in line
               for line in c.text.splitlines() if line.startswith("[Note "))
    with pytest.raises(ConfigError, match="drop_sections"):
        Retriever(index, resolve_config(overrides={"retrieval": {"drop_sections": "TECHNIQUE"}}),
                  smollm2_tokenizer, budget=100)


def test_runs_saved_before_compact_keep_their_layout(index, smollm2_tokenizer):
    cfg = resolve_config()
    old = {**cfg, "retrieval": {k: v for k, v in cfg["retrieval"].items()
                                if k not in ("compact", "drop_sections", "day_in_header")}}
    off = resolve_config(overrides={"retrieval": {"compact": False, "day_in_header": False}})
    on = resolve_config(overrides={"retrieval": {"compact": True, "day_in_header": True}})
    text = Retriever(index, old, smollm2_tokenizer, budget=200).context("P1").text
    assert text == Retriever(index, off, smollm2_tokenizer, budget=200).context("P1").text
    assert text != Retriever(index, on, smollm2_tokenizer, budget=200).context("P1").text


def test_truncate_context_head_and_tail(index, bert_tokenizer):
    notes = index.patient_notes("P1")
    text, included, n = truncate_context(notes, 50, bert_tokenizer)
    assert text.startswith("Note 1: EXAMINATION:") and n <= 50 and included[0]["note_id"] == "P1-0"
    tail, included_t, n_t = truncate_context(notes, 50, bert_tokenizer, side="tail")
    assert n_t <= 50
    assert tail.endswith("Unremarkable right upper quadrant ultrasound.")
    assert included_t[-1]["note_id"] == "P1-4"
    full, all_notes, _ = truncate_context(notes, 10_000, bert_tokenizer)
    assert [p["note_id"] for p in all_notes] == [f"P1-{i}" for i in range(5)]
    assert full.count("Note ") == 5


# ---------------------------------------------------------------------------- API behaviour


def test_queries_embedded_once_per_retriever(index, cfg, bert_tokenizer):
    calls: list[int] = []
    remove = add_encode_hook(calls.append)
    try:
        r = Retriever(index, cfg, bert_tokenizer, budget=100)
        r.contexts(["P1", "P2", "P3"])
        r.contexts()
    finally:
        remove()
    assert calls == [len(cfg["retrieval"]["queries"])]


def test_unknown_patient(index, cfg, bert_tokenizer):
    r = Retriever(index, cfg, bert_tokenizer, budget=100)
    with pytest.raises(UnknownPatientError, match=r"'P9' is not in the index .* holds 3 patients"):
        r.context("P9")


@pytest.mark.parametrize("strategy", ["retrieval", "truncate"])
def test_contexts_from_worker_processes_equal_the_serial_ones(index, smollm2_tokenizer, strategy):
    ids = ["P3", "P1", "P2", "P1", "P3", "P2"]  # any order, repeats: returned as given

    def retriever(workers: int) -> Retriever:
        cfg = resolve_config(overrides={"retrieval": {"workers": workers, "strategy": strategy}})
        return Retriever(index, cfg, smollm2_tokenizer, budget=150)

    serial, forked = retriever(1), retriever(3)
    assert (serial.context_workers(len(ids)), forked.context_workers(len(ids))) == (1, 3)
    want = [serial.context(p).to_dict() for p in ids]
    assert [c.to_dict() for c in serial.contexts(ids)] == want
    assert [c.to_dict() for c in forked.contexts(ids)] == want
    assert [c.to_dict() for c in forked.iter_contexts(ids)] == want
    with pytest.raises(UnknownPatientError, match="'P9' is not in the index"):  # raised in a worker
        forked.contexts(["P1", "P2", "P9", "P3"])


def test_workers_do_not_hang_after_the_parent_used_tokenizer_parallelism(index, smollm2_tokenizer):
    """With TOKENIZERS_PARALLELISM=true (a user's choice, or embedding.py on a GPU) and the
    parent's batch counts done on the Rust thread pool, forked workers once waited forever on
    that pool (16-core host, 2026-12-03). Run in a fresh process so the variable is set before
    the tokenizer is first used, as it was there."""
    import subprocess
    import sys

    script = f"""
import os
from ards_rag.config import resolve_config
from ards_rag.index import NotesIndex
from ards_rag.models import load_tokenizer
from ards_rag.retrieval import Retriever
cfg = resolve_config(overrides={{"retrieval": {{"workers": 2}}}})
tok = load_tokenizer(cfg)
r = Retriever(NotesIndex.load({str(index.dir)!r}), cfg, tok, budget=150)
ids = ["P1", "P2", "P3"] * 4
tok(["bilateral opacities " * 50] * 64)  # the parent's pool is up
serial = [r.context(p).to_dict() for p in ids]
assert os.environ["TOKENIZERS_PARALLELISM"] == "true"
assert [c.to_dict() for c in r.contexts(ids)] == serial
print("ok")
"""
    env = dict(os.environ, TOKENIZERS_PARALLELISM="true", HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")


def test_context_workers_auto_and_bad_values(index, smollm2_tokenizer):
    from ards_rag.chunking import available_cores
    from ards_rag.retrieval import MAX_CONTEXT_WORKERS, PARALLEL_MIN_CORES, PARALLEL_MIN_PATIENTS

    auto = Retriever(index, resolve_config(), smollm2_tokenizer, budget=150)
    assert auto.context_workers(PARALLEL_MIN_PATIENTS - 1) == 1  # small calls stay in process
    cores = available_cores()
    want = 1 if cores < PARALLEL_MIN_CORES else min(cores, MAX_CONTEXT_WORKERS)
    assert auto.context_workers(PARALLEL_MIN_PATIENTS) == want
    two = Retriever(index, resolve_config(overrides={"retrieval": {"workers": 2}}), smollm2_tokenizer, budget=150)
    assert (two.context_workers(1), two.context_workers(5)) == (1, 2)
    for bad in (-1, 1.5, "4", True):
        with pytest.raises(ConfigError, match="retrieval.workers must be an integer >= 0"):
            Retriever(index, resolve_config(overrides={"retrieval": {"workers": bad}}), smollm2_tokenizer, budget=150)


def test_jsonl_and_formatter(index, cfg, bert_tokenizer, tmp_path):
    r = Retriever(index, cfg, bert_tokenizer, budget=120)
    out = tmp_path / "ctx.jsonl"
    assert write_contexts_jsonl(r, out, progress=False) == 3
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [x["patient_id"] for x in records] == ["P1", "P2", "P3"]
    for rec in records:
        assert set(rec) == {"patient_id", "context_tokens", "passages"}
        assert rec["context_tokens"] <= 120
        for p in rec["passages"]:
            assert set(p) == {"note_id", "score", "section", "text"}
    ctx = r.context("P1")
    shown = format_context(ctx)
    assert "P1-2" in shown and f"{ctx.passages[0]['score']:.3f}" in shown and "/ 120 context tokens" in shown
    assert json.loads(json.dumps(ctx.to_dict()))["context"] == ctx.text


@pytest.mark.slow
def test_reranker_rescores_candidates(index, cfg, bert_tokenizer):
    from sentence_transformers import CrossEncoder

    from ards_rag.embedding import resolve_embedder_path

    path = resolve_embedder_path("minilm")  # a BERT folder: CrossEncoder adds a (random) score head
    c = resolve_config(overrides={"retrieval": {"reranker": path, "candidates": 3}})
    r = Retriever(index, c, bert_tokenizer, budget=5000)
    assert r.context_workers(1000) == 1  # the cross-encoder may sit on a GPU: never forked
    ctx = r.context("P1")
    ce = CrossEncoder(path, device="cpu", local_files_only=True)
    ce.model.load_state_dict(r.reranker.model.state_dict())  # same random head
    top3 = sorted(ctx.passages, key=lambda p: -p["score"])[:3]
    for p in top3:
        want = max(ce.predict([(q, p["text"]) for q in c["retrieval"]["queries"]], show_progress_bar=False))
        assert p["score"] == pytest.approx(float(want), abs=1e-4)


def test_training_views_leave_out_passages_reproducibly(index, smollm2_tokenizer):
    cfg = resolve_config(overrides={"retrieval": {"day_in_header": True}})
    full = Retriever(index, cfg, smollm2_tokenizer, budget=120)
    base = full.context("P1")
    assert full.view(0.0, 42, 1).context("P1").text == base.text  # no dropout: the full context
    texts = {}
    for v in (1, 2, 3, 4):
        view = full.view(0.5, 42, v)
        ctx = view.context("P1")
        again = full.view(0.5, 42, v).context("P1")
        assert ctx.text == again.text  # seeded by (seed, view, patient)
        assert ctx.context_tokens <= 120
        # a left-out passage is never chosen; the others rank as in the full context
        first, n = index.patient_rows("P1")
        exclude = np.random.default_rng([42, v, zlib.crc32(b"P1")]).random(n) < 0.5
        kept_texts = set(index.passages["text"].iloc[first:first + n][~exclude])
        assert {p["text"] for p in ctx.passages} <= kept_texts
        # day numbers still count from the patient's first note, even when its passages are out
        for line in ctx.text.splitlines():
            if line.startswith("[Note "):
                k = int(line.split()[1])
                assert f"| day {k - 1} |" in line
        texts[v] = ctx.text
    assert len(set(texts.values())) > 1 and any(t != base.text for t in texts.values())
    assert full.view_dropout == 0.0  # view() copies; the full retriever is untouched
    # the same views from worker processes
    forked = Retriever(index, resolve_config(overrides={"retrieval": {"day_in_header": True, "workers": 2}}),
                       smollm2_tokenizer, budget=120).view(0.5, 42, 2)
    assert forked.context_workers(3) == 2
    assert [c.text for c in forked.iter_contexts(["P1", "P2", "P3"])] == [
        full.view(0.5, 42, 2).context(p).text for p in ("P1", "P2", "P3")]
    for bad in (1.0, -0.1, "0.3", True):
        with pytest.raises(ConfigError, match="view_dropout"):
            full.view(bad, 42, 1)
    truncating = Retriever(index, resolve_config(overrides={"retrieval": {"strategy": "truncate"}}),
                           smollm2_tokenizer, budget=120)
    with pytest.raises(ConfigError, match="train_views needs strategy retrieval"):
        truncating.view(0.3, 42, 1)
