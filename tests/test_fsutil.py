"""Atomic folder and file replacement: the shared mechanism behind index and run folders and output files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ards_rag.fsutil import atomic_dir, atomic_file


def test_atomic_dir_replaces_the_target_with_an_ordinary_folder(tmp_path: Path) -> None:
    target = tmp_path / "runs" / "r1"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("new")
    umask = os.umask(0)
    os.umask(umask)
    assert (target / "a.txt").read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o777 & ~umask  # as mkdir would make it, not mkdtemp's 0700
    assert [p.name for p in target.parent.iterdir()] == ["r1"]  # no temporary folder left


def test_a_failure_leaves_the_previous_folder_intact(tmp_path: Path) -> None:
    target = tmp_path / "index"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("half-written")
        raise RuntimeError("interrupted")
    assert (target / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["index"]


def test_atomic_file_creates_folders_and_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "new" / "folder" / "preds.csv"
    atomic_file(target, lambda p: p.write_text("v1"))
    assert target.read_text() == "v1"

    def half_then_fail(p: Path) -> None:
        p.write_text("half")
        raise KeyboardInterrupt  # an interrupt mid-write, too

    with pytest.raises(KeyboardInterrupt):
        atomic_file(target, half_then_fail)
    assert target.read_text() == "v1"
    assert [p.name for p in target.parent.iterdir()] == ["preds.csv"]  # no temporary file left
