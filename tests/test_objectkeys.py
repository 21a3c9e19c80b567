"""Object keys exactly as Firehose forms them (spec: delivery.md §2-3)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import pytest

from firehose import objectkeys
from firehose.objectkeys import KeyTemplate, format_instant, validate_prefixes

# 2018-08-27 10:30:05.123 UTC, a Monday (day 239 of the year, ISO week 35)
T = int(datetime(2018, 8, 27, 10, 30, 5, 123000, tzinfo=UTC).timestamp() * 1000)
DT = datetime.fromtimestamp(T / 1000, tz=UTC)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("yyyy/MM/dd/HH/", "2018/08/27/10/"),
        ("yyyy'-'MM'-'dd", "2018-08-27"),
        ("'year='yyyy'/month='MM'/day='dd'/hour='HH", "year=2018/month=08/day=27/hour=10"),
        ("yy M d H m s", "18 8 27 10 30 5"),
        ("DDD", "239"),
        ("w", "35"),
        ("EEE EEEE MMM MMMM", "Mon Monday Aug August"),
        ("hh a", "10 AM"),
        ("SSS", "123"),
        ("'it''s'", "it's"),
        ("HH''mm", "10'30"),
        ("XXX", "Z"),
        ("Q", "3"),
    ],
)
def test_java_datetimeformatter_patterns(pattern: str, expected: str) -> None:
    assert format_instant(pattern, DT) == expected


def test_unsupported_pattern_letter_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported pattern letter 'B'"):
        objectkeys.compile_pattern("yyyy-B")
    with pytest.raises(ValueError, match="unterminated quote"):
        objectkeys.compile_pattern("yyyy'oops")


def test_default_prefix_is_utc_hour_of_the_oldest_record() -> None:
    keys = KeyTemplate.build(None, None, custom_time_zone=None, extension="")
    assert keys.render_prefix(T) == "2018/08/27/10/"


def test_prefix_without_timestamp_gets_the_time_prefix_appended_without_a_slash() -> None:
    assert KeyTemplate.build("logs/", None, custom_time_zone=None, extension="").render_prefix(T) == \
        "logs/2018/08/27/10/"
    assert KeyTemplate.build("logs", None, custom_time_zone=None, extension="").render_prefix(T) == \
        "logs2018/08/27/10/"


def test_prefix_with_timestamp_is_used_as_is_and_all_timestamps_are_one_instant() -> None:
    keys = KeyTemplate.build("dt=!{timestamp:yyyy-MM-dd}/h=!{timestamp:HH}/", "err/!{firehose:error-output-type}/",
                             custom_time_zone=None, extension="")
    assert keys.render_prefix(T) == "dt=2018-08-27/h=10/"


def test_error_prefix_default_and_error_output_type() -> None:
    keys = KeyTemplate.build("myFirehosePrefix/", None, custom_time_zone=None, extension="")
    assert keys.render_error_prefix(T, "processing-failed") == "myFirehosePrefix/processing-failed/2018/08/27/10/"
    keys = KeyTemplate.build(None, "myFirehoseFailures/!{firehose:error-output-type}/", custom_time_zone=None,
                             extension="")
    assert keys.render_error_prefix(T, "processing-failed") == "myFirehoseFailures/processing-failed/"
    assert keys.render_prefix(T) == "2018/08/27/10/"


def test_random_string_is_eleven_chars_and_new_per_occurrence() -> None:
    keys = KeyTemplate.build("a/!{firehose:random-string}/b/!{firehose:random-string}/",
                             "e/!{firehose:error-output-type}", custom_time_zone=None, extension="")
    rendered = keys.render_prefix(T)
    m = re.fullmatch(r"a/([0-9a-f]{8}-[0-9a-f]{2})/b/([0-9a-f]{8}-[0-9a-f]{2})/2018/08/27/10/", rendered)
    assert m, rendered
    assert m.group(1) != m.group(2)


def test_custom_time_zone_applies_to_prefix_and_suffix() -> None:
    keys = KeyTemplate.build(None, None, custom_time_zone="Asia/Tokyo", extension=".gz")
    assert keys.render_prefix(T) == "2018/08/27/19/"
    u = uuid.UUID(int=1)
    assert keys.suffix("s", "3", T, u) == f"s-3-2018-08-27-19-30-05-{u}.gz"


def test_suffix_shape() -> None:
    keys = KeyTemplate.build(None, None, custom_time_zone=None, extension="")
    u = uuid.uuid4()
    assert keys.suffix("clicks", "1", T, u) == f"clicks-1-2018-08-27-10-30-05-{u}"


@pytest.mark.parametrize(
    ("prefix", "error_prefix", "message"),
    [
        ("!{timestamp:yyyy/MM/dd}", None, "ErrorOutputPrefix is required when Prefix contains expressions"),
        ("a/", "err/!{timestamp:yyyy}/", "must contain !{firehose:error-output-type}"),
        ("a/!{firehose:error-output-type}/", "e/!{firehose:error-output-type}", "Prefix must not contain"),
        ("a/!{partitionKeyFromQuery:id}/", "e/!{firehose:error-output-type}", "requires DynamicPartitioning"),
        ("a/", "e/!{firehose:error-output-type}/!{partitionKeyFromLambda:x}", "must not contain !{partitionKey"),
        ("a/!{nope:x}", "e/!{firehose:error-output-type}", "unknown expression namespace 'nope'"),
        ("a/!{firehose:bogus}", "e/!{firehose:error-output-type}", "unknown firehose expression 'bogus'"),
        ("a/!{timestamp:yyyy", "e/!{firehose:error-output-type}", "must start an expression"),
    ],
)
def test_prefix_validation_rules(prefix: str, error_prefix: str | None, message: str) -> None:
    with pytest.raises(ValueError) as info:
        validate_prefixes(prefix, error_prefix, dynamic_partitioning=False)
    assert message in str(info.value)


def test_valid_prefix_combinations_pass() -> None:
    validate_prefixes(None, None, dynamic_partitioning=False)
    validate_prefixes("static/", None, dynamic_partitioning=False)
    validate_prefixes("static/", "errors/", dynamic_partitioning=False)
    validate_prefixes("a/!{timestamp:yyyy}/", "e/!{firehose:error-output-type}/!{timestamp:yyyy}/",
                      dynamic_partitioning=False)


def test_evaluated_prefix_over_512_characters_is_refused() -> None:
    keys = KeyTemplate.build("x" * 520, None, custom_time_zone=None, extension="")
    with pytest.raises(ValueError, match="limit is 512"):
        keys.render_prefix(T)
