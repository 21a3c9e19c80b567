"""The Apache Iceberg destination: records appended, updated and deleted in Iceberg v2 tables.

``destination.py`` delivers a batch as one commit, ``rows.py`` reads JSON records into Arrow in a
table's schema, ``commits.py`` makes a commit happen at most once per batch, ``catalogs.py`` opens the
catalog a definition names, ``compaction.py`` rewrites a table's small files.
"""

from firehose.destinations.iceberg.destination import IcebergDestination

__all__ = ["IcebergDestination"]
