"""Request models and limits of the Firehose API (spec: firehose-api.md §3-4).

The data-plane limits are named constants because the hot path checks them by
hand (building a pydantic model per record would cost more than the rest of
PutRecordBatch). Control-plane requests are validated with pydantic models;
CreateDeliveryStream is the stream definition itself.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field

from firehose.definitions import STREAM_NAME_PATTERN, Shape, StreamName, Tag

MAX_BATCH_RECORDS = 500
MAX_RECORD_BYTES = 1_024_000  # 1,000 KiB, decoded
MAX_BATCH_BYTES = 4 * 1024 * 1024  # decoded data per PutRecordBatch call
#: Largest request body read before answering 413: 4 MiB as base64 plus JSON framing.
MAX_BODY_BYTES = 8 * 1024 * 1024

STREAM_NAME_RE = re.compile(STREAM_NAME_PATTERN)

TagKey = Annotated[str, Field(min_length=1, max_length=128)]
DestinationId = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[a-zA-Z0-9-]+$")]


class DescribeDeliveryStreamInput(Shape):
    delivery_stream_name: StreamName
    limit: Annotated[int, Field(ge=1, le=10000)] | None = None
    exclusive_start_destination_id: DestinationId | None = None


class ListDeliveryStreamsInput(Shape):
    limit: Annotated[int, Field(ge=1, le=10000)] | None = None
    delivery_stream_type: Literal["DirectPut", "KinesisStreamAsSource", "MSKAsSource", "DatabaseAsSource"] | None = None
    exclusive_start_delivery_stream_name: StreamName | None = None


class DeleteDeliveryStreamInput(Shape):
    delivery_stream_name: StreamName
    allow_force_delete: bool | None = None


class UpdateDestinationInput(Shape):
    delivery_stream_name: StreamName
    current_delivery_stream_version_id: Annotated[str, Field(min_length=1, max_length=50, pattern=r"^[0-9]+$")]
    destination_id: DestinationId


class TagDeliveryStreamInput(Shape):
    delivery_stream_name: StreamName
    tags: Annotated[list[Tag], Field(min_length=1, max_length=50)]


class UntagDeliveryStreamInput(Shape):
    delivery_stream_name: StreamName
    tag_keys: Annotated[list[TagKey], Field(min_length=1, max_length=50)]


class ListTagsForDeliveryStreamInput(Shape):
    delivery_stream_name: StreamName
    exclusive_start_tag_key: TagKey | None = None
    limit: Annotated[int, Field(ge=1, le=50)] | None = None


#: Members of UpdateDestination that carry the new destination settings.
DESTINATION_UPDATE_MEMBERS = (
    "S3DestinationUpdate",
    "ExtendedS3DestinationUpdate",
    "RedshiftDestinationUpdate",
    "ElasticsearchDestinationUpdate",
    "AmazonopensearchserviceDestinationUpdate",
    "SplunkDestinationUpdate",
    "HttpEndpointDestinationUpdate",
    "AmazonOpenSearchServerlessDestinationUpdate",
    "SnowflakeDestinationUpdate",
    "IcebergDestinationUpdate",
)
