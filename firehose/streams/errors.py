"""Kinesis error types beyond those the Firehose API shares (see ``firehose.errors``).

The class name is the wire ``__type``; every one is a 400, as on AWS, except
where noted. Messages follow AWS's (as kinesalite reproduces them) because
clients match on them.
"""

from __future__ import annotations

from firehose.errors import (
    AccessDeniedException,
    FirehoseError,
    InternalFailure,
    InvalidArgumentException,
    LimitExceededException,
    ResourceInUseException,
    ResourceNotFoundException,
    SerializationException,
    UnknownOperationException,
)

__all__ = [
    "AccessDeniedException",
    "ExpiredIteratorException",
    "ExpiredNextTokenException",
    "FirehoseError",
    "InternalFailure",
    "InvalidArgumentException",
    "KMSInvalidStateException",
    "KMSNotFoundException",
    "LimitExceededException",
    "ProvisionedThroughputExceededException",
    "ResourceInUseException",
    "ResourceNotFoundException",
    "SerializationException",
    "UnknownOperationException",
    "ValidationException",
]


class ValidationException(FirehoseError):
    pass


class ExpiredIteratorException(FirehoseError):
    pass


class ExpiredNextTokenException(FirehoseError):
    pass


class ProvisionedThroughputExceededException(FirehoseError):
    retriable = True


class KMSNotFoundException(FirehoseError):
    """The key for stream encryption cannot be found (here: the keyring holds no key)."""


class KMSInvalidStateException(FirehoseError):
    """The key for stream encryption is not usable (here: the keyring cannot be loaded)."""
