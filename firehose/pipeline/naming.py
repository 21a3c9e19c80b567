"""What a batch is called: its kind, its object key and the facts its seal keeps.

Naming happens once, when a batch is sealed, and the result is fsynced in the
seal (see ``spool/cursor.py``): a batch delivered again after a retry or a
crash goes under the same key, byte for byte. So everything here is a pure
function of the batch (partition, first position, oldest arrival), the
stream's definition version and the seal time, never of when delivery runs:

* the prefix comes from the oldest record's arrival time and the partition
  keys (or the error output type for error partitions);
* the suffix from the seal time and a UUID derived from the node and the spool
  position (``node/incarnation/source/partition/seq/index``), so two batches never
  share a key, not even batches of two daemons of a fleet writing to one bucket
  (``firehose.cluster``), and one batch never has two;
* record destinations (OpenSearch, Splunk, HTTP endpoint) and converting
  streams also get, up front, the key their error output will go under.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from firehose import failures
from firehose.encoding.builder import DATA, ERRORS, OVERFLOW, RECORDS
from firehose.objectkeys import KeyTemplate
from firehose.partitions import describe_partition, error_partition
from firehose.pipeline.config import StreamConfig
from firehose.records import Position
from firehose.spool.entry import Span

_KEY_NAMESPACE = uuid.UUID("6f1d7c3e-2b0a-4d8e-9a51-3c6b2f0e8a17")

#: The buffer of records over the active-partition limit.
OVERFLOW_PARTITION = error_partition(failures.PARTITIONING_FAILED) + "#overflow"


@dataclass(frozen=True, slots=True)
class BatchName:
    """Everything a seal records about a batch besides its span."""

    key: str
    meta: dict[str, Any]
    #: Overflow batches name their records one by one (they come from many partitions).
    positions: tuple[Position, ...] | None = None


def name_batch(cfg: StreamConfig, *, stream: str, incarnation: str, source: str, partition: str,
               spans: list[Span], sealed_ms: int, error_output_type: str, max_partitions: int) -> BatchName:
    """The key and seal metadata of the batch ``spans`` of ``partition``, sealed at ``sealed_ms``."""
    start = (spans[0].entry.seq, spans[0].start)
    first_arrival = min(s.entry.first_arrival(s.start, s.end) for s in spans)
    unique = uuid.uuid5(_KEY_NAMESPACE, f"{cfg.node}/{incarnation}/{source}/{partition}/{start[0]}/{start[1]}")
    keys = cfg.keys

    def error_key(error_type: str, salt: str, template: KeyTemplate = keys) -> str:
        return (template.render_error_prefix(first_arrival, error_type)
                + keys.suffix(stream, str(cfg.version), sealed_ms, uuid.uuid5(unique, salt))
                .removesuffix(keys.extension))

    positions = None
    meta: dict[str, Any] = {"version": cfg.version, "arrival_ms": first_arrival}
    if partition == OVERFLOW_PARTITION:
        kind, prefix = OVERFLOW, keys.render_error_prefix(first_arrival, failures.PARTITIONING_FAILED)
        positions = tuple((s.entry.seq, i) for s in spans for i in range(s.start, s.end))
        meta["reason"] = (f"More than {max_partitions} active partitions; this record's partition "
                          "could not get a buffer.")
    else:
        partition_keys, error_type = describe_partition(partition)
        if error_type is not None:
            kind, prefix = ERRORS, keys.render_error_prefix(first_arrival, error_type)
        elif cfg.records:
            kind, prefix = RECORDS, keys.render_prefix(first_arrival)
            meta["batch_id"] = str(unique)
            meta["error_key"] = error_key(error_output_type, "errors", cfg.error_keys(partition_keys))
        else:
            kind, prefix = DATA, keys.render_prefix(first_arrival, partition_keys=partition_keys)
            if cfg.conversion is not None:
                meta["error_key"] = error_key(failures.FORMAT_CONVERSION_FAILED, failures.FORMAT_CONVERSION_FAILED)
    suffix = keys.suffix(stream, str(cfg.version), sealed_ms, unique)
    if kind != DATA:
        suffix = suffix.removesuffix(keys.extension)
    meta["kind"] = kind
    return BatchName(prefix + suffix, meta, positions)


def unbuilt_key(cfg: StreamConfig, *, stream: str, batch_key: str, arrival_ms: int, sealed_ms: int, version: int,
                error_type: str) -> str:
    """Where the records of a data batch that could not be built go, under ``error_type``: a pure
    function of its seal (key, oldest arrival, seal time, version), so a retry after a restart
    writes the same key. Named only when it is needed, not in every seal."""
    keys = cfg.keys
    unique = uuid.uuid5(_KEY_NAMESPACE, f"{batch_key}/{error_type}")
    return (keys.render_error_prefix(arrival_ms, error_type)
            + keys.suffix(stream, str(version), sealed_ms, unique).removesuffix(keys.extension))
