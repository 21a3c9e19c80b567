"""A small filesystem of its own for a test: a tmpfs mounted on a directory, so "the disk is full" is real.

Mounting needs root (as the tests run in CI); elsewhere the test is skipped. The mount is the test's
own and is always unmounted, by its path, when the test ends.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (e.g. ``"32m"``) on ``path`` for the duration of the block."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=False)


def fill(path: Path) -> Path:
    """Another program fills the filesystem of ``path``: a file written until not one byte more fits."""
    filler = path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 65536, 4096, 1):
            chunk = b"\0" * size
            try:
                while True:
                    os.write(fd, chunk)
            except OSError:
                continue
    finally:
        os.close(fd)
    return filler


def empty_segments(root: Path) -> dict[str, int]:
    """Empty spool segment files under ``root``, counted per directory."""
    counts: dict[str, int] = {}
    for seg in root.rglob("*.seg"):
        if seg.stat().st_size == 0:
            counts[str(seg.parent)] = counts.get(str(seg.parent), 0) + 1
    return counts
