"""One account's SQL applications, kept in one JSON file that is replaced atomically on every change.

The file is ``<account's state directory>/analytics/applications.json``
(``firehose.accounts`` says where an account's state lives). Every change is
written with ``write_atomic`` before the API answers, so an answered call
survives a crash and power loss, and a crash mid-write leaves the previous
file whole. Applications are few (50 per account) and changes rare, so the
whole file is rewritten each time.

A file this daemon cannot read is a ConfigError naming it: the daemon does
not start on top of applications it would silently forget.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from firehose.analytics.applications import Application
from firehose.errors import ConfigError
from firehose.storage.atomic import write_atomic

FILE = Path("analytics") / "applications.json"
_FORMAT = 1


class ApplicationStore:
    """The applications of one account by name, loaded at once and saved on ``save``."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / FILE
        self.applications: dict[str, Application] = {}
        if self.path.exists():
            try:
                data = orjson.loads(self.path.read_bytes())
                for item in data["applications"]:
                    app = Application.load(item)
                    self.applications[app.name] = app
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"{self.path}: the SQL applications cannot be read: {exc}") from exc

    def save(self) -> None:
        body = orjson.dumps({"format": _FORMAT, "applications": [a.dump() for a in self.applications.values()]},
                            option=orjson.OPT_INDENT_2)
        write_atomic(self.path, (body,))

    def names(self) -> list[str]:
        return sorted(self.applications)

    def __len__(self) -> int:
        return len(self.applications)
