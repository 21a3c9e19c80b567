"""Dynamic partitioning's keys (spec: delivery.md §4, transforms.md §5): a ``MetadataExtraction`` jq query's
object becomes ``partitionKeyFromQuery:<name>`` keys, a transform's ``metadata.partitionKeys`` become
``partitionKeyFromLambda:<name>`` keys, and a record whose keys cannot be computed, or that lacks a key
the prefix uses, raises ValueError (the chain files it under the error output instead of guessing)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from firehose.processing.partition import LAMBDA, MAX_KEYS, QUERY, MetadataExtraction, check_prefix_keys, lambda_keys

# -- MetadataExtraction (jq) --------------------------------------------------------------------------------


def test_the_query_object_becomes_query_keys() -> None:
    query = MetadataExtraction("{customer_id: .customer_id, device: .type.device}")
    record = b'{"customer_id": "c-17", "type": {"device": "mobile"}, "ignored": 1}'
    assert query.keys(record) == {"partitionKeyFromQuery:customer_id": "c-17",
                                  "partitionKeyFromQuery:device": "mobile"}
    assert QUERY == "partitionKeyFromQuery"


def test_scalar_keys_are_written_as_json_text() -> None:
    query = MetadataExtraction("{n: .n, f: .f, yes: .yes, s: .s}")
    assert query.keys(b'{"n": 1234, "f": 1.5, "yes": true, "s": "x y"}') == {
        "partitionKeyFromQuery:n": "1234", "partitionKeyFromQuery:f": "1.5",
        "partitionKeyFromQuery:yes": "true", "partitionKeyFromQuery:s": "x y"}


def test_a_record_may_come_as_a_memoryview() -> None:
    assert MetadataExtraction("{k: .k}").keys(memoryview(b'{"k": "v"}')) == {"partitionKeyFromQuery:k": "v"}


def test_a_query_that_does_not_compile_is_refused_when_built() -> None:
    with pytest.raises(ValueError, match="not a valid jq program"):
        MetadataExtraction("{customer: .customer")


@pytest.mark.parametrize(("query", "record", "reason"), [
    ("{k: .k}", b"not json", "record is not JSON"),
    ("{k: .k}", b'{"other": 1}', "'k' is null or empty"),
    ("{k: .k}", b'{"k": null}', "'k' is null or empty"),
    ("{k: .k}", b'{"k": ""}', "'k' is null or empty"),
    ("{k: .k}", b'{"k": {"nested": 1}}', "'k' is a dict, not a scalar"),
    ("{k: .k}", b'{"k": [1, 2]}', "'k' is a list, not a scalar"),
    (".k", b'{"k": "v"}', "must produce a JSON object"),
    ("{k: .a.b}", b'{"a": "a string has no fields"}', "MetadataExtractionQuery failed"),
    ("{k: .k} | empty", b'{"k": "v"}', "MetadataExtractionQuery failed"),
], ids=["not-json", "missing", "null", "empty", "object", "array", "not-an-object", "jq-error", "no-output"])
def test_a_record_whose_query_keys_cannot_be_computed_raises(query: str, record: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        MetadataExtraction(query).keys(record)


def test_at_most_50_query_keys() -> None:
    def query(n: int) -> MetadataExtraction:
        return MetadataExtraction("{" + ", ".join(f"k{i}: .v" for i in range(n)) + "}")

    assert len(query(MAX_KEYS).keys(b'{"v": "x"}')) == MAX_KEYS == 50
    with pytest.raises(ValueError, match="51 keys; the limit is 50"):
        query(MAX_KEYS + 1).keys(b'{"v": "x"}')


# -- keys from the transform ---------------------------------------------------------------------------


@pytest.mark.parametrize("metadata", [None, {}, {"partitionKeys": {}}, {"partitionKeys": None}, {"other": 1}])
def test_no_partition_keys_from_the_transform_means_none(metadata: Any) -> None:
    assert lambda_keys(metadata) == {}


def test_the_transforms_partition_keys_become_lambda_keys() -> None:
    keys = lambda_keys({"partitionKeys": {"customerId": "1234", "year": 2024, "vip": False}})
    assert keys == {"partitionKeyFromLambda:customerId": "1234", "partitionKeyFromLambda:year": "2024",
                    "partitionKeyFromLambda:vip": "false"}
    assert LAMBDA == "partitionKeyFromLambda"


@pytest.mark.parametrize("value", [None, ""])
def test_a_null_or_empty_key_from_the_transform_raises(value: Any) -> None:
    with pytest.raises(ValueError, match="'year' is null or empty"):
        lambda_keys({"partitionKeys": {"customerId": "1234", "year": value}})


# -- keys the prefix uses --------------------------------------------------------------------------------


def test_a_record_with_every_key_the_prefix_uses_passes_and_extra_keys_are_fine() -> None:
    check_prefix_keys({"partitionKeyFromQuery:a", "partitionKeyFromLambda:b"},
                      {"partitionKeyFromQuery:a": "1", "partitionKeyFromLambda:b": "2", "partitionKeyFromQuery:c": "3"})
    check_prefix_keys(set(), {})


def test_a_record_missing_a_key_the_prefix_uses_names_each_missing_key() -> None:
    with pytest.raises(ValueError) as info:
        check_prefix_keys({"partitionKeyFromQuery:a", "partitionKeyFromLambda:b", "partitionKeyFromQuery:c"},
                          {"partitionKeyFromQuery:c": "3", "partitionKeyFromLambda:b": ""})
    message = str(info.value)
    assert "!{partitionKeyFromLambda:b}" in message and "!{partitionKeyFromQuery:a}" in message
    assert "partitionKeyFromQuery:c" not in message


def test_query_and_lambda_keys_of_the_same_name_do_not_collide() -> None:
    record = json.dumps({"team": "from-query"}).encode()
    keys = {**MetadataExtraction("{team: .team}").keys(record), **lambda_keys({"partitionKeys": {"team": "from-fn"}})}
    assert keys == {"partitionKeyFromQuery:team": "from-query", "partitionKeyFromLambda:team": "from-fn"}
