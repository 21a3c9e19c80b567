"""The API listeners' connection layer: binding, TLS, a connection cap and deadlines for slow clients.

Both servers (uvicorn for the Firehose API and the metrics listener, Hypercorn for the Kinesis API)
run on a ``Listener``: a socket bound and listening before its server starts (a busy port is one
``AddressInUse`` error naming the address, and nothing else can answer on the port once it is
ours), an accept loop that takes at most ``limits.max_connections`` connections at a time (the rest
wait, unaccepted, in the kernel's backlog; none is answered with an error), the TLS handshake
within ``limits.header_timeout_seconds``, and a watchdog that closes connections whose client is
too slow.

Deadlines, on both servers (per stream where HTTP/2 has streams):

* a request head must be complete within ``header_timeout_seconds`` of its first byte, whatever
  the rate it trickles in at (a new connection also gets that long for its first byte);
* a request body within ``body_timeout_seconds`` of its head;
* a keep-alive connection with nothing in flight is closed after ``idle_timeout_seconds``;
* a client that takes none of a response for ``body_timeout_seconds`` (writing to it has stalled)
  is dropped, so not reading cannot hold a connection either;
* a head over ``max_header_bytes`` is answered 431 (HTTP/1.1), and never buffered beyond that
  plus one read; on HTTP/2 a header block over it ends the connection as soon as a frame header
  announces it (before its payload reaches the HTTP/2 library).

On HTTP/2 the head and body deadlines apply to each stream; the connection of a stream that misses
one is closed (its client is the one trickling), and a connection takes at most
``H2_MAX_CONCURRENT_STREAMS`` streams at once.

Time the server itself holds a connection back (a pipelined request waiting for the one before, an
unanswered ``Expect: 100-continue``) is not charged to the client: a deadline that passes while the
server is not reading is moved on instead of closing. A body's deadline is the exception: it runs
from the end of the head whether or not the application is reading it yet (it waits for memory when
the budget is full), so a crowd of requests that stop short cannot keep their places in that queue,
and a request cannot wait for memory longer than a body may take to arrive.

TLS: one ``ssl.SSLContext`` per listener (``ServerTls``); ``reload()`` loads the certificate and
key again into that same context, so new handshakes get the new certificate while open
connections carry on. ``reload_tls()`` does that for every listener of the process (SIGHUP).

Descriptors: the soft RLIMIT_NOFILE is raised to the hard limit when the first listener binds,
and the caps of all live listeners together stay ``RESERVED_DESCRIPTORS`` below it (half of it
when the limit is under twice that; lowered, with one warning, when they would not), so delivery
always has descriptors for files and connections.

This is a foundation module: it imports only the standard library, uvicorn, Hypercorn (and h11,
which Hypercorn uses), ``firehose.settings`` and ``firehose.errors``. The Hypercorn integration
uses its connection classes (``TCPServer``, ``H11Protocol``, ``H2Protocol``, ``WorkerContext``),
written against Hypercorn 0.18.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import resource
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Protocol

import h11
import uvicorn
from hypercorn.asyncio.tcp_server import MAX_RECV, TCPServer
from hypercorn.asyncio.worker_context import WorkerContext
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed, RawData
from hypercorn.protocol.h2 import H2Protocol
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.utils import wrap_app
from hyperframe.frame import GoAwayFrame  # h2's frame classes (a dependency of h2, itself Hypercorn's)
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from firehose.errors import ConfigError
from firehose.settings import LimitsSettings, TlsSettings

log = logging.getLogger("firehose.listeners")

#: ALPN protocols offered: the Kinesis API speaks HTTP/2 and HTTP/1.1, the others HTTP/1.1 only.
H2_ALPN = ("h2", "http/1.1")
HTTP1_ALPN = ("http/1.1",)
#: Descriptors kept free of every listener's cap, for the spool, destinations and sources.
RESERVED_DESCRIPTORS = 256
#: Concurrent HTTP/2 streams one connection may open (Hypercorn's default is 100): with the
#: connection cap this bounds the requests in flight; SDKs queue further requests client-side.
H2_MAX_CONCURRENT_STREAMS = 32
#: How long a TLS close waits for the peer's close_notify before the socket is dropped.
_TLS_SHUTDOWN_SECONDS = 2.0
_BACKLOG = 2048
#: accept() errors that concern one connection only (it went away before it was taken): go on.
_TRANSIENT = {errno.ECONNABORTED, errno.EPROTO, errno.EINTR, errno.EAGAIN}
_INF = math.inf
#: Connection phases: waiting for the first request, between requests, reading a head, reading a
#: body, and waiting for the server (the request is complete, or HTTP/2 with nothing owed).
_FRESH, _IDLE, _HEAD, _BODY, _SERVER = "fresh", "idle", "head", "body", "server"


class ListenError(OSError):
    """A listener could not bind its address; the message names the listener, address and port."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class AddressInUse(ListenError):
    """Something else is listening on the address and port."""


# -- TLS --------------------------------------------------------------------------------------------


class ServerTls:
    """A listener's TLS context, built once and reloadable in place.

    Invariant: ``context`` is the object every handshake of the listener uses, for the listener's
    lifetime; ``reload`` changes what it holds, never which object it is. A certificate and key
    that do not load (unreadable, or not a pair) leave the context as it was.
    """

    def __init__(self, settings: TlsSettings, alpn: Sequence[str]) -> None:
        if settings.cert_file is None or settings.key_file is None:
            raise ConfigError("tls: cert_file and key_file are both needed")
        self.cert_file, self.key_file = settings.cert_file, settings.key_file
        self.client_ca_file = settings.client_ca_file
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.set_alpn_protocols(list(alpn))
        if self.client_ca_file is not None:
            self.context.verify_mode = ssl.CERT_REQUIRED
        try:
            self._load(self.context)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"tls: {exc}") from exc

    def reload(self) -> None:
        """Read the certificate and key again (and add the client CA file's certificates).

        Raises OSError or ssl.SSLError, leaving the context unchanged, when they do not load.
        """
        self._load(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))  # first on a scratch context
        self._load(self.context)

    def _load(self, context: ssl.SSLContext) -> None:
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
        except ssl.SSLError as exc:
            raise ssl.SSLError(exc.errno, f"cannot use {self.cert_file} with {self.key_file}: {exc}") from exc
        if self.client_ca_file is not None:
            context.load_verify_locations(cafile=self.client_ca_file)


def server_tls(settings: TlsSettings, alpn: Sequence[str]) -> ServerTls | None:
    """The listener's TLS from ``tls:`` settings, or None when TLS is off. ConfigError if it cannot load."""
    return ServerTls(settings, alpn) if settings.enabled else None


# -- descriptors --------------------------------------------------------------------------------------


def raise_descriptor_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (as far as the kernel allows); the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for target in (hard, 1 << 20):
        if target == resource.RLIM_INFINITY or target <= soft:
            continue
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
    return soft


def reserved_descriptors(soft: int) -> int:
    """Descriptors kept from connections for the spool, the ledger, delivery and workers:
    ``RESERVED_DESCRIPTORS``, but at most half of a low limit (a 256-descriptor limit still
    leaves 128 for connections rather than one)."""
    return min(RESERVED_DESCRIPTORS, soft // 2)


class _Descriptors:
    """Every live listener of the process, and the caps that fit their descriptor budget."""

    def __init__(self) -> None:
        self.listeners: list[Listener] = []
        self._warned: tuple[int, ...] = ()

    def add(self, listener: Listener) -> None:
        self.listeners.append(listener)
        self.fit(raise_descriptor_limit())

    def remove(self, listener: Listener) -> None:
        if listener in self.listeners:
            self.listeners.remove(listener)
            self.fit(resource.getrlimit(resource.RLIMIT_NOFILE)[0])

    def fit(self, soft: int) -> None:
        wanted = [listener.limits.max_connections for listener in self.listeners]
        reserved = reserved_descriptors(soft)
        room = max(len(wanted), soft - reserved)
        caps = wanted if sum(wanted) <= room else [max(1, w * room // sum(wanted)) for w in wanted]
        for listener, cap in zip(self.listeners, caps, strict=True):
            listener.cap = cap
        if caps != wanted and tuple(caps) != self._warned:
            self._warned = tuple(caps)
            names = ", ".join(f"{lsn.name} {cap}" for lsn, cap in zip(self.listeners, caps, strict=True))
            log.warning("Lowered the connection caps to keep descriptors free for delivery.",
                        extra={"caps": names, "descriptor_limit": soft, "reserved": reserved})


_descriptors = _Descriptors()


def live_listeners() -> list[Listener]:
    """Every listener of this process that has not been closed."""
    return list(_descriptors.listeners)


def reload_tls() -> None:
    """Reload the certificate of every listener of this process that has TLS (what SIGHUP does); logs it."""
    with_tls = [listener for listener in _descriptors.listeners if listener.tls is not None]
    if not with_tls:
        log.info("No listener has TLS; there is no certificate to reload.")
    for listener in with_tls:
        listener.reload_tls()


# -- the listener -----------------------------------------------------------------------------------


class Watched(Protocol):
    """A connection the watchdog looks after: ``expires`` is a loop time (``math.inf``: no deadline)."""

    @property
    def expires(self) -> float: ...

    def expire(self, now: float) -> None: ...


class Deadlines:
    """A watched connection's two deadlines: its phase's (``deadline``: the head, the body, idle), and
    its response's (``stalled``: while the client takes none of what is written to it, it must start
    again within ``body_timeout_seconds``, so a client that stops reading cannot hold the connection)."""

    deadline = _INF
    stalled = _INF

    @property
    def expires(self) -> float:
        return min(self.deadline, self.stalled)

    def writing_paused(self, now: float, limits: LimitsSettings) -> None:
        self.stalled = now + limits.body_timeout_seconds

    def writing_resumed(self) -> None:
        self.stalled = _INF


class Slot:
    """One accepted connection's place under its listener's cap; given back exactly once."""

    __slots__ = ("_listener",)

    def __init__(self, listener: Listener) -> None:
        self._listener: Listener | None = listener

    def release(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.released()


ProtocolFactory = Callable[[Slot], asyncio.BaseProtocol]


class Listener:
    """A bound, listening socket with its limits, TLS, accept loop and watchdog.

    Invariants: at most ``cap`` connections are open (accepted, from accept to close, TLS
    handshakes included); the accept loop waits while the cap is reached; every connection in
    ``watched`` is closed by the watchdog once its ``expires`` has passed.
    """

    def __init__(self, sock: socket.socket, *, name: str, limits: LimitsSettings, tls: ServerTls | None) -> None:
        self.sock = sock
        self.name = name
        self.limits = limits
        self.tls = tls
        self.cap = limits.max_connections
        self.connections = 0
        self.watched: set[Watched] = set()
        self._room = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._opening: set[asyncio.Task[None]] = set()
        self._closed = False
        self._failing = False
        shortest = min(limits.header_timeout_seconds, limits.body_timeout_seconds, limits.idle_timeout_seconds)
        #: How often the watchdog looks: an eighth of the shortest deadline, within 50 ms .. 1 s.
        self.tick = min(1.0, max(0.05, shortest / 8))
        _descriptors.add(self)

    @classmethod
    def bind(cls, host: str, port: int, limits: LimitsSettings, *, name: str,
             tls: ServerTls | None = None) -> Listener:
        """Bind and listen now (port 0 picks a free port); AddressInUse or ListenError name the address."""
        try:
            found = socket.getaddrinfo(host or "0.0.0.0", port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            # One address: IPv4 first when a name has both (as clients of "localhost" try it first).
            family, kind, proto, _, address = sorted(found, key=lambda a: a[0] != socket.AF_INET)[0]
        except socket.gaierror as exc:
            raise ListenError(f"the {name} cannot listen on {host}:{port}: {exc.strerror}") from exc
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(_BACKLOG)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            where = f"{host}:{port}"
            if exc.errno == errno.EADDRINUSE:
                raise AddressInUse(exc.errno, f"{where} is already in use: the {name} cannot listen there") from exc
            raise ListenError(exc.errno, f"the {name} cannot listen on {where}: {exc.strerror}") from exc
        return cls(sock, name=name, limits=limits, tls=tls)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return str(host), int(port)

    @property
    def port(self) -> int:
        return self.address[1]

    @property
    def sockets(self) -> list[socket.socket]:
        """As ``asyncio.Server.sockets`` (uvicorn keeps its listeners in ``Server.servers``)."""
        return [self.sock]

    def start(self, factory: ProtocolFactory) -> None:
        """Accept connections on the running loop; ``factory(slot)`` makes each one's protocol."""
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._accept(factory)), loop.create_task(self._watchdog())]

    # -- accepting

    async def _accept(self, factory: ProtocolFactory) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            while self.connections >= self.cap:
                self._room.clear()
                await self._room.wait()
            try:
                conn, _ = await loop.sock_accept(self.sock)
            except OSError as exc:
                if self._closed:
                    return
                if exc.errno not in _TRANSIENT:  # out of descriptors or memory: wait, do not spin
                    self._accept_failed(exc)
                    await asyncio.sleep(0.1)
                continue
            self._failing = False
            self.connections += 1
            task = loop.create_task(self._open(conn, factory, Slot(self)))
            self._opening.add(task)
            task.add_done_callback(self._opening.discard)

    def _accept_failed(self, exc: OSError) -> None:
        if not self._failing:  # one line per spell of failures
            self._failing = True
            log.warning("Cannot accept connections; retrying.", extra={"listener": self.name, "error": str(exc)})

    async def _open(self, conn: socket.socket, factory: ProtocolFactory, slot: Slot) -> None:
        """Hand an accepted socket to its protocol, after the TLS handshake when there is TLS."""
        loop = asyncio.get_running_loop()
        conn.setblocking(False)
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if self.tls is None:
                await loop.connect_accepted_socket(lambda: factory(slot), conn)
            else:
                await loop.connect_accepted_socket(
                    lambda: factory(slot), conn, ssl=self.tls.context,
                    ssl_handshake_timeout=self.limits.header_timeout_seconds,
                    ssl_shutdown_timeout=min(_TLS_SHUTDOWN_SECONDS, self.limits.header_timeout_seconds))
        except BaseException as exc:
            # A failed or timed-out handshake: the protocol never started, so it gives nothing back.
            conn.close()
            slot.release()
            if not isinstance(exc, OSError):  # ssl.SSLError is one
                raise

    def released(self) -> None:
        self.connections -= 1
        self._room.set()

    # -- deadlines

    def watch(self, conn: Watched) -> None:
        self.watched.add(conn)

    def unwatch(self, conn: Watched) -> None:
        self.watched.discard(conn)

    async def _watchdog(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.tick)
            now = loop.time()
            late = [conn for conn in self.watched if conn.expires <= now]
            for conn in late:
                conn.expire(now)
            if late:
                log.debug("Closed connections whose client was too slow.", extra={"listener": self.name,
                                                                                 "connections": len(late)})

    # -- TLS and closing

    def reload_tls(self) -> None:
        """Load the TLS certificate and key again (new handshakes use them); logs the outcome."""
        if self.tls is None:
            return
        try:
            self.tls.reload()
        except (OSError, ssl.SSLError) as exc:
            log.error("Could not reload the TLS certificate; the previous one stays in use.",
                      extra={"listener": self.name, "cert_file": str(self.tls.cert_file), "error": str(exc)})
            return
        log.info("Reloaded the TLS certificate.", extra={"listener": self.name,
                                                         "cert_file": str(self.tls.cert_file)})

    def close(self) -> None:
        """Stop accepting and close the listening socket; open connections carry on, still watched."""
        if self._closed:
            return
        self._closed = True
        for task in [*self._tasks[:1], *self._opening]:
            task.cancel()
        try:
            # After the accept loop has taken its cancellation (and left the socket alone).
            asyncio.get_running_loop().call_soon(self.sock.close)
        except RuntimeError:
            self.sock.close()
        _descriptors.remove(self)

    async def wait_closed(self) -> None:
        """Close, wait for the accept loop to end, and stop the watchdog (once connections are done)."""
        self.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._opening, return_exceptions=True)
        self.sock.close()


def timeout_for(limits: LimitsSettings, phase: str) -> float:
    """The deadline of a connection phase: a head, a body, or waiting idle for the next request."""
    if phase == _HEAD or phase == _FRESH:
        return limits.header_timeout_seconds
    if phase == _BODY:
        return limits.body_timeout_seconds
    if phase == _IDLE:
        return limits.idle_timeout_seconds
    return _INF



# -- uvicorn (the Firehose API, the metrics listener) ----------------------------------------------------

_TOO_LARGE_BODY = b"The request head is larger than allowed."
_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
              b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_TOO_LARGE_BODY), _TOO_LARGE_BODY))


class HardenedHttpTools(Deadlines, HttpToolsProtocol):
    """uvicorn's httptools protocol with the listener's deadlines and head size limit.

    ``phase`` follows the parser: ``head`` from the first byte of a request (or of anything, between
    requests) to its last header, ``body`` until the message is complete, ``server`` while the
    response is pending, ``idle`` after it with nothing in flight; ``fresh`` before the first byte.
    """

    def __init__(self, config: uvicorn.Config, server_state: Any, app_state: dict[str, Any], *,
                 listener: Listener, slot: Slot) -> None:
        super().__init__(config, server_state, app_state)
        self.listener, self.slot = listener, slot
        self.limits = listener.limits
        self.phase = _FRESH
        self._head_bytes = 0
        self._begun = 0
        self._made = False

    def _enter(self, phase: str) -> None:
        self.phase = phase
        self.deadline = self.loop.time() + timeout_for(self.limits, phase)

    # -- transport events

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._made = True
        self.listener.watch(self)
        self._enter(_FRESH)

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.unwatch(self)
        self.slot.release()
        if self._made:
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        fresh = self.phase in (_FRESH, _IDLE)
        if fresh:
            self._enter(_HEAD)
            self._head_bytes = 0
        entry, begun = self.phase, self._begun
        super().data_received(data)
        if self.phase == _HEAD and not self.transport.is_closing():
            self._count_head(data, entry == _HEAD and (self._begun == begun or (fresh and self._begun == begun + 1)))

    def _count_head(self, data: bytes, whole: bool) -> None:
        # When a head began after other bytes of this chunk, where is unknown: it is counted from the
        # next chunk, so a head is refused at most one read later than its limit.
        self._head_bytes = self._head_bytes + len(data) if whole else 0
        if self._head_bytes > self.limits.max_header_bytes:
            self._refuse_head()

    def _refuse_head(self) -> None:
        self.phase, self.deadline = _SERVER, _INF
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.abort()  # a response is being written: no room for another
            return
        self.transport.write(_TOO_LARGE)
        self.transport.close()

    # -- parser and response events

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._begun += 1
        if self.phase != _HEAD:
            self._enter(_HEAD)
            self._head_bytes = 0

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._enter(_BODY)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.phase = _SERVER
        self._settle()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._settle()

    def _settle(self) -> None:
        """After a message or a response: idle when nothing is in flight, else waiting for the server."""
        if self.phase in (_HEAD, _BODY):
            return  # the client is sending the next message (or the rest of this one)
        in_flight = (self.cycle is not None and not self.cycle.response_complete) or bool(self.pipeline)
        if in_flight:
            self.phase, self.deadline = _SERVER, _INF
        else:
            self._enter(_IDLE)

    def pause_writing(self) -> None:
        super().pause_writing()
        self.writing_paused(self.loop.time(), self.limits)

    def resume_writing(self) -> None:
        super().resume_writing()
        self.writing_resumed()

    def _unsupported_upgrade_warning(self) -> None:
        log.debug("Ignored an Upgrade header (the request is answered as plain HTTP).")  # not a warning per request

    def shutdown(self) -> None:
        """The server is stopping: an idle connection is dropped at once (a TLS close would wait for the
        client's close_notify, which a pooled idle connection does not send); others finish first."""
        if self.cycle is None or self.cycle.response_complete:
            self.transport.abort()
        else:
            super().shutdown()

    def _held_by_server(self) -> bool:
        """The client cannot be late: a head the server is not reading (a pipelined request), or a body
        whose ``Expect: 100-continue`` is not answered yet. (A body the app has not taken is the client's
        time: see the module's docstring.)"""
        if self.phase == _BODY:
            return self.cycle is not None and self.cycle.waiting_for_100_continue
        return self.flow.read_paused

    def expire(self, now: float) -> None:
        if self.stalled > now and self.phase in (_HEAD, _BODY) and self._held_by_server():
            self.deadline = now + timeout_for(self.limits, self.phase)
            return
        idle = self.phase == _IDLE and not self.transport.get_write_buffer_size()
        self.phase, self.deadline, self.stalled = _SERVER, _INF, _INF
        if idle:
            self.transport.close()  # a polite end to a keep-alive connection
        else:
            self.transport.abort()


class UvicornServer(uvicorn.Server):
    """uvicorn serving an ASGI app on a ``Listener`` with ``HardenedHttpTools``.

    It installs no signal handlers (the process that runs it does, and decides when to stop by
    setting ``should_exit``) and runs no lifespan protocol (the apps served here need none).
    """

    def __init__(self, app: Any, listener: Listener, *, graceful_timeout: float = 10.0,
                 log_level: str = "warning") -> None:
        # No WebSocket upgrades: the apps have none, and an upgraded connection would leave this protocol.
        config = uvicorn.Config(app, loop="none", http="httptools", ws="none", lifespan="off", access_log=False,
                                log_level=log_level, timeout_keep_alive=math.ceil(listener.limits.idle_timeout_seconds),
                                timeout_graceful_shutdown=math.ceil(graceful_timeout))
        super().__init__(config)
        self.listener = listener

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the process installs its own handlers

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await self.lifespan.startup()
        config, state, listener = self.config, self.server_state, self.listener

        def protocol(slot: Slot) -> HardenedHttpTools:
            return HardenedHttpTools(config, state, self.lifespan.state, listener=listener, slot=slot)

        listener.start(protocol)
        self.servers = [listener]  # type: ignore[list-item]  # closed and awaited as asyncio servers are
        self.started = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().shutdown(sockets)
        finally:
            await self.listener.wait_closed()  # also when the graceful timeout ran out


class RunningServer:
    """A ``UvicornServer`` serving in a task of the running loop."""

    def __init__(self, server: UvicornServer, task: asyncio.Task[None]) -> None:
        self.server, self.task = server, task

    @property
    def listener(self) -> Listener:
        return self.server.listener

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish (within the graceful timeout), and return."""
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def start_uvicorn(app: Any, host: str, port: int, limits: LimitsSettings, *, name: str,
                        tls: ServerTls | None = None, graceful_timeout: float = 5.0) -> RunningServer:
    """Serve an ASGI app on host:port with the connection limits (a metrics or operator listener).

    Returns once the socket listens; AddressInUse or ListenError (naming ``name``) if it cannot bind.
    """
    listener = Listener.bind(host, port, limits, name=name, tls=tls)
    server = UvicornServer(app, listener, graceful_timeout=graceful_timeout)
    task = asyncio.get_running_loop().create_task(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.005)
    if task.done():
        listener.close()
        await task  # raises why it could not start
    return RunningServer(server, task)


# -- Hypercorn (the Kinesis API) -------------------------------------------------------------------------


def hypercorn_config(limits: LimitsSettings, *, graceful_timeout: float = 5.0) -> HypercornConfig:
    """Hypercorn's settings for the limits: idle keep-alive, head size (HTTP/1.1 and HTTP/2), streams."""
    config = HypercornConfig()
    config.accesslog = None
    config.keep_alive_timeout = limits.idle_timeout_seconds
    config.graceful_timeout = graceful_timeout
    config.read_timeout = None  # per-read timeouts do not stop a trickle: the watchdog's deadlines do
    config.h11_max_incomplete_size = limits.max_header_bytes
    config.h2_max_header_list_size = limits.max_header_bytes
    config.h2_max_concurrent_streams = H2_MAX_CONCURRENT_STREAMS
    return config


class _StreamProtocol(asyncio.StreamReaderProtocol):
    """The stream protocol a Hypercorn connection reads from: gives the cap slot back when closed and
    tells the connection's ``deadlines`` when writing stalls."""

    def __init__(self, slot: Slot, limits: LimitsSettings, connected: Callable[
            [asyncio.StreamReader, asyncio.StreamWriter, _StreamProtocol], Awaitable[None]]) -> None:
        super().__init__(asyncio.StreamReader(limit=MAX_RECV), lambda r, w: connected(r, w, self))
        self.slot, self.limits = slot, limits
        self.deadlines: Deadlines | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.slot.release()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.deadlines is not None:
            self.deadlines.writing_paused(asyncio.get_running_loop().time(), self.limits)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.deadlines is not None:
            self.deadlines.writing_resumed()


_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_H2_PRIOR_KNOWLEDGE = _H2_PREFACE[:18]  # what an HTTP/1.1 parser sees as a request head
_DATA, _HEADERS, _RST_STREAM, _CONTINUATION = 0x0, 0x1, 0x3, 0x9
_END_STREAM, _END_HEADERS = 0x1, 0x4


class H2Frames:
    """Where an HTTP/2 client is in its byte stream, read from the frame headers only.

    ``partial_since``: since when the client has been in the middle of the preface, a frame other
    than DATA, or a header block (HEADERS and its CONTINUATIONs); None when it is not.
    ``bodies``: the streams whose request headers are complete and whose body has not ended, and
    since when. ``oversized``: a header block (compressed, so never larger than the header list it
    decodes to) has passed ``max_block`` bytes. Payloads are skipped, never buffered.
    """

    def __init__(self, max_block: int) -> None:
        self._max_block = max_block
        self._block_bytes = 0
        self.oversized = False
        self._preface = len(_H2_PREFACE)
        self._head = bytearray()
        self._left = 0
        self._frame = (0, 0, 0)
        self._block: tuple[int, bool] | None = None
        self._now = 0.0
        self.partial_since: float | None = None
        self.bodies: dict[int, float] = {}

    def feed(self, data: bytes, now: float) -> None:
        self._now = now
        i, n = 0, len(data)
        if self._preface:
            i = min(self._preface, n)
            self._preface -= i
        while i < n:
            if self._left:
                take = min(self._left, n - i)
                self._left -= take
                i += take
                if not self._left:
                    self._complete()
                continue
            take = min(9 - len(self._head), n - i)
            self._head += data[i:i + take]
            i += take
            if len(self._head) == 9:
                self._start(bytes(self._head))
        partial = (0 < self._preface < len(_H2_PREFACE) or bool(self._head) or self._block is not None
                   or (self._left > 0 and self._frame[0] != _DATA))
        if not partial:
            self.partial_since = None
        elif self.partial_since is None:
            self.partial_since = now

    def _start(self, header: bytes) -> None:
        self._head.clear()
        self._frame = (header[3], header[4], int.from_bytes(header[5:9], "big") & 0x7FFFFFFF)
        self._left = int.from_bytes(header[:3], "big")
        if header[3] in (_HEADERS, _CONTINUATION):
            self._block_bytes = self._left + (self._block_bytes if header[3] == _CONTINUATION else 0)
            self.oversized = self.oversized or self._block_bytes > self._max_block
        if not self._left:
            self._complete()

    def _complete(self) -> None:
        kind, flags, stream = self._frame
        if kind == _HEADERS:
            if flags & _END_HEADERS:
                self._headers_done(stream, bool(flags & _END_STREAM))
            else:
                self._block = (stream, bool(flags & _END_STREAM))
        elif kind == _CONTINUATION and self._block is not None and flags & _END_HEADERS:
            stream, end = self._block
            self._block = None
            self._headers_done(stream, end)
        elif (kind == _DATA and flags & _END_STREAM) or kind == _RST_STREAM:
            self.bodies.pop(stream, None)

    def _headers_done(self, stream: int, end_stream: bool) -> None:
        if end_stream:
            self.bodies.pop(stream, None)  # a request without a body, or trailers
        else:
            self.bodies.setdefault(stream, self._now)

    def keep_only(self, streams: dict[int, Any]) -> None:
        """Forget streams the server no longer has (answered, reset or refused)."""
        for stream in [s for s in self.bodies if s not in streams]:
            del self.bodies[stream]


def keep_streams_after_client_goaway(inner: H2Protocol) -> bool:
    """Let the responses in progress on an HTTP/2 connection finish after the client sends GOAWAY.

    A client's GOAWAY says it opens no more streams; the ones it opened go on (RFC 9113, 6.8) and
    the client closes the connection once they are done. The h2 library instead treats a GOAWAY
    received as the end of the connection, and Hypercorn then closes it at once: whatever a
    response had not yet sent is lost, and an event stream ends for the client as if complete. The
    AWS SDK for JavaScript v3 sends GOAWAY as soon as the response headers of an event stream
    arrive (it closes the request's own session then), so SubscribeToShard's events were lost
    whenever they had not left before it came. The server pushes no streams, so a client's GOAWAY
    has nothing else to tell it: its h2 connection ignores the frame (its own GOAWAY, on shutdown,
    still goes out). Returns whether that was arranged (the h2 connection has the per-frame table
    this relies on; h2 4.x).
    """
    table = getattr(getattr(inner, "connection", None), "_frame_dispatch_table", None)
    if not isinstance(table, dict) or GoAwayFrame not in table:
        return False
    table[GoAwayFrame] = _ignore_frame
    return True


def _ignore_frame(frame: Any) -> tuple[list[Any], list[Any]]:
    return [], []


class HardenedTCPServer(Deadlines, TCPServer):
    """Hypercorn's connection with the listener's deadlines.

    Reads as Hypercorn does, without its per-read timeout; after each read it works out what the
    client owes and by when: from h11's state for HTTP/1.1, from ``H2Frames`` and the server's
    open streams for HTTP/2 (where Hypercorn's own keep-alive timer closes a connection without
    streams). While ``busy`` (the server is handling what was read: a response is in progress) no
    deadline but a body's closes the connection.
    """

    def __init__(self, *args: Any, listener: Listener, stream: _StreamProtocol, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.listener = listener
        self.limits = listener.limits
        stream.deadlines = self
        self.phase = _FRESH
        self.deadline = self.loop.time() + self.limits.header_timeout_seconds
        self.busy = False
        self._requests = 0
        self._frames: H2Frames | None = None
        self._early: bytearray | None = bytearray()  # the bytes before the first request's head, if any
        self._goaway_kept = False

    async def run(self) -> None:
        self.listener.watch(self)
        try:
            await super().run()
        finally:
            self.listener.unwatch(self)

    async def _read_data(self) -> None:
        while not self.reader.at_eof():
            try:
                data = await self.reader.read(MAX_RECV)
            except (ConnectionError, OSError, ssl.SSLError):
                break
            if not self._before(data):
                self.writer.transport.abort()  # a header block over the limit: not handed on
                break
            self.busy = True
            try:
                await self.protocol.handle(RawData(data))
            except KeyError:
                break  # Hypercorn 0.18 raises this for data on a stream it has answered and closed
            finally:
                self.busy = False
            self._after()
        await self.protocol.handle(Closed())

    def expire(self, now: float) -> None:
        if self.stalled > now and self.busy and self.phase != _BODY:  # a body's deadline runs regardless
            self.deadline = now + timeout_for(self.limits, self.phase)
            return
        self.deadline = self.stalled = _INF
        self.writer.transport.abort()

    # -- bookkeeping around each read

    def _before(self, data: bytes) -> bool:
        """Note what arrived before the protocol handles it; False: the connection must end instead."""
        now = self.loop.time()
        inner = self.protocol.protocol
        if isinstance(inner, H2Protocol):
            if self._frames is None:  # HTTP/2 from the first byte (ALPN)
                self._frames, self._early = H2Frames(self.limits.max_header_bytes), None
            self._frames.feed(data, now)
            return not self._frames.oversized
        if self.phase in (_FRESH, _IDLE):
            self.phase, self.deadline = _HEAD, now + self.limits.header_timeout_seconds
        if self._early is not None:
            self._early += data
            if len(self._early) > self.limits.max_header_bytes + MAX_RECV:
                self._early = None
        return True

    def _after(self) -> None:
        inner = self.protocol.protocol
        if isinstance(inner, H2Protocol):
            self._after_h2(inner)
        elif isinstance(inner, H11Protocol) and isinstance(inner.connection, h11.Connection):
            self._after_h11(inner, inner.connection)
        else:
            self.phase, self.deadline = _SERVER, _INF  # a protocol switch Hypercorn handles (WebSocket)

    def _after_h11(self, inner: H11Protocol, conn: h11.Connection) -> None:
        now, state, requests = self.loop.time(), conn.their_state, inner.keep_alive_requests
        if requests:
            self._early = None
        if state is h11.IDLE:
            if self.phase == _HEAD and requests == self._requests:
                pass  # still in the middle of a head
            elif conn.trailing_data[0]:
                self.phase, self.deadline = _HEAD, now + self.limits.header_timeout_seconds
            else:
                self.phase, self.deadline = _IDLE, _INF  # Hypercorn's keep-alive timer closes idle connections
        elif state is h11.SEND_BODY:
            if self.phase != _BODY or requests != self._requests:
                self.phase, self.deadline = _BODY, now + self.limits.body_timeout_seconds
        else:
            self.phase, self.deadline = _SERVER, _INF
        self._requests = requests

    def _after_h2(self, inner: H2Protocol) -> None:
        if not self._goaway_kept:
            self._goaway_kept = keep_streams_after_client_goaway(inner)
        if self._frames is None:  # it has just become HTTP/2: by prior knowledge or by an h2c upgrade
            self._frames = H2Frames(self.limits.max_header_bytes)
            early, self._early = self._early, None
            start = early.find(_H2_PRIOR_KNOWLEDGE) if early is not None else -1
            if early is not None and start >= 0:
                self._frames.feed(bytes(early[start:]), self.loop.time())
        frames = self._frames
        frames.keep_only(inner.streams)
        expires = _INF
        if frames.partial_since is not None:
            expires = frames.partial_since + self.limits.header_timeout_seconds
        if frames.bodies:
            expires = min(expires, min(frames.bodies.values()) + self.limits.body_timeout_seconds)
        self.phase = _HEAD if frames.partial_since is not None else _BODY if frames.bodies else _SERVER
        self.deadline = expires


async def serve_hypercorn(app: Any, listener: Listener, *, shutdown_trigger: Callable[[], Awaitable[Any]],
                          graceful_timeout: float = 5.0) -> None:
    """Serve an ASGI app with Hypercorn's HTTP/1.1 and HTTP/2 on a listener until ``shutdown_trigger``.

    As Hypercorn's own ``serve`` does, minus what these apps do not use (lifespan events, QUIC,
    workers): on shutdown it stops accepting, lets requests in flight finish within
    ``graceful_timeout`` and closes what is left.
    """
    loop = asyncio.get_running_loop()
    config = hypercorn_config(listener.limits, graceful_timeout=graceful_timeout)
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    context = WorkerContext(None)
    connections: set[asyncio.Task[Any]] = set()

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stream: _StreamProtocol) -> None:
        task = asyncio.current_task()
        assert task is not None
        connections.add(task)
        task.add_done_callback(connections.discard)
        await HardenedTCPServer(wrapped, loop, config, context, {}, reader, writer, listener=listener, stream=stream)

    listener.start(lambda slot: _StreamProtocol(slot, listener.limits, connected))
    try:
        await shutdown_trigger()
    finally:
        await context.terminated.set()
        listener.close()
        if connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*connections, return_exceptions=True), graceful_timeout)
        await listener.wait_closed()
