"""A bucket that is a directory on this machine: the embedded default destination.

Objects are files at ``<directory>/<key>``, with the same key layout S3 would
get, so anything that reads the S3 layout reads this too. Each object is
written to a temporary file in its final directory (``.firehose-tmp-<name>``),
fsynced, renamed into place and the directory fsynced: a reader never sees a
partial object, and a batch delivered twice (after a crash) replaces the file
instead of adding one.
"""

from __future__ import annotations

import os
from pathlib import Path

from firehose.destinations.base import DELIVERED, DestinationContext, ObjectDestination, Outcome
from firehose.errors import DestinationError, DestinationUnavailable
from firehose.records import ObjectBatch
from firehose.storage.atomic import make_dirs, write_atomic

_TMP_PREFIX = ".firehose-tmp-"


def _safe_relative(key: str) -> Path:
    """Map an S3 key to a path that cannot leave the directory.

    S3 keys may contain ``..`` or empty segments; as file paths those would
    escape or collapse, so such segments are percent-encoded instead.
    """
    parts = []
    for seg in key.split("/"):
        if seg == "":
            seg = "%2F"
        elif seg in (".", ".."):
            seg = seg.replace(".", "%2E")
        parts.append(seg)
    return Path(*parts)


class LocalDirectoryDestination(ObjectDestination):
    name = "local"

    def __init__(self, directory: Path, ctx: DestinationContext) -> None:
        self.directory = Path(directory)
        self._ctx = ctx

    def describe(self) -> str:
        return f"local directory {self.directory}"

    async def check(self) -> None:
        await self._ctx.run(self._check)

    def _check(self) -> None:
        try:
            make_dirs(self.directory)
        except OSError as exc:
            raise DestinationUnavailable(f"cannot create {self.directory}: {exc.strerror}") from exc
        if not os.access(self.directory, os.W_OK):
            raise DestinationUnavailable(f"{self.directory} is not writable")

    async def deliver(self, batch: ObjectBatch) -> Outcome:
        await self._ctx.run(self._write, batch)
        return DELIVERED

    def path_for(self, key: str) -> Path:
        return self.directory / _safe_relative(key)

    def _write(self, batch: ObjectBatch) -> None:
        path = self.path_for(batch.key)
        # The temporary name follows from the key: a write cut short by a crash
        # is overwritten when the sealed batch is delivered again, not left behind.
        parts = (batch.prelude, *batch.parts) if batch.prelude else batch.parts
        try:
            # Delivered objects are not read again here: their page cache is dropped
            # for the kernel to reuse instead of growing it.
            write_atomic(path, parts, tmp_name=f"{_TMP_PREFIX}{path.name}", mode=0o644, drop_cache=True)
        except OSError as exc:
            raise DestinationError(f"writing {path} failed: {exc.strerror or exc}") from exc
