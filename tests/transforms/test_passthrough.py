"""The shipped passthrough transform returns every record Ok and unchanged."""

from __future__ import annotations

import base64

from tests.support.transforms import TRANSFORMS_DIR, load


def test_passthrough_returns_every_record_ok_and_unchanged() -> None:
    module = load("passthrough")
    event = {
        "invocationId": "inv-1",
        "deliveryStreamArn": "arn:aws:firehose:us-east-1:123456789012:deliverystream/s",
        "region": "us-east-1",
        "records": [
            {"recordId": f"id-{i}", "approximateArrivalTimestamp": 1_700_000_000_000,
             "data": base64.b64encode(f"record {i}".encode()).decode()}
            for i in range(3)
        ],
    }
    response = module.lambda_handler(event, None)
    assert [r["recordId"] for r in response["records"]] == ["id-0", "id-1", "id-2"]
    assert all(r["result"] == "Ok" for r in response["records"])
    assert [base64.b64decode(r["data"]) for r in response["records"]] == [b"record 0", b"record 1", b"record 2"]
    assert module.handler is module.lambda_handler
    assert "import firehose" not in (TRANSFORMS_DIR / "passthrough.py").read_text()
