"""Config files: every shipped file validates; mistakes name the file, the stream and the field."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from firehose.errors import ConfigError
from firehose.settings import load_config
from tests.support.aws import ROLE
from tests.support.config import local_stream, write_config
from tests.support.repo import REPO

DAEMON_CONFIGS = sorted(p for p in (REPO / "config").rglob("*.yaml") if "agent" not in p.relative_to(REPO).parts)


@pytest.mark.parametrize("path", DAEMON_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file in config/ parses and passes the deep checks a start would run."""
    from firehose.pipeline.config import check_definition

    monkeypatch.chdir(REPO)  # relative paths (transforms/) are relative to where the daemon starts
    monkeypatch.setenv("FIREHOSE_KEK_EXAMPLE", base64.b64encode(b"k" * 32).decode())
    config = load_config(path)
    assert config.settings.port > 0
    for definition in config.streams:
        check_definition(definition, config.settings)
    if config.applications:
        from firehose.analytics.app import check_declared

        check_declared(config.applications, str(path))


def test_default_config_declares_one_local_stream_on_loopback() -> None:
    config = load_config(REPO / "config" / "firehose.yaml")
    assert config.settings.host == "127.0.0.1"
    [stream] = config.streams
    bucket = stream.destination.bucket
    assert config.settings.buckets[bucket].directory is not None


def test_validate_command_accepts_a_good_file(tmp_path: Path) -> None:
    path = write_config(tmp_path / "ok.yaml", {}, [local_stream("clicks")])
    out = subprocess.run([sys.executable, "-m", "firehose", "validate", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "clicks" in out.stdout


def test_validate_recognises_an_agent_config_and_checks_it_as_the_agent_does(tmp_path: Path) -> None:
    shipped = REPO / "config" / "agent" / "agent.json"
    out = subprocess.run([sys.executable, "-m", "firehose", "validate", str(shipped)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "an agent config" in out.stdout and "2 flow(s) to default" in out.stdout
    bad = tmp_path / "agent.json"
    bad.write_text('{"flows": [{"filePattern": "/var/log/x.log", "deliveryStream": "d", "bogus": 1}]}')
    out = subprocess.run([sys.executable, "-m", "firehose", "validate", str(bad)], capture_output=True, text=True)
    assert out.returncode == 1
    assert "flows[0]" in out.stderr and "bogus: unknown key" in out.stderr


def _error(tmp_path: Path, settings: dict, streams: list) -> str:  # type: ignore[type-arg]
    path = write_config(tmp_path / "bad.yaml", settings, streams)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    return message


def test_out_of_range_buffering_names_file_stream_and_field(tmp_path: Path) -> None:
    msg = _error(tmp_path, {}, [local_stream("clicks", size_mb=500)])
    assert "'clicks'" in msg
    assert "ExtendedS3DestinationConfiguration.BufferingHints.SizeInMBs" in msg
    assert "less than or equal to 128" in msg


def test_misspelt_field_is_reported_not_ignored(tmp_path: Path) -> None:
    stream = local_stream("clicks")
    stream["ExtendedS3DestinationConfiguration"]["BufferingHint"] = {"SizeInMBs": 1}
    msg = _error(tmp_path, {}, [stream])
    assert "unknown field ExtendedS3DestinationConfiguration.BufferingHint" in msg


def test_unknown_setting_is_reported(tmp_path: Path) -> None:
    assert "unknown setting 'prot'" in _error(tmp_path, {"prot": 1}, [])


def test_bad_stream_name_and_prefix_rule(tmp_path: Path) -> None:
    msg = _error(tmp_path, {}, [local_stream("bad name!")])
    assert "DeliveryStreamName" in msg and "pattern" in msg
    msg = _error(tmp_path, {}, [local_stream("s", Prefix="a/!{timestamp:yyyy}/")])
    assert "ErrorOutputPrefix is required" in msg


def test_duplicate_stream_names_are_refused(tmp_path: Path) -> None:
    assert "declared more than once" in _error(tmp_path, {}, [local_stream("a"), local_stream("a")])


def test_features_not_built_yet_are_refused_with_a_clear_message(tmp_path: Path) -> None:
    msg = _error(tmp_path, {}, [local_stream("s", S3BackupMode="Enabled")])
    assert "S3BackupConfiguration is required when S3BackupMode is Enabled" in msg
    snowflake = {"DeliveryStreamName": "r", "SnowflakeDestinationConfiguration": {"RoleARN": ROLE}}
    msg = _error(tmp_path, {}, [snowflake])
    assert "SnowflakeDestinationConfiguration is not supported" in msg
    assert "cannot be tested here" in msg and "HTTP endpoint destination" in msg


def test_validate_command_exits_nonzero_with_the_reason(tmp_path: Path) -> None:
    path = write_config(tmp_path / "bad.yaml", {}, [local_stream("clicks", interval=901)])
    out = subprocess.run([sys.executable, "-m", "firehose", "validate", str(path)], capture_output=True, text=True)
    assert out.returncode == 1
    assert "IntervalInSeconds" in out.stderr and "clicks" in out.stderr


def test_validate_compiles_the_sql_of_declared_applications(tmp_path: Path) -> None:
    app = yaml.safe_load((REPO / "config" / "examples" / "sql-application.yaml").read_text())[
        "analytics_applications"][0]
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"analytics_applications": [app]}))
    out = subprocess.run([sys.executable, "-m", "firehose", "validate", str(good)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "1 SQL application(s): ticker-stats" in out.stdout
    app["ApplicationCode"] = app["ApplicationCode"].replace("AVG(PRICE)", "HOTSPOTS(PRICE)")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"analytics_applications": [app]}))
    out = subprocess.run([sys.executable, "-m", "firehose", "validate", str(bad)], capture_output=True, text=True)
    assert out.returncode == 1
    assert "analytics application 'ticker-stats'" in out.stderr and "HOTSPOTS (line 3)" in out.stderr


def test_a_pasted_cli_input_json_body_loads(tmp_path: Path) -> None:
    """The shape `aws firehose create-delivery-stream --generate-cli-skeleton` produces, trimmed."""
    body = {
        "DeliveryStreamName": "pasted",
        "DeliveryStreamType": "DirectPut",
        "ExtendedS3DestinationConfiguration": {
            "RoleARN": ROLE,
            "BucketARN": "arn:aws:s3:::my-bucket",
            "Prefix": "logs/!{timestamp:yyyy/MM/dd}/",
            "ErrorOutputPrefix": "errors/!{firehose:error-output-type}/",
            "BufferingHints": {"SizeInMBs": 64, "IntervalInSeconds": 60},
            "CompressionFormat": "UNCOMPRESSED",
            "EncryptionConfiguration": {"NoEncryptionConfig": "NoEncryption"},
            "CloudWatchLoggingOptions": {"Enabled": False, "LogGroupName": "", "LogStreamName": ""},
            "ProcessingConfiguration": {"Enabled": False, "Processors": []},
            "S3BackupMode": "Disabled",
        },
        "Tags": [{"Key": "team", "Value": "data"}],
    }
    path = tmp_path / "pasted.yaml"
    path.write_text(yaml.safe_dump({"delivery_streams": [body]}))
    [stream] = load_config(path).streams
    assert stream.destination.prefix == "logs/!{timestamp:yyyy/MM/dd}/"


def test_validate_runs_the_deep_checks_too(tmp_path: Path) -> None:
    """A definition that parses but cannot run (a transform that does not exist) is refused before start."""
    lam = {"Type": "Lambda", "Parameters": [
        {"ParameterName": "LambdaArn", "ParameterValue": "arn:aws:lambda:us-east-1:123456789012:function:nope"}]}
    stream = local_stream("t", ProcessingConfiguration={"Enabled": True, "Processors": [lam]})
    path = write_config(tmp_path / "t.yaml", {"transforms_dir": str(tmp_path)}, [stream])
    out = subprocess.run([sys.executable, "-m", "firehose", "validate", str(path)], capture_output=True, text=True)
    assert out.returncode == 1
    assert "'t'" in out.stderr and "nope.py" in out.stderr


def test_validate_refuses_a_schema_the_converter_cannot_write_naming_the_column(tmp_path: Path) -> None:
    conversion = {"SchemaConfiguration": {"DatabaseName": "db", "TableName": "deep", "RoleARN": ROLE},
                  "InputFormatConfiguration": {"Deserializer": {"OpenXJsonSerDe": {}}},
                  "OutputFormatConfiguration": {"Serializer": {"ParquetSerDe": {}}}}
    deep = "array<" * 50 + "int" + ">" * 50
    schemas = {"db.deep": {"columns": [{"Name": "ok", "Type": "struct<a:array<map<string,int>>>"},
                                       {"Name": "nest", "Type": deep}]}}
    stream = local_stream("d", size_mb=64, DataFormatConversionConfiguration=conversion)
    path = write_config(tmp_path / "d.yaml", {"schemas": schemas}, [stream])
    out = subprocess.run([sys.executable, "-m", "firehose", "validate", str(path)], capture_output=True, text=True)
    assert out.returncode == 1
    assert "'d'" in out.stderr and "column 'nest' is nested 100 Parquet levels deep" in out.stderr
