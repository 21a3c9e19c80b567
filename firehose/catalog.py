"""The live set of delivery streams: names, definitions, status, versions, tags.

The catalog is the single owner of stream state. It is saved to
``<state dir>/catalog.json`` after every change (write to a temporary file,
fsync, rename, fsync the directory), so streams created through the API survive
a restart, and a stream keeps its spool (named by its *incarnation*) across
restarts and config edits.

Streams come from two places. Config files *declare* streams: on start the
catalog creates the missing ones, applies a changed definition as a new version,
and removes streams that were declared before and no longer are. The API
creates, updates and deletes streams at run time. An API change to a declared
stream lasts until its definition in the config file changes.

Status is derived from time rather than driven by timers: a stream is CREATING
until ``create_delay_seconds`` after its creation, then ACTIVE.

Listeners (the daemon) are told about every created, updated and deleted
stream so they can start, reconfigure or stop its pipeline, and about every
change of its server-side encryption (``firehose.sse``) so its spool follows.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from firehose.clock import now_ms
from firehose.definitions import (
    DeliveryStreamDefinition,
    ExtendedS3DestinationConfiguration,
    apply_destination_update,
)
from firehose.errors import (
    ConcurrentModificationException,
    InvalidArgumentException,
    LimitExceededException,
    ResourceInUseException,
    ResourceNotFoundException,
)
from firehose.sse import Encryption
from firehose.storage.atomic import write_atomic

log = logging.getLogger("firehose.catalog")

DESTINATION_ID = "destinationId-000000000001"
MAX_TAGS = 50

Origin = Literal["config", "api"]
Event = Literal["created", "updated", "deleted", "encryption"]


def _created_encryption(definition: DeliveryStreamDefinition) -> Encryption:
    given = definition.delivery_stream_encryption_configuration_input
    return Encryption.created(given.key_type, given.key_arn) if given is not None else Encryption()


def digest(definition: DeliveryStreamDefinition) -> str:
    return hashlib.sha256(orjson.dumps(definition.dump(), option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass
class StreamState:
    name: str
    definition: DeliveryStreamDefinition
    version_id: int
    created_ms: int
    updated_ms: int
    active_ms: int
    incarnation: str
    origin: Origin
    config_digest: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    deleting: bool = False
    #: The account the stream belongs to: the catalog's (not saved: an account's catalog holds only its own).
    account_id: str = ""
    #: Server-side encryption of its spool (``firehose.sse``).
    encryption: Encryption = field(default_factory=Encryption)

    @property
    def key(self) -> tuple[str, str]:
        """(account, name): unique across the daemon, where a name is unique only within its account."""
        return self.account_id, self.name

    @property
    def status(self) -> str:
        if self.deleting:
            return "DELETING"
        return "ACTIVE" if now_ms() >= self.active_ms else "CREATING"

    @property
    def spool_key(self) -> str:
        """Directory name of this stream's spool: unique per incarnation of the name."""
        return f"{self.name}-{self.incarnation}"

    @property
    def destination(self) -> ExtendedS3DestinationConfiguration:
        return self.definition.destination

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "definition": self.definition.dump(),
            "version_id": self.version_id,
            "created_ms": self.created_ms,
            "updated_ms": self.updated_ms,
            "active_ms": self.active_ms,
            "incarnation": self.incarnation,
            "origin": self.origin,
            "config_digest": self.config_digest,
            "tags": self.tags,
            **({"encryption": self.encryption.to_json()} if self.encryption != Encryption() else {}),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> StreamState:
        return cls(
            name=d["name"],
            definition=DeliveryStreamDefinition.model_validate(d["definition"]),
            version_id=d["version_id"],
            created_ms=d["created_ms"],
            updated_ms=d["updated_ms"],
            active_ms=d["active_ms"],
            incarnation=d["incarnation"],
            origin=d["origin"],
            config_digest=d.get("config_digest"),
            tags=d.get("tags", {}),
            encryption=Encryption.from_json(d["encryption"]) if "encryption" in d else Encryption(),
        )


Listener = Callable[[Event, StreamState], None]


class Catalog:
    def __init__(self, path: Path, *, account_id: str = "123456789012", max_streams: int = 5000,
                 create_delay_seconds: float = 0.0,
                 validate: Callable[[DeliveryStreamDefinition], None] | None = None) -> None:
        self.path = Path(path)
        self.account_id = account_id
        self._validate = validate
        self.max_streams = max_streams
        self.create_delay_ms = int(create_delay_seconds * 1000)
        self._streams: dict[str, StreamState] = {}
        self._listeners: list[Listener] = []
        self._load()

    # -- persistence ----------------------------------------------------------

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = orjson.loads(self.path.read_bytes())
        for item in data.get("streams", []):
            try:
                state = StreamState.from_json(item)
            except Exception as exc:  # a definition this build no longer accepts
                log.error(
                    "A saved delivery stream could not be loaded and is skipped; its spool is kept.",
                    extra={"stream": item.get("name"), "error": str(exc)},
                )
                continue
            state.account_id = self.account_id
            self._streams[state.name] = state

    def save(self) -> None:
        body = orjson.dumps({"streams": [s.to_json() for s in self._streams.values()]}, option=orjson.OPT_INDENT_2)
        write_atomic(self.path, (body,))

    # -- listeners ------------------------------------------------------------

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _emit(self, event: Event, state: StreamState) -> None:
        for listener in self._listeners:
            listener(event, state)

    # -- queries --------------------------------------------------------------

    def get(self, name: str) -> StreamState:
        state = self._streams.get(name)
        if state is None or state.deleting:
            raise ResourceNotFoundException(f"Firehose {name} under account {self.account_id} not found.")
        return state

    def find(self, name: str) -> StreamState | None:
        state = self._streams.get(name)
        return None if state is None or state.deleting else state

    def all(self) -> list[StreamState]:
        return [s for s in self._streams.values() if not s.deleting]

    def names(self, stream_type: str | None = None) -> list[str]:
        return sorted(
            s.name for s in self.all() if stream_type is None or s.definition.delivery_stream_type == stream_type
        )

    # -- changes --------------------------------------------------------------

    def create(
        self, definition: DeliveryStreamDefinition, *, origin: Origin = "api", config_digest: str | None = None,
        delay_ms: int | None = None,
    ) -> StreamState:
        name = definition.delivery_stream_name
        if name in self._streams:
            raise ResourceInUseException(f"Firehose {name} under accountId {self.account_id} already exists")
        if len(self._streams) >= self.max_streams:
            raise LimitExceededException(
                f"You have already consumed your limit of {self.max_streams} Firehose delivery streams."
            )
        self._check(definition)
        ts = now_ms()
        state = StreamState(
            name=name,
            definition=definition,
            version_id=1,
            created_ms=ts,
            updated_ms=ts,
            active_ms=ts + (self.create_delay_ms if delay_ms is None else delay_ms),
            incarnation=secrets.token_hex(4),
            origin=origin,
            config_digest=config_digest,
            tags={t.key: t.value or "" for t in definition.tags or []},
            account_id=self.account_id,
            encryption=_created_encryption(definition),
        )
        self._streams[name] = state
        self.save()
        self._emit("created", state)
        return state

    def replace_definition(self, state: StreamState, definition: DeliveryStreamDefinition, *,
                           origin: Origin, config_digest: str | None) -> None:
        state.definition = definition
        state.version_id += 1
        state.updated_ms = now_ms()
        state.origin = origin
        state.config_digest = config_digest
        self.save()
        self._emit("updated", state)

    def update_destination(self, name: str, current_version: str, destination_id: str,
                           update_member: str, update: dict[str, Any]) -> StreamState:
        state = self.get(name)
        if state.status != "ACTIVE":
            raise ResourceInUseException(f"Firehose {name} is not ACTIVE (it is {state.status}).")
        if destination_id != DESTINATION_ID:
            raise InvalidArgumentException(f"Destination {destination_id} not found for Firehose {name}.")
        if str(state.version_id) != current_version:
            raise ConcurrentModificationException(
                f"Cannot update Firehose {name}: CurrentDeliveryStreamVersionId {current_version} "
                f"is not the current version {state.version_id}."
            )
        try:
            definition = apply_destination_update(state.definition, update_member, update)
        except ValueError as exc:  # pydantic's ValidationError is one too; the API phrases those
            if hasattr(exc, "errors"):
                raise
            raise InvalidArgumentException(str(exc)) from exc
        self._check(definition)
        self.replace_definition(state, definition, origin=state.origin, config_digest=state.config_digest)
        return state

    def _check(self, definition: DeliveryStreamDefinition) -> None:
        """The daemon's deep validation (transform files, schemas, keys), as an AWS error."""
        if self._validate is None:
            return
        try:
            self._validate(definition)
        except ValueError as exc:
            raise InvalidArgumentException(str(exc)) from exc

    def delete(self, name: str, *, force: bool = False) -> StreamState:
        """Delete a stream (``force``: even one still CREATING, for the testing reset)."""
        state = self.get(name)
        if state.status == "CREATING" and not force:
            raise ResourceInUseException(f"Firehose {name} is still CREATING and cannot be deleted yet.")
        state.deleting = True
        del self._streams[name]
        self.save()
        self._emit("deleted", state)
        return state

    # -- server-side encryption ------------------------------------------------

    def _changing_encryption(self, name: str) -> StreamState:
        state = self.get(name)
        if state.definition.delivery_stream_type != "DirectPut":
            raise InvalidArgumentException(
                f"Firehose {name} is of type {state.definition.delivery_stream_type}: server-side encryption is "
                "only for DirectPut delivery streams.")
        if state.status != "ACTIVE":
            raise ResourceInUseException(f"Firehose {name} is not ACTIVE (it is {state.status}).")
        if state.encryption.pending:
            raise ResourceInUseException(
                f"The encryption of Firehose {name} is {state.encryption.status}; retry when that change is done.")
        return state

    def start_encryption(self, name: str, key_type: str, key_arn: str | None) -> StreamState:
        """StartDeliveryStreamEncryption: the stream's encryption is ENABLING; listeners apply it."""
        state = self._changing_encryption(name)
        state.encryption.start(key_type, key_arn, now_ms(), name)
        self.save()
        self._emit("encryption", state)
        return state

    def stop_encryption(self, name: str) -> StreamState:
        """StopDeliveryStreamEncryption: the stream's encryption is DISABLING; listeners apply it."""
        state = self._changing_encryption(name)
        state.encryption.stop(now_ms(), name)
        self.save()
        self._emit("encryption", state)
        return state

    def encryption_applied(self, state: StreamState, failure: dict[str, str] | None = None) -> None:
        """The stream's spool did what its pending encryption change asked (or failed to: ``failure``)."""
        state.encryption.applied(failure)
        if self._streams.get(state.name) is state:
            self.save()

    def tag(self, name: str, tags: Iterable[tuple[str, str]]) -> None:
        state = self.get(name)
        new = dict(state.tags)
        for k, v in tags:
            new[k] = v
        if len(new) > MAX_TAGS:
            raise LimitExceededException(f"A delivery stream can have at most {MAX_TAGS} tags.")
        state.tags = new
        self.save()

    def untag(self, name: str, keys: Iterable[str]) -> None:
        state = self.get(name)
        state.tags = {k: v for k, v in state.tags.items() if k not in set(keys)}
        self.save()

    # -- config files ---------------------------------------------------------

    def apply_config(self, definitions: list[DeliveryStreamDefinition]) -> None:
        """Make the declared streams exist as declared (see the module docstring)."""
        declared = set()
        for definition in definitions:
            name = definition.delivery_stream_name
            declared.add(name)
            d = digest(definition)
            state = self._streams.get(name)
            if state is None:
                self.create(definition, origin="config", config_digest=d, delay_ms=0)
                log.info("Created a delivery stream declared in the config.", extra={"stream": name})
            elif state.config_digest != d:
                self.replace_definition(state, definition, origin="config", config_digest=d)
                log.info("Applied a changed definition from the config.",
                         extra={"stream": name, "version": state.version_id})
        for state in list(self._streams.values()):
            if state.origin == "config" and state.name not in declared:
                log.warning("A delivery stream is no longer declared in the config; deleting it.",
                            extra={"stream": state.name})
                self.delete(state.name)
