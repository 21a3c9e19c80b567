"""Kinesis Data Analytics error types beyond those every API shares (``firehose.errors``).

The class name is the wire ``__type``; every one is a 400, as the AWS model
declares (``kinesisanalytics`` 2015-08-14), except ServiceUnavailableException
(503, shared). The model has no ValidationException: constraint violations of
a request are InvalidArgumentException, as for Firehose.
"""

from __future__ import annotations

from typing import Any

from firehose.errors import (
    ConcurrentModificationException,
    FirehoseError,
    InvalidArgumentException,
    LimitExceededException,
    ResourceInUseException,
    ResourceNotFoundException,
    ServiceUnavailableException,
)

__all__ = [
    "CodeValidationException",
    "ConcurrentModificationException",
    "FirehoseError",
    "InvalidApplicationConfigurationException",
    "InvalidArgumentException",
    "LimitExceededException",
    "ResourceInUseException",
    "ResourceNotFoundException",
    "ResourceProvisionedThroughputExceededException",
    "ServiceUnavailableException",
    "TooManyTagsException",
    "UnableToDetectSchemaException",
    "UnsupportedOperationException",
]


class CodeValidationException(FirehoseError):
    """The application code (SQL) cannot run: the message names the construct and its line."""


class TooManyTagsException(FirehoseError):
    """An application would carry more than 50 tags."""


class UnsupportedOperationException(FirehoseError):
    """The request is valid but cannot be served here (e.g. no runtime to run applications)."""


class InvalidApplicationConfigurationException(FirehoseError):
    """StartApplication: the configuration cannot run (an input the start names does not exist ...)."""


class ResourceProvisionedThroughputExceededException(FirehoseError):
    """DiscoverInputSchema: the source throttled the sample reads."""


class UnableToDetectSchemaException(FirehoseError):
    """DiscoverInputSchema found no schema in the samples; the answer carries them."""

    def __init__(self, message: str, *, raw: list[str] | None = None, processed: list[str] | None = None) -> None:
        super().__init__(message)
        self.raw = raw or []
        self.processed = processed or []

    @property
    def members(self) -> dict[str, Any]:
        """The error's modelled members besides ``message`` (sent in the error body)."""
        return {"RawInputRecords": self.raw, "ProcessedInputRecords": self.processed}
