"""The Kinesis Analytics (SQL) API as the front door serves it: ``X-Amz-Target: KinesisAnalytics_20150814.*``.

The daemon's main listener routes requests with this target prefix to a
front door of their own (``firehose.api.app``), so SigV4, accounts, IAM
policies (``kinesisanalytics:<Operation>``), size limits and the validation
by botocore's ``kinesisanalytics`` model apply exactly as for the Firehose
and Kinesis APIs.
"""

from __future__ import annotations

from collections.abc import Callable

from firehose.analytics.errors import InvalidArgumentException
from firehose.analytics.operations import OPERATIONS
from firehose.analytics.service import Applications, Body, check_declarations
from firehose.frontdoor.door import Api, Caller
from firehose.frontdoor.shapes import ServiceShapes

TARGET_PREFIX = "KinesisAnalytics_20150814"
SIGNING_NAME = "kinesisanalytics"
#: Largest request: 100 KB of SQL plus its configuration (1,000 columns at most per schema).
MAX_BODY_BYTES = 1024 * 1024

#: The model has no ValidationException: constraint violations are InvalidArgumentException, as for Firehose.
SHAPES = ServiceShapes.load("kinesisanalytics", validation_error=InvalidArgumentException)


def analytics_api(services: Callable[[str], Applications]) -> Api:
    """The API's description for a front door; ``services(account)`` gives an account's applications."""
    def for_caller(caller: Caller) -> Applications:
        return services(caller.account_id)

    return Api(target_prefix=TARGET_PREFIX, signing_name=SIGNING_NAME, operations=OPERATIONS, shapes=SHAPES,
               max_body_bytes=MAX_BODY_BYTES, services=for_caller,
               too_large_hint="A Kinesis Analytics request is at most 1 MiB.")


def check_declared(items: list[Body], source: str) -> None:
    """The config's ``analytics_applications``, each as CreateApplication would take it (ConfigError naming one)."""
    check_declarations(items, source, SHAPES.validator("CreateApplication").validate)
