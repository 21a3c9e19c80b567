"""Record format conversion, checked by reading every file back with pyarrow (an independent reader)."""

from __future__ import annotations

import io
import subprocess
import sys
from datetime import date
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.orc as po
import pyarrow.parquet as pq
import pyorc
import pytest

from firehose.definitions import DataFormatConversionConfiguration, ValidationError
from firehose.encoding import columnar
from firehose.encoding.arrow import arrow_schema
from firehose.encoding.convert import (
    WRITERS_MODULE,
    ConversionResult,
    DeserializerOptions,
    Schema,
    SerializerOptions,
    check_schema,
    convert,
    options_from_aws,
    parse_schema,
    parse_type,
    to_arrow,
)

OPENX = DeserializerOptions()
HIVE = DeserializerOptions(kind="hive")
PARQUET = SerializerOptions()
ORC = SerializerOptions(kind="orc")
BOTH = pytest.mark.parametrize("serializer", [PARQUET, ORC], ids=["parquet", "orc"])


def schema(**columns: str) -> Schema:
    return parse_schema([{"Name": name, "Type": t} for name, t in columns.items()])


def read(result: ConversionResult, serializer: SerializerOptions = PARQUET) -> pa.Table:
    if serializer.kind == "parquet":
        return pq.read_table(io.BytesIO(result.body))
    return po.ORCFile(io.BytesIO(result.body)).read()


def rows(result: ConversionResult, serializer: SerializerOptions = PARQUET) -> list[dict[str, Any]]:
    return read(result, serializer).to_pylist()


def ns(table: pa.Table, column: str) -> list[int | None]:
    """Timestamps as int nanoseconds since the epoch (both formats read back as naive UTC timestamp[ns])."""
    assert table.schema.field(column).type == pa.timestamp("ns")
    return table.column(column).cast(pa.int64()).to_pylist()


def aws(deserializer: dict[str, Any] | None = None,
        serializer: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "InputFormatConfiguration": {"Deserializer": deserializer or {"OpenXJsonSerDe": {}}},
        "OutputFormatConfiguration": {"Serializer": serializer or {"ParquetSerDe": {}}},
    }


def options(cfg: dict[str, Any]) -> tuple[DeserializerOptions, SerializerOptions]:
    """The options of a DataFormatConversionConfiguration as a definition carries it."""
    return options_from_aws(DataFormatConversionConfiguration.model_validate(cfg))


def one(records: list[bytes], sch: Schema, des: DeserializerOptions = OPENX,
        ser: SerializerOptions = PARQUET) -> ConversionResult:
    result = convert(records, sch, des, ser)
    assert result.failed == [], result.failed
    return result


# -- schema --------------------------------------------------------------------------------------


def test_parse_schema_reads_primitive_and_nested_types() -> None:
    s = parse_schema([
        {"Name": "id", "Type": "BIGINT", "Comment": "ignored"},
        {"Name": "price", "Type": "Decimal(12, 3)"},
        {"Name": "d", "Type": "decimal"},
        {"Name": "code", "Type": "char(3)"},
        {"Name": "tags", "Type": "array<varchar(10)>"},
        {"Name": "attrs", "Type": "map<string, struct<a:int, b:array<map<int,double>>>>"},
    ])
    assert [c.name for c in s.columns] == ["id", "price", "d", "code", "tags", "attrs"]
    assert [str(c.type) for c in s.columns] == [
        "bigint", "decimal(12,3)", "decimal(10,0)", "char(3)", "array<varchar(10)>",
        "map<string,struct<a:int,b:array<map<int,double>>>>",
    ]
    struct = s.columns[5].type.children[1]
    assert struct.fields == ("a", "b") and struct.children[0].name == "int"


@pytest.mark.parametrize(("columns", "message"), [
    ([], "non-empty list"),
    ([{"Type": "int"}], "column 0: Name must be a non-empty string"),
    ([{"Name": "a", "Type": "int"}, {"Name": "A", "Type": "int"}], "column 'A': duplicate column name"),
    ([{"Name": "a"}], "column 'a': Type must be a string"),
    ([{"Name": "a", "Type": "integer"}], "column 'a': unsupported type 'integer'"),
    ([{"Name": "a", "Type": "uniontype<int,string>"}], "unsupported type 'uniontype'"),
    ([{"Name": "a", "Type": "decimal(39,2)"}], "decimal precision must be 1-38"),
    ([{"Name": "a", "Type": "decimal(5,6)"}], "decimal scale 6 exceeds precision 5"),
    ([{"Name": "a", "Type": "varchar(0)"}], "varchar length must be 1-65535"),
    ([{"Name": "a", "Type": "char(256)"}], "char length must be 1-255"),
    ([{"Name": "a", "Type": "array<int"}], "expected '>' but found the end"),
    ([{"Name": "a", "Type": "map<array<int>,int>"}], "map key type must be primitive"),
    ([{"Name": "a", "Type": "struct<x:int,X:int>"}], "duplicate struct field 'X'"),
    ([{"Name": "a", "Type": "int extra"}], "unexpected 'extra'"),
    ([{"Name": "a", "Type": "array<int>;"}], "unexpected character ';'"),
    ([{"Name": "a", "Type": "array<" * 101 + "int" + ">" * 101}], "column 'a': type nested deeper than 100"),
    ([{"Name": "a", "Type": "struct<x:" * 5000 + "int" + ">" * 5000}], "type nested deeper than 100"),
])
def test_parse_schema_errors_name_the_column_and_problem(columns: list[dict[str, str]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_schema(columns)


def deep(levels: int, inner: str = "int") -> str:
    """array<array<...<inner>>> nested ``levels`` arrays deep."""
    return "array<" * levels + inner + ">" * levels


def test_check_schema_refuses_what_the_writers_or_serde_cannot_do() -> None:
    nested = schema(tags="array<int>", m="map<int,struct<a:array<map<string,date>>>>")
    check_schema(nested, OPENX, PARQUET)
    check_schema(nested, OPENX, ORC)
    check_schema(schema(deepest=deep(48, "struct<a:struct<x:int>>")), OPENX, PARQUET)  # 98 levels
    with pytest.raises(ValueError, match="column 'deeper' is nested 100 Parquet levels deep"):
        check_schema(schema(deeper=deep(50)), OPENX, PARQUET)
    check_schema(schema(deeper=deep(50)), OPENX, ORC)
    with pytest.raises(ValueError, match="column 'a.b': HiveJsonSerDe does not allow dots"):
        check_schema(schema(**{"a.b": "int"}), HIVE, ORC)
    with pytest.raises(ValueError, match="BloomFilterColumns names 'nope', not a column"):
        check_schema(schema(a="int"), OPENX, SerializerOptions(kind="orc", bloom_filter_columns=("nope",)))
    with pytest.raises(ValueError, match="ORC FormatVersion V0_11 is not supported"):
        check_schema(schema(a="int"), OPENX, SerializerOptions(kind="orc", format_version="V0_11"))


def test_a_schema_the_writer_cannot_write_fails_every_record_of_the_batch_with_the_reason() -> None:
    """Not an exception (a batch that raises is retried, and this one never converts): every record
    is reported failed, with AWS's errorCode for an invalid schema, also those that hold bad JSON."""
    result = convert([b'{"tags": [1]}', b"not json", b'{"tags": []}'], schema(tags=deep(50)), OPENX, PARQUET)
    assert result.body == b"" and result.rows == 0
    assert result.batch_failure is not None and result.batch_failure.code == "DataFormatConversion.InvalidSchema"
    assert "column 'tags' is nested 100 Parquet levels deep" in result.batch_failure.message
    assert [(i, code) for i, code, _ in result.failures(3)] == [
        (0, "DataFormatConversion.InvalidSchema"), (1, "DataFormatConversion.InvalidSchema"),
        (2, "DataFormatConversion.InvalidSchema")]


@BOTH
def test_a_writer_that_raises_for_the_batch_fails_each_record_and_keeps_record_level_reasons(
        serializer: SerializerOptions, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: Any) -> bytes:
        raise OverflowError("value too large for the column's encoding")

    monkeypatch.setattr(columnar, "parquet_file" if serializer.kind == "parquet" else "orc_file", broken)
    result = convert([b'{"a": 1}', b'{"a": "x"}', b'{"a": 3}'], schema(a="int"), HIVE, serializer)
    assert result.body == b"" and result.rows == 0
    failures = result.failures(3)
    assert [(i, code) for i, code, _ in failures] == [
        (0, "DataFormatConversion.MalformedData"), (1, "DataFormatConversion.MalformedData"),
        (2, "DataFormatConversion.MalformedData")]
    assert "could not write the batch: OverflowError: value too large" in failures[0][2]
    assert "field 'a'" in failures[1][2], "a record that did not fit keeps its own reason"


# -- values of every type ------------------------------------------------------------------------

ALL_TYPES = schema(
    s="string", vc="varchar(3)", ch="char(4)", ti="tinyint", si="smallint", i="int", b="bigint", f="float",
    d="double", bo="boolean", ts="timestamp", dt="date", small="decimal(5,2)", big="decimal(38,10)",
    bin="binary", missing="string",
)


@BOTH
def test_every_primitive_type_round_trips_exactly(serializer: SerializerOptions) -> None:
    records = [
        b'{"s": "h\xc3\xa9llo", "vc": "abcdef", "ch": "ab", "ti": -128, "si": 32767, "i": -2147483648,'
        b' "b": 9223372036854775807, "f": 1.5, "d": 0.1, "bo": true, "ts": "2017-02-07T15:13:01.123456789Z",'
        b' "dt": "2020-02-29", "small": 123.45, "big": 1234567890123456789012345678.0123456789,'
        b' "bin": "\\u0000\xc3\xbf", "extra": "ignored"}',
        b'{"s": null, "small": -0.01, "big": -1, "dt": "1969-12-31", "ts": "1900-01-01 00:00:00"}',
    ]
    result = one(records, ALL_TYPES, ser=serializer)
    assert result.rows == 2
    table = read(result, serializer)
    assert ns(table, "ts") == [1486480381123456789, -2208988800 * 10**9]
    first, second = table.drop_columns(["ts"]).to_pylist()
    assert first == {
        "s": "héllo", "vc": "abc", "ch": "ab  ", "ti": -128, "si": 32767, "i": -2147483648,
        "b": 9223372036854775807, "f": 1.5, "d": 0.1, "bo": True, "dt": date(2020, 2, 29),
        "small": Decimal("123.45"), "big": Decimal("1234567890123456789012345678.0123456789"),
        "bin": "\x00ÿ".encode(), "missing": None,
    }
    assert second == {
        "s": None, "vc": None, "ch": None, "ti": None, "si": None, "i": None, "b": None, "f": None, "d": None,
        "bo": None, "dt": date(1969, 12, 31), "small": Decimal("-0.01"), "big": Decimal("-1.0000000000"),
        "bin": None, "missing": None,
    }
    types = {f.name: f.type for f in table.schema}
    assert types["ti"] == pa.int8() and types["si"] == pa.int16() and types["i"] == pa.int32()
    assert types["f"] == pa.float32() and types["dt"] == pa.date32()
    assert types["small"] == pa.decimal128(5, 2) and types["big"] == pa.decimal128(38, 10)


@BOTH
@pytest.mark.parametrize(("value", "expected"), [
    (b'"2017-02-07T15:13:01.39256Z"', 1486480381392560000),
    (b'"2017-02-07T15:13:01Z"', 1486480381000000000),
    (b'"2017-02-07T15:13:01.123456789Z"', 1486480381123456789),
    (b'"2017-02-07T16:13:01.5+01:00"', 1486480381500000000),
    (b'"2017-02-07 15:13:01.14"', 1486480381140000000),
    (b'"2017-2-7 15:13:01"', 1486480381000000000),
    (b"1518033528", 1518033528000000000),
    (b"1518033528123", 1518033528123000000),
    (b"1518033528.123", 1518033528123000000),
    (b'"1518033528"', 1518033528000000000),
    (b'"1518033528.5"', 1518033528500000000),
])
def test_openx_timestamps_in_every_documented_format(serializer: SerializerOptions, value: bytes,
                                                      expected: int) -> None:
    result = one([b'{"ts": ' + value + b"}"], schema(ts="timestamp"), ser=serializer)
    assert ns(read(result, serializer), "ts") == [expected]


@pytest.mark.parametrize("value", [
    b'"2017-02-30 10:00:00"', b'"yesterday"', b"true", b'"2017-02-07T25:00:00Z"', b"99999999999999999",
    b'"3000-01-01 00:00:00"',
])
def test_unparseable_or_out_of_range_timestamps_fail_the_record(value: bytes) -> None:
    result = convert([b'{"ts": ' + value + b"}"], schema(ts="timestamp"), OPENX, PARQUET)
    assert result.body == b"" and result.failed[0][0] == 0
    assert result.failed[0][1].startswith("field 'ts': cannot convert ")


def test_orc_refuses_the_instants_its_timestamp_encoding_shifts_but_parquet_keeps_them() -> None:
    record = [b'{"ts": "1969-12-31T23:59:59.5Z"}']
    assert ns(read(one(record, schema(ts="timestamp")), PARQUET), "ts") == [-500_000_000]
    result = convert(record, schema(ts="timestamp"), OPENX, ORC)
    assert result.rows == 0 and "ORC cannot store a fraction above 1 ms" in result.failed[0][1]
    fine = one([b'{"ts": "1969-12-31T23:59:58.5Z"}'], schema(ts="timestamp"), ser=ORC)
    assert ns(read(fine, ORC), "ts") == [-1_500_000_000]


@BOTH
def test_hive_timestamp_formats_including_millis_then_the_sql_default(serializer: SerializerOptions) -> None:
    # Formats are tried in order: the 14-digit pattern must come before "millis", which takes any integer.
    des, _ = options(aws({"HiveJsonSerDe": {"TimestampFormats": [
        "yyyyMMddHHmmss", "millis", "yyyy-MM-dd'T'HH:mm:ss.SSSZZ", "dd/MMM/yyyy:HH:mm:ss Z",
    ]}}))
    records = [b'{"ts": %s}' % v for v in (
        b'"1518033528123"', b"1518033528123", b'"2017-02-07T15:13:01.392+02:00"',
        b'"07/feb/2017:15:13:01 -0700"', b'"20170207151301"', b'"2017-02-07 15:13:01.123456789"',
    )]
    result = one(records, schema(ts="timestamp"), des, serializer)
    assert ns(read(result, serializer), "ts") == [
        1518033528123000000, 1518033528123000000, 1486473181392000000, 1486505581000000000,
        1486480381000000000, 1486480381123456789,
    ]


def test_hive_without_formats_accepts_only_the_sql_timestamp_form() -> None:
    records = [b'{"ts": "2017-02-07 15:13:01"}', b'{"ts": "2017-02-07T15:13:01Z"}', b'{"ts": 1518033528}']
    result = convert(records, schema(ts="timestamp"), HIVE, PARQUET)
    assert ns(read(result), "ts") == [1486480381000000000]
    assert [i for i, _ in result.failed] == [1, 2]
    assert result.failed[0][1] == "field 'ts': cannot convert '2017-02-07T15:13:01Z' to timestamp"


@pytest.mark.parametrize(("pattern", "message"), [
    ("yy-MM-dd", "two-digit years"),
    ("yyyy-ww", "unsupported Joda pattern letter 'w'"),
    ("yyyy-MM-dd 'T", "unterminated quoted text"),
    ("HH:mm HH", "appears twice"),
])
def test_invalid_hive_timestamp_formats_are_refused_with_their_index(pattern: str, message: str) -> None:
    with pytest.raises(ValueError, match=rf"HiveJsonSerDe\.TimestampFormats\[1\] .*{message}"):
        options(aws({"HiveJsonSerDe": {"TimestampFormats": ["millis", pattern]}}))


# -- decimals, integers, leniency ----------------------------------------------------------------


def test_decimals_are_exact_and_never_rounded() -> None:
    sch = schema(d="decimal(38,9)", p="decimal(5,2)")
    records = [
        b'{"d": 12345678901234567890123456789.123456789, "p": 1.2300}',
        b'{"d": 0.1, "p": "-999.99"}',
        b'{"d": 1.5e2, "p": 0}',
        b'{"p": 1.234}',
        b'{"p": 1000}',
        b'{"p": 1e999999999}',
        b'{"p": true}',
    ]
    result = convert(records, sch, OPENX, PARQUET)
    assert rows(result) == [
        {"d": Decimal("12345678901234567890123456789.123456789"), "p": Decimal("1.23")},
        {"d": Decimal("0.100000000"), "p": Decimal("-999.99")},
        {"d": Decimal("150.000000000"), "p": Decimal("0.00")},
    ]
    assert result.failed == [
        (3, "field 'p': cannot convert 1.234 to decimal(5,2): too many fraction digits"),
        (4, "field 'p': cannot convert 1000 to decimal(5,2): out of range"),
        (5, "field 'p': cannot convert 1E+999999999 to decimal(5,2): out of range"),
        (6, "field 'p': cannot convert true to decimal(5,2)"),
    ]


def test_integers_are_range_checked_and_never_truncated() -> None:
    records = [b'{"t": 127}', b'{"t": 128}', b'{"t": 1.0}', b'{"t": 1.5}', b'{"t": true}', b'{"t": "-5"}',
               b'{"t": "5.0"}']
    result = convert(records, schema(t="tinyint"), OPENX, PARQUET)
    assert rows(result) == [{"t": 127}, {"t": 1}, {"t": -5}]
    assert result.failed == [
        (1, "field 't': cannot convert 128 to tinyint: out of range"),
        (3, "field 't': cannot convert 1.5 to tinyint: not a whole number"),
        (4, "field 't': cannot convert true to tinyint"),
        (6, "field 't': cannot convert '5.0' to tinyint"),
    ]


@BOTH
def test_openx_is_lenient_with_strings_and_nested_json(serializer: SerializerOptions) -> None:
    sch = schema(age="int", score="double", ok="boolean", note="string", n="string")
    record = b'{"age": "42", "score": "2.5e1", "ok": "TRUE", "note": {"a": [1, 2.50, null]}, "n": 7.10}'
    result = one([record], sch, ser=serializer)
    assert rows(result, serializer) == [
        {"age": 42, "score": 25.0, "ok": True, "note": '{"a":[1,2.50,null]}', "n": "7.10"},
    ]


@pytest.mark.parametrize(("record", "reason"), [
    (b'{"age": "42"}', "field 'age': cannot convert '42' to int"),
    (b'{"score": "2.5"}', "field 'score': cannot convert '2.5' to double"),
    (b'{"ok": "true"}', "field 'ok': cannot convert 'true' to boolean"),
    (b'{"note": {"a": 1}}', "field 'note': cannot convert a JSON object to string: HiveJsonSerDe does not"),
    (b'{"note": [1]}', "field 'note': cannot convert a JSON array to string"),
])
def test_hive_is_strict(record: bytes, reason: str) -> None:
    sch = schema(age="int", score="double", ok="boolean", note="string")
    result = convert([b'{"age": 1, "score": 2, "ok": false, "note": 3}', record], sch, HIVE, PARQUET)
    assert rows(result) == [{"age": 1, "score": 2.0, "ok": False, "note": "3"}]
    assert len(result.failed) == 1 and result.failed[0][0] == 1 and result.failed[0][1].startswith(reason)


def test_strings_with_unpaired_surrogates_fail_instead_of_breaking_the_file() -> None:
    result = convert([b'{"s": "\\ud800"}', b'{"s": "ok"}'], schema(s="string"), OPENX, PARQUET)
    assert rows(result) == [{"s": "ok"}]
    assert result.failed == [(0, "field 's': string '\\ud800' holds an unpaired UTF-16 surrogate")]


# -- keys ----------------------------------------------------------------------------------------


def test_openx_matches_keys_case_insensitively_by_default() -> None:
    sch = schema(userid="bigint", Name="string")
    record = [b'{"UserId": 1, "NAME": "a"}']
    assert rows(one(record, sch)) == [{"userid": 1, "Name": "a"}]
    des, _ = options(aws({"OpenXJsonSerDe": {"CaseInsensitive": False}}))
    assert rows(one(record + [b'{"userid": 2, "Name": "b"}'], sch, des)) == [
        {"userid": None, "Name": None}, {"userid": 2, "Name": "b"},
    ]


def test_openx_dots_to_underscores_and_column_to_key_mappings() -> None:
    des, _ = options(aws({"OpenXJsonSerDe": {
        "ConvertDotsInJsonKeysToUnderscores": True, "ColumnToJsonKeyMappings": {"ts": "timestamp"},
    }}))
    sch = schema(a_b="int", ts="string", x_y="int")
    record = [b'{"a.b": 1, "timestamp": "then", "ts": "not me", "X.Y": 2}']
    assert rows(one(record, sch, des)) == [{"a_b": 1, "ts": "then", "x_y": 2}]
    assert rows(one(record, sch)) == [{"a_b": None, "ts": "not me", "x_y": None}]


# -- records and batches -------------------------------------------------------------------------


@BOTH
def test_concatenated_objects_are_rows_and_a_record_fails_as_a_whole(serializer: SerializerOptions) -> None:
    records = [b'{"a":1}{"a":2}\n {"a":3}\r\n', b'{"a":4} {"a":"x"}', memoryview(b' {"a":5} ')]
    result = convert(records, schema(a="int"), OPENX, serializer)
    assert result.rows == 4
    assert rows(result, serializer) == [{"a": 1}, {"a": 2}, {"a": 3}, {"a": 5}]
    assert result.failed == [(1, "field 'a': cannot convert 'x' to int")]


def test_a_failing_record_in_the_middle_leaves_the_rest_of_the_batch() -> None:
    sch = schema(name="string", age="int")
    records = [b'{"name": "a", "age": 1}', b'{"name": "b", "age": "abc"}', b'{"name": "c", "age": 3}']
    result = convert(records, sch, HIVE, PARQUET)
    assert rows(result) == [{"name": "a", "age": 1}, {"name": "c", "age": 3}]
    assert result.rows == 2
    assert result.failed == [(1, "field 'age': cannot convert 'abc' to int")]


@pytest.mark.parametrize(("record", "reason"), [
    (b"[1, 2]", "record holds a top-level JSON array; each row must be a JSON object"),
    (b'[{"a": 1}]', "record holds a top-level JSON array; each row must be a JSON object"),
    (b'{"a": 1} 42', "record holds a top-level JSON scalar; each row must be a JSON object"),
    (b'{"a": 1', "record is not valid JSON: Expecting ',' delimiter at offset 7"),
    (b'{"a": NaN}', "record is not valid JSON: NaN is not a JSON value"),
    (b"not json", "record is not valid JSON: Expecting value at offset 0"),
    (b'{"a": "\xff"}', "record is not valid UTF-8 (byte 0xff at offset 7)"),
    (b" \n ", "record holds no JSON object"),
    (b"", "record holds no JSON object"),
])
def test_invalid_records_fail_with_a_reason(record: bytes, reason: str) -> None:
    result = convert([b'{"a": 0}', record], schema(a="int"), OPENX, ORC)
    assert rows(result, ORC) == [{"a": 0}]
    assert result.failed == [(1, reason)]


def test_an_all_failed_batch_has_no_body() -> None:
    result = convert([b"[]", b'{"a": "x"}', b"{"], schema(a="int"), HIVE, PARQUET)
    assert result == ConversionResult(b"", 0, result.failed)
    assert [i for i, _ in result.failed] == [0, 1, 2]


# -- nested types --------------------------------------------------------------------------------

NESTED = schema(
    tags="array<int>", point="struct<x:int,Label:array<string>>", prices="map<string,decimal(5,2)>",
    byid="map<int,string>", times="array<timestamp>",
    orders="array<struct<id:bigint,lines:array<struct<sku:string,qty:smallint,day:date>>,attrs:map<string,double>>>",
    flags="map<boolean,array<map<bigint,binary>>>",
)
NESTED_RECORDS = [
    b'{"tags": [1, null, 3], "point": {"X": 1, "label": ["p", null], "other": 0},'
    b' "prices": {"a": 1.5, "b": null}, "byid": {"7": "seven", "-1": null}, "times": ["2017-02-07T15:13:01Z", null],'
    b' "orders": [{"id": 9, "lines": [{"sku": "s1", "qty": 2, "day": "2020-02-29"}, null,'
    b' {"sku": null, "QTY": "3"}], "attrs": {"w": 0.5}}, null, {"id": null, "lines": [], "attrs": {}}],'
    b' "flags": {"true": [{"1": "x"}, null, {}], "False": null}}',
    b'{"tags": [], "point": {}, "orders": [], "flags": {}}',
    b'{"tags": null, "point": null, "prices": {}, "orders": null}',
]
NESTED_ROWS = [
    {"tags": [1, None, 3], "point": {"x": 1, "Label": ["p", None]},
     "prices": [("a", Decimal("1.50")), ("b", None)], "byid": [(7, "seven"), (-1, None)],
     "orders": [{"id": 9, "lines": [{"sku": "s1", "qty": 2, "day": date(2020, 2, 29)}, None,
                                    {"sku": None, "qty": 3, "day": None}], "attrs": [("w", 0.5)]},
                None, {"id": None, "lines": [], "attrs": []}],
     "flags": [(True, [[(1, b"x")], None, []]), (False, None)]},
    {"tags": [], "point": {"x": None, "Label": None}, "prices": None, "byid": None, "orders": [], "flags": []},
    {"tags": None, "point": None, "prices": [], "byid": None, "orders": None, "flags": None},
]


@BOTH
def test_nested_types_round_trip_with_nulls_at_every_level(serializer: SerializerOptions) -> None:
    result = one(NESTED_RECORDS, NESTED, ser=serializer)
    table = read(result, serializer)
    assert table.schema.field("orders").type == pa.list_(pa.struct([
        ("id", pa.int64()),
        ("lines", pa.list_(pa.struct([("sku", pa.string()), ("qty", pa.int16()), ("day", pa.date32())]))),
        ("attrs", pa.map_(pa.string(), pa.float64())),
    ]))
    assert table.schema.field("prices").type == pa.map_(pa.string(), pa.decimal128(5, 2))
    times = table.column("times").cast(pa.list_(pa.int64())).to_pylist()  # nanoseconds, with or without pandas
    assert times == [[1486480381000000000, None], None, None]
    assert table.drop_columns(["times"]).to_pylist() == NESTED_ROWS


def test_nested_parquet_uses_the_standard_list_and_map_layouts() -> None:
    body = one(NESTED_RECORDS, NESTED).body
    parquet_schema = str(pq.ParquetFile(io.BytesIO(body)).schema).replace("field_id=-1 ", "")
    assert "optional group tags (List) {\n    repeated group list {\n      optional int32 element;" in parquet_schema
    assert "optional group byid (Map) {\n    repeated group key_value {\n      required int32 key;" in parquet_schema
    assert "optional int96 element;" in parquet_schema  # timestamps in arrays are INT96 too
    assert "optional fixed_len_byte_array(3) value (Decimal(precision=5, scale=2));" in parquet_schema


@BOTH
def test_deeply_nested_values_round_trip(serializer: SerializerOptions) -> None:
    sch = schema(d=deep(12, "struct<v:map<string,struct<n:decimal(38,10)>>>"))
    big = "1234567890123456789012345678.0123456789"
    expected: Any = {"v": [("k", {"n": Decimal(big)})]}
    record = '{"v": {"K": {"N": ' + big + '}}}'
    for _ in range(12):
        record, expected = f"[{record}, null]", [expected, None]
    assert rows(one([b'{"d": %s}' % record.encode()], sch, ser=serializer), serializer) == [{"d": expected}]


@pytest.mark.parametrize(("record", "reason"), [
    (b'{"tags": [1, "x"]}', "field 'tags': cannot convert 'x' to int"),
    (b'{"byid": {"x": "y"}}', "field 'byid': cannot convert 'x' to int"),
    (b'{"point": [1]}', "field 'point': cannot convert a JSON array to struct<x:int>"),
    (b'{"point": {"x": 1.5}}', "field 'point': cannot convert 1.5 to int: not a whole number"),
    (b'{"deep": [[{"when": "yesterday"}]]}', "field 'deep': cannot convert 'yesterday' to date"),
    (b'{"deep": [[{"when": "2020-01-01"}, 7]]}', "field 'deep': cannot convert 7 to struct<when:date>"),
    (b'{"m": {"a": {"b": [1, 2.25]}}}', "field 'm': cannot convert 2.25 to decimal(3,1): too many fraction digits"),
])
@BOTH
def test_a_nested_value_that_does_not_fit_fails_its_record_alone(
        serializer: SerializerOptions, record: bytes, reason: str) -> None:
    sch = schema(tags="array<int>", byid="map<int,string>", point="struct<x:int>",
                 deep="array<array<struct<when:date>>>", m="map<string,map<string,array<decimal(3,1)>>>")
    good = [b'{"tags": [1], "m": {"a": {"b": [1.5, null]}}}', b'{"point": {"x": 2}}']
    result = convert([good[0], record, good[1]], sch, OPENX, serializer)
    assert result.failed == [(1, reason)]
    assert rows(result, serializer) == [
        {"tags": [1], "byid": None, "point": None, "deep": None, "m": [("a", [("b", [Decimal("1.5"), None])])]},
        {"tags": None, "byid": None, "point": {"x": 2}, "deep": None, "m": None},
    ]


@BOTH
def test_nested_numbers_are_exact_whichever_decoder_reads_them(serializer: SerializerOptions) -> None:
    """Fractional numbers in nested fields that need their exact text (decimal, an integer written 2.0,
    a string) send the record to the exact decoder; doubles stay on the fast one. Same result."""
    sch = schema(s="struct<d:decimal(20,2),i:int,t:string,f:double,a:array<string>>")
    record = b'{"s": {"d": 0.10, "i": 2.0, "t": 1.50, "f": 0.1, "a": [1e2, "x", 3]}}'
    assert rows(one([record], sch, ser=serializer), serializer) == [
        {"s": {"d": Decimal("0.10"), "i": 2, "t": "1.50", "f": 0.1, "a": ["1E+2", "x", "3"]}}]


def test_openx_struct_fields_and_map_keys_follow_case_dots_and_mappings_at_every_level() -> None:
    des, _ = options(aws({"OpenXJsonSerDe": {
        "ConvertDotsInJsonKeysToUnderscores": True, "ColumnToJsonKeyMappings": {"ts": "timestamp"},
    }}))
    sch = schema(outer="struct<inner:struct<ts:string,a_b:int>,tags:map<string,int>>")
    record = [b'{"Outer": {"INNER": {"Timestamp": "then", "ts": "not me", "A.b": 1}, "Tags": {"Env": 1}}}']
    assert rows(one(record, sch, des)) == [
        {"outer": {"inner": {"ts": "then", "a_b": 1}, "tags": [("env", 1)]}}]
    sensitive = DeserializerOptions(case_insensitive=False)
    assert rows(one([b'{"outer": {"inner": {"ts": "x", "A_B": 2}, "tags": {"Env": 1}}}'], sch, sensitive)) == [
        {"outer": {"inner": {"ts": "x", "a_b": None}, "tags": [("Env", 1)]}}]


def test_hive_matches_struct_fields_case_insensitively_but_keeps_map_keys() -> None:
    sch = schema(s="struct<a:int,m:map<string,int>>")
    assert rows(one([b'{"S": {"A": 1, "M": {"Key": 2}}}'], sch, HIVE)) == [{"s": {"a": 1, "m": [("Key", 2)]}}]


def test_openx_reads_a_lone_value_as_a_one_element_array_and_hive_refuses_it() -> None:
    sch = schema(tags="array<int>", objs="array<struct<a:int>>")
    assert rows(one([b'{"tags": 1, "objs": {"a": 2}}'], sch)) == [{"tags": [1], "objs": [{"a": 2}]}]
    assert convert([b'{"tags": 1}'], sch, HIVE, PARQUET).failed == [
        (0, "field 'tags': cannot convert 1 to array<int>")]


def test_to_arrow_gives_the_records_as_a_table_of_the_schemas_arrow_types() -> None:
    batch = to_arrow([NESTED_RECORDS[0], b'{"tags": ["x"]}', *NESTED_RECORDS[1:]], NESTED, OPENX)
    assert batch.failed == [(1, "field 'tags': cannot convert 'x' to int")]
    assert batch.table.schema == arrow_schema(NESTED)
    assert batch.table.drop_columns(["times"]).to_pylist() == NESTED_ROWS
    empty = to_arrow([b"nope"], NESTED, OPENX)
    assert empty.table.num_rows == 0 and empty.table.schema == arrow_schema(NESTED)


# -- serializer options in the output ------------------------------------------------------------


def _data_page_types(body: bytes) -> set[int]:
    """PageHeader.type of each column chunk's first data page. The header is thrift compact: the first
    field (type, i32) starts with 0x15 and a zigzag varint follows: 0 = DATA_PAGE, 6 = DATA_PAGE_V2."""
    meta = pq.ParquetFile(io.BytesIO(body)).metadata
    types = set()
    for g in range(meta.num_row_groups):
        for c in range(meta.num_columns):
            offset = meta.row_group(g).column(c).data_page_offset
            assert body[offset] == 0x15
            types.add(body[offset + 1])
    return types


@pytest.mark.parametrize("compression", ["UNCOMPRESSED", "GZIP", "SNAPPY"])
@pytest.mark.parametrize(("version", "page_type"), [("V1", 0), ("V2", 6)])
def test_parquet_compression_and_writer_version(compression: str, version: str, page_type: int) -> None:
    parquet = {"Compression": compression, "WriterVersion": version}
    _, ser = options(aws(serializer={"ParquetSerDe": parquet}))
    sch = schema(s="string", i="bigint", t="timestamp", d="decimal(20,2)")
    records = [b'{"s": "v%d", "i": %d, "t": %d, "d": %d.25}' % (n % 3, n, n, n) for n in range(50)]
    records[7] = b'{"i": 7}'
    result = one(records, sch, ser=ser)
    meta = pq.ParquetFile(io.BytesIO(result.body)).metadata
    assert {meta.row_group(0).column(c).compression for c in range(4)} == {compression}
    assert _data_page_types(result.body) == {page_type}
    table = read(result)
    assert table.column("i").to_pylist() == list(range(50))
    assert table.column("s").to_pylist()[6:9] == ["v0", None, "v2"]
    assert table.column("d").to_pylist()[8] == Decimal("8.25")


def test_parquet_dictionary_encoding_follows_enable_dictionary_compression() -> None:
    records = [b'{"s": "%s", "i": 1}' % (b"abc"[n % 3:n % 3 + 1]) for n in range(30)]
    for enabled, expected in ((True, True), (False, False)):
        ser = SerializerOptions(enable_dictionary_compression=enabled)
        body = one(records, schema(s="string", i="int"), ser=ser).body
        column = pq.ParquetFile(io.BytesIO(body)).metadata.row_group(0).column(0)
        assert column.has_dictionary_page is expected
        assert ("RLE_DICTIONARY" in column.encodings) is expected
        assert pq.read_table(io.BytesIO(body)).column("s").to_pylist()[:4] == ["a", "b", "c", "a"]


def test_parquet_statistics_are_exact_for_numbers_and_absent_elsewhere() -> None:
    sch = schema(i="int", f="float", d="date", n="bigint", s="string", t="timestamp")
    records = [b'{"i": 5, "f": 1.5, "d": "2020-01-01", "s": "b", "t": 0}',
               b'{"i": -7, "f": -2.5, "d": "1960-01-01"}', b"{}"]
    meta = pq.ParquetFile(io.BytesIO(one(records, sch).body)).metadata.row_group(0)
    stats = {meta.column(c).path_in_schema: meta.column(c).statistics for c in range(meta.num_columns)}
    assert (stats["i"].min, stats["i"].max, stats["i"].null_count) == (-7, 5, 1)
    assert (stats["f"].min, stats["f"].max) == (-2.5, 1.5)
    assert (stats["d"].min, stats["d"].max) == (date(1960, 1, 1), date(2020, 1, 1))
    assert (stats["s"].min, stats["s"].max) == ("b", "b")
    assert not stats["n"].has_min_max  # all null
    assert stats["t"] is None  # INT96 has no defined ordering: no statistics rather than wrong ones


def test_parquet_block_size_cuts_row_groups_at_record_boundaries() -> None:
    records = [b'{"i":%4d}{"i":%4d}' % (n, -n) for n in range(10)]  # 20 bytes each
    result = one(records, schema(i="int"), ser=SerializerOptions(block_size_bytes=60))
    meta = pq.ParquetFile(io.BytesIO(result.body)).metadata
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [6, 6, 6, 2]
    assert read(result).column("i").to_pylist()[:4] == [0, 0, 1, -1]


@pytest.mark.parametrize(("compression", "pyarrow_name"), [("NONE", "UNCOMPRESSED"), ("ZLIB", "ZLIB"),
                                                           ("SNAPPY", "SNAPPY")])
def test_orc_compression_row_index_stride_and_version(compression: str, pyarrow_name: str) -> None:
    _, ser = options(aws(serializer={"OrcSerDe": {
        "Compression": compression, "RowIndexStride": 2000, "BloomFilterColumns": ["S"],
        "BloomFilterFalsePositiveProbability": 0.01, "DictionaryKeyThreshold": 1, "EnablePadding": True,
    }}))
    records = [b'{"s": "v%d", "i": %d}' % (n % 5, n) for n in range(3000)]
    result = one(records, schema(s="string", i="bigint"), ser=ser)
    orc = po.ORCFile(io.BytesIO(result.body))
    assert (orc.compression, orc.row_index_stride, orc.file_version) == (pyarrow_name, 2000, "0.12")
    assert orc.read().column("i").to_pylist() == list(range(3000))
    # pyarrow does not expose bloom filters; pyorc reports which columns have them (id 1 = "s").
    assert pyorc.Reader(io.BytesIO(result.body)).read_stripe(0).bloom_filter_columns == (1,)


def test_orc_stripe_size_bounds_stripes() -> None:
    records = [b'{"i": %d, "s": "%d"}' % (n, n) for n in range(20000)]
    sch = schema(i="bigint", s="string")
    small = one(records, sch, ser=SerializerOptions(kind="orc", stripe_size_bytes=4096))
    large = one(records, sch, ser=ORC)
    assert po.ORCFile(io.BytesIO(small.body)).nstripes > 1
    assert po.ORCFile(io.BytesIO(large.body)).nstripes == 1


# -- options_from_aws ----------------------------------------------------------------------------


def test_options_from_aws_defaults() -> None:
    des, ser = options(aws())
    assert des == DeserializerOptions(kind="openx", case_insensitive=True)
    assert ser == SerializerOptions(kind="parquet", compression="SNAPPY", block_size_bytes=256 << 20,
                                    page_size_bytes=1 << 20, writer_version="V1")
    des, ser = options(aws({"HiveJsonSerDe": {}}, {"OrcSerDe": {}}))
    assert des.kind == "hive" and des.timestamp_formats == ()
    assert (ser.kind, ser.compression, ser.stripe_size_bytes, ser.row_index_stride, ser.format_version) == (
        "orc", "SNAPPY", 64 << 20, 10_000, "V0_12")


def test_options_from_aws_maps_every_field() -> None:
    des, ser = options(aws(
        {"OpenXJsonSerDe": {"CaseInsensitive": False, "ConvertDotsInJsonKeysToUnderscores": True,
                            "ColumnToJsonKeyMappings": {"ts": "timestamp"}}},
        {"OrcSerDe": {"StripeSizeBytes": 8 << 20, "BlockSizeBytes": 64 << 20, "RowIndexStride": 1000,
                      "EnablePadding": True, "PaddingTolerance": 0.2, "Compression": "ZLIB",
                      "BloomFilterColumns": ["a"], "BloomFilterFalsePositiveProbability": 0.5,
                      "DictionaryKeyThreshold": 0, "FormatVersion": "V0_12"}},
    ))
    assert des == DeserializerOptions("openx", False, True, (("ts", "timestamp"),))
    assert ser == SerializerOptions(
        kind="orc", compression="ZLIB", block_size_bytes=64 << 20, stripe_size_bytes=8 << 20,
        row_index_stride=1000, enable_padding=True, padding_tolerance=0.2, bloom_filter_columns=("a",),
        bloom_filter_false_positive_probability=0.5, dictionary_key_threshold=0.0)
    _, ser = options(aws(serializer={"ParquetSerDe": {
        "BlockSizeBytes": 64 << 20, "PageSizeBytes": 65536, "Compression": "GZIP",
        "EnableDictionaryCompression": False, "MaxPaddingBytes": 10, "WriterVersion": "V2"}}))
    assert ser == SerializerOptions(kind="parquet", compression="GZIP", block_size_bytes=64 << 20,
                                    page_size_bytes=65536, enable_dictionary_compression=False,
                                    max_padding_bytes=10, writer_version="V2")


X = "InputFormatConfiguration.Deserializer.OpenXJsonSerDe"
H = "InputFormatConfiguration.Deserializer.HiveJsonSerDe"
P = "OutputFormatConfiguration.Serializer.ParquetSerDe"
ORC_SERDE = "OutputFormatConfiguration.Serializer.OrcSerDe"


@pytest.mark.parametrize(("cfg", "message"), [
    ({}, "InputFormatConfiguration is required"),
    ({"InputFormatConfiguration": {}}, "InputFormatConfiguration.Deserializer is required"),
    ({"InputFormatConfiguration": {"Deserializer": {"OpenXJsonSerDe": {}}}},
     "OutputFormatConfiguration is required"),
    (aws({"OpenXJsonSerDe": {}, "HiveJsonSerDe": {}}),
     "InputFormatConfiguration.Deserializer must set exactly one of OpenXJsonSerDe, HiveJsonSerDe"),
    (aws({"OpenXJsonSerDe": None}), "InputFormatConfiguration.Deserializer must set exactly one of"),
    (aws(serializer={"ParquetSerDe": {}, "OrcSerDe": {}}),
     "OutputFormatConfiguration.Serializer must set exactly one of ParquetSerDe, OrcSerDe"),
    (aws(serializer={"AvroSerDe": {}}),
     "OutputFormatConfiguration.Serializer.AvroSerDe is not a known field"),
    (aws({"OpenXJsonSerDe": {"ColumnToJsonKeyMappings": {"a": ""}}}),
     f"{X}.ColumnToJsonKeyMappings must map column names to non-empty JSON keys"),
    (aws({"HiveJsonSerDe": {"TimestampFormats": ["millis", " "]}}),
     f"{H}.TimestampFormats must be a list of non-empty strings"),
    (aws({"HiveJsonSerDe": {"CaseInsensitive": True}}),
     f"{H}.CaseInsensitive is not a known field"),
    (aws(serializer={"ParquetSerDe": {"PageSizeBytes": 65535}}), f"{P}.PageSizeBytes must be at least 65536"),
    (aws(serializer={"ParquetSerDe": {"BlockSizeBytes": (64 << 20) - 1}}),
     f"{P}.BlockSizeBytes must be at least 67108864"),
    (aws(serializer={"ParquetSerDe": {"MaxPaddingBytes": -1}}), f"{P}.MaxPaddingBytes must be at least 0"),
    (aws(serializer={"ParquetSerDe": {"Compression": "ZLIB"}}),
     f"{P}.Compression must be one of UNCOMPRESSED, GZIP, SNAPPY"),
    (aws(serializer={"ParquetSerDe": {"WriterVersion": "V3"}}), f"{P}.WriterVersion must be one of V1, V2"),
    (aws(serializer={"OrcSerDe": {"StripeSizeBytes": (8 << 20) - 1}}),
     f"{ORC_SERDE}.StripeSizeBytes must be at least 8388608"),
    (aws(serializer={"OrcSerDe": {"BlockSizeBytes": 1 << 20}}),
     f"{ORC_SERDE}.BlockSizeBytes must be at least 67108864"),
    (aws(serializer={"OrcSerDe": {"RowIndexStride": 999}}), f"{ORC_SERDE}.RowIndexStride must be at least 1000"),
    (aws(serializer={"OrcSerDe": {"PaddingTolerance": 1.5}}),
     f"{ORC_SERDE}.PaddingTolerance must be a number from 0 to 1"),
    (aws(serializer={"OrcSerDe": {"DictionaryKeyThreshold": -0.1}}),
     f"{ORC_SERDE}.DictionaryKeyThreshold must be a number from 0 to 1"),
    (aws(serializer={"OrcSerDe": {"BloomFilterFalsePositiveProbability": 2}}),
     f"{ORC_SERDE}.BloomFilterFalsePositiveProbability must be a number from 0 to 1"),
    (aws(serializer={"OrcSerDe": {"BloomFilterFalsePositiveProbability": 0}}),
     f"{ORC_SERDE}.BloomFilterFalsePositiveProbability must be greater than 0 and less than 1"),
    (aws(serializer={"OrcSerDe": {"Compression": "GZIP"}}),
     f"{ORC_SERDE}.Compression must be one of NONE, ZLIB, SNAPPY"),
    (aws(serializer={"OrcSerDe": {"FormatVersion": "V1"}}), f"{ORC_SERDE}.FormatVersion must be one of V0_11, V0_12"),
    (aws(serializer={"OrcSerDe": {"FormatVersion": "V0_11"}}), f"{ORC_SERDE}.FormatVersion V0_11 is not supported"),
    (aws(serializer={"OrcSerDe": {"BloomFilterColumns": ["a", ""]}}),
     f"{ORC_SERDE}.BloomFilterColumns must be a list of non-empty strings"),
])
def test_options_from_aws_validation_names_the_field(cfg: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as e:
        options(cfg)
    assert str(e.value).startswith(message)


@pytest.mark.parametrize(("cfg", "member"), [
    (aws({"OpenXJsonSerDe": {"CaseInsensitive": "yes"}}), f"{X}.CaseInsensitive"),
    (aws({"HiveJsonSerDe": {"TimestampFormats": "millis"}}), f"{H}.TimestampFormats"),
    (aws(serializer={"ParquetSerDe": {"PageSizeBytes": "1MB"}}), f"{P}.PageSizeBytes"),
    (aws(serializer={"ParquetSerDe": {"EnableDictionaryCompression": 1}}), f"{P}.EnableDictionaryCompression"),
    (aws(serializer={"OrcSerDe": {"DictionaryKeyThreshold": "0.5"}}), f"{ORC_SERDE}.DictionaryKeyThreshold"),
    ({"InputFormatConfiguration": {"Deserializer": "OpenXJsonSerDe"}}, "InputFormatConfiguration.Deserializer"),
])
def test_the_definition_refuses_a_member_of_the_wrong_type(cfg: dict[str, Any], member: str) -> None:
    """Types are the model's: a boolean is never 1 or "yes", a number never a string."""
    with pytest.raises(ValidationError) as e:
        DataFormatConversionConfiguration.model_validate(cfg)
    depth = member.count(".") + 1
    assert {".".join(map(str, err["loc"][:depth])) for err in e.value.errors()} == {member}


def test_a_conversion_configuration_dumps_back_as_it_was_given() -> None:
    """An integer proportion stays an integer and members AWS does not define are kept (and refused by
    ``options_from_aws``), so a stored definition and its digest do not change when it is read back."""
    given = {"SchemaConfiguration": {"RoleARN": "arn:aws:iam::123456789012:role/r", "DatabaseName": "db",
                                     "TableName": "t", "VersionId": "3"},
             "Enabled": True,
             **aws({"OpenXJsonSerDe": {"ColumnToJsonKeyMappings": {"ts": "timestamp"}}},
                   {"OrcSerDe": {"DictionaryKeyThreshold": 0, "PaddingTolerance": 0.5, "Compresion": "ZLIB"}})}
    assert DataFormatConversionConfiguration.model_validate(given).dump() == given


def test_parse_type_is_usable_alone() -> None:
    assert str(parse_type("  ARRAY < STRUCT < a : INT > > ")) == "array<struct<a:int>>"


def test_the_daemon_loads_the_writers_libraries_only_to_convert() -> None:
    """pyarrow and pyorc cost tens of MiB resident: a daemon whose streams convert nothing never imports
    them (its worker processes do, as they start)."""
    code = ("import sys, firehose.daemon, firehose.cli; "
            "print(sorted(m for m in ('pandas', 'numpy', 'pyarrow', 'fastparquet', 'pyorc') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert WRITERS_MODULE == columnar.__name__
