"""Server-side encryption (SSE) of a delivery stream, as the Firehose API sees it.

``DeliveryStreamEncryptionConfigurationInput`` at CreateDeliveryStream, StartDeliveryStreamEncryption
and StopDeliveryStreamEncryption change it; DescribeDeliveryStream reports it as
``DeliveryStreamEncryptionConfiguration``. The catalog keeps one ``Encryption`` per stream (saved with
the stream in ``catalog.json``); the daemon makes the stream's spool follow it
(``firehose.spool.encryption``: records sealed with AES-256-GCM under data keys wrapped by the daemon's
keyring, whatever KMS key the caller named).

States, as AWS reports them. Start sets ``ENABLING`` and returns; once the spool seals new records
(a new data key, wrapped by the keyring's newest key, durable on disk) the status is ``ENABLED``. If
that fails (no key in the keyring, or one that cannot be loaded) it is ``ENABLING_FAILED`` with a
``FailureDescription``, and a stream that was encrypted before stays encrypted with its old key (AWS:
"encryption remains enabled with the old CMK"). Stop sets ``DISABLING``, then ``DISABLED`` once new
records are stored plain (records sealed before stay sealed and readable). Records accepted while a
change is pending are stored as before it (AWS: "while the encryption status is ENABLING ... the data
is not encrypted"); ``Encrypted`` in PutRecord/PutRecordBatch answers tells whether they were sealed.

AWS's rules kept: only ``DirectPut`` streams; ``KeyARN`` is required with ``CUSTOMER_MANAGED_CMK`` and,
here, refused with ``AWS_OWNED_CMK`` (AWS ignores or refuses it: not verified; refusing says the key is
not used); Start and Stop together at most 25 times per stream per rolling 24 hours
(``LimitExceededException``; the message is not verified); a change while one is pending answers
``ResourceInUseException``. The input at create time, absent from Start, means ``AWS_OWNED_CMK``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from firehose.errors import InvalidArgumentException, LimitExceededException

#: Start and Stop calls, together, per stream per rolling day (AWS's hard limit).
MAX_CHANGES_PER_DAY = 25
_DAY_MS = 24 * 3600 * 1000

ENABLING, ENABLED, ENABLING_FAILED = "ENABLING", "ENABLED", "ENABLING_FAILED"
DISABLING, DISABLED, DISABLING_FAILED = "DISABLING", "DISABLED", "DISABLING_FAILED"
AWS_OWNED_CMK, CUSTOMER_MANAGED_CMK = "AWS_OWNED_CMK", "CUSTOMER_MANAGED_CMK"


def input_problem(key_type: str, key_arn: str | None) -> str | None:
    """What breaks AWS's rule tying ``KeyARN`` to ``KeyType``, or None (the model has checked the enum and
    the ARN's form)."""
    if key_type == CUSTOMER_MANAGED_CMK and not key_arn:
        return "KeyARN is required when KeyType is CUSTOMER_MANAGED_CMK"
    if key_type == AWS_OWNED_CMK and key_arn:
        return "KeyARN must not be given when KeyType is AWS_OWNED_CMK"
    return None


@dataclass
class Encryption:
    """One stream's SSE state (see the module docstring)."""

    status: str = DISABLED
    key_type: str | None = None
    key_arn: str | None = None
    #: Whether the stream's new records are sealed now (changes when a pending change is applied).
    sealing: bool = False
    #: The key type and ARN a pending (or failed) Start asked for.
    requested: tuple[str, str | None] | None = None
    #: FailureDescription of the last failed change: {"Type": ..., "Details": ...}.
    failure: dict[str, str] | None = None
    #: When Start and Stop were called within the last day (ms), for the limit.
    changes: list[int] = field(default_factory=list)

    @classmethod
    def created(cls, key_type: str | None, key_arn: str | None) -> Encryption:
        """The state of a stream created with (or, for None, without) DeliveryStreamEncryptionConfigurationInput."""
        if key_type is None:
            return cls()
        return cls(status=ENABLED, key_type=key_type, key_arn=key_arn, sealing=True)

    @property
    def pending(self) -> bool:
        return self.status in (ENABLING, DISABLING)

    @property
    def target(self) -> bool:
        """Whether the spool should seal once the pending change (if any) is applied."""
        if self.status == ENABLING:
            return True
        if self.status == DISABLING:
            return False
        return self.sealing

    def describe(self) -> dict[str, Any]:
        """DescribeDeliveryStream's ``DeliveryStreamEncryptionConfiguration``."""
        out: dict[str, Any] = {"Status": self.status}
        key_type, key_arn = self.requested if self.status in (ENABLING, ENABLING_FAILED) and self.requested \
            else (self.key_type, self.key_arn)
        if key_type is not None and self.status != DISABLED:
            out["KeyType"] = key_type
            if key_arn:
                out["KeyARN"] = key_arn
        if self.failure is not None and self.status in (ENABLING_FAILED, DISABLING_FAILED):
            out["FailureDescription"] = dict(self.failure)
        return out

    # -- changes ---------------------------------------------------------------------------------

    def _admit(self, now: int, stream: str) -> None:
        recent = [t for t in self.changes if t > now - _DAY_MS]
        if len(recent) >= MAX_CHANGES_PER_DAY:
            raise LimitExceededException(
                f"Firehose {stream} has had its encryption started or stopped {MAX_CHANGES_PER_DAY} times in the "
                "last 24 hours, the most allowed.")
        self.changes = [*recent, now]

    def start(self, key_type: str, key_arn: str | None, now: int, stream: str) -> None:
        """StartDeliveryStreamEncryption accepted: ENABLING (InvalidArgument/LimitExceeded before any change)."""
        problem = input_problem(key_type, key_arn)
        if problem is not None:
            raise InvalidArgumentException(f"{problem}.")
        self._admit(now, stream)
        self.status, self.requested, self.failure = ENABLING, (key_type, key_arn), None

    def stop(self, now: int, stream: str) -> None:
        """StopDeliveryStreamEncryption accepted: DISABLING."""
        self._admit(now, stream)
        self.status, self.requested, self.failure = DISABLING, None, None

    def applied(self, failure: dict[str, str] | None = None) -> None:
        """The spool did (or, with ``failure``, could not do) what the pending change asked."""
        if self.status == ENABLING:
            if failure is None:
                assert self.requested is not None
                self.key_type, self.key_arn = self.requested
                self.status, self.sealing, self.requested = ENABLED, True, None
            else:
                self.status, self.failure = ENABLING_FAILED, failure
        elif self.status == DISABLING:
            if failure is None:
                self.status, self.sealing, self.key_type, self.key_arn = DISABLED, False, None, None
            else:
                self.status, self.failure = DISABLING_FAILED, failure

    # -- persistence -------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "key_type": self.key_type, "key_arn": self.key_arn, "sealing": self.sealing,
                "requested": list(self.requested) if self.requested else None, "failure": self.failure,
                "changes": self.changes}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Encryption:
        requested = d.get("requested")
        return cls(status=d.get("status", DISABLED), key_type=d.get("key_type"), key_arn=d.get("key_arn"),
                   sealing=bool(d.get("sealing", False)),
                   requested=(requested[0], requested[1]) if requested else None, failure=d.get("failure"),
                   changes=list(d.get("changes", [])))
