"""Shards of a Kinesis stream shared by several daemons: leases in a DynamoDB table with the KCL's schema.

In ``cluster.mode: fleet`` every daemon with the same KinesisStreamAsSource delivery stream reads a
share of the Kinesis stream's shards. Who reads what lives in one DynamoDB table per delivery stream,
one item per shard, with the attributes of the Kinesis Client Library's lease table, so the KCL's
tools (and anyone who knows them) can read it:

=================================  ========================================================================
``leaseKey`` (S, the hash key)     the shard id
``leaseOwner`` (S)                 the daemon reading it (``cluster.node_id``); absent when nobody is
``leaseCounter`` (N)               raised by every write; the fence (see below)
``checkpoint`` (S)                 the last sequence number spooled, ``TRIM_HORIZON`` before any, or
                                   ``SHARD_END`` once a closed shard was read to its end
``checkpointSubSequenceNumber``    0 (whole Kinesis records are checkpointed, KPL aggregates included)
``ownerSwitchesSinceCheckpoint``   raised by every takeover, reset by a checkpoint
``checkpointOwner`` (S)            during a handoff (KCL 3.x): the previous owner, until it has written its
                                   final checkpoint
``parentShardId`` (SS)             the shard's parents, when it has any
``startingHashKey``/``endingHashKey``  the shard's hash key range
=================================  ========================================================================

**Fencing.** Every write is conditional on the ``leaseCounter`` (and owner) the writer last saw, and
raises it. A daemon that was paused, partitioned or overtaken finds out at its next write, which
fails, and stops reading the shard; its checkpoint can never overwrite a newer owner's.

**Liveness.** The owner renews each lease (and writes its checkpoint) every third of
``lease_duration_seconds``. Another daemon that sees a lease's counter unchanged for a whole duration,
by its own clock (no clocks are compared), takes it over, resuming at its checkpoint. A daemon that
cannot renew for a whole duration (DynamoDB unreachable) stops reading the shard itself, so two
daemons read one shard only for the moments it takes the loser to notice.

**Balance.** Each daemon aims at ``ceil(leases / daemons)`` leases, counting the daemons that own a
live lease. It takes unowned and expired leases first, and when there are none, steals one lease per
round from the daemon holding the most, when that daemon holds more than the target (the KCL's
default), so a daemon that joins gets its share within a few rounds without leases thrashing.

**Graceful handoff** (the KCL 3.x protocol). A steal makes the thief the ``leaseOwner`` and the victim
the ``checkpointOwner``. The victim learns it at its next renewal, stops reading the shard, writes its
final checkpoint and clears ``checkpointOwner``; only then does the thief start reading, from that
checkpoint, so a rebalance reads nothing twice. A victim that does not answer within a lease duration
(dead, or a version without handoffs) is not waited for: the thief clears ``checkpointOwner`` itself
and reads from the checkpoint the table has.

**Lineage.** A shard's lease is taken only once every parent still in the table is at ``SHARD_END``,
so records of one partition key keep their order across a reshard, whichever daemon reads which shard.

**Delivery guarantee.** A checkpoint is written only after the records before it are durable in the
writer's spool: a shard taken over is read again from there, so nothing is lost; records spooled by
the old owner after its last checkpoint are read twice (at least once across daemons). Within one
daemon nothing is read twice: it resumes at the later of its spool's checkpoint and the table's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import boto3
import botocore.exceptions
from botocore import UNSIGNED
from botocore.config import Config as BotoConfig

from firehose.settings import LeaseSettings
from firehose.sources.lineage import error_code

log = logging.getLogger("firehose.sources")

SHARD_END = "SHARD_END"
TRIM_HORIZON = "TRIM_HORIZON"
#: Checkpoints that name no position: a sequence number read from the spool is always later.
_NO_POSITION = frozenset({TRIM_HORIZON, "LATEST", "AT_TIMESTAMP"})


def table_name(settings: LeaseSettings, account_id: str, delivery_stream: str) -> str:
    """The lease table of one delivery stream: ``<prefix><account>-<name>`` (at most 255 characters)."""
    return f"{settings.table_prefix}{account_id}-{delivery_stream}"[:255]


def later_checkpoint(a: str | None, b: str | None) -> str | None:
    """The later of two checkpoints of one shard: sequence numbers compare as integers, any beats none."""
    positions = [c for c in (a, b) if c is not None and c not in _NO_POSITION]
    if not positions:
        return a or b
    return max(positions, key=int)


@dataclass(frozen=True, slots=True)
class Lease:
    """One item of the lease table."""

    key: str
    counter: int
    checkpoint: str
    owner: str | None = None
    parents: frozenset[str] = frozenset()
    owner_switches: int = 0
    #: The previous owner while a handoff is under way (it has yet to write its final checkpoint).
    checkpoint_owner: str | None = None

    @property
    def finished(self) -> bool:
        return self.checkpoint == SHARD_END

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> Lease:
        return cls(key=item["leaseKey"]["S"], counter=int(item.get("leaseCounter", {}).get("N", "0")),
                   checkpoint=item.get("checkpoint", {}).get("S", TRIM_HORIZON),
                   owner=item.get("leaseOwner", {}).get("S"),
                   parents=frozenset(item.get("parentShardId", {}).get("SS", ())),
                   owner_switches=int(item.get("ownerSwitchesSinceCheckpoint", {}).get("N", "0")),
                   checkpoint_owner=item.get("checkpointOwner", {}).get("S"))


class LeaseTable:
    """The DynamoDB calls on one lease table (blocking: the coordinator runs them in threads).

    Writes that lose a race (their condition fails) return None or False; anything else raises.
    """

    def __init__(self, client: Any, name: str) -> None:
        self.client = client
        self.name = name

    def ensure(self, create: bool) -> None:
        """The table exists and is ACTIVE; created (on-demand, key ``leaseKey``) when missing and ``create``."""
        try:
            status = self.client.describe_table(TableName=self.name)["Table"]["TableStatus"]
        except self.client.exceptions.ResourceNotFoundException:
            if not create:
                raise LookupError(f"The lease table {self.name} does not exist "
                                  "(cluster.leases.create_table is off).") from None
            try:
                self.client.create_table(
                    TableName=self.name, BillingMode="PAY_PER_REQUEST",
                    AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
                    KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}])
            except self.client.exceptions.ResourceInUseException:
                pass  # another daemon created it first
            status = "CREATING"
        deadline = time.monotonic() + 120
        while status != "ACTIVE":
            if time.monotonic() > deadline:
                raise TimeoutError(f"The lease table {self.name} is still {status}.")
            time.sleep(0.5)
            status = self.client.describe_table(TableName=self.name)["Table"]["TableStatus"]

    def scan(self) -> dict[str, Lease]:
        leases: dict[str, Lease] = {}
        kwargs: dict[str, Any] = {"TableName": self.name, "ConsistentRead": True}
        while True:
            page = self.client.scan(**kwargs)
            for item in page.get("Items", []):
                lease = Lease.from_item(item)
                leases[lease.key] = lease
            if "LastEvaluatedKey" not in page:
                return leases
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def create(self, shard: Mapping[str, Any]) -> bool:
        """A new, unowned lease at ``TRIM_HORIZON`` for a listed shard; False if it exists already."""
        item: dict[str, Any] = {
            "leaseKey": {"S": shard["ShardId"]}, "leaseCounter": {"N": "0"}, "checkpoint": {"S": TRIM_HORIZON},
            "checkpointSubSequenceNumber": {"N": "0"}, "ownerSwitchesSinceCheckpoint": {"N": "0"}}
        parents = [p for p in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")) if p]
        if parents:
            item["parentShardId"] = {"SS": parents}
        hash_range = shard.get("HashKeyRange") or {}
        if hash_range:
            item["startingHashKey"] = {"S": hash_range["StartingHashKey"]}
            item["endingHashKey"] = {"S": hash_range["EndingHashKey"]}
        return self._write(self.client.put_item, Item=item, ConditionExpression="attribute_not_exists(leaseKey)")

    def get(self, key: str) -> Lease | None:
        item = self.client.get_item(TableName=self.name, Key={"leaseKey": {"S": key}}, ConsistentRead=True).get("Item")
        return Lease.from_item(item) if item else None

    def take(self, lease: Lease, owner: str) -> Lease | None:
        """``lease`` owned by ``owner``, if nobody wrote it since it was read (a handoff under way is ended)."""
        done = self._update(lease, "SET leaseOwner = :me, leaseCounter = leaseCounter + :one, "
                                   "ownerSwitchesSinceCheckpoint = ownerSwitchesSinceCheckpoint + :one "
                                   "REMOVE checkpointOwner",
                            {":me": {"S": owner}}, owned_by=None)
        return replace(lease, owner=owner, counter=lease.counter + 1, owner_switches=lease.owner_switches + 1,
                       checkpoint_owner=None) if done else None

    def steal(self, lease: Lease, owner: str) -> Lease | None:
        """``lease`` owned by ``owner``, its live owner asked to hand it over (``checkpointOwner``)."""
        assert lease.owner is not None
        done = self._update(lease, "SET leaseOwner = :me, checkpointOwner = :victim, "
                                   "leaseCounter = leaseCounter + :one, "
                                   "ownerSwitchesSinceCheckpoint = ownerSwitchesSinceCheckpoint + :one",
                            {":me": {"S": owner}, ":victim": {"S": lease.owner}}, owned_by=lease.owner)
        return replace(lease, owner=owner, counter=lease.counter + 1, owner_switches=lease.owner_switches + 1,
                       checkpoint_owner=lease.owner) if done else None

    def hand_over(self, key: str, previous: str, checkpoint: str | None) -> bool:
        """The previous owner's last word in a handoff: its final checkpoint (when it has a later one), and
        ``checkpointOwner`` cleared. The counter is left alone: the new owner's renewals go on."""
        values: dict[str, Any] = {":me": {"S": previous}}
        expression = "REMOVE checkpointOwner"
        if checkpoint is not None:
            expression = "SET checkpoint = :cp, checkpointSubSequenceNumber = :zero " + expression
            values.update({":cp": {"S": checkpoint}, ":zero": {"N": "0"}})
        return self._write(self.client.update_item, Key={"leaseKey": {"S": key}}, UpdateExpression=expression,
                           ConditionExpression="checkpointOwner = :me", ExpressionAttributeValues=values)

    def end_handoff(self, lease: Lease, owner: str) -> bool:
        """The new owner stops waiting for an absent previous owner: ``checkpointOwner`` cleared."""
        return self._update(lease, "REMOVE checkpointOwner", {}, owned_by=owner)

    def renew(self, lease: Lease, owner: str, checkpoint: str | None) -> Lease | None:
        """Renewed (and checkpointed at ``checkpoint`` when given), if ``owner`` still holds it."""
        if checkpoint is None or checkpoint == lease.checkpoint:
            done = self._update(lease, "SET leaseCounter = leaseCounter + :one", {}, owned_by=owner)
            return replace(lease, counter=lease.counter + 1) if done else None
        done = self._update(lease, "SET leaseCounter = leaseCounter + :one, checkpoint = :cp, "
                                   "checkpointSubSequenceNumber = :zero, ownerSwitchesSinceCheckpoint = :zero",
                            {":cp": {"S": checkpoint}, ":zero": {"N": "0"}}, owned_by=owner)
        return replace(lease, counter=lease.counter + 1, checkpoint=checkpoint, owner_switches=0) if done else None

    def let_go(self, lease: Lease, owner: str, checkpoint: str) -> bool:
        """Checkpointed at ``checkpoint`` (``SHARD_END`` for a finished shard) and left unowned, for the
        next daemon to take at once; False if ``owner`` no longer held it."""
        return self._update(lease, "SET leaseCounter = leaseCounter + :one, checkpoint = :cp, "
                                   "checkpointSubSequenceNumber = :zero REMOVE leaseOwner, checkpointOwner",
                            {":cp": {"S": checkpoint}, ":zero": {"N": "0"}}, owned_by=owner)

    def delete(self, lease: Lease) -> bool:
        return self._write(self.client.delete_item, Key={"leaseKey": {"S": lease.key}},
                           ConditionExpression="leaseCounter = :counter",
                           ExpressionAttributeValues={":counter": {"N": str(lease.counter)}})

    def _update(self, lease: Lease, expression: str, values: dict[str, Any], *, owned_by: str | None) -> bool:
        condition = "leaseCounter = :counter"
        values = {**values, ":counter": {"N": str(lease.counter)}}
        if ":one" in expression:
            values[":one"] = {"N": "1"}
        if owned_by is not None:
            condition += " AND leaseOwner = :owner"
            values[":owner"] = {"S": owned_by}
        return self._write(self.client.update_item, Key={"leaseKey": {"S": lease.key}}, UpdateExpression=expression,
                           ConditionExpression=condition, ExpressionAttributeValues=values)

    def _write(self, call: Callable[..., Any], **kwargs: Any) -> bool:
        try:
            call(TableName=self.name, **kwargs)
            return True
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise


def make_table(settings: LeaseSettings, *, region: str, account_id: str, delivery_stream: str) -> LeaseTable:
    """The lease table of a delivery stream, reached as ``settings`` say (signed with the standard
    credential chain; unsigned when there are no credentials anywhere)."""
    session = boto3.session.Session(region_name=settings.region or region)
    config = BotoConfig(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=10)
    if session.get_credentials() is None:
        config = config.merge(BotoConfig(signature_version=UNSIGNED))
    client = session.client("dynamodb", endpoint_url=settings.endpoint_url, config=config)
    return LeaseTable(client, table_name(settings, account_id, delivery_stream))


@dataclass
class _Sighting:
    """When this daemon last saw a lease's counter change, by its own monotonic clock."""

    counter: int
    since: float


@dataclass
class LeaseCoordinator:
    """This daemon's leases on one lease table: which shards it may read, kept by renewing, taking and
    stealing leases (the module's docstring has the rules). Not thread-safe: one task drives it.

    ``on_lost(shard)`` is called when a lease is lost (overwritten by another daemon, or not renewed
    for a whole duration): the shard's reader must stop.
    """

    table: LeaseTable
    owner: str
    duration: float
    on_lost: Callable[[str], None] = lambda shard: None
    clock: Callable[[], float] = time.monotonic
    #: Leases held, as last written by this daemon.
    held: dict[str, Lease] = field(default_factory=dict)
    #: The table as last scanned.
    leases: dict[str, Lease] = field(default_factory=dict)
    _renewed: dict[str, float] = field(default_factory=dict)
    _seen: dict[str, _Sighting] = field(default_factory=dict)
    #: Leases stolen whose previous owner has not handed over yet, and since when (this daemon's clock).
    _waiting: dict[str, float] = field(default_factory=dict)
    #: Leases this daemon must hand over, by the new owner: once its reader has stopped (``hand_over``).
    handing_over: dict[str, str] = field(default_factory=dict)

    @property
    def renew_interval(self) -> float:
        return self.duration / 3

    def holds(self, shard: str) -> bool:
        """Whether this daemon may read ``shard`` now (a stolen lease waits for its handoff)."""
        return shard in self.held and shard not in self._waiting

    def readable(self) -> dict[str, Lease]:
        """The leases whose shards this daemon reads."""
        return {k: lease for k, lease in self.held.items() if k not in self._waiting}

    async def open(self, create: bool) -> None:
        await asyncio.to_thread(self.table.ensure, create)

    async def sync(self, listed: Mapping[str, Mapping[str, Any]]) -> None:
        """Scan the table; add a lease for every listed shard without one; drop finished leases of shards
        no longer listed (past the stream's retention; their children count them as done)."""
        self.leases = await asyncio.to_thread(self.table.scan)
        missing = [shard for key, shard in sorted(listed.items()) if key not in self.leases]
        for shard in missing:
            await asyncio.to_thread(self.table.create, shard)
        for lease in [lease for key, lease in self.leases.items() if key not in listed and lease.finished]:
            await asyncio.to_thread(self.table.delete, lease)
        if missing:
            self.leases = await asyncio.to_thread(self.table.scan)
        now = self.clock()
        for key, lease in self.leases.items():
            seen = self._seen.get(key)
            if seen is None or seen.counter != lease.counter:
                self._seen[key] = _Sighting(lease.counter, now)
        for key in [k for k in self._seen if k not in self.leases]:
            del self._seen[key]
        for key, mine in list(self.held.items()):
            lease = self.leases.get(key)
            if lease is None or lease.owner != self.owner or lease.counter != mine.counter:
                self._lost_to(key, lease)

    def eligible(self, lease: Lease) -> bool:
        """Not finished, and every parent still in the table finished (children after parents)."""
        if lease.finished:
            return False
        return all(self.leases[p].finished for p in lease.parents if p in self.leases)

    def expired(self, lease: Lease) -> bool:
        """Unowned, or its counter unchanged for a whole duration by this daemon's clock."""
        if lease.owner is None:
            return True
        seen = self._seen.get(lease.key)
        return seen is not None and self.clock() - seen.since > self.duration

    async def balance(self) -> list[str]:
        """Take this daemon's share of the leases (after ``sync``); the shards newly taken."""
        eligible = [lease for lease in self.leases.values() if self.eligible(lease)]
        if not eligible:
            return []
        live: dict[str, list[Lease]] = {}
        for lease in eligible:
            if lease.owner is not None and lease.owner != self.owner and not self.expired(lease):
                live.setdefault(lease.owner, []).append(lease)
        target = math.ceil(len(eligible) / (len(live) + 1))
        mine = [lease for lease in eligible if lease.owner == self.owner]
        taken: list[str] = []
        # Leases the table says are this daemon's but it does not hold: left by its previous run.
        for lease in mine:
            if lease.key not in self.held and await self._take(lease):
                taken.append(lease.key)
        need = target - len(self.held)
        if need <= 0:
            return taken
        free = [lease for lease in eligible if lease.owner != self.owner and self.expired(lease)]
        random.shuffle(free)  # daemons starting together split the free leases between them
        for lease in free[:need]:
            if await self._take(lease):
                taken.append(lease.key)
                need -= 1
        if need > 0 and not free and live:
            victim, theirs = max(live.items(), key=lambda item: len(item[1]))
            if len(theirs) > target and not self._waiting:  # one handoff at a time
                lease = random.choice(theirs)
                stolen = await asyncio.to_thread(self.table.steal, lease, self.owner)
                if stolen is not None:
                    self._hold(stolen)
                    self._waiting[lease.key] = self.clock()
                    log.info("Took a lease from a daemon holding more than its share; it hands the shard over.",
                             extra={"lease_table": self.table.name, "shard": lease.key, "from": victim})
                    taken.append(lease.key)
        return taken

    async def renew(self, checkpoints: Mapping[str, str]) -> None:
        """Renew every lease held, writing its shard's checkpoint from ``checkpoints`` (positions durable in
        the spool). A lease another daemon wrote is lost at once; one that cannot be renewed for a
        whole duration is given up."""
        for key, lease in list(self.held.items()):
            checkpoint = checkpoints.get(key)
            if checkpoint is not None and later_checkpoint(checkpoint, lease.checkpoint) != checkpoint:
                checkpoint = None  # never move a checkpoint back
            try:
                renewed = await asyncio.to_thread(self.table.renew, lease, self.owner, checkpoint)
            except Exception as exc:  # DynamoDB unreachable, throttled: the lease holds until it expires
                if self.clock() - self._renewed.get(key, 0.0) > self.duration:
                    self._lose(key, f"could not renew it for {self.duration:g} s ({type(exc).__name__}: {exc})")
                continue
            if renewed is None:
                try:
                    current = await asyncio.to_thread(self.table.get, key)
                except Exception:  # unreachable again: lost all the same, without a handoff
                    current = None
                self._lost_to(key, current)
            elif key in self.held:
                self.held[key] = renewed
                self._renewed[key] = self.clock()
        await self._await_handoffs()

    async def _await_handoffs(self) -> None:
        """Stolen leases: ready once the previous owner cleared ``checkpointOwner`` (its final checkpoint is
        then in the table), or once it has not done so for a whole duration."""
        for key, since in list(self._waiting.items()):
            mine = self.held.get(key)
            if mine is None:
                self._waiting.pop(key, None)
                continue
            try:
                await self._await_handoff(key, since, mine)
            except Exception as exc:  # DynamoDB unreachable: asked again at the next renewal
                log.warning("Could not check a lease's handoff; trying again.",
                            extra={"lease_table": self.table.name, "shard": key, "error": f"{exc}"})

    async def _await_handoff(self, key: str, since: float, mine: Lease) -> None:
        lease = await asyncio.to_thread(self.table.get, key)
        if lease is None or lease.owner != self.owner:
            return  # the next renewal finds it lost
        if lease.checkpoint_owner is None:
            self.held[key] = replace(mine, checkpoint=lease.checkpoint, checkpoint_owner=None)
            del self._waiting[key]
        elif self.clock() - since > self.duration and await asyncio.to_thread(self.table.end_handoff, mine,
                                                                               self.owner):
            log.warning("The previous owner of a lease did not hand it over; reading from the table's "
                        "checkpoint.", extra={"lease_table": self.table.name, "shard": key,
                                              "from": lease.checkpoint_owner})
            self.held[key] = replace(mine, checkpoint=lease.checkpoint, checkpoint_owner=None)
            del self._waiting[key]

    async def hand_over(self, key: str, checkpoint: str | None) -> None:
        """This daemon's reader of ``key`` has stopped: write its final checkpoint and let the new owner read
        (raises when DynamoDB cannot be reached: the handoff stays pending, and is tried again)."""
        if key in self.handing_over:
            await asyncio.to_thread(self.table.hand_over, key, self.owner, checkpoint)
            self.handing_over.pop(key, None)

    async def finish(self, shard: str) -> None:
        """The shard was read to its end: ``SHARD_END``, and the lease let go (its children are next)."""
        lease = self.held.pop(shard, None)
        self._renewed.pop(shard, None)
        if lease is not None:
            await asyncio.to_thread(self.table.let_go, lease, self.owner, SHARD_END)

    async def release_all(self, checkpoints: Mapping[str, str]) -> None:
        """On a clean stop: checkpoint and let go of every lease, so other daemons take them at once, and
        finish the handoffs asked of this daemon."""
        for key in list(self.handing_over):
            with contextlib.suppress(Exception):
                await self.hand_over(key, checkpoints.get(key))
        held, self.held = self.held, {}
        self._renewed.clear()
        for key, lease in held.items():
            checkpoint = later_checkpoint(checkpoints.get(key), lease.checkpoint) or lease.checkpoint
            try:
                await asyncio.to_thread(self.table.let_go, lease, self.owner, checkpoint)
            except Exception as exc:
                log.warning("Could not let go of a lease; another daemon takes it once it expires.",
                            extra={"lease_table": self.table.name, "shard": key, "error": f"{exc}"})

    async def _take(self, lease: Lease) -> bool:
        taken = await asyncio.to_thread(self.table.take, lease, self.owner)
        if taken is None:
            return False
        self._hold(taken)
        return True

    def _hold(self, lease: Lease) -> None:
        self.held[lease.key] = self.leases[lease.key] = lease
        self._renewed[lease.key] = self.clock()
        self._seen[lease.key] = _Sighting(lease.counter, self.clock())

    def _lost_to(self, key: str, lease: Lease | None) -> None:
        """A lease this daemon held was written by another: handed over if it asks for a handoff."""
        if lease is not None and lease.owner is not None and lease.checkpoint_owner == self.owner:
            if key in self.held:
                self.handing_over[key] = lease.owner
            self._lose(key, f"handing it over to {lease.owner}")
        else:
            self._lose(key, "another daemon took the lease")

    def _lose(self, key: str, why: str) -> None:
        self._waiting.pop(key, None)
        if self.held.pop(key, None) is None:
            return
        self._renewed.pop(key, None)
        log.warning("Lost a lease; stopped reading the shard.",
                    extra={"lease_table": self.table.name, "shard": key, "reason": why})
        self.on_lost(key)
