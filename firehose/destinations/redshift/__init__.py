"""Delivery to Amazon Redshift by COPY from staged objects, or straight into PostgreSQL.

Firehose loads Redshift in three steps (spec: destinations.md §1), and so does this package
(``destination``):

1. Stage: the batch is written to the ``S3Configuration`` bucket (``stage``, S3 or a local
   directory) under its sealed key, so a retry overwrites the same object.
2. Manifest: a Redshift manifest naming that one object,
   ``{"entries": [{"url": "s3://<bucket>/<key>", "mandatory": true}]}``, is written to the same
   bucket at a key derived from the batch key (the Prefix of a Redshift destination has no
   expressions, so every batch key is ``<Prefix>YYYY/MM/dd/HH/<name>``)::

       batch     <Prefix>YYYY/MM/dd/HH/<stream>-<version>-<yyyy-MM-dd-HH-mm-ss>-<uuid>
       manifest  <Prefix>manifests/YYYY/MM/dd/HH/<the same name>
       skipped   errors/manifests/YYYY/MM/dd/HH/<the same name>   (retry duration ran out)

3. Load, chosen by the scheme of ``ClusterJDBCURL``, side by side:

   * ``jdbc:redshift://host:port/db``: the COPY Firehose composes (``copy``); the cluster reads
     the manifest and the object from S3 itself, CopyOptions pass verbatim.
   * ``jdbc:postgresql://host:port/db``: PostgreSQL cannot read s3://, so the daemon feeds the
     batch's own bytes to ``COPY <table> FROM STDIN`` (``postgres_load``), translating the
     CopyOptions it can honour (``copy_command``). ``validate`` refuses the others when the
     definition is created, rather than loading different data than Redshift would.

Exactly once: each attempt commits the rows together with the batch key in
``firehose_loaded_batches``, and an attempt that finds the key there loads nothing
(``loaded_batches``).

Every failure of an attempt (connection, SQL, data) is ``DestinationError(retriable=True)``
carrying the server's message: Firehose retries COPY, even into a missing table, until
``RetryOptions.DurationInSeconds`` runs out; then the pipeline calls ``expired``, which files the
manifest under errors/ for a manual load. Redshift COPYs (and CSV loads) of one destination run
one at a time, as Firehose's do, in the context's thread pool (psycopg is blocking) on a kept
connection. Text and JSON loads into PostgreSQL run side by side in worker processes, each
parsing its batch and streaming the rows in on its own kept connection; exactly-once holds per
batch key whatever the order. Connections are kept, and a stale one replaced, by ``session``.

TLS follows ``settings.http`` like every other destination. A Redshift cluster is reached with
``sslmode=verify-full`` against the system trust store (or ``http.ca_bundle``); only
``http.verify: false`` relaxes that, to ``prefer``. A ``jdbc:postgresql://`` server, typically a
database next to the daemon, uses ``prefer`` unless ``http.ca_bundle`` is set, which makes it
``verify-full`` against that bundle.
"""

from __future__ import annotations

from firehose.destinations.redshift.copy import copy_statement
from firehose.destinations.redshift.copy_command import LoadFormat, load_format
from firehose.destinations.redshift.destination import RedshiftDestination, validate

__all__ = ["LoadFormat", "RedshiftDestination", "copy_statement", "load_format", "validate"]
