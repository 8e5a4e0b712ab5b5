"""Atomic writes: an index or run folder, or an output file, appears whole or not at all.

A new folder is built beside its target under a hidden temporary name, then swapped in with two
renames; the previous folder is removed only after the new one is in place. A failure or an
interrupt (even SIGKILL) at any point leaves the previous folder, or nothing, at the target.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it replaces ``target`` atomically.

    On an exception the temporary folder is deleted and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _chmod_like_mkdir(tmp)  # mkdtemp made it private (0700); the result is an ordinary folder
    _fsync_tree(tmp)
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def foreign_contents(target: str | Path, markers: tuple[str, ...]) -> str | None:
    """What replacing ``target`` would destroy, when it is not a folder of the kind being written.

    ``None`` when ``target`` is absent, an empty folder, or a folder holding one of ``markers``
    (file names that every folder of that kind has, e.g. an index's ``manifest.json``).
    Otherwise a short description of what it holds, for an error message: a file, or a folder of
    other things (a run folder given as ``--index``, a folder of the user's own files).
    """
    target = Path(target)
    if not target.exists() and not target.is_symlink():
        return None
    if not target.is_dir():
        return "a file"
    names = sorted(p.name for p in target.iterdir())
    if not names or any((target / m).exists() for m in markers):
        return None
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    return f"other files ({shown})"


def atomic_file(path: str | Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path`` (parent folders created), then
    rename it over ``path``: a failed or interrupted write leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _chmod_like_mkdir(path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o777 & ~umask)


def recover(target: str | Path) -> None:
    """Restore ``target`` if a previous swap was interrupted between its two renames."""
    target = Path(target)
    if target.exists() or not target.parent.exists():
        return
    olds = sorted(target.parent.glob(f".{target.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds:
        os.replace(olds[-1], target)


def _remove_stale(target: Path) -> None:
    recover(target)
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in target.parent.glob(f".{target.name}.old-*"):
        shutil.rmtree(stale, ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
