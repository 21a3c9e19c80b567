"""The floor server for the ingest benchmark: the least work a PutRecordBatch server can do.

It reads the body, parses it with orjson, base64-decodes every record with
``pybase64`` (SIMD, strict alphabet as the daemon checks it) and answers a
per-record reply, and does nothing else: no durability, no delivery. The
daemon's records/s and CPU per 1,000 records are reported as ratios to this
server's, measured in the same run under the same load.

It is lean on purpose: the standard library's ``base64`` costs about four times
what ``pybase64`` (which the daemon itself uses) does (3.7 against 0.9 ms of CPU
per 1,000 records of 1 KiB, measured alone), and a floor that spends that
flatters the daemon's ratios.

    python bench/floor.py PORT
"""

from __future__ import annotations

import sys
import uuid

import orjson
import pybase64
import uvicorn


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    raw = b"".join(chunks)
    if not raw:  # a readiness probe
        await send({"type": "http.response.start", "status": 400, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    body = orjson.loads(raw)
    records = body.get("Records") or [body.get("Record")]
    decoded = [pybase64.b64decode(r["Data"], validate=True) for r in records]
    reply = orjson.dumps({
        "FailedPutCount": 0,
        "Encrypted": False,
        "RequestResponses": [{"RecordId": f"{i:032x}"} for i in range(len(decoded))],
    })
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/x-amz-json-1.1"),
        (b"content-length", str(len(reply)).encode()),
        (b"x-amzn-requestid", str(uuid.uuid4()).encode()),
    ]})
    await send({"type": "http.response.body", "body": reply})


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
                log_level="warning", access_log=False, lifespan="off")
