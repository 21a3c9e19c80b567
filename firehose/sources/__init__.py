"""Sources other than PutRecord/PutRecordBatch: delivery streams that read from somewhere.

    kinesis   a delivery stream of type KinesisStreamAsSource reading every shard of a Kinesis stream
    kpl       de-aggregation of records the Kinesis Producer Library packed together

A source writes into the delivery stream's spool like the ingest API does;
from there on the pipeline cannot tell the difference.
"""
