"""systemd's service notification protocol (``sd_notify``): readiness, reloads, stopping, watchdog.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a datagram socket, ``@`` for the abstract
namespace) and, with ``WatchdogSec=``, ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``). A message is one
datagram of ``KEY=VALUE`` lines. The protocol is that one ``sendto``; the libraries that wrap it
are either unmaintained or need libsystemd's headers to build, so it is written here, once.

Invariants: outside systemd (no ``NOTIFY_SOCKET``) every call does nothing; a failed send is
logged once and never raised (a service must not die because its supervisor went away); the
watchdog is pinged from the event loop itself, at half the interval systemd expects, so a loop
that stops turning stops the pings and systemd restarts the service.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("firehose.systemd")


class Notifier:
    """Sends notifications to the service manager named by the environment, if any."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        path = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + path[1:] if path.startswith("@") else path
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        on = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        #: Seconds between watchdog pings (half of ``WatchdogSec``), or None without a watchdog.
        self.watchdog_interval: float | None = int(usec) / 2e6 if on else None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, **fields: str | int) -> None:
        """Send ``KEY=VALUE`` lines (``ready=1`` is sent as ``READY=1``)."""
        if not self._address:
            return
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self._address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("Could not notify the service manager.", extra={"error": str(exc)})

    def ready(self, status: str) -> None:
        self.notify(ready=1, status=status)

    def reloading(self) -> None:
        # MONOTONIC_USEC lets systemd (253+) tell this reload from an earlier one.
        self.notify(reloading=1, monotonic_usec=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)

    def stopping(self) -> None:
        self.notify(stopping=1)

    async def keep_alive(self) -> None:
        """Ping the watchdog for as long as the event loop turns (cancel to stop)."""
        if self.watchdog_interval is None:
            return
        while True:
            self.notify(watchdog=1)
            await asyncio.sleep(self.watchdog_interval)
