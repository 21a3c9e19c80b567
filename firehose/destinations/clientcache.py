"""boto3 clients made once per process and configuration, shared by every stream that uses them.

A boto3 client is thread-safe, and each one carries its own parsed service model (megabytes): one
per stream would make memory grow with the number of streams. The AWS configuration a client reads
from the environment (``AWS_*`` variables) is part of the key, so a changed environment makes a new
client rather than reusing one configured from the old.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable
from typing import Any


class ClientCache:
    """One client per (configuration, AWS environment); ``make`` runs at most once per key."""

    def __init__(self) -> None:
        self._clients: dict[tuple[Hashable, tuple[tuple[str, str], ...]], Any] = {}
        self._lock = threading.Lock()

    def get(self, config: Hashable, make: Callable[[], Any]) -> Any:
        key = (config, tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_"))))
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = make()
            return client
