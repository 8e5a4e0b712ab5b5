"""The embedder: pre-tokenized passages give sentence-transformers' own vectors, in input order."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from ards_rag.embedding import PackedIds, load_embedder
from ards_rag.errors import ConfigError

TEXTS = [
    "Diffuse bilateral airspace opacities, worse than on the prior study.",
    "ETT 4 cm above the carina.",
    "Heart size is normal. No pleural effusion or pneumothorax. " * 6,
    "IMPRESSION: Opacités bilatérales diffuses — SDRA probable.",
    "Clear.",
    (
        "Patchy ground-glass opacification with dependent consolidation in both lower lobes, "
        "concerning for ARDS in the setting of sepsis; PEEP was increased to 12."
    ),
]


@pytest.fixture(scope="module")
def emb():
    return load_embedder("minilm", device="cpu", dtype="float32")


def content_ids(emb, texts: list[str]) -> list[np.ndarray]:
    enc = emb.tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [np.asarray(t, dtype=np.int32) for t in enc]


def test_pre_tokenized_passages_match_sentence_transformers_encode(emb):
    want = emb.model.encode(TEXTS, batch_size=4, normalize_embeddings=True, convert_to_numpy=True)
    ids = content_ids(emb, TEXTS)
    for got in (
        emb.encode_ids(ids, batch_size=4),
        emb.encode_ids(PackedIds.from_sequences(ids), batch_size=2),
        emb.encode_ids([t.tolist() for t in ids], batch_size=64),
        emb.encode(TEXTS, batch_size=3),
        emb.start_encode(ids, batch_size=5).result(),
    ):
        assert got.shape == (len(TEXTS), emb.dimension) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_order_and_batch_size_do_not_change_vectors(emb):
    ids = content_ids(emb, TEXTS * 7)  # 42 inputs, lengths in every order
    ref = emb.encode_ids(ids, batch_size=1)
    for bs in (3, 8, 64):
        np.testing.assert_allclose(emb.encode_ids(ids, batch_size=bs), ref, rtol=0, atol=1e-5)
    perm = np.random.default_rng(0).permutation(len(ids))
    np.testing.assert_allclose(emb.encode_ids([ids[i] for i in perm], batch_size=8), ref[perm], rtol=0, atol=1e-5)


def test_longest_input_fits_and_longer_is_refused(emb):
    room = emb.max_seq_length - len(emb.prefix_ids) - len(emb.suffix_ids)
    word = emb.tokenizer("opacity", add_special_tokens=False)["input_ids"][0]
    longest = np.full(room, word, dtype=np.int32)
    out = emb.encode_ids([longest, longest[:5]], batch_size=2)
    np.testing.assert_allclose(out[1], emb.encode_ids([longest[:5]])[0], rtol=0, atol=1e-5)
    with pytest.raises(ConfigError, match="max_seq_length"):
        emb.encode_ids([np.full(room + 1, word, dtype=np.int32)])
    assert emb.encode_ids([]).shape == (0, emb.dimension)


def test_packed_ids_behave_as_a_list_of_arrays():
    seqs = [np.arange(3), np.zeros(0, np.int64), np.arange(10, 14), np.arange(20, 22)]
    packed = PackedIds.from_sequences(seqs)
    assert len(packed) == 4 and packed.lengths.tolist() == [3, 0, 4, 2]
    assert [a.tolist() for a in packed] == [s.tolist() for s in seqs]
    assert packed[-1].tolist() == [20, 21]
    assert [a.tolist() for a in packed.take(np.array([2, 0, 1]))] == [[10, 11, 12, 13], [0, 1, 2], []]
    both = PackedIds.concat([packed, PackedIds.from_sequences([[7], []])])
    assert [a.tolist() for a in both] == [*[s.tolist() for s in seqs], [7], []]
