"""Per-shard throughput limits, as AWS enforces them on provisioned streams.

Off by default (a local server should not slow tests down); when enabled,
writes are held to 1,000 records/s and 1 MiB/s per shard and reads to 5
GetRecords calls/s and 2 MiB/s per shard, so producers and consumers meet
``ProvisionedThroughputExceededException`` and exercise their back-off as
they would on AWS. Token buckets with one second of burst, except read bytes,
which are a debt: a reader that took a 10 MiB response owes 5 seconds before
its next call, which is AWS's documented behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from firehose.frontdoor.quotas import Bucket

WRITE_RECORDS_PER_S = 1000
WRITE_BYTES_PER_S = 1024 * 1024
READ_CALLS_PER_S = 5
READ_BYTES_PER_S = 2 * 1024 * 1024


@dataclass
class ShardLimits:
    write_records: Bucket = field(default_factory=lambda: Bucket(WRITE_RECORDS_PER_S))
    write_bytes: Bucket = field(default_factory=lambda: Bucket(WRITE_BYTES_PER_S))
    read_calls: Bucket = field(default_factory=lambda: Bucket(READ_CALLS_PER_S))
    #: Bytes read are a debt paid at 2 MiB/s: after a 10 MiB answer the next calls wait 5 s, as on AWS.
    read_bytes: Bucket = field(default_factory=lambda: Bucket(READ_BYTES_PER_S, capacity=0.0))

    def admit_write(self, size: int, now: float) -> bool:
        if self.write_records.available(now) < 1 or self.write_bytes.available(now) < size:
            return False
        self.write_records.take(1)
        self.write_bytes.take(size)
        return True

    def admit_read(self, now: float) -> bool:
        if self.read_calls.available(now) < 1 or self.read_bytes.available(now) < 0:
            return False
        self.read_calls.take(1)
        return True

    def charge_read(self, size: int) -> None:
        self.read_bytes.take(size)
