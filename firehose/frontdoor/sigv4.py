"""AWS Signature Version 4 verification, as the Firehose and Kinesis front doors answer it.

``Verifier.verify`` takes what an ASGI server hands over (method, raw path, raw query, header pairs)
plus the SHA-256 of the body, and either returns who signed the request (``SignedBy``) or raises
the exact error AWS answers with (security.md §1 steps 5-14, §5, §6):

    5  Authorization header and X-Amz-Algorithm query param both present  InvalidSignatureException
    6  neither                                                             MissingAuthenticationTokenException
    7  a part missing (Credential, Signature, SignedHeaders, a date)       IncompleteSignatureException
    8  the date is not ISO-8601 basic format (query form: bad X-Amz-Expires)  IncompleteSignatureException
    9  the date is outside the allowed clock skew, or the URL expired      InvalidSignatureException
    10 host (and the dating header, and a session token) not signed       InvalidSignatureException
    11 algorithm is not AWS4-HMAC-SHA256                                   IncompleteSignatureException
    12 Credential is not key/date/region/service/terminator               IncompleteSignatureException
    13 scope region, service, terminator or date wrong (one message)      InvalidSignatureException
    14a access key unknown                                                 UnrecognizedClientException
    14b signature (or x-amz-content-sha256) does not match                 InvalidSignatureException
    14c session token missing, unknown, or sent for a long-term key        UnrecognizedClientException

Invariants:

* ``verify`` raises only those five ``FirehoseError`` classes, whatever bytes the headers and query
  hold (each value is read as latin-1, which maps every byte to one character and back, so nothing
  fails to decode and byte-exact comparisons survive the round trip).
* The canonical request is rebuilt from exactly the headers the client named in SignedHeaders, the
  path as received on the wire (encoded once more, as non-S3 services sign it) and the query
  re-encoded from its decoded form (security.md §3). The payload line is ``x-amz-content-sha256``
  when present, else the body hash the caller computed while reading the body.
* Secrets never leave this module: the canonical request and string to sign (which contain the
  session token) are logged at DEBUG on ``firehose.auth`` only, never put in an error message.
* Signatures are compared with ``hmac.compare_digest``; derived signing keys are cached per
  (secret, date, region, service) in a small bounded map, so a typical call costs one SHA-256 of
  the canonical request and one HMAC.

HTTP/2: Hypercorn (0.18) never shows ``:authority`` to the app; it strips pseudo-headers and puts a
``host`` header first whose value is ``:authority`` (or the client's ``host`` when there is no
authority). So a signed ``host`` always has a value. Should another server pass ``:authority``
through without ``host``, the verifier uses it for the signed ``host``. The other way round too:
the JavaScript SDK v3 over HTTP/2 sends no ``host`` and signs ``:authority`` in its place, so a
signed ``:authority`` satisfies the host rule and takes the ``host`` value the server derived from it.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import mktime_tz, parsedate_tz
from urllib.parse import quote, unquote_to_bytes

from firehose.errors import (
    IncompleteSignatureException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    UnrecognizedClientException,
)

log = logging.getLogger("firehose.auth")

ALGORITHM = "AWS4-HMAC-SHA256"
TERMINATOR = "aws4_request"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
#: The longest a presigned URL may be valid (seven days), as AWS enforces for SigV4.
MAX_EXPIRES = 604800

MISSING_TOKEN = "Missing Authentication Token"
BOTH_FORMS = "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as HTTP header."
HOST_NOT_SIGNED = "'Host' must be a 'SignedHeader' in the AWS Authorization."
UNKNOWN_KEY = "The security token included in the request is invalid."
#: Session token missing, unknown, or sent with a long-term key (AWS's text has no trailing period).
BAD_TOKEN = "The security token included in the request is invalid"
MISMATCH = ("The request signature we calculated does not match the signature you provided. Check your AWS "
            "Secret Access Key and signing method. Consult the service documentation for details.")
# Server policy beyond AWS's documented rule (security.md §2): the header that dates the request and
# the session token must be signed too, else a captured request could be re-dated or re-tokened. The
# texts follow AWS's own wording for ``host``; the type is the one AWS uses for an unsigned ``host``.
DATE_NOT_SIGNED = "'X-Amz-Date' must be a 'SignedHeader' in the AWS Authorization."
HTTP_DATE_NOT_SIGNED = "'Date' must be a 'SignedHeader' in the AWS Authorization."
TOKEN_NOT_SIGNED = "'X-Amz-Security-Token' must be a 'SignedHeader' in the AWS Authorization."
# x-amz-content-sha256 other than a hex digest or UNSIGNED-PAYLOAD. AWS's text for these is S3's
# (InvalidArgument); Firehose and Kinesis have no chunk-signed bodies, so the refusal is a signature
# error here, worded after S3's.
STREAMING_REFUSED = ("x-amz-content-sha256 '{}' is not supported by this service: send UNSIGNED-PAYLOAD or the "
                     "hex SHA-256 of the request body.")
CONTENT_SHA_INVALID = "x-amz-content-sha256 must be UNSIGNED-PAYLOAD or the hex SHA-256 of the request body."
# X-Amz-Expires texts: the first and third are S3's (the only AWS service documented to enforce the
# parameter); the second is ours, for a zero lifetime.
EXPIRES_NOT_A_NUMBER = "X-Amz-Expires should be a number"
EXPIRES_TOO_SMALL = "X-Amz-Expires must be at least 1 second"
EXPIRES_TOO_LARGE = ("X-Amz-Expires must be less than a week (in seconds); that is, the given X-Amz-Expires must "
                     "be less than 604800 seconds")

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
#: What ``scope_of`` accepts as a region: enough for every AWS region and emulator habits, never a path.
_LOOSE_REGION = re.compile(r"[a-z0-9][a-z0-9-]{0,49}")
_LOOSE_KEY = re.compile(r"[\w+=,.@-]{1,128}", re.ASCII)
_KEY_CACHE_SIZE = 256
#: What ``bytes.strip()`` removes, for stripping the same from a latin-1 string.
_ASCII_SPACE = " \t\n\r\x0b\x0c"

Headers = Sequence[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Credential:
    """What the daemon knows about one access key."""

    secret: str
    #: Non-empty: the request must carry one of these as X-Amz-Security-Token (temporary credentials).
    session_tokens: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class SignedBy:
    """Who signed a verified request, and for what scope."""

    access_key_id: str
    region: str  # from the credential scope
    service: str  # from the credential scope


#: HTTP/2 names the host ``:authority``; each stands in for the other when only one is present.
_AUTHORITY = {b"host": b":authority", b":authority": b"host"}


class _Request:
    """The header pairs of one request, looked up by name; repeated names keep every value in order."""

    __slots__ = ("single", "multi")

    def __init__(self, headers: Headers) -> None:
        single: dict[bytes, bytes] = {}
        multi: dict[bytes, list[bytes]] | None = None
        for name, value in headers:
            if name in single:
                if multi is None:
                    multi = {}
                multi.setdefault(name, [single[name]]).append(value)
            else:
                single[name] = value
        self.single = single
        self.multi = multi

    def get(self, name: bytes) -> str | None:
        """The header's value as sent (repeated values joined with ","), or None when absent."""
        if self.multi is not None and name in self.multi:
            return b",".join(self.multi[name]).decode("latin-1")
        value = self.single.get(name)
        return None if value is None else value.decode("latin-1")

    def canonical(self, name: str) -> str:
        """The header's canonical value: each value trimmed and its whitespace runs folded, joined by ","."""
        key = _wire_bytes(name)
        if self.multi is not None and key in self.multi:
            return ",".join(" ".join(v.decode("latin-1").split()) for v in self.multi[key])
        value = self.single.get(key)
        if value is None and key in _AUTHORITY:
            value = self.single.get(_AUTHORITY[key])
        return "" if value is None else " ".join(value.decode("latin-1").split())


class _Claim:
    """The signature parts a request carries, in either form, once they are all present."""

    __slots__ = ("algorithm", "credential", "signed_headers", "signature", "date", "date_header", "expires",
                 "token", "token_header", "by_query")

    def __init__(self, algorithm: str, credential: str, signed_headers: str, signature: str, date: str,
                 date_header: str | None, expires: str | None, token: str | None, token_header: bool,
                 by_query: bool) -> None:
        self.algorithm = algorithm
        self.credential = credential
        self.signed_headers = signed_headers
        self.signature = signature
        #: The raw request timestamp (X-Amz-Date, or the Date header).
        self.date = date
        #: Which header dates the request ("x-amz-date" or "date"); None in the query form.
        self.date_header = date_header
        self.expires = expires
        self.token = token
        #: Whether the token came from the x-amz-security-token header (which must then be signed).
        self.token_header = token_header
        self.by_query = by_query


class Verifier:
    """Checks SigV4 signatures for one service (``firehose`` or ``kinesis``).

    ``lookup`` maps an access key id to its credential (None when unknown); ``region_ok`` says whether
    a credential scope's region is served. ``clock`` is injectable for tests.
    """

    def __init__(self, lookup: Callable[[str], Credential | None], *, service: str,
                 region_ok: Callable[[str], bool], clock_skew_seconds: float = 300.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._lookup = lookup
        self.service = service
        self._region_ok = region_ok
        self._skew = clock_skew_seconds
        self._skew_text = _minutes(clock_skew_seconds)
        self._clock = clock
        self._keys: dict[tuple[str, str, str, str], bytes] = {}
        self._last_date: tuple[str, int] = ("", 0)

    def verify(self, *, method: str, path: str, query: str, headers: Headers,
               payload_sha256: str | None) -> SignedBy:
        """Who signed this request; raises the AWS error for the first check that fails.

        ``path`` is the raw request path and ``query`` the raw query string (both latin-1 decoded);
        ``payload_sha256`` is the lowercase hex SHA-256 of the body, or None when
        ``wants_payload_hash(headers)`` said the body is not covered.
        """
        request = _Request(headers)
        authorization = request.get(b"authorization") or None  # an empty header counts as absent
        params = _query_params(query) if query else None
        by_query = params is not None and "X-Amz-Algorithm" in params
        if authorization is not None and by_query:
            raise InvalidSignatureException(BOTH_FORMS)
        if authorization is not None:
            claim = _header_claim(authorization, request)
        elif params is not None and by_query:
            claim = _query_claim(params, request)
        else:
            raise MissingAuthenticationTokenException(MISSING_TOKEN)

        timestamp, epoch = self._when(claim)
        self._check_clock(claim, timestamp, epoch)
        names = claim.signed_headers.lower().split(";")
        _check_signed_headers(claim, names)
        if claim.algorithm != ALGORITHM:
            raise IncompleteSignatureException(
                f"Unsupported AWS 'algorithm': '{claim.algorithm}' (only AWS4-HMAC-SHA256 for now). ")
        parts = claim.credential.rstrip("/").split("/")  # AWS ignores trailing slashes here
        if len(parts) != 5:
            raise IncompleteSignatureException(
                "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, "
                f"got '{claim.credential}'")
        key_id, scope_date, region, service, terminator = parts
        self._check_scope(scope_date, region, service, terminator, timestamp)
        credential = self._lookup(key_id)
        if credential is None:
            raise UnrecognizedClientException(UNKNOWN_KEY)

        hashed = _hashed_payload(request, payload_sha256)
        canonical = "\n".join((
            method.upper(),
            _canonical_uri(path),
            _canonical_query(query, drop_signature=claim.by_query) if query else "",
            "".join(f"{name}:{request.canonical(name)}\n" for name in sorted(names)),
            claim.signed_headers,
            hashed,
        ))
        scope = f"{scope_date}/{region}/{service}/{terminator}"
        to_sign = f"{ALGORITHM}\n{timestamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        expected = hmac.digest(self._signing_key(credential.secret, scope_date, region, service),
                               to_sign.encode(), "sha256").hex()
        if not hmac.compare_digest(expected.encode(), claim.signature.encode("latin-1")):
            if log.isEnabledFor(logging.DEBUG):
                log.debug("Signature mismatch for access key %s.\nCanonical request:\n%s\nString to sign:\n%s",
                          key_id, canonical, to_sign)
            raise InvalidSignatureException(MISMATCH)
        _check_token(credential, claim.token)
        return SignedBy(key_id, region, service)

    # -- steps --------------------------------------------------------------------------------

    def _when(self, claim: _Claim) -> tuple[str, int]:
        """The request's timestamp in basic format and as epoch seconds (step 8)."""
        raw = claim.date
        last = self._last_date
        if raw == last[0]:
            return raw, last[1]
        epoch = _parse_basic(raw)
        if epoch is not None:
            self._last_date = (raw, epoch)
            return raw, epoch
        if claim.date_header == "date":  # the HTTP Date header may be RFC 1123 as well
            epoch = _parse_http_date(raw)
            if epoch is not None:
                return _basic(epoch), epoch
        raise IncompleteSignatureException(
            f"Date must be in ISO-8601 'basic format'. Got '{raw}'. See http://en.wikipedia.org/wiki/ISO_8601")

    def _check_clock(self, claim: _Claim, timestamp: str, epoch: int) -> None:
        """Step 9: the date is within the skew either way; a presigned URL with X-Amz-Expires may instead be
        used until X-Amz-Date + X-Amz-Expires. Without X-Amz-Expires a presigned URL is held to the skew, as
        AWS's non-S3 services treat it."""
        expires = None
        if claim.expires:
            expires = _expires(claim.expires)
        now = int(self._clock())
        if expires is None:
            if epoch < now - self._skew:
                raise InvalidSignatureException(
                    f"Signature expired: {timestamp} is now earlier than {_basic(now - self._skew)} "
                    f"({_basic(now)} - {self._skew_text})")
        elif now > epoch + expires:
            # A presigned URL past X-Amz-Date + X-Amz-Expires. AWS documents no text for Firehose or
            # Kinesis (S3 answers AccessDenied "Request has expired"); this keeps the front door's own
            # "Signature expired" wording and type, with the URL's lifetime in place of the skew.
            raise InvalidSignatureException(
                f"Signature expired: {timestamp} is now earlier than {_basic(now - expires)} "
                f"({_basic(now)} - {_minutes(expires)})")
        if epoch > now + self._skew:
            raise InvalidSignatureException(
                f"Signature not yet current: {timestamp} is still later than {_basic(now + self._skew)} "
                f"({_basic(now)} + {self._skew_text})")

    def _check_scope(self, scope_date: str, region: str, service: str, terminator: str, timestamp: str) -> None:
        """Step 13: every problem with the credential scope, in one message."""
        clauses = []
        if not self._region_ok(region):
            clauses.append(f"Credential should be scoped to a valid region, not '{region}'.")
        if service != self.service:
            clauses.append(f"Credential should be scoped to correct service: '{self.service}'.")
        if terminator != TERMINATOR:
            clauses.append(f"Credential should be scoped with a valid terminator: 'aws4_request', not '{terminator}'.")
        if scope_date != timestamp[:8]:
            clauses.append("Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from "
                           f"HTTP: '{scope_date}' != '{timestamp[:8]}', from '{timestamp}'.")
        if clauses:
            raise InvalidSignatureException(" ".join(clauses))

    def _signing_key(self, secret: str, date: str, region: str, service: str) -> bytes:
        """kSigning for the scope, derived once per (secret, date, region, service)."""
        cache_key = (secret, date, region, service)
        key = self._keys.get(cache_key)
        if key is None:
            key = signing_key(secret, date, region, service)
            if len(self._keys) >= _KEY_CACHE_SIZE:
                self._keys.pop(next(iter(self._keys)), None)  # the oldest
            self._keys[cache_key] = key
        return key


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """kSigning = HMAC chain of ("AWS4" + secret, date, region, service, "aws4_request") (security.md §4)."""
    key = hmac.digest(("AWS4" + secret).encode(), date.encode(), "sha256")
    for part in (region, service, TERMINATOR):
        key = hmac.digest(key, part.encode(), "sha256")
    return key


def wants_payload_hash(headers: Headers) -> bool:
    """Whether ``verify`` needs the body's SHA-256: False only for ``x-amz-content-sha256: UNSIGNED-PAYLOAD``."""
    value = None
    for name, v in headers:
        if name == b"x-amz-content-sha256":
            if value is not None:
                return True  # repeated: the joined value is never UNSIGNED-PAYLOAD
            value = v
    return value is None or value.strip() != b"UNSIGNED-PAYLOAD"


def scope_of(headers: Headers, query: str) -> tuple[str, str] | None:
    """(access key id, region) as the request claims them, without verifying anything; never raises.

    Read from the Authorization header's Credential, else the X-Amz-Credential query param. A part
    that does not look like an access key id or a region comes back as "" (so it can never reach an
    ARN or a file name); None when neither carries a credential.
    """
    credential = None
    for name, value in headers:
        if name == b"authorization":
            start = value.find(b"Credential=")
            if start >= 0:
                rest = value[start + 11:]
                end = len(rest)
                for sep in (b",", b" ", b"\t"):
                    i = rest.find(sep)
                    if 0 <= i < end:
                        end = i
                credential = rest[:end].decode("latin-1")
            break
    if credential is None and query and "X-Amz-Credential" in query:
        for part in query.split("&"):
            param, _, raw = part.partition("=")
            if param == "X-Amz-Credential":
                credential = unquote_to_bytes(_wire_bytes(raw)).decode("latin-1")
                break
    if not credential:
        return None
    parts = credential.split("/")
    key = parts[0] if _LOOSE_KEY.fullmatch(parts[0]) else ""
    region = parts[2] if len(parts) > 2 and _LOOSE_REGION.fullmatch(parts[2]) else ""
    return key, region


# -- parsing the two forms ------------------------------------------------------------------------


def _header_claim(authorization: str, request: _Request) -> _Claim:
    """The Authorization header's parts (step 7). Parameters may be separated by commas and/or spaces;
    the first token is the algorithm, whatever it is (as AWS and kinesalite parse it)."""
    tokens = authorization.strip().replace(",", " ").split()
    fields: dict[str, str] = {}
    for token in tokens[1:]:
        name, _, value = token.partition("=")
        fields[name] = value
    x_amz_date = request.get(b"x-amz-date")
    http_date = request.get(b"date")
    message = ""
    for part in ("Credential", "Signature", "SignedHeaders"):
        if not fields.get(part):
            message += f"Authorization header requires '{part}' parameter. "
    if not x_amz_date and not http_date:
        message += "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. "
    if message:
        raise IncompleteSignatureException(f"{message}Authorization={authorization}")
    header_token = request.get(b"x-amz-security-token") or None
    return _Claim(
        algorithm=tokens[0] if tokens else "",
        credential=fields["Credential"],
        signed_headers=fields["SignedHeaders"],
        signature=fields["Signature"],
        date=x_amz_date or http_date or "",
        date_header="x-amz-date" if x_amz_date else "date",
        expires=None,
        token=header_token,
        token_header=header_token is not None,
        by_query=False,
    )


_QUERY_PARTS = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature", "X-Amz-SignedHeaders", "X-Amz-Date")


def _query_claim(params: dict[str, str], request: _Request) -> _Claim:
    """The presigned form's parts (step 7); an empty parameter counts as missing."""
    message = "".join(f"AWS query-string parameters must include '{part}'. "
                      for part in _QUERY_PARTS if not params.get(part))
    if message:
        raise IncompleteSignatureException(message + "Re-examine the query-string parameters.")
    token = params.get("X-Amz-Security-Token") or None
    token_header = False
    if token is None:
        token = request.get(b"x-amz-security-token") or None
        token_header = token is not None
    return _Claim(
        algorithm=params["X-Amz-Algorithm"],
        credential=params["X-Amz-Credential"],
        signed_headers=params["X-Amz-SignedHeaders"],
        signature=params["X-Amz-Signature"],
        date=params["X-Amz-Date"],
        date_header=None,
        expires=params.get("X-Amz-Expires"),
        token=token,
        token_header=token_header,
        by_query=True,
    )


def _query_params(query: str) -> dict[str, str]:
    """Decoded query parameters, first occurrence of each name ('+' is a literal plus, not a space)."""
    params: dict[str, str] = {}
    for part in query.split("&"):
        name, _, value = part.partition("=")
        key = unquote_to_bytes(_wire_bytes(name)).decode("latin-1")
        if key not in params:
            params[key] = unquote_to_bytes(_wire_bytes(value)).decode("latin-1")
    return params


def _check_signed_headers(claim: _Claim, names: list[str]) -> None:
    """Step 10: host must be signed (AWS's rule); so must the dating header and a token header (ours)."""
    if "host" not in names and ":authority" not in names:
        raise InvalidSignatureException(HOST_NOT_SIGNED)
    if claim.date_header is not None and claim.date_header not in names:
        raise InvalidSignatureException(DATE_NOT_SIGNED if claim.date_header == "x-amz-date" else HTTP_DATE_NOT_SIGNED)
    if claim.token_header and "x-amz-security-token" not in names:
        raise InvalidSignatureException(TOKEN_NOT_SIGNED)


def _expires(raw: str) -> int:
    """X-Amz-Expires as seconds, 1..604800 (checked with the date, step 8)."""
    if not (raw.isascii() and raw.isdigit()):
        raise IncompleteSignatureException(EXPIRES_NOT_A_NUMBER)
    if len(raw) > 7:  # also keeps int() clear of the interpreter's digit limit
        raise IncompleteSignatureException(EXPIRES_TOO_LARGE)
    seconds = int(raw)
    if seconds < 1:
        raise IncompleteSignatureException(EXPIRES_TOO_SMALL)
    if seconds > MAX_EXPIRES:
        raise IncompleteSignatureException(EXPIRES_TOO_LARGE)
    return seconds


def _hashed_payload(request: _Request, payload_sha256: str | None) -> str:
    """The canonical request's last line: x-amz-content-sha256 if sent (checked against the body), else the
    body's hash."""
    declared = request.get(b"x-amz-content-sha256")
    if declared is None:
        return _require(payload_sha256)
    declared = declared.strip(_ASCII_SPACE)
    if declared == UNSIGNED_PAYLOAD:
        return declared
    if _HEX64.fullmatch(declared):
        if declared.lower() != _require(payload_sha256):
            raise InvalidSignatureException(MISMATCH)
        return declared
    if declared.startswith("STREAMING-") and len(declared) <= 64:
        raise InvalidSignatureException(STREAMING_REFUSED.format(declared))
    raise InvalidSignatureException(CONTENT_SHA_INVALID)


def _require(payload_sha256: str | None) -> str:
    if payload_sha256 is None:
        raise ValueError("payload_sha256 is needed unless wants_payload_hash(headers) is False")
    return payload_sha256


def _check_token(credential: Credential, token: str | None) -> None:
    """Step 14c: temporary keys need one of their tokens; a long-term key takes none."""
    if credential.session_tokens:
        if token is not None:
            given = token.encode("latin-1")
            for known in credential.session_tokens:
                if hmac.compare_digest(given, known.encode()):
                    return
        raise UnrecognizedClientException(BAD_TOKEN)
    if token is not None:
        raise UnrecognizedClientException(BAD_TOKEN)


# -- canonical request parts ----------------------------------------------------------------------


def _wire_bytes(text: str) -> bytes:
    """The bytes a latin-1-decoded string came from (UTF-8 for anything latin-1 cannot hold)."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _canonical_uri(path: str) -> str:
    """The path as received, dot-segments and empty segments removed, percent-encoded once more."""
    if path == "/" or not path:
        return "/"
    raw = _wire_bytes(path)
    segments: list[bytes] = []
    for segment in raw.split(b"/"):
        if segment == b"..":
            if segments:
                segments.pop()
        elif segment and segment != b".":
            segments.append(segment)
    normalized = (b"/" if raw.startswith(b"/") else b"") + b"/".join(segments)
    if raw.endswith(b"/") and segments:
        normalized += b"/"
    return quote(normalized or b"/", safe="/~")


def _canonical_query(query: str, *, drop_signature: bool) -> str:
    """Each name and value decoded then RFC 3986-encoded, sorted by name then value, joined with '&'.
    The presigned form leaves X-Amz-Signature out."""
    pairs = []
    for part in query.split("&"):
        name, _, value = part.partition("=")
        name_bytes = unquote_to_bytes(_wire_bytes(name))
        if drop_signature and name_bytes == b"X-Amz-Signature":
            continue
        pairs.append((quote(name_bytes, safe="-_.~"), quote(unquote_to_bytes(_wire_bytes(value)), safe="-_.~")))
    pairs.sort()
    return "&".join(f"{name}={value}" for name, value in pairs)


# -- dates ----------------------------------------------------------------------------------------


def _parse_basic(text: str) -> int | None:
    """Epoch seconds of a YYYYMMDD'T'HHMMSS'Z' timestamp, or None."""
    if len(text) != 16 or text[8] != "T" or text[15] != "Z":
        return None
    digits = text[:8] + text[9:15]
    if not (digits.isascii() and digits.isdigit()):
        return None
    fields = (int(text[0:4]), int(text[4:6]), int(text[6:8]), int(text[9:11]), int(text[11:13]), int(text[13:15]))
    try:
        datetime(*fields)
    except ValueError:
        return None
    return calendar.timegm(fields)


def _parse_http_date(text: str) -> int | None:
    """Epoch seconds of an RFC 1123 date (the HTTP Date header), or None."""
    try:
        parsed = parsedate_tz(text)
        if parsed is None:
            return None
        epoch = int(mktime_tz(parsed))
        time.gmtime(epoch)
    except (ValueError, TypeError, IndexError, OverflowError, OSError):
        return None
    return epoch


def _basic(epoch: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch))


def _minutes(seconds: float) -> str:
    """A window as AWS words it: "5 min.". A window that is not whole minutes is written in minutes to at
    most two decimals ("1.5 min.", "1.67 min."), keeping AWS's unit so clients matching the text still do."""
    if seconds % 60 == 0:
        return f"{int(seconds // 60)} min."
    return f"{seconds / 60:.2f}".rstrip("0").rstrip(".") + " min."
