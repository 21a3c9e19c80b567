"""Delivery to Amazon Redshift by COPY from staged objects, or straight into PostgreSQL."""

from __future__ import annotations

from firehose.destinations.redshift.postgres_load import (
    LoadFormat,
    RedshiftDestination,
    copy_statement,
    load_format,
    load_rows,
    validate,
)

__all__ = ["LoadFormat", "RedshiftDestination", "copy_statement", "load_format", "load_rows", "validate"]
