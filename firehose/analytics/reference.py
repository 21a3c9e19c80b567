"""Reference data: an S3 object (or a local file) loaded into an in-application table.

The object is read with the reference's ``ReferenceSchema`` exactly as input records are read with an
``InputSchema`` (``rows``): a CSV object is rows separated by ``RecordRowDelimiter``; a JSON object is
one JSON document per line, or one document whose ``RecordRowPath`` array holds the rows. Rows that do
not fit the schema are skipped and counted (AWS logs them and loads the rest); the caller logs the count.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

#: AWS's limit on a reference object: above it the table is not loaded.
MAX_REFERENCE_BYTES = 1024 * 1024 * 1024


def load_reference(data: bytes, schema: dict[str, Any]) -> pa.Table:
    """The table the object ``data`` holds under ``schema`` (columns as declared, no ROWTIME); ValueError
    when it is over AWS's 1 GB limit. ``skipped_rows`` on the result's schema metadata counts skipped rows."""
    from firehose.analytics.rows import map_table

    if len(data) > MAX_REFERENCE_BYTES:
        raise ValueError(f"The reference object is {len(data)} bytes; at most {MAX_REFERENCE_BYTES} are loaded.")
    record_format = (schema.get("RecordFormat") or {}).get("RecordFormatType", "JSON")
    row_path = (((schema.get("RecordFormat") or {}).get("MappingParameters") or {})
                .get("JSONMappingParameters") or {}).get("RecordRowPath") or "$"
    if record_format == "CSV" or row_path.strip() != "$":
        records = [data]  # the CSV row delimiter, or the row path, splits the object into rows
    else:
        records = [line for line in data.splitlines() if line.strip()]
    table, skipped = map_table(records, schema, "reference")
    return table.replace_schema_metadata({b"skipped_rows": str(skipped).encode()})
