"""IAM and STS on Kindling's endpoint, role credentials in environments, and authorization, end to end.

Servers are real `kindling serve` processes; clients are boto3 and the AWS CLI. Functions that call Kindling
run in isolated environments with the boto3 their runtime carries and nothing in their code: no endpoint (the
environment's AWS_ENDPOINT_URL_<SERVICE> point at Kindling, 169.254.100.2) and no keys (their execution role's).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.conftest import REGION, Server, make_zip, unique

ACCOUNT = "000000000000"
LAMBDA_TRUST = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"},
    {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "sts:AssumeRole"}]}

CALLER = '''
import json, os, sys

def handler(event, context):
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError
    kw = {"config": Config(retries={"max_attempts": 1})}
    out = {"arn": boto3.client("sts", **kw).get_caller_identity()["Arn"]}
    if "target" in event:
        try:
            r = boto3.client("lambda", **kw).invoke(FunctionName=event["target"], Payload=b"{}")
            out["invoke"] = json.loads(r["Payload"].read())
        except ClientError as e:
            out["error"] = [e.response["Error"]["Code"], e.response["Error"]["Message"]]
    if event.get("logs"):
        try:
            group = "/aws/lambda/" + os.environ["AWS_LAMBDA_FUNCTION_NAME"]
            out["logs"] = len(boto3.client("logs", **kw).filter_log_events(logGroupName=group)["events"])
        except ClientError as e:
            out["logs_error"] = e.response["Error"]["Code"]
    if event.get("leak"):  # only tests ask: to show the credentials die with the environment
        out["creds"] = [os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")]
    return out
'''
HELLO = 'def handler(event, context):\n    return {"hello": "world"}\n'


def policy(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def code(e: pytest.ExceptionInfo[ClientError]) -> str:
    return str(e.value.response["Error"]["Code"])


@pytest.fixture(scope="module")
def srv() -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="kindling-iam-") as tmp:
        s = Server(Path(tmp) / "data").start()
        yield s
        s.stop()


def session_client(s: Server, service: str, creds: list[str] | dict[str, str]) -> object:
    if isinstance(creds, dict):
        creds = [creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]]
    return boto3.client(service, endpoint_url=s.endpoint, region_name=REGION, aws_access_key_id=creds[0],
                        aws_secret_access_key=creds[1], aws_session_token=creds[2],
                        config=Config(retries={"max_attempts": 1}))


def make_role(iam: object, name: str, *statements: dict, managed: tuple[str, ...] = ()) -> str:
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(LAMBDA_TRUST))["Role"]["Arn"]
    if statements:
        iam.put_role_policy(RoleName=name, PolicyName="inline", PolicyDocument=policy(*statements))
    for m in managed:
        iam.attach_role_policy(RoleName=name, PolicyArn=m)
    return str(arn)


# -- the IAM API ---------------------------------------------------------------------------------------------
def test_roles_and_policies_round_trip_with_boto3(srv: Server) -> None:
    iam = srv.client("iam")
    name = unique("role")
    # Given a role with a trust policy, an inline policy, a customer managed and an AWS managed policy
    role = iam.create_role(RoleName=name, Path="/app/", AssumeRolePolicyDocument=json.dumps(LAMBDA_TRUST),
                           Description="d", Tags=[{"Key": "team", "Value": "a"}])["Role"]
    assert role["Arn"] == f"arn:aws:iam::{ACCOUNT}:role/app/{name}" and role["RoleId"].startswith("AROA")
    assert role["AssumeRolePolicyDocument"] == LAMBDA_TRUST  # sent URL-encoded, as IAM does; boto3 decodes it
    doc = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "lambda:Get*", "Resource": "*"}]}
    iam.put_role_policy(RoleName=name, PolicyName="get", PolicyDocument=json.dumps(doc))
    custom = iam.create_policy(PolicyName=unique("pol"), PolicyDocument=json.dumps(doc))["Policy"]
    assert custom["Arn"].startswith(f"arn:aws:iam::{ACCOUNT}:policy/") and custom["DefaultVersionId"] == "v1"
    basic = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
    for arn in (custom["Arn"], basic):
        iam.attach_role_policy(RoleName=name, PolicyArn=arn)
    # Then each reads back as IAM answers it
    got = iam.get_role(RoleName=name.upper())["Role"]  # names are case-insensitive
    assert got["RoleName"] == name and got["Description"] == "d" and got["Tags"] == [{"Key": "team", "Value": "a"}]
    assert iam.get_role_policy(RoleName=name, PolicyName="get")["PolicyDocument"] == doc
    assert iam.list_role_policies(RoleName=name)["PolicyNames"] == ["get"]
    attached = iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]
    assert {a["PolicyArn"] for a in attached} == {custom["Arn"], basic}
    assert name in [r["RoleName"] for r in iam.list_roles(PathPrefix="/app/")["Roles"]]
    version = iam.get_policy_version(PolicyArn=basic, VersionId="v1")["PolicyVersion"]["Document"]
    assert version["Statement"][0]["Action"] == ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"]
    for m in ("AWSLambdaRole", "AWSLambda_FullAccess", "AWSLambda_ReadOnlyAccess"):
        assert iam.get_policy(PolicyArn=f"arn:aws:iam::aws:policy/{'service-role/' * (m == 'AWSLambdaRole')}{m}")
    assert iam.get_policy(PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess")["Policy"]["IsAttachable"]
    # And a role with policies cannot be deleted, as in IAM
    with pytest.raises(ClientError) as e:
        iam.delete_role(RoleName=name)
    assert code(e) == "DeleteConflict" and e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409
    for arn in (custom["Arn"], basic):
        iam.detach_role_policy(RoleName=name, PolicyArn=arn)
    iam.delete_role_policy(RoleName=name, PolicyName="get")
    iam.delete_role(RoleName=name)
    with pytest.raises(iam.exceptions.NoSuchEntityException) as e:
        iam.get_role(RoleName=name)
    assert e.value.response["Error"]["Message"] == f"The role with name {name} cannot be found."
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_iam_errors_are_aws_errors(srv: Server) -> None:
    iam = srv.client("iam")
    name = make_role(iam, unique("role")).rsplit("/", 1)[1]
    cases = [
        (lambda: iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(LAMBDA_TRUST)),
         "EntityAlreadyExists", 409),
        (lambda: iam.create_role(RoleName=unique("r"), AssumeRolePolicyDocument="{nope"), "MalformedPolicyDocument",
         400),
        (lambda: iam.put_role_policy(RoleName=name, PolicyName="p", PolicyDocument=policy(
            {"Effect": "Allow", "Action": "lambda:*"})), "MalformedPolicyDocument", 400),
        (lambda: iam.get_role_policy(RoleName=name, PolicyName="none"), "NoSuchEntity", 404),
        (lambda: iam.attach_role_policy(RoleName=name, PolicyArn="arn:aws:iam::aws:policy/NoSuchPolicy"),
         "NoSuchEntity", 404),
        (lambda: iam.detach_role_policy(RoleName=name, PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess"),
         "NoSuchEntity", 404),
        (lambda: iam.put_role_policy(RoleName=name, PolicyName="big", PolicyDocument=policy(
            *[{"Effect": "Allow", "Action": f"lambda:Get{i:04d}", "Resource": "*"} for i in range(250)])),
         "LimitExceeded", 409),
        (lambda: iam.create_policy(PolicyName=unique("p"), PolicyDocument=policy(
            *[{"Effect": "Allow", "Action": f"lambda:Get{i:04d}", "Resource": "*"} for i in range(150)])),
         "LimitExceeded", 409),
    ]
    for call, want, status in cases:
        with pytest.raises(ClientError) as e:
            call()
        assert (code(e), e.value.response["ResponseMetadata"]["HTTPStatusCode"]) == (want, status)
    # Validation against the model, as ValidationError
    raw = srv.client("iam", parameter_validation=False)
    with pytest.raises(ClientError) as e:
        raw.create_role(RoleName="bad name!", AssumeRolePolicyDocument=json.dumps(LAMBDA_TRUST))
    assert code(e) == "ValidationError" and "roleName" in e.value.response["Error"]["Message"]


def test_aws_cli_creates_and_reads_a_role(srv: Server) -> None:
    name = unique("cli")
    env = {**os.environ, **srv.aws_env(), "AWS_DEFAULT_REGION": REGION, "AWS_PAGER": ""}
    base = ["aws", "--endpoint-url", srv.endpoint, "--output", "json"]
    out = subprocess.run(base + ["iam", "create-role", "--role-name", name, "--assume-role-policy-document",
                                 json.dumps(LAMBDA_TRUST)], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    out = subprocess.run(base + ["iam", "get-role", "--role-name", name], env=env, capture_output=True, text=True,
                         timeout=60)
    assert json.loads(out.stdout)["Role"]["AssumeRolePolicyDocument"] == LAMBDA_TRUST
    out = subprocess.run(base + ["sts", "get-caller-identity"], env=env, capture_output=True, text=True, timeout=60)
    assert json.loads(out.stdout)["Arn"] == f"arn:aws:iam::{ACCOUNT}:root"


def test_concurrent_policy_changes_and_deletes_leave_a_consistent_role(srv: Server) -> None:
    iam = srv.client("iam")
    name = make_role(iam, unique("race")).rsplit("/", 1)[1]
    results: list[str] = []

    def put(i: int) -> None:
        try:
            srv.client("iam").put_role_policy(RoleName=name, PolicyName=f"p{i}", PolicyDocument=policy(
                {"Effect": "Allow", "Action": "lambda:GetFunction", "Resource": "*"}))
            results.append("put")
        except ClientError as e:
            results.append(e.response["Error"]["Code"])

    def delete() -> None:
        try:
            srv.client("iam").delete_role(RoleName=name)
            results.append("deleted")
        except ClientError as e:
            results.append(e.response["Error"]["Code"])
    threads = [threading.Thread(target=put, args=(i,)) for i in range(12)] + [threading.Thread(target=delete)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert set(results) <= {"put", "deleted", "DeleteConflict", "NoSuchEntity"}
    # Either the role is gone with no policy left behind, or it is there with every policy that was put
    if "deleted" in results:
        with pytest.raises(ClientError):
            iam.list_role_policies(RoleName=name)
        assert make_role(iam, name)  # the name is free again, and the new role has no old policies
        assert iam.list_role_policies(RoleName=name)["PolicyNames"] == []
    else:
        assert len(iam.list_role_policies(RoleName=name)["PolicyNames"]) == results.count("put")


# -- STS and authorization ------------------------------------------------------------------------------------
def test_assume_role_and_authorization_of_each_api(srv: Server) -> None:
    iam, lam = srv.client("iam"), srv.client()
    fn = unique("target")
    lam.create_function(FunctionName=fn, Runtime="python3.11", Role=f"arn:aws:iam::{ACCOUNT}:role/x",
                        Handler="app.handler", Code={"ZipFile": make_zip({"app.py": HELLO})})
    fn_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{fn}"
    role = unique("caller")
    make_role(iam, role, {"Effect": "Allow", "Action": ["lambda:InvokeFunction", "lambda:Get*"], "Resource": "*"},
              {"Effect": "Deny", "Action": "lambda:GetFunction", "Resource": fn_arn},
              {"Effect": "Allow", "Action": "logs:DescribeLogGroups", "Resource": "*",
               "Condition": {"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}, "Bool": {"aws:SecureTransport": "false"}}},
              {"Effect": "Allow", "Action": "iam:GetRole", "Resource": f"arn:aws:iam::{ACCOUNT}:role/{role}"})
    creds = srv.client("sts").assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/{role}",
                                          RoleSessionName="tester")["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA")
    me = f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/tester"
    assert session_client(srv, "sts", creds).get_caller_identity()["Arn"] == me
    slam = session_client(srv, "lambda", creds)
    # Allowed by the inline policy
    assert json.loads(slam.invoke(FunctionName=fn)["Payload"].read()) == {"hello": "world"}
    assert slam.get_function_configuration(FunctionName=fn)["FunctionName"] == fn
    # An explicit deny wins over lambda:Get*
    with pytest.raises(ClientError) as e:
        slam.get_function(FunctionName=fn)
    assert code(e) == "AccessDeniedException" and e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert e.value.response["Error"]["Message"] == (
        f"User: {me} is not authorized to perform: lambda:GetFunction on resource: {fn_arn} with an explicit deny "
        "in an identity-based policy")
    # Nothing allows it: implicit deny, in AWS's words
    with pytest.raises(ClientError) as e:
        slam.delete_function(FunctionName=fn)
    assert e.value.response["Error"]["Message"] == (
        f"User: {me} is not authorized to perform: lambda:DeleteFunction on resource: {fn_arn} because no "
        "identity-based policy allows the lambda:DeleteFunction action")
    # CloudWatch Logs (a condition on the source address) and IAM
    assert "logGroups" in session_client(srv, "logs", creds).describe_log_groups()
    with pytest.raises(ClientError) as e:
        session_client(srv, "logs", creds).get_log_events(logGroupName=f"/aws/lambda/{fn}", logStreamName="s")
    assert code(e) == "AccessDeniedException"
    siam = session_client(srv, "iam", creds)
    assert siam.get_role(RoleName=role)["Role"]["RoleName"] == role
    with pytest.raises(ClientError) as e:
        siam.create_role(RoleName=unique("escalate"), AssumeRolePolicyDocument=json.dumps(LAMBDA_TRUST))
    assert code(e) == "AccessDenied" and e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    # A session may not assume another role unless it is allowed sts:AssumeRole and the role trusts it
    other = make_role(iam, unique("other"))
    with pytest.raises(ClientError) as e:
        session_client(srv, "sts", creds).assume_role(RoleArn=other, RoleSessionName="xx")
    assert code(e) == "AccessDenied"
    lam.delete_function(FunctionName=fn)


def test_assume_role_needs_permission_and_trust(srv: Server) -> None:
    iam, sts = srv.client("iam"), srv.client("sts")
    only_lambda = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    target = iam.create_role(RoleName=unique("t"), AssumeRolePolicyDocument=json.dumps(only_lambda))["Role"]["Arn"]
    hopper = make_role(iam, unique("hop"), {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"})
    creds = sts.assume_role(RoleArn=hopper, RoleSessionName="hh")["Credentials"]
    with pytest.raises(ClientError) as e:  # allowed by its policy, but the target does not trust it
        session_client(srv, "sts", creds).assume_role(RoleArn=target, RoleSessionName="xx")
    assert code(e) == "AccessDenied" and "sts:AssumeRole on resource: " + target in e.value.response["Error"]["Message"]
    trusting = make_role(iam, unique("trusting"))  # trusts the account
    hop = session_client(srv, "sts", creds).assume_role(RoleArn=trusting, RoleSessionName="yy")["Credentials"]
    assert session_client(srv, "sts", hop).get_caller_identity()["Arn"].endswith("/yy")
    with pytest.raises(ClientError) as e:
        sts.assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/{unique('missing')}", RoleSessionName="xx")
    assert code(e) == "AccessDenied"
    with pytest.raises(ClientError) as e:
        sts.assume_role(RoleArn=trusting, RoleSessionName="xx", DurationSeconds=7200)
    assert code(e) == "ValidationError"


def test_forged_and_mismatched_session_credentials_are_refused(srv: Server) -> None:
    sts = srv.client("sts")
    role = make_role(srv.client("iam"), unique("r"))
    a = sts.assume_role(RoleArn=role, RoleSessionName="aa")["Credentials"]
    b = sts.assume_role(RoleArn=role, RoleSessionName="bb")["Credentials"]
    bad = [[a["AccessKeyId"], a["SecretAccessKey"], b["SessionToken"]],  # another session's token
           [a["AccessKeyId"], a["SecretAccessKey"], a["SessionToken"][:-2] + "xx"],  # tampered
           [a["AccessKeyId"], a["SecretAccessKey"], "x" * 3000],
           ["ASIA" + "A" * 16, a["SecretAccessKey"], a["SessionToken"]]]
    for creds in bad:
        with pytest.raises(ClientError) as e:
            session_client(srv, "lambda", creds).list_functions()
        assert code(e) == "UnrecognizedClientException", creds
        with pytest.raises(ClientError) as e:
            session_client(srv, "sts", creds).get_caller_identity()
        assert code(e) == "InvalidClientTokenId"
    with pytest.raises(ClientError) as e:  # no token at all
        session_client(srv, "lambda", [a["AccessKeyId"], a["SecretAccessKey"], None]).list_functions()
    assert code(e) == "UnrecognizedClientException"
    with pytest.raises(ClientError) as e:  # the right token with the wrong secret
        session_client(srv, "lambda", [a["AccessKeyId"], b["SecretAccessKey"], a["SessionToken"]]).list_functions()
    assert code(e) == "InvalidSignatureException"
    # Kindling's own routes (all of a function's logs) are the operator's only
    import urllib.error
    import urllib.request

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    req = AWSRequest(method="GET", url=srv.endpoint + "/_kindling/logs/anything")
    SigV4Auth(Credentials(a["AccessKeyId"], a["SecretAccessKey"], a["SessionToken"]), "lambda", REGION).add_auth(req)
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(urllib.request.Request(req.url, headers=dict(req.headers.items())), timeout=10)
    assert denied.value.code == 403 and b"AccessDeniedException" in denied.value.headers.as_bytes()
    assert list(json.loads(denied.value.read())) == ["Message"]  # Lambda's shape of an IAM denial


# -- execution-role credentials inside environments ---------------------------------------------------------
def invoke(lam: object, name: str, event: dict) -> dict:
    out = lam.invoke(FunctionName=name, Payload=json.dumps(event).encode())
    body = json.loads(out["Payload"].read())
    assert "FunctionError" not in out, body
    return body


def test_functions_call_kindling_with_their_role_credentials(srv: Server) -> None:
    iam, lam = srv.client("iam"), srv.client()
    target = unique("target")
    lam.create_function(FunctionName=target, Runtime="python3.11", Role=f"arn:aws:iam::{ACCOUNT}:role/any",
                        Handler="app.handler", Code={"ZipFile": make_zip({"app.py": HELLO})})
    allowed = make_role(iam, unique("can"), {"Effect": "Allow", "Action": "logs:FilterLogEvents",
                                             "Resource": "arn:aws:logs:*:*:log-group:/aws/lambda/*"},
                        managed=("arn:aws:iam::aws:policy/service-role/AWSLambdaRole",))
    denied = make_role(iam, unique("cannot"), {"Effect": "Allow", "Action": "lambda:Get*", "Resource": "*"})
    made = []
    for role in (allowed, denied, f"arn:aws:iam::{ACCOUNT}:role/{unique('unknown')}"):
        made.append(unique("caller"))
        lam.create_function(FunctionName=made[-1], Runtime="python3.11", Role=role, Handler="app.handler",
                            Timeout=30, Code={"ZipFile": make_zip({"app.py": CALLER})})
    event = {"target": target, "leak": True, "logs": True}
    # A role that may invoke: the call goes through, as the function's own assumed role
    can = invoke(lam, made[0], event)
    assert can["invoke"] == {"hello": "world"}
    assert can["logs"] >= 0 and "logs_error" not in can  # and it reads its own logs
    assert can["arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/{allowed.rsplit('/', 1)[1]}/{made[0]}"
    # A role without lambda:InvokeFunction: AccessDeniedException, in AWS's words
    cannot = invoke(lam, made[1], event)
    assert cannot["error"] == ["AccessDeniedException", (
        f"User: arn:aws:sts::{ACCOUNT}:assumed-role/{denied.rsplit('/', 1)[1]}/{made[1]} is not authorized to perform: "
        f"lambda:InvokeFunction on resource: arn:aws:lambda:{REGION}:{ACCOUNT}:function:{target} because no "
        "identity-based policy allows the lambda:InvokeFunction action")]
    assert cannot["logs_error"] == "AccessDeniedException"
    # A role Kindling does not know (local mode): it just works
    assert invoke(lam, made[2], event)["invoke"] == {"hello": "world"}
    # The credentials are the environment's own, never shown by the API or written to logs
    akid, secret, token = can["creds"]
    assert akid.startswith("ASIA") and akid != cannot["creds"][0]
    variables = (lam.get_function(FunctionName=made[0])["Configuration"].get("Environment") or {}).get("Variables")
    assert not variables or "AWS_SECRET_ACCESS_KEY" not in variables
    assert session_client(srv, "sts", can["creds"]).get_caller_identity()["Arn"] == can["arn"]
    # ... and refused once the environment is gone
    for name in made:
        lam.delete_function(FunctionName=name)
    deadline = time.monotonic() + 10
    while True:
        try:
            session_client(srv, "sts", can["creds"]).get_caller_identity()
        except ClientError as e:
            assert e.response["Error"]["Code"] == "ExpiredToken"
            break
        assert time.monotonic() < deadline, "the credentials outlived their environment"
        time.sleep(0.1)
    with pytest.raises(ClientError) as e:
        session_client(srv, "lambda", can["creds"]).list_functions()
    assert code(e) == "ExpiredTokenException"
    assert e.value.response["Error"]["Message"] == "The security token included in the request is expired"
    logs = srv.log_path.read_bytes()
    for path in srv.data_dir.rglob("*"):
        try:
            logs += path.read_bytes() if path.is_file() and "log" in str(path) else b""
        except FileNotFoundError:
            pass  # a file that went while the directory was read
    assert secret.encode() not in logs and token.encode() not in logs
    lam.delete_function(FunctionName=target)


# -- enforce mode ---------------------------------------------------------------------------------------------
def test_enforce_mode_checks_the_execution_role() -> None:
    with tempfile.TemporaryDirectory(prefix="kindling-iam-") as tmp:
        s = Server(Path(tmp) / "data", sandbox="process", iam="enforce").start()
        try:
            iam, lam = s.client("iam"), s.client()
            ec2_only = {"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
            wrong = iam.create_role(RoleName="ec2", AssumeRolePolicyDocument=json.dumps(ec2_only))["Role"]["Arn"]
            good = make_role(iam, "fn-role")
            zip_ = {"ZipFile": make_zip({"app.py": HELLO})}
            for role in (wrong, f"arn:aws:iam::{ACCOUNT}:role/missing"):
                with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
                    lam.create_function(FunctionName="f", Runtime="python3.11", Role=role, Handler="app.handler",
                                        Code=zip_)
                assert e.value.response["Error"]["Message"] == \
                    "The role defined for the function cannot be assumed by Lambda."
            lam.create_function(FunctionName="f", Runtime="python3.11", Role=good, Handler="app.handler", Code=zip_)
            with pytest.raises(lam.exceptions.InvalidParameterValueException):
                lam.update_function_configuration(FunctionName="f", Role=wrong)
            # A session of a role without policies may do nothing; GetCallerIdentity needs no permission
            creds = s.client("sts").assume_role(RoleArn=good, RoleSessionName="ss")["Credentials"]
            assert session_client(s, "sts", creds).get_caller_identity()["Account"] == ACCOUNT
            with pytest.raises(ClientError) as e:
                session_client(s, "lambda", creds).list_functions()
            assert code(e) == "AccessDeniedException"
            assert "on resource: *" in e.value.response["Error"]["Message"]
        finally:
            s.stop()


SNAPSHOT = '''
import os
KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
AT_INIT = [os.environ.get(k) for k in KEYS]  # what a client made during init would keep

def handler(event, context):
    import time
    time.sleep(event.get("sleep", 0))
    return {"init": AT_INIT, "now": [os.environ.get(k) for k in KEYS],
            "type": os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE")}
'''


def test_templates_and_each_clone_hold_their_own_credentials() -> None:
    """Isolated sandbox: a template's session lives while it or a clone of it does; each clone has its own."""
    with tempfile.TemporaryDirectory(prefix="kindling-iam-") as tmp:
        s = Server(Path(tmp) / "data").start()
        try:
            lam = s.client()
            name = unique("snap")
            lam.create_function(FunctionName=name, Runtime="python3.12", Role=f"arn:aws:iam::{ACCOUNT}:role/r",
                                Handler="app.handler", Code={"ZipFile": make_zip({"app.py": SNAPSHOT})})
            invoke(lam, name, {})  # the first cold start; the template is made meanwhile
            clones: dict[str, dict] = {}
            deadline, n = time.monotonic() + 45, 2
            while len(clones) < 2 and time.monotonic() < deadline:
                got: list[dict] = []
                threads = [threading.Thread(target=lambda got=got: got.append(invoke(s.client(), name,
                                                                                      {"sleep": 0.3})))
                           for _ in range(n)]
                n += 1  # one more than the warm environments: a cold start
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(30)
                clones.update({r["now"][0]: r for r in got if r["type"] == "snap-start"})
            assert len(clones) >= 2, "no clones of a template were made"
            first, second = list(clones.values())[:2]
            assert first["init"] == second["init"]  # the template's session, made at its init
            assert len({first["now"][0], second["now"][0], first["init"][0]}) == 3
            for creds in (first["now"], second["now"], first["init"]):
                assert session_client(s, "sts", creds).get_caller_identity()["Arn"].endswith(f"/r/{name}")
            lam.delete_function(FunctionName=name)
            for creds in (first["now"], second["now"], first["init"]):
                deadline = time.monotonic() + 10
                while True:
                    try:
                        session_client(s, "sts", creds).get_caller_identity()
                    except ClientError as e:
                        assert e.response["Error"]["Code"] == "ExpiredToken"
                        break
                    assert time.monotonic() < deadline, "credentials outlived their template and clones"
                    time.sleep(0.1)
        finally:
            s.stop()


def test_hostile_iam_requests_and_costly_policies(srv: Server) -> None:
    import urllib.error
    import urllib.request

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    def post(body: bytes) -> tuple[int, bytes]:
        req = AWSRequest(method="POST", url=srv.endpoint + "/", data=body,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
        SigV4Auth(Credentials(*srv.keys), "iam", "us-east-1").add_auth(req)
        try:
            with urllib.request.urlopen(urllib.request.Request(srv.endpoint + "/", data=body, method="POST",
                                                               headers=dict(req.headers.items())), timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
    # Malformed and oversized forms: AWS's XML errors, quickly
    for body in [b"Action=CreateRole&" + b"&".join(b"f%d=x" % i for i in range(5000)), b"\xff\xfe=\x00",
                 b"Action=Nope&Version=2010-05-08", b"Action=GetRole&Version=2010-05-08",
                 b"Action=ListRoles&MaxItems=99999999999999999999999", b"Action=CreateRole&RoleName=x&"
                 b"AssumeRolePolicyDocument=" + b"%5B" * 60000]:
        status, out = post(body)
        assert status == 400 and out.startswith(b"<ErrorResponse") and b"<Type>Sender</Type>" in out, (status, out)
    # A policy built to make matching slow costs a pass over each value, not a backtracking search
    iam = srv.client("iam")
    role = unique("costly")
    arn = make_role(iam, role, *[{"Effect": "Allow", "Action": "lambda:" + "*a" * 300 + "b",
                                  "Resource": "arn:" + "*a" * 400 + "?b"} for _ in range(4)])
    creds = srv.client("sts").assume_role(RoleArn=arn, RoleSessionName="slow")["Credentials"]
    slam = session_client(srv, "lambda", creds)
    start = time.perf_counter()
    for _ in range(5):
        with pytest.raises(ClientError):
            slam.get_function(FunctionName="a" * 64)
    assert (time.perf_counter() - start) / 5 < 0.25


def test_readme_lists_the_iam_and_sts_operations() -> None:
    import re

    from kindling.frontend.iam_api import IAM_OPERATIONS, STS_OPERATIONS
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    table = readme.split("## IAM and STS operations", 1)[1].split("\n## ", 1)[0]
    listed = {name.strip() for row in re.findall(r"^\| ([A-Z][^|]+) \|", table, re.M) for name in row.split("/")}
    assert listed == set(IAM_OPERATIONS) | set(STS_OPERATIONS)


def test_unknown_roles_are_warned_about_once(srv: Server) -> None:
    lam = srv.client()
    role = f"arn:aws:iam::{ACCOUNT}:role/{unique('made-up')}"
    names = [unique("warned") for _ in range(3)]
    for name in names:
        lam.create_function(FunctionName=name, Runtime="python3.11", Role=role, Handler="app.handler",
                            Code={"ZipFile": make_zip({"app.py": HELLO})})
    lam.update_function_configuration(FunctionName=names[0], Role=role)
    time.sleep(0.2)
    assert srv.log_path.read_text().count(f"role {role} does not exist in Kindling's IAM") == 1
    for name in names:
        lam.delete_function(FunctionName=name)


ATTACK = """
import boto3, json, sys, time
from botocore.config import Config
from botocore.exceptions import ClientError
endpoint, creds, keys, role = json.loads(sys.argv[1])
cfg = Config(retries={"max_attempts": 1})
lam = boto3.client("lambda", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=creds[0],
                   aws_secret_access_key=creds[1], aws_session_token=creds[2], config=cfg)
iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=keys[0],
                   aws_secret_access_key=keys[1], config=cfg)
counts = {"denied": 0, "malformed": 0}
stop = time.monotonic() + 4
while time.monotonic() < stop:
    try:
        lam.get_function(FunctionName="a" * 64)
    except ClientError:
        counts["denied"] += 1
    try:
        iam.put_role_policy(RoleName=role, PolicyName="bad", PolicyDocument="[" * 20000)
    except ClientError as e:
        assert e.response["Error"]["Code"] == "MalformedPolicyDocument"
        counts["malformed"] += 1
print(json.dumps(counts))
"""


def test_a_flood_of_costly_iam_work_leaves_other_functions_unhurt(hostile_server: Server, bystander: object) -> None:
    """A client evaluating large wildcard policies and sending malformed documents as fast as it can (from its
    own process): bounded work per request, and a bystander function keeps its p50 within 2x."""
    s = hostile_server
    iam, sts = s.client("iam"), s.client("sts")
    role = unique("flood")
    arn = make_role(iam, role, *[{"Effect": "Allow", "Action": "lambda:" + "*a" * 300 + "b",
                                  "Resource": "arn:" + "*a" * 400 + "?b"} for _ in range(4)])
    c = sts.assume_role(RoleArn=arn, RoleSessionName="flood")["Credentials"]
    args = json.dumps([s.endpoint, [c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]], list(s.keys), role])
    attacker = subprocess.Popen([sys.executable, "-c", ATTACK, args], stdout=subprocess.PIPE)
    try:
        time.sleep(1)
        bystander.check()  # type: ignore[attr-defined]
        out, _ = attacker.communicate(timeout=30)
    finally:
        attacker.kill()
    counts = json.loads(out)
    assert counts["denied"] > 10 and counts["malformed"] > 10, counts
