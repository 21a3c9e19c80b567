"""The directory lock: one holder per directory, named in the refusal, free again once released."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from firehose.storage.dirlock import DirectoryInUse, DirectoryLock


def test_a_second_holder_is_refused_with_the_directory_named(tmp_path: Path) -> None:
    first = DirectoryLock(tmp_path / "state", "the state directory")
    try:
        with pytest.raises(DirectoryInUse, match=f"the state directory {tmp_path / 'state'} is in use"):
            DirectoryLock(tmp_path / "state", "the state directory")
    finally:
        first.release()


def test_released_lock_can_be_taken_again_and_names_its_holder(tmp_path: Path) -> None:
    DirectoryLock(tmp_path, "the shard store").release()
    second = DirectoryLock(tmp_path, "the shard store")
    try:
        assert (tmp_path / ".lock").read_text() == f"{os.getpid()}\n"
    finally:
        second.release()
    second.release()  # releasing twice is harmless
