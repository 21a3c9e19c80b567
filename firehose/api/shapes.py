"""Limits of the Firehose API that the operations check by hand (spec: firehose-api.md §3-4).

Request shapes themselves (types, lengths, patterns, ranges) come from the AWS
model and are checked by the front door (``firehose.frontdoor.shapes``); what
is here are the limits AWS enforces beyond the model, and those the ingest hot
path checks itself because building anything per record would cost more than
the rest of PutRecordBatch.
"""

from __future__ import annotations

import re
from typing import Any

from firehose.definitions import STREAM_NAME_PATTERN
from firehose.errors import InvalidArgumentException
from firehose.frontdoor.shapes import ServiceShapes

MAX_BATCH_RECORDS = 500
MAX_RECORD_BYTES = 1_024_000  # 1,000 KiB, decoded
MAX_BATCH_BYTES = 4 * 1024 * 1024  # decoded data per PutRecordBatch call
#: Largest request body read before answering 413: 4 MiB as base64 plus JSON framing.
MAX_BODY_BYTES = 8 * 1024 * 1024

STREAM_NAME_RE = re.compile(STREAM_NAME_PATTERN)

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

#: Where the daemon deliberately accepts more than AWS's model: ZSTD compression, plain-HTTP endpoints
#: on a private network, and PostgreSQL (any host) for the Redshift destination's load mode.
MODEL_OVERRIDES: dict[str, dict[str, Any]] = {
    "CompressionFormat": {"enum": ["UNCOMPRESSED", "GZIP", "ZIP", "Snappy", "HADOOP_SNAPPY", "ZSTD"]},
    "HttpEndpointUrl": {"pattern": "https?://.*"},
    "ElasticsearchClusterEndpoint": {"pattern": "https?:.*"},
    "AmazonopensearchserviceClusterEndpoint": {"pattern": "https?:.*"},
    "AmazonOpenSearchServerlessCollectionEndpoint": {"pattern": "https?:.*"},
    "ClusterJDBCURL": {"pattern": r"jdbc:(redshift|postgresql)://[^/:]+(:\d{1,5})?/[A-Za-z0-9_$-]+"},
}

#: The Firehose API's request shapes (Firehose's model has no ValidationException: constraint
#: violations are InvalidArgumentException).
SHAPES = ServiceShapes.load("firehose", validation_error=InvalidArgumentException, overrides=MODEL_OVERRIDES)
