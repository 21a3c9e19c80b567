"""IAM policy evaluation: matching, conditions, variables, resource-based policies, parse errors, messages."""

from __future__ import annotations

import time
from typing import Any

import pytest

from firehose.frontdoor.policy import Decision, Policy, Reason, denied_message, evaluate

ACCT = "111122223333"
OTHER = "444455556666"
USER = f"arn:aws:iam::{ACCT}:user/app"
STREAM = f"arn:aws:firehose:us-east-1:{ACCT}:deliverystream/clicks"
PUT = "firehose:PutRecordBatch"
CONTEXT: dict[str, Any] = {
    "aws:SourceIp": "10.1.2.3",
    "aws:SecureTransport": False,
    "aws:CurrentTime": "2024-01-02T03:04:05Z",
    "aws:EpochTime": 1704164645,
    "aws:PrincipalArn": USER,
    "aws:PrincipalAccount": ACCT,
    "aws:username": "app",
    "aws:userid": "AKIDEXAMPLE",
    "aws:RequestedRegion": "us-east-1",
}


def statement(**fields: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": PUT, "Resource": STREAM} | fields


def allowed(statements: list[dict[str, Any]], *, action: str = PUT, resource: str = STREAM,
            version: str = "2012-10-17", context: dict[str, Any] | None = None) -> bool:
    """Whether the user may perform ``action`` on ``resource`` under a policy of these statements."""
    policy = Policy.parse({"Version": version, "Statement": statements})
    return evaluate(action, resource, identity=[policy], context=CONTEXT | (context or {}), principal_arn=USER,
                    principal_account=ACCT, resource_account=ACCT).allowed


# -- actions and resources -------------------------------------------------------------------------

ACTION_CASES = [
    ("exact", PUT, PUT, True),
    ("case-insensitive", "FIREHOSE:putrecordbatch", PUT, True),
    ("prefix glob", "firehose:Put*", PUT, True),
    ("prefix glob, other action", "firehose:Put*", "firehose:DescribeDeliveryStream", False),
    ("single char", "firehose:PutRecor?", "firehose:PutRecord", True),
    ("single char is one char", "firehose:PutRecor?", PUT, False),
    ("star", "*", "kinesis:DeleteStream", True),
    ("other service", "kinesis:*", PUT, False),
    ("infix", "firehose:*Record*", PUT, True),
    ("list", ["firehose:PutRecord", "firehose:PutRecordBatch"], PUT, True),
    ("service glob", "fire*:Put*", PUT, True),
    ("no substring match", "firehose:PutRecord", PUT, False),
]


@pytest.mark.parametrize(("action_pattern", "action", "expected"), [c[1:] for c in ACTION_CASES],
                         ids=[c[0] for c in ACTION_CASES])
def test_action_matching(action_pattern: Any, action: str, expected: bool) -> None:
    assert allowed([statement(Action=action_pattern)], action=action) is expected


def test_not_action() -> None:
    stmts = [{"Effect": "Allow", "NotAction": "firehose:Delete*", "Resource": "*"}]
    assert allowed(stmts, action=PUT)
    assert not allowed(stmts, action="firehose:DeleteDeliveryStream")
    assert allowed(stmts, action="kinesis:ListStreams")


CONSUMER = f"arn:aws:kinesis:us-east-1:{ACCT}:stream/orders/consumer/app:1700000000"
RESOURCE_CASES = [
    ("exact", STREAM, STREAM, True),
    ("case-sensitive", STREAM.replace("clicks", "Clicks"), STREAM, False),
    ("any region and name", f"arn:aws:firehose:*:{ACCT}:deliverystream/*", STREAM, True),
    ("region glob", f"arn:aws:firehose:us-east-*:{ACCT}:deliverystream/clicks", STREAM, True),
    ("account glob", "arn:aws:firehose:us-east-1:1111*:deliverystream/clicks", STREAM, True),
    ("star stays in its field", "arn:aws:firehose:*:deliverystream/clicks", STREAM, False),
    ("star in a field cannot span fields", "arn:aws:firehose:us-*:deliverystream/*", STREAM, False),
    ("short pattern's last star spans the rest", "arn:aws:*", STREAM, True),
    ("service glob", f"arn:aws:fire*:us-east-1:{ACCT}:deliverystream/clicks", STREAM, True),
    ("resource part", f"arn:aws:firehose:us-east-1:{ACCT}:*", STREAM, True),
    ("resource part spans / and :", f"arn:aws:kinesis:us-east-1:{ACCT}:stream/orders/*", CONSUMER, True),
    ("question mark needs a char", f"{STREAM}?", STREAM, False),
    ("question mark", f"{STREAM}?", f"{STREAM}1", True),
    ("other account", f"arn:aws:firehose:us-east-1:{OTHER}:deliverystream/clicks", STREAM, False),
    ("star resource", "*", STREAM, True),
    ("star is everything, even *", "*", "*", True),
    ("an ARN is not *", f"arn:aws:firehose:us-east-1:{ACCT}:*", "*", False),
    ("list", [f"arn:aws:firehose:us-east-1:{ACCT}:deliverystream/other", STREAM], STREAM, True),
    ("regex characters are literal", "arn:aws:firehose:us-east-1:111122223333:deliverystream/c.icks", STREAM,
     False),
]


@pytest.mark.parametrize(("pattern", "resource", "expected"), [c[1:] for c in RESOURCE_CASES],
                         ids=[c[0] for c in RESOURCE_CASES])
def test_resource_matching(pattern: Any, resource: str, expected: bool) -> None:
    assert allowed([statement(Resource=pattern)], resource=resource) is expected


def test_not_resource() -> None:
    stmts = [{"Effect": "Allow", "Action": PUT, "NotResource": "arn:aws:firehose:*:*:deliverystream/secret*"}]
    assert allowed(stmts)
    assert not allowed(stmts, resource=STREAM.replace("clicks", "secret-stuff"))


def test_globs_do_not_backtrack_catastrophically() -> None:
    pattern = f"arn:aws:firehose:*:*:deliverystream/{'*a' * 12}*b"
    policy = Policy.parse({"Version": "2012-10-17", "Statement": statement(Resource=pattern)})
    started = time.perf_counter()
    decision = evaluate(PUT, f"arn:aws:firehose:us-east-1:{ACCT}:deliverystream/{'a' * 3000}", identity=[policy],
                        context={})
    assert not decision.allowed
    assert time.perf_counter() - started < 0.5
    assert evaluate(PUT, f"arn:aws:firehose:us-east-1:{ACCT}:deliverystream/{'a' * 30}b", identity=[policy],
                    context={}).allowed


# -- evaluation order -----------------------------------------------------------------------------


def test_explicit_deny_wins() -> None:
    allow_all = {"Effect": "Allow", "Action": "*", "Resource": "*"}
    deny = {"Effect": "Deny", "Action": "firehose:PutRecord*", "Resource": "*"}
    assert not allowed([allow_all, deny])
    assert not allowed([deny, allow_all])
    assert allowed([allow_all, deny], action="firehose:DescribeDeliveryStream")
    policies = [Policy.parse({"Version": "2012-10-17", "Statement": s}) for s in (allow_all, deny)]
    decision = evaluate(PUT, STREAM, identity=policies, context=CONTEXT)
    assert decision == Decision(False, Reason.IDENTITY_DENY)


def test_deny_with_unmet_condition_does_not_deny() -> None:
    deny = {"Effect": "Deny", "Action": "*", "Resource": "*",
            "Condition": {"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}
    assert allowed([statement(), deny])
    assert not allowed([statement(), deny], context={"aws:SourceIp": "192.0.2.1"})


def test_no_policy_is_implicit_deny() -> None:
    assert evaluate(PUT, STREAM, identity=[], context=CONTEXT) == Decision(False, Reason.NO_IDENTITY_ALLOW)
    assert not allowed([statement(Effect="Deny")])


# -- conditions ------------------------------------------------------------------------------------

CONDITION_CASES: list[tuple[str, dict[str, Any], dict[str, Any], bool]] = [
    ("StringEquals", {"StringEquals": {"aws:username": "app"}}, {}, True),
    ("StringEquals other", {"StringEquals": {"aws:username": "other"}}, {}, False),
    ("StringEquals values are OR", {"StringEquals": {"aws:username": ["other", "app"]}}, {}, True),
    ("keys are case-insensitive", {"StringEquals": {"AWS:USERNAME": "app"}}, {}, True),
    ("values are case-sensitive", {"StringEquals": {"aws:username": "App"}}, {}, False),
    ("StringNotEquals", {"StringNotEquals": {"aws:username": "other"}}, {}, True),
    ("StringNotEquals same", {"StringNotEquals": {"aws:username": ["other", "app"]}}, {}, False),
    ("StringEqualsIgnoreCase", {"StringEqualsIgnoreCase": {"aws:username": "APP"}}, {}, True),
    ("StringNotEqualsIgnoreCase", {"StringNotEqualsIgnoreCase": {"aws:username": "APP"}}, {}, False),
    ("StringLike", {"StringLike": {"aws:userid": "AKID*"}}, {}, True),
    ("StringLike ?", {"StringLike": {"aws:userid": "AKIDEXAMPL?"}}, {}, True),
    ("StringLike miss", {"StringLike": {"aws:userid": "ASIA*"}}, {}, False),
    ("StringNotLike", {"StringNotLike": {"aws:userid": "AKID*"}}, {}, False),
    ("StringEquals on a boolean", {"StringEquals": {"aws:SecureTransport": "false"}}, {}, True),
    ("NumericLessThan", {"NumericLessThan": {"aws:EpochTime": "2000000000"}}, {}, True),
    ("NumericGreaterThan", {"NumericGreaterThan": {"aws:EpochTime": 2000000000}}, {}, False),
    ("NumericEquals", {"NumericEquals": {"aws:EpochTime": "1704164645"}}, {}, True),
    ("NumericNotEquals", {"NumericNotEquals": {"aws:EpochTime": "1704164645"}}, {}, False),
    ("NumericLessThanEquals boundary", {"NumericLessThanEquals": {"aws:EpochTime": 1704164645}}, {}, True),
    ("NumericGreaterThanEquals boundary", {"NumericGreaterThanEquals": {"aws:EpochTime": 1704164645.5}}, {}, False),
    ("Numeric on a string context", {"NumericLessThan": {"aws:RequestTag/size": 10}},
     {"aws:RequestTag/size": "9.5"}, True),
    ("Numeric on a non-number", {"NumericLessThan": {"aws:username": 10}}, {}, False),
    ("DateLessThan", {"DateLessThan": {"aws:CurrentTime": "2030-01-01T00:00:00Z"}}, {}, True),
    ("DateGreaterThan", {"DateGreaterThan": {"aws:CurrentTime": "2030-01-01"}}, {}, False),
    ("DateEquals epoch value", {"DateEquals": {"aws:CurrentTime": "1704164645"}}, {}, True),
    ("DateNotEquals", {"DateNotEquals": {"aws:CurrentTime": "2024-01-02T03:04:05+00:00"}}, {}, False),
    ("Date on EpochTime", {"DateGreaterThanEquals": {"aws:EpochTime": "2024-01-02T03:04:05Z"}}, {}, True),
    ("DateLessThanEquals with offset", {"DateLessThanEquals": {"aws:CurrentTime": "2024-01-02T04:04:04+01:00"}},
     {}, False),
    ("Bool true on false", {"Bool": {"aws:SecureTransport": "true"}}, {}, False),
    ("Bool false", {"Bool": {"aws:SecureTransport": "false"}}, {}, True),
    ("Bool JSON", {"Bool": {"aws:SecureTransport": True}}, {"aws:SecureTransport": True}, True),
    ("BinaryEquals", {"BinaryEquals": {"aws:RequestTag/blob": "QmluYXJ5"}}, {"aws:RequestTag/blob": "QmluYXJ5"},
     True),
    ("IpAddress", {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, {}, True),
    ("IpAddress miss", {"IpAddress": {"aws:SourceIp": ["192.168.0.0/16", "203.0.113.7"]}}, {}, False),
    ("IpAddress single address", {"IpAddress": {"aws:SourceIp": "203.0.113.7"}}, {"aws:SourceIp": "203.0.113.7"},
     True),
    ("IpAddress IPv6", {"IpAddress": {"aws:SourceIp": "2001:DB8::/32"}}, {"aws:SourceIp": "2001:db8::1"}, True),
    ("IpAddress v4 block, v6 caller", {"IpAddress": {"aws:SourceIp": "0.0.0.0/0"}}, {"aws:SourceIp": "::1"}, False),
    ("IpAddress v4-mapped caller", {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, {"aws:SourceIp": "::ffff:10.9.8.7"},
     True),
    ("IpAddress garbage caller", {"IpAddress": {"aws:SourceIp": "0.0.0.0/0"}}, {"aws:SourceIp": "nope"}, False),
    ("NotIpAddress", {"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}, {}, False),
    ("NotIpAddress outside", {"NotIpAddress": {"aws:SourceIp": "192.168.0.0/16"}}, {}, True),
    ("ArnLike", {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:user/*"}}, {}, True),
    ("ArnLike field rule", {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*"}}, {}, True),
    ("ArnLike field rule, middle", {"ArnLike": {"aws:PrincipalArn": "arn:aws:*:user/app"}}, {}, False),
    ("ArnEquals", {"ArnEquals": {"aws:PrincipalArn": USER}}, {}, True),
    ("ArnNotEquals", {"ArnNotEquals": {"aws:PrincipalArn": USER}}, {}, False),
    ("ArnNotLike", {"ArnNotLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/*"}}, {}, True),
    ("Null true on absent", {"Null": {"aws:TokenIssueTime": "true"}}, {}, True),
    ("Null true on present", {"Null": {"aws:username": "true"}}, {}, False),
    ("Null false on present", {"Null": {"aws:username": False}}, {}, True),
    ("Null on empty list", {"Null": {"aws:TagKeys": "true"}}, {"aws:TagKeys": []}, True),
    # A key the request lacks: false, except negated operators, IfExists and ForAllValues (IAM User Guide).
    ("missing key", {"StringEquals": {"aws:RequestTag/team": "a"}}, {}, False),
    ("missing key, negated", {"StringNotEquals": {"aws:RequestTag/team": "a"}}, {}, True),
    ("missing key, NotIpAddress", {"NotIpAddress": {"aws:VpcSourceIp": "10.0.0.0/8"}}, {}, True),
    ("IfExists, absent", {"StringEqualsIfExists": {"aws:RequestTag/team": "a"}}, {}, True),
    ("IfExists, present and equal", {"StringEqualsIfExists": {"aws:RequestTag/team": "a"}},
     {"aws:RequestTag/team": "a"}, True),
    ("IfExists, present and different", {"StringEqualsIfExists": {"aws:RequestTag/team": "a"}},
     {"aws:RequestTag/team": "b"}, False),
    ("IpAddressIfExists", {"IpAddressIfExists": {"aws:SourceIp": "192.168.0.0/16"}}, {}, False),
    ("ForAnyValue", {"ForAnyValue:StringEquals": {"aws:TagKeys": ["a", "b"]}}, {"aws:TagKeys": ["b", "c"]}, True),
    ("ForAnyValue miss", {"ForAnyValue:StringEquals": {"aws:TagKeys": ["a", "b"]}}, {"aws:TagKeys": ["c"]}, False),
    ("ForAnyValue absent", {"ForAnyValue:StringEquals": {"aws:TagKeys": ["a"]}}, {}, False),
    ("ForAnyValue negated", {"ForAnyValue:StringNotEquals": {"aws:TagKeys": ["a"]}}, {"aws:TagKeys": ["a", "z"]},
     True),
    ("ForAllValues", {"ForAllValues:StringEquals": {"aws:TagKeys": ["a", "b"]}}, {"aws:TagKeys": ["a"]}, True),
    ("ForAllValues miss", {"ForAllValues:StringEquals": {"aws:TagKeys": ["a", "b"]}}, {"aws:TagKeys": ["a", "c"]},
     False),
    ("ForAllValues absent", {"ForAllValues:StringEquals": {"aws:TagKeys": ["a"]}}, {}, True),
    ("ForAllValues empty", {"ForAllValues:StringEquals": {"aws:TagKeys": ["a"]}}, {"aws:TagKeys": []}, True),
    ("ForAllValues StringLike", {"ForAllValues:StringLike": {"aws:TagKeys": "team-*"}},
     {"aws:TagKeys": ["team-a", "team-b"]}, True),
    ("ForAllValues negated", {"ForAllValues:StringNotEquals": {"aws:TagKeys": ["secret"]}},
     {"aws:TagKeys": ["a", "secret"]}, False),
    ("ForAllValues IfExists", {"ForAllValues:StringLikeIfExists": {"aws:TagKeys": "x*"}}, {}, True),
    ("tag keys are case-insensitive", {"StringEquals": {"aws:ResourceTag/Env": "prod"}},
     {"aws:resourcetag/env": "prod"}, True),
    ("keys under one operator AND", {"StringEquals": {"aws:username": "app", "aws:RequestedRegion": "eu-west-1"}},
     {}, False),
    ("operators AND", {"StringEquals": {"aws:username": "app"}, "Bool": {"aws:SecureTransport": "false"}}, {}, True),
    ("operators AND, one fails", {"StringEquals": {"aws:username": "app"}, "Bool": {"aws:SecureTransport": "true"}},
     {}, False),
]


@pytest.mark.parametrize(("condition", "context", "expected"), [c[1:] for c in CONDITION_CASES],
                         ids=[c[0] for c in CONDITION_CASES])
def test_conditions(condition: dict[str, Any], context: dict[str, Any], expected: bool) -> None:
    policy = Policy.parse({"Version": "2012-10-17", "Statement": statement(Condition=condition)})
    decision = evaluate(PUT, STREAM, identity=[policy], context=CONTEXT | context, principal_arn=USER,
                        principal_account=ACCT, resource_account=ACCT)
    assert decision.allowed is expected


# -- policy variables ------------------------------------------------------------------------------

VARIABLE_CASES: list[tuple[str, str, dict[str, Any], str, bool]] = [
    ("username in resource", "arn:aws:firehose:*:*:deliverystream/${aws:username}-*", {}, "app-logs", True),
    ("another user's stream", "arn:aws:firehose:*:*:deliverystream/${aws:username}-*", {"aws:username": "bob"},
     "app-logs", False),
    ("key is case-insensitive", "arn:aws:firehose:*:*:deliverystream/${AWS:UserName}", {}, "app", True),
    ("no value, no match", "arn:aws:firehose:*:*:deliverystream/${aws:PrincipalTag/team}", {}, "app", False),
    ("default value", "arn:aws:firehose:*:*:deliverystream/${aws:PrincipalTag/team, 'shared'}", {}, "shared", True),
    ("value wins over default", "arn:aws:firehose:*:*:deliverystream/${aws:PrincipalTag/team, 'shared'}",
     {"aws:PrincipalTag/team": "red"}, "red", True),
    ("a value is literal text", "arn:aws:firehose:*:*:deliverystream/${aws:username}", {"aws:username": "a*"},
     "abc", False),
    ("a value with a star matches itself", "arn:aws:firehose:*:*:deliverystream/${aws:username}",
     {"aws:username": "a*"}, "a*", True),
    ("${*} is a literal star", "arn:aws:firehose:*:*:deliverystream/x${*}", {}, "xy", False),
    ("${*} matches a star", "arn:aws:firehose:*:*:deliverystream/x${*}", {}, "x*", True),
    ("${?} and ${$}", "arn:aws:firehose:*:*:deliverystream/${?}${$}", {}, "?$", True),
]


@pytest.mark.parametrize(("pattern", "context", "name", "expected"), [c[1:] for c in VARIABLE_CASES],
                         ids=[c[0] for c in VARIABLE_CASES])
def test_policy_variables_in_resources(pattern: str, context: dict[str, Any], name: str, expected: bool) -> None:
    policy = Policy.parse({"Version": "2012-10-17", "Statement": statement(Resource=pattern)})
    resource = f"arn:aws:firehose:us-east-1:{ACCT}:deliverystream/{name}"
    assert evaluate(PUT, resource, identity=[policy], context=CONTEXT | context).allowed is expected


def test_policy_variables_need_version_2012() -> None:
    pattern = "arn:aws:firehose:*:*:deliverystream/${aws:username}"
    assert not allowed([statement(Resource=pattern)], version="2008-10-17",
                       resource=f"arn:aws:firehose:us-east-1:{ACCT}:deliverystream/app")
    assert allowed([statement(Resource=pattern)], version="2008-10-17",
                   resource=f"arn:aws:firehose:us-east-1:{ACCT}:deliverystream/${{aws:username}}")


def test_policy_variables_in_conditions() -> None:
    own_arn = {"StringEquals": {"aws:PrincipalArn": f"arn:aws:iam::{ACCT}:user/${{aws:username}}"}}
    assert allowed([statement(Condition=own_arn)])
    assert not allowed([statement(Condition=own_arn)], context={"aws:username": "bob"})
    like = {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::${aws:PrincipalAccount}:user/*"}}
    assert allowed([statement(Condition=like)])
    assert not allowed([statement(Condition=like)], context={"aws:PrincipalAccount": OTHER})
    team = {"StringLike": {"aws:ResourceTag/team": "${aws:PrincipalTag/team}-*"}}
    assert allowed([statement(Condition=team)],
                   context={"aws:ResourceTag/team": "red-1", "aws:PrincipalTag/team": "red"})
    assert not allowed([statement(Condition=team)],
                       context={"aws:ResourceTag/team": "red-1", "aws:PrincipalTag/team": "blue"})
    assert not allowed([statement(Condition=team)], context={"aws:ResourceTag/team": "red-1"})


def test_context_keys() -> None:
    policy = Policy.parse({"Version": "2012-10-17", "Statement": [
        statement(Resource="arn:aws:firehose:*:*:deliverystream/${aws:username}",
                  Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"},
                             "StringLike": {"aws:ResourceTag/Team": "${aws:PrincipalTag/team}"}}),
    ]})
    assert policy.context_keys == {"aws:username", "aws:sourceip", "aws:resourcetag/team", "aws:principaltag/team"}


# -- resource-based policies -----------------------------------------------------------------------


def resource_policy(*statements: dict[str, Any]) -> Policy:
    return Policy.parse({"Version": "2012-10-17", "Statement": list(statements)}, resource_based=True)


def grant(principal: Any, effect: str = "Allow") -> dict[str, Any]:
    return {"Effect": effect, "Principal": principal, "Action": PUT, "Resource": STREAM}


IDENTITY_ALLOW = Policy.parse({"Version": "2012-10-17", "Statement": statement()})


def decide(*, identity: list[Policy], resource: list[Policy], principal_arn: str = USER,
           principal_account: str = ACCT, resource_account: str = ACCT) -> Decision:
    return evaluate(PUT, STREAM, identity=identity, context=CONTEXT, resource_policies=resource,
                    principal_arn=principal_arn, principal_account=principal_account,
                    resource_account=resource_account)


RESOURCE_POLICY_CASES: list[tuple[str, bool, Any, str, str, Reason]] = [
    # (id, identity allows, Principal, caller ARN, caller account, expected)
    ("same account, names the user", False, {"AWS": USER}, USER, ACCT, Reason.ALLOWED),
    ("same account, names everyone", False, "*", USER, ACCT, Reason.ALLOWED),
    ("same account, AWS *", False, {"AWS": ["*"]}, USER, ACCT, Reason.ALLOWED),
    ("same account, names the account only", False, {"AWS": ACCT}, USER, ACCT, Reason.NO_IDENTITY_ALLOW),
    ("same account, identity allows", True, {"AWS": f"arn:aws:iam::{OTHER}:root"}, USER, ACCT, Reason.ALLOWED),
    ("cross-account, both allow", True, {"AWS": f"arn:aws:iam::{OTHER}:root"}, f"arn:aws:iam::{OTHER}:user/x",
     OTHER, Reason.ALLOWED),
    ("cross-account, account id", True, {"AWS": [ACCT, OTHER]}, f"arn:aws:iam::{OTHER}:user/x", OTHER,
     Reason.ALLOWED),
    ("cross-account, identity only", True, {"AWS": f"arn:aws:iam::{ACCT}:root"}, f"arn:aws:iam::{OTHER}:user/x",
     OTHER, Reason.NO_RESOURCE_ALLOW),
    ("cross-account, resource only", False, {"AWS": f"arn:aws:iam::{OTHER}:user/x"},
     f"arn:aws:iam::{OTHER}:user/x", OTHER, Reason.NO_IDENTITY_ALLOW),
    ("cross-account, role names its sessions", True, {"AWS": f"arn:aws:iam::{OTHER}:role/path/writer"},
     f"arn:aws:sts::{OTHER}:assumed-role/writer/session-1", OTHER, Reason.ALLOWED),
    ("cross-account, other role", True, {"AWS": f"arn:aws:iam::{OTHER}:role/reader"},
     f"arn:aws:sts::{OTHER}:assumed-role/writer/session-1", OTHER, Reason.NO_RESOURCE_ALLOW),
    ("cross-account, Service principal", True, {"Service": "firehose.amazonaws.com"},
     f"arn:aws:iam::{OTHER}:user/x", OTHER, Reason.NO_RESOURCE_ALLOW),
]


@pytest.mark.parametrize(("identity_allows", "principal", "caller", "account", "expected"),
                         [c[1:] for c in RESOURCE_POLICY_CASES], ids=[c[0] for c in RESOURCE_POLICY_CASES])
def test_resource_based_policies(identity_allows: bool, principal: Any, caller: str, account: str,
                                 expected: Reason) -> None:
    decision = decide(identity=[IDENTITY_ALLOW] if identity_allows else [],
                      resource=[resource_policy(grant(principal))], principal_arn=caller, principal_account=account)
    assert decision.reason is expected
    assert decision.allowed is (expected is Reason.ALLOWED)


def test_resource_policy_deny_wins() -> None:
    decision = decide(identity=[IDENTITY_ALLOW], resource=[resource_policy(grant("*"), grant({"AWS": USER}, "Deny"))])
    assert decision == Decision(False, Reason.RESOURCE_DENY)
    unrelated = resource_policy(grant({"AWS": f"arn:aws:iam::{ACCT}:user/other"}, "Deny"))
    assert decide(identity=[IDENTITY_ALLOW], resource=[unrelated]).allowed


def test_identity_deny_is_reported_before_resource_deny() -> None:
    deny = Policy.parse({"Version": "2012-10-17", "Statement": statement(Effect="Deny")})
    decision = decide(identity=[deny], resource=[resource_policy(grant("*", "Deny"))])
    assert decision.reason is Reason.IDENTITY_DENY


def test_not_principal() -> None:
    everyone_but_app = resource_policy({"Effect": "Deny", "NotPrincipal": {"AWS": USER}, "Action": "*",
                                        "Resource": "*"})
    assert decide(identity=[IDENTITY_ALLOW], resource=[everyone_but_app]).allowed
    other = f"arn:aws:iam::{ACCT}:user/other"
    assert decide(identity=[IDENTITY_ALLOW], resource=[everyone_but_app], principal_arn=other).reason \
        is Reason.RESOURCE_DENY


def test_root_of_the_resource_account() -> None:
    root = f"arn:aws:iam::{ACCT}:root"
    assert decide(identity=[], resource=[], principal_arn=root).allowed
    assert decide(identity=[], resource=[resource_policy(grant("*", "Deny"))], principal_arn=root).reason \
        is Reason.RESOURCE_DENY
    other_root = f"arn:aws:iam::{OTHER}:root"
    assert not decide(identity=[], resource=[], principal_arn=other_root, principal_account=OTHER).allowed


# -- parsing ---------------------------------------------------------------------------------------

GOOD = {"Effect": "Allow", "Action": PUT, "Resource": STREAM}
PARSE_ERRORS: list[tuple[str, Any, str]] = [
    ("not an object", [GOOD], "a policy document must be a JSON object, not a list"),
    ("unknown element", {"Version": "2012-10-17", "Statement": GOOD, "Statements": []},
     "unknown policy element 'Statements' (expected Version, Id, Statement)"),
    ("bad version", {"Version": "2012-10-18", "Statement": GOOD},
     "Version must be '2012-10-17' or '2008-10-17', not '2012-10-18'"),
    ("bad id", {"Version": "2012-10-17", "Id": 5, "Statement": GOOD}, "Id must be a string"),
    ("no statement", {"Version": "2012-10-17"}, "Statement is required"),
    ("empty statement list", {"Version": "2012-10-17", "Statement": []},
     "Statement must be an object or a non-empty list of objects"),
    ("statement not an object", {"Version": "2012-10-17", "Statement": [GOOD, "Allow"]},
     "Statement[1]: a statement must be an object, not a string"),
    ("unknown statement element", {"Statement": GOOD | {"Actions": "x:y"}},
     "Statement[0]: unknown element 'Actions' (expected Sid, Effect, Principal, NotPrincipal, Action, NotAction, "
     "Resource, NotResource, Condition)"),
    ("missing Effect", {"Statement": {"Sid": "One", "Action": PUT, "Resource": "*"}},
     "Statement[0] (Sid 'One'): Effect is required"),
    ("bad Effect", {"Statement": GOOD | {"Effect": "allow"}},
     "Statement[0]: Effect must be 'Allow' or 'Deny', not 'allow'"),
    ("Action and NotAction", {"Statement": GOOD | {"NotAction": "x:y"}},
     "Statement[0]: give Action or NotAction, not both"),
    ("no Action", {"Statement": {"Effect": "Allow", "Resource": "*"}},
     "Statement[0]: Action or NotAction is required"),
    ("Action not service:action", {"Statement": GOOD | {"Action": ["firehose:PutRecord", "PutRecord"]}},
     "Statement[0]: Action 'PutRecord' must be \"*\" or service:action (e.g. firehose:PutRecordBatch)"),
    ("Action empty list", {"Statement": GOOD | {"Action": []}},
     "Statement[0]: Action must be a non-empty string or a non-empty list of non-empty strings"),
    ("Action not a string", {"Statement": GOOD | {"Action": 5}},
     "Statement[0]: Action must be a non-empty string or a non-empty list of non-empty strings"),
    ("Resource and NotResource", {"Statement": GOOD | {"NotResource": "*"}},
     "Statement[0]: give Resource or NotResource, not both"),
    ("no Resource", {"Statement": {"Effect": "Allow", "Action": "*"}},
     "Statement[0]: Resource or NotResource is required"),
    ("Resource not an ARN", {"Statement": GOOD | {"Resource": "deliverystream/clicks"}},
     "Statement[0]: Resource 'deliverystream/clicks' must be \"*\" or an ARN"),
    ("malformed variable", {"Version": "2012-10-17", "Statement": GOOD | {"Resource": "arn:aws:firehose:${}"}},
     "Statement[0]: Resource: policy variable '${}' is malformed"),
    ("Principal in identity policy", {"Statement": GOOD | {"Principal": "*"}},
     "Statement[0]: Principal and NotPrincipal belong in resource-based policies, not in an identity-based policy"),
    ("Condition not an object", {"Statement": GOOD | {"Condition": ["StringEquals"]}},
     "Statement[0]: Condition must be an object of operators, not a list"),
    ("operator block not an object", {"Statement": GOOD | {"Condition": {"StringEquals": "a"}}},
     "Statement[0]: Condition 'StringEquals' must map condition keys to values"),
    ("unknown operator", {"Statement": GOOD | {"Condition": {"StringEqual": {"aws:username": "a"}}}},
     "Statement[0]: Condition: unknown condition operator 'StringEqual'"),
    ("operators are case-sensitive", {"Statement": GOOD | {"Condition": {"stringequals": {"aws:username": "a"}}}},
     "Statement[0]: Condition: unknown condition operator 'stringequals'"),
    ("unknown set prefix", {"Statement": GOOD | {"Condition": {"ForSomeValues:StringEquals": {"k": "a"}}}},
     "Statement[0]: Condition: unknown condition operator 'ForSomeValues:StringEquals'"),
    ("bad CIDR", {"Statement": GOOD | {"Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.300/8"}}}},
     "Statement[0]: Condition: IpAddress value '10.0.0.300/8' for key 'aws:SourceIp' is not an IP address or CIDR "
     "block"),
    ("bad number", {"Statement": GOOD | {"Condition": {"NumericLessThan": {"k": "ten"}}}},
     "Statement[0]: Condition: NumericLessThan value 'ten' for key 'k' is not a number"),
    ("bad date", {"Statement": GOOD | {"Condition": {"DateLessThan": {"aws:CurrentTime": "tomorrow"}}}},
     "Statement[0]: Condition: DateLessThan value 'tomorrow' for key 'aws:CurrentTime' is not an ISO-8601 date or "
     "epoch seconds"),
    ("bad bool", {"Statement": GOOD | {"Condition": {"Bool": {"aws:SecureTransport": "yes"}}}},
     "Statement[0]: Condition: Bool value 'yes' for key 'aws:SecureTransport' must be true or false"),
    ("Null with IfExists", {"Statement": GOOD | {"Condition": {"NullIfExists": {"k": "true"}}}},
     "Statement[0]: Condition: condition operator 'NullIfExists' is not allowed: Null takes no IfExists or set "
     "prefix"),
    ("null value", {"Statement": GOOD | {"Condition": {"StringEquals": {"k": None}}}},
     "Statement[0]: Condition: condition StringEquals on 'k': a value must be a string, number or boolean, not null"),
    ("no values", {"Statement": GOOD | {"Condition": {"StringEquals": {"k": []}}}},
     "Statement[0]: Condition: condition StringEquals on 'k' has no values"),
]


@pytest.mark.parametrize(("document", "message"), [c[1:] for c in PARSE_ERRORS], ids=[c[0] for c in PARSE_ERRORS])
def test_parse_errors(document: Any, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        Policy.parse(document)
    assert str(caught.value) == message


RESOURCE_PARSE_ERRORS: list[tuple[str, dict[str, Any], str]] = [
    ("no principal", GOOD, "Statement[0]: a resource-based policy statement needs Principal or NotPrincipal"),
    ("Principal and NotPrincipal", GOOD | {"Principal": "*", "NotPrincipal": "*"},
     "Statement[0]: give Principal or NotPrincipal, not both"),
    ("principal string", GOOD | {"Principal": USER},
     'Statement[0]: Principal must be "*" or an object such as {"AWS": "arn:aws:iam::111122223333:root"}'),
    ("principal type", GOOD | {"Principal": {"IAM": USER}},
     "Statement[0]: Principal has unknown principal type 'IAM' (expected one of AWS, Service, Federated, "
     "CanonicalUser)"),
    ("principal entry", GOOD | {"Principal": {"AWS": "app"}},
     "Statement[0]: Principal.AWS entry 'app' must be \"*\", a 12-digit account id or an ARN"),
]


@pytest.mark.parametrize(("statement_", "message"), [c[1:] for c in RESOURCE_PARSE_ERRORS],
                         ids=[c[0] for c in RESOURCE_PARSE_ERRORS])
def test_resource_policy_parse_errors(statement_: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        Policy.parse({"Version": "2012-10-17", "Statement": statement_}, resource_based=True)
    assert str(caught.value) == message


def test_statement_may_be_an_object_and_version_may_be_omitted() -> None:
    policy = Policy.parse({"Statement": GOOD})
    assert policy.version == "2008-10-17"
    assert evaluate(PUT, STREAM, identity=[policy], context={}).allowed


# -- AccessDenied messages -------------------------------------------------------------------------


def test_reasons() -> None:
    assert [r.value for r in Reason] == [
        "allowed", "no identity-based policy allows", "explicit deny in identity-based policy",
        "no resource-based policy allows", "explicit deny in resource-based policy"]


@pytest.mark.parametrize(("reason", "message"), [
    (Reason.NO_IDENTITY_ALLOW,
     f"User: {USER} is not authorized to perform: {PUT} on resource: {STREAM} because no identity-based policy "
     f"allows the {PUT} action"),
    (Reason.NO_RESOURCE_ALLOW,
     f"User: {USER} is not authorized to perform: {PUT} on resource: {STREAM} because no resource-based policy "
     f"allows the {PUT} action"),
    (Reason.IDENTITY_DENY,
     f"User: {USER} is not authorized to perform: {PUT} on resource: {STREAM} with an explicit deny in an "
     "identity-based policy"),
    (Reason.RESOURCE_DENY,
     f"User: {USER} is not authorized to perform: {PUT} on resource: {STREAM} with an explicit deny in a "
     "resource-based policy"),
])
def test_denied_message(reason: Reason, message: str) -> None:
    assert denied_message(Decision(False, reason), USER, PUT, STREAM) == message


def test_spec_example_message() -> None:
    decision = evaluate(PUT, STREAM, identity=[], context=CONTEXT)
    assert denied_message(decision, USER, PUT, STREAM) == (
        "User: arn:aws:iam::111122223333:user/app is not authorized to perform: firehose:PutRecordBatch on "
        "resource: arn:aws:firehose:us-east-1:111122223333:deliverystream/clicks because no identity-based policy "
        "allows the firehose:PutRecordBatch action")


def test_no_message_for_an_allowed_request() -> None:
    with pytest.raises(ValueError):
        denied_message(Decision(True, Reason.ALLOWED), USER, PUT, STREAM)
