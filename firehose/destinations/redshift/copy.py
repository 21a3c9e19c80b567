"""Redshift's COPY, as Firehose composes it: the cluster reads the manifest, and the staged object
it names, from S3 itself, and CopyOptions pass verbatim."""

from __future__ import annotations

from firehose.definitions import RedshiftDestinationConfiguration
from firehose.destinations.redshift.copy_command import copy_target


def redshift_literal(value: str) -> str:
    """A string literal as Redshift's QUOTE_LITERAL writes it: quotes and backslashes doubled,
    since Redshift reads backslash escapes inside literals."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def copy_statement(config: RedshiftDestinationConfiguration, manifest_url: str) -> str:
    """The COPY Firehose runs: ``COPY <DataTableName> [(<DataTableColumns>)] FROM '<manifest>'
    CREDENTIALS 'aws_iam_role=<RoleARN>' MANIFEST <CopyOptions>;``.

    Table, columns and options are SQL written by the definition's owner and go in verbatim, as
    on AWS; only the two values the daemon supplies are quoted.
    """
    cmd = config.copy_command
    options = (cmd.copy_options or "").strip()
    return (f"COPY {copy_target(cmd)} FROM {redshift_literal(manifest_url)} "
            f"CREDENTIALS {redshift_literal('aws_iam_role=' + config.role_arn)} MANIFEST"
            f"{' ' + options if options else ''};")

