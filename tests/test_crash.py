"""kill -9 under load: every acknowledged record reaches S3 exactly once.

The daemon runs as a child process and is killed with SIGKILL at random points
while a client sends batches of uniquely numbered records, then restarted.
Objects are re-delivered under the key sealed before the crash, so a batch that
was in flight when the process died overwrites itself instead of duplicating.
"""

from __future__ import annotations

import gzip
import json
import random
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.support.aws import firehose_client
from tests.support.config import local_stream, write_config
from tests.support.delivered import list_objects
from tests.support.faultproxy import FaultProxy
from tests.support.servers import MotoServer
from tests.support.waiting import wait_until


class Sender(threading.Thread):
    """Sends numbered records until stopped; remembers which ones were acknowledged."""

    def __init__(self, endpoint: str, start_id: int, acked: list[int]) -> None:
        super().__init__(daemon=True)
        self.client = firehose_client(endpoint, retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5)
        self.next_id = start_id
        self.acked = acked
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            ids = list(range(self.next_id, self.next_id + 50))
            self.next_id += 50
            records = [{"Data": json.dumps({"id": i, "pad": "x" * random.randint(0, 300)}).encode() + b"\n"}
                       for i in ids]
            try:
                resp = self.client.put_record_batch(DeliveryStreamName="crash", Records=records)
            except Exception:
                return  # the daemon died under us: these may or may not have been spooled
            entries = resp.get("RequestResponses")
            if not isinstance(entries, list) or len(entries) != len(ids):
                return  # killed mid-response: the outcome is unknown, so nothing counts as acknowledged
            for i, entry in zip(ids, entries, strict=True):
                if "RecordId" in entry:
                    self.acked.append(i)


def _idle(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint + "/readyz", timeout=2) as r:
            return bool(json.loads(r.read())["streams"]["crash"]["idle"])
    except OSError:
        return False


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
    acked: list[int] = []
    next_id = 0
    kills = 6
    for _ in range(kills):
        daemon = daemon_process(config).start()
        sender = Sender(daemon.endpoint, next_id, acked)
        sender.start()
        time.sleep(rng.uniform(0.4, 2.0))
        daemon.kill()
        sender.stopped.set()
        sender.join(10)
        next_id = sender.next_id + 1000

    daemon = daemon_process(config).start()
    wait_until(lambda: _idle(daemon.endpoint), timeout=60)
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
    assert len(acked) > 500, "the load was too light to mean anything"
    lost = [i for i in acked if seen[i] == 0]
    duplicated = {i: n for i, n in seen.items() if n > 1}
    assert not lost, f"{len(lost)} acknowledged records lost, e.g. {lost[:5]}"
    assert not duplicated, f"{len(duplicated)} records delivered more than once, e.g. {list(duplicated)[:5]}"
