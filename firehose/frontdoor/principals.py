"""Who may call the APIs: the principals of ``auth.principals``, their keys, accounts and policies.

Every access key belongs to exactly one account (as on AWS), and every
delivery stream and Kinesis stream belongs to one account, so the account a
request acts in is the account of the key that signed it.

With ``auth.mode: none`` nothing is verified, and a caller's account is still
derived from the access key it claims, the way LocalStack does it: a known
principal's key means its account, a 12-digit key id means that account (so
test suites can act as several accounts), and any other key (``testing``,
``AKIA…``) the home account (``account_id``).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from firehose.errors import ConfigError
from firehose.frontdoor.policy import Policy
from firehose.frontdoor.sigv4 import Credential
from firehose.settings import AuthSettings, PrincipalSettings

#: Condition keys whose value is fixed for a principal or part of a cached decision's key; a
#: principal whose policies test only these may have its decisions cached.
_CACHEABLE_KEYS = frozenset({"aws:sourceip", "aws:securetransport", "aws:principalarn", "aws:principalaccount",
                             "aws:username", "aws:userid", "aws:requestedregion"})


@dataclass(frozen=True, slots=True)
class Principal:
    access_key_id: str
    account_id: str
    arn: str
    name: str
    credential: Credential
    policies: tuple[Policy, ...]
    #: Whether an authorization decision depends only on (action, resource, source IP, TLS).
    cacheable: bool


def parse_policies(documents: list[dict[str, Any]], where: str) -> tuple[Policy, ...]:
    """Compile a principal's policy documents; ConfigError names the principal and the document."""
    policies = []
    for i, document in enumerate(documents):
        try:
            policies.append(Policy.parse(document))
        except ValueError as exc:
            raise ConfigError(f"{where}: policies[{i}]: {exc}") from exc
    return tuple(policies)


def _principal(p: PrincipalSettings) -> Principal:
    where = f"auth.principals[{p.access_key_id}]"
    policies = parse_policies(p.policies, where)
    return Principal(
        access_key_id=p.access_key_id,
        account_id=p.account_id,
        arn=p.principal_arn,
        name=p.name or p.access_key_id,
        credential=Credential(p.secret, frozenset(p.session_tokens)),
        policies=policies,
        cacheable=all(policy.context_keys <= _CACHEABLE_KEYS for policy in policies),
    )


class Principals:
    """The configured principals, looked up by access key id. Building it checks every policy document
    (ConfigError naming the principal and the document)."""

    def __init__(self, auth: AuthSettings, home_account: str) -> None:
        self.required = auth.mode == "sigv4"
        self.home_account = home_account
        self._by_key = {p.access_key_id: _principal(p) for p in auth.principals}
        self._bearer = [t.encode() for t in auth.bearer_tokens]

    def replace(self, other: Principals) -> None:
        """Take ``other``'s principals, policies and bearer tokens, in place (a config reload):
        whoever holds this object sees the new ones from the next request on."""
        self._by_key = other._by_key
        self._bearer = other._bearer

    def get(self, access_key_id: str) -> Principal | None:
        return self._by_key.get(access_key_id)

    def credential(self, access_key_id: str) -> Credential | None:
        principal = self._by_key.get(access_key_id)
        return principal.credential if principal else None

    def account_of(self, access_key_id: str | None) -> str:
        """The account an unverified caller acts in (``auth.mode: none``)."""
        if access_key_id:
            principal = self._by_key.get(access_key_id)
            if principal is not None:
                return principal.account_id
            if len(access_key_id) == 12 and access_key_id.isdigit():
                return access_key_id
        return self.home_account

    def bearer_ok(self, token: str) -> bool:
        """Whether ``token`` is one of the scrapers' bearer tokens (constant-time per token)."""
        given = token.encode()
        return any(hmac.compare_digest(given, known) for known in self._bearer)
