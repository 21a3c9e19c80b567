"""Applications' lifecycle through the API with a runtime: statuses and their transitions, what the runtime is
asked and when, persistence across a restart, and applications declared in the config file (start, reload)."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from firehose.analytics.app import check_declared
from firehose.errors import ConfigError
from tests.support.analytics import ACCOUNT, FIREHOSE, INPUT, OUTPUT, ROLE, RecordingRuntime, app_body, error
from tests.support.waiting import wait_until


def start_at(position: str, input_id: str = "1.1") -> list[dict[str, Any]]:
    return [{"Id": input_id, "InputStartingPositionConfiguration": {"InputStartingPosition": position}}]


def status(client: Any, name: str = "ticker-stats") -> str:
    return client.describe_application(ApplicationName=name)["ApplicationDetail"]["ApplicationStatus"]  # type: ignore


def test_start_stop_and_the_transitions_between(start_analytics: Any) -> None:
    runtime = RecordingRuntime()
    d = start_analytics(runtime=runtime)
    client = d.client()
    client.create_application(**app_body())
    client.start_application(ApplicationName="ticker-stats", InputConfigurations=start_at("TRIM_HORIZON"))
    # The runtime was handed the application while it was STARTING, then it became RUNNING.
    assert runtime.named("start") == [("start", ACCOUNT, "ticker-stats", {"1.1": "TRIM_HORIZON"}, 1, "STARTING")]
    detail = client.describe_application(ApplicationName="ticker-stats")["ApplicationDetail"]
    assert detail["ApplicationStatus"] == "RUNNING"
    assert detail["InputDescriptions"][0]["InputStartingPositionConfiguration"] == {
        "InputStartingPosition": "TRIM_HORIZON"}
    with pytest.raises(ClientError) as exc:
        client.start_application(ApplicationName="ticker-stats", InputConfigurations=start_at("NOW"))
    assert error(exc) == ("ResourceInUseException", "Application ticker-stats is RUNNING; it can be started only "
                          "when it is READY.", 400)

    # A running application's configuration change reaches the runtime, with the new version.
    client.add_application_output(ApplicationName="ticker-stats", CurrentApplicationVersionId=1,
                                  Output={**OUTPUT, "Name": "SECOND"})
    assert runtime.named("update") == [("update", ACCOUNT, "ticker-stats", 2)]
    assert status(client) == "RUNNING"

    gate = runtime.stop_gate = d.daemon.call(asyncio.Event)  # the stop takes until the gate opens
    client.stop_application(ApplicationName="ticker-stats")
    assert status(client) == "STOPPING"
    for call in (lambda: client.stop_application(ApplicationName="ticker-stats"),
                 lambda: client.add_application_output(ApplicationName="ticker-stats", CurrentApplicationVersionId=2,
                                                       Output=OUTPUT)):
        with pytest.raises(ClientError) as exc:
            call()
        assert error(exc)[0] == "ResourceInUseException"
    d.daemon.call(gate.set)
    wait_until(lambda: status(client) == "READY")
    assert runtime.named("stop") == [("stop", ACCOUNT, "ticker-stats")]

    client.start_application(ApplicationName="ticker-stats", InputConfigurations=start_at("LAST_STOPPED_POINT"))
    assert runtime.named("start")[-1][3] == {"1.1": "LAST_STOPPED_POINT"}
    runtime.stop_gate = None
    created = client.describe_application(ApplicationName="ticker-stats")["ApplicationDetail"]["CreateTimestamp"]
    client.delete_application(ApplicationName="ticker-stats", CreateTimestamp=created)  # running: stopped, then gone
    wait_until(lambda: client.list_applications()["ApplicationSummaries"] == [])
    assert runtime.calls[-2:] == [("stop", ACCOUNT, "ticker-stats"), ("forget", ACCOUNT, "ticker-stats")]


def test_start_checks_its_input_configurations(start_analytics: Any) -> None:
    runtime = RecordingRuntime()
    client = start_analytics(runtime=runtime).client()
    client.create_application(ApplicationName="empty")
    with pytest.raises(ClientError) as exc:
        client.start_application(ApplicationName="empty", InputConfigurations=start_at("NOW"))
    assert error(exc) == ("InvalidApplicationConfigurationException", "Application empty has no input to read; "
                          "add one with AddApplicationInput first.", 400)
    firehose_input = {**copy.deepcopy(INPUT), "KinesisFirehoseInput": {"ResourceARN": FIREHOSE, "RoleARN": ROLE}}
    del firehose_input["KinesisStreamsInput"]
    client.create_application(**app_body(Inputs=[firehose_input]))
    with pytest.raises(ClientError) as exc:
        client.start_application(ApplicationName="ticker-stats", InputConfigurations=start_at("TRIM_HORIZON"))
    assert error(exc)[0] == "InvalidArgumentException" and "TRIM_HORIZON is not a valid starting position" in \
        error(exc)[1]
    with pytest.raises(ClientError) as exc:
        client.start_application(ApplicationName="ticker-stats", InputConfigurations=start_at("NOW", "7.1"))
    assert error(exc) == ("InvalidArgumentException", "Input id 7.1 not found in application ticker-stats.", 400)
    runtime.start_error = RuntimeError("the source stream does not exist")
    with pytest.raises(ClientError) as exc:
        client.start_application(ApplicationName="ticker-stats", InputConfigurations=start_at("NOW"))
    assert error(exc) == ("InvalidApplicationConfigurationException", "Application ticker-stats could not be "
                          "started: the source stream does not exist", 400)
    assert status(client) == "READY"
    assert runtime.named("start") == []


def test_discover_input_schema_is_the_runtimes(start_analytics: Any) -> None:
    runtime = RecordingRuntime()
    client = start_analytics(runtime=runtime).client()
    found = client.discover_input_schema(ResourceARN=FIREHOSE, RoleARN=ROLE, InputStartingPositionConfiguration={
        "InputStartingPosition": "NOW"})
    assert found["InputSchema"] == INPUT["InputSchema"]
    assert found["ParsedInputRecords"] == [["AMZN", "12.5"]]
    with pytest.raises(ClientError) as exc:
        client.discover_input_schema(S3Configuration={"RoleARN": ROLE, "BucketARN": "arn:aws:s3:::b",
                                                      "FileKey": "noise.bin"})
    assert error(exc) == ("UnableToDetectSchemaException", "Unable to determine the schema of the records.", 400)
    assert exc.value.response["RawInputRecords"] == ["bm9pc2U="]
    with pytest.raises(ClientError) as exc:
        client.discover_input_schema(ResourceARN=FIREHOSE)
    assert error(exc)[0] == "InvalidArgumentException"
    assert len(runtime.named("discover")) == 2


def test_applications_survive_a_restart_and_running_ones_resume(start_analytics: Any, tmp_path: Path) -> None:
    state = tmp_path / "state"
    first_runtime = RecordingRuntime()
    first = start_analytics(runtime=first_runtime, state_dir=state)
    client = first.client()
    client.create_application(**app_body(Tags=[{"Key": "team", "Value": "data"}]))
    client.create_application(ApplicationName="idle")
    client.add_application_output(ApplicationName="ticker-stats", CurrentApplicationVersionId=1,
                                  Output={**OUTPUT, "Name": "SECOND"})
    client.start_application(ApplicationName="ticker-stats", InputConfigurations=start_at("NOW"))
    before = client.describe_application(ApplicationName="ticker-stats")["ApplicationDetail"]
    first.stop()
    assert first_runtime.named("stop") == [("stop", ACCOUNT, "ticker-stats")]  # halted at shutdown

    runtime = RecordingRuntime()
    second = start_analytics(runtime=runtime, state_dir=state)
    client = second.client()
    after = client.describe_application(ApplicationName="ticker-stats")["ApplicationDetail"]
    assert runtime.named("start") == [("start", ACCOUNT, "ticker-stats", {"1.1": "LAST_STOPPED_POINT"}, 2,
                                       "STARTING")]
    assert after["ApplicationStatus"] == "RUNNING"
    assert after["ApplicationVersionId"] == 2
    assert after["InputDescriptions"][0]["InputStartingPositionConfiguration"] == {
        "InputStartingPosition": "LAST_STOPPED_POINT"}
    assert after["OutputDescriptions"] == before["OutputDescriptions"]
    assert after["CreateTimestamp"] == before["CreateTimestamp"]
    assert status(client, "idle") == "READY"
    arn = after["ApplicationARN"]
    assert client.list_tags_for_resource(ResourceARN=arn)["Tags"] == [{"Key": "team", "Value": "data"}]
    second.stop()

    third = start_analytics(runtime=None, state_dir=state)  # the daemon's own runtime resumes it
    assert status(third.client()) == "RUNNING"


def declared(code: str = "-- v1", **extra: Any) -> dict[str, Any]:
    return {**app_body("declared", ApplicationCode=code), **extra}


def test_declared_applications_are_created_started_reloaded_and_removed(start_analytics: Any) -> None:
    runtime = RecordingRuntime()
    d = start_analytics(runtime=runtime, analytics_applications=[
        declared(InputStartingPosition="TRIM_HORIZON"),
        {"ApplicationName": "elsewhere", "AccountId": "444455556666"}])
    client = d.client()
    assert status(client, "declared") == "RUNNING"
    assert runtime.named("start") == [("start", ACCOUNT, "declared", {"1.1": "TRIM_HORIZON"}, 1, "STARTING")]
    assert [s["ApplicationName"] for s in client.list_applications()["ApplicationSummaries"]] == ["declared"]
    elsewhere = boto3.client("kinesisanalytics", endpoint_url=d.endpoint, region_name="us-east-1",
                             aws_access_key_id="444455556666", aws_secret_access_key="x")
    assert [s["ApplicationName"] for s in elsewhere.list_applications()["ApplicationSummaries"]] == ["elsewhere"]

    # A changed declaration is a new version, handed to the running application.
    assert d.reload([declared("-- v2", InputStartingPosition="TRIM_HORIZON")])
    detail = client.describe_application(ApplicationName="declared")["ApplicationDetail"]
    assert (detail["ApplicationVersionId"], detail["ApplicationCode"]) == (2, "-- v2")
    assert runtime.named("update") == [("update", ACCOUNT, "declared", 2)]
    assert len(runtime.named("start")) == 1
    # An invalid declaration is refused as a whole: nothing changes.
    assert not d.reload([declared("-- v3", Inputs=[{**INPUT, "InputParallelism": {"Count": 99}}])])
    assert client.describe_application(ApplicationName="declared")["ApplicationDetail"]["ApplicationVersionId"] == 2
    # No longer declared: stopped and deleted; an application made through the API stays.
    client.create_application(ApplicationName="made-by-api")
    assert d.reload([])
    wait_until(lambda: [s["ApplicationName"] for s in client.list_applications()["ApplicationSummaries"]]
               == ["made-by-api"])
    assert runtime.calls[-2:] == [("stop", ACCOUNT, "declared"), ("forget", ACCOUNT, "declared")]


def test_declarations_are_checked_like_requests() -> None:
    with pytest.raises(ConfigError) as exc:
        check_declared([{"ApplicationName": "bad name"}], "firehose.yaml")
    assert str(exc.value) == ("firehose.yaml: analytics application 'bad name': 1 validation error detected: Value at "
                              "'applicationName' failed to satisfy constraint: Member must satisfy regular expression "
                              "pattern: [a-zA-Z0-9_.-]+")
    with pytest.raises(ConfigError) as exc:
        check_declared([{"Inputs": []}], "firehose.yaml")
    assert str(exc.value).startswith("firehose.yaml: analytics_applications[0]: 1 validation error detected: Value "
                                     "null at 'applicationName'")
    with pytest.raises(ConfigError) as exc:
        check_declared([declared(InputStartingPosition="LATEST")], "firehose.yaml")
    assert "InputStartingPosition must be NOW, TRIM_HORIZON or LAST_STOPPED_POINT" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        check_declared([declared(Outputs=[OUTPUT] * 4)], "firehose.yaml")
    assert "at most 3 outputs" in str(exc.value)
    check_declared([declared(InputStartingPosition="NOW", AccountId="444455556666")], "firehose.yaml")
