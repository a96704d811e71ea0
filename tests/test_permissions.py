"""Resource-based policies of functions, end to end: AddPermission, RemovePermission, GetPolicy,
Get/Put/DeleteResourcePolicy with boto3 against the real server, compared with the recorded AWS answers; and their
enforcement for requests signed with role credentials (STS sessions and a function's own environment).
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from kindling.functions import statements
from kindling.iam import document, evaluate
from tests.conftest import HELLO, REGION, ROLE, Server, make_zip, unique
from tests.recorded import assert_like, recorded

ACCOUNT = "000000000000"
S3 = "arn:aws:s3:::test-bucket"
TRUST = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"},
    {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "sts:AssumeRole"}]}


@pytest.fixture(scope="module")
def srv() -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="kindling-permissions-") as tmp:
        s = Server(Path(tmp) / "data").start()
        yield s
        s.stop()


@pytest.fixture
def fn(srv: Server) -> Iterator[str]:
    """A function deleted after the test (with its policies)."""
    lam = srv.client()
    name = unique("perm")
    lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": make_zip({"app.py": HELLO})})
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.1})
    yield name
    try:
        lam.delete_function(FunctionName=name)
    except ClientError:
        pass


def arn(name: str, qualifier: str | None = None) -> str:
    base = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
    return f"{base}:{qualifier}" if qualifier else base


def error(e: pytest.ExceptionInfo[ClientError]) -> tuple[str, str, int]:
    r = e.value.response
    return r["Error"]["Code"], r["Error"]["Message"], r["ResponseMetadata"]["HTTPStatusCode"]


def parsed(response: dict[str, Any]) -> dict[str, Any]:
    """A response as the recordings keep it: Statement / Policy parsed from their JSON strings."""
    out = dict(response)
    for key in ("Statement", "Policy"):
        if key in out:
            out[key] = json.loads(out[key])
    return out


def rec(test: str, key: str) -> Any:
    return recorded("lambda_api", test, key)


# -- AddPermission / GetPolicy / RemovePermission: shapes as recorded ---------------------------------------
def test_add_permission_and_get_policy_match_the_recording(srv: Server, fn: str) -> None:
    lam = srv.client()
    added = lam.add_permission(FunctionName=fn, Action="lambda:InvokeFunction", StatementId="s3",
                               Principal="s3.amazonaws.com", SourceArn=S3)
    assert_like(parsed(added), rec("test_add_lambda_permission_aws", "add_permission"))
    policy = lam.get_policy(FunctionName=fn)
    assert_like(parsed(policy), rec("test_add_lambda_permission_aws", "get_policy"))
    # byte-for-byte AWS's compact JSON, keys in AWS's order
    assert policy["Policy"] == json.dumps(json.loads(policy["Policy"]), separators=(",", ":"))
    assert list(json.loads(policy["Policy"])) == ["Version", "Id", "Statement"]
    assert list(json.loads(added["Statement"])) == ["Sid", "Effect", "Principal", "Action", "Resource", "Condition"]


def test_every_principal_form_and_condition(srv: Server, fn: str) -> None:
    lam = srv.client()
    test = "test_add_lambda_permission_fields"
    cases = [
        ("add_permission_principal_wildcard", {"StatementId": "wilcard", "Principal": "*", "SourceAccount": ACCOUNT}),
        ("add_permission_principal_service", {"StatementId": "lambda", "Principal": "lambda.amazonaws.com",
                                              "SourceAccount": ACCOUNT}),
        ("add_permission_principal_account", {"StatementId": "account-id", "Principal": ACCOUNT}),
        ("add_permission_principal_arn", {"StatementId": "user-arn", "Principal": f"arn:aws:iam::{ACCOUNT}:user/u",
                                          "SourceAccount": ACCOUNT}),
        ("add_permission_optional_fields", {
            "StatementId": "urlPermission", "Action": "lambda:InvokeFunctionUrl", "Principal": "*", "SourceArn": S3,
            "SourceAccount": ACCOUNT, "PrincipalOrgID": "o-1234567890", "FunctionUrlAuthType": "NONE"}),
        ("add_permission_alexa_skill", {"StatementId": "alexaSkill", "Principal": "*",
                                        "EventSourceToken": "amzn1.ask.skill.xxxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"}),
    ]
    for key, args in cases:
        out = lam.add_permission(FunctionName=fn, **{"Action": "lambda:InvokeFunction", **args})
        assert_like(parsed(out), rec(test, key))
    st = json.loads(lam.add_permission(FunctionName=fn, StatementId="account-arn", Action="lambda:InvokeFunction",
                                       Principal=f"arn:aws:iam::{ACCOUNT}:root")["Statement"])
    assert st["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}
    # Since October 2025: InvokeFunction only through a function URL
    st = json.loads(lam.add_permission(FunctionName=fn, StatementId="url-invoke", Action="lambda:InvokeFunction",
                                       Principal="*", InvokedViaFunctionUrl=True)["Statement"])
    assert st["Condition"] == {"Bool": {"lambda:InvokedViaFunctionUrl": "true"}}
    st = json.loads(lam.add_permission(FunctionName=fn, StatementId="all", Action="lambda:*",
                                       Principal="events.amazonaws.com")["Statement"])
    assert st["Action"] == "lambda:*" and st["Principal"] == {"Service": "events.amazonaws.com"}
    sids = [s["Sid"] for s in json.loads(lam.get_policy(FunctionName=fn)["Policy"])["Statement"]]
    assert sids == ["wilcard", "lambda", "account-id", "user-arn", "urlPermission", "alexaSkill", "account-arn",
                    "url-invoke", "all"]


def test_remove_permissions_as_recorded(srv: Server, fn: str) -> None:
    lam = srv.client()
    test = "test_remove_multi_permissions"
    assert_like(parsed(lam.add_permission(FunctionName=fn, Action="lambda:InvokeFunction", StatementId="s3",
                                          Principal="s3.amazonaws.com")), rec(test, "add_permission_1"))
    assert_like(parsed(lam.add_permission(FunctionName=fn, Action="lambda:InvokeFunction", StatementId="sqs",
                                          Principal="sqs.amazonaws.com", SourceArn=S3)), rec(test, "add_permission_2"))
    assert_like(parsed(lam.get_policy(FunctionName=fn)), rec(test, "policy_after_2_add"))
    with pytest.raises(ClientError) as e:
        lam.remove_permission(FunctionName=fn, StatementId="non-existent")
    assert_like(e.value.response, rec(test, "remove_permission_exception_nonexisting_sid"))
    assert lam.remove_permission(FunctionName=fn, StatementId="sqs")["ResponseMetadata"]["HTTPStatusCode"] == 204
    after = lam.get_policy(FunctionName=fn)
    assert_like(parsed(after), rec(test, "policy_after_removal"))
    lam.remove_permission(FunctionName=fn, StatementId="s3", RevisionId=after["RevisionId"])
    with pytest.raises(ClientError) as e:
        lam.get_policy(FunctionName=fn)
    assert_like(e.value.response, rec(test, "get_policy_exception_removed_all"))


def test_errors_match_the_recording(srv: Server, fn: str) -> None:
    lam = srv.client()
    test = "test_permission_exceptions"
    base = {"Action": "lambda:InvokeFunction", "StatementId": "s3", "Principal": "s3.amazonaws.com", "SourceArn": S3}

    def expect(key: str, call: Any, **args: Any) -> None:
        with pytest.raises(ClientError) as e:
            call(**args)
        assert_like(e.value.response, rec(test, key))

    expect("add_permission_invalid_statement_id", lam.add_permission,
           **{**base, "FunctionName": fn, "StatementId": "example.com"})
    expect("add_permission_fn_qualifier_mismatch", lam.add_permission,
           **{**base, "FunctionName": f"{fn}:alias-not-42", "Qualifier": "42"})
    expect("add_permission_fn_qualifier_latest", lam.add_permission,
           **{**base, "FunctionName": f"{fn}:$LATEST", "Qualifier": "$LATEST"})
    expect("add_permission_principal_invalid", lam.add_permission, FunctionName=fn, Action="lambda:InvokeFunction",
           StatementId="lambda", Principal="invalid.nonaws.com", SourceAccount=ACCOUNT)
    expect("get_policy_fn_doesnotexist", lam.get_policy, FunctionName="doesnotexist")
    expect("get_policy_fn_version_doesnotexist", lam.get_policy, FunctionName=fn, Qualifier="77")
    expect("add_permission_fn_doesnotexist", lam.add_permission, **{**base, "FunctionName": "doesnotexist"})
    expect("remove_permission_policy_doesnotexist", lam.remove_permission, FunctionName=fn, StatementId="s3")
    expect("add_permission_fn_alias_doesnotexist", lam.add_permission,
           **{**base, "FunctionName": f"{fn}:alias-doesnotexist"})
    expect("add_permission_fn_version_doesnotexist", lam.add_permission, **{**base, "FunctionName": fn,
                                                                            "Qualifier": "42"})
    expect("add_permission_fn_qualifier_invalid", lam.add_permission,
           **{**base, "FunctionName": fn, "Qualifier": "invalid-qualifier-with-?-char"})
    expect("add_permission_fn_qualifier_valid_doesnotexist", lam.add_permission,
           **{**base, "FunctionName": fn, "Qualifier": "valid-with-$-but-doesnotexist"})
    lam.add_permission(**{**base, "FunctionName": fn})
    expect("add_permission_conflicting_statement_id", lam.add_permission, **{**base, "FunctionName": fn})
    expect("remove_permission_fn_doesnotexist", lam.remove_permission, FunctionName="doesnotexist", StatementId="s3")
    expect("remove_permission_fn_alias_doesnotexist", lam.remove_permission, FunctionName=fn, StatementId="s3",
           Qualifier="alias-doesnotexist")


def test_url_conditions_belong_to_their_actions(srv: Server, fn: str) -> None:
    lam = srv.client()
    with pytest.raises(ClientError) as e:
        lam.add_permission(FunctionName=fn, StatementId="a", Action="lambda:InvokeFunction", Principal="*",
                           FunctionUrlAuthType="NONE")
    assert error(e) == ("InvalidParameterValueException",
                        "FunctionUrlAuthType is only supported for lambda:InvokeFunctionUrl action", 400)
    with pytest.raises(ClientError) as e:
        lam.add_permission(FunctionName=fn, StatementId="a", Action="lambda:InvokeFunctionUrl", Principal="*",
                           InvokedViaFunctionUrl=True)
    assert error(e)[0] == "InvalidParameterValueException"
    with pytest.raises(ClientError) as e:
        lam.get_policy(FunctionName=fn)
    assert error(e)[0] == "ResourceNotFoundException"  # nothing was written


# -- qualifiers and revisions ---------------------------------------------------------------------------------
def test_versions_and_aliases_have_their_own_policies(srv: Server, fn: str) -> None:
    lam = srv.client()
    test = "test_lambda_permission_fn_versioning"
    args = {"Action": "lambda:InvokeFunction", "StatementId": "s3", "Principal": "s3.amazonaws.com",
            "SourceArn": S3}
    lam.add_permission(FunctionName=fn, **args)
    base = lam.get_policy(FunctionName=fn)
    assert_like(parsed(base), rec(test, "get_policy"))
    version = lam.publish_version(FunctionName=fn)["Version"]
    # publishing copies no policy, and does not change the function's
    after = lam.get_policy(FunctionName=fn)
    assert after == {**base, "ResponseMetadata": after["ResponseMetadata"]}
    with pytest.raises(ClientError) as e:
        lam.get_policy(FunctionName=fn, Qualifier=version)
    assert_like(e.value.response, rec(test, "get_policy_after_publishing_new_version"))
    # the same Sid may be used again on a version: its Resource is the version's ARN
    lam.add_permission(FunctionName=f"{fn}:{version}", Qualifier=version, **args)
    assert_like(parsed(lam.get_policy(FunctionName=fn, Qualifier=version)), rec(test, "get_policy_version"))
    alias = lam.create_alias(FunctionName=fn, Name="permission-alias", FunctionVersion=version)
    with pytest.raises(ClientError) as e:
        lam.add_permission(FunctionName=fn, Qualifier="permission-alias", RevisionId="wrong", **args)
    assert_like(e.value.response, rec(test, "add_permission_alias_revision_exception"))
    # an alias without a policy: the alias's RevisionId is the one to give
    lam.add_permission(FunctionName=f"{fn}:permission-alias", Qualifier="permission-alias",
                       RevisionId=alias["RevisionId"], **args)
    got = lam.get_policy(FunctionName=fn, Qualifier="permission-alias")
    assert_like(parsed(got), rec(test, "get_policy_alias"))
    assert lam.get_alias(FunctionName=fn, Name="permission-alias")["RevisionId"] == got["RevisionId"]
    # the function's own policy is untouched; its RevisionId is the precondition for the next change
    lam.add_permission(FunctionName=fn, RevisionId=base["RevisionId"], **{**args, "StatementId": "s3_2"})
    assert_like(parsed(lam.get_policy(FunctionName=fn)), rec(test, "get_policy_after_adding_2"))
    # $LATEST names the function's own policy when reading it
    assert lam.get_policy(FunctionName=fn, Qualifier="$LATEST")["Policy"] == lam.get_policy(FunctionName=fn)["Policy"]
    # a deleted alias or version takes its policy with it; a new one of the same name starts without
    lam.delete_alias(FunctionName=fn, Name="permission-alias")
    lam.create_alias(FunctionName=fn, Name="permission-alias", FunctionVersion=version)
    with pytest.raises(ClientError) as e:
        lam.get_policy(FunctionName=fn, Qualifier="permission-alias")
    assert error(e)[0] == "ResourceNotFoundException"
    lam.delete_alias(FunctionName=fn, Name="permission-alias")
    lam.delete_function(FunctionName=fn, Qualifier=version)
    with pytest.raises(ClientError) as e:
        lam.get_policy(FunctionName=fn, Qualifier=version)
    assert error(e)[0] == "ResourceNotFoundException"


def test_revision_ids_as_on_aws(srv: Server, fn: str) -> None:
    """AWS: AddPermission gives the policy a new RevisionId, and $LATEST the same one (recorded lifecycle)."""
    lam = srv.client()
    rev2 = lam.get_function(FunctionName=fn)["Configuration"]["RevisionId"]
    args = {"FunctionName": fn, "StatementId": "s3", "Action": "lambda:InvokeFunction", "Principal": "s3.amazonaws.com"}
    with pytest.raises(ClientError) as e:
        lam.add_permission(RevisionId="wrong", **args)
    assert_like(e.value.response, recorded("lambda_api", "test_function_revisions_permissions",
                                           "add_permission_revision_exception"))
    lam.add_permission(RevisionId=rev2, **args)
    rev3 = lam.get_policy(FunctionName=fn)["RevisionId"]
    assert rev3 != rev2 and lam.get_function(FunctionName=fn)["Configuration"]["RevisionId"] == rev3
    # not a change a new version is published for: the next PublishVersion after a publish answers the same one
    v1 = lam.publish_version(FunctionName=fn)["Version"]
    lam.add_permission(**{**args, "StatementId": "s4"})
    assert lam.publish_version(FunctionName=fn)["Version"] == v1
    rev = lam.get_policy(FunctionName=fn)["RevisionId"]
    with pytest.raises(ClientError) as e:
        lam.remove_permission(FunctionName=fn, StatementId="s3", RevisionId="wrong")
    assert error(e)[0] == "PreconditionFailedException" and error(e)[2] == 412
    lam.remove_permission(FunctionName=fn, StatementId="s3", RevisionId=rev)
    rev4 = lam.get_function(FunctionName=fn)["Configuration"]["RevisionId"]
    assert rev4 != rev and lam.get_policy(FunctionName=fn)["RevisionId"] == rev4


def test_a_deleted_function_takes_its_policies_with_it(srv: Server) -> None:
    lam = srv.client()
    name = unique("gone")
    for _ in range(2):
        lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                            Code={"ZipFile": make_zip({"app.py": HELLO})})
        with pytest.raises(ClientError) as e:
            lam.get_policy(FunctionName=name)
        assert error(e)[0] == "ResourceNotFoundException"  # the second time round too: nothing left over
        version = lam.publish_version(FunctionName=name)["Version"]
        lam.add_permission(FunctionName=name, StatementId="s", Action="lambda:InvokeFunction", Principal="*")
        lam.add_permission(FunctionName=name, Qualifier=version, StatementId="s", Action="lambda:InvokeFunction",
                           Principal="*")
        lam.delete_function(FunctionName=name)
        with pytest.raises(ClientError) as e:
            lam.get_policy(FunctionName=name)
        assert error(e)[:2] == ("ResourceNotFoundException", "The resource you requested does not exist.")


def test_a_policy_change_keeps_warm_environments_warm(srv: Server, fn: str) -> None:
    """The new RevisionId is no change to the function's code or configuration: no cold start follows."""
    import base64

    lam = srv.client()

    def tail() -> str:
        return base64.b64decode(lam.invoke(FunctionName=fn, LogType="Tail")["LogResult"]).decode()

    assert "Init Duration" in tail()
    lam.add_permission(FunctionName=fn, StatementId="s", Action="lambda:InvokeFunction", Principal="*")
    assert "Init Duration" not in tail()
    lam.remove_permission(FunctionName=fn, StatementId="s")
    assert "Init Duration" not in tail()


# -- Get/Put/DeleteResourcePolicy -----------------------------------------------------------------------------
def test_resource_policy_operations_share_the_store(srv: Server, fn: str) -> None:
    lam = srv.client()
    with pytest.raises(ClientError) as e:
        lam.get_resource_policy(ResourceArn=arn(fn))
    assert error(e)[:2] == ("ResourceNotFoundException", "The resource you requested does not exist.")
    doc = {"Version": "2012-10-17", "Statement": [
        {"Sid": "allow-account-invoke", "Effect": "Allow", "Principal": {"AWS": [f"arn:aws:iam::{ACCOUNT}:root"]},
         "Action": "lambda:InvokeFunction", "Resource": arn(fn)}]}
    put = lam.put_resource_policy(ResourceArn=arn(fn), Policy=json.dumps(doc))
    assert json.loads(put["Policy"]) == doc
    got = lam.get_resource_policy(ResourceArn=arn(fn))
    assert got["RevisionId"] == put["RevisionId"] and json.loads(got["Policy"]) == doc
    assert lam.get_policy(FunctionName=fn)["RevisionId"] == put["RevisionId"]
    # AddPermission adds to it; PutResourcePolicy replaces it all
    lam.add_permission(FunctionName=fn, StatementId="s3", Action="lambda:InvokeFunction", Principal="s3.amazonaws.com")
    assert [s["Sid"] for s in json.loads(lam.get_resource_policy(ResourceArn=arn(fn))["Policy"])["Statement"]] == \
        ["allow-account-invoke", "s3"]
    with pytest.raises(ClientError) as e:
        lam.put_resource_policy(ResourceArn=arn(fn), Policy=json.dumps(doc), RevisionId=put["RevisionId"])
    assert error(e)[0] == "PreconditionFailedException"
    no_principal = {"Statement": [{"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": "*"}]}
    for bad in ("{", json.dumps(no_principal),
                json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                                           "Resource": "*"}]})):
        with pytest.raises(ClientError) as e:
            lam.put_resource_policy(ResourceArn=arn(fn), Policy=bad)
        assert error(e)[0] == "InvalidParameterValueException", bad
    with pytest.raises(ClientError) as e:
        lam.put_resource_policy(ResourceArn=arn(fn, "$LATEST"), Policy=json.dumps(doc))
    assert error(e)[:2] == ("InvalidParameterValueException",
                            "We currently do not support adding policies for $LATEST.")
    rev = lam.get_resource_policy(ResourceArn=arn(fn))["RevisionId"]
    with pytest.raises(ClientError) as e:
        lam.delete_resource_policy(ResourceArn=arn(fn), RevisionId="00000000-0000-0000-0000-000000000000")
    assert error(e)[0] == "PreconditionFailedException"
    lam.delete_resource_policy(ResourceArn=arn(fn), RevisionId=rev)
    with pytest.raises(ClientError) as e:
        lam.get_policy(FunctionName=fn)
    assert error(e)[0] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        lam.delete_resource_policy(ResourceArn=arn(fn))
    assert error(e)[:2] == ("ResourceNotFoundException", "No policy is associated with the given resource.")
    with pytest.raises(ClientError) as e:
        lam.get_resource_policy(ResourceArn=arn("doesnotexist"))
    assert error(e)[0] == "ResourceNotFoundException"


# -- evaluation (the same statements decide() reads) ------------------------------------------------------------
def _policy(*sts: dict[str, Any]) -> document.Policy:
    return document.parse(json.dumps({"Version": "2012-10-17", "Id": "default", "Statement": list(sts)}),
                          resource_based=True)


def test_statements_decide_for_principals_and_conditions() -> None:
    fn_arn = arn("f")
    anon = evaluate.Principal()
    role = evaluate.Principal(arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/r/s", account=ACCOUNT,
                              role_arn=f"arn:aws:iam::{ACCOUNT}:role/r")
    s3 = evaluate.Principal(service="s3.amazonaws.com")

    def st(**p: Any) -> dict[str, Any]:
        return statements.statement({"StatementId": "x", "Action": "lambda:InvokeFunction", **p}, fn_arn)

    def decide(policy: document.Policy, who: evaluate.Principal, action: str = "lambda:InvokeFunction",
               **context: str) -> str:
        ctx = {k.replace("__", ":").lower(): [v] for k, v in context.items()}
        return evaluate.decide_for(policy, who, evaluate.Request(action, fn_arn, ctx))

    public_url = _policy(st(Principal="*", Action="lambda:InvokeFunctionUrl", FunctionUrlAuthType="NONE"),
                         {**st(Principal="*", InvokedViaFunctionUrl=True), "Sid": "y"})
    assert decide(public_url, anon, "lambda:InvokeFunctionUrl", lambda__FunctionUrlAuthType="NONE") == evaluate.ALLOW
    assert decide(public_url, anon, "lambda:InvokeFunctionUrl",
                  lambda__FunctionUrlAuthType="AWS_IAM") == evaluate.IMPLICIT_DENY
    assert decide(public_url, anon, lambda__InvokedViaFunctionUrl="true") == evaluate.ALLOW
    assert decide(public_url, anon) == evaluate.IMPLICIT_DENY  # not through a URL
    # an anonymous caller matches only "*"
    for p in (ACCOUNT, f"arn:aws:iam::{ACCOUNT}:role/r", "s3.amazonaws.com"):
        assert decide(_policy(st(Principal=p)), anon) == evaluate.IMPLICIT_DENY
    assert decide(_policy(st(Principal=ACCOUNT)), role) == evaluate.ALLOW
    assert decide(_policy(st(Principal=f"arn:aws:iam::{ACCOUNT}:role/r")), role) == evaluate.ALLOW
    assert decide(_policy(st(Principal=role.arn)), role) == evaluate.ALLOW
    assert decide(_policy(st(Principal="111122223333")), role) == evaluate.IMPLICIT_DENY
    assert decide(_policy(st(Principal="s3.amazonaws.com")), role) == evaluate.IMPLICIT_DENY
    with_source = _policy(st(Principal="s3.amazonaws.com", SourceArn="arn:aws:s3:::b*", SourceAccount=ACCOUNT))
    assert decide(with_source, s3, aws__SourceArn="arn:aws:s3:::bucket", aws__SourceAccount=ACCOUNT) == evaluate.ALLOW
    assert decide(with_source, s3, aws__SourceArn="arn:aws:s3:::other", aws__SourceAccount=ACCOUNT) == \
        evaluate.IMPLICIT_DENY
    assert decide(with_source, s3) == evaluate.IMPLICIT_DENY
    assert decide(_policy(st(Principal="*", PrincipalOrgID="o-1234567890")), role) == evaluate.IMPLICIT_DENY
    assert decide(_policy(st(Principal="*", PrincipalOrgID="o-1234567890")), role,
                  aws__PrincipalOrgID="o-1234567890") == evaluate.ALLOW
    token = _policy(st(Principal="*", EventSourceToken="amzn1.ask.skill.1"))
    assert decide(token, anon, lambda__EventSourceToken="amzn1.ask.skill.1") == evaluate.ALLOW
    assert decide(token, anon) == evaluate.IMPLICIT_DENY
    deny = _policy(st(Principal="*"), {"Sid": "d", "Effect": "Deny", "Principal": {"AWS": role.role_arn},
                                       "Action": "lambda:*", "Resource": fn_arn})
    assert decide(deny, role) == evaluate.EXPLICIT_DENY and decide(deny, anon) == evaluate.ALLOW
    assert decide(_policy(st(Principal="*")), anon, "lambda:GetFunction") == evaluate.IMPLICIT_DENY


# -- enforcement for role credentials ---------------------------------------------------------------------------
def session_client(s: Server, creds: dict[str, str]) -> Any:
    return boto3.client("lambda", endpoint_url=s.endpoint, region_name=REGION,
                        aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                        aws_session_token=creds["SessionToken"], config=Config(retries={"max_attempts": 1}))


def make_role(s: Server, *statements_: dict[str, Any]) -> str:
    iam = s.client("iam")
    name = unique("role")
    role_arn = str(iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST))["Role"]["Arn"])
    if statements_:
        iam.put_role_policy(RoleName=name, PolicyName="inline", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": list(statements_)}))
    return role_arn


def test_a_resource_policy_alone_lets_a_role_session_invoke(srv: Server, fn: str) -> None:
    lam = srv.client()
    role = make_role(srv)  # a role with no identity policy at all
    creds = srv.client("sts").assume_role(RoleArn=role, RoleSessionName="caller")["Credentials"]
    me = f"arn:aws:sts::{ACCOUNT}:assumed-role/{role.rsplit('/', 1)[1]}/caller"
    slam = session_client(srv, creds)

    def invoke(**kw: str) -> str:
        try:
            out = slam.invoke(FunctionName=fn, Payload=b"{}", **kw)
            assert json.loads(out["Payload"].read()) == {"hello": "world"}
            return "allowed"
        except ClientError as e:
            assert e.response["Error"]["Code"] == "AccessDeniedException"
            return e.response["Error"]["Message"]

    assert invoke() == (f"User: {me} is not authorized to perform: lambda:InvokeFunction on resource: {arn(fn)} "
                        "because no identity-based policy allows the lambda:InvokeFunction action")
    # a service principal or another account grants a role session nothing
    lam.add_permission(FunctionName=fn, StatementId="svc", Action="lambda:InvokeFunction", Principal="s3.amazonaws.com")
    lam.add_permission(FunctionName=fn, StatementId="other", Action="lambda:InvokeFunction", Principal="111122223333")
    assert invoke() != "allowed"
    for sid, principal in (("role", role), ("account", ACCOUNT), ("session", me)):
        lam.add_permission(FunctionName=fn, StatementId=sid, Action="lambda:InvokeFunction", Principal=principal)
        assert invoke() == "allowed", principal
        assert invoke(Qualifier="$LATEST") == "allowed"  # the function's policy covers $LATEST
        lam.remove_permission(FunctionName=fn, StatementId=sid)
    assert invoke() != "allowed"
    # a permission granted on an alias applies only to invokes of the alias's ARN
    version = lam.publish_version(FunctionName=fn)["Version"]
    lam.create_alias(FunctionName=fn, Name="live", FunctionVersion=version)
    lam.add_permission(FunctionName=fn, Qualifier="live", StatementId="live", Action="lambda:InvokeFunction",
                       Principal=role)
    assert invoke(Qualifier="live") == "allowed"
    assert invoke() != "allowed" and invoke(Qualifier=version) != "allowed"
    # the granted action only
    with pytest.raises(ClientError) as e:
        slam.get_function(FunctionName=f"{fn}:live")
    assert e.value.response["Error"]["Code"] == "AccessDeniedException"
    # the operator's key pair is never evaluated
    lam.invoke(FunctionName=fn, Qualifier=version)


def test_an_explicit_deny_in_either_policy_wins(srv: Server, fn: str) -> None:
    lam = srv.client()
    allowing = make_role(srv, {"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": "*"})
    denying = make_role(srv, {"Effect": "Deny", "Action": "lambda:InvokeFunction", "Resource": arn(fn)})
    sts = srv.client("sts")
    a = session_client(srv, sts.assume_role(RoleArn=allowing, RoleSessionName="aa")["Credentials"])
    d = session_client(srv, sts.assume_role(RoleArn=denying, RoleSessionName="dd")["Credentials"])
    assert a.invoke(FunctionName=fn)["StatusCode"] == 200
    lam.put_resource_policy(ResourceArn=arn(fn), Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "everyone", "Effect": "Allow", "Principal": {"AWS": ACCOUNT}, "Action": "lambda:InvokeFunction",
         "Resource": arn(fn)},
        {"Sid": "not-a", "Effect": "Deny", "Principal": {"AWS": allowing}, "Action": "lambda:*",
         "Resource": arn(fn)}]}))
    with pytest.raises(ClientError) as e:
        a.invoke(FunctionName=fn)
    assert e.value.response["Error"]["Message"].endswith(
        f"lambda:InvokeFunction on resource: {arn(fn)} with an explicit deny in a resource-based policy")
    with pytest.raises(ClientError) as e:
        d.invoke(FunctionName=fn)  # the resource policy allows the account, the identity policy denies
    assert e.value.response["Error"]["Message"].endswith("with an explicit deny in an identity-based policy")
    lam.delete_resource_policy(ResourceArn=arn(fn))
    assert a.invoke(FunctionName=fn)["StatusCode"] == 200


CALLER = '''
import json

def handler(event, context):
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError
    try:
        r = boto3.client("lambda", config=Config(retries={"max_attempts": 1})).invoke(FunctionName=event["target"])
        return {"invoke": json.loads(r["Payload"].read())}
    except ClientError as e:
        return {"error": e.response["Error"]["Code"]}
'''


def test_another_functions_role_credentials_are_allowed_by_the_resource_policy(srv: Server, fn: str) -> None:
    lam = srv.client()
    role = make_role(srv)  # its execution role has no identity policy
    caller = unique("caller")
    lam.create_function(FunctionName=caller, Runtime="python3.12", Role=role, Handler="app.handler", Timeout=30,
                        Code={"ZipFile": make_zip({"app.py": CALLER})})
    try:
        event = json.dumps({"target": fn}).encode()
        assert json.loads(lam.invoke(FunctionName=caller, Payload=event)["Payload"].read()) == \
            {"error": "AccessDeniedException"}
        lam.add_permission(FunctionName=fn, StatementId="caller", Action="lambda:InvokeFunction", Principal=role)
        assert json.loads(lam.invoke(FunctionName=caller, Payload=event)["Payload"].read()) == \
            {"invoke": {"hello": "world"}}
        # a role Kindling does not know may do anything in --iam local mode, unless the function's policy denies it
        unknown = f"arn:aws:iam::{ACCOUNT}:role/{unique('unknown')}"
        lam.update_function_configuration(FunctionName=caller, Role=unknown)
        lam.get_waiter("function_updated_v2").wait(FunctionName=caller, WaiterConfig={"Delay": 0.1})
        assert json.loads(lam.invoke(FunctionName=caller, Payload=event)["Payload"].read()) == \
            {"invoke": {"hello": "world"}}
        lam.add_permission(FunctionName=fn, StatementId="everyone", Action="lambda:InvokeFunction", Principal="*")
        policy = json.loads(lam.get_policy(FunctionName=fn)["Policy"])
        policy["Statement"].append({"Sid": "not-unknown", "Effect": "Deny", "Principal": {"AWS": unknown},
                                    "Action": "lambda:InvokeFunction", "Resource": arn(fn)})
        lam.put_resource_policy(ResourceArn=arn(fn), Policy=json.dumps(policy))
        assert json.loads(lam.invoke(FunctionName=caller, Payload=event)["Payload"].read()) == \
            {"error": "AccessDeniedException"}
    finally:
        lam.delete_function(FunctionName=caller)


# -- hostile ----------------------------------------------------------------------------------------------------
def test_an_oversized_policy_is_refused_and_nothing_changes(hostile_server: Server, bystander: Any) -> None:
    lam = hostile_server.client()
    name = unique("big")
    lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": make_zip({"app.py": HELLO})})
    try:
        long_arn = "arn:aws:s3:::" + "b" * 2000
        refused = None
        for i in range(40):  # each statement ~2.2 KB: the 20 KB quota is reached within ten
            try:
                lam.add_permission(FunctionName=name, StatementId=f"s{i}", Action="lambda:InvokeFunction",
                                   Principal="s3.amazonaws.com", SourceArn=long_arn)
            except ClientError as e:
                refused = e
                break
        assert refused is not None
        code, message, status = refused.response["Error"]["Code"], refused.response["Error"]["Message"], \
            refused.response["ResponseMetadata"]["HTTPStatusCode"]
        assert (code, status) == ("PolicyLengthExceededException", 400)
        assert message.startswith("The final policy size (") and message.endswith(") is bigger than the limit (20480).")
        before = lam.get_policy(FunctionName=name)
        assert len(before["Policy"]) <= 20480 and len(json.loads(before["Policy"])["Statement"]) == i
        with pytest.raises(ClientError) as e:
            lam.put_resource_policy(ResourceArn=arn(name), Policy=" " * 20481)
        assert e.value.response["Error"]["Code"] in ("PolicyLengthExceededException", "ValidationException")
        after = lam.get_policy(FunctionName=name)
        assert (after["Policy"], after["RevisionId"]) == (before["Policy"], before["RevisionId"])
        assert lam.get_function(FunctionName=name)["Configuration"]["RevisionId"] == before["RevisionId"]
        bystander.check()
    finally:
        lam.delete_function(FunctionName=name)


def test_malformed_principals_and_policies_are_refused(hostile_server: Server, bystander: Any) -> None:
    lam = hostile_server.client()
    name = unique("bad")
    lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": make_zip({"app.py": HELLO})})
    try:
        for principal in ("arn:aws:iam:000000000000:role/x", "1234567890123", "s3.amazonaws.com.evil.example",
                          "*.amazonaws.com", "arn:aws:iam::000000000000:role/", "arn:aws:s3:::bucket", "root",
                          "p" * 2048, "ünïcode.amazonaws.com", "arn:aws:iam::000000000000:group/g"):
            with pytest.raises(ClientError) as e:
                lam.add_permission(FunctionName=name, StatementId="p", Action="lambda:InvokeFunction",
                                   Principal=principal)
            assert error(e) == ("InvalidParameterValueException", statements.INVALID_PRINCIPAL, 400), principal
        for principal, action in (("", "lambda:InvokeFunction"), ("a b", "lambda:InvokeFunction"),
                                  ("*", "s3:GetObject"), ("*", "lambda:Invoke Function"), ("*", "")):
            with pytest.raises(ClientError) as e:
                lam.add_permission(FunctionName=name, StatementId="p", Action=action, Principal=principal)
            assert error(e)[0] == "ValidationException", (principal, action)
        for policy in ("[" * 100000 + "]" * 100000, '{"Statement": ' + "[" * 5000 + "]" * 5000 + "}",
                       json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "lambda:x",
                                                  "Resource": "*"}] * 1001})[:20480], "\x00" * 100):
            with pytest.raises(ClientError) as e:
                lam.put_resource_policy(ResourceArn=arn(name), Policy=policy)
            assert error(e)[0] in ("InvalidParameterValueException", "ValidationException",
                                   "PolicyLengthExceededException")
        with pytest.raises(ClientError) as e:
            lam.get_policy(FunctionName=name)
        assert error(e)[0] == "ResourceNotFoundException"  # nothing was stored
        bystander.check()
    finally:
        lam.delete_function(FunctionName=name)


def test_concurrent_add_permission_with_one_sid_has_one_winner(hostile_server: Server, bystander: Any) -> None:
    name = unique("race")
    lam = hostile_server.client()
    lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": make_zip({"app.py": HELLO})})
    clients = [hostile_server.client(max_pool_connections=2) for _ in range(16)]
    results: list[str] = []
    lock = threading.Lock()

    def add(c: Any, sid: str) -> None:
        try:
            c.add_permission(FunctionName=name, StatementId=sid, Action="lambda:InvokeFunction", Principal="*")
            out = "ok"
        except ClientError as e:
            out = e.response["Error"]["Code"]
        with lock:
            results.append(out)

    try:
        start = time.monotonic()
        threads = [threading.Thread(target=add, args=(c, "same")) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(results) == sorted(["ok"] + ["ResourceConflictException"] * 15)
        assert [s["Sid"] for s in json.loads(lam.get_policy(FunctionName=name)["Policy"])["Statement"]] == ["same"]
        # distinct Sids at once: every one lands, none is lost
        results.clear()
        threads = [threading.Thread(target=add, args=(c, f"sid{i}")) for i, c in enumerate(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert results == ["ok"] * 16
        doc = json.loads(lam.get_policy(FunctionName=name)["Policy"])
        assert sorted(s["Sid"] for s in doc["Statement"]) == sorted(["same"] + [f"sid{i}" for i in range(16)])
        assert time.monotonic() - start < 30
        bystander.check()
    finally:
        for c in clients:
            c.close()
        lam.delete_function(FunctionName=name)
