"""The Firehose ingest and control-plane API (awsJson1_1 on POST /)."""
