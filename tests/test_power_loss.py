"""Simulated power loss: from every on-disk state a power cut may leave, the daemon starts and delivers
every acknowledged record exactly once.

A workload runs against the daemon's own parts (``Daemon``: catalog, spool, ledger, pipelines to a local
directory destination; and a Kinesis ``ShardStore``) under the recording file-system layer
(``tests/support/crashfs.py``), which keeps a trace of every write, fsync, fdatasync, rename, truncate,
unlink, mkdir and directory fsync, with marks where the workload was told "acknowledged". For each crash
point of the trace, every distinct on-disk state the kernel may leave there (unsynced writes dropped,
kept in any subset or torn at 512-byte sectors; directory entry changes not yet made durable by a
directory fsync lost or not) is materialized in a fresh directory, and the daemon starts on it as it
does after a reboot, delivers everything and stops. Then:

* it started (no exception) and drained (every pipeline idle);
* every record acknowledged before the crash point is in the destination exactly once (objects written
  before the crash that survived count, objects written after the restart too);
* every delivered record is one the workload appended (no torn bytes delivered as records), and no
  unacknowledged record is delivered twice;
* every delivery stream whose create (or update) returned is in the catalog, at least at that version;
* the second delivery stream is encrypted (its spool's entries sealed, its data keys in ``keys.json``):
  the same holds for it, and its records are never on disk in clear text;
* every Kinesis record whose put returned is readable exactly once, under its sequence number, and
  nothing else is.

A failure prints the crash point, which unsynced ops the state kept, dropped or tore, and the trace.
"""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
import ssl
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

import firehose.daemon
import firehose.spool.ledger
from firehose.catalog import DESTINATION_ID
from firehose.daemon import Daemon
from firehose.definitions import DeliveryStreamDefinition
from firehose.settings import Config, Settings
from firehose.storage.log import SegmentLog
from firehose.streams.store import ShardStore, StoreOptions
from tests.support.crashfs import CrashState, Image, PowerCut, Recorder, scratch_dir, show_trace

STREAMS = ("orders", "clicks")
#: Created with server-side encryption: its spool is sealed under a key of this keyring.
ENCRYPTED = "clicks"
KEK_VARIABLE = "FIREHOSE_KEK_POWER"
KINESIS_STREAM = "events"
ARRIVAL_MS = 1_700_000_000_000
#: Small segments and an early ledger compaction: rotation, release and compaction happen in a short trace.
SEGMENT_BYTES = 2048
LEDGER_SEGMENT_BYTES = 1024
LEDGER_COMPACT_AT = 3072


def settings(root: Path) -> Settings:
    return Settings.model_validate({
        "state_dir": str(root / "state"),
        "buckets": {"local": {"directory": str(root / "out")}},
        "spool": {"segment_bytes": SEGMENT_BYTES},
        "delivery": {"backoff_base_seconds": 0.01, "backoff_max_seconds": 0.05},
    })


def definition(name: str) -> DeliveryStreamDefinition:
    sse = {"DeliveryStreamEncryptionConfigurationInput": {"KeyType": "AWS_OWNED_CMK"}} if name == ENCRYPTED else {}
    return DeliveryStreamDefinition.model_validate({"DeliveryStreamName": name, "ExtendedS3DestinationConfiguration": {
        "RoleARN": "arn:aws:iam::123456789012:role/firehose", "BucketARN": "arn:aws:s3:::local",
        "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0}}, **sse})


_TLS = ssl.create_default_context()


@pytest.fixture(autouse=True)
def _cheap_daemon(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each start of the daemon builds an HTTP client with a TLS context (20 ms: most of a start); the local
    destination never uses it, so every start shares one context. The ledger's segments and compaction
    threshold are scaled down so that a short trace rotates and compacts it."""
    monkeypatch.setattr(firehose.daemon, "_http_client", lambda _http: httpx.AsyncClient(verify=_TLS))
    monkeypatch.setenv(KEK_VARIABLE, "a2" * 32)  # the keyring's one key (hex), for the encrypted stream
    monkeypatch.setattr(firehose.spool.ledger, "_COMPACT_AT_BYTES", LEDGER_COMPACT_AT)
    monkeypatch.setattr(firehose.spool.ledger, "SegmentLog",
                        lambda directory, segment_bytes, **kw: SegmentLog(directory, segment_bytes=LEDGER_SEGMENT_BYTES,
                                                                          **kw))
    logger = logging.getLogger("firehose")
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.ERROR)  # torn tails cut after a crash are expected here, thousands of times
    logger.propagate = False
    yield
    logger.setLevel(level)
    logger.propagate = propagate


# -- the workload ---------------------------------------------------------------------


def record(stream: str, n: int, j: int, rng: random.Random) -> bytes:
    """A record that names itself; some span several sectors so that tears cut through them."""
    size = rng.choice((20, 90, 300, 700, 1300))
    head = f"{stream}:{n}:{j}:".encode()
    return head + b"x" * max(0, size - len(head)) + b"\n"


async def wait_idle(daemon: Daemon, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.idle() for p in daemon.pipelines.values()):
        if time.monotonic() > deadline:
            raise TimeoutError("delivery did not drain")
        await asyncio.sleep(0.001)


async def workload(root: Path, rec: Recorder, appends: int, seed: int) -> None:
    """Two delivery streams taking appends and delivering as they go, an update of one, and Kinesis puts."""
    rng = random.Random(seed)
    daemon = Daemon(Config(settings=settings(root), streams=[], source="power-loss workload"))
    await daemon.start()
    store = ShardStore(root / "kinesis", StoreOptions(segment_bytes=SEGMENT_BYTES))
    for name in STREAMS:
        daemon.catalog.create(definition(name))
        rec.mark(("stream", name, 1))
    store.create_stream(KINESIS_STREAM, 2)
    rec.mark(("kstream", KINESIS_STREAM))
    spools = {name: daemon.spool.open_stream(daemon.catalog.get(name).spool_key) for name in STREAMS}
    assert spools[ENCRYPTED].encryption.sealing and not spools[STREAMS[0]].encryption.sealing
    for n in range(appends):
        name = STREAMS[rng.random() < 0.4]
        records = [record(name, n, j, rng) for j in range(rng.randint(1, 3))]
        rec.mark(("issue", records))
        await daemon.spool.append(spools[name], records, ARRIVAL_MS, sum(map(len, records)))
        rec.mark(("ack", records))
        if n % 4 == 1:
            datas = [f"k:{n}:{j}".encode() * rng.randint(1, 40) for j in range(2)]
            rec.mark(("kissue", datas))
            results = await store.put(KINESIS_STREAM, [(f"pk{n}{j}".encode(), d, rng.getrandbits(128))
                                                       for j, d in enumerate(datas)])
            rec.mark(("kack", [(r.shard_id, r.sequence_number, d) for r, d in zip(results, datas, strict=True)]))
        if n == appends // 2:
            state = daemon.catalog.get(STREAMS[0])
            daemon.catalog.update_destination(STREAMS[0], str(state.version_id), DESTINATION_ID,
                                              "ExtendedS3DestinationUpdate", {"Prefix": "v2/"})
            rec.mark(("stream", STREAMS[0], state.version_id))
        if rng.random() < 0.3:
            await wait_idle(daemon, 10)  # delivery catches up: seals, objects, dones and releases in the trace
            if rng.random() < 0.5:
                # As a refused put does: every stream gives back its delivered active segment too (the
                # log carries its numbering, and a processed log its last entry, into a new segment).
                daemon.spool.reclaim()
        else:
            await asyncio.sleep(0)
    await wait_idle(daemon, 10)
    await daemon.shutdown()
    await store.close()


def record_trace(appends: int, seed: int) -> PowerCut:
    root = Path(tempfile.mkdtemp(prefix="power-loss-", dir=scratch_dir()))
    try:
        rec = Recorder(root)
        with rec.recording():
            asyncio.run(workload(root, rec, appends, seed))
        return PowerCut(rec.ops)
    finally:
        shutil.rmtree(root, ignore_errors=True)


# -- recovery and what it must show ----------------------------------------------------------


@dataclass
class Outcome:
    error: str | None = None
    delivered: Counter[bytes] = field(default_factory=Counter)
    versions: dict[str, int] = field(default_factory=dict)
    kinesis: list[tuple[str, str, bytes]] | None = None
    #: What the daemon logged at ERROR while recovering (reported, not an invariant).
    logged: list[str] = field(default_factory=list)
    #: Spool files of the encrypted stream that hold one of its records in clear text.
    clear_text: list[str] = field(default_factory=list)


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


async def _recover(root: Path, out: Outcome) -> Outcome:
    daemon = Daemon(Config(settings=settings(root), streams=[], source="power-loss recovery"))
    try:
        await daemon.start()
        await wait_idle(daemon, 10)
        out.versions = {s.name: s.version_id for s in daemon.catalog.all()}
        if daemon.broken:
            out.error = f"streams cannot run: {daemon.broken}"
    finally:
        await daemon.shutdown()
    store = ShardStore(root / "kinesis", StoreOptions(segment_bytes=SEGMENT_BYTES))
    try:
        if KINESIS_STREAM in store.streams:
            out.kinesis = []
            for shard in store.streams[KINESIS_STREAM].shards:
                token: str | None = store.iterator(KINESIS_STREAM, shard.shard_id, "TRIM_HORIZON")
                while token is not None:
                    got = store.get_records(token, 10_000)
                    out.kinesis.extend((shard.shard_id, r.sequence_number, r.data) for r in got.records)
                    token = got.next_iterator if got.records else None
    finally:
        await store.close()
    for path in sorted((root / "out").rglob("*")):
        if path.is_file() and not path.name.startswith(".firehose-tmp-"):
            out.delivered.update(path.read_bytes().splitlines(keepends=True))
    return out


def recover(image: Image) -> Outcome:
    """Start the daemon on ``image`` as after a reboot, deliver everything, stop; what it delivered."""
    root = Path(tempfile.mkdtemp(prefix="power-loss-state-", dir=scratch_dir()))
    out = Outcome()
    errors = _Errors()
    logger = logging.getLogger("firehose")
    logger.addHandler(errors)
    try:
        image.write(root)
        out.clear_text = [str(p.relative_to(root)) for p in (root / "state" / "spool").glob(f"{ENCRYPTED}-*/*/*")
                          if p.is_file() and f"{ENCRYPTED}:".encode() in p.read_bytes()]
        return asyncio.run(_recover(root, out))
    except Exception as exc:
        out.error = f"{type(exc).__name__}: {exc}"
        return out
    finally:
        logger.removeHandler(errors)
        out.logged = errors.messages
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Expected:
    """What the workload was told before a crash point."""

    issued: set[bytes] = field(default_factory=set)
    acked: set[bytes] = field(default_factory=set)
    versions: dict[str, int] = field(default_factory=dict)
    kstream: bool = False
    kissued: set[bytes] = field(default_factory=set)
    kacked: list[tuple[str, str, bytes]] = field(default_factory=list)

    def note(self, mark: tuple[Any, ...]) -> None:
        kind = mark[0]
        if kind == "issue":
            self.issued.update(mark[1])
        elif kind == "ack":
            self.acked.update(mark[1])
        elif kind == "stream":
            self.versions[mark[1]] = mark[2]
        elif kind == "kstream":
            self.kstream = True
        elif kind == "kissue":
            self.kissued.update(mark[1])
        elif kind == "kack":
            self.kacked.extend(mark[1])


def violations(out: Outcome, want: Expected) -> list[str]:
    if out.error is not None:
        return [f"the daemon did not recover: {out.error}"]
    found = [f"a record of the encrypted stream is in clear text in {path}" for path in out.clear_text]
    for r in sorted(want.acked):
        if out.delivered[r] != 1:
            found.append(f"acknowledged record {r[:24]!r}... delivered {out.delivered[r]} times")
    for r, count in sorted(out.delivered.items()):
        if r not in want.issued:
            found.append(f"delivered {count}x a record never appended: {r[:40]!r}")
        elif count > 1 and r not in want.acked:
            found.append(f"unacknowledged record {r[:24]!r}... delivered {count} times")
    for name, version in want.versions.items():
        if out.versions.get(name, 0) < version:
            found.append(f"delivery stream {name} at version {out.versions.get(name)} after recovery, "
                         f"version {version} was acknowledged")
    if want.kstream and out.kinesis is None:
        found.append(f"Kinesis stream {KINESIS_STREAM} lost")
    if out.kinesis is not None:
        got = Counter(out.kinesis)
        for item in want.kacked:
            if got[item] != 1:
                found.append(f"acknowledged Kinesis record {item[:2]} read {got[item]} times")
        seqs = Counter((shard, seq) for shard, seq, _ in out.kinesis)
        for shard, seq, data in out.kinesis:
            if data not in want.kissued or seqs[(shard, seq)] > 1:
                found.append(f"Kinesis read a record never put, or twice: {shard} {seq} {data[:20]!r}")
    return found


# -- exploring ----------------------------------------------------------------------------------


@dataclass
class Report:
    crash_points: int = 0
    states: int = 0
    images: int = 0
    failures: list[str] = field(default_factory=list)
    #: ERROR lines logged while recovering, by message: how many distinct images logged each.
    logged: Counter[str] = field(default_factory=Counter)


def explore(cut: PowerCut, *, extra: int, seed: int, max_states: int | None = None,
            printed: int = 10) -> Report:
    """Check every crash point's states (``extra`` random ones beyond the systematic ones per point)."""
    rng = random.Random(seed)
    report = Report()
    outcomes: dict[str, Outcome] = {}
    want = Expected()
    ops = cut.ops
    for k in range(len(ops) + 1):
        if k and ops[k - 1].kind == "mark":
            want.note(ops[k - 1].mark)
        report.crash_points += 1
        for state, image in cut.states(k, rng, extra):
            digest = image.digest()
            out = outcomes.get(digest)
            if out is None:
                out = outcomes[digest] = recover(image)
                report.images += 1
                report.logged.update(set(out.logged))
            report.states += 1
            found = violations(out, want)
            if found:
                report.failures.append(_failure(cut, state, found, full=len(report.failures) < printed))
            if max_states is not None and report.states >= max_states:
                return report
    return report


def _failure(cut: PowerCut, state: CrashState, found: list[str], *, full: bool) -> str:
    text = "\n".join(["INVARIANT FAILURE", *found[:8], *(["..."] if len(found) > 8 else []),
                      state.describe(cut.ops)])
    if full:
        text += "\noperation trace:\n" + show_trace(cut.ops, state.crash_at)
    else:
        text += "\noperation trace (the last 40 ops):\n" + show_trace(cut.ops, state.crash_at, around=40)
    return text


def run(appends: int, seed: int, extra: int, minimum: int) -> Report:
    cut = record_trace(appends, seed)
    started = time.monotonic()
    report = explore(cut, extra=extra, seed=seed)
    print(f"\nsimulated power loss: {len(cut.ops)} ops recorded, {report.crash_points} crash points, "
          f"{report.states} crash states, {report.images} distinct disk images recovered, "
          f"{len(report.failures)} invariant failures, {time.monotonic() - started:.0f} s")
    for message, images in report.logged.most_common():
        print(f"  logged at ERROR while recovering {images} of the images: {message}")
    for text in report.failures:
        print("\n" + text)
    assert not report.failures, f"{len(report.failures)} crash states break an invariant (printed above)"
    assert report.states >= minimum, f"only {report.states} crash states explored"
    return report


def test_every_power_cut_state_recovers_and_delivers_each_acknowledged_record_once() -> None:
    run(appends=16, seed=1, extra=1, minimum=2000)


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_power_loss_soak_100k_states() -> None:
    run(appends=200, seed=7, extra=40, minimum=100_000)
