"""Reading a Kinesis stream shard by shard, in lineage order: a shard is read once its parents are finished.

Shared by the delivery streams that read a Kinesis stream (``kinesis.py``) and SQL applications
(``firehose.analytics.inputs``): records of one partition key keep their order across a reshard. Parents no
longer listed (past retention) count as finished. ``ShardReading`` is what both readers are made of.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import botocore.exceptions

log = logging.getLogger("firehose.sources")

#: How long one round waits for a shard reader to finish before the shards are listed again.
LIST_INTERVAL_S = 10.0


async def read_in_lineage(listed: dict[str, dict[str, Any]], readers: dict[str, asyncio.Task[Any]],
                          finished: set[str], read: Callable[[str], Coroutine[Any, Any, Any]]) -> None:
    """One round: start ``read(shard)`` for each listed shard not read yet whose parents are ``finished``,
    wait until a reader ends or ``LIST_INTERVAL_S`` passes, and move readers that ended cleanly (a closed
    shard read to its end) to ``finished``."""
    for shard_id, shard in sorted(listed.items()):
        if shard_id in readers or shard_id in finished:
            continue
        parents = [p for p in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")) if p and p in listed]
        if all(p in finished for p in parents):
            readers[shard_id] = asyncio.get_running_loop().create_task(read(shard_id))
    running = [t for t in readers.values() if not t.done()]
    if running:
        await asyncio.wait(running, timeout=LIST_INTERVAL_S, return_when=asyncio.FIRST_COMPLETED)
    else:
        await asyncio.sleep(LIST_INTERVAL_S)
    for shard_id, task in list(readers.items()):
        if task.done():
            del readers[shard_id]
            if not task.cancelled() and task.exception() is None:
                finished.add(shard_id)


async def list_all_shards(call: Callable[..., Awaitable[Any]], stream_arn: str) -> list[dict[str, Any]]:
    """Every shard of the stream, following ListShards' pages. By ARN, not name: the ARN names the account,
    and a name would be looked up in the account of whatever keys the client signs with."""
    shards: list[dict[str, Any]] = []
    response = await call("list_shards", StreamARN=stream_arn)
    shards.extend(response["Shards"])
    while response.get("NextToken"):
        response = await call("list_shards", NextToken=response["NextToken"])
        shards.extend(response["Shards"])
    return shards


def error_code(exc: botocore.exceptions.ClientError) -> str:
    """The AWS error type of a failed call (``ExpiredIteratorException``, ...)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


class ShardReading:
    """A Kinesis stream read shard by shard: one boto3 client, made in a thread on first use (making one
    takes a tenth of a second); every call in a thread (boto3 blocks); one task that lists the shards
    (``_main``) and one per shard being read (``_readers``), started and stopped together."""

    def __init__(self, client_factory: Callable[[], Any]) -> None:
        self._client_factory = client_factory
        self._client: Any = None
        self._task: asyncio.Task[None] | None = None
        self._readers: dict[str, asyncio.Task[Any]] = {}

    def _main(self) -> Coroutine[Any, Any, None]:
        """The task that lists the shards and starts their readers."""
        raise NotImplementedError

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._main())

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._readers.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._readers.clear()

    async def _call(self, method: str, **kwargs: Any) -> Any:
        if self._client is None:
            self._client = await asyncio.to_thread(self._client_factory)
        return await asyncio.to_thread(getattr(self._client, method), **kwargs)

    async def _shard_iterator(self, stream_arn: str, shard_id: str, after: str | None,
                              fresh: dict[str, Any], context: dict[str, Any]) -> str:
        """A shard iterator just after ``after`` (a checkpoint); with none, at ``fresh`` (GetShardIterator's
        ``ShardIteratorType`` and its arguments). A checkpoint the shard does not know (the stream was
        re-created) reads the shard from its trim horizon, said in the log with ``context``."""
        base = {"StreamARN": stream_arn, "ShardId": shard_id}
        if after is not None:
            try:
                response = await self._call("get_shard_iterator", **base, ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                                            StartingSequenceNumber=after)
                return str(response["ShardIterator"])
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) != "InvalidArgumentException":
                    raise
                log.error("The checkpoint is not valid for the shard (was the Kinesis stream re-created?); "
                          "reading the shard from its trim horizon.",
                          extra={**context, "shard": shard_id, "checkpoint": after})
            fresh = {"ShardIteratorType": "TRIM_HORIZON"}
        response = await self._call("get_shard_iterator", **base, **fresh)
        return str(response["ShardIterator"])
