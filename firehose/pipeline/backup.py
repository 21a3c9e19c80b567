"""Source-record backup: ``S3BackupMode: Enabled`` on ExtendedS3 and Redshift destinations.

AWS copies every record *as received* (before the processing chain, the
Lambda transform and format conversion) to ``S3BackupConfiguration``, next to
the delivery of the transformed records, with the backup's own prefix,
buffering hints, compression and encryption. Here the backup is a second
reader of the stream's raw log, an S3 stream of its own:

    raw log ─┬─▶ [feeder: chain ─▶ processed log] ─▶ deliverer ─▶ destination
             └─▶ backup deliverer (its own buffers, seals, ledger) ─▶ backup bucket

* It is the same ``Deliverer`` as any S3 destination's, over a
  ``BackupCursor``: the sealed-batch protocol (``spool/cursor.py``) over its
  own ledger (``ledger-backup/`` in the stream's spool). A backup batch is
  named and sealed before a byte of it is sent, so one re-sent after a kill
  lands under the key it had the first time; it is marked done only once the
  bucket took it. At least once and idempotent, like the main delivery.
* Raw spool segments are released only below what both readers have done
  (``StreamSpool.hold_raw``): a backup that is behind or failing keeps the
  records it still needs, and the main delivery keeps its own; neither loses
  the other's records, and neither waits for the other (a failing backup
  bucket holds spool space, not deliveries, until the spool is full).
* Its figures are ``BackupToS3.*`` (``telemetry.BACKUP``), not ``DeliveryToS3``;
  its freshness is ``BackupToS3.DataFreshness``.
* A backup batch that cannot be built at all (the deliverer's poison-batch
  rule) goes, with the reason, to the backup bucket's error output
  (``processing-failed``), so it cannot hold up the backup for good.

Enabling the backup on a stream that already runs backs up the records from
the oldest still in the spool on (AWS: those arriving after the update), so a
few records accepted just before may be in the backup too: a superset, never
a gap. The backup cannot be disabled (AWS's rule, ``definitions.py``); a
stream whose new destination has no backup forgets its ledger.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from firehose.destinations import ObjectDestination
from firehose.encoding.builder import ObjectBuilder
from firehose.pipeline.activity import ActivityLog
from firehose.pipeline.config import StreamConfig
from firehose.pipeline.deliver import Deliverer
from firehose.pipeline.memory import MemoryBudget
from firehose.settings import Settings
from firehose.spool import RAW, StreamSpool
from firehose.spool.cursor import BatchCursor
from firehose.tap import Taps
from firehose.telemetry import BACKUP, Metrics, StreamLevels

#: The backup's name in the stream's spool: its ledger (``ledger-backup/``) and its hold on the raw log.
READER = "backup"


class BackupCursor(BatchCursor):
    """The raw log as the source-record backup reads it: the sealed-batch protocol over its own ledger.

    The hold it puts on the raw log is its ledger's release point: raw records at or after it stay in
    the spool whatever the main delivery has done. Releasing only re-applies the holds (it never
    frees the processed log, which is the main delivery's).
    """

    def __init__(self, stream: StreamSpool) -> None:
        ledger = stream.side_ledger(READER)
        # Before the cursor's first release, and before the main readers' (``Pipeline`` makes this first).
        stream.hold_raw(READER, lambda: ledger.release_point(RAW))
        super().__init__(stream, RAW, ledger=ledger)

    def release(self) -> None:
        self._spool.release_held(self._stream)


class SourceBackup:
    """One stream's source-record backup: a deliverer of the raw log to the backup bucket."""

    def __init__(self, *, name: str, incarnation: str, stream_spool: StreamSpool, config: StreamConfig,
                 destination: ObjectDestination, builder: ObjectBuilder, settings: Settings, metrics: Metrics,
                 memory: MemoryBudget | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.deliverer = Deliverer(
            # Its own key namespace: a backup batch that starts where a main batch does gets another key,
            # even in the same bucket under the same prefix.
            name=name, incarnation=f"{incarnation}-{READER}", cursor=BackupCursor(stream_spool), config=config,
            destination=destination, builder=builder, store=None, settings=settings, metrics=metrics,
            activity=ActivityLog(name, settings.log.summary_seconds), taps=Taps(), memory=memory, clock=clock,
            family=BACKUP)

    @staticmethod
    def forget(stream_spool: StreamSpool) -> None:
        """The stream no longer backs up its source records: its ledger and hold go."""
        stream_spool.forget_side_ledger(READER)

    def start(self) -> None:
        self.deliverer.start()

    def reconfigure(self, config: StreamConfig, destination: ObjectDestination) -> None:
        self.deliverer.reconfigure(config, destination)

    async def stop(self, timeout: float) -> None:
        await self.deliverer.stop(timeout)

    async def discard(self) -> None:
        await self.deliverer.discard()

    def levels(self) -> StreamLevels:
        return self.deliverer.levels()

    @property
    def buffered_bytes(self) -> int:
        return self.deliverer.buffered_bytes

    def idle(self) -> bool:
        return self.deliverer.idle()
