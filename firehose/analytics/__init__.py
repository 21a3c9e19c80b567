"""Kinesis Data Analytics for SQL applications, running on the daemon.

An application reads one streaming source (a Kinesis stream or a delivery stream), maps its records
to rows through the input schema, runs its SQL (in-application streams and pumps) continuously over
micro-batches with an embedded analytical engine, and sends the rows of its output streams to
delivery streams, Kinesis streams or Lambda-style functions.

The package stands beside the delivery pipeline, as the Kinesis sidecar does:

* ``sqltypes``: the SQL types of columns, as Arrow and DuckDB types (the one place they are mapped);
* ``sql``: the dialect (parsed into a program of streams and pumps) and the engine that runs it;
* the API (``KinesisAnalytics_20150814``), the applications' store and their runtime.
"""
