"""The Kinesis Data Streams sidecar: a minimal on-disk shard store and the Kinesis API over it.

    hashkeys   partition key → 128-bit hash key; the initial split of the hash space
    sequence   AWS-shaped sequence numbers that encode their shard and position
    shard      one shard: an append-only, checksummed, fsynced log (the storage toolkit's segment log)
    store      streams of shards: create, put, read, trim, reshard; metadata on disk
    iterators  signed, expiring shard iterators
    throttle   per-shard write/read limits (token buckets), when enabled
    cbor       the CBOR wire form the AWS SDK for Java uses
    kpl        de-aggregation of KPL-aggregated records
    operations the Kinesis_20131202.* operations
    app        the ASGI application (JSON and CBOR, HTTP/1.1 and h2c)
    server     running it alone (``firehose streams serve``) or beside the daemon
"""
