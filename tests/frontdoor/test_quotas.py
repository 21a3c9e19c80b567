"""Per-stream throughput quotas: the buckets on a controlled clock, and the answers a producer sees."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest

from firehose.frontdoor.quotas import MiB, Quotas, StreamQuota
from firehose.settings import QuotaSettings
from tests.support.config import local_stream
from tests.support.waiting import wait_until


def test_a_call_over_the_request_rate_is_refused_until_a_token_returns() -> None:
    quota = StreamQuota(QuotaSettings(enabled=True, requests_per_second=2))
    t = quota.requests.stamp
    assert quota.admit_call(t) and quota.admit_call(t)
    assert not quota.admit_call(t)
    assert not quota.admit_call(t + 0.4)
    assert quota.admit_call(t + 0.5)


def test_records_are_admitted_in_order_while_both_rates_allow() -> None:
    quota = StreamQuota(QuotaSettings(enabled=True, records_per_second=5, mib_per_second=1))
    t = quota.records.stamp
    assert quota.admit_records([100] * 8, t) == 5  # the record rate binds
    assert quota.admit_records([100], t) == 0
    assert quota.admit_records([100] * 3, t + 0.61) == 3
    big = StreamQuota(QuotaSettings(enabled=True, records_per_second=100, mib_per_second=1))
    t = big.bytes.stamp
    assert big.admit_records([MiB // 2, MiB // 2, 1], t) == 2  # then the byte rate binds
    assert big.admit_records([1], t + 0.001) == 1


def test_quotas_are_off_unless_enabled() -> None:
    assert Quotas(QuotaSettings()).stream(("111122223333", "s")) is None
    on = Quotas(QuotaSettings(enabled=True))
    assert on.stream(("a", "s")) is on.stream(("a", "s")) is not on.stream(("b", "s"))


def test_a_producer_over_quota_is_told_to_slow_down(start_daemon: Any) -> None:
    d = start_daemon([local_stream("limited", interval=0)],
                     quotas={"enabled": True, "records_per_second": 100, "requests_per_second": 3})
    client = d.client(retries={"max_attempts": 1})
    out = client.put_record_batch(DeliveryStreamName="limited", Records=[{"Data": b"%d\n" % i} for i in range(150)])
    assert out["FailedPutCount"] == 50
    assert all("RecordId" in r for r in out["RequestResponses"][:100])
    assert all(r == {"ErrorCode": "ServiceUnavailableException", "ErrorMessage": "Slow down."}
               for r in out["RequestResponses"][100:])
    for _ in range(4):  # the request rate: 3 per second, whatever the records
        try:
            client.put_record(DeliveryStreamName="limited", Record={"Data": b"x\n"})
        except client.exceptions.ServiceUnavailableException as exc:
            assert exc.response["Error"]["Message"] == "Slow down."
            assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 503
            break
    else:
        pytest.fail("a fifth call within a second was not refused")
    with urllib.request.urlopen(d.endpoint + "/metrics") as r:
        metrics = r.read().decode()
    series = 'firehose_throttled_records_total{delivery_stream="limited"}'
    throttled = [line for line in metrics.splitlines() if line.startswith(series)]
    assert throttled and float(throttled[0].split()[-1]) >= 51
    wait_until(lambda: d.idle("limited"))
