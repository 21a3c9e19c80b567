"""The log-shipper agent: tails files and sends their lines to a delivery stream or a Kinesis stream.

It talks to its destination only through the public AWS APIs (boto3, SigV4), so the
same agent works against this daemon, against AWS, or against any compatible server.

    config.py       agent.json keys and the YAML form, validated
    tracker.py      file identity (device, inode, fingerprint) and rotation detection
    tailer.py       reading tracked files from their offsets
    splitter.py     lines to records: header lines, multi-line records, truncation
    processing.py   dataProcessingOptions converters (SINGLELINE, CSVTOJSON, LOGTOJSON, ...)
    sender.py       batches, PutRecordBatch / PutRecords, partial-failure retry, backoff
    checkpoints.py  acknowledged offsets in SQLite
    metrics.py      counters, the periodic progress line and Prometheus
    runner.py       one reader and one sender thread per flow; start and stop
"""
