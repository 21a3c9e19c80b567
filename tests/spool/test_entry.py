"""A direct-put entry's size is known before it is encoded, and the spool charges exactly what it writes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from firehose.spool import Spool, entry


@pytest.mark.parametrize("records", [[], [b""], [b"a"], [b"x" * 1000, b"", b"yz"]])
def test_direct_put_size_is_the_encoded_size(records: list[bytes]) -> None:
    encoded = entry.encode(records, 1_700_000_000_000)
    assert entry.direct_put_size(len(records), sum(map(len, records))) == sum(map(len, encoded))


def test_an_append_charges_the_spool_what_it_puts_on_disk(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    try:
        stream = spool.open_stream("s")
        for records in ([b"one", b"two"], [b"x" * 500]):
            asyncio.run(spool.append(stream, records, 1_700_000_000_000, sum(map(len, records))))
        on_disk = sum(p.stat().st_size for p in stream.log.directory.iterdir())
        assert spool.used_bytes == stream.log.size_bytes == on_disk
    finally:
        spool.close()
