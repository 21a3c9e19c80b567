"""The live console (``/console``) in a real headless Chromium, against a daemon with traffic.

Chromium is the system's (Debian's ``chromium``, installed by ``scripts/system-packages``), driven by
Playwright with ``executable_path``: no browser is downloaded. Stream names cannot hold markup (the
AWS name pattern), so the hostile text the page must show as text comes from a destination's error
message, which /readyz reports as the stream's last error, and from a record's data, which its
error record shows.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from tests.support.aws import CREDS, ROLE
from tests.support.config import local_stream
from tests.support.daemon import RunningDaemon
from tests.support.kinesis_source import kinesis_settings, source_stream
from tests.support.ports import free_port
from tests.support.receivers.http_endpoint import Behaviour, HttpEndpointReceiver
from tests.support.waiting import wait_until

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
#: Would set window.pwned if the page ever parsed it as HTML.
#: Quick retries, so that the failing endpoint's error shows at once.
FAST = {"delivery": {"backoff_base_seconds": 0.05, "backoff_max_seconds": 0.2}}
HOSTILE = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'


def http_stream(name: str, url: str) -> dict[str, Any]:
    """An HTTP endpoint stream that gives up at once: what fails lands in the error output at the first attempt."""
    return {"DeliveryStreamName": name, "HttpEndpointDestinationConfiguration": {
        "EndpointConfiguration": {"Url": url, "Name": "sink", "AccessKey": "k-123"},
        "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0}, "RetryOptions": {"DurationInSeconds": 0},
        "S3Configuration": {"RoleARN": ROLE, "BucketARN": "arn:aws:s3:::local"}}}


@pytest.fixture
def endpoint() -> Iterator[HttpEndpointReceiver]:
    with HttpEndpointReceiver(access_key="k-123") as r:
        yield r


def test_get_root_serves_the_page_to_a_browser_only(start_daemon: Any) -> None:
    d: RunningDaemon = start_daemon([local_stream("t")])
    page = httpx.get(f"{d.endpoint}/", headers={"Accept": BROWSER})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert b'src="/console/console.js"' in page.content
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'self': no inline script
    assert httpx.get(f"{d.endpoint}/console").content == page.content
    assert httpx.get(f"{d.endpoint}/console/console.js").headers["content-type"].startswith("text/javascript")
    for accept in (None, "*/*", "application/json", "application/json, text/html;q=0.5"):
        answer = httpx.get(f"{d.endpoint}/", headers={"Accept": accept} if accept else {})
        assert answer.status_code == 403 and b"<AccessDeniedException>" in answer.content, accept  # AWS's answer
    listing = httpx.get(f"{d.endpoint}/console/api/streams").json()["delivery_streams"]
    assert [(s["name"], s["destination"]["type"], s["version"], s["buffering"]["interval_seconds"])
            for s in listing] == [("t", "ExtendedS3", 1, 0)]
    assert httpx.get(f"{d.endpoint}/console/api/kinesis").json() == {"enabled": False, "streams": []}


def _kinesis(d: RunningDaemon) -> dict[str, Any]:
    view = httpx.get(f"{d.endpoint}/console/api/kinesis").json()
    return {s["name"]: s for s in view["streams"]}


def test_the_kinesis_view_gives_each_shard_its_lag_and_throughput(start_daemon: Any) -> None:
    port = free_port()
    d: RunningDaemon = start_daemon([source_stream("fromk", "clicks")],
                                    kinesis=kinesis_settings(port, ("clicks", 2), ("idle", 1)))
    kinesis = boto3.client("kinesis", endpoint_url=f"http://127.0.0.1:{port}", **CREDS)
    records = [{"Data": b"r%d" % i, "PartitionKey": f"k{i}"} for i in range(200)]
    assert kinesis.put_records(StreamName="clicks", Records=records)["FailedRecordCount"] == 0
    wait_until(lambda: sum(s["outgoing_records"] for s in _kinesis(d)["clicks"]["shards"]) == 200, timeout=30)
    clicks, idle = _kinesis(d)["clicks"], _kinesis(d)["idle"]
    assert (clicks["status"], clicks["open_shards"], clicks["incoming_records"]) == ("ACTIVE", 2, 200)
    shards = clicks["shards"]
    assert [s["shard_id"] for s in shards] == ["shardId-000000000000", "shardId-000000000001"]
    assert all(s["incoming_records"] > 0 for s in shards), "200 keys land on both shards"
    assert sum(s["incoming_records"] for s in shards) == 200
    assert [s["incoming_records"] for s in shards] == [s["outgoing_records"] for s in shards]
    assert sum(s["incoming_bytes"] for s in shards) == clicks["incoming_bytes"] > 0
    assert all(s["iterator_age_seconds"] is not None and 0 <= s["iterator_age_seconds"] < 60 for s in shards)
    assert (idle["incoming_records"], idle["shards"][0]["iterator_age_seconds"]) == (0, None), "no reader: no lag"


def test_the_console_gates_its_data_like_metrics_and_serves_its_files(start_daemon: Any) -> None:
    d: RunningDaemon = start_daemon([local_stream("t")], auth={
        "mode": "sigv4", "bearer_tokens": ["s3cr3t-token-for-the-console"],
        "principals": [{"access_key_id": "AKIACONSOLEKEY000001", "secret": "console-secret",
                        "account_id": "123456789012", "name": "console", "policies": []}]})
    assert httpx.get(f"{d.endpoint}/console").status_code == 200
    for view in ("streams", "kinesis", "agents"):
        assert httpx.get(f"{d.endpoint}/console/api/{view}").status_code == 401, view
    authorized = {"Authorization": "Bearer s3cr3t-token-for-the-console"}
    assert httpx.get(f"{d.endpoint}/console/api/agents", headers=authorized).json() == {"agents": []}
    assert httpx.get(f"{d.endpoint}/console/api/streams", headers=authorized).json()["delivery_streams"][0][
        "name"] == "t"


def _figure_is(stream: str, figure: str, value: str) -> str:
    """A script that is true once the page shows ``value`` as the stream's figure (its exact number)."""
    return (f"() => document.querySelector('section.stream[data-stream=\"{stream}\"] "
            f"[data-figure=\"{figure}\"]')?.dataset.value === '{value}'")


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("No chromium binary: run scripts/system-packages (Debian's chromium package) to test the console")
    return path


def test_the_console_in_headless_chromium_lists_streams_numbers_charts_and_shows_hostile_text_as_text(
        start_daemon: Any, endpoint: HttpEndpointReceiver, tmp_path: Path) -> None:
    chromium = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the test extra) drives Chromium")
    endpoint.behaviour = Behaviour(status=500, error_message=HOSTILE)
    kport = free_port()
    d: RunningDaemon = start_daemon([local_stream("orders"), http_stream("hooks", endpoint.url),
                                     source_stream("fromk", "clicks")],
                                    kinesis=kinesis_settings(kport, ("clicks", 2)),
                                    console={"agents": [f"http://127.0.0.1:{free_port()}"]}, **FAST)
    plain: RunningDaemon = start_daemon([local_stream("t")], state_dir=tmp_path / "plain")
    kinesis = boto3.client("kinesis", endpoint_url=f"http://127.0.0.1:{kport}", **CREDS)
    client = d.client()
    client.put_record_batch(DeliveryStreamName="orders", Records=[{"Data": b"first %d\n" % i} for i in range(10)])
    client.put_record(DeliveryStreamName="hooks", Record={"Data": b"never taken"})
    client.put_record(DeliveryStreamName="hooks", Record={"Data": HOSTILE.encode()})
    kinesis.put_records(StreamName="clicks", Records=[{"Data": b"k%d\n" % i, "PartitionKey": f"p{i}"}
                                                     for i in range(40)])
    wait_until(lambda: d.idle("orders"), timeout=20)

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(f"{d.endpoint}/console")
            page.wait_for_selector('section.stream[data-stream="orders"]')
            orders = page.locator('section.stream[data-stream="orders"]')
            assert "ExtendedS3" in orders.locator("dl.definition").inner_text()
            assert "ExtendedS3" not in page.locator('section.stream[data-stream="hooks"] dl').inner_text()
            assert "HttpEndpoint" in page.locator('section.stream[data-stream="hooks"] dl').inner_text()

            # More traffic while the page is open: the incoming chart must move without a reload.
            client.put_record_batch(DeliveryStreamName="orders",
                                    Records=[{"Data": b"second %d\n" % i} for i in range(25)])
            wait_until(lambda: d.idle("orders"), timeout=20)
            chart = 'section.stream[data-stream="orders"] canvas[data-chart="incoming_records"]'
            page.wait_for_function(f"() => Number(document.querySelector('{chart}')?.dataset.max) > 0",
                                   timeout=30_000)
            page.wait_for_function(_figure_is("orders", "incoming_records", "35"), timeout=15_000)
            figures = httpx.get(f"{d.endpoint}/metrics.json?history=0").json()["current"]["delivery_streams"]
            assert figures["orders"]["firehose_incoming_records_total"] == 35
            assert orders.locator('[data-figure="incoming_records"]').inner_text() == "35"
            delivered = orders.locator('[data-figure="delivered_records"]')
            page.wait_for_function(_figure_is("orders", "delivered_records", "35"), timeout=15_000)
            assert delivered.inner_text() == "35"

            # The endpoint's hostile error message is the stream's last error, shown as text, never run.
            hooks = page.locator('section.stream[data-stream="hooks"]')
            page.wait_for_function(
                """() => (document.querySelector('section.stream[data-stream="hooks"] .last-error pre')
                          ?.textContent || "").includes("<script>")""", timeout=30_000)
            assert "onerror" in hooks.locator(".last-error pre").inner_text()
            # Its error records, newest first: the reason, and the record's HTML-looking data as text.
            records = hooks.locator(".error-records li")
            page.wait_for_function("""() => document.querySelectorAll(
                'section.stream[data-stream="hooks"] .error-records li').length === 2""", timeout=30_000)
            # (two puts may be two batches, delivered at once: the newest written comes first)
            hostile = records.filter(has=page.locator("pre.data", has_text="onerror"))
            assert sorted(records.locator("pre.data").all_inner_texts()) == sorted([HOSTILE, "never taken"])
            assert hostile.locator(".code").inner_text() == "HttpEndpoint.DestinationException"
            assert "<script>" in hostile.locator(".message").inner_text()
            assert "http-endpoint-failed" in hostile.locator(".facts").inner_text()
            assert page.evaluate("() => window.pwned") is None
            assert page.locator("section.stream img, section.stream script").count() == 0

            # The sidecar runs here: its streams with their shards, lag and throughput.
            shard = 'section#kinesis [data-kinesis-stream="clicks"] tr[data-shard="shardId-000000000000"]'
            page.wait_for_function(f"""() => Number(document.querySelector('{shard} [data-field="outgoing_records"]')
                                       ?.textContent) > 0""", timeout=30_000)
            clicks = page.locator('section#kinesis [data-kinesis-stream="clicks"]')
            assert page.locator("section#kinesis").is_visible()
            assert clicks.locator("tr[data-shard]").count() == 2
            assert "2 open shards" in clicks.locator("h3").inner_text()
            assert clicks.locator('tr[data-shard] [data-field="iterator_age"]').first.inner_text().endswith(" s")
            # An agent it cannot reach is listed with the reason (its flows show when it answers).
            agent = page.locator("section#agents .agent")
            assert agent.count() == 1 and "cannot read" in agent.locator("h3").inner_text()
            page.screenshot(path=str(tmp_path / "console.png"), full_page=True)

            # Without a sidecar the section stays hidden.
            other = browser.new_page()
            other.goto(f"{plain.endpoint}/console")
            other.wait_for_selector('section.stream[data-stream="t"]')
            assert other.locator("section#kinesis").is_hidden() and other.locator("section#agents").is_hidden()
        finally:
            browser.close()
    assert (tmp_path / "console.png").stat().st_size > 10_000
