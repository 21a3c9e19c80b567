"""kill -9 under load with every acknowledged record accounted for: the load, the ledger of what was
acknowledged, and the oracle that holds deliveries against it.

Every record carries a unique id (``{"id": N, "pad": "..."}`` and a newline), numbered by one shared
``Ids`` so that ids never repeat across threads, cycles or scenarios. A load thread sends batches with
boto3 and no retries (a retry of a call whose answer was lost would put the same records twice, which
would be the client's duplicate, not the daemon's); a record counts as acknowledged only when the call
answered in full and its entry carries a ``RecordId`` (Firehose) or ``SequenceNumber`` (Kinesis). A call
cut short by a kill acknowledges nothing: its records may or may not be delivered, and either is right.

``Tally`` is the oracle: from the acknowledged ids and the ids found at the destination it counts what
was lost (acknowledged, never delivered: must be 0), duplicated (delivered more than once) and delivered
without an acknowledgement (allowed). ``kill_cycle`` is one cycle of the soak: start the process, time
it to ready, load it, kill -9 it at a random moment, wait for the load to stop.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import boto3
from botocore.config import Config as BotoConfig

from tests.support.aws import CREDS

#: No retries, short timeouts: a call either answers in full or acknowledges nothing.
NO_RETRIES: dict[str, Any] = {"retries": {"total_max_attempts": 1}, "connect_timeout": 1, "read_timeout": 10}


class Ids:
    """Unique record ids, handed out in blocks, safe across threads."""

    def __init__(self, start: int = 0) -> None:
        self._next = itertools.count(start)
        self._lock = threading.Lock()

    def take(self, n: int) -> list[int]:
        with self._lock:
            return [next(self._next) for _ in range(n)]


def record(i: int, rng: random.Random) -> bytes:
    """Record ``i``: a JSON line of 20 to 320 bytes."""
    return json.dumps({"id": i, "pad": "x" * rng.randint(0, 300)}).encode() + b"\n"


def ids_in(body: bytes) -> list[int]:
    """The record ids in an object (or a Kinesis record's data): one JSON line per record."""
    return [json.loads(line)["id"] for line in body.splitlines() if line.strip()]


class Acknowledged:
    """The ids acknowledged so far, per target (a delivery stream or a Kinesis stream)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ids: dict[str, list[int]] = {}
        self.calls = 0
        self.failed_calls = 0

    def add(self, target: str, ids: Iterable[int]) -> None:
        with self._lock:
            self.ids.setdefault(target, []).extend(ids)
            self.calls += 1

    def failed(self) -> None:
        with self._lock:
            self.failed_calls += 1

    def count(self) -> int:
        with self._lock:
            return sum(map(len, self.ids.values()))


class Putter(Protocol):
    def __call__(self, target: str, ids: list[int], rng: random.Random) -> list[bool]:
        """Send these records to ``target``; which were acknowledged (raises if the call failed)."""


def firehose_putter(endpoint: str) -> Putter:
    """PutRecordBatch through boto3: acknowledged entries carry a RecordId."""
    client = boto3.client("firehose", endpoint_url=endpoint, config=BotoConfig(**NO_RETRIES), **CREDS)

    def put(target: str, ids: list[int], rng: random.Random) -> list[bool]:
        resp = client.put_record_batch(DeliveryStreamName=target, Records=[{"Data": record(i, rng)} for i in ids])
        entries = resp.get("RequestResponses")
        if not isinstance(entries, list) or len(entries) != len(ids):
            raise RuntimeError("an incomplete answer")  # killed mid-response: nothing counts as acknowledged
        return ["RecordId" in e for e in entries]

    return put


def kinesis_putter(endpoint: str) -> Putter:
    """PutRecords through boto3: acknowledged entries carry a SequenceNumber."""
    client = boto3.client("kinesis", endpoint_url=endpoint, config=BotoConfig(**NO_RETRIES), **CREDS)

    def put(target: str, ids: list[int], rng: random.Random) -> list[bool]:
        resp = client.put_records(StreamName=target, Records=[{"Data": record(i, rng), "PartitionKey": str(i)}
                                                              for i in ids])
        entries = resp.get("Records")
        if not isinstance(entries, list) or len(entries) != len(ids):
            raise RuntimeError("an incomplete answer")
        return ["SequenceNumber" in e for e in entries]

    return put


class Load(threading.Thread):
    """Sends batches of ``batch`` new records to each target in turn until stopped or a call fails (the
    process died under it); records what was acknowledged."""

    def __init__(self, put: Putter, targets: list[str], ids: Ids, acked: Acknowledged, seed: int,
                 batch: int = 50) -> None:
        super().__init__(daemon=True)
        self.put, self.targets, self.ids, self.acked, self.batch = put, targets, ids, acked, batch
        self.rng = random.Random(seed)
        self.stopped = threading.Event()

    def run(self) -> None:
        for target in itertools.cycle(self.targets):
            if self.stopped.is_set():
                return
            ids = self.ids.take(self.batch)
            try:
                answered = self.put(target, ids, self.rng)
            except Exception:
                self.acked.failed()
                return  # the process died under us: these may or may not have been stored
            self.acked.add(target, (i for i, ok in zip(ids, answered, strict=True) if ok))


class Restartable(Protocol):
    """A child process the soak kills and starts again (``DaemonProcess``)."""

    ready_seconds: float

    def start(self, timeout: float = 20) -> Any: ...

    def kill(self) -> None: ...


def kill_cycle(process: Restartable, loads: Callable[[], list[Load]], rng: random.Random,
               kill_after: tuple[float, float] = (0.3, 3.0)) -> float:
    """Start ``process``, load it, SIGKILL it a random ``kill_after`` seconds into the load, and wait for
    the load to stop. Returns its restart-to-ready seconds (process start until ready)."""
    process.start()
    ready = process.ready_seconds
    running = loads()
    for load in running:
        load.start()
    time.sleep(rng.uniform(*kill_after))
    process.kill()
    for load in running:
        load.stopped.set()
    for load in running:
        load.join(30)
    return ready


@dataclass
class Tally:
    """Acknowledged ids held against delivered ones: the soak's oracle."""

    acknowledged: int = 0
    delivered: int = 0
    lost: list[int] = field(default_factory=list)
    #: Records delivered more than once, and the extra copies of them.
    duplicated: int = 0
    extra_copies: int = 0
    unacknowledged_delivered: int = 0

    @classmethod
    def of(cls, acked: Iterable[int], delivered: Counter[int]) -> Tally:
        acked_set = set(acked)
        dup = {i: n for i, n in delivered.items() if n > 1}
        return cls(acknowledged=len(acked_set), delivered=len(delivered),
                   lost=sorted(i for i in acked_set if delivered[i] == 0),
                   duplicated=len(dup), extra_copies=sum(n - 1 for n in dup.values()),
                   unacknowledged_delivered=sum(1 for i in delivered if i not in acked_set))


def objects_repeated(bodies: Iterable[bytes]) -> int:
    """How many objects are byte-identical copies of another one."""
    return sum(n - 1 for n in Counter(bodies).values() if n > 1)
