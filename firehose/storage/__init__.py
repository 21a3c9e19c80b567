"""The storage toolkit: how this house puts bytes on disk durably.

Beneath the spool, the catalog, the Kinesis sidecar's shard store and the
local directory destination, each of which uses it and none of which imports
another's internals:

* ``log.py``: the append-only, checksummed segment log (fsync before
  acknowledgement, recovery of torn tails and corruption).
* ``committer.py``: the group committer, one thread that writes and fsyncs
  for every log, so concurrent callers share fsyncs.
* ``dirlock.py``: one process per state directory.
* ``atomic.py``: the atomic replacement of a whole file (temporary file,
  fsync, rename, fsync of the directory).

It imports nothing of the daemon above it but ``firehose.errors``.
"""
