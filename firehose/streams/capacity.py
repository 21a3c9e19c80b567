"""Capacity modes: UpdateStreamMode, UpdateMaxRecordSize, and on-demand streams growing with their writes.

Capacity modes (kinesis-fidelity.md §2):

* ``CreateStream`` without ``ShardCount`` creates an **ON_DEMAND** stream of 4
  shards. AWS creates 4 open shards (recorded against AWS); which mode it then
  reports is not recorded, and the API reference says provisioned streams
  "must specify the number of shards", so a stream created without a count can
  only be on-demand. ``ShardCount`` together with ``ON_DEMAND`` is refused
  (InvalidArgumentException, CloudFormation's wording), as is a
  ``PROVISIONED`` stream without a count.
* At most ``kinesis.on_demand_stream_limit`` (AWS: 50) ON_DEMAND streams per
  account → LimitExceededException.
* ``UpdateStreamMode`` needs an ACTIVE stream, keeps its shards, and passes
  through UPDATING; a stream may switch twice in a rolling 24 hours (the
  developer guide's limit).
* Resharding calls on an ON_DEMAND stream → ValidationException (the store).

On-demand scaling. AWS gives an on-demand stream 4 MiB/s of write capacity at
first and then "up to double the peak write throughput observed in the
previous 30 days", adding shards on its own. The sidecar does a simple,
predictable version of that: every ``kinesis.on_demand_scaling_interval_seconds``
it looks at what each open shard of an ON_DEMAND stream stored since the last
look, and splits, at the middle of its hash range, every shard whose average
write rate over that interval reached a shard's capacity (1 MiB/s or 1,000
records/s). A split doubles that key range's capacity, so a stream written at
a steady rate stops growing one split after its writes fit; shards are never
merged back (AWS scales down slowly, over a day). The account's shard limit
caps the growth. ``kinesis.on_demand_scaling: false`` turns it off (a stream
then keeps the shards it has).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from firehose.streams.addressing import stream_name
from firehose.streams.errors import InvalidArgumentException

if TYPE_CHECKING:
    from firehose.streams.store import Mode, Shard, ShardStore

log = logging.getLogger("firehose.streams")

Request = dict[str, Any]

#: A shard's write capacity (provisioned and on-demand alike).
SHARD_BYTES_PER_S = 1024 * 1024
SHARD_RECORDS_PER_S = 1000


def stream_mode(request: Request) -> tuple[Mode, int | None]:
    """CreateStream's mode and shard count, as chosen above (None: the on-demand default)."""
    count = request.get("ShardCount")
    details = request.get("StreamModeDetails")
    mode: Mode = details["StreamMode"] if details else ("PROVISIONED" if count is not None else "ON_DEMAND")
    if mode == "ON_DEMAND" and count is not None:
        raise InvalidArgumentException("ShardCount is not expected when StreamMode=ON_DEMAND")
    if mode == "PROVISIONED" and count is None:
        raise InvalidArgumentException("ShardCount is required when StreamMode=PROVISIONED")
    return mode, count


async def update_stream_mode(store: ShardStore, request: Request) -> dict[str, Any]:
    store.switch_mode(stream_name(store, request), request["StreamModeDetails"]["StreamMode"])
    return {}


async def update_max_record_size(store: ShardStore, request: Request) -> dict[str, Any]:
    store.set_max_record_kib(stream_name(store, request), request["MaxRecordSizeInKiB"])
    return {}


@dataclass
class OnDemandScaler:
    """Splits the hot shards of a store's ON_DEMAND streams (see the module docstring).

    ``observe`` takes one look; the first look at a shard only records where its counters
    stand. Looks are cheap: two counters per open shard of the ON_DEMAND streams.
    """

    store: ShardStore
    #: (stream name, stream creation ms, shard id) → (records, bytes, monotonic seconds) at the last look.
    _seen: dict[tuple[str, int, str], tuple[int, int, float]] = field(default_factory=dict)

    def observe(self, now: float | None = None) -> int:
        """One look at every ON_DEMAND stream; the number of shards it split."""
        at = time.monotonic() if now is None else now
        seen: dict[tuple[str, int, str], tuple[int, int, float]] = {}
        split = 0
        for stream in list(self.store.streams.values()):
            if stream.mode != "ON_DEMAND" or stream.status != "ACTIVE":
                continue
            hot: list[Shard] = []
            for shard in stream.open_shards():
                data = stream.data[shard.shard_id]
                key = (stream.name, stream.created_ms, shard.shard_id)
                seen[key] = (data.records_in, data.bytes_in, at)
                before = self._seen.get(key)
                if before is None or at <= before[2]:
                    continue
                elapsed = at - before[2]
                records = (data.records_in - before[0]) / elapsed
                size = (data.bytes_in - before[1]) / elapsed
                if records >= SHARD_RECORDS_PER_S or size >= SHARD_BYTES_PER_S:
                    hot.append(shard)
            if hot:
                opened = len(stream.open_shards())
                self.store.split_hot(stream, hot)
                grown = len(stream.open_shards()) - opened
                split += grown
                if grown:
                    log.info("On-demand stream grew with its writes.",
                             extra={"stream": stream.name, "open_shards": opened + grown})
        self._seen = seen
        return split

    async def run(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                self.observe()
            except Exception:
                log.exception("On-demand scaling failed; will look again.")
