"""The live console: a page the daemon serves at ``/console`` (and at ``/`` to a browser).

Plain HTML, CSS and JavaScript shipped inside the package (``static/``), with no
CDN or chart library, so the page works offline. The files hold no data: the
page's script reads the daemon's own operator JSON (``/metrics.json``,
``/readyz`` and ``/console/api/…``), which are gated like ``/metrics``.
The page shows every piece of that JSON as text (``textContent``), never as
HTML: stream names, error messages and record data are the users'.

This module only knows files and HTTP headers; the operator routes
(``firehose.frontdoor.operator``) decide who may read what.
"""

from __future__ import annotations

from importlib import resources

#: The page, and the prefix of its assets and its own JSON.
PAGE = "/console"
#: Stream definitions and their recent error records, for the page (gated like /metrics.json).
STREAMS_JSON = "/console/api/streams"
#: The Kinesis sidecar's streams, shards, lag and throughput (``{"enabled": false}`` when it does not run here).
KINESIS_JSON = "/console/api/kinesis"
#: The agents' flows, read by the daemon from the agents' status listeners (``console.agents``).
AGENTS_JSON = "/console/api/agents"

_TYPES = {".html": b"text/html; charset=utf-8", ".css": b"text/css; charset=utf-8",
          ".js": b"text/javascript; charset=utf-8"}
#: Path → (body, content type), read once from the package: the files are small and never change while running.
_ASSETS: dict[str, tuple[bytes, bytes]] = {}


def _load() -> dict[str, tuple[bytes, bytes]]:
    if not _ASSETS:
        static = resources.files(__package__) / "static"
        for entry in static.iterdir():
            suffix = entry.name[entry.name.rfind("."):]
            if suffix in _TYPES:
                path = PAGE if entry.name == "index.html" else f"{PAGE}/{entry.name}"
                _ASSETS[path] = (entry.read_bytes(), _TYPES[suffix])
    return _ASSETS


def asset(path: str) -> tuple[bytes, bytes] | None:
    """The body and content type of a console file by its URL path (``/console``, ``/console/console.js``)."""
    return _load().get(PAGE if path == PAGE + "/" else path)


def is_asset(path: str) -> bool:
    return path == PAGE or path.startswith(PAGE + "/") and asset(path) is not None


def wants_html(accept: bytes) -> bool:
    """Whether an ``Accept`` header prefers HTML (a browser) over whatever else it lists.

    ``text/html`` must be listed with a quality at least that of every other type, ``*/*``
    included; an absent header, ``*/*`` alone or ``application/json`` is not a browser.
    """
    best_html, best_other = -1.0, -1.0
    for item in accept.decode("latin-1").split(","):
        kind, _, params = item.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        kind = kind.strip().lower()
        if kind == "text/html":
            best_html = max(best_html, quality)
        elif kind:
            best_other = max(best_other, quality)
    return best_html > 0 and best_html >= best_other
