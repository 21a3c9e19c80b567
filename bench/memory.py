"""Resident memory of the daemon in a delivery outage: 1 and 10 streams, every S3 endpoint down.

    .venv/bin/python bench/memory.py                 # 1 and 10 streams, 200 MiB of backlog each run
    .venv/bin/python bench/memory.py --streams 10 --mib 20

Runs ``firehose serve`` as a child process (the harness in tests/support/outage.py, which the
memory test uses too), puts the backlog with boto3 PutRecordBatch (500 × 1 KiB records, 4 client
threads) while every destination refuses connections, and prints the daemon's RSS at rest, its peak
(VmHWM) and its RSS once the load stopped (destinations still down), for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.outage import MiB, run_outage  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, nargs="*", default=[1, 10])
    parser.add_argument("--mib", type=int, default=200, help="backlog per run, MiB (split over the streams)")
    args = parser.parse_args()
    print("| streams | backlog | RSS at rest | peak RSS | RSS in the outage (anon + file) | buffered |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in args.streams:
        with tempfile.TemporaryDirectory() as tmp:
            f = run_outage(Path(tmp), streams=n, mib_per_stream=max(1, args.mib // n))
        print(f"| {n} | {f.accepted_bytes / MiB:.0f} MiB | {f.idle_rss / MiB:.0f} MiB | {f.peak_rss / MiB:.0f} MiB "
              f"| {f.settled_rss / MiB:.0f} MiB ({f.settled_anon / MiB:.0f} + {f.settled_file / MiB:.0f}) "
              f"| {f.buffered_bytes / MiB:.1f} MiB |", flush=True)


if __name__ == "__main__":
    main()
