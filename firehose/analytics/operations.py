"""One coroutine per Kinesis Analytics (SQL) operation, and the ``OPERATIONS`` table keyed by AWS name.

Operations take the caller's account's ``Applications`` (``service.py``) and
the request body, already checked against the AWS model by the front door,
and return the answer's body. Each entry also names the resource the call is
authorized on: the application's ARN
(``arn:aws:kinesisanalytics:<region>:<account>:application/<name>``), the
``ResourceARN`` of the tag operations, or ``*`` for ListApplications and
DiscoverInputSchema, which act on no application (Service Authorization
Reference).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from firehose.analytics import applications as apps
from firehose.analytics.applications import Application, application_arn
from firehose.analytics.service import Applications
from firehose.frontdoor.door import Caller, Operation

Body = dict[str, Any]


def app_arn(body: Body, caller: Caller) -> str:
    name = body.get("ApplicationName")
    return application_arn(caller.region, caller.account_id, name if isinstance(name, str) else "")


def resource_arn(body: Body, caller: Caller) -> str:
    arn = body.get("ResourceARN")
    return arn if isinstance(arn, str) else application_arn(caller.region, caller.account_id, "")


async def create_application(svc: Applications, body: Body) -> Body:
    app = svc.create(body)
    return {"ApplicationSummary": app.summary(svc.arn(app.name))}


async def describe_application(svc: Applications, body: Body) -> Body:
    return {"ApplicationDetail": svc.detail(svc.get(body["ApplicationName"]))}


async def list_applications(svc: Applications, body: Body) -> Body:
    return svc.page(body.get("Limit"), body.get("ExclusiveStartApplicationName"))


async def update_application(svc: Applications, body: Body) -> Body:
    update = body["ApplicationUpdate"]
    svc.change(body["ApplicationName"], body["CurrentApplicationVersionId"],
               lambda app, _change: apps.apply_update(app, update), check_sql=True)
    return {}


async def delete_application(svc: Applications, body: Body) -> Body:
    svc.delete(body["ApplicationName"], body["CreateTimestamp"])
    return {}


async def start_application(svc: Applications, body: Body) -> Body:
    svc.start(body["ApplicationName"], body["InputConfigurations"])
    return {}


async def stop_application(svc: Applications, body: Body) -> Body:
    svc.stop(body["ApplicationName"])
    return {}


Edit = Callable[[Application, apps.Change], None]


def _changing(edit: Callable[[Body], Edit], *, check_sql: bool = False) -> Callable[..., Any]:
    """An Add*/Delete* operation: ``edit(body)`` applied at the request's CurrentApplicationVersionId."""
    async def handler(svc: Applications, body: Body) -> Body:
        svc.change(body["ApplicationName"], body["CurrentApplicationVersionId"], edit(body), check_sql=check_sql)
        return {}

    return handler


def _add_input(body: Body) -> Edit:
    return lambda app, change: apps.add_input(app, body["Input"], change)


def _add_processing(body: Body) -> Edit:
    def edit(app: Application, _change: apps.Change) -> None:
        app.child("inputs", body["InputId"])["InputProcessingConfiguration"] = body["InputProcessingConfiguration"]
    return edit


def _delete_processing(body: Body) -> Edit:
    def edit(app: Application, _change: apps.Change) -> None:
        app.child("inputs", body["InputId"]).pop("InputProcessingConfiguration", None)
    return edit


def _add_output(body: Body) -> Edit:
    return lambda app, change: apps.add_output(app, body["Output"], change)


def _delete_output(body: Body) -> Edit:
    return lambda app, _change: apps.remove_child(app, "outputs", body["OutputId"])


def _add_reference(body: Body) -> Edit:
    return lambda app, change: apps.add_reference(app, body["ReferenceDataSource"], change)


def _delete_reference(body: Body) -> Edit:
    return lambda app, _change: apps.remove_child(app, "references", body["ReferenceId"])


def _add_logging(body: Body) -> Edit:
    return lambda app, change: apps.add_logging(app, body["CloudWatchLoggingOption"], change)


def _delete_logging(body: Body) -> Edit:
    return lambda app, _change: apps.remove_child(app, "logging", body["CloudWatchLoggingOptionId"])


async def discover_input_schema(svc: Applications, body: Body) -> Body:
    return await svc.discover(body)


async def tag_resource(svc: Applications, body: Body) -> Body:
    svc.tag(body["ResourceARN"], body["Tags"])
    return {}


async def untag_resource(svc: Applications, body: Body) -> Body:
    svc.untag(body["ResourceARN"], body["TagKeys"])
    return {}


async def list_tags_for_resource(svc: Applications, body: Body) -> Body:
    app = svc.by_arn(body["ResourceARN"])
    return {"Tags": [{"Key": k, "Value": v} for k, v in sorted(app.tags.items())]}


OPERATIONS: dict[str, Operation] = {
    "CreateApplication": Operation(create_application, app_arn),
    "DescribeApplication": Operation(describe_application, app_arn),
    "ListApplications": Operation(list_applications),
    "UpdateApplication": Operation(update_application, app_arn),
    "DeleteApplication": Operation(delete_application, app_arn),
    "StartApplication": Operation(start_application, app_arn),
    "StopApplication": Operation(stop_application, app_arn),
    "AddApplicationInput": Operation(_changing(_add_input, check_sql=True), app_arn),
    "AddApplicationInputProcessingConfiguration": Operation(_changing(_add_processing), app_arn),
    "DeleteApplicationInputProcessingConfiguration": Operation(_changing(_delete_processing), app_arn),
    "AddApplicationOutput": Operation(_changing(_add_output), app_arn),
    "DeleteApplicationOutput": Operation(_changing(_delete_output), app_arn),
    "AddApplicationReferenceDataSource": Operation(_changing(_add_reference, check_sql=True), app_arn),
    "DeleteApplicationReferenceDataSource": Operation(_changing(_delete_reference), app_arn),
    "AddApplicationCloudWatchLoggingOption": Operation(_changing(_add_logging), app_arn),
    "DeleteApplicationCloudWatchLoggingOption": Operation(_changing(_delete_logging), app_arn),
    "DiscoverInputSchema": Operation(discover_input_schema),
    "TagResource": Operation(tag_resource, resource_arn),
    "UntagResource": Operation(untag_resource, resource_arn),
    "ListTagsForResource": Operation(list_tags_for_resource, resource_arn),
}
