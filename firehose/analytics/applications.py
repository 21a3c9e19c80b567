"""One SQL application: its configuration, status and version, and the changes the API makes to it.

An ``Application`` holds what CreateApplication and the Add*/Delete*/Update
calls configured, in the request shapes (``Input``, ``Output``,
``ReferenceDataSource``, ``CloudWatchLoggingOption``), each with the id it was
given; ``detail()`` renders DescribeApplication's ``ApplicationDetail`` from
it, which is also what the runtime is handed. The functions here change an
application's configuration and raise AWS's errors; they neither persist nor
run anything (``service.py`` does, in that order).

Invariants:

* ``version`` (``ApplicationVersionId``) grows by one with every configuration
  change (Update, Add*, Delete*), never with a tag change, a start or a stop.
* Child ids (``InputId``, ``OutputId``, ``ReferenceId``,
  ``CloudWatchLoggingOptionId``) are ``"<version>.<n>"``: the application
  version the change that added the child produced, and the child's ordinal
  among the children that change added (a CreateApplication with one input
  and two outputs gives ``1.1``, ``1.2``, ``1.3``; an AddApplicationOutput on
  version 3 gives ``4.1``). AWS documents no format; its examples show ``2.1``,
  ``4.1``, ``5.1``, which this reproduces *(our choice)*. An id is never reused
  within an application, since versions only grow.
* At most ``MAX_INPUTS`` input, ``MAX_OUTPUTS`` outputs and
  ``MAX_REFERENCES`` reference data source (limits.md, SQL era); exceeding
  one is InvalidArgumentException (the Add* operations do not model
  LimitExceededException; CreateApplication uses that for the account's
  application count only) *(our choice)*.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

from firehose.analytics.errors import (
    ConcurrentModificationException,
    InvalidArgumentException,
    ResourceNotFoundException,
    TooManyTagsException,
)
from firehose.analytics.sqltypes import SqlTypeError, parse_sql_type

Body = dict[str, Any]
Status = Literal["READY", "STARTING", "RUNNING", "STOPPING", "UPDATING", "DELETING"]

MAX_INPUTS = 1
MAX_OUTPUTS = 3
MAX_REFERENCES = 1
MAX_TAGS = 50
#: In-application input streams are <NamePrefix>_001 ... (InputParallelism.Count, 1 by default).
DEFAULT_PARALLELISM = 1

#: Each source/destination member and the description member Describe shows it under.
_INPUT_SOURCES = {"KinesisStreamsInput": "KinesisStreamsInputDescription",
                  "KinesisFirehoseInput": "KinesisFirehoseInputDescription"}
_OUTPUT_DESTINATIONS = {"KinesisStreamsOutput": "KinesisStreamsOutputDescription",
                        "KinesisFirehoseOutput": "KinesisFirehoseOutputDescription",
                        "LambdaOutput": "LambdaOutputDescription"}


def application_arn(region: str, account: str, name: str) -> str:
    partition = "aws-cn" if region.startswith("cn-") else "aws-us-gov" if region.startswith("us-gov-") else "aws"
    return f"arn:{partition}:kinesisanalytics:{region}:{account}:application/{name}"


def in_app_stream_names(input_config: Body) -> list[str]:
    """``SOURCE_SQL_STREAM_001`` ...: one per unit of the input's parallelism."""
    count = (input_config.get("InputParallelism") or {}).get("Count") or DEFAULT_PARALLELISM
    return [f"{input_config['NamePrefix']}_{i:03d}" for i in range(1, count + 1)]


@dataclass
class Application:
    """An application as stored (``store.py``) and served. Children are request-shaped dicts with their id."""

    name: str
    status: Status
    version: int
    created_ms: int
    updated_ms: int
    description: str | None = None
    code: str | None = None
    inputs: list[Body] = field(default_factory=list)
    outputs: list[Body] = field(default_factory=list)
    references: list[Body] = field(default_factory=list)
    logging: list[Body] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    #: "api", or "config" for an application the config file declares (a reload may change or delete it).
    origin: str = "api"
    #: The declaration it was last made from (config-declared applications).
    config_digest: str = ""
    #: InputId → InputStartingPosition of the last StartApplication (a restart resumes the inputs).
    positions: dict[str, str] = field(default_factory=dict)

    # -- persistence

    def dump(self) -> Body:
        return {"name": self.name, "status": self.status, "version": self.version, "created_ms": self.created_ms,
                "updated_ms": self.updated_ms, "description": self.description, "code": self.code,
                "inputs": self.inputs, "outputs": self.outputs, "references": self.references,
                "logging": self.logging, "tags": self.tags, "origin": self.origin,
                "config_digest": self.config_digest, "positions": self.positions}

    @classmethod
    def load(cls, data: Body) -> Application:
        return cls(**data)

    # -- views

    def summary(self, arn: str) -> Body:
        return {"ApplicationName": self.name, "ApplicationARN": arn, "ApplicationStatus": self.status}

    def detail(self, arn: str) -> Body:
        """DescribeApplication's ``ApplicationDetail`` (timestamps as epoch seconds, as AWS sends them)."""
        detail: Body = {"ApplicationName": self.name}
        if self.description is not None:
            detail["ApplicationDescription"] = self.description
        detail.update({
            "ApplicationARN": arn,
            "ApplicationStatus": self.status,
            "CreateTimestamp": self.created_ms / 1000,
            "LastUpdateTimestamp": self.updated_ms / 1000,
            "InputDescriptions": [self._input_description(i) for i in self.inputs],
            "OutputDescriptions": [_output_description(o) for o in self.outputs],
            "ReferenceDataSourceDescriptions": [_reference_description(r) for r in self.references],
            "CloudWatchLoggingOptionDescriptions": [dict(c) for c in self.logging],
        })
        if self.code is not None:
            detail["ApplicationCode"] = self.code
        detail["ApplicationVersionId"] = self.version
        return detail

    def _input_description(self, config: Body) -> Body:
        out: Body = {"InputId": config["InputId"], "NamePrefix": config["NamePrefix"],
                     "InAppStreamNames": in_app_stream_names(config)}
        processing = config.get("InputProcessingConfiguration")
        if processing:
            out["InputProcessingConfigurationDescription"] = {
                "InputLambdaProcessorDescription": dict(processing["InputLambdaProcessor"])}
        for member, described in _INPUT_SOURCES.items():
            if config.get(member):
                out[described] = dict(config[member])
        out["InputSchema"] = copy.deepcopy(config["InputSchema"])
        out["InputParallelism"] = {"Count": (config.get("InputParallelism") or {}).get("Count")
                                   or DEFAULT_PARALLELISM}
        position = self.positions.get(config["InputId"])
        if position:
            out["InputStartingPositionConfiguration"] = {"InputStartingPosition": position}
        return out

    # -- lookups

    def child(self, kind: Literal["inputs", "outputs", "references", "logging"], child_id: str) -> Body:
        """The child with that id (ResourceNotFoundException naming it when there is none)."""
        key = _ID_MEMBER[kind]
        for item in getattr(self, kind):
            if item[key] == child_id:
                return item  # type: ignore[no-any-return]
        raise ResourceNotFoundException(f"{_KIND_NAME[kind]} with id {child_id} not found in application "
                                        f"{self.name}.")

    def check_version(self, given: int) -> None:
        if given != self.version:
            raise ConcurrentModificationException(
                f"Cannot update application {self.name}: CurrentApplicationVersionId {given} is not the "
                f"current version {self.version}.")


_ID_MEMBER = {"inputs": "InputId", "outputs": "OutputId", "references": "ReferenceId",
              "logging": "CloudWatchLoggingOptionId"}
_KIND_NAME = {"inputs": "Input", "outputs": "Output", "references": "Reference data source",
              "logging": "CloudWatch logging option"}


def _output_description(config: Body) -> Body:
    out: Body = {"OutputId": config["OutputId"], "Name": config["Name"]}
    for member, described in _OUTPUT_DESTINATIONS.items():
        if config.get(member):
            out[described] = dict(config[member])
    out["DestinationSchema"] = dict(config["DestinationSchema"])
    return out


def _reference_description(config: Body) -> Body:
    return {"ReferenceId": config["ReferenceId"], "TableName": config["TableName"],
            "S3ReferenceDataSourceDescription": dict(config["S3ReferenceDataSource"]),
            "ReferenceSchema": copy.deepcopy(config["ReferenceSchema"])}


# -- checks of one child (beyond the model, which the front door has checked) ------------------------------


def check_schema(schema: Body, where: str) -> None:
    """A SourceSchema the runtime can map records with: a known SqlType per column, distinct column names,
    mapping parameters of the record format's own kind, and a JSONPath Mapping for each JSON column."""
    fmt = schema["RecordFormat"]
    kind = fmt["RecordFormatType"]
    params = fmt.get("MappingParameters") or {}
    other = "CSVMappingParameters" if kind == "JSON" else "JSONMappingParameters"
    if params.get(other):
        raise InvalidArgumentException(f"{where}: RecordFormatType {kind} cannot take {other}.")
    seen: set[str] = set()
    for column in schema["RecordColumns"]:
        name = column["Name"]
        if name in seen:
            raise InvalidArgumentException(f"{where}: column {name} is declared more than once.")
        seen.add(name)
        try:
            parse_sql_type(column["SqlType"])
        except SqlTypeError as exc:
            raise InvalidArgumentException(f"{where}: column {name}: {exc}") from None
        if kind == "JSON" and not column.get("Mapping"):
            raise InvalidArgumentException(f"{where}: column {name} needs a Mapping (a JSONPath such as "
                                           f"$.{name}) for a JSON source.")


def _exactly_one(config: Body, members: Any, where: str) -> None:
    given = [m for m in members if config.get(m)]
    if len(given) != 1:
        raise InvalidArgumentException(f"{where} must name exactly one of {', '.join(members)}; "
                                       f"got {len(given)}.")


def check_input(config: Body) -> None:
    _exactly_one(config, _INPUT_SOURCES, "An input")
    check_schema(config["InputSchema"], f"Input {config['NamePrefix']}")


def check_output(config: Body) -> None:
    _exactly_one(config, _OUTPUT_DESTINATIONS, f"Output {config['Name']}")


def check_reference(config: Body) -> None:
    if not config.get("S3ReferenceDataSource"):
        raise InvalidArgumentException(f"Reference data source {config['TableName']} needs an "
                                       "S3ReferenceDataSource.")
    check_schema(config["ReferenceSchema"], f"Reference data source {config['TableName']}")


def check_limits(app: Application) -> None:
    for kind, limit, what in (("inputs", MAX_INPUTS, "input (streaming source)"),
                              ("outputs", MAX_OUTPUTS, "outputs (destinations)"),
                              ("references", MAX_REFERENCES, "reference data source")):
        if len(getattr(app, kind)) > limit:
            raise InvalidArgumentException(f"An application can have at most {limit} {what}; application "
                                           f"{app.name} would have {len(getattr(app, kind))}.")
    tables = [r["TableName"] for r in app.references]
    if len(set(tables)) != len(tables):
        raise InvalidArgumentException(f"Reference table names must be distinct in application {app.name}.")


def check_tags(tags: dict[str, str], name: str) -> None:
    if len(tags) > MAX_TAGS:
        raise TooManyTagsException(f"Application {name} would have {len(tags)} tags; at most {MAX_TAGS} are "
                                   "allowed.")


def tag_map(tags: list[Body]) -> dict[str, str]:
    return {t["Key"]: t.get("Value") or "" for t in tags}


# -- configuration changes ---------------------------------------------------------------------


class Change:
    """Children added by one configuration change, numbered ``<new version>.<n>`` in the order they come."""

    def __init__(self, app: Application) -> None:
        self.app = app
        self.version = app.version + 1
        self.count = 0

    def new_id(self) -> str:
        self.count += 1
        return f"{self.version}.{self.count}"


def new_application(body: Body, now: int) -> Application:
    """The application a CreateApplication body describes (version 1, READY), children checked and numbered."""
    app = Application(name=body["ApplicationName"], status="READY", version=0, created_ms=now, updated_ms=now,
                      description=body.get("ApplicationDescription"), code=body.get("ApplicationCode"),
                      tags=tag_map(body.get("Tags") or []))
    change = Change(app)
    for config in body.get("Inputs") or []:
        add_input(app, config, change)
    for config in body.get("Outputs") or []:
        add_output(app, config, change)
    for config in body.get("CloudWatchLoggingOptions") or []:
        add_logging(app, config, change)
    check_limits(app)
    check_tags(app.tags, app.name)
    app.version = 1
    return app


def add_input(app: Application, config: Body, change: Change) -> None:
    check_input(config)
    app.inputs.append({"InputId": change.new_id(), **copy.deepcopy(config)})


def add_output(app: Application, config: Body, change: Change) -> None:
    check_output(config)
    app.outputs.append({"OutputId": change.new_id(), **copy.deepcopy(config)})


def add_reference(app: Application, config: Body, change: Change) -> None:
    check_reference(config)
    app.references.append({"ReferenceId": change.new_id(), **copy.deepcopy(config)})


def add_logging(app: Application, config: Body, change: Change) -> None:
    app.logging.append({"CloudWatchLoggingOptionId": change.new_id(), "LogStreamARN": config["LogStreamARN"],
                        "RoleARN": config["RoleARN"]})


def _apply_arn_update(target: Body, update: Body) -> Body:
    """``{ResourceARNUpdate, RoleARNUpdate}`` applied to ``{ResourceARN, RoleARN}``."""
    out = dict(target)
    for member, value in update.items():
        if value is not None:
            out[member.removesuffix("Update")] = value
    return out


def _switch(config: Body, update: Body, members: dict[str, str]) -> None:
    """A source/destination update: the one named replaces whichever the child had (ARNs given in full)."""
    for member in members:
        changed = update.get(f"{member}Update")
        if changed is None:
            continue
        current = config.get(member) or {}
        merged = _apply_arn_update(current, changed)
        if "ResourceARN" not in merged or "RoleARN" not in merged:
            raise InvalidArgumentException(f"{member}Update must give ResourceARNUpdate and RoleARNUpdate when "
                                           f"the {member} is new.")
        for other in members:
            config.pop(other, None)
        config[member] = merged


def update_input(app: Application, update: Body) -> None:
    config = app.child("inputs", update["InputId"])
    new = copy.deepcopy(config)
    if update.get("NamePrefixUpdate") is not None:
        new["NamePrefix"] = update["NamePrefixUpdate"]
    _switch(new, update, _INPUT_SOURCES)
    processing = update.get("InputProcessingConfigurationUpdate")
    if processing is not None:
        current = (new.get("InputProcessingConfiguration") or {}).get("InputLambdaProcessor") or {}
        merged = _apply_arn_update(current, processing["InputLambdaProcessorUpdate"])
        new["InputProcessingConfiguration"] = {"InputLambdaProcessor": merged}
    schema = update.get("InputSchemaUpdate")
    if schema is not None:
        s = new["InputSchema"]
        if schema.get("RecordFormatUpdate") is not None:
            s["RecordFormat"] = schema["RecordFormatUpdate"]
        if schema.get("RecordEncodingUpdate") is not None:
            s["RecordEncoding"] = schema["RecordEncodingUpdate"]
        if schema.get("RecordColumnUpdates") is not None:
            s["RecordColumns"] = schema["RecordColumnUpdates"]
    parallelism = update.get("InputParallelismUpdate")
    if parallelism is not None and parallelism.get("CountUpdate") is not None:
        new["InputParallelism"] = {"Count": parallelism["CountUpdate"]}
    check_input(new)
    config.clear()
    config.update(new)


def update_output(app: Application, update: Body) -> None:
    config = app.child("outputs", update["OutputId"])
    new = copy.deepcopy(config)
    if update.get("NameUpdate") is not None:
        new["Name"] = update["NameUpdate"]
    _switch(new, update, _OUTPUT_DESTINATIONS)
    if update.get("DestinationSchemaUpdate") is not None:
        new["DestinationSchema"] = update["DestinationSchemaUpdate"]
    check_output(new)
    config.clear()
    config.update(new)


def update_reference(app: Application, update: Body) -> None:
    config = app.child("references", update["ReferenceId"])
    new = copy.deepcopy(config)
    if update.get("TableNameUpdate") is not None:
        new["TableName"] = update["TableNameUpdate"]
    s3 = update.get("S3ReferenceDataSourceUpdate")
    if s3 is not None:
        for member, value in s3.items():
            if value is not None:
                new["S3ReferenceDataSource"][member.removesuffix("Update")] = value
    if update.get("ReferenceSchemaUpdate") is not None:
        new["ReferenceSchema"] = update["ReferenceSchemaUpdate"]
    check_reference(new)
    config.clear()
    config.update(new)


def update_logging(app: Application, update: Body) -> None:
    config = app.child("logging", update["CloudWatchLoggingOptionId"])
    if update.get("LogStreamARNUpdate") is not None:
        config["LogStreamARN"] = update["LogStreamARNUpdate"]
    if update.get("RoleARNUpdate") is not None:
        config["RoleARN"] = update["RoleARNUpdate"]


def apply_update(app: Application, update: Body) -> None:
    """UpdateApplication's ``ApplicationUpdate`` applied in place (the caller works on a copy)."""
    if not any(update.get(m) is not None for m in ("InputUpdates", "ApplicationCodeUpdate", "OutputUpdates",
                                                   "ReferenceDataSourceUpdates", "CloudWatchLoggingOptionUpdates")):
        raise InvalidArgumentException("ApplicationUpdate names no change.")
    for item in update.get("InputUpdates") or []:
        update_input(app, item)
    if update.get("ApplicationCodeUpdate") is not None:
        app.code = update["ApplicationCodeUpdate"]
    for item in update.get("OutputUpdates") or []:
        update_output(app, item)
    for item in update.get("ReferenceDataSourceUpdates") or []:
        update_reference(app, item)
    for item in update.get("CloudWatchLoggingOptionUpdates") or []:
        update_logging(app, item)
    check_limits(app)


def remove_child(app: Application, kind: Literal["inputs", "outputs", "references", "logging"],
                 child_id: str) -> None:
    child = app.child(kind, child_id)
    getattr(app, kind).remove(child)
