"""agent.json compatibility, the YAML form, and error messages that name the file, flow and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from firehose.agent.config import load_agent_config, parse_config
from firehose.errors import ConfigError
from tests.support.repo import REPO

KINESIS_AGENT_JSON = {  # every key from the Kinesis Agent's documentation, as a user would have it
    "checkpointFile": "/var/lib/aws-kinesis-agent/checkpoints",
    "checkpointTimeToLiveDays": 7,
    "cloudwatch.emitMetrics": True,
    "cloudwatch.endpoint": "monitoring.us-east-1.amazonaws.com",
    "firehose.endpoint": "http://127.0.0.1:4573",
    "kinesis.endpoint": "kinesis.us-east-1.amazonaws.com",
    "awsAccessKeyId": "AKIDEXAMPLE",
    "awsSecretAccessKey": "secret",
    "maxSendingThreads": 12,
    "shutdownTimeoutMillis": 10000,
    "log.level": "INFO",
    "flows": [
        {"filePattern": "/var/log/app/*.log", "deliveryStream": "clicks", "initialPosition": "START_OF_FILE",
         "multiLineStartPattern": "^\\d{4}-", "skipHeaderLines": 1, "truncatedRecordTerminator": "\n",
         "maxBufferAgeMillis": 5000, "maxBufferSizeRecords": 200, "maxBufferSizeBytes": 1048576,
         "dataProcessingOptions": [{"optionName": "SINGLELINE"},
                                   {"optionName": "LOGTOJSON", "logFormat": "COMMONAPACHELOG"}]},
        {"filePattern": "/var/log/other.log", "kinesisStream": "events", "partitionKeyOption": "DETERMINISTIC",
         "waitOnFullPublishQueueMillis": 100},
    ],
}


def test_kinesis_agent_json_loads_unchanged() -> None:
    config, ignored = parse_config(KINESIS_AGENT_JSON)
    assert config.firehose_endpoint == "http://127.0.0.1:4573"
    assert config.kinesis_endpoint == "https://kinesis.us-east-1.amazonaws.com"  # bare host names become URLs
    first, second = config.flows
    assert first.stream == "clicks" and not first.is_kinesis and first.skip_header_lines == 1
    assert [o.option_name for o in first.data_processing_options] == ["SINGLELINE", "LOGTOJSON"]
    assert second.is_kinesis and second.partition_key_option == "DETERMINISTIC"
    assert second.max_buffer_age_millis == 60_000 and second.batch_bytes == 5 * 1024 * 1024
    assert set(ignored) == {"cloudwatch.emitMetrics", "cloudwatch.endpoint", "maxSendingThreads",
                            "flows[1].waitOnFullPublishQueueMillis"}


def test_yaml_form_is_the_same_config(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("""
checkpoint_file: /var/lib/firehose-agent/checkpoints.sqlite
firehose:
  endpoint: http://127.0.0.1:4573
log:
  level: DEBUG
  status_reporting_period_seconds: 10
metrics:
  port: 9108
flows:
  - file_pattern: /var/log/app/*.log
    delivery_stream: clicks
    max_buffer_age_millis: 2000
    data_processing_options:
      - option_name: CSVTOJSON
        custom_field_names: [a, b]
""")
    config, _ = load_agent_config(path)
    assert config.firehose_endpoint == "http://127.0.0.1:4573"
    assert config.log_level == "DEBUG" and config.status_reporting_period_seconds == 10
    assert config.metrics_port == 9108
    assert config.flows[0].max_buffer_age_millis == 2000
    assert config.flows[0].data_processing_options[0].custom_field_names == ["a", "b"]


@pytest.mark.parametrize(("flow", "message"), [
    ({"filePattern": "/a"}, "exactly one of deliveryStream or kinesisStream"),
    ({"filePattern": "/a", "deliveryStream": "s", "maxBufferSizeRecords": 501}, "maxBufferSizeRecords"),
    ({"filePattern": "/a", "deliveryStream": "s", "maxBufferAgeMillis": 10}, "maxBufferAgeMillis"),
    ({"filePattern": "/a", "deliveryStream": "s", "maxBufferSizeBytes": 5 * 1024 * 1024}, "at most 4194304"),
    ({"filePattern": "/a", "deliveryStream": "s", "filePatern": "/b"}, "filePatern: unknown key"),
    ({"filePattern": "/a", "deliveryStream": "s", "multiLineStartPattern": "(["}, "not a valid regular"),
    ({"filePattern": "/a", "deliveryStream": "s", "dataProcessingOptions": [{"optionName": "CSVTOJSON"}]},
     "CSVTOJSON needs customFieldNames"),
    ({"filePattern": "/a", "deliveryStream": "s", "dataProcessingOptions": [
        {"optionName": "LOGTOJSON", "logFormat": "SYSLOG", "matchPattern": "(a)(b)", "customFieldNames": ["x"]}]},
     "2 groups"),
    ({"filePattern": "/a", "deliveryStream": "s", "dataProcessingOptions": [{"optionName": "ADDEC2METADATA"}]},
     "ADDEC2METADATA is not supported"),
    ({"filePattern": "/a", "deliveryStream": "s", "partitionKeyOption": "HASH"}, "partitionKeyOption"),
])
def test_errors_name_file_flow_and_field(tmp_path: Path, flow: dict, message: str) -> None:
    path = tmp_path / "agent.json"
    path.write_text(json.dumps({"flows": [{"filePattern": "/ok", "deliveryStream": "ok"}, flow]}))
    with pytest.raises(ConfigError) as err:
        load_agent_config(path)
    text = str(err.value)
    assert text.startswith(f"{path}: flows[1]")
    assert message in text


def test_global_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="flows: required key is missing"):
        parse_config({"firehose.endpoint": "http://x"}, "a.json")
    with pytest.raises(ConfigError, match="awsAccessKeyId and awsSecretAccessKey go together"):
        parse_config({"awsAccessKeyId": "x", "flows": [{"filePattern": "/a", "deliveryStream": "s"}]})
    bad = tmp_path / "agent.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_agent_config(bad)


@pytest.mark.parametrize("name", ["agent.json", "agent.yaml"])
def test_shipped_examples_load_and_point_at_the_local_daemon(name: str) -> None:
    config, ignored = load_agent_config(REPO / "config" / "agent" / name)
    assert config.firehose_endpoint == "http://127.0.0.1:4573"
    assert config.flows and not ignored
