"""The exception tree shared by every layer.

Errors that reach a client carry their AWS ``__type`` verbatim, the HTTP status
the daemon answers with, and whether a client should retry. The API layer turns
them into the awsJson1_1 error envelope (see ``frontdoor/wire.py``); nothing else needs
to know about HTTP.

    FirehoseError                     AWS-visible; __type is the class name
    ├── InvalidArgumentException      400  bad parameters, limits, prefix rules
    ├── ResourceNotFoundException     400  unknown delivery stream
    ├── ResourceInUseException        400  name taken, or stream not ACTIVE
    ├── LimitExceededException        400  stream count, tag count
    ├── ConcurrentModificationException 400 stale version id on UpdateDestination
    ├── InvalidKMSResourceException   400
    ├── InvalidSourceException        400
    ├── SerializationException        400  body is not the JSON the operation needs
    ├── UnknownOperationException     400  (404 for a non-JSON content type)
    ├── ServiceUnavailableException   503  spool full or throttled: SDKs back off and retry
    ├── InternalFailure               500  a bug; the daemon keeps serving
    ├── MissingAuthenticationTokenException 400  unsigned request (authentication on)
    ├── IncompleteSignatureException  400  a signature lacks a part, or a part is malformed
    ├── InvalidSignatureException     400  wrong signature, expired date, wrong scope
    ├── UnrecognizedClientException   400  unknown access key or session token
    ├── ExpiredTokenException         400  a session token that has expired
    └── AccessDeniedException         400  no policy allows the action on the resource

    ConfigError                       a config file or definition is invalid (names file/stream/field)
    DestinationError                  one delivery attempt failed; ``retriable`` decides what happens
    SpoolError                        the spool could not make data durable (disk full, I/O error)

HTTP 503 for ServiceUnavailableException is deliberate: botocore retries 503 in
both its legacy and standard retry modes, while the same code with 400 would
not be retried (spec: firehose-api.md §1.2).
"""

from __future__ import annotations

from typing import ClassVar


class FirehoseError(Exception):
    """An error with an AWS wire identity."""

    status: ClassVar[int] = 400
    retriable: ClassVar[bool] = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def aws_type(self) -> str:
        return type(self).__name__


class InvalidArgumentException(FirehoseError):
    """A parameter is missing, malformed or out of range."""


class ResourceNotFoundException(FirehoseError):
    """The named delivery stream does not exist."""


class ResourceInUseException(FirehoseError):
    """The name is taken, or the stream is not in a state that allows the call."""


class LimitExceededException(FirehoseError):
    """An account quota (streams, tags) would be exceeded."""


class ConcurrentModificationException(FirehoseError):
    """UpdateDestination named a version that is no longer current."""


class InvalidKMSResourceException(FirehoseError):
    """A KMS key cannot be used."""


class InvalidSourceException(FirehoseError):
    """The stream's source does not allow this call."""


class SerializationException(FirehoseError):
    """The request body is not valid JSON of the expected shape."""


class UnknownOperationException(FirehoseError):
    """The X-Amz-Target header names no operation of this service."""


class ServiceUnavailableException(FirehoseError):
    """Temporarily unable to accept data; the client should back off and retry."""

    status = 503
    retriable = True


class InternalFailure(FirehoseError):
    """An unexpected fault; the request may be retried."""

    status = 500
    retriable = True


class MissingAuthenticationTokenException(FirehoseError):
    """Authentication is on and the request carries no signature."""


class IncompleteSignatureException(FirehoseError):
    """The signature lacks a required part, or a part cannot be parsed."""


class InvalidSignatureException(FirehoseError):
    """The signature does not verify: wrong secret, tampered request, expired date or wrong scope."""


class UnrecognizedClientException(FirehoseError):
    """The access key id (or session token) is not known to this daemon."""


class ExpiredTokenException(FirehoseError):
    """The session token has expired."""


class AccessDeniedException(FirehoseError):
    """No policy of the caller allows the action on the resource, or one denies it."""


class ConfigError(Exception):
    """A configuration file or stream definition is invalid.

    The message always names where the problem is (file, stream, field) so an
    operator can fix it without reading a traceback.
    """


class DestinationError(Exception):
    """One delivery attempt failed.

    ``retriable`` tells the pipeline whether to back off and try again (network
    errors, 5xx, throttling) or to treat the data as rejected (it then goes to
    the error output with this message as the reason).
    """

    def __init__(self, message: str, *, retriable: bool = True, code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.retriable = retriable
        #: The errorCode for error output documents (e.g. "Splunk.ConnectionRefused").
        self.code = code


class DestinationUnavailable(DestinationError):
    """A health check found the destination unreachable or misconfigured."""


class SpoolError(Exception):
    """Data could not be made durable (for example ENOSPC or EIO on write or fsync)."""
