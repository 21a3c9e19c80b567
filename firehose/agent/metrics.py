"""Progress you can see: a periodic log line per flow, and when enabled a listener with Prometheus
metrics and the flows' status as JSON.

Counters are plain integers bumped by the flow's own threads; the progress
line and the Prometheus collector read them when asked, so a line shipped costs
no metrics work.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from firehose.agent.sender import SendStats

if TYPE_CHECKING:
    from firehose.agent.runner import FlowRunner

log = logging.getLogger("firehose.agent")


@dataclass
class ReadStats:
    """What the reader thread did."""

    lines_read: int = 0
    bytes_read: int = 0
    records_built: int = 0
    send: SendStats = field(default_factory=SendStats)


@dataclass
class Snapshot:
    """One flow's figures at one moment, for the progress line."""

    stream: str
    lines_read: int
    records_sent: int
    behind: list[tuple[str, int]]


def progress_line(flow: FlowRunner, previous: Snapshot | None) -> tuple[str, Snapshot]:
    """``flow clicks <- /var/log/app/*.log: lines read 1200 (+200), records sent 1150 (+190),
    behind: /var/log/a.log 512 B``."""
    s = flow.stats
    behind = flow.bytes_behind()
    now = Snapshot(flow.flow.stream, s.lines_read, s.send.records_sent, behind)
    d_read = s.lines_read - (previous.lines_read if previous else 0)
    d_sent = s.send.records_sent - (previous.records_sent if previous else 0)
    files = ", ".join(f"{path} {n} B" for path, n in behind) or "no files"
    extra = ""
    if s.send.records_failed_permanently:
        extra += f", refused as invalid {s.send.records_failed_permanently}"
    if s.send.last_error and s.send.errors:
        extra += f", send errors {s.send.errors} (last: {s.send.last_error[:120]})"
    line = (f"flow {flow.flow.label}: lines read {s.lines_read} (+{d_read}), records sent {s.send.records_sent} "
            f"(+{d_sent}), behind: {files}{extra}")
    return line, now


class ProgressReporter:
    """Logs every flow's progress line each period until stopped."""

    def __init__(self, flows: list[FlowRunner], period: float) -> None:
        self.flows = flows
        self.period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agent-progress", daemon=True)
        self._last: dict[int, Snapshot] = {}

    def start(self) -> None:
        self._thread.start()

    def report(self) -> None:
        for i, flow in enumerate(self.flows):
            line, self._last[i] = progress_line(flow, self._last.get(i))
            log.info("%s", line)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.report()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)


class AgentCollector(Collector):
    """Reads the flows' counters at scrape time."""

    def __init__(self, flows: list[FlowRunner]) -> None:
        self.flows = flows

    def collect(self) -> Iterator[Any]:
        def counter(name: str, doc: str, values: Iterable[tuple[str, float]]) -> CounterMetricFamily:
            m = CounterMetricFamily(name, doc, labels=["flow"])
            for label, v in values:
                m.add_metric([label], v)
            return m

        flows = [(f.flow.flow_id, f) for f in self.flows]
        yield counter("firehose_agent_lines_read", "Lines read.", ((k, f.stats.lines_read) for k, f in flows))
        yield counter("firehose_agent_bytes_read", "Bytes read.", ((k, f.stats.bytes_read) for k, f in flows))
        yield counter("firehose_agent_records_sent", "Records acknowledged by the service.",
                      ((k, f.stats.send.records_sent) for k, f in flows))
        yield counter("firehose_agent_bytes_sent", "Record bytes acknowledged by the service.",
                      ((k, f.stats.send.bytes_sent) for k, f in flows))
        yield counter("firehose_agent_records_refused", "Records the service refused as invalid (skipped).",
                      ((k, f.stats.send.records_failed_permanently) for k, f in flows))
        yield counter("firehose_agent_send_retries", "Calls or records sent again after a failure.",
                      ((k, f.stats.send.retries) for k, f in flows))
        yield counter("firehose_agent_throttled", "Throttling answers (call or record level).",
                      ((k, f.stats.send.throttled) for k, f in flows))
        yield counter("firehose_agent_send_errors", "Calls that failed (network, service errors).",
                      ((k, f.stats.send.errors) for k, f in flows))
        yield counter("firehose_agent_conversion_failures", "Records a converter could not parse (sent unchanged).",
                      ((k, f.pipeline.failures) for k, f in flows))
        behind = GaugeMetricFamily("firehose_agent_bytes_behind", "Bytes not yet acknowledged, per file.",
                                   labels=["flow", "path"])
        files = GaugeMetricFamily("firehose_agent_files_tracked", "Files open for reading.", labels=["flow"])
        for k, f in flows:
            tracked = f.bytes_behind()
            files.add_metric([k], len(tracked))
            for path, n in tracked:
                behind.add_metric([k, path], n)
        yield behind
        yield files


#: Files listed per flow in the status (a pattern may match thousands; ``files_tracked`` counts them all).
STATUS_FILES = 50


def status(flows: list[FlowRunner], started_ms: int) -> dict[str, Any]:
    """What ``GET /status`` answers: the agent and each flow's figures, as the daemon's console shows them.

    Counters are cumulative since the agent started (a reader turns two readings into rates);
    ``files`` lists the open files furthest behind first, at most ``STATUS_FILES`` of them.
    """
    out = []
    for f in list(flows):
        s = f.stats
        behind = sorted(f.bytes_behind(), key=lambda item: -item[1])
        out.append({
            "flow": f.flow.flow_id, "label": f.flow.label, "stream": f.flow.stream,
            "destination": "kinesis" if f.flow.is_kinesis else "firehose", "file_pattern": f.flow.file_pattern,
            "lines_read": s.lines_read, "bytes_read": s.bytes_read, "records_built": s.records_built,
            "records_sent": s.send.records_sent, "bytes_sent": s.send.bytes_sent,
            "records_refused": s.send.records_failed_permanently, "retries": s.send.retries,
            "throttled": s.send.throttled, "send_errors": s.send.errors,
            "last_error": s.send.last_error[:1024] or None, "conversion_failures": f.pipeline.failures,
            "failed": f.failed is not None, "files_tracked": len(behind),
            "bytes_behind": sum(n for _, n in behind),
            "files": [{"path": path, "bytes_behind": n} for path, n in behind[:STATUS_FILES]],
        })
    return {"agent": {"pid": os.getpid(), "started_ms": started_ms, "time_ms": int(time.time() * 1000)},
            "flows": out}


class MetricsServer:
    """The agent's own listener (``metrics.port``): Prometheus ``/metrics`` and the flows' status as JSON
    at ``/status`` (what the daemon's console reads, ``console.agents``). Read-only, no authentication:
    keep it on loopback (the default) or a private network."""

    def __init__(self, flows: list[FlowRunner], host: str, port: int) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(AgentCollector(flows))
        started_ms = int(time.time() * 1000)
        registry = self.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server name)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path == "/status":
                    self._send(200, orjson.dumps(status(flows, started_ms)), "application/json")
                else:
                    self._send(404, b'{"message":"Not found: /metrics and /status are served here."}',
                               "application/json")

            def _send(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass  # no line per scrape

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="agent-metrics", daemon=True)
        self.thread.start()
        self.port = self.server.server_port

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
