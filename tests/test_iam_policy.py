"""IAM's policy language as pure logic: wildcards, conditions, documents, evaluation, trust, sessions."""

from __future__ import annotations

import fnmatch
import json
import random
import time

import pytest

from kindling import errors
from kindling.iam import conditions, document, evaluate
from kindling.iam.sessions import Sessions
from kindling.iam.wildcard import match

FN = "arn:aws:lambda:us-east-1:000000000000:function:target"


def policy(*statements: dict) -> document.Policy:
    return document.parse(json.dumps({"Version": "2012-10-17", "Statement": list(statements)}))


def allow(action: object = "*", resource: object = "*", **more: object) -> dict:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **more}


def deny(action: object = "*", resource: object = "*", **more: object) -> dict:
    return {"Effect": "Deny", "Action": action, "Resource": resource, **more}


def decide(p: document.Policy, action: str = "lambda:InvokeFunction", resource: str = FN,
           **context: list[str]) -> str:
    ctx = {k.replace("__", ":").lower(): v for k, v in context.items()}
    return evaluate.decide([p], evaluate.Request(action, resource, ctx))


# -- wildcards -------------------------------------------------------------------------------------------------
def test_wildcards_match_as_fnmatch_does_for_star_and_question_mark() -> None:
    rng = random.Random(7)
    for _ in range(5000):
        pattern = "".join(rng.choice("ab*?") for _ in range(rng.randint(0, 7)))
        text = "".join(rng.choice("ab") for _ in range(rng.randint(0, 9)))
        assert match(pattern, text) == fnmatch.fnmatchcase(text, pattern), (pattern, text)


def test_hostile_wildcard_patterns_cost_one_pass_over_the_value() -> None:
    # Given patterns that make backtracking matchers exponential or quadratic
    value = "a" * 2048
    patterns = ["a*" * 3000 + "b", "*a" * 2000 + "?" * 1000 + "b", "*" + "?" * 5000]
    start = time.perf_counter()
    for p in patterns:
        assert match(p, value) is False
    assert match("*a*a*a*a*a*a*a*a*a*a*", value)
    # Then each costs milliseconds, not the lifetime of the universe
    assert time.perf_counter() - start < 0.5


def test_actions_match_without_case_and_resources_with_it() -> None:
    p = policy(allow("Lambda:invoke*", "arn:aws:lambda:*:*:function:Target"))
    assert decide(p, "lambda:InvokeFunction", "arn:aws:lambda:us-east-1:0:function:Target") == evaluate.ALLOW
    assert decide(p, "lambda:InvokeFunction", "arn:aws:lambda:us-east-1:0:function:target") == evaluate.IMPLICIT_DENY


# -- evaluation ------------------------------------------------------------------------------------------------
def test_explicit_deny_wins_over_any_allow() -> None:
    p = policy(allow("*", "*"), deny("lambda:Invoke*", FN))
    assert decide(p) == evaluate.EXPLICIT_DENY
    assert decide(p, "lambda:GetFunction") == evaluate.ALLOW


def test_nothing_allowed_is_an_implicit_deny() -> None:
    assert decide(policy(allow("lambda:GetFunction"))) == evaluate.IMPLICIT_DENY
    assert evaluate.decide([], evaluate.Request("lambda:InvokeFunction", FN)) == evaluate.IMPLICIT_DENY


def test_not_action_and_not_resource() -> None:
    p = policy({"Effect": "Allow", "NotAction": "lambda:Delete*", "Resource": "*"})
    assert decide(p, "lambda:InvokeFunction") == evaluate.ALLOW
    assert decide(p, "lambda:DeleteFunction") == evaluate.IMPLICIT_DENY
    q = policy({"Effect": "Allow", "Action": "lambda:*", "NotResource": "arn:aws:lambda:*:*:function:secret*"})
    assert decide(q) == evaluate.ALLOW
    assert decide(q, resource="arn:aws:lambda:us-east-1:0:function:secret-one") == evaluate.IMPLICIT_DENY
    d = policy(allow(), {"Effect": "Deny", "NotAction": "lambda:Get*", "Resource": "*"})
    assert decide(d, "lambda:GetFunction") == evaluate.ALLOW
    assert decide(d) == evaluate.EXPLICIT_DENY


def test_qualified_resources_need_their_own_pattern_as_in_lambda() -> None:
    p = policy(allow("lambda:InvokeFunction", FN))
    assert decide(p, resource=FN) == evaluate.ALLOW
    assert decide(p, resource=FN + ":prod") == evaluate.IMPLICIT_DENY
    assert decide(policy(allow("lambda:InvokeFunction", FN + "*")), resource=FN + ":prod") == evaluate.ALLOW


# -- conditions ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("operator", "wanted", "value", "holds"), [
    ("StringEquals", "abc", "abc", True), ("StringEquals", "abc", "ABC", False),
    ("StringNotEquals", "abc", "abd", True), ("StringEqualsIgnoreCase", "abc", "ABC", True),
    ("StringNotEqualsIgnoreCase", "abc", "ABC", False), ("StringLike", "a*c?", "abbcd", True),
    ("StringNotLike", "a*", "ba", True), ("NumericLessThan", "10", "9", True), ("NumericLessThan", "10", "10", False),
    ("NumericLessThanEquals", "10", "10", True), ("NumericGreaterThan", "1.5", "2", True),
    ("NumericGreaterThanEquals", "2", "1", False), ("NumericEquals", "3", "3.0", True),
    ("NumericNotEquals", "3", "4", True), ("NumericEquals", "3", "x", False),
    ("DateLessThan", "2030-01-01T00:00:00Z", "2026-12-03T15:00:00Z", True),
    ("DateGreaterThan", "2030-01-01T00:00:00Z", "2026-12-03T15:00:00Z", False),
    ("DateEquals", "2026-12-03T15:00:00Z", "1796310000", True),
    ("Bool", "true", "true", True), ("Bool", "true", "false", False), ("Bool", True, "true", True),
    ("IpAddress", "127.0.0.0/8", "127.0.0.1", True), ("IpAddress", "10.0.0.0/8", "127.0.0.1", False),
    ("NotIpAddress", "10.0.0.0/8", "127.0.0.1", True), ("IpAddress", "10.0.0.0/8", "not-an-ip", False),
    ("ArnLike", "arn:aws:iam::*:role/app-*", "arn:aws:iam::000000000000:role/app-x", True),
    ("ArnLike", "arn:aws:iam::*:role/app-*", "arn:aws:iam::000000000000:user/app-x", False),
    ("ArnEquals", "arn:aws:iam::000000000000:role/r", "arn:aws:iam::000000000000:role/r", True),
    ("ArnNotLike", "arn:aws:iam::*:role/app-*", "arn:aws:iam::000000000000:role/other", True),
    ("ArnNotEquals", "arn:aws:iam::1:role/r", "arn:aws:iam::1:role/r", False),
])
def test_condition_operators(operator: str, wanted: object, value: str, holds: bool) -> None:
    assert conditions.holds({operator: {"k:Key": wanted}}, {"k:key": [value]}) is holds


def test_any_policy_value_may_match_and_every_key_and_operator_must() -> None:
    block = {"StringEquals": {"a:x": ["1", "2"], "a:y": "3"}, "Bool": {"a:z": "true"}}
    assert conditions.holds(block, {"a:x": ["2"], "a:y": ["3"], "a:z": ["true"]})
    assert not conditions.holds(block, {"a:x": ["2"], "a:y": ["4"], "a:z": ["true"]})
    assert not conditions.holds(block, {"a:x": ["2"], "a:y": ["3"], "a:z": ["false"]})


def test_missing_keys_fail_positive_operators_and_pass_negated_ones_and_if_exists() -> None:
    assert not conditions.holds({"StringEquals": {"a:x": "1"}}, {})
    assert conditions.holds({"StringNotEquals": {"a:x": "1"}}, {})
    assert conditions.holds({"ArnNotLike": {"a:x": "arn:*"}}, {})
    assert conditions.holds({"StringEqualsIfExists": {"a:x": "1"}}, {})
    assert not conditions.holds({"StringEqualsIfExists": {"a:x": "1"}}, {"a:x": ["2"]})
    assert conditions.holds({"NumericLessThanIfExists": {"a:n": "5"}}, {"a:n": ["4"]})


def test_null_tests_presence() -> None:
    assert conditions.holds({"Null": {"a:x": "true"}}, {})
    assert not conditions.holds({"Null": {"a:x": "true"}}, {"a:x": ["v"]})
    assert conditions.holds({"Null": {"a:x": "false"}}, {"a:x": ["v"]})
    assert not conditions.holds({"Null": {"a:x": "false"}}, {})


def test_set_operators() -> None:
    any_of = {"ForAnyValue:StringEquals": {"a:tags": ["x", "y"]}}
    all_of = {"ForAllValues:StringLike": {"a:tags": ["x*", "y"]}}
    assert conditions.holds(any_of, {"a:tags": ["q", "y"]})
    assert not conditions.holds(any_of, {"a:tags": ["q"]})
    assert not conditions.holds(any_of, {})  # nothing to match
    assert conditions.holds(all_of, {"a:tags": ["x1", "y"]})
    assert not conditions.holds(all_of, {"a:tags": ["x1", "z"]})
    assert conditions.holds(all_of, {})  # vacuously, as IAM says
    assert conditions.holds({"ForAllValues:StringNotEquals": {"a:tags": ["z"]}}, {"a:tags": ["x", "y"]})
    assert not conditions.holds({"ForAnyValue:StringNotEquals": {"a:tags": ["x"]}}, {"a:tags": ["x"]})


def test_conditions_in_statements_use_the_request_context() -> None:
    p = policy(allow("lambda:*", "*", Condition={"IpAddress": {"aws:SourceIp": "127.0.0.0/8"},
                                                 "Bool": {"aws:SecureTransport": "false"}}))
    assert decide(p, aws__SourceIp=["127.0.0.1"], aws__SecureTransport=["false"]) == evaluate.ALLOW
    assert decide(p, aws__SourceIp=["10.1.1.1"], aws__SecureTransport=["false"]) == evaluate.IMPLICIT_DENY
    d = policy(allow(), deny("lambda:*", "*", Condition={"StringNotLike": {"aws:PrincipalArn": "*:role/admin"}}))
    assert decide(d, aws__PrincipalArn=["arn:aws:iam::0:role/admin"]) == evaluate.ALLOW
    assert decide(d, aws__PrincipalArn=["arn:aws:iam::0:role/app"]) == evaluate.EXPLICIT_DENY


# -- documents -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("doc", "message"), [
    ("{", "Syntax errors in policy."),
    ("[]", "Syntax errors in policy."),
    ('{"Version": "2012-10-17"}', "Syntax errors in policy."),
    ('{"Version": "2012-10-17", "Statement": []}', "Syntax errors in policy."),
    ('{"Version": "2013-01-01", "Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}',
     "The policy failed legacy parsing"),
    ('{"Statement": {"Action": "*", "Resource": "*"}}', "Missing required field Effect"),
    ('{"Statement": {"Effect": "Maybe", "Action": "*", "Resource": "*"}}', "Invalid effect: Maybe"),
    ('{"Statement": {"Effect": "Allow", "Resource": "*"}}', "Policy statement must contain actions."),
    ('{"Statement": {"Effect": "Allow", "Action": "*"}}', "Policy statement must contain resources."),
    ('{"Statement": {"Effect": "Allow", "Action": "invoke", "Resource": "*"}}',
     "Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc."),
    ('{"Statement": {"Effect": "Allow", "Action": "*", "Resource": "function"}}',
     'Resource function must be in ARN format or "*".'),
    ('{"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*", "Principal": "*"}}',
     "Policy document should not specify a principal."),
    ('{"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"Foo": {"a": "b"}}}}',
     "Invalid Condition type : Foo."),
    ('{"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*", "Surprise": 1}}', "Syntax errors in policy."),
    ('{"Statement": {"Effect": "Allow", "Action": ["*", 1], "Resource": "*"}}', "Syntax errors in policy."),
    ('{"Statement": {"Effect": "Allow", "Action": "*", "NotAction": "*", "Resource": "*"}}',
     "Syntax errors in policy."),
    ('{"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}, "x": NaN}', "Syntax errors in policy."),
])
def test_malformed_documents(doc: str, message: str) -> None:
    with pytest.raises(errors.MalformedPolicyDocument) as exc:
        document.parse(doc)
    assert exc.value.message == message


def test_deeply_nested_and_huge_documents_are_malformed_not_crashes() -> None:
    for doc in ["[" * 100000 + "]" * 100000, '{"Statement": ' + "[" * 5000 + "]" * 5000 + "}",
                json.dumps({"Statement": [allow("lambda:" + "a" * 10, "*")] * 2000}),
                json.dumps({"Statement": allow(["lambda:x"] * 6000)})]:
        with pytest.raises(errors.MalformedPolicyDocument):
            document.parse(doc)


def test_trust_policies_need_a_principal_and_no_resource() -> None:
    with pytest.raises(errors.MalformedPolicyDocument, match="Missing required field Principal"):
        document.parse('{"Statement": {"Effect": "Allow", "Action": "sts:AssumeRole"}}', trust=True)
    with pytest.raises(errors.MalformedPolicyDocument, match="Has prohibited field Resource"):
        document.parse('{"Statement": {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*", '
                       '"Principal": "*"}}', trust=True)
    with pytest.raises(errors.MalformedPolicyDocument, match="Invalid principal in policy"):
        document.parse('{"Statement": {"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": '
                       '{"AWS": "someone"}}}', trust=True)


def test_size_is_counted_without_whitespace() -> None:
    assert document.size('{ "a" :\n\t"b c" }') == 10


# -- trust -----------------------------------------------------------------------------------------------------
def trust(*principals: object, effect: str = "Allow") -> document.Policy:
    return document.parse(json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": effect, "Principal": p, "Action": "sts:AssumeRole"} for p in principals]}), trust=True)


def test_trust_policies() -> None:
    lam = evaluate.Principal(service="lambda.amazonaws.com")
    me = evaluate.Principal(arn="arn:aws:sts::000000000000:assumed-role/app/s", account="000000000000",
                            role_arn="arn:aws:iam::000000000000:role/app")
    assert evaluate.trusts(trust({"Service": "lambda.amazonaws.com"}), lam)
    assert not evaluate.trusts(trust({"Service": "ec2.amazonaws.com"}), lam)
    assert not evaluate.trusts(trust({"Service": "lambda.amazonaws.com"}), me)
    assert evaluate.trusts(trust({"AWS": "arn:aws:iam::000000000000:root"}), me)
    assert evaluate.trusts(trust({"AWS": "000000000000"}), me)
    assert evaluate.trusts(trust({"AWS": "arn:aws:iam::000000000000:role/app"}), me)
    assert not evaluate.trusts(trust({"AWS": "arn:aws:iam::111111111111:root"}), me)
    assert evaluate.trusts(trust("*"), me)
    assert not evaluate.trusts(trust("*", {"AWS": "000000000000"}, effect="Deny"), me)


# -- sessions --------------------------------------------------------------------------------------------------
ROLE = "arn:aws:iam::000000000000:role/app"


def test_sessions_are_checked_without_state_but_owned_ones_end_with_their_owners() -> None:
    s = Sessions(b"k" * 32)
    env = s.issue(ROLE, "fn", owner="env-1")
    assert env.access_key_id.startswith("ASIA") and len(env.access_key_id) == 20
    assert len(env.secret_access_key) == 40 and s.secret(env.access_key_id) == env.secret_access_key
    assert s.check(env.access_key_id, env.token).role_arn == ROLE
    s.share("env-1", "clone-1")
    s.release("env-1")
    assert s.check(env.access_key_id, env.token).session_name == "fn"  # the clone still holds it
    s.release("clone-1")
    with pytest.raises(errors.ExpiredTokenException):
        s.check(env.access_key_id, env.token)
    timed = s.issue(ROLE, "me", ttl=900)
    assert s.check(timed.access_key_id, timed.token).role_arn == ROLE
    with pytest.raises(errors.ExpiredTokenException):
        s.check(timed.access_key_id, timed.token, now=time.time() + 901)
    assert s.live() == 0


def test_forged_swapped_and_foreign_tokens_are_invalid() -> None:
    s, other = Sessions(b"k" * 32), Sessions(b"x" * 32)
    a, b = s.issue(ROLE, "a", owner="1"), s.issue(ROLE, "b", owner="2")
    body, mac = a.token.split(".")
    forged = [None, "", "x", a.token + "x", body + "." + mac[::-1], "." * 5000, b.token,
              other.issue(ROLE, "a", owner="1").token]
    for token in forged:
        with pytest.raises(errors.UnrecognizedClientException):
            s.check(a.access_key_id, token)
    assert s.secret("AKIAKINDLINGTEST0000") is None and s.secret("ASIA") is None
