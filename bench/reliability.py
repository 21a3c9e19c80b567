"""The kill -9 soak: every acknowledged record delivered, exactly once, across hundreds of SIGKILLs.

Each cycle starts ``firehose serve`` (timed from the process spawn until ``/readyz`` answers 200),
puts records with boto3 from ``--threads`` threads (no retries; each record carries a unique id and
counts as acknowledged only when its entry in a complete answer says so), SIGKILLs the daemon at a
random moment 0.3-3 s (``--kill-within``) into the load, and starts it again. After a scenario's last cycle the daemon
starts once more and runs until everything is delivered; then every destination is read back, each
record parsed out of every object, and held against the acknowledged ids.

The cycles are split evenly across four scenarios, one daemon configuration each:

* **local**: a local-directory bucket, two delivery streams (plain, and GZIP);
* **s3**: moto's S3 server (started by the benchmark on a free loopback port);
* **slow-and-failing**: S3 behind a proxy that holds every answer 0.3 s (objects are stored well
  before the daemon learns it, so kills land between "written" and "confirmed"), and an HTTP endpoint
  that answers 0.2 s late and 500 to every third request (deliveries are retried until they succeed);
* **kinesis**: the Kinesis sidecar in the daemon, loaded with PutRecords; every shard is read back
  with GetRecords, and a ``KinesisStreamAsSource`` delivery stream copies it to a local directory.

Reported per scenario: cycles, acknowledged records, lost (acknowledged, not delivered: the goal is
0), duplicated records (delivered more than once: the goal is 0, since re-sent batches land under the
same S3 key or carry the same HTTP request id, and Kinesis sources checkpoint in the spool), objects
and byte-identical objects, records delivered without an acknowledgement (allowed: a call cut short
by the kill), restart-to-ready p50/p99/max, and wall time. The section "Kill -9 soak" of ``--out`` is
written (between its markers; the rest of the file is kept).

    python bench/reliability.py [--cycles 200] [--seed 1] [--threads 3] [--out docs/reliability.md]
                                [--scenarios local,s3,slow-and-failing,kinesis]

Exit status 1 if any acknowledged record was lost or duplicated, or the daemon failed to start again.
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.aws import ROLE  # noqa: E402
from tests.support.config import local_stream, write_config  # noqa: E402
from tests.support.daemon import DaemonProcess  # noqa: E402
from tests.support.delivered import list_objects, read_local  # noqa: E402
from tests.support.faultproxy import FaultProxy  # noqa: E402
from tests.support.killcycles import (  # noqa: E402
    Acknowledged,
    Ids,
    Load,
    Putter,
    Tally,
    firehose_putter,
    ids_in,
    kill_cycle,
    kinesis_putter,
    objects_repeated,
)
from tests.support.kinesis_source import kinesis_settings, source_stream  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.receivers.http_endpoint import Behaviour, HttpEndpointReceiver  # noqa: E402
from tests.support.servers import MotoServer  # noqa: E402
from tests.support.streams import read_all  # noqa: E402
from tests.support.waiting import wait_until  # noqa: E402

SCENARIOS = ("local", "s3", "slow-and-failing", "kinesis")
BEGIN, END = "<!-- kill-9-soak:begin -->", "<!-- kill-9-soak:end -->"
DRAIN_TIMEOUT = 600.0
#: Restart-to-ready goal, p99 (design: at most 5 s, with a full spool).
READY_GOAL_S = 5.0


@dataclass
class Delivered:
    """What one target holds after the drain: record ids (with multiplicity) and its objects."""

    ids: Counter[int]
    objects: int
    identical_objects: int
    #: HTTP endpoint only: requests answered 200 under a request id that had been answered 200 before.
    resent: int = 0


@dataclass(frozen=True)
class Where:
    """A place the records of a load target are read back from, and what it must hold."""

    label: str
    read: Callable[[], Delivered]
    #: "destination": every acknowledged record exactly once, once delivered (the drain waits for it);
    #: "store": the same, written before the acknowledgement (the Kinesis shards: nothing to wait for);
    #: "errors": the error output, which must stay empty.
    role: str = "destination"


@dataclass
class Setup:
    """A scenario's daemon configuration and how to load and read it back."""

    config: dict[str, Any]
    streams: list[dict[str, Any]]
    #: Load target (delivery or Kinesis stream) -> where its records are read back, by label.
    readers: dict[str, list[Where]]
    putter: Callable[[DaemonProcess], Putter]
    cleanup: list[Callable[[], None]] = field(default_factory=list)


@dataclass
class Outcome:
    name: str
    cycles: int = 0
    ready: list[float] = field(default_factory=list)
    tallies: dict[str, Tally] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    delivered: dict[str, Delivered] = field(default_factory=dict)
    failed_calls: int = 0
    restart_failure: str | None = None
    load_seconds: float = 0.0
    drain_seconds: float = 0.0
    wall_seconds: float = 0.0

    def acknowledged(self) -> int:
        """Acknowledged records (each counted once, though a Kinesis record is looked for in two places)."""
        return sum(t.acknowledged for k, t in self.tallies.items() if self.roles[k] == "destination")

    def lost(self) -> int:
        return sum(len(t.lost) for t in self.tallies.values())

    def duplicated(self) -> int:
        return sum(t.duplicated for t in self.tallies.values())


# -- reading back ---------------------------------------------------------------------------


def local_reader(root: Path, prefix: str = "") -> Callable[[], Delivered]:
    def read() -> Delivered:
        objects = {k: v for k, v in read_local(root).items() if k.startswith(prefix)} if root.exists() else {}
        return _objects(objects)
    return read


def s3_reader(moto: MotoServer, bucket: str) -> Callable[[], Delivered]:
    def read() -> Delivered:
        s3 = moto.client()
        return _objects({k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in list_objects(s3, bucket)})
    return read


def _objects(objects: dict[str, bytes]) -> Delivered:
    ids: Counter[int] = Counter()
    for body in objects.values():
        ids.update(ids_in(gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body))
    return Delivered(ids, len(objects), objects_repeated(objects.values()))


def http_reader(receiver: HttpEndpointReceiver) -> Callable[[], Delivered]:
    """What the endpoint took in, each request id once (the protocol's idempotency key)."""
    def read() -> Delivered:
        ok = [r for r in receiver.requests if r.status == 200]
        distinct = {r.request_id: r for r in ok}
        ids: Counter[int] = Counter(i for r in distinct.values() for data in r.records for i in ids_in(data))
        bodies = [b"".join(r.records) for r in distinct.values()]
        return Delivered(ids, len(distinct), objects_repeated(bodies), resent=len(ok) - len(distinct))
    return read


def shards_reader(endpoint: str, stream: str) -> Callable[[], Delivered]:
    """Every record in every shard of a Kinesis stream, read with boto3."""
    import boto3
    from botocore.config import Config as BotoConfig

    from tests.support.aws import CREDS

    def read() -> Delivered:
        client = boto3.client("kinesis", endpoint_url=endpoint, config=BotoConfig(retries={"max_attempts": 5}),
                              **CREDS)
        records = read_all(client, stream)
        ids: Counter[int] = Counter(i for r in records for i in ids_in(r["Data"]))
        return Delivered(ids, len(records), 0)
    return read


# -- the scenarios ------------------------------------------------------------------------------


def base_settings(workdir: Path) -> dict[str, Any]:
    return {"state_dir": str(workdir / "state"), "log_level": "WARNING"}


def s3_settings(endpoint: str) -> dict[str, Any]:
    return {"s3": {"endpoint_url": endpoint, "region": "us-east-1", "access_key_id": "testing",
                   "secret_access_key": "testing"}}


def setup_local(workdir: Path) -> Setup:
    out = workdir / "out"
    gz = local_stream("soak-local-gzip", "local", size_mb=1, interval=1, CompressionFormat="GZIP",
                      Prefix="gzip/", ErrorOutputPrefix="errors-gzip/")
    plain = local_stream("soak-local", "local", size_mb=1, interval=1, Prefix="plain/",
                         ErrorOutputPrefix="errors-plain/")
    return Setup({**base_settings(workdir), "buckets": {"local": {"directory": str(out)}}}, [plain, gz],
                 {"soak-local": [Where("local directory", local_reader(out, "plain/")),
                                 Where("error output", local_reader(out, "errors-plain/"), "errors")],
                  "soak-local-gzip": [Where("local directory, GZIP", local_reader(out, "gzip/")),
                                      Where("error output", local_reader(out, "errors-gzip/"), "errors")]},
                 lambda d: firehose_putter(d.endpoint))


def setup_s3(workdir: Path) -> Setup:
    moto = MotoServer().start()
    moto.client().create_bucket(Bucket="soak")
    stream = local_stream("soak-s3", "soak", size_mb=1, interval=1, ErrorOutputPrefix="errors/")
    return Setup({**base_settings(workdir), **s3_settings(moto.endpoint)}, [stream],
                 {"soak-s3": [Where("S3 (moto)", s3_reader(moto, "soak"))]},
                 lambda d: firehose_putter(d.endpoint), [moto.stop])


def setup_slow_and_failing(workdir: Path) -> Setup:
    moto = MotoServer().start()
    moto.client().create_bucket(Bucket="slow")
    proxy = FaultProxy(moto.port, response_delay=0.3)
    receiver = HttpEndpointReceiver()
    receiver.behaviour = Behaviour(status=500, fail_every=3, delay=0.2)
    receiver.__enter__()
    backup = workdir / "backup"
    slow = local_stream("soak-slow", "slow", size_mb=1, interval=1, ErrorOutputPrefix="errors/")
    failing = {"DeliveryStreamName": "soak-failing", "HttpEndpointDestinationConfiguration": {
        "EndpointConfiguration": {"Url": f"{receiver.url}/ingest", "Name": "failing"},
        "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 1},
        "RetryOptions": {"DurationInSeconds": 7200},
        "S3Configuration": {"RoleARN": ROLE, "BucketARN": "arn:aws:s3:::backup"}}}
    settings = {**base_settings(workdir), **s3_settings(proxy.endpoint),
                "buckets": {"backup": {"directory": str(backup)}}}
    return Setup(settings, [slow, failing],
                 {"soak-slow": [Where("S3 (moto), answers 0.3 s late", s3_reader(moto, "slow"))],
                  "soak-failing": [Where("HTTP endpoint, 0.2 s late, 500 to every 3rd request", http_reader(receiver)),
                                   Where("error output", local_reader(backup), "errors")]},
                 lambda d: firehose_putter(d.endpoint), [receiver.stop, proxy.close, moto.stop])


def setup_kinesis(workdir: Path) -> Setup:
    port = free_port()
    out = workdir / "out"
    endpoint = f"http://127.0.0.1:{port}"
    settings = {**base_settings(workdir), "buckets": {"local": {"directory": str(out)}},
                "kinesis": kinesis_settings(port, ("soak", 2))}
    return Setup(settings, [source_stream("soak-kinesis", "soak", interval=1)],
                 {"soak": [Where("Kinesis shards (GetRecords)", shards_reader(endpoint, "soak"), "store"),
                           Where("delivery stream reading them, local directory", local_reader(out, "soak-kinesis/")),
                           Where("error output", local_reader(out, "errors-soak-kinesis/"), "errors")]},
                 lambda d: kinesis_putter(endpoint))


SETUPS: dict[str, Callable[[Path], Setup]] = {
    "local": setup_local, "s3": setup_s3, "slow-and-failing": setup_slow_and_failing, "kinesis": setup_kinesis}


# -- running a scenario ---------------------------------------------------------------------------


def run_scenario(name: str, cycles: int, workdir: Path, rng: random.Random, ids: Ids,
                 args: argparse.Namespace) -> Outcome:
    started = time.monotonic()
    outcome = Outcome(name)
    workdir.mkdir(parents=True)
    setup = SETUPS[name](workdir)
    try:
        config = write_config(workdir / "firehose.yaml", setup.config, setup.streams)
        daemon = DaemonProcess(config, free_port(), workdir / "daemon.log")
        putters = [setup.putter(daemon) for _ in range(args.threads)]
        targets = list(setup.readers)
        acked = Acknowledged()

        def loads() -> list[Load]:
            return [Load(p, targets, ids, acked, seed=rng.randrange(2**32)) for p in putters]

        try:
            for _ in range(cycles):
                outcome.ready.append(kill_cycle(daemon, loads, rng, (0.3, args.kill_within)))
                outcome.cycles += 1
            load_end = time.monotonic()
            outcome.load_seconds = load_end - started
            daemon.start()
            outcome.ready.append(daemon.ready_seconds)
        except AssertionError as exc:  # the daemon did not come back
            outcome.restart_failure = str(exc)
            daemon.stop()
            return outcome
        outcome.drain_seconds = drain(daemon, setup, acked)
        outcome.failed_calls = acked.failed_calls
        for target, places in setup.readers.items():  # while the daemon runs: the Kinesis shards are in it
            for where in places:
                key = f"{target}: {where.label}"
                got = outcome.delivered[key] = where.read()
                outcome.roles[key] = where.role
                outcome.tallies[key] = Tally.of(acked.ids.get(target, []) if where.role != "errors" else [], got.ids)
        code = daemon.terminate()
        if code != 0:
            outcome.restart_failure = f"the daemon exited with {code} on SIGTERM after the drain"
        return outcome
    finally:
        for stop in setup.cleanup:
            stop()
        outcome.wall_seconds = time.monotonic() - started


def drain(daemon: DaemonProcess, setup: Setup, acked: Acknowledged) -> float:
    """Until every delivery stream is idle and every acknowledged record is where it belongs (or
    DRAIN_TIMEOUT passed: what is missing then is reported as lost). Seconds it took."""
    t0 = time.monotonic()
    names = [s["DeliveryStreamName"] for s in setup.streams]

    def done() -> bool:
        if not all(daemon.idle(n) for n in names):
            return False
        for target, places in setup.readers.items():
            wanted = set(acked.ids.get(target, []))
            for where in places:
                if where.role == "destination" and not wanted <= set(where.read().ids):
                    return False
        return True

    try:
        wait_until(done, timeout=DRAIN_TIMEOUT, interval=1.0)
    except AssertionError:
        print(f"not everything was delivered within {DRAIN_TIMEOUT:.0f} s", flush=True)
    return time.monotonic() - t0


# -- report ---------------------------------------------------------------------------------------


def verdict(met: bool) -> str:
    return "met" if met else "NOT MET"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def section(outcomes: list[Outcome], command: str, wall: float, args: argparse.Namespace) -> str:
    ready = [r for o in outcomes for r in o.ready]
    cycles = sum(o.cycles for o in outcomes)
    acked = sum(o.acknowledged() for o in outcomes)
    lost = sum(o.lost() for o in outcomes)
    dup = sum(o.duplicated() for o in outcomes)
    failures = [o for o in outcomes if o.restart_failure]
    lines = [
        BEGIN,
        "## Kill -9 soak",
        "",
        "Written by `bench/reliability.py` (its docstring describes the method); run again to refresh it:",
        "",
        f"    {command}",
        "",
        f"Run of {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, Linux {platform.release()}, loopback only; {args.threads} boto3 load "
        f"threads, batches of 50 records of 20-320 bytes, no client retries; each SIGKILL 0.3-{args.kill_within:g} s "
        f"into the load; seed {args.seed}.",
        "",
        f"* **Cycles (SIGKILLs under load): {cycles}**, {wall / 60:.1f} min wall time.",
        f"* **Acknowledged records: {acked:,}. Lost: {lost} ({verdict(lost == 0)}: 0). Duplicated: {dup} "
        f"({verdict(dup == 0)}: 0).**",
        f"* **Restart-to-ready** (process spawn until `/readyz` answers 200, polled every 20 ms, "
        f"{len(ready)} starts): p50 {ms(statistics.median(ready)) if ready else '-'}, "
        f"p99 {ms(pct(ready, 0.99))}, max {ms(max(ready)) if ready else '-'} "
        f"({verdict(bool(ready) and pct(ready, 0.99) <= READY_GOAL_S)}: p99 at most {READY_GOAL_S:g} s).",
        f"* Restarts that failed: {len(failures)}.",
        "",
        "Acknowledged/s is the rate over the whole load phase, restarts included; drain is from the last "
        "start until every stream is idle and every acknowledged record is found (checked once a second by "
        "reading everything back, so late by up to one check).",
        "",
        "| Scenario | Cycles | Acknowledged | Acknowledged/s | Calls cut short | Ready p50 / p99 / max "
        "| Load, drain, wall |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for o in outcomes:
        if not o.ready:
            lines.append(f"| {o.name} | {o.cycles} | - | - | - | - | - |")
            continue
        spread = f"{ms(statistics.median(o.ready))} / {ms(pct(o.ready, 0.99))} / {ms(max(o.ready))}"
        rate = o.acknowledged() / o.load_seconds if o.load_seconds else 0.0
        lines.append(f"| {o.name} | {o.cycles} | {o.acknowledged():,} | {rate:,.0f} | {o.failed_calls} | {spread} | "
                     f"{o.load_seconds:.0f} s, {o.drain_seconds:.1f} s, {o.wall_seconds:.0f} s |")
    lines += [
        "",
        "Per destination, after the drain (every record parsed out of every object):",
        "",
        "| Scenario | Where | Acknowledged | Records found | Lost | Duplicated (extra copies) "
        "| Not acknowledged, delivered | Objects | Byte-identical objects |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for o in outcomes:
        for key, t in o.tallies.items():
            d = o.delivered[key]
            objects = f"{d.objects:,}" + (f" ({d.resent} re-sent under a request id already answered)"
                                          if d.resent else "")
            unit = f"{d.objects:,} Kinesis records" if o.roles[key] == "store" else objects
            lines.append(f"| {o.name} | {key} | {t.acknowledged:,} | {sum(d.ids.values()):,} | {len(t.lost)} | "
                         f"{t.duplicated} ({t.extra_copies}) | {t.unacknowledged_delivered:,} | {unit} | "
                         f"{d.identical_objects} |")
    for o in failures:
        lines += ["", f"**{o.name}: the daemon did not start again after cycle {o.cycles}:** `{o.restart_failure}`"]
    lines += [
        "",
        "Why these goals: lost 0 because an acknowledgement means the records are fsynced in the spool (or "
        "the shard); duplicated 0 on these destinations because a batch re-sent after a kill is the same "
        "batch: under the same S3 key (overwritten in place), with the same `X-Amz-Firehose-Request-Id` (which "
        "an endpoint deduplicates on, as the protocol asks: the re-sent requests above are the ones it had "
        "already taken in), and Kinesis read positions saved in the same fsync as the records read. \"Not "
        "acknowledged, delivered\" are records of calls the kill cut short: stored, but the client never heard "
        "so; either outcome is right for such a call, as on AWS. Restart-to-ready is mostly the interpreter "
        "importing the daemon. A kill -9 leaves the page cache intact, so this soak says nothing about fsync: "
        "simulated power loss is its own test.",
        END,
    ]
    return "\n".join(lines) + "\n"


def write_section(path: Path, text: str) -> None:
    """Replace this soak's section of ``path`` (between its markers), keeping everything else."""
    current = path.read_text() if path.exists() else "# Reliability\n"
    if BEGIN in current and END in current:
        head, rest = current.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        updated = head + text + ("\n" + tail if tail else "")
    else:
        updated = current.rstrip("\n") + "\n\n" + text
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(updated)


def split_cycles(total: int, names: list[str]) -> dict[str, int]:
    base, extra = divmod(total, len(names))
    return {n: base + (1 if i < extra else 0) for i, n in enumerate(names)}


def clean_aws_environment() -> None:
    """Nothing here may reach real AWS: test credentials, no endpoint overrides or profiles."""
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"})
    for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_KINESIS",
                "AWS_SESSION_TOKEN"):
        os.environ.pop(var, None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=200, help="SIGKILLs in all, split across the scenarios")
    parser.add_argument("--seed", type=int, default=1, help="seeds kill moments and record padding")
    parser.add_argument("--threads", type=int, default=3, help="boto3 load threads")
    parser.add_argument("--kill-within", type=float, default=3.0,
                        help="each SIGKILL comes 0.3 s to this many seconds into the load")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset of " +
                        ", ".join(SCENARIOS))
    parser.add_argument("--out", default="docs/reliability.md", help="the file whose 'Kill -9 soak' section "
                        "is written; '-' prints it instead")
    args = parser.parse_args()
    names = [n for n in args.scenarios.split(",") if n]
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    clean_aws_environment()
    rng = random.Random(args.seed)
    ids = Ids()
    outcomes = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="firehose-soak-") as tmp:
        for name, cycles in split_cycles(args.cycles, names).items():
            o = run_scenario(name, cycles, Path(tmp) / name, rng, ids, args)
            outcomes.append(o)
            print(f"{name}: {o.cycles} cycles, ready p50 {ms(statistics.median(o.ready)) if o.ready else '-'}, "
                  f"lost {o.lost()}, duplicated {o.duplicated()}, "
                  + ", ".join(f"{k}: {t.acknowledged} acknowledged, {sum(o.delivered[k].ids.values())} found"
                              for k, t in o.tallies.items())
                  + (f"; RESTART FAILED: {o.restart_failure}" if o.restart_failure else ""), flush=True)
            for key, t in o.tallies.items():
                if t.lost or t.duplicated:
                    dup = [i for i, n in o.delivered[key].ids.items() if n > 1]
                    print(f"  {key}: lost ids {t.lost[:20]}, duplicated ids {dup[:20]}", flush=True)
            if o.restart_failure:
                log = Path(tmp) / name / "daemon.log"
                print(log.read_text()[-4000:] if log.exists() else "(no log)", flush=True)
    wall = time.monotonic() - started
    command = "python bench/reliability.py " + " ".join(sys.argv[1:])
    text = section(outcomes, command.strip(), wall, args)
    if args.out == "-":
        print(text)
    else:
        write_section(Path(args.out), text)
        print(f"wrote the 'Kill -9 soak' section of {args.out}", flush=True)
    bad = sum(o.lost() + o.duplicated() for o in outcomes) or any(o.restart_failure for o in outcomes)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
