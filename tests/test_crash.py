"""kill -9 under load: every acknowledged record reaches S3 exactly once.

The daemon runs as a child process and is killed with SIGKILL at random points
while a client sends batches of uniquely numbered records, then restarted
(``tests.support.killcycles``, which ``bench/reliability.py`` runs for hundreds of cycles).
Objects are re-delivered under the key sealed before the crash, so a batch that
was in flight when the process died overwrites itself instead of duplicating.
"""

from __future__ import annotations

import gzip
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.support.config import local_stream, write_config
from tests.support.delivered import list_objects
from tests.support.faultproxy import FaultProxy
from tests.support.killcycles import Acknowledged, Ids, Load, Tally, firehose_putter, kill_cycle
from tests.support.servers import MotoServer
from tests.support.waiting import wait_until

#: A chain with every stage that keeps state across a crash: a transform in a worker process,
#: partition keys, per-partition buffers, compression.
TRANSFORM = """
import base64, json

def lambda_handler(event, context):
    out = []
    for r in event["records"]:
        doc = json.loads(base64.b64decode(r["data"]))
        doc["seen"] = True
        out.append({"recordId": r["recordId"], "result": "Ok",
                    "data": base64.b64encode(json.dumps(doc).encode()).decode()})
    return {"records": out}
"""
PROCESSED = {
    "Prefix": "shard=!{partitionKeyFromQuery:shard}/",
    "ErrorOutputPrefix": "errors/!{firehose:error-output-type}/",
    "CompressionFormat": "GZIP",
    "DynamicPartitioningConfiguration": {"Enabled": True},
    "ProcessingConfiguration": {"Enabled": True, "Processors": [
        {"Type": "Lambda", "Parameters": [
            {"ParameterName": "LambdaArn", "ParameterValue": "arn:aws:lambda:us-east-1:123456789012:function:tag"},
            {"ParameterName": "BufferIntervalInSeconds", "ParameterValue": "0"},
            {"ParameterName": "BufferSizeInMBs", "ParameterValue": "0.2"}]},
        {"Type": "MetadataExtraction", "Parameters": [
            {"ParameterName": "MetadataExtractionQuery", "ParameterValue": "{shard: (.id % 3)}"},
            {"ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6"}]},
        {"Type": "AppendDelimiterToRecord"}]},
}


@pytest.mark.parametrize("chain", ["plain", "processed"])
def test_kill_9_at_random_points_loses_and_duplicates_nothing(
    tmp_path: Path, moto_server: MotoServer, daemon_process: Any, chain: str
) -> None:
    bucket = f"crash-{chain}"
    moto_server.client().create_bucket(Bucket=bucket)
    extra: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    if chain == "processed":
        (tmp_path / "fns").mkdir()
        (tmp_path / "fns" / "tag.py").write_text(TRANSFORM)
        extra = PROCESSED
        settings = {"transforms_dir": str(tmp_path / "fns")}
    # S3 answers 0.3 s late: objects are stored well before the daemon learns it,
    # so kills often land between "object written" and "batch confirmed".
    proxy = FaultProxy(moto_server.port, response_delay=0.3)
    config = write_config(
        tmp_path / "crash.yaml",
        {"state_dir": str(tmp_path / "state"), "s3": {"endpoint_url": proxy.endpoint},
         "log_level": "WARNING", "delivery": {"max_inflight_batches": 2}, **settings},
        [local_stream("crash", bucket, size_mb=1, interval=1, **extra)],
    )
    rng = random.Random(20261122)
    ids, acked = Ids(), Acknowledged()
    daemon = daemon_process(config)
    put = firehose_putter(daemon.endpoint)
    for _ in range(6):
        kill_cycle(daemon, lambda: [Load(put, ["crash"], ids, acked, seed=rng.randrange(2**32))], rng, (0.4, 2.0))

    daemon.start()
    wait_until(lambda: daemon.idle("crash"), timeout=60)
    assert daemon.terminate() == 0
    proxy.close()

    s3 = moto_server.client()
    seen: Counter[int] = Counter()
    for key in list_objects(s3, bucket):
        assert not key.startswith("errors/"), key
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        if chain == "processed":
            body = gzip.decompress(body)
        for line in body.splitlines():
            doc = json.loads(line)
            seen[doc["id"]] += 1
            if chain == "processed":
                assert doc["seen"] is True and key.startswith(f"shard={doc['id'] % 3}/")
    tally = Tally.of(acked.ids["crash"], seen)
    assert tally.acknowledged > 500, "the load was too light to mean anything"
    assert not tally.lost, f"{len(tally.lost)} acknowledged records lost, e.g. {tally.lost[:5]}"
    assert tally.duplicated == 0, f"{tally.duplicated} records delivered more than once"
