"""The test account's names and keys, and boto3 clients for loopback endpoints (nothing reaches real AWS)."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config as BotoConfig

ROLE = "arn:aws:iam::123456789012:role/firehose"
REGION = "us-east-1"
CREDS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": REGION}


def firehose_client(endpoint: str, **config: Any) -> Any:
    return boto3.client("firehose", endpoint_url=endpoint, config=BotoConfig(**config), **CREDS)


def s3_client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, **CREDS)


def dynamodb_client(endpoint: str) -> Any:
    return boto3.client("dynamodb", endpoint_url=endpoint, **CREDS)
