"""Streams of shards on disk: the state behind the Kinesis API.

What is durable, and how:

* Records: each shard's ``ShardData`` log (checksummed, fsynced through the
  shared group committer before ``put`` returns), so an acknowledged
  PutRecords survives ``kill -9`` and power loss.
* Everything else (streams, shards and their lineage, retention, tags, the
  iterator signing key, each stream's wrapped data keys): ``streams.json``, replaced atomically (write, fsync,
  rename, fsync the directory) on every change. It is small and changes only
  on control-plane calls.

All methods run on one event loop thread; only fsyncs happen elsewhere (in
the committer thread). A stream moves CREATING → ACTIVE, ACTIVE → UPDATING →
ACTIVE around a reshard, and → DELETING → gone, each after the configured
delay (0 by default: at once).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import re
import secrets
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import orjson

from firehose.clock import now_ms
from firehose.storage.atomic import write_atomic
from firehose.storage.committer import GroupCommitter, commit
from firehose.storage.dirlock import DirectoryLock
from firehose.streams import encryption, hashkeys, iterators, sequence, shardids
from firehose.streams.consumers import Consumer
from firehose.streams.encryption import EncryptionState, KeyringLoader, StreamKeys
from firehose.streams.errors import (
    ExpiredIteratorException,
    InternalFailure,
    InvalidArgumentException,
    LimitExceededException,
    ProvisionedThroughputExceededException,
    ResourceInUseException,
    ResourceNotFoundException,
    ValidationException,
)
from firehose.streams.shard import Position, ReadRecord, ShardData, encode_entry
from firehose.streams.throttle import ShardLimits

if TYPE_CHECKING:
    from firehose.streams.metrics import StreamsMetrics

log = logging.getLogger("firehose.streams")

Status = Literal["CREATING", "ACTIVE", "UPDATING", "DELETING"]
Mode = Literal["PROVISIONED", "ON_DEMAND"]

DEFAULT_RETENTION_HOURS = 24
MAX_RETENTION_HOURS = 8760
ON_DEMAND_SHARDS = 4
MAX_SCALINGS_PER_DAY = 10
#: Capacity-mode switches a stream may make in a rolling 24 hours (Kinesis developer guide: "twice within 24 hours").
MAX_MODE_SWITCHES_PER_DAY = 2
#: The ShardLevelMetrics values EnableEnhancedMonitoring accepts besides ``ALL``, in the model's order.
SHARD_LEVEL_METRICS = ("IncomingBytes", "IncomingRecords", "OutgoingBytes", "OutgoingRecords",
                       "WriteProvisionedThroughputExceeded", "ReadProvisionedThroughputExceeded",
                       "IteratorAgeMilliseconds")
#: Streams that may be CREATING at once in an account.
MAX_CREATING = 5
_DAY_MS = 24 * 3600 * 1000
#: A position before a shard's first record (its StartingSequenceNumber), before AT/AFTER are applied.
BEFORE_FIRST: Position = (0, -1)
MAX_TAGS = 50
#: Characters a tag key or value may not hold (kinesalite's recording of AWS's rule; ``:`` was added
#: to the allowed set later, as AWS's own ``aws:`` keys need it). ``%`` passes here and fails next.
_TAG_REFUSED = re.compile(r"[^\u00C0-\u1FFF\u2C00-\uD7FFA-Za-z0-9_./=+\- @%:]")


@dataclass
class Shard:
    shard_id: str
    index: int
    start: int
    end: int
    created_ms: int
    parent: str | None = None
    adjacent_parent: str | None = None
    closed_ms: int | None = None

    @property
    def is_open(self) -> bool:
        return self.closed_ms is None


@dataclass
class Stream:
    name: str
    arn: str
    created_ms: int
    epoch: int
    status: Status = "CREATING"
    retention_hours: int = DEFAULT_RETENTION_HOURS
    mode: Mode = "PROVISIONED"
    max_record_kib: int = 1024
    tags: dict[str, str] = field(default_factory=dict)
    shards: list[Shard] = field(default_factory=list)
    next_index: int = 0
    scalings: list[int] = field(default_factory=list)
    #: What log entry 0 of each shard encodes as in sequence numbers (``sequence.prefix``): 1 for streams
    #: created since StartingSequenceNumber comes before the first record, 0 for older ones (absent).
    first_entry: int = 0
    #: When the capacity mode was switched (UpdateStreamMode), for the two-a-day limit.
    mode_switches: list[int] = field(default_factory=list)
    #: Enabled enhanced (shard-level) metrics, in SHARD_LEVEL_METRICS order.
    shard_metrics: list[str] = field(default_factory=list)
    #: The resource-based policy (JSON text as put; ``firehose.streams.policies``), or None.
    policy: str | None = None
    #: Encryption at rest (``encryption.py``); None for a stream never encrypted.
    encryption: EncryptionState | None = None
    #: Registered enhanced fan-out consumers (``consumers.py``).
    consumers: list[Consumer] = field(default_factory=list)
    # -- runtime only --
    data: dict[str, ShardData] = field(default_factory=dict, repr=False)
    keys: StreamKeys = field(default_factory=StreamKeys, repr=False)
    limits: dict[str, ShardLimits] = field(default_factory=dict, repr=False)
    _open_starts: list[int] = field(default_factory=list, repr=False)
    _open_ids: list[str] = field(default_factory=list, repr=False)

    @property
    def directory_name(self) -> str:
        return f"{self.name}-{self.created_ms}"

    def shard(self, shard_id: str) -> Shard | None:
        return next((s for s in self.shards if s.shard_id == shard_id), None)

    def open_shards(self) -> list[Shard]:
        return [s for s in self.shards if s.is_open]

    def route_table(self) -> None:
        opened = sorted(self.open_shards(), key=lambda s: s.start)
        self._open_starts = [s.start for s in opened]
        self._open_ids = [s.shard_id for s in opened]

    def route(self, key: int) -> str:
        return self._open_ids[bisect.bisect_right(self._open_starts, key) - 1]

    def cutoff_ms(self, now: int | None = None) -> int:
        cutoff = (now_ms() if now is None else now) - self.retention_hours * 3600 * 1000
        return cutoff if self.encryption is None else max(cutoff, self.encryption.floor_ms)

    def starting_sequence(self, shard: Shard) -> str:
        return sequence.encode(sequence.prefix(self.epoch, shard.index), 0, 0)

    def ending_sequence(self, shard: Shard) -> str | None:
        if shard.is_open:
            return None
        last = self.data[shard.shard_id].last_position
        return self.data[shard.shard_id].sequence_number(last) if last else self.starting_sequence(shard)

    def to_json(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name in _PERSISTED}
        d["shards"] = [{**asdict(s), "start": str(s.start), "end": str(s.end)} for s in self.shards]
        d["consumers"] = [c.to_json() for c in self.consumers]
        if self.encryption is not None:
            d["encryption"] = self.encryption.to_json()
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Stream:
        shards = [Shard(**{**s, "start": int(s["start"]), "end": int(s["end"])}) for s in d.pop("shards")]
        enc = d.pop("encryption", None)
        consumers = [Consumer.from_json(c) for c in d.pop("consumers", [])]
        return cls(**d, shards=shards, consumers=consumers,
                   encryption=EncryptionState.from_json(enc) if enc is not None else None)


_PERSISTED = frozenset({"name", "arn", "created_ms", "epoch", "status", "retention_hours", "mode", "max_record_kib",
                        "tags", "next_index", "scalings", "first_entry", "mode_switches", "shard_metrics", "policy"})


class PutResult(NamedTuple):
    """One record's outcome: (shard id, sequence number), or (None, None, error code, message)."""

    shard_id: str | None
    sequence_number: str | None
    error_code: str | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class ChildShard:
    shard_id: str
    parents: list[str]
    start: int
    end: int


@dataclass(frozen=True)
class GetResult:
    records: list[ReadRecord]
    next_iterator: str | None
    millis_behind: int
    children: list[ChildShard] | None
    #: The stream and shard read (for the metrics).
    stream: str = ""
    shard_id: str | None = None


@dataclass
class StoreOptions:
    account_id: str = "123456789012"
    region: str = "us-east-1"
    shard_limit: int = 500
    create_delay_s: float = 0.0
    delete_delay_s: float = 0.0
    update_delay_s: float = 0.0
    enforce_limits: bool = False
    segment_bytes: int = 16 * 1024 * 1024
    trim_interval_s: float = 60.0
    #: ON_DEMAND streams the account may have (AWS's default quota).
    on_demand_stream_limit: int = 50
    #: ON_DEMAND streams split their hot shards (``firehose.streams.capacity``), looking this often.
    on_demand_scaling: bool = True
    on_demand_scaling_interval_s: float = 10.0
    #: Seconds a consumer stays CREATING / DELETING (0 = at once).
    consumer_delay_s: float = 0.0
    #: How long a SubscribeToShard answer lasts before it ends (AWS: 5 minutes).
    subscription_s: float = 300.0


class ShardStore:
    def __init__(self, directory: Path, options: StoreOptions | None = None,
                 committer: GroupCommitter | None = None, keyring: KeyringLoader | None = None) -> None:
        self.directory = Path(directory)
        #: The daemon's keyring, for encryption at rest (loaded only when a stream is or becomes encrypted).
        self.keyring = keyring
        self.options = options or StoreOptions()
        self._own_committer = committer is None
        self.committer = committer or GroupCommitter("shard-commit")
        self.streams: dict[str, Stream] = {}
        #: Where the operations report what they store and read (set by the API app serving the store).
        self.metrics: StreamsMetrics | None = None
        self.key = b""
        self._last_epoch = 0
        self._timers: list[asyncio.TimerHandle] = []
        self._trimmer: asyncio.Task[None] | None = None
        self._scaler: asyncio.Task[None] | None = None
        self._lock = DirectoryLock(self.directory, "the shard store")
        try:
            self._load()
        except BaseException:
            self._lock.release()
            raise

    # -- persistence -------------------------------------------------------------

    @property
    def _meta_path(self) -> Path:
        return self.directory / "streams.json"

    def _load(self) -> None:
        if self._meta_path.exists():
            meta = orjson.loads(self._meta_path.read_bytes())
            self.key = bytes.fromhex(meta["key"])
            self._last_epoch = meta.get("last_epoch", 0)
            for d in meta["streams"]:
                stream = Stream.from_json(d)
                self.streams[stream.name] = stream
        else:
            self.key = secrets.token_bytes(32)
        for stream in list(self.streams.values()):
            if stream.status == "DELETING":
                self._remove(stream)
                continue
            for shard in stream.shards:
                self._open_data(stream, shard)
            encryption.restore(stream, self.keyring, self.options.account_id)
            stream.route_table()
            if stream.status != "ACTIVE":
                stream.status = "ACTIVE"  # a transition that was pending at the crash has happened
            stream.consumers = [c.settled() for c in stream.consumers if c.status != "DELETING"]
        self._save()

    def _save(self) -> None:
        meta = {"key": self.key.hex(), "last_epoch": self._last_epoch,
                "streams": [s.to_json() for s in self.streams.values()]}
        body = orjson.dumps(meta, option=orjson.OPT_INDENT_2)
        write_atomic(self._meta_path, (body,), tmp_name="streams.tmp")  # the temporary name it has always had

    def persist(self) -> None:
        """Save a change made to a stream's state outside this class (its resource policy)."""
        self._save()

    def _open_data(self, stream: Stream, shard: Shard) -> None:
        prefix = sequence.prefix(stream.epoch, shard.index, stream.first_entry)
        directory = self.directory / stream.directory_name / shard.shard_id
        data = stream.data[shard.shard_id] = ShardData.open(directory, prefix, segment_bytes=self.options.segment_bytes)
        data.shard_index, data.keys, data.next_entry = shard.index, stream.keys, data.log.next_seq
        stream.limits[shard.shard_id] = ShardLimits()

    def _remove(self, stream: Stream) -> None:
        for data in stream.data.values():
            data.close()
        self.streams.pop(stream.name, None)
        shutil.rmtree(self.directory / stream.directory_name, ignore_errors=True)

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Start background work (retention trimming, on-demand scaling); call on the event loop."""
        if self._trimmer is None:
            self._trimmer = asyncio.get_running_loop().create_task(self._trim_forever())
        if self._scaler is None and self.options.on_demand_scaling:
            from firehose.streams.capacity import OnDemandScaler  # it acts on the store

            scaler = OnDemandScaler(self).run(self.options.on_demand_scaling_interval_s)
            self._scaler = asyncio.get_running_loop().create_task(scaler)

    async def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        for task in (self._trimmer, self._scaler):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._own_committer:
            self.committer.stop()
        for stream in self.streams.values():
            for data in stream.data.values():
                data.close()
        self._lock.release()

    def _later(self, delay: float, fn: Callable[[], None]) -> None:
        if delay <= 0:
            fn()
            return
        self._timers.append(asyncio.get_running_loop().call_later(delay, fn))

    async def _trim_forever(self) -> None:
        while True:
            await asyncio.sleep(self.options.trim_interval_s)
            try:
                self.trim()
            except Exception:
                log.exception("Retention trimming failed; will try again.")

    def trim(self) -> int:
        """Delete data past every stream's retention period; bytes freed."""
        freed = 0
        for stream in self.streams.values():
            cutoff = stream.cutoff_ms()
            for data in stream.data.values():
                freed += data.trim_before(cutoff)
        return freed

    # -- lookups -----------------------------------------------------------------

    def arn(self, name: str) -> str:
        return f"arn:aws:kinesis:{self.options.region}:{self.options.account_id}:stream/{name}"

    def not_found(self, name: str) -> ResourceNotFoundException:
        return ResourceNotFoundException(f"Stream {name} under account {self.options.account_id} not found.")

    def stream(self, name: str, *, data_op: bool = False) -> Stream:
        """The stream; data operations treat a stream that is being created or deleted as absent."""
        stream = self.streams.get(name)
        if stream is None or (data_op and stream.status in ("CREATING", "DELETING")):
            raise self.not_found(name)
        return stream

    def active(self, name: str) -> Stream:
        stream = self.stream(name)
        if stream.status != "ACTIVE":
            raise ResourceInUseException(f"Stream {name} under account {self.options.account_id} not ACTIVE, "
                                         f"instead in state {stream.status}")
        return stream

    def shard_id_of(self, name: str, given: str) -> str:
        """The canonical id of the shard a request names by ``given`` (``shardids``), checked before the stream
        is looked up, as AWS checks it; AWS's text when ``given`` names no shard at all."""
        shard_id = shardids.resolve(given)
        if shard_id is None:
            raise ResourceNotFoundException(f"Could not find shard {given} in stream {name} under account "
                                            f"{self.options.account_id}.")
        return shard_id

    def iterator_shard(self, name: str, given: str) -> str:
        """The canonical id of the shard a GetShardIterator names, checked as AWS checks it before anything
        else about the request: ``shard_id_of``, then a stream or shard that is not there (a stream being
        created or deleted counts as not there), with AWS's text."""
        shard_id = self.shard_id_of(name, given)
        stream = self.streams.get(name)
        if stream is None or stream.status in ("CREATING", "DELETING") or stream.shard(shard_id) is None:
            raise ResourceNotFoundException(f"Shard {shard_id} in stream {name} under account "
                                            f"{self.options.account_id} does not exist")
        return shard_id

    def shard(self, stream: Stream, shard_id: str) -> Shard:
        shard = stream.shard(shard_id)
        if shard is None:
            raise ResourceNotFoundException(f"Shard {shard_id} in stream {stream.name} under account "
                                            f"{self.options.account_id} does not exist")
        return shard

    def on_demand_count(self) -> int:
        return sum(s.mode == "ON_DEMAND" for s in self.streams.values() if s.status != "DELETING")

    def check_on_demand_limit(self) -> None:
        """LimitExceededException when one more ON_DEMAND stream would exceed the account's quota
        (kinesis-mock's wording; AWS's is not recorded)."""
        if self.on_demand_count() >= self.options.on_demand_stream_limit:
            raise LimitExceededException("Limit for on-demand streams has been reached")

    def open_shard_count(self) -> int:
        return sum(len(s.open_shards()) for s in self.streams.values() if s.status != "DELETING")

    def _check_shard_limit(self, extra: int) -> None:
        current = self.open_shard_count()
        if current + extra > self.options.shard_limit:
            raise LimitExceededException(
                f"This request would exceed the shard limit for the account {self.options.account_id} in "
                f"{self.options.region}. Current shard count for the account: {current}. Limit: "
                f"{self.options.shard_limit}. Number of additional shards that would have resulted from this "
                f"request: {extra}. Refer to the AWS Service Limits page "
                "(http://docs.aws.amazon.com/general/latest/gr/aws_service_limits.html) for current limits and "
                "how to request higher limits.")

    # -- control plane ---------------------------------------------------------

    def create_stream(self, name: str, shard_count: int, *, mode: Mode = "PROVISIONED",
                      tags: dict[str, str] | None = None, max_record_kib: int = 1024) -> Stream:
        if name in self.streams:
            raise ResourceInUseException(f"Stream {name} under account {self.options.account_id} already exists.")
        if sum(s.status == "CREATING" for s in self.streams.values()) >= MAX_CREATING:
            raise LimitExceededException(
                "The requested resource exceeds the maximum number allowed, or the number of concurrent stream "
                f"requests exceeds the maximum number allowed ({MAX_CREATING} streams in CREATING).")
        if mode == "ON_DEMAND":
            self.check_on_demand_limit()
        self._check_shard_limit(shard_count)
        created = now_ms()
        self._last_epoch = epoch = max(created // 1000, self._last_epoch + 1)
        stream = Stream(name=name, arn=self.arn(name), created_ms=created, epoch=epoch, mode=mode, first_entry=1,
                        max_record_kib=max_record_kib, tags=dict(tags or {}))
        for start, end in hashkeys.initial_ranges(shard_count):
            self._new_shard(stream, start, end, created)
        stream.route_table()
        self.streams[name] = stream
        self._save()
        self._later(self.options.create_delay_s, lambda: self._set_status(stream, "ACTIVE"))
        return stream

    def _new_shard(self, stream: Stream, start: int, end: int, created: int, parent: str | None = None,
                   adjacent: str | None = None) -> Shard:
        index = stream.next_index
        if index > sequence.MAX_SHARD_INDEX:
            raise LimitExceededException(f"Stream {stream.name} has used every shard id it can have.")
        stream.next_index += 1
        shard = Shard(shardids.name(index), index, start, end, created, parent, adjacent)
        stream.shards.append(shard)
        self._open_data(stream, shard)
        return shard

    def _set_status(self, stream: Stream, status: Status) -> None:
        if self.streams.get(stream.name) is stream and stream.status != "DELETING":
            stream.status = status
            self._save()

    def delete_stream(self, name: str) -> None:
        stream = self.stream(name)
        if stream.status == "DELETING":
            return
        stream.status = "DELETING"
        self._save()
        for data in stream.data.values():  # subscribers end
            data.wake()

        def finish() -> None:
            if self.streams.get(name) is stream:
                self._remove(stream)
                self._save()

        self._later(self.options.delete_delay_s, finish)

    def drop_all(self) -> int:
        """Delete every stream at once, whatever its state, with its records (the testing reset); how many."""
        dropped = list(self.streams.values())
        for stream in dropped:
            stream.status = "DELETING"
            for data in stream.data.values():  # subscribers end
                data.wake()
            self._remove(stream)
        self._save()
        return len(dropped)

    def set_retention(self, name: str, hours: int, *, increase: bool) -> None:
        """AWS's order (kinesalite's actions/*StreamRetentionPeriod.js): the stream exists, then the
        bounds (minimum first) for either direction, then the comparison with the current period,
        then the stream's state."""
        stream = self.stream(name)
        if hours < DEFAULT_RETENTION_HOURS:
            raise InvalidArgumentException(f"Minimum allowed retention period is {DEFAULT_RETENTION_HOURS} "
                                           f"hours. Requested retention period ({hours} hours) is too short.")
        if hours > MAX_RETENTION_HOURS:
            raise InvalidArgumentException(f"Maximum allowed retention period is {MAX_RETENTION_HOURS} hours. "
                                           f"Requested retention period ({hours} hours) is too long.")
        current = stream.retention_hours
        if increase and hours < current:
            raise InvalidArgumentException(
                f"Requested retention period ({hours} hours) for stream {name} can not be shorter than existing "
                f"retention period ({current} hours). Use DecreaseRetentionPeriod API.")
        if not increase and hours > current:
            raise InvalidArgumentException(
                f"Requested retention period ({hours} hours) for stream {name} can not be longer than existing "
                f"retention period ({current} hours). Use IncreaseRetentionPeriod API.")
        if stream.status != "ACTIVE":
            raise ResourceInUseException(f"Stream {name} under account {self.options.account_id} not ACTIVE, "
                                         f"instead in state {stream.status}")
        stream.retention_hours = hours
        self._save()

    def check_tag_text(self, name: str, texts: Sequence[str], verb: str) -> None:
        """AWS's character rules for tag keys and values (``verb``: "add tags to" / "remove tags from").

        Two checks in kinesalite's order, as AWS answers them: characters outside the allowed set,
        then ``%``, which the first set admits but the second refuses.
        """
        if any(_TAG_REFUSED.search(text) for text in texts):
            raise InvalidArgumentException("Some tags contain invalid characters. Valid characters: Unicode "
                                           "letters, digits, white space, _ . / = + - % @ :.")
        if any("%" in text for text in texts):
            raise InvalidArgumentException(
                f"Failed to {verb} stream {name} under account {self.options.account_id} because some tags "
                "contained illegal characters. The allowed characters are Unicode letters, white-spaces, "
                "'_',',','/','=','+','-','@',':'.")

    def check_tag_count(self, name: str, count: int) -> None:
        """At most ``MAX_TAGS`` per stream; AWS's message still says 10, the limit of its first years."""
        if count > MAX_TAGS:
            raise InvalidArgumentException(f"Failed to add tags to stream {name} under account "
                                           f"{self.options.account_id} because a given stream cannot have more "
                                           "than 10 tags associated with it.")

    def add_tags(self, name: str, tags: dict[str, str]) -> None:
        stream = self.stream(name)
        self.check_tag_text(name, [*tags, *tags.values()], "add tags to")
        merged = {**stream.tags, **tags}
        self.check_tag_count(name, len(merged))
        stream.tags = merged
        self._save()

    def remove_tags(self, name: str, keys: Sequence[str]) -> None:
        stream = self.stream(name)
        self.check_tag_text(name, keys, "remove tags from")
        for key in keys:
            stream.tags.pop(key, None)
        self._save()

    def switch_mode(self, name: str, mode: Mode) -> None:
        """UpdateStreamMode: ACTIVE → UPDATING → ACTIVE in ``mode``, keeping the shards as they are."""
        stream = self.active(name)
        now = now_ms()
        stream.mode_switches = [t for t in stream.mode_switches if t > now - _DAY_MS]
        if len(stream.mode_switches) >= MAX_MODE_SWITCHES_PER_DAY:
            raise LimitExceededException(
                f"Stream {name} under account {self.options.account_id} has already switched its capacity mode "
                f"{MAX_MODE_SWITCHES_PER_DAY} times in the last 24 hours.")
        if mode == stream.mode:
            return
        if mode == "ON_DEMAND":
            self.check_on_demand_limit()
        stream.mode_switches.append(now)
        stream.mode = mode
        self._reshard(stream, lambda _now: None)

    def split_hot(self, stream: Stream, shards: Sequence[Shard]) -> None:
        """Split open ``shards`` of an ON_DEMAND stream at their middles (on-demand scaling), within the
        account's shard limit; the stream is UPDATING meanwhile, as for any reshard."""
        if stream.status != "ACTIVE" or not shards:
            return
        room = self.options.shard_limit - self.open_shard_count()
        chosen = [s for s in shards if s.is_open and s.end > s.start][:max(room, 0)]
        if not chosen:
            return

        def apply(now: int) -> None:
            for shard in chosen:
                if shard.is_open:
                    self._split(stream, shard, (shard.start + shard.end + 1) // 2, now)

        self._reshard(stream, apply)

    def set_shard_metrics(self, name: str, metrics: Sequence[str], *, enable: bool) -> tuple[list[str], list[str]]:
        """Enable (union) or disable (difference) enhanced metrics; (before, after) in model order."""
        stream = self.stream(name)
        if stream.status != "ACTIVE":
            raise ResourceInUseException(f"Stream {name} under account {self.options.account_id} not ACTIVE, "
                                         f"instead in state {stream.status}")
        chosen = set(SHARD_LEVEL_METRICS) if "ALL" in metrics else set(metrics)
        before = list(stream.shard_metrics)
        now = set(before) | chosen if enable else set(before) - chosen
        stream.shard_metrics = [m for m in SHARD_LEVEL_METRICS if m in now]
        self._save()
        return before, list(stream.shard_metrics)

    def set_max_record_kib(self, name: str, kib: int) -> None:
        stream = self.active(name)
        stream.max_record_kib = kib
        self._save()

    # -- resharding --------------------------------------------------------------

    def _reshardable(self, name: str) -> Stream:
        stream = self.active(name)
        if stream.mode == "ON_DEMAND":
            raise ValidationException(f"Request is invalid. Stream {name} under account {self.options.account_id} "
                                      "is in On-Demand mode.")
        return stream

    def _open_shard(self, stream: Stream, shard_id: str) -> Shard:
        shard = stream.shard(shard_id)
        if shard is None:  # SplitShard's and MergeShards' wording (GetShardIterator's differs)
            raise ResourceNotFoundException(f"Could not find shard {shard_id} in stream {stream.name} under account "
                                            f"{self.options.account_id}.")
        if not shard.is_open:
            raise InvalidArgumentException(f"Shard {shard_id} in stream {stream.name} under account "
                                           f"{self.options.account_id} has already been merged or split, and "
                                           "thus is not eligible for merging or splitting.")
        return shard

    def split_shard(self, name: str, shard_id: str, new_start: int) -> None:
        stream = self._reshardable(name)
        parent = self._open_shard(stream, shard_id)
        if not parent.start + 1 < new_start < parent.end:
            raise InvalidArgumentException(
                f"NewStartingHashKey {new_start} used in SplitShard() on shard {shard_id} in stream {name} under "
                f"account {self.options.account_id} is not both greater than one plus the shard's "
                f"StartingHashKey {parent.start} and less than the shard's EndingHashKey {parent.end}.")
        self._check_shard_limit(1)
        self._reshard(stream, lambda now: self._split(stream, parent, new_start, now))

    def merge_shards(self, name: str, shard_id: str, adjacent_id: str) -> None:
        stream = self._reshardable(name)
        first = self._open_shard(stream, shard_id)
        second = self._open_shard(stream, adjacent_id)
        if first.end + 1 != second.start:  # in this order: AWS refuses the pair the other way round
            raise InvalidArgumentException(
                f"Shards {shard_id} and {adjacent_id} in stream {name} under account {self.options.account_id} "
                "are not an adjacent pair of shards eligible for merging")
        self._reshard(stream, lambda now: self._merge(stream, first, second, now))

    def update_shard_count(self, name: str, target: int) -> int:
        """Start a uniform scaling to ``target`` open shards; the open shard count before it.

        Only the documented "no more than double" limit is enforced: AWS's documented "not below
        half" is not, because AWS itself scaled 10 shards to 3 in the totals moto verified against it
        (kinesis-fidelity.md §4.2), so a suite reproducing that must not be refused here.
        """
        stream = self._reshardable(name)
        current = len(stream.open_shards())
        if target > 2 * current:
            raise InvalidArgumentException(
                f"UpdateShardCount cannot scale up over double your current open shard count. Current open shard "
                f"count: {current}. Requested: {target}.")
        now = now_ms()
        stream.scalings = [t for t in stream.scalings if t > now - _DAY_MS]
        if len(stream.scalings) >= MAX_SCALINGS_PER_DAY:
            raise LimitExceededException(f"Stream {name} under account {self.options.account_id} has already been "
                                         f"scaled {MAX_SCALINGS_PER_DAY} times in the last 24 hours.")
        if target > current:
            # Scaling up splits every open shard before merging down to the target: for a moment the
            # stream has twice its shards open, and AWS counts those transient shards against the limit.
            self._check_shard_limit(current)
        stream.scalings.append(now)
        self._reshard(stream, lambda at: self._uniform(stream, target, at))
        return current

    def _reshard(self, stream: Stream, apply: Callable[[int], None]) -> None:
        """UPDATING for the configured delay, then the change, then ACTIVE (AWS's order)."""
        stream.status = "UPDATING"
        self._save()

        def finish() -> None:
            if self.streams.get(stream.name) is not stream or stream.status == "DELETING":
                return
            apply(now_ms())
            stream.route_table()
            stream.status = "ACTIVE"
            self._save()
            for data in stream.data.values():  # subscribers to a shard now closed send its children
                data.wake()

        self._later(self.options.update_delay_s, finish)

    def _split(self, stream: Stream, parent: Shard, new_start: int, now: int) -> list[Shard]:
        parent.closed_ms = now
        return [self._new_shard(stream, parent.start, new_start - 1, now, parent.shard_id),
                self._new_shard(stream, new_start, parent.end, now, parent.shard_id)]

    def _merge(self, stream: Stream, first: Shard, second: Shard, now: int) -> Shard:
        first.closed_ms = second.closed_ms = now
        return self._new_shard(stream, min(first.start, second.start), max(first.end, second.end), now,
                               first.shard_id, second.shard_id)

    def _uniform(self, stream: Stream, target: int, now: int) -> None:
        """Reach ``target`` open shards leaving exactly the open and closed shards AWS leaves.

        The algorithm moto uses, whose totals match AWS's (kinesis-fidelity.md §4.2-4.3: 2→4 leaves
        6 shards, 4→5 15, 10→13 37, 4→2 6, 5→3 7, 10→3 17): to scale up, split every open shard
        once at the middle of its range, in shard-id order (lower child first); then, while more
        than ``target`` are open, merge adjacent pairs in hash-key order (1st+2nd, 3rd+4th, ...;
        the lower shard is ShardToMerge), stopping as soon as ``target`` are open. Every step
        closes shards and opens children that name them as parents, so readers that follow
        lineage see every record once, in order.
        """
        opened = sorted(stream.open_shards(), key=lambda s: s.index)
        if target > len(opened):
            for shard in opened:
                if shard.end > shard.start:
                    self._split(stream, shard, (shard.start + shard.end + 1) // 2, now)
        while len(opened := sorted(stream.open_shards(), key=lambda s: s.start)) > target:
            count = len(opened)
            for lower, upper in zip(opened[0::2], opened[1::2], strict=False):
                self._merge(stream, lower, upper, now)
                count -= 1
                if count == target:
                    break

    # -- data plane ----------------------------------------------------------------

    async def put(self, name: str, records: Sequence[tuple[bytes, bytes, int]]) -> list[PutResult]:
        """Store (partition key, data, hash key) records; per-record results in order.

        Returns once every stored record is fsynced. A record fails alone (throttled), as
        PutRecords reports it; the caller has validated sizes.
        """
        stream = self.stream(name, data_op=True)
        route = stream.route
        groups: dict[str, tuple[list[int], list[bytes], list[bytes]]] = {}
        results: list[PutResult | None] = [None] * len(records)
        limits = stream.limits if self.options.enforce_limits else None
        mono = time.monotonic()
        for i, (key, data, hash_key) in enumerate(records):
            shard_id = route(hash_key)
            if limits is not None and not limits[shard_id].admit_write(len(key) + len(data), mono):
                results[i] = PutResult(None, None, "ProvisionedThroughputExceededException",
                                       f"Rate exceeded for shard {shard_id} in stream {name} under account "
                                       f"{self.options.account_id}.")
                continue
            group = groups.get(shard_id)
            if group is None:
                group = groups[shard_id] = ([], [], [])
            group[0].append(i)
            group[1].append(key)
            group[2].append(data)
        if groups:
            arrival = now_ms()
            jobs = []
            sealer = stream.keys if stream.keys.sealing is not None else None
            for shard_id, (_idx, keys, datas) in groups.items():
                data_ = stream.data[shard_id]
                arrival = max(arrival, data_.last_arrival_ms)
                jobs.append(self._append(data_, arrival, keys, datas, sealer))
            entries = await asyncio.gather(*jobs)
            for (shard_id, (idx, _keys, _datas)), entry in zip(groups.items(), entries, strict=True):
                prefix, encode = stream.data[shard_id].prefix, sequence.encode
                for n, i in enumerate(idx):
                    results[i] = PutResult(shard_id, encode(prefix, entry, n))
        return results  # type: ignore[return-value]

    async def _append(self, data: ShardData, arrival: int, keys: list[bytes], datas: list[bytes],
                      sealer: StreamKeys | None = None) -> int:
        data.last_arrival_ms = arrival
        payload = encode_entry(arrival, keys, datas)
        expected = data.next_entry  # the log numbers entries in the order they are submitted (encryption.py)
        data.next_entry += 1
        if sealer is not None:
            payload = sealer.seal(data.shard_index, expected, payload)
        entry = await commit(self.committer, data.log, [payload])
        if entry != expected:
            data.next_entry = max(data.next_entry, entry + 1)
            if sealer is not None:
                log.error("A sealed shard entry was numbered differently than expected; it cannot be opened.",
                          extra={"entry": entry, "expected": expected})
                raise InternalFailure("The records were not stored readably; try again.")
        data.note(entry, arrival, len(datas))
        data.records_in += len(datas)
        data.bytes_in += sum(map(len, keys)) + sum(map(len, datas))
        if data.waiting:  # subscribers (SubscribeToShard) read it at once
            data.wake()
        return entry

    def iterator(self, name: str, shard_id: str, kind: str, *, sequence_number: str | None = None,
                 timestamp_ms: int | None = None) -> str:
        stream = self.stream(name, data_op=True)
        shard = self.shard(stream, shard_id)
        data = stream.data[shard_id]
        now = now_ms()
        cutoff = stream.cutoff_ms(now)
        position: Position
        if kind == "TRIM_HORIZON":
            position = data.first_at_or_after(cutoff)
        elif kind == "LATEST":
            position = data.end
        elif kind == "AT_TIMESTAMP":
            assert timestamp_ms is not None
            if timestamp_ms > now:
                raise InvalidArgumentException(
                    "The timestampInMillis parameter cannot be greater than the currentTimestampInMillis. "
                    f"timestampInMillis: {timestamp_ms}, currentTimestampInMillis: {now}")
            position = data.first_at_or_after(max(timestamp_ms, cutoff))
        else:
            assert sequence_number is not None
            position = self._position(stream, shard, sequence_number)
            if kind == "AFTER_SEQUENCE_NUMBER":
                position = (position[0], position[1] + 1)
            position = max(position, (0, 0))
        return iterators.issue(self.key, iterators.Iterator(now, name, stream.created_ms, shard.index, *position))

    def _position(self, stream: Stream, shard: Shard, value: str) -> Position:
        decoded = sequence.decode(value)
        if decoded is None or decoded.created_s != stream.epoch:
            # A number this store issued to another stream, or to an earlier stream of this name (deleted and
            # created again: its epoch differs), gets AWS's own words for it.
            foreign = " because it did not come from this stream" if decoded is not None else ""
            raise InvalidArgumentException(
                f"StartingSequenceNumber {value} used in GetShardIterator on shard {shard.shard_id} in stream "
                f"{stream.name} under account {self.options.account_id} is invalid{foreign}.")
        if decoded.shard_index != shard.index:
            raise InvalidArgumentException(
                f"Invalid StartingSequenceNumber. It encodes {shardids.name(decoded.shard_index)}, while it was used "
                f"in a call to a shard with {shard.shard_id}")
        if decoded.entry < stream.first_entry:  # the shard's StartingSequenceNumber: before its first record
            return BEFORE_FIRST
        return (decoded.entry - stream.first_entry, decoded.index)

    def get_records(self, token: str, limit: int) -> GetResult:
        it = iterators.parse(self.key, token)
        if it is None:
            raise InvalidArgumentException("Invalid ShardIterator.")
        now = now_ms()
        if now - it.issued_ms > iterators.TTL_MS:
            raise ExpiredIteratorException(
                f"Iterator expired. The iterator was created at time {_iso(it.issued_ms)} while right now it is "
                f"{_iso(now)} which is further in the future than the tolerated delay of {iterators.TTL_MS} "
                "milliseconds.")
        shard_id = shardids.name(it.shard_index)
        stream = self.streams.get(it.stream)
        if stream is None or stream.created_ms != it.stream_created_ms or stream.status in ("CREATING",
                                                                                              "DELETING"):
            raise ResourceNotFoundException(f"Shard {shard_id} in stream {it.stream} under account "
                                            f"{self.options.account_id} does not exist")
        shard = self.shard(stream, shard_id)
        limits = stream.limits[shard_id] if self.options.enforce_limits else None
        if limits is not None and not limits.admit_read(time.monotonic()):
            raise ProvisionedThroughputExceededException(
                f"Rate exceeded for shard {shard_id} in stream {stream.name} under account "
                f"{self.options.account_id}.")
        data = stream.data[shard_id]
        result = data.read((it.entry, it.index), limit=limit, max_bytes=10 * 1024 * 1024,
                           cutoff_ms=stream.cutoff_ms(now))
        if limits is not None:
            limits.charge_read(sum(len(r.data) + len(r.partition_key) for r in result.records))
        behind = max(0, now - result.behind_arrival_ms) if result.behind_arrival_ms is not None else 0
        if not shard.is_open and result.at_end:
            children = [ChildShard(s.shard_id, [p for p in (s.parent, s.adjacent_parent) if p], s.start, s.end)
                        for s in stream.shards if shard_id in (s.parent, s.adjacent_parent)]
            return GetResult(result.records, None, behind, children, stream.name, shard_id)
        token = iterators.issue(self.key, iterators.Iterator(now, stream.name, stream.created_ms, shard.index,
                                                             *result.next))
        return GetResult(result.records, token, behind, None, stream.name, shard_id)


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"
