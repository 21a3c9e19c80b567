"""SigV4 verification: AWS's test vectors, requests signed by botocore, and every refusal's exact type and text."""

from __future__ import annotations

import calendar
import datetime
import hashlib
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from unittest import mock
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from firehose.errors import (
    FirehoseError,
    IncompleteSignatureException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    UnrecognizedClientException,
)
from firehose.frontdoor.sigv4 import (
    BAD_TOKEN,
    BOTH_FORMS,
    CONTENT_SHA_INVALID,
    DATE_NOT_SIGNED,
    EXPIRES_NOT_A_NUMBER,
    EXPIRES_TOO_LARGE,
    EXPIRES_TOO_SMALL,
    HOST_NOT_SIGNED,
    HTTP_DATE_NOT_SIGNED,
    MISMATCH,
    TOKEN_NOT_SIGNED,
    UNKNOWN_KEY,
    Credential,
    SignedBy,
    Verifier,
    scope_of,
    signing_key,
    wants_payload_hash,
)

AKID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
TEMP_KEY = "ASIATEMPORARYKEY0001"
TEMP_SECRET = "temporary/secret+key"
TOKEN = "FwoGZXIvYXdzEBYaDH+token/with+base64=="
BODY = b'{"DeliveryStreamName":"clicks","Record":{"Data":"aGVsbG8K"}}'
WHEN = datetime.datetime(2024, 1, 2, 3, 4, 5)
NOW = calendar.timegm(WHEN.timetuple())
TARGET = "Firehose_20150804.PutRecord"
URL = "http://localhost:4573/"

CREDENTIALS = {
    AKID: Credential(SECRET),
    TEMP_KEY: Credential(TEMP_SECRET, frozenset({"another-token", TOKEN})),
}
AUTH_ERRORS = (MissingAuthenticationTokenException, IncompleteSignatureException, InvalidSignatureException,
               UnrecognizedClientException)


@dataclass(frozen=True)
class Req:
    """A request as an ASGI server hands it over."""

    method: str
    path: str
    query: str
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: str) -> str:
        return next(v.decode("latin-1") for k, v in self.headers if k == name.encode())

    def with_header(self, name: str, value: str | None) -> Req:
        """Replace (or, with None, drop) every value of a header; add it when absent."""
        key = name.encode()
        headers = [(k, v) for k, v in self.headers if k != key]
        if value is not None:
            headers.append((key, value.encode("latin-1")))
        return replace(self, headers=headers)

    def with_auth(self, old: str, new: str) -> Req:
        return self.with_header("authorization", self.header("authorization").replace(old, new))


def verifier(*, skew: float = 300.0, now: float = NOW, service: str = "firehose") -> Verifier:
    return Verifier(CREDENTIALS.get, service=service, region_ok=lambda r: r in ("us-east-1", "eu-west-1"),
                    clock_skew_seconds=skew, clock=lambda: now)


def sign(*, body: bytes = BODY, url: str = URL, headers: dict[str, str] | None = None, key: str = AKID,
         secret: str = SECRET, token: str | None = None, service: str = "firehose", region: str = "us-east-1",
         when: datetime.datetime = WHEN, presign: int | None = None) -> Req:
    """A request signed by botocore at ``when`` (presigned with ``presign`` seconds when given)."""
    request = AWSRequest(method="POST", url=url, data=body,
                         headers=headers if headers is not None else {
                             "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": TARGET})
    credentials = Credentials(key, secret, token)
    signer = (SigV4Auth(credentials, service, region) if presign is None
              else SigV4QueryAuth(credentials, service, region, expires=presign))
    with mock.patch("botocore.auth.get_current_datetime", return_value=when):
        signer.add_auth(request)
    return as_received(request)


def as_received(request: AWSRequest) -> Req:
    url = urlsplit(request.url)
    pairs = [(name.lower().encode(), value.encode("latin-1")) for name, value in request.headers.items()]
    if not any(name == b"host" for name, _ in pairs):
        pairs.insert(0, (b"host", url.netloc.encode()))
    body = request.body or b""
    return Req("POST", url.path or "/", url.query, pairs, body if isinstance(body, bytes) else body.encode())


def verify(req: Req, v: Verifier | None = None, *, body: bytes | None = None) -> SignedBy:
    body = req.body if body is None else body
    digest = hashlib.sha256(body).hexdigest() if wants_payload_hash(req.headers) else None
    return (v or verifier()).verify(method=req.method, path=req.path, query=req.query, headers=req.headers,
                                    payload_sha256=digest)


def refused(req: Req, error: type[FirehoseError], message: str, v: Verifier | None = None, *,
            body: bytes | None = None) -> None:
    with pytest.raises(error) as caught:
        verify(req, v, body=body)
    assert type(caught.value) is error
    assert caught.value.message == message


def raw(headers: dict[str, str], *, query: str = "", body: bytes = BODY) -> Req:
    pairs = [(b"host", b"localhost:4573")] + [(k.lower().encode(), v.encode("latin-1")) for k, v in headers.items()]
    return Req("POST", "/", query, pairs, body)


# -- test vectors ----------------------------------------------------------------------------------


def test_signing_key_vector() -> None:
    key = signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam")
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


def test_spec_example_request_verifies_without_botocore() -> None:
    """security.md §4's example, written out by hand: the canonical request and signature match AWS's."""
    assert hashlib.sha256(BODY).hexdigest() == "a7528c0a9e6efc64d9b97f7879d12e2f2da7a08493dde2ed4a8445972501478f"
    req = raw({
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": TARGET,
        "X-Amz-Date": "20240102T030405Z",
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240102/us-east-1/firehose/aws4_request, "
                         "SignedHeaders=content-type;host;x-amz-date;x-amz-target, "
                         "Signature=f01a4849db58d0625edd2e489e55a947b7c76bb36f53fd908d62f8131e26a432",
    })
    assert verify(req) == SignedBy(AKID, "us-east-1", "firehose")


def test_botocore_signs_the_spec_example_identically() -> None:
    req = sign()
    assert req.header("authorization").endswith(
        "Signature=f01a4849db58d0625edd2e489e55a947b7c76bb36f53fd908d62f8131e26a432")


def test_mismatch_logs_the_canonical_request_at_debug_only(caplog: pytest.LogCaptureFixture) -> None:
    req = sign(secret="not the secret")
    with caplog.at_level(logging.DEBUG, logger="firehose.auth"):
        refused(req, InvalidSignatureException, MISMATCH)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    hashed = hashlib.sha256(
        b"POST\n/\n\ncontent-type:application/x-amz-json-1.1\nhost:localhost:4573\nx-amz-date:20240102T030405Z\n"
        b"x-amz-target:Firehose_20150804.PutRecord\n\ncontent-type;host;x-amz-date;x-amz-target\n"
        b"a7528c0a9e6efc64d9b97f7879d12e2f2da7a08493dde2ed4a8445972501478f").hexdigest()
    assert hashed == "d83a96c84cd7d923708ccaf62270c92dd2f051c6516db47c6d5d6e33f102856a"
    assert "host:localhost:4573\nx-amz-date:20240102T030405Z" in logged
    assert f"20240102/us-east-1/firehose/aws4_request\n{hashed}" in logged


# -- requests botocore signs -----------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [
    {},
    {"service": "kinesis"},
    {"region": "eu-west-1"},
    {"body": b""},
    {"body": bytes(range(256)) * 40},
    {"url": "http://localhost:4573/?b=2&a=1&a=0&c=%20x~y&d&e=%E2%82%AC&f=a%2Bb"},
    {"url": "http://localhost:4573/a%20b/./c/../d:e~f/"},
    {"url": "https://firehose.us-east-1.amazonaws.com/"},
    {"headers": {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": TARGET,
                 "X-Custom": "  several   spaces\tand tabs  ", "X-Latin": "caf\u00e9"}},
    {"headers": {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": TARGET,
                 "X-Amz-Content-SHA256": hashlib.sha256(BODY).hexdigest()}},
    {"headers": {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": TARGET,
                 "X-Amz-Content-SHA256": hashlib.sha256(BODY).hexdigest().upper()}},
], ids=["plain", "kinesis", "other-region", "empty-body", "binary-body", "query", "odd-path", "aws-host",
        "whitespace-and-latin1", "content-sha256", "content-sha256-uppercase"])
def test_botocore_signed_requests_verify(kwargs: dict) -> None:
    service = kwargs.get("service", "firehose")
    signed = verify(sign(**kwargs), verifier(service=service))
    assert signed == SignedBy(AKID, kwargs.get("region", "us-east-1"), service)


def test_repeated_headers_are_joined_in_arrival_order() -> None:
    request = AWSRequest(method="POST", url=URL, data=BODY,
                         headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": TARGET})
    request.headers["X-Amz-Meta-Tag"] = "first"
    request.headers["X-Amz-Meta-Tag"] = "  second   value "
    with mock.patch("botocore.auth.get_current_datetime", return_value=WHEN):
        SigV4Auth(Credentials(AKID, SECRET), "firehose", "us-east-1").add_auth(request)
    req = as_received(request)
    assert [v for k, v in req.headers if k == b"x-amz-meta-tag"] == [b"first", b"  second   value "]
    assert verify(req).access_key_id == AKID
    swapped = [h for h in req.headers if h[0] != b"x-amz-meta-tag"]
    swapped += [(b"x-amz-meta-tag", b"  second   value "), (b"x-amz-meta-tag", b"first")]
    refused(replace(req, headers=swapped), InvalidSignatureException, MISMATCH)


def test_session_credentials_verify() -> None:
    req = sign(key=TEMP_KEY, secret=TEMP_SECRET, token=TOKEN)
    assert "x-amz-security-token" in req.header("authorization")
    assert verify(req) == SignedBy(TEMP_KEY, "us-east-1", "firehose")


def test_http_date_header_dates_the_request() -> None:
    req = sign(headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": TARGET,
                        "Date": "Mon, 01 Jan 2024 00:00:00 GMT"})
    assert req.header("date") == "Tue, 02 Jan 2024 03:04:05 -0000"
    assert all(k != b"x-amz-date" for k, _ in req.headers)
    assert verify(req).access_key_id == AKID
    refused(req.with_auth("date;", ""), InvalidSignatureException, HTTP_DATE_NOT_SIGNED)


def test_http2_authority_stands_in_for_host() -> None:
    req = sign()
    h2 = [(b":authority" if k == b"host" else k, v) for k, v in req.headers]
    assert verify(replace(req, headers=h2)).access_key_id == AKID


def test_signing_keys_are_cached_per_scope() -> None:
    v = verifier()
    verify(sign(), v)
    verify(sign(), v)
    verify(sign(region="eu-west-1"), v)
    assert len(v._keys) == 2


def test_trailing_slashes_in_the_credential_are_ignored() -> None:
    req = sign().with_auth("aws4_request,", "aws4_request//,")
    assert verify(req).access_key_id == AKID


def test_authorization_parameters_may_be_separated_by_commas_or_spaces() -> None:
    auth = sign().header("authorization")
    for separator in (",", " ", " , ", ",,"):
        req = sign().with_header("authorization", auth.replace(", ", separator))
        assert verify(req).access_key_id == AKID


# -- the query-string (presigned) form -------------------------------------------------------------


def test_presigned_request_verifies() -> None:
    req = sign(presign=3600)
    assert "X-Amz-Signature=" in req.query and all(k != b"authorization" for k, _ in req.headers)
    assert verify(req) == SignedBy(AKID, "us-east-1", "firehose")


def test_presigned_with_session_token_verifies() -> None:
    req = sign(presign=900, key=TEMP_KEY, secret=TEMP_SECRET, token=TOKEN)
    assert "X-Amz-Security-Token=" in req.query
    assert verify(req).access_key_id == TEMP_KEY


def test_presigned_request_is_good_for_its_lifetime_beyond_the_skew() -> None:
    req = sign(presign=3600)
    assert verify(req, verifier(now=NOW + 3600)).access_key_id == AKID


def test_presigned_request_expires() -> None:
    req = sign(presign=60)
    refused(req, InvalidSignatureException,
            "Signature expired: 20240102T030405Z is now earlier than 20240102T030406Z (20240102T030506Z - 1 min.)",
            verifier(now=NOW + 61))
    refused(sign(presign=3600), InvalidSignatureException,
            "Signature expired: 20240102T030405Z is now earlier than 20240102T030505Z (20240102T040505Z - 60 min.)",
            verifier(now=NOW + 3660))


def test_presigned_request_not_yet_current() -> None:
    refused(sign(presign=60), InvalidSignatureException,
            "Signature not yet current: 20240102T030405Z is still later than 20240102T025905Z "
            "(20240102T025405Z + 5 min.)", verifier(now=NOW - 600))


@pytest.mark.parametrize(("expires", "message"), [
    ("soon", EXPIRES_NOT_A_NUMBER), ("-5", EXPIRES_NOT_A_NUMBER), ("\u00b2", EXPIRES_NOT_A_NUMBER),
    ("0", EXPIRES_TOO_SMALL), ("604801", EXPIRES_TOO_LARGE), ("9" * 5000, EXPIRES_TOO_LARGE),
])
def test_presigned_expires_must_be_one_second_to_a_week(expires: str, message: str) -> None:
    req = sign(presign=3600)
    refused(replace(req, query=req.query.replace("X-Amz-Expires=3600", f"X-Amz-Expires={expires}")),
            IncompleteSignatureException, message)


def test_presigned_signature_is_checked() -> None:
    req = sign(presign=3600)
    refused(replace(req, query=req.query.replace("X-Amz-Expires=3600", "X-Amz-Expires=7200")),
            InvalidSignatureException, MISMATCH)
    refused(req, InvalidSignatureException, MISMATCH, body=b"{}")


# -- refusals, in the order AWS checks --------------------------------------------------------------


def test_unsigned() -> None:
    refused(raw({"Content-Type": "application/x-amz-json-1.1"}), MissingAuthenticationTokenException,
            "Missing Authentication Token")
    refused(raw({"Authorization": ""}), MissingAuthenticationTokenException, "Missing Authentication Token")


def test_query_credentials_without_algorithm_are_unsigned() -> None:
    """kinesalite test/connection.js row 19."""
    refused(raw({}, query="X-Amz-Credential=a&X-Amz-Signature=b&X-Amz-SignedHeaders=c&X-Amz-Date=d"),
            MissingAuthenticationTokenException, "Missing Authentication Token")


@pytest.mark.parametrize("query", ["X-Amz-Algorithm", "X-Amz-Algorithm=AWS4-HMAC-SHA256", "a=1&X-Amz-Algorithm="])
def test_both_forms_at_once(query: str) -> None:
    """Row 20."""
    refused(raw({"Authorization": "X"}, query=query), InvalidSignatureException, BOTH_FORMS)
    assert BOTH_FORMS == "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as HTTP header."


CLAUSES = {
    "Credential": "Authorization header requires 'Credential' parameter. ",
    "Signature": "Authorization header requires 'Signature' parameter. ",
    "SignedHeaders": "Authorization header requires 'SignedHeaders' parameter. ",
    "date": "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. ",
}


def _subsets() -> Iterator[tuple[str, ...]]:
    names = list(CLAUSES)
    for mask in range(15):  # 15 = all four present
        yield tuple(name for i, name in enumerate(names) if mask & (1 << i))


@pytest.mark.parametrize("present", list(_subsets()), ids=lambda p: "+".join(p) or "none")
def test_incomplete_header_lists_every_missing_part(present: tuple[str, ...]) -> None:
    params = {"Credential": "a/b/c/d/e", "Signature": "b", "SignedHeaders": "host"}
    authorization = " ".join(["AWS4-HMAC-SHA256"] + [f"{k}={v}" for k, v in params.items() if k in present])
    headers = {"Authorization": authorization}
    if "date" in present:
        headers["X-Amz-Date"] = "20240102T030405Z"
    expected = "".join(clause for name, clause in CLAUSES.items() if name not in present)
    refused(raw(headers), IncompleteSignatureException, f"{expected}Authorization={authorization}")


def test_incomplete_header_recorded_cases() -> None:
    """Rows 18 and 21: a bare token, and a header missing only SignedHeaders whatever the separator."""
    refused(raw({"Authorization": "X"}), IncompleteSignatureException, "".join(CLAUSES.values()) + "Authorization=X")
    for authorization in ("AWS4- Signature=b Credential=a", "AWS4-,Signature=b,Credential=a",
                          "AWS4-, Signature=b, Credential=a"):
        refused(raw({"Authorization": authorization, "Date": "a"}), IncompleteSignatureException,
                f"Authorization header requires 'SignedHeaders' parameter. Authorization={authorization}")
    refused(raw({"Authorization": "AWS4-HMAC-SHA256 Credential= Signature=b SignedHeaders=host",
                 "X-Amz-Date": "20240102T030405Z"}), IncompleteSignatureException,
            CLAUSES["Credential"] + "Authorization=AWS4-HMAC-SHA256 Credential= Signature=b SignedHeaders=host")


def test_incomplete_query_lists_every_missing_part() -> None:
    """Rows 22 and 23."""
    refused(raw({}, query="X-Amz-Algorithm"), IncompleteSignatureException,
            "AWS query-string parameters must include 'X-Amz-Algorithm'. "
            "AWS query-string parameters must include 'X-Amz-Credential'. "
            "AWS query-string parameters must include 'X-Amz-Signature'. "
            "AWS query-string parameters must include 'X-Amz-SignedHeaders'. "
            "AWS query-string parameters must include 'X-Amz-Date'. "
            "Re-examine the query-string parameters.")
    refused(raw({}, query="X-Amz-Algorithm=a&X-Amz-Credential=b&X-Amz-Signature=c&X-Amz-Date=d"),
            IncompleteSignatureException,
            "AWS query-string parameters must include 'X-Amz-SignedHeaders'. Re-examine the query-string parameters.")


@pytest.mark.parametrize("date", ["20240102T030405", "2024-01-02T03:04:05Z", "20241302T030405Z", "a",
                                  "\u00b2\u00b3240102T030405Z", "20240102T030405Z,20240102T030405Z"])
def test_bad_date_format(date: str) -> None:
    req = sign().with_header("x-amz-date", date)
    refused(req, IncompleteSignatureException,
            f"Date must be in ISO-8601 'basic format'. Got '{date}'. See http://en.wikipedia.org/wiki/ISO_8601")


def test_bad_http_date_format() -> None:
    req = sign().with_header("x-amz-date", None).with_header("date", "yesterday")
    refused(req, IncompleteSignatureException,
            "Date must be in ISO-8601 'basic format'. Got 'yesterday'. See http://en.wikipedia.org/wiki/ISO_8601")


def test_six_minutes_old() -> None:
    req = sign(when=WHEN - datetime.timedelta(minutes=6))
    refused(req, InvalidSignatureException,
            "Signature expired: 20240102T025805Z is now earlier than 20240102T025905Z (20240102T030405Z - 5 min.)")


def test_six_minutes_in_the_future() -> None:
    req = sign(when=WHEN + datetime.timedelta(minutes=6))
    refused(req, InvalidSignatureException,
            "Signature not yet current: 20240102T031005Z is still later than 20240102T030905Z "
            "(20240102T030405Z + 5 min.)")


def test_five_minutes_either_way_is_accepted() -> None:
    for offset in (-300, -299, 299, 300):
        assert verify(sign(when=WHEN + datetime.timedelta(seconds=offset))).access_key_id == AKID


def test_skew_that_is_not_whole_minutes() -> None:
    req = sign(when=WHEN - datetime.timedelta(minutes=2))
    refused(req, InvalidSignatureException,
            "Signature expired: 20240102T030205Z is now earlier than 20240102T030235Z (20240102T030405Z - 1.5 min.)",
            verifier(skew=90))
    refused(sign(when=WHEN + datetime.timedelta(minutes=2)), InvalidSignatureException,
            "Signature not yet current: 20240102T030605Z is still later than 20240102T030545Z "
            "(20240102T030405Z + 1.67 min.)", verifier(skew=100))


def test_host_must_be_signed() -> None:
    refused(sign().with_auth("host;", ""), InvalidSignatureException, HOST_NOT_SIGNED)
    assert HOST_NOT_SIGNED == "'Host' must be a 'SignedHeader' in the AWS Authorization."


def test_x_amz_date_must_be_signed() -> None:
    refused(sign().with_auth(";x-amz-date", ""), InvalidSignatureException, DATE_NOT_SIGNED)


def test_wrong_algorithm() -> None:
    refused(sign().with_auth("AWS4-HMAC-SHA256 ", "AWS4-HMAC-SHA512 "), IncompleteSignatureException,
            "Unsupported AWS 'algorithm': 'AWS4-HMAC-SHA512' (only AWS4-HMAC-SHA256 for now). ")


def test_credential_with_four_parts() -> None:
    refused(sign().with_auth("/aws4_request", ""), IncompleteSignatureException,
            "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, "
            "got 'AKIDEXAMPLE/20240102/us-east-1/firehose'")


def test_another_service() -> None:
    refused(sign(service="kinesis"), InvalidSignatureException,
            "Credential should be scoped to correct service: 'firehose'.")


def test_another_region() -> None:
    refused(sign(region="ap-south-1"), InvalidSignatureException,
            "Credential should be scoped to a valid region, not 'ap-south-1'.")


def test_bad_terminator() -> None:
    refused(sign().with_auth("aws4_request", "aws4_requests"), InvalidSignatureException,
            "Credential should be scoped with a valid terminator: 'aws4_request', not 'aws4_requests'.")


def test_scope_date_mismatch() -> None:
    refused(sign().with_auth("/20240102/", "/20240101/"), InvalidSignatureException,
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
            "'20240101' != '20240102', from '20240102T030405Z'.")


def test_every_scope_problem_in_one_message() -> None:
    req = sign().with_auth("/20240102/us-east-1/firehose/aws4_request", "/b/c/d/e")
    refused(req, InvalidSignatureException,
            "Credential should be scoped to a valid region, not 'c'. "
            "Credential should be scoped to correct service: 'firehose'. "
            "Credential should be scoped with a valid terminator: 'aws4_request', not 'e'. "
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
            "'b' != '20240102', from '20240102T030405Z'.")


def test_unknown_access_key() -> None:
    refused(sign(key="AKIDUNKNOWN"), UnrecognizedClientException, UNKNOWN_KEY)
    assert UNKNOWN_KEY == "The security token included in the request is invalid."


def test_wrong_secret() -> None:
    refused(sign(secret="wrong"), InvalidSignatureException, MISMATCH)
    assert MISMATCH == ("The request signature we calculated does not match the signature you provided. Check your "
                        "AWS Secret Access Key and signing method. Consult the service documentation for details.")


def test_body_tampered_after_signing() -> None:
    refused(sign(), InvalidSignatureException, MISMATCH, body=BODY.replace(b"clicks", b"clocks"))


def test_signed_header_tampered() -> None:
    refused(sign().with_header("x-amz-target", "Firehose_20150804.DeleteDeliveryStream"),
            InvalidSignatureException, MISMATCH)


def test_unsigned_header_may_change() -> None:
    req = sign().with_header("user-agent", "anything")
    assert verify(req).access_key_id == AKID


def test_signature_tampered() -> None:
    auth = sign().header("authorization")
    for signature in ("0" * 64, "F01A4849DB58D0625EDD2E489E55A947B7C76BB36F53FD908D62F8131E26A432", "\u00e9" * 64):
        req = sign().with_header("authorization", auth[:auth.index("Signature=") + 10] + signature)
        refused(req, InvalidSignatureException, MISMATCH)


def test_session_token_missing() -> None:
    refused(sign(key=TEMP_KEY, secret=TEMP_SECRET), UnrecognizedClientException, BAD_TOKEN)
    assert BAD_TOKEN == "The security token included in the request is invalid"


def test_session_token_wrong() -> None:
    refused(sign(key=TEMP_KEY, secret=TEMP_SECRET, token="not-the-token"), UnrecognizedClientException, BAD_TOKEN)


def test_session_token_with_a_long_term_key() -> None:
    refused(sign(token=TOKEN), UnrecognizedClientException, BAD_TOKEN)


def test_session_token_must_be_signed() -> None:
    req = sign(key=TEMP_KEY, secret=TEMP_SECRET).with_header("x-amz-security-token", TOKEN)
    refused(req, InvalidSignatureException, TOKEN_NOT_SIGNED)


def test_content_sha256_mismatch() -> None:
    other = hashlib.sha256(b"other body").hexdigest()
    req = sign(headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": TARGET,
                        "X-Amz-Content-SHA256": other})
    refused(req, InvalidSignatureException, MISMATCH)


def test_unsigned_payload_accepted() -> None:
    req = sign(headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": TARGET,
                        "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    assert wants_payload_hash(req.headers) is False
    assert verifier().verify(method="POST", path="/", query="", headers=req.headers,
                             payload_sha256=None).access_key_id == AKID
    assert verify(req, body=b"a different body").access_key_id == AKID


@pytest.mark.parametrize("value", ["STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
                                   "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER"])
def test_streaming_payloads_refused(value: str) -> None:
    req = sign(headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": TARGET,
                        "X-Amz-Content-SHA256": value})
    refused(req, InvalidSignatureException,
            f"x-amz-content-sha256 '{value}' is not supported by this service: send UNSIGNED-PAYLOAD or the hex "
            "SHA-256 of the request body.")


@pytest.mark.parametrize("value", ["abc", "g" * 64, "UNSIGNED-PAYLOAD,UNSIGNED-PAYLOAD", "STREAMING-" + "x" * 80])
def test_other_content_sha256_values_refused(value: str) -> None:
    req = sign(headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": TARGET,
                        "X-Amz-Content-SHA256": value})
    refused(req, InvalidSignatureException, CONTENT_SHA_INVALID)


def test_payload_hash_is_required_when_the_body_is_covered() -> None:
    req = sign()
    with pytest.raises(ValueError, match="wants_payload_hash"):
        verifier().verify(method="POST", path="/", query="", headers=req.headers, payload_sha256=None)


# -- wants_payload_hash and scope_of --------------------------------------------------------------


def test_wants_payload_hash() -> None:
    assert wants_payload_hash([]) is True
    assert wants_payload_hash([(b"x-amz-content-sha256", b"UNSIGNED-PAYLOAD")]) is False
    assert wants_payload_hash([(b"x-amz-content-sha256", b" UNSIGNED-PAYLOAD ")]) is False
    assert wants_payload_hash([(b"x-amz-content-sha256", b"0" * 64)]) is True
    assert wants_payload_hash([(b"x-amz-content-sha256", b"UNSIGNED-PAYLOAD")] * 2) is True


def test_scope_of() -> None:
    assert scope_of(sign().headers, "") == (AKID, "us-east-1")
    assert scope_of(sign(key="111122223333", region="eu-west-1").headers, "") == ("111122223333", "eu-west-1")
    presigned = sign(presign=60)
    assert scope_of(presigned.headers, presigned.query) == (AKID, "us-east-1")
    assert scope_of([(b"authorization", b"AWS4-HMAC-SHA256 Credential=test")], "") == ("test", "")
    assert scope_of([(b"authorization", b"Credential=k/d/../../etc/s/t")], "") == ("k", "")
    assert scope_of([(b"authorization", b"Credential=a\xff\x00b/d/us-east-1/s/t")], "") == ("", "us-east-1")
    assert scope_of([(b"authorization", b"X")], "") is None
    assert scope_of([], "") is None
    assert scope_of([], "X-Amz-Credential=") is None
    assert scope_of([], "X-Amz-Credential=%zz%") == ("", "")


# -- robustness ------------------------------------------------------------------------------------

_FRAGMENTS = ["AWS4-HMAC-SHA256", "Credential=", "SignedHeaders=", "Signature=", "host", "x-amz-date", ";", ",",
              " ", "/", "=", "aws4_request", AKID, TEMP_KEY, "20240102", "us-east-1", "firehose", "\u00e9", "\x00",
              "\xff", "%", "%2F", "&", "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Expires", "999999999",
              "20240102T030405Z", "STREAMING-", "UNSIGNED-PAYLOAD", "..", "\t", "\r\n"]
_NAMES = [b"authorization", b"x-amz-date", b"date", b"host", b":authority", b"x-amz-security-token",
          b"x-amz-content-sha256", b"content-type", b"x-amz-target", b"\xff\xfe", b""]


def _garbage(rng: random.Random) -> str:
    if rng.random() < 0.2:
        return "".join(chr(rng.randrange(256)) for _ in range(rng.randrange(40)))
    return "".join(rng.choice(_FRAGMENTS) for _ in range(rng.randrange(12)))


def test_garbage_never_raises_anything_but_auth_errors() -> None:
    rng = random.Random(20240102)
    v = verifier()
    base = sign()
    presigned = sign(presign=60)
    for i in range(3000):
        if i % 3 == 0:
            headers = [(rng.choice(_NAMES), _garbage(rng).encode("latin-1")) for _ in range(rng.randrange(8))]
            query = _garbage(rng) if rng.random() < 0.5 else ""
        else:
            source = base if i % 3 == 1 else presigned
            headers = list(source.headers)
            for _ in range(rng.randrange(1, 4)):
                position = rng.randrange(len(headers))
                name, value = headers[position]
                text = value.decode("latin-1")
                cut = rng.randrange(len(text) + 1)
                headers[position] = (name, (text[:cut] + _garbage(rng) + text[cut + rng.randrange(3):])
                                     .encode("latin-1"))
            if rng.random() < 0.2:
                headers.append(rng.choice(headers))
            query = source.query
            if query and rng.random() < 0.7:
                cut = rng.randrange(len(query) + 1)
                query = query[:cut] + _garbage(rng) + query[cut + rng.randrange(5):]
        path = rng.choice(["/", "", "/a/../..//b/./%2e%2E/", "/\u00e9\x00", _garbage(rng)])
        digest = hashlib.sha256(_garbage(rng).encode("latin-1")).hexdigest() if wants_payload_hash(headers) else None
        try:
            v.verify(method="POST", path=path, query=query, headers=headers, payload_sha256=digest)
        except AUTH_ERRORS:
            pass
        result = scope_of(headers, query)
        assert result is None or (isinstance(result[0], str) and isinstance(result[1], str))


def test_huge_values_are_refused_quickly() -> None:
    huge = "a" * 200_000
    req = sign().with_header("authorization", f"AWS4-HMAC-SHA256 Credential={huge}, SignedHeaders=host;x-amz-date;"
                                              f"{';'.join(['x'] * 20_000)}, Signature={huge}")
    refused(req, IncompleteSignatureException,
            f"Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, "
            f"got '{huge}'")
    refused(sign().with_header("x-amz-date", huge), IncompleteSignatureException,
            f"Date must be in ISO-8601 'basic format'. Got '{huge}'. See http://en.wikipedia.org/wiki/ISO_8601")
    refused(sign().with_header("host", huge), InvalidSignatureException, MISMATCH)


def test_two_authorization_headers() -> None:
    req = sign()
    twice = replace(req, headers=req.headers + [(b"authorization", b"AWS4-HMAC-SHA256 Credential=x")])
    with pytest.raises(AUTH_ERRORS):
        verify(twice)
