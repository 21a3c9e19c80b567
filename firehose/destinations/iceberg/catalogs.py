"""Which Iceberg catalog a definition's ``CatalogARN`` names, and opening it with pyiceberg.

The daemon's ``catalogs:`` setting maps a CatalogARN to ``{type: sql | rest, uri, warehouse,
properties}``, the way ``buckets:`` maps bucket ARNs. A definition that names no CatalogARN, or one
that is not listed, uses the ``default`` entry; without one, an embedded SQL catalog on SQLite in
``<state_dir>/iceberg/catalog.db`` with a ``file://`` warehouse beside it, so a stream pasted from
AWS works on a machine with nothing else installed.

``sql`` takes any SQLAlchemy URL pyiceberg's SqlCatalog accepts: ``sqlite:////abs/catalog.db`` or
``postgresql+psycopg://user:password@host/db`` (psycopg 3, already a dependency for Redshift). Both
commit with an optimistic compare-and-swap on the table's metadata location. ``rest`` is pyiceberg's
RestCatalog: ``uri``, ``warehouse`` (the catalog's warehouse, as the server names it) and, in
``properties``, the credentials (``credential`` with ``oauth2-server-uri``, or ``token``) and the
FileIO's (``s3.endpoint``, keys) where the server does not hand them out; commits are checked by the
server (a 409 when the table moved on). The tests run it against SeaweedFS's Iceberg REST catalog
(``weed mini``, tables in an S3 table bucket). A definition's ``WarehouseLocation`` places the tables
the daemon creates in a REST catalog at ``<WarehouseLocation>/<database>/<table>``; a catalog that
manages locations itself (S3 Tables-style table buckets) lets a table write only at its own layout
(``s3://<bucket>/<database>/<table>``), so there leave it unset or set it to the bucket.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from firehose.settings import CatalogSettings, Settings

DEFAULT = "default"


def catalog_settings(settings: Settings, catalog_arn: str | None) -> CatalogSettings:
    """The entry for ``catalog_arn`` (else ``default``), with the embedded defaults filled in."""
    entry = settings.catalogs.get(catalog_arn or DEFAULT) or settings.catalogs.get(DEFAULT) or CatalogSettings()
    if entry.type == "sql" and (entry.uri is None or entry.warehouse is None):
        home = Path(settings.state_dir).resolve() / "iceberg"
        entry = entry.model_copy(update={
            "uri": entry.uri or f"sqlite:///{home / 'catalog.db'}",
            "warehouse": entry.warehouse or (home / "warehouse").as_uri(),
        })
    if entry.type == "rest" and not entry.uri:
        raise ValueError(f"catalog {catalog_arn or DEFAULT!r} is a REST catalog but has no uri")
    return entry


def catalog_properties(entry: CatalogSettings) -> dict[str, str]:
    """pyiceberg's properties for an entry (``type``, ``uri``, ``warehouse`` and the extra ones)."""
    props = {"type": entry.type, **entry.properties}
    if entry.uri:
        props["uri"] = entry.uri
    if entry.warehouse:
        props["warehouse"] = entry.warehouse
    return props


def open_catalog(entry: CatalogSettings, name: str = DEFAULT) -> Any:
    """A pyiceberg Catalog for an entry (blocking: SQL catalogs create their tables on first use).

    A SQLite file's directory is created first: SQLAlchemy does not."""
    from pyiceberg.catalog import load_catalog

    if entry.type == "sql" and entry.uri and entry.uri.startswith("sqlite:///"):
        Path(entry.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if entry.warehouse and entry.warehouse.startswith("file://"):
        Path(entry.warehouse.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
    return load_catalog(name, **catalog_properties(entry))
