"""The Kinesis Analytics (SQL) API through boto3 against a real daemon: every operation, version ids, child ids,
limits, AWS's error types, statuses and messages, the model's validation, and the AWS CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from firehose.analytics import codecheck
from tests.support.analytics import (
    ACCOUNT,
    CODE,
    FIREHOSE,
    INPUT,
    OUTPUT,
    REFERENCE,
    ROLE,
    AnalyticsDaemon,
    app_body,
    error,
)

LAMBDA_OUT = {"Name": "ALERTS", "DestinationSchema": {"RecordFormatType": "CSV"},
              "LambdaOutput": {"ResourceARN": f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:notify", "RoleARN": ROLE}}
LOGGING = {"LogStreamARN": f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:kda:log-stream:app", "RoleARN": ROLE}


@pytest.fixture
def served(start_analytics: Any) -> AnalyticsDaemon:
    """A daemon without a runtime: applications can be configured, not run."""
    return start_analytics(runtime=None)  # type: ignore[no-any-return]


def describe(client: Any, name: str = "ticker-stats") -> dict[str, Any]:
    return client.describe_application(ApplicationName=name)["ApplicationDetail"]  # type: ignore[no-any-return]


def test_create_describe_and_list(served: AnalyticsDaemon) -> None:
    client = served.client()
    summary = client.create_application(**app_body(ApplicationDescription="per-minute averages"))["ApplicationSummary"]
    arn = f"arn:aws:kinesisanalytics:us-east-1:{ACCOUNT}:application/ticker-stats"
    assert summary == {"ApplicationName": "ticker-stats", "ApplicationARN": arn, "ApplicationStatus": "READY"}
    detail = describe(client)
    assert detail["ApplicationVersionId"] == 1
    assert detail["ApplicationDescription"] == "per-minute averages"
    assert detail["ApplicationCode"] == CODE
    assert detail["CreateTimestamp"] == detail["LastUpdateTimestamp"]
    [inp] = detail["InputDescriptions"]
    assert inp["InputId"] == "1.1"
    assert inp["InAppStreamNames"] == ["SOURCE_SQL_STREAM_001"]
    assert inp["KinesisStreamsInputDescription"] == INPUT["KinesisStreamsInput"]
    assert inp["InputSchema"] == INPUT["InputSchema"]
    assert inp["InputParallelism"] == {"Count": 1}
    [out] = detail["OutputDescriptions"]
    assert out == {"OutputId": "1.2", "Name": "DESTINATION_SQL_STREAM",
                   "KinesisFirehoseOutputDescription": {"ResourceARN": FIREHOSE, "RoleARN": ROLE},
                   "DestinationSchema": {"RecordFormatType": "JSON"}}
    assert detail["ReferenceDataSourceDescriptions"] == []
    with pytest.raises(ClientError) as exc:
        client.create_application(**app_body())
    assert error(exc) == ("ResourceInUseException",
                          f"Application ticker-stats under account {ACCOUNT} already exists.", 400)
    with pytest.raises(ClientError) as exc:
        client.describe_application(ApplicationName="nope")
    assert error(exc) == ("ResourceNotFoundException", f"Application nope under account {ACCOUNT} not found.", 400)


def test_list_paginates_in_name_order(served: AnalyticsDaemon) -> None:
    client = served.client()
    for name in ("c-app", "a-app", "b-app"):
        client.create_application(ApplicationName=name)
    page = client.list_applications(Limit=2)
    assert [s["ApplicationName"] for s in page["ApplicationSummaries"]] == ["a-app", "b-app"]
    assert page["HasMoreApplications"] is True
    page = client.list_applications(Limit=2, ExclusiveStartApplicationName="b-app")
    assert [s["ApplicationName"] for s in page["ApplicationSummaries"]] == ["c-app"]
    assert page["HasMoreApplications"] is False
    assert {s["ApplicationStatus"] for s in client.list_applications()["ApplicationSummaries"]} == {"READY"}


def test_every_configuration_change_bumps_the_version_and_checks_it(served: AnalyticsDaemon) -> None:
    client = served.client()
    client.create_application(ApplicationName="ticker-stats")
    client.add_application_input(ApplicationName="ticker-stats", CurrentApplicationVersionId=1, Input=INPUT)
    assert describe(client)["InputDescriptions"][0]["InputId"] == "2.1"
    client.add_application_output(ApplicationName="ticker-stats", CurrentApplicationVersionId=2, Output=OUTPUT)
    client.add_application_output(ApplicationName="ticker-stats", CurrentApplicationVersionId=3, Output=LAMBDA_OUT)
    client.add_application_reference_data_source(ApplicationName="ticker-stats", CurrentApplicationVersionId=4,
                                                 ReferenceDataSource=REFERENCE)
    client.add_application_cloud_watch_logging_option(ApplicationName="ticker-stats", CurrentApplicationVersionId=5,
                                                      CloudWatchLoggingOption=LOGGING)
    processor = {"InputLambdaProcessor": {"ResourceARN": f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:pre",
                                          "RoleARN": ROLE}}
    client.add_application_input_processing_configuration(
        ApplicationName="ticker-stats", CurrentApplicationVersionId=6, InputId="2.1",
        InputProcessingConfiguration=processor)
    detail = describe(client)
    assert detail["ApplicationVersionId"] == 7
    assert [o["OutputId"] for o in detail["OutputDescriptions"]] == ["3.1", "4.1"]
    assert detail["OutputDescriptions"][1]["LambdaOutputDescription"] == LAMBDA_OUT["LambdaOutput"]
    [ref] = detail["ReferenceDataSourceDescriptions"]
    assert ref == {"ReferenceId": "5.1", "TableName": "COMPANIES",
                   "S3ReferenceDataSourceDescription": REFERENCE["S3ReferenceDataSource"],
                   "ReferenceSchema": REFERENCE["ReferenceSchema"]}
    assert detail["CloudWatchLoggingOptionDescriptions"] == [{"CloudWatchLoggingOptionId": "6.1", **LOGGING}]
    assert detail["InputDescriptions"][0]["InputProcessingConfigurationDescription"] == {
        "InputLambdaProcessorDescription": processor["InputLambdaProcessor"]}
    assert detail["LastUpdateTimestamp"] >= detail["CreateTimestamp"]

    with pytest.raises(ClientError) as exc:  # a stale version changes nothing
        client.delete_application_output(ApplicationName="ticker-stats", CurrentApplicationVersionId=6, OutputId="3.1")
    assert error(exc) == ("ConcurrentModificationException", "Cannot update application ticker-stats: "
                          "CurrentApplicationVersionId 6 is not the current version 7.", 400)
    assert describe(client)["ApplicationVersionId"] == 7

    client.delete_application_output(ApplicationName="ticker-stats", CurrentApplicationVersionId=7, OutputId="3.1")
    client.delete_application_reference_data_source(ApplicationName="ticker-stats", CurrentApplicationVersionId=8,
                                                    ReferenceId="5.1")
    client.delete_application_cloud_watch_logging_option(ApplicationName="ticker-stats",
                                                         CurrentApplicationVersionId=9, CloudWatchLoggingOptionId="6.1")
    client.delete_application_input_processing_configuration(ApplicationName="ticker-stats",
                                                             CurrentApplicationVersionId=10, InputId="2.1")
    detail = describe(client)
    assert detail["ApplicationVersionId"] == 11
    assert [o["OutputId"] for o in detail["OutputDescriptions"]] == ["4.1"]
    assert detail["ReferenceDataSourceDescriptions"] == detail["CloudWatchLoggingOptionDescriptions"] == []
    assert "InputProcessingConfigurationDescription" not in detail["InputDescriptions"][0]

    with pytest.raises(ClientError) as exc:
        client.delete_application_output(ApplicationName="ticker-stats", CurrentApplicationVersionId=11, OutputId="3.1")
    assert error(exc) == ("ResourceNotFoundException", "Output with id 3.1 not found in application ticker-stats.",
                          400)


def test_update_application_changes_each_part(served: AnalyticsDaemon) -> None:
    client = served.client()
    client.create_application(**app_body(CloudWatchLoggingOptions=[LOGGING]))
    client.add_application_reference_data_source(ApplicationName="ticker-stats", CurrentApplicationVersionId=1,
                                                 ReferenceDataSource=REFERENCE)
    other_role = f"arn:aws:iam::{ACCOUNT}:role/other"
    client.update_application(ApplicationName="ticker-stats", CurrentApplicationVersionId=2, ApplicationUpdate={
        "InputUpdates": [{"InputId": "1.1", "NamePrefixUpdate": "IN",
                          "KinesisFirehoseInputUpdate": {"ResourceARNUpdate": FIREHOSE, "RoleARNUpdate": ROLE},
                          "InputParallelismUpdate": {"CountUpdate": 3},
                          "InputSchemaUpdate": {"RecordColumnUpdates": [
                              {"Name": "TICKER", "SqlType": "VARCHAR(8)", "Mapping": "$.t"}]}}],
        "ApplicationCodeUpdate": "-- nothing yet",
        "OutputUpdates": [{"OutputId": "1.2", "NameUpdate": "OUT",
                           "DestinationSchemaUpdate": {"RecordFormatType": "CSV"},
                           "KinesisStreamsOutputUpdate": {"ResourceARNUpdate": f"arn:aws:kinesis:us-east-1:{ACCOUNT}:"
                                                                               "stream/out", "RoleARNUpdate": ROLE}}],
        "ReferenceDataSourceUpdates": [{"ReferenceId": "2.1", "TableNameUpdate": "FIRMS",
                                        "S3ReferenceDataSourceUpdate": {"FileKeyUpdate": "firms.csv"}}],
        "CloudWatchLoggingOptionUpdates": [{"CloudWatchLoggingOptionId": "1.3", "RoleARNUpdate": other_role}],
    })
    detail = describe(client)
    assert detail["ApplicationVersionId"] == 3
    assert detail["ApplicationCode"] == "-- nothing yet"
    [inp] = detail["InputDescriptions"]
    assert inp["NamePrefix"] == "IN"
    assert inp["InAppStreamNames"] == ["IN_001", "IN_002", "IN_003"]
    assert inp["KinesisFirehoseInputDescription"] == {"ResourceARN": FIREHOSE, "RoleARN": ROLE}
    assert "KinesisStreamsInputDescription" not in inp
    assert inp["InputSchema"]["RecordColumns"] == [{"Name": "TICKER", "SqlType": "VARCHAR(8)", "Mapping": "$.t"}]
    [out] = detail["OutputDescriptions"]
    assert (out["Name"], out["DestinationSchema"]) == ("OUT", {"RecordFormatType": "CSV"})
    assert "KinesisFirehoseOutputDescription" not in out and "KinesisStreamsOutputDescription" in out
    [ref] = detail["ReferenceDataSourceDescriptions"]
    assert (ref["TableName"], ref["S3ReferenceDataSourceDescription"]["FileKey"]) == ("FIRMS", "firms.csv")
    assert detail["CloudWatchLoggingOptionDescriptions"][0]["RoleARN"] == other_role

    with pytest.raises(ClientError) as exc:
        client.update_application(ApplicationName="ticker-stats", CurrentApplicationVersionId=3,
                                  ApplicationUpdate={"InputUpdates": [{"InputId": "9.9", "NamePrefixUpdate": "X"}]})
    assert error(exc) == ("ResourceNotFoundException", "Input with id 9.9 not found in application ticker-stats.", 400)
    with pytest.raises(ClientError) as exc:
        client.update_application(ApplicationName="ticker-stats", CurrentApplicationVersionId=3, ApplicationUpdate={})
    assert error(exc) == ("InvalidArgumentException", "ApplicationUpdate names no change.", 400)
    assert describe(client)["ApplicationVersionId"] == 3


def test_limits_answer_with_aws_error_types(served: AnalyticsDaemon) -> None:
    client = served.client()
    with pytest.raises(ClientError) as exc:
        client.create_application(**app_body(Inputs=[INPUT, INPUT]))
    assert error(exc) == ("InvalidArgumentException", "An application can have at most 1 input (streaming source); "
                          "application ticker-stats would have 2.", 400)
    with pytest.raises(ClientError) as exc:
        client.create_application(**app_body(Outputs=[OUTPUT] * 4))
    assert error(exc)[0] == "InvalidArgumentException" and "at most 3 outputs" in error(exc)[1]
    with pytest.raises(ClientError) as exc:
        client.create_application(**app_body(Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(51)]))
    assert error(exc) == ("TooManyTagsException", "Application ticker-stats would have 51 tags; at most 50 are "
                          "allowed.", 400)
    client.create_application(**app_body())
    for kind, call in (("input", lambda: client.add_application_input(
            ApplicationName="ticker-stats", CurrentApplicationVersionId=1, Input=INPUT)),
                       ("reference", lambda: [client.add_application_reference_data_source(
                           ApplicationName="ticker-stats", CurrentApplicationVersionId=v, ReferenceDataSource=REFERENCE)
                           for v in (1, 2)])):
        with pytest.raises(ClientError) as exc:
            call()
        assert error(exc)[0] == "InvalidArgumentException", kind
    with pytest.raises(ClientError) as exc:  # a Kinesis input and a Firehose input at once
        client.create_application(**app_body(
            "two-sources", Inputs=[{**INPUT, "KinesisFirehoseInput": {"ResourceARN": FIREHOSE, "RoleARN": ROLE}}]))
    assert error(exc) == ("InvalidArgumentException", "An input must name exactly one of KinesisStreamsInput, "
                          "KinesisFirehoseInput; got 2.", 400)
    bad_type = {**INPUT, "InputSchema": {**INPUT["InputSchema"], "RecordColumns": [
        {"Name": "X", "SqlType": "VARCHAR2(4)", "Mapping": "$.x"}]}}
    with pytest.raises(ClientError) as exc:
        client.create_application(**app_body("bad-type", Inputs=[bad_type]))
    assert error(exc) == ("InvalidArgumentException", "Input SOURCE_SQL_STREAM: column X: Invalid SQL type: "
                          "'VARCHAR2(4)'", 400)


def test_fifty_applications_per_account(served: AnalyticsDaemon) -> None:
    client = served.client()
    for i in range(50):
        client.create_application(ApplicationName=f"app-{i:02d}")
    with pytest.raises(ClientError) as exc:
        client.create_application(ApplicationName="one-too-many")
    assert error(exc) == ("LimitExceededException",
                          "You have already consumed your limit of 50 applications in this account.", 400)


def test_the_model_validates_requests(served: AnalyticsDaemon) -> None:
    client = served.client(parameter_validation=False)
    with pytest.raises(ClientError) as exc:
        client.create_application(ApplicationName="no spaces allowed")
    assert error(exc) == ("InvalidArgumentException", "1 validation error detected: Value at 'applicationName' "
                          "failed to satisfy constraint: Member must satisfy regular expression pattern: "
                          "[a-zA-Z0-9_.-]+", 400)
    with pytest.raises(ClientError) as exc:
        client.list_applications(Limit=51)
    assert error(exc) == ("InvalidArgumentException", "1 validation error detected: Value at 'limit' failed to "
                          "satisfy constraint: Member must have value less than or equal to 50", 400)
    with pytest.raises(ClientError) as exc:
        client.create_application(**app_body(Inputs=[{**INPUT, "InputParallelism": {"Count": 65}}]))
    assert error(exc)[0] == "InvalidArgumentException"
    assert "'inputs.1.member.inputParallelism.count'" in error(exc)[1]
    with pytest.raises(ClientError) as exc:
        client.start_application(ApplicationName="ticker-stats")
    assert error(exc) == ("InvalidArgumentException", "1 validation error detected: Value null at "
                          "'inputConfigurations' failed to satisfy constraint: Member must not be null", 400)
    with pytest.raises(ClientError) as exc:
        client.list_applications(Limit="ten")
    assert error(exc) == ("SerializationException", "STRING_VALUE can not be converted to an Integer", 400)


def test_delete_needs_the_create_timestamp(served: AnalyticsDaemon) -> None:
    client = served.client()
    client.create_application(**app_body())
    created = describe(client)["CreateTimestamp"]
    with pytest.raises(ClientError) as exc:
        client.delete_application(ApplicationName="ticker-stats", CreateTimestamp=created.timestamp() - 1)
    code, message, status = error(exc)
    assert (code, status) == ("ResourceNotFoundException", 400)
    assert message.startswith("Application ticker-stats created at ")
    client.delete_application(ApplicationName="ticker-stats", CreateTimestamp=created)
    assert client.list_applications()["ApplicationSummaries"] == []


def test_tags(served: AnalyticsDaemon) -> None:
    client = served.client()
    arn = client.create_application(**app_body(Tags=[{"Key": "team", "Value": "data"}]))[
        "ApplicationSummary"]["ApplicationARN"]
    client.tag_resource(ResourceARN=arn, Tags=[{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "ops"}])
    assert client.list_tags_for_resource(ResourceARN=arn)["Tags"] == [{"Key": "env", "Value": "prod"},
                                                                      {"Key": "team", "Value": "ops"}]
    client.untag_resource(ResourceARN=arn, TagKeys=["team", "absent"])
    assert client.list_tags_for_resource(ResourceARN=arn)["Tags"] == [{"Key": "env", "Value": "prod"}]
    assert describe(client)["ApplicationVersionId"] == 1  # tags are not configuration
    with pytest.raises(ClientError) as exc:
        client.tag_resource(ResourceARN=arn, Tags=[{"Key": f"k{i}", "Value": ""} for i in range(50)])
    assert error(exc)[0] == "TooManyTagsException"
    with pytest.raises(ClientError) as exc:
        client.list_tags_for_resource(ResourceARN=arn.replace("ticker-stats", "other"))
    assert error(exc)[0] == "ResourceNotFoundException"


def test_a_ready_application_cannot_be_stopped(served: AnalyticsDaemon) -> None:
    client = served.client()
    client.create_application(**app_body())
    with pytest.raises(ClientError) as exc:
        client.stop_application(ApplicationName="ticker-stats")
    assert error(exc) == ("ResourceInUseException", "Application ticker-stats is READY; it can be stopped only when "
                          "it is RUNNING.", 400)


class _CodeError(Exception):
    pass


@pytest.fixture
def compiler(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[Any, ...]]]:
    """A stand-in for the SQL compiler's ``compile_program``: records what it is given, refuses RANDOM_CUT_FOREST."""
    seen: list[tuple[Any, ...]] = []

    def compile_program(code: str, inputs: Any, references: Any = ()) -> object:
        seen.append((code, [(s.name, [(c.name, str(c.type)) for c in s.columns]) for s in inputs],
                     [s.name for s in references]))
        if "RANDOM_CUT_FOREST" in code:
            raise _CodeError("Unsupported construct RANDOM_CUT_FOREST at line 2")
        return object()

    monkeypatch.setattr(codecheck, "_compiler", (compile_program, _CodeError))
    yield seen


def test_code_is_compiled_against_inputs_and_references(served: AnalyticsDaemon,
                                                        compiler: list[tuple[Any, ...]]) -> None:
    client = served.client()
    client.create_application(**app_body(Inputs=[{**INPUT, "InputParallelism": {"Count": 2}}]))
    code, inputs, references = compiler[-1]
    assert code == CODE
    columns = [("TICKER", "VARCHAR(4)"), ("PRICE", "DOUBLE")]
    assert inputs == [("SOURCE_SQL_STREAM_001", columns), ("SOURCE_SQL_STREAM_002", columns)]
    assert references == []
    client.add_application_reference_data_source(ApplicationName="ticker-stats", CurrentApplicationVersionId=1,
                                                 ReferenceDataSource=REFERENCE)
    assert compiler[-1][2] == ["COMPANIES"]
    bad = "CREATE STREAM S (X INTEGER);\nSELECT * FROM TABLE(RANDOM_CUT_FOREST(CURSOR(SELECT STREAM 1)));"
    for call in (lambda: client.create_application(**app_body("other", ApplicationCode=bad)),
                 lambda: client.update_application(ApplicationName="ticker-stats", CurrentApplicationVersionId=2,
                                                   ApplicationUpdate={"ApplicationCodeUpdate": bad})):
        with pytest.raises(ClientError) as exc:
            call()
        assert error(exc) == ("CodeValidationException", "Unsupported construct RANDOM_CUT_FOREST at line 2", 400)
    assert describe(client)["ApplicationVersionId"] == 2
    assert [s["ApplicationName"] for s in client.list_applications()["ApplicationSummaries"]] == ["ticker-stats"]


def test_the_aws_cli_works_unchanged(served: AnalyticsDaemon, tmp_path: Path) -> None:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    (tmp_path / "app.json").write_text(json.dumps(app_body()))
    aws = [sys.executable, "-m", "awscli", "kinesisanalytics", "--endpoint-url", served.endpoint]

    def run(*args: str) -> Any:
        out = subprocess.run([*aws, *args], capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout) if out.stdout.strip() else {}

    created = run("create-application", "--cli-input-json", f"file://{tmp_path / 'app.json'}")
    assert created["ApplicationSummary"]["ApplicationStatus"] == "READY"
    detail = run("describe-application", "--application-name", "ticker-stats")["ApplicationDetail"]
    assert detail["InputDescriptions"][0]["InAppStreamNames"] == ["SOURCE_SQL_STREAM_001"]
    assert [s["ApplicationName"] for s in run("list-applications")["ApplicationSummaries"]] == ["ticker-stats"]
    out = subprocess.run([*aws, "describe-application", "--application-name", "gone"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode != 0 and "ResourceNotFoundException" in out.stderr
