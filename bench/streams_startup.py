"""Kinesis sidecar start-up on a large store: time to the first answers, and memory.

1. **Generate** a store of ``--gib`` GiB in ``--shards`` shards of one stream, through the store's own
   code (``ShardStore``, ``ShardData``, the shard entry encoding and the segment log): entries of
   ``--records-per-entry`` 1 KiB records (as one PutRecords call routed to a shard leaves them), their
   arrival times within the last hour, written by a child process that then exits without closing
   anything (what a ``kill -9`` leaves). The free space of the target file system is checked first
   (the store plus 10 %, and 1 GiB to spare).
2. **Measure** ``firehose streams serve`` starting on it, for each code tree given with ``--code``
   (default: this one; pass an older checkout to compare, e.g. ``--code . --code ../before``; the
   store is only read, and its index files and ``streams.json`` are put back before every start, so
   every run sees the same store): the time from starting the process to the first successful
   ``ListShards`` answer and to the first ``GetRecords`` answers with a record (``TRIM_HORIZON`` on
   the last shard, then ``AT_TIMESTAMP`` in the middle of the data), and the server's resident memory
   at that point (``VmRSS``) and its peak (``VmHWM``). The states:

   * ``empty``: an empty state directory (what starting the interpreter and the server costs);
   * ``warm``: the store as a stopped sidecar leaves it, its files in the page cache (a restart);
   * ``cold``: the same after dropping the store's files from the page cache (``posix_fadvise
     DONTNEED`` on each file: no privileges needed), as after a reboot;
   * ``cold, after kill -9``: the store as the generating process left it (each active segment's
     index up to a quarter segment behind);
   * ``cold, no active index``: the worst a ``kill -9`` can leave (no active segment indexed yet, so
     every active segment is scanned).

    python bench/streams_startup.py [--gib 0.5] [--shards 20] [--code DIR ...] [--dir DIR] [--keep]
    python bench/streams_startup.py --gib 10 --shards 200          # the goal's store

Goal (exit status 1 if missed by the first ``--code``): the first ``GetRecords`` answer within 2 s of
starting, warm and cold, with resident memory that does not grow with the store (compare ``--gib``
values). JSON results go to ``bench/results/streams-startup-<timestamp>.json``; the store is deleted
afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from ingest import free_port  # noqa: E402
from streams import ApiError, RawClient  # noqa: E402

STREAM = "startup"
RECORD = bytes(range(256)) * 4
GOAL_S = 2.0
RESULTS = REPO / "bench" / "results"


# -- the store ---------------------------------------------------------------------------------------


def check_space(directory: Path, size: int) -> None:
    free = shutil.disk_usage(directory).free
    need = int(size * 1.1) + (1 << 30)
    if free < need:
        print(f"not enough free space in {directory}: {free / 2**30:.1f} GiB free, {need / 2**30:.1f} GiB "
              "needed", file=sys.stderr)
        raise SystemExit(2)


def generate(state_dir: Path, gib: float, shards: int, records_per_entry: int) -> dict[str, Any]:
    """Write the store through ShardStore/ShardData (the real format), then end the process without
    closing anything: what a ``kill -9`` of a sidecar that took these puts leaves (run in a child)."""
    from firehose.clock import now_ms
    from firehose.streams.shard import encode_entry
    from firehose.streams.store import ShardStore

    started = time.monotonic()
    store = ShardStore(state_dir)
    store.create_stream(STREAM, shards)
    stream = store.streams[STREAM]
    entry_bytes = records_per_entry * (len(RECORD) + 2)
    per_shard = max(1, int(gib * 2**30 / shards / entry_bytes))
    first_ms = now_ms() - 3_600_000
    keys = [f"{i:02d}".encode() for i in range(records_per_entry)]
    datas = [RECORD] * records_per_entry
    for shard in stream.shards:
        data = stream.data[shard.shard_id]
        for start in range(0, per_shard, 2):  # 1 MiB a call: the active index is up to 1 MiB behind
            count = min(2, per_shard - start)
            arrivals = [first_ms + (start + i) * 3_000_000 // per_shard for i in range(count)]
            seq = data.log.write([encode_entry(a, keys, datas) for a in arrivals])
            data.log.sync()
            for i, arrival in enumerate(arrivals):
                data.note(seq + i, arrival, records_per_entry)
    size = sum(p.stat().st_size for p in state_dir.rglob("*") if p.is_file())
    segments = len(list(state_dir.rglob("*.seg")))
    return {"bytes": size, "segments": segments, "entries_per_shard": per_shard, "first_ms": first_ms,
            "generate_s": time.monotonic() - started}


def generate_in_child(state_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--generate", str(state_dir), "--gib", str(args.gib),
                          "--shards", str(args.shards), "--records-per-entry", str(args.records_per_entry)],
                         env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, check=True)
    made: dict[str, Any] = json.loads(out.stdout)
    return made


def drop_cache(state_dir: Path) -> None:
    for path in state_dir.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


#: The store's files that differ between the states measured: its index files and streams.json.
Snapshot = dict[Path, bytes]


def snapshot(state_dir: Path) -> Snapshot:
    return {p: p.read_bytes() for p in [*state_dir.rglob("*.idx"), state_dir / "streams.json"]}


def restore(state_dir: Path, snap: Snapshot) -> None:
    """Put the index files and streams.json back as they were (a newer code tree may have added fields
    to streams.json that an older one refuses)."""
    for path in state_dir.rglob("*.idx"):
        if path not in snap:
            path.unlink()
    for path, body in snap.items():
        path.write_bytes(body)


def without_active_indexes(snap: Snapshot) -> Snapshot:
    """The worst a ``kill -9`` can leave: no shard's active segment has an index yet."""
    last: dict[Path, Path] = {}
    for path in snap:
        if path.suffix == ".idx" and (path.parent not in last or path > last[path.parent]):
            last[path.parent] = path
    return {p: b for p, b in snap.items() if p not in last.values()}


# -- a start -----------------------------------------------------------------------------------------


def memory_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def first_answer(client_endpoint: str, proc: subprocess.Popen[bytes], log: Path, timeout: float,
                 operation: str, payload: dict[str, Any]) -> None:
    """Poll ``operation`` until it succeeds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        client = RawClient(client_endpoint)
        try:
            client.call(operation, payload)
            return
        except (OSError, http.client.HTTPException, ApiError):
            time.sleep(0.005)
        finally:
            client.close()
    raise RuntimeError(f"no {operation} answer within {timeout:.0f} s:\n{log.read_text()[-2000:]}")


def start(code: Path, state_dir: Path, workdir: Path, *, at_ms: int | None, timeout: float = 600) -> dict[str, Any]:
    """Start the server from ``code`` on ``state_dir``; time its first answers; stop it."""
    port = free_port()
    log = workdir / f"server-{port}.log"
    env = {**os.environ, "PYTHONPATH": str(code)}
    began = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "firehose", "streams", "serve", "--host", "127.0.0.1",
                                 "--port", str(port), "--state-dir", str(state_dir)],
                                cwd=code, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        if at_ms is None:  # an empty store: the first answer to anything
            first_answer(endpoint, proc, log, timeout, "ListStreams", {})
        else:
            first_answer(endpoint, proc, log, timeout, "ListShards", {"StreamName": STREAM})
        result: dict[str, Any] = {"list_shards_s": time.monotonic() - began}
        if at_ms is not None:
            client = RawClient(endpoint)
            try:
                shards = client.call("ListShards", {"StreamName": STREAM})["Shards"]
                shard = shards[-1]["ShardId"]
                got = []
                for kind, extra in (("TRIM_HORIZON", {}), ("AT_TIMESTAMP", {"Timestamp": at_ms / 1000})):
                    iterator = client.call("GetShardIterator", {"StreamName": STREAM, "ShardId": shard,
                                                                "ShardIteratorType": kind, **extra})["ShardIterator"]
                    got.append(len(client.call("GetRecords", {"ShardIterator": iterator, "Limit": 1})["Records"]))
                    result[f"get_records_{kind.lower()}_s"] = time.monotonic() - began
                if got != [1, 1]:
                    raise RuntimeError(f"GetRecords answered {got} records, not one each")
            finally:
                client.close()
        result.update(memory_kib(proc.pid))
        return result
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the runs, and the range of the times."""
    out: dict[str, Any] = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    for key in runs[0]:
        if key.endswith("_s"):
            out[key + "_range"] = [min(r[key] for r in runs), max(r[key] for r in runs)]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=0.5)
    parser.add_argument("--shards", type=int, default=20)
    parser.add_argument("--records-per-entry", type=int, default=500)
    parser.add_argument("--code", type=Path, action="append", help="a code tree to start the server from")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the store (default: a temp dir)")
    parser.add_argument("--repeat", type=int, default=1, help="starts per code tree and state (median shown)")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--generate", type=Path, help=argparse.SUPPRESS)  # the child that writes the store
    args = parser.parse_args()
    if args.generate:
        print(json.dumps(generate(args.generate, args.gib, args.shards, args.records_per_entry)), flush=True)
        os._exit(0)  # no close: as a kill -9 leaves the store
    codes = [c.resolve() for c in (args.code or [REPO])]
    base = args.dir or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    check_space(base, int(args.gib * 2**30))
    workdir = Path(tempfile.mkdtemp(prefix="streams-startup-", dir=base))
    store, empty = workdir / "store", workdir / "empty"
    empty.mkdir()
    results: dict[str, Any] = {}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {str(code): {} for code in codes}
    try:
        print(f"generating {args.gib:g} GiB in {args.shards} shards in {workdir} ...", flush=True)
        made = generate_in_child(store, args)
        print(f"  {made['bytes'] / 2**30:.2f} GiB, {made['segments']} segments in {made['generate_s']:.0f} s",
              flush=True)
        mid_ms = made["first_ms"] + 1_500_000
        killed = snapshot(store)
        start(REPO, store, workdir, at_ms=mid_ms)  # started and stopped: indexes complete, as a clean stop leaves
        states = {"warm": snapshot(store), "cold": snapshot(store), "cold, after kill -9": killed,
                  "cold, no active index": without_active_indexes(killed)}
        for _ in range(args.repeat):
            for code in codes:
                runs[str(code)].setdefault("empty", []).append(start(code, empty, workdir, at_ms=None))
            for state, snap in states.items():
                for code in codes:
                    restore(store, snap)
                    if state == "warm":
                        start(code, store, workdir, at_ms=mid_ms)  # the page cache holds what this code reads
                        restore(store, snap)
                    else:
                        drop_cache(store)
                    runs[str(code)].setdefault(state, []).append(start(code, store, workdir, at_ms=mid_ms))
        results = {code: {state: median_run(rs) for state, rs in states_.items()} for code, states_ in runs.items()}
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{'code':<24} {'state':<22} {'ListShards s':>12} {'GetRecords s (range)':>22} {'RSS MiB':>8} "
          f"{'peak MiB':>8}")
    for code, by_state in results.items():
        for state, r in by_state.items():
            get = ""
            if "get_records_at_timestamp_s" in r:
                low, high = r["get_records_at_timestamp_s_range"]
                get = f"{r['get_records_at_timestamp_s']:.2f} ({low:.2f}-{high:.2f})"
            print(f"{Path(code).name:<24} {state:<22} {r['list_shards_s']:>12.2f} {get:>22} "
                  f"{r['VmRSS'] / 1024:>8.0f} {r['VmHWM'] / 1024:>8.0f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"streams-startup-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "store": made,
                               "results": results, "runs": runs}, indent=2))
    print(f"results: {out.relative_to(REPO)}")
    first = results[str(codes[0])]
    missed = [s for s in ("warm", "cold") if first[s]["get_records_at_timestamp_s"] > GOAL_S]
    if missed:
        print(f"goal missed ({', '.join(missed)}): first GetRecords later than {GOAL_S} s after starting")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
