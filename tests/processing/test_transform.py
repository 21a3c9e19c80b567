"""The Lambda processor (spec: transforms.md §1-4): which file a LambdaArn names, the contract a handler's
response is checked against, the worker pool that runs handlers in their own processes (a raising
handler fails its invocation, a hung or dead worker is replaced), and the retries that end with every
record of a failed invocation ProcessingFailed."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import multiprocessing
import textwrap
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from firehose.processing.transform import (
    MAX_PAYLOAD_BYTES,
    FunctionRef,
    InvocationError,
    LambdaProcessor,
    TransformInput,
    WorkerPool,
    check_response,
    resolve_function,
)
from firehose.settings import FunctionSettings

T = TypeVar("T")
REGION = "us-east-1"
ARN = "arn:aws:lambda:us-east-1:123456789012:function:{}"
STREAM_ARN = "arn:aws:firehose:us-east-1:123456789012:deliverystream/s"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def function(directory: Path, name: str, body: str) -> FunctionRef:
    """``body`` written as ``{directory}/{name}.py`` and resolved as Firehose's LambdaArn for it would be."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.py").write_text(textwrap.dedent(body))
    return resolve_function(ARN.format(name), functions={}, transforms_dir=directory)


def run(main: Callable[[WorkerPool], Awaitable[T]], size: int = 1) -> T:
    """``main`` with a fresh pool of ``size`` workers, on its own event loop; the pool is closed after."""
    pool = WorkerPool(size, nice=0)

    async def go() -> T:
        return await main(pool)

    try:
        return asyncio.run(go())
    finally:
        pool.close()


def records(*datas: bytes, kinesis: dict[str, Any] | None = None) -> list[TransformInput]:
    return [TransformInput(f"id-{i}", d, 1_700_000_000_000 + i, kinesis) for i, d in enumerate(datas)]


HEAD = {"invocationId": "inv-1", "deliveryStreamArn": STREAM_ARN, "region": REGION}


# -- which file a LambdaArn names ------------------------------------------------------------------------


def test_an_arn_names_a_file_in_the_transforms_directory_by_its_function_name(tmp_path: Path) -> None:
    (tmp_path / "upper.py").write_text("def lambda_handler(event, context):\n    return event\n")
    (tmp_path / "plain.py").write_text("def handler(event, context):\n    return event\n")
    upper = resolve_function(ARN.format("upper") + ":$LATEST", functions={}, transforms_dir=tmp_path)
    assert (upper.name, upper.path, upper.handler) == ("upper", tmp_path / "upper.py", "lambda_handler")
    plain = resolve_function(ARN.format("plain"), functions={}, transforms_dir=tmp_path)
    assert plain.handler == "handler"  # no lambda_handler in the file


def test_the_functions_table_names_a_file_by_arn_or_by_function_name(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere" / "fn.py"
    path.parent.mkdir()
    path.write_text("def go(event, context):\n    return event\n")
    entry = FunctionSettings(path=str(path), handler="go", timeout_seconds=7, memory_mb=256)
    for key in (ARN.format("mapped"), "mapped"):
        ref = resolve_function(ARN.format("mapped"), functions={key: entry}, transforms_dir=tmp_path)
        assert (ref.path, ref.handler, ref.timeout_s, ref.memory_mb) == (path, "go", 7, 256)


def test_an_arn_that_names_no_file_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no .*missing\.py"):
        resolve_function(ARN.format("missing"), functions={}, transforms_dir=tmp_path)
    with pytest.raises(ValueError, match="neither in the functions table nor"):
        resolve_function("not-an-arn", functions={}, transforms_dir=tmp_path)
    gone = FunctionSettings(path=str(tmp_path / "gone.py"), handler="h")
    with pytest.raises(ValueError, match="does not exist"):
        resolve_function(ARN.format("gone"), functions={"gone": gone}, transforms_dir=tmp_path)


# -- the response contract -------------------------------------------------------------------------------


def test_a_response_gives_each_record_its_result_in_input_order() -> None:
    body = {"records": [
        {"recordId": "c", "result": "ProcessingFailed", "data": b64(b"original")},
        {"recordId": "a", "result": "Ok", "data": b64(b"A!")},
        {"recordId": "b", "result": "Dropped", "data": ""},
        {"recordId": "d", "result": "Ok", "data": b64(b"D"), "metadata": {"partitionKeys": {"k": "v", "n": 1}}},
    ]}
    results, datas, metadata, codes, messages = check_response(body, ["a", "b", "c", "d"])
    assert results == ["Ok", "Dropped", "ProcessingFailed", "Ok"]
    assert datas == [b"A!", b"", b"", b"D"]
    assert metadata == [None, None, None, {"partitionKeys": {"k": "v", "n": 1}}]
    assert codes == ["", "", "Lambda.ProcessingFailedStatus", ""]
    assert messages[2] and messages[:2] == ["", ""]


def test_an_empty_batch_has_an_empty_response() -> None:
    assert check_response({"records": []}, []) == ([], [], [], [], [])


@pytest.mark.parametrize(("body", "code"), [
    ({"records": [{"recordId": "a", "result": "Ok", "data": b64(b"x")}]}, "Lambda.MissingRecordId"),
    ({"records": [{"recordId": "a", "result": "Ok", "data": b64(b"x")},
                  {"recordId": "a", "result": "Ok", "data": b64(b"x")},
                  {"recordId": "b", "result": "Ok", "data": b64(b"y")}]}, "Lambda.DuplicatedRecordId"),
    ({"records": [{"recordId": "a", "result": "Ok", "data": b64(b"x")},
                  {"recordId": "b", "result": "Ok", "data": b64(b"y")},
                  {"recordId": "z", "result": "Ok", "data": b64(b"z")}]}, "Lambda.UnknownRecordId"),
    ({"records": [{"recordId": "a", "result": "ok", "data": b64(b"x")},
                  {"recordId": "b", "result": "Ok", "data": b64(b"y")}]}, "Lambda.InvalidResult"),
    ({"records": [{"recordId": "a", "result": "Ok", "data": "not base64!"},
                  {"recordId": "b", "result": "Ok", "data": b64(b"y")}]}, "Lambda.InvalidBase64"),
    ({"records": [{"recordId": "a", "result": "Ok"},
                  {"recordId": "b", "result": "Ok", "data": b64(b"y")}]}, "Lambda.MalformedResponse"),
    ({"records": [{"recordId": "a", "result": "Ok", "data": b64(b"x"), "metadata": {"partitionKeys": ["k"]}},
                  {"recordId": "b", "result": "Ok", "data": b64(b"y")}]}, "Lambda.MalformedResponse"),
    ({"records": [{"recordId": "a", "result": "Ok", "data": b64(b"x")}, "b"]}, "Lambda.MalformedResponse"),
    ({"recordz": []}, "Lambda.MalformedResponse"),
    ([], "Lambda.MalformedResponse"),
    (None, "Lambda.MalformedResponse"),
], ids=["missing-id", "duplicated-id", "unknown-id", "result-not-in-the-enum", "bad-base64", "ok-without-data",
        "partition-keys-not-a-map", "record-not-an-object", "no-records", "not-an-object", "none"])
def test_a_response_that_breaks_the_contract_fails_the_whole_batch(body: Any, code: str) -> None:
    with pytest.raises(InvocationError) as info:
        check_response(body, ["a", "b"])
    assert info.value.code == code


def test_a_response_over_6_mb_fails_the_whole_batch() -> None:
    big = b64(b"x" * (MAX_PAYLOAD_BYTES // 4 * 3 + 3))
    with pytest.raises(InvocationError) as info:
        check_response({"records": [{"recordId": "a", "result": "Ok", "data": big}]}, ["a"])
    assert info.value.code == "Lambda.ResponseTooLarge"


# -- the worker pool -------------------------------------------------------------------------------------

ECHO = """
    import base64, json

    def lambda_handler(event, context):
        out = []
        for r in event["records"]:
            seen = {"data": base64.b64decode(r["data"]).decode(), "arrival": r["approximateArrivalTimestamp"],
                    "kinesis": r.get("kinesisRecordMetadata", "absent"),
                    "event": {k: v for k, v in event.items() if k != "records"},
                    "function": context.function_name, "arn": context.invoked_function_arn,
                    "memory": context.memory_limit_in_mb, "remaining_ms": context.get_remaining_time_in_millis()}
            out.append({"recordId": r["recordId"], "result": "Ok",
                        "data": base64.b64encode(json.dumps(seen).encode()).decode()})
        return {"records": out[::-1]}  # any order: results are matched by recordId
"""


def test_the_pool_runs_the_handler_on_the_lambda_event_and_returns_results_per_record_in_input_order(
        tmp_path: Path) -> None:
    fn = function(tmp_path, "echo", ECHO)
    meta = {"shardId": "shardId-000000000001", "partitionKey": "pk", "approximateArrivalTimestamp": 5,
            "sequenceNumber": "4954", "subsequenceNumber": 0}

    async def main(pool: WorkerPool) -> tuple[Any, Any]:
        plain = await pool.invoke(fn, HEAD, records(b"first", b"second", "ünï".encode()))
        from_kinesis = await pool.invoke(fn, {**HEAD, "sourceKinesisStreamArn": "arn:k"}, records(b"k", kinesis=meta))
        return plain, from_kinesis

    (results, datas, metadata, codes, _), (_, kdatas, *_) = run(main)
    assert results == ["Ok", "Ok", "Ok"] and codes == ["", "", ""] and metadata == [None, None, None]
    seen = [json.loads(d) for d in datas]
    assert [s["data"] for s in seen] == ["first", "second", "ünï"]
    assert [s["arrival"] for s in seen] == [1_700_000_000_000, 1_700_000_000_001, 1_700_000_000_002]
    assert all(s["kinesis"] == "absent" for s in seen)
    assert seen[0]["event"] == HEAD
    assert (seen[0]["function"], seen[0]["arn"], seen[0]["memory"]) == ("echo", fn.arn, 128)
    assert 0 < seen[0]["remaining_ms"] <= fn.timeout_s * 1000
    kinesis_seen = json.loads(kdatas[0])
    assert kinesis_seen["kinesis"] == meta and kinesis_seen["event"]["sourceKinesisStreamArn"] == "arn:k"


def test_a_handler_that_raises_fails_its_invocation_and_its_worker_serves_the_next(tmp_path: Path) -> None:
    fn = function(tmp_path, "picky", """
        import base64

        def lambda_handler(event, context):
            if any(base64.b64decode(r["data"]) == b"poison" for r in event["records"]):
                raise RuntimeError("cannot digest poison")
            return {"records": [{"recordId": r["recordId"], "result": "Dropped"} for r in event["records"]]}
    """)

    async def main(pool: WorkerPool) -> list[str]:
        with pytest.raises(InvocationError) as info:
            await pool.invoke(fn, HEAD, records(b"fine", b"poison"))
        assert info.value.code == "Lambda.FunctionError"
        assert "RuntimeError: cannot digest poison" in info.value.message
        after = (await pool.invoke(fn, HEAD, records(b"fine")))[0]
        assert pool.replaced == 0  # the function failed, not its process
        return after

    assert run(main) == ["Dropped"]


def test_a_response_that_breaks_the_contract_fails_the_invocation_with_its_reason(tmp_path: Path) -> None:
    fn = function(tmp_path, "forgetful", """
        def lambda_handler(event, context):
            return {"records": [{"recordId": r["recordId"], "result": "Ok", "data": r["data"]}
                                for r in event["records"][1:]]}
    """)

    async def main(pool: WorkerPool) -> InvocationError:
        with pytest.raises(InvocationError) as info:
            await pool.invoke(fn, HEAD, records(b"a", b"b"))
        return info.value

    error = run(main)
    assert error.code == "Lambda.MissingRecordId" and "'id-0'" in error.message


def new_workers(before: set[Any]) -> list[Any]:
    return [p for p in multiprocessing.active_children() if p not in before and p.name == "firehose-transform"]


def test_a_worker_whose_process_dies_is_replaced_and_the_pool_carries_on(tmp_path: Path) -> None:
    fn = function(tmp_path, "fatal", """
        import base64, os

        def lambda_handler(event, context):
            if base64.b64decode(event["records"][0]["data"]) == b"die":
                os._exit(3)
            return {"records": [{"recordId": r["recordId"], "result": "Ok", "data": r["data"]}
                                for r in event["records"]]}
    """)
    before = set(multiprocessing.active_children())

    async def main(pool: WorkerPool) -> tuple[list[bytes], list[Any], list[Any]]:
        first = (await pool.invoke(fn, HEAD, records(b"live")))[1]
        original = new_workers(before)
        with pytest.raises(InvocationError) as info:
            await pool.invoke(fn, HEAD, records(b"die"))
        assert info.value.code == "Lambda.FunctionError" and "process exited" in info.value.message
        assert pool.replaced == 1
        after = (await pool.invoke(fn, HEAD, records(b"again")))[1]
        return first + after, original, new_workers(before)

    datas, original, replacement = run(main)
    assert datas == [b"live", b"again"]
    assert len(original) == 1 and not original[0].is_alive()
    assert len(replacement) == 1 and replacement != original


def test_a_handler_that_runs_past_its_timeout_has_its_worker_killed_and_replaced(tmp_path: Path) -> None:
    fn = dataclasses.replace(function(tmp_path, "slow", """
        import base64, time

        def lambda_handler(event, context):
            if base64.b64decode(event["records"][0]["data"]) == b"hang":
                time.sleep(60)
            return {"records": [{"recordId": r["recordId"], "result": "Ok", "data": r["data"]}
                                for r in event["records"]]}
    """), timeout_s=1.0)
    before = set(multiprocessing.active_children())

    async def main(pool: WorkerPool) -> tuple[float, list[Any], list[bytes]]:
        await pool.invoke(fn, HEAD, records(b"warm up"))  # the worker has started and loaded the file
        hung = new_workers(before)
        began = time.monotonic()
        with pytest.raises(InvocationError) as info:
            await pool.invoke(fn, HEAD, records(b"hang"))
        assert info.value.code == "Lambda.FunctionTimeout"
        assert info.value.message == "Task timed out after 1.00 seconds"
        took = time.monotonic() - began
        return took, hung, (await pool.invoke(fn, HEAD, records(b"after")))[1]

    took, hung, after = run(main)
    assert 1.0 <= took < 10
    assert not hung[0].is_alive(), "the hung worker was killed"
    assert after == [b"after"]


def test_no_more_invocations_run_at_once_than_the_pool_has_workers_and_close_ends_them(tmp_path: Path) -> None:
    fn = function(tmp_path, "nap", """
        import base64, json, os, time

        def lambda_handler(event, context):
            began = time.time()
            time.sleep(0.3)
            seen = json.dumps({"pid": os.getpid(), "began": began, "ended": time.time()}).encode()
            return {"records": [{"recordId": r["recordId"], "result": "Ok", "data": base64.b64encode(seen).decode()}
                                for r in event["records"]]}
    """)
    before = set(multiprocessing.active_children())
    pool = WorkerPool(2, nice=0)

    async def main() -> list[list[bytes]]:
        done = await asyncio.gather(*(pool.invoke(fn, HEAD, records(b"%d" % i)) for i in range(6)))
        return [d[1] for d in done]

    try:
        runs = [json.loads(datas[0]) for datas in asyncio.run(main())]
        workers = new_workers(before)
    finally:
        pool.close()
    assert len(workers) == 2 and {r["pid"] for r in runs} == {w.pid for w in workers}
    for r in runs:  # when any handler began, at most two were running (itself included)
        assert sum(o["began"] <= r["began"] < o["ended"] for o in runs) <= 2
    assert not any(w.is_alive() for w in workers)


# -- retries (LambdaProcessor) ---------------------------------------------------------------------------


class ScriptedPool:
    """A pool whose invocations fail with the given errors, in turn, then echo their records as Ok."""

    def __init__(self, *errors: InvocationError) -> None:
        self.errors = list(errors)
        self.calls: list[tuple[dict[str, Any], list[str]]] = []

    async def invoke(self, fn: FunctionRef, head: dict[str, Any], batch: Sequence[TransformInput]) -> Any:
        self.calls.append((head, [r.record_id for r in batch]))
        if self.errors:
            raise self.errors.pop(0)
        n = len(batch)
        return ["Ok"] * n, [r.data for r in batch], [None] * n, [""] * n, [""] * n


def processor(pool: ScriptedPool, retries: int, tmp_path: Path, source_arn: str | None = None) -> LambdaProcessor:
    fn = function(tmp_path, "any", "def lambda_handler(event, context):\n    return event\n")
    return LambdaProcessor(fn, pool, retries=retries, stream_arn=STREAM_ARN, region=REGION,  # type: ignore[arg-type]
                           source_arn=source_arn)


def test_an_invocation_that_keeps_failing_is_retried_number_of_retries_times_then_every_record_fails(
        tmp_path: Path) -> None:
    pool = ScriptedPool(*(InvocationError("Lambda.FunctionError", f"failure {i}") for i in range(10)))
    lam = processor(pool, 2, tmp_path)
    out = asyncio.run(lam.run(records(b"a", b"b", b"c")))
    assert len(pool.calls) == lam.invocations == 3  # the first attempt and NumberOfRetries=2 retries
    assert out.result == ["ProcessingFailed"] * 3
    assert out.code == ["Lambda.FunctionError"] * 3 and out.message == ["failure 2"] * 3  # the last failure
    assert out.attempts == 3


def test_a_retry_that_succeeds_returns_the_results_with_the_attempts_it_took(tmp_path: Path) -> None:
    pool = ScriptedPool(InvocationError("Lambda.FunctionTimeout", "Task timed out"))
    out = asyncio.run(processor(pool, 3, tmp_path).run(records(b"a", b"b")))
    assert (out.result, out.data, out.attempts) == (["Ok", "Ok"], [b"a", b"b"], 2)
    assert pool.calls[0][1] == pool.calls[1][1] == ["id-0", "id-1"]  # the same batch again


def test_with_no_retries_one_failure_fails_the_batch(tmp_path: Path) -> None:
    pool = ScriptedPool(InvocationError("Lambda.MissingRecordId", "response leaves out 1 recordId(s)"))
    out = asyncio.run(processor(pool, 0, tmp_path).run(records(b"a")))
    assert len(pool.calls) == 1
    assert (out.result, out.code, out.attempts) == (["ProcessingFailed"], ["Lambda.MissingRecordId"], 1)


def test_the_event_names_the_stream_and_region_and_the_kinesis_source_only_when_there_is_one(tmp_path: Path) -> None:
    plain, from_kinesis = ScriptedPool(), ScriptedPool()
    asyncio.run(processor(plain, 0, tmp_path).run(records(b"a")))
    asyncio.run(processor(from_kinesis, 0, tmp_path, source_arn="arn:aws:kinesis:us-east-1:1:stream/s").run(
        records(b"a")))
    head = plain.calls[0][0]
    assert (head["deliveryStreamArn"], head["region"]) == (STREAM_ARN, REGION) and head["invocationId"]
    assert "sourceKinesisStreamArn" not in head
    assert from_kinesis.calls[0][0]["sourceKinesisStreamArn"] == "arn:aws:kinesis:us-east-1:1:stream/s"


def test_a_batch_over_the_6_mb_request_limit_is_split_and_its_results_stay_in_order(tmp_path: Path) -> None:
    pool = ScriptedPool()
    big = [b"%d" % i + b"x" * (1024 * 1024) for i in range(6)]  # 6 MiB raw: 8 MiB as base64
    out = asyncio.run(processor(pool, 0, tmp_path).run(records(*big)))
    assert len(pool.calls) >= 2
    assert sorted(i for _, ids in pool.calls for i in ids) == sorted(f"id-{i}" for i in range(6))
    assert out.result == ["Ok"] * 6 and out.data == big


def test_an_empty_batch_invokes_nothing(tmp_path: Path) -> None:
    pool = ScriptedPool()
    out = asyncio.run(processor(pool, 3, tmp_path).run([]))
    assert pool.calls == [] and out.result == []
