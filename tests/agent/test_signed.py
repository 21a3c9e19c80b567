"""The agent against a daemon that requires AWS Signature Version 4 (``auth.mode: sigv4``).

The real agent runs as a process and signs with a principal's keys taken from
its environment (the standard AWS credential chain, with no config or
credentials file to fall back on). Proven here:

* a principal whose only policy allows ``firehose:PutRecordBatch`` on its one
  delivery stream's ARN is all the agent needs: every line of a tailed file is
  delivered exactly once;
* with keys the daemon refuses (a policy that does not allow the call, or a
  wrong secret) nothing is delivered, the agent keeps retrying and logs AWS's
  error (``AccessDeniedException`` / ``InvalidSignatureException``), and no
  checkpoint advances; restarted with the right keys it then delivers every
  line exactly once;
* a ``kinesisStream`` flow needs only ``kinesis:PutRecords`` on its stream's ARN.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig

from firehose.agent.runner import CHECKPOINT_NAME
from tests.support.agent import AgentProcess, agent_json, flow
from tests.support.config import local_stream
from tests.support.daemon import RunningDaemon
from tests.support.delivered import delivered_lines
from tests.support.ports import free_port
from tests.support.waiting import wait_until

REGION = "us-east-1"
ACCOUNT = "111122223333"
STREAM = "server-logs"
STREAM_ARN = f"arn:aws:firehose:{REGION}:{ACCOUNT}:deliverystream/{STREAM}"
KINESIS_STREAM = "agent-events"
KINESIS_ARN = f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{KINESIS_STREAM}"


def _allow(actions: list[str] | str, resources: list[str] | str) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": resources}]}


PRINCIPALS: dict[str, dict[str, Any]] = {
    # The agent's principal: PutRecordBatch on its one delivery stream, nothing else.
    "log-agent": {"name": "log-agent", "access_key_id": "AKIALOGAGENT00000001", "secret": "log-agent-secret",
                  "account_id": ACCOUNT, "policies": [_allow("firehose:PutRecordBatch", STREAM_ARN)]},
    # Signs correctly but may only write to another stream (and PutRecord, which the agent never calls).
    "other-app": {"name": "other-app", "access_key_id": "AKIAOTHERAPP00000001", "secret": "other-app-secret",
                  "account_id": ACCOUNT, "policies": [
                      _allow("firehose:PutRecordBatch", f"arn:aws:firehose:{REGION}:{ACCOUNT}:deliverystream/other"),
                      _allow("firehose:PutRecord", STREAM_ARN)]},
    # The agent of a kinesisStream flow: PutRecords on its one Kinesis stream, nothing else.
    "kinesis-agent": {"name": "kinesis-agent", "access_key_id": "AKIAKINESISAGENT0001", "secret": "kinesis-secret",
                      "account_id": ACCOUNT, "policies": [_allow("kinesis:PutRecords", KINESIS_ARN)]},
    # Reads the Kinesis stream back for the test.
    "reader": {"name": "reader", "access_key_id": "AKIAREADER0000000001", "secret": "reader-secret",
               "account_id": ACCOUNT, "policies": [_allow(["kinesis:ListShards", "kinesis:GetShardIterator",
                                                           "kinesis:GetRecords"], KINESIS_ARN)]},
}


def keys(who: str, *, secret: str | None = None) -> dict[str, str]:
    p = PRINCIPALS[who]
    return {"AWS_ACCESS_KEY_ID": p["access_key_id"], "AWS_SECRET_ACCESS_KEY": secret or p["secret"]}


def signed_daemon(start_daemon: Callable[..., RunningDaemon], **settings: Any) -> RunningDaemon:
    return start_daemon([local_stream(STREAM, interval=0)], auth={"mode": "sigv4", "principals": list(
        PRINCIPALS.values())}, **settings)


class SignedAgent(AgentProcess):
    """``python -m firehose agent`` whose only credentials are the keys in its environment."""

    def __init__(self, config: dict[str, Any], directory: Path) -> None:
        super().__init__(config, directory)
        self.state_dir = directory / "state"

    def start(self, credentials: dict[str, str] | None = None) -> SignedAgent:  # type: ignore[override]
        empty = self.directory / "empty-aws-config"
        empty.write_text("")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update({"AWS_CONFIG_FILE": str(empty), "AWS_SHARED_CREDENTIALS_FILE": str(empty),
                    "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true", **(credentials or {})})
        super().start(env)
        return self

    def checkpoints(self) -> list[tuple[str, str, int]]:
        """(flow, path, acknowledged offset) of every checkpoint row."""
        path = self.state_dir / CHECKPOINT_NAME
        if not path.exists():
            return []
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return [(str(f), str(p), int(o)) for f, p, o in db.execute("SELECT flow, path, offset FROM checkpoints")]
        finally:
            db.close()


@pytest.fixture
def signed_agent(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], SignedAgent]]:
    made: list[SignedAgent] = []

    def make(config: dict[str, Any]) -> SignedAgent:
        directory = tmp_path / f"agent-{len(made)}"
        directory.mkdir()
        agent = SignedAgent(config, directory)
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.stop()


def numbered(start: int, count: int) -> list[bytes]:
    return [f"{i:06d} GET /index.html 200 {'x' * 40}\n".encode() for i in range(start, start + count)]


def caught_up(agent: SignedAgent) -> bool:
    """Every file the agent tails is checkpointed to its end: it has nothing left to send, or to send again."""
    rows = agent.checkpoints()
    return bool(rows) and all(Path(path).stat().st_size == offset for _flow, path, offset in rows)


def wait_for_all(out: Path, expected: list[bytes], agent: SignedAgent, daemon: RunningDaemon,
                 timeout: float = 30) -> list[bytes]:
    """The lines delivered once the agent has caught up and the daemon delivered everything it accepted:
    a line sent twice would be among them by then."""
    try:
        wait_until(lambda: len(delivered_lines(out)) >= len(expected), timeout=timeout, interval=0.1)
        wait_until(lambda: caught_up(agent) and daemon.idle(STREAM), timeout=timeout, interval=0.1)
    except AssertionError:
        raise AssertionError(f"{len(delivered_lines(out))} of {len(expected)} lines delivered, checkpoints "
                             f"{agent.checkpoints()}\n{agent.log()[-3000:]}") from None
    return delivered_lines(out)


def assert_exactly_once(got: list[bytes], sent: list[bytes]) -> None:
    counts = Counter(got)
    assert set(counts) == set(sent), f"{len(set(sent) - set(counts))} lines missing"
    assert max(counts.values()) == 1, f"{sum(n - 1 for n in counts.values())} lines delivered twice"


def firehose_as(daemon: RunningDaemon, who: str) -> Any:
    k = keys(who)
    return boto3.client("firehose", endpoint_url=daemon.endpoint, region_name=REGION,
                        aws_access_key_id=k["AWS_ACCESS_KEY_ID"], aws_secret_access_key=k["AWS_SECRET_ACCESS_KEY"],
                        config=BotoConfig(retries={"max_attempts": 1}))


# -- Firehose flows ------------------------------------------------------------------------------------


def test_put_record_batch_on_its_stream_is_all_the_agent_needs(start_daemon, signed_agent, tmp_path: Path) -> None:
    daemon = signed_daemon(start_daemon)
    # The principal really is that narrow: no other call, no other stream.
    client = firehose_as(daemon, "log-agent")
    for call in (lambda: client.put_record(DeliveryStreamName=STREAM, Record={"Data": b"x\n"}),
                 lambda: client.describe_delivery_stream(DeliveryStreamName=STREAM),
                 lambda: client.put_record_batch(DeliveryStreamName="other", Records=[{"Data": b"x\n"}])):
        with pytest.raises(client.exceptions.ClientError) as exc:
            call()
        assert exc.value.response["Error"]["Code"] == "AccessDeniedException"
    log = tmp_path / "access.log"
    first = numbered(0, 3000)
    log.write_bytes(b"".join(first))
    agent = signed_agent(agent_json(daemon.endpoint, [flow(log, STREAM)])).start(keys("log-agent"))
    out = tmp_path / "out"
    wait_until(lambda: len(delivered_lines(out)) >= len(first), timeout=30, interval=0.1)
    more = numbered(3000, 2000)  # appended while the agent tails the file
    with open(log, "ab") as f:
        for i in range(0, len(more), 500):
            f.write(b"".join(more[i:i + 500]))
            f.flush()
            time.sleep(0.1)
    got = wait_for_all(out, first + more, agent, daemon)
    assert_exactly_once(got, first + more)
    assert agent.terminate() == 0, agent.log()[-3000:]
    assert "Exception" not in agent.log()
    assert [offset for _flow, _path, offset in agent.checkpoints()] == [log.stat().st_size]


@pytest.mark.parametrize(("credentials", "error", "message"), [
    # The agent logs the first 300 characters of the error: the principal and the action it lacks.
    (keys("other-app"), "AccessDeniedException",
     f"User: arn:aws:iam::{ACCOUNT}:user/other-app is not authorized to perform: firehose:PutRecordBatch on "
     "resource: arn:aws:firehose"),
    (keys("log-agent", secret="not-the-secret"), "InvalidSignatureException",
     "The request signature we calculated does not match the signature you provided."),
], ids=["policy-does-not-allow-it", "wrong-secret"])
def test_refused_keys_deliver_nothing_and_advance_no_checkpoint(start_daemon, signed_agent, tmp_path: Path,
                                                                credentials: dict[str, str], error: str,
                                                                message: str) -> None:
    daemon = signed_daemon(start_daemon)
    log = tmp_path / "access.log"
    lines = numbered(0, 1200)
    log.write_bytes(b"".join(lines))
    config = agent_json(daemon.endpoint, [flow(log, STREAM, retryMaxBackoffMillis=300)],
                        shutdownTimeoutMillis=1000)
    agent = signed_agent(config).start(credentials)
    try:
        wait_until(lambda: agent.log().count(f"({error})") >= 3, timeout=20, interval=0.1)
    except AssertionError:
        raise AssertionError(f"the agent did not log {error} three times:\n{agent.log()[-3000:]}") from None
    assert agent.proc is not None and agent.proc.poll() is None  # it keeps retrying, it does not give up
    text = agent.log()
    assert "sending" in text and "retrying in" in text and message in text, text[-3000:]
    assert delivered_lines(tmp_path / "out") == []
    assert all(offset == 0 for _flow, _path, offset in agent.checkpoints()), agent.checkpoints()
    assert agent.terminate() == 0, agent.log()[-3000:]
    assert all(offset == 0 for _flow, _path, offset in agent.checkpoints()), agent.checkpoints()
    assert delivered_lines(tmp_path / "out") == []

    # The same agent, state and file, now with the right keys: every line, once.
    agent.start(keys("log-agent"))
    got = wait_for_all(tmp_path / "out", lines, agent, daemon)
    assert_exactly_once(got, lines)
    assert agent.terminate() == 0, agent.log()[-3000:]
    assert [offset for _flow, _path, offset in agent.checkpoints()] == [log.stat().st_size]


# -- Kinesis flows ------------------------------------------------------------------------------------


def read_stream(endpoint: str, expected: int) -> list[bytes]:
    k = keys("reader")
    client = boto3.client("kinesis", endpoint_url=endpoint, region_name=REGION,
                          aws_access_key_id=k["AWS_ACCESS_KEY_ID"], aws_secret_access_key=k["AWS_SECRET_ACCESS_KEY"])
    got: list[bytes] = []

    def read() -> bool:
        got.clear()
        for shard in client.list_shards(StreamName=KINESIS_STREAM)["Shards"]:
            iterator = client.get_shard_iterator(StreamName=KINESIS_STREAM, ShardId=shard["ShardId"],
                                                 ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            while iterator:
                response = client.get_records(ShardIterator=iterator, Limit=10_000)
                got.extend(r["Data"] for r in response["Records"])
                if not response["Records"]:
                    break
                iterator = response.get("NextShardIterator")
        return len(got) >= expected

    wait_until(read, timeout=30, interval=0.3)
    return got


def test_a_kinesis_flow_needs_only_put_records(start_daemon, signed_agent, tmp_path: Path) -> None:
    kinesis_port = free_port()
    signed_daemon(start_daemon, kinesis={"enabled": True, "port": kinesis_port,
                                                  "streams": [{"StreamName": KINESIS_STREAM, "ShardCount": 2}]})
    kinesis_endpoint = f"http://127.0.0.1:{kinesis_port}"
    k = keys("kinesis-agent")
    narrow = boto3.client("kinesis", endpoint_url=kinesis_endpoint, region_name=REGION,
                          aws_access_key_id=k["AWS_ACCESS_KEY_ID"], aws_secret_access_key=k["AWS_SECRET_ACCESS_KEY"],
                          config=BotoConfig(retries={"max_attempts": 1}))
    for call in (lambda: narrow.put_record(StreamName=KINESIS_STREAM, Data=b"x", PartitionKey="p"),
                 lambda: narrow.describe_stream(StreamName=KINESIS_STREAM)):
        with pytest.raises(narrow.exceptions.ClientError) as exc:
            call()
        assert exc.value.response["Error"]["Code"] == "AccessDeniedException"
    log = tmp_path / "events.log"
    lines = numbered(0, 2500)
    log.write_bytes(b"".join(lines))
    kinesis_flow = flow(log, partitionKeyOption="DETERMINISTIC", kinesisStream=KINESIS_STREAM)
    del kinesis_flow["deliveryStream"]
    agent = signed_agent({"kinesis.endpoint": kinesis_endpoint, "log.statusReportingPeriodSeconds": 60,
                          "flows": [kinesis_flow]}).start(keys("kinesis-agent"))
    try:
        got = read_stream(kinesis_endpoint, len(lines))
        wait_until(lambda: caught_up(agent), timeout=30, interval=0.1)  # nothing left to send again
    except AssertionError:
        raise AssertionError(agent.log()[-3000:]) from None
    assert_exactly_once(read_stream(kinesis_endpoint, len(lines)), lines)
    assert len(got) == len(lines)
    assert agent.terminate() == 0, agent.log()[-3000:]
    assert "Exception" not in agent.log()
