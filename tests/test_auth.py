"""Every Lambda API request must be SigV4-signed with a key pair Kindling knows; rejected ones change nothing."""

from __future__ import annotations

import datetime
import http.client
import json
import os
import re
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path
from unittest import mock

import botocore
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.conftest import HELLO, REGION, ROLE, Server, make_zip, unique

INVALID_TOKEN = "The security token included in the request is invalid."
MISMATCH = ("The request signature we calculated does not match the signature you provided. Check your AWS Secret "
            "Access Key and signing method. Consult the service documentation for details.")


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    resp = exc.value.response
    return resp["ResponseMetadata"]["HTTPStatusCode"], resp["Error"]["Code"], resp["Error"]["Message"]


def _create_args(name: str) -> dict:
    return {"FunctionName": name, "Runtime": "python3.12", "Role": ROLE, "Handler": "app.handler",
            "Code": {"ZipFile": make_zip({"app.py": HELLO})}}


def _assert_absent(lam, name: str) -> None:  # noqa: ANN001
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_configuration(FunctionName=name)


def _raw(req: urllib.request.Request) -> tuple[int, Message, bytes]:
    """(status, headers (case-insensitive), body) of a raw request, error or not."""
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers, exc.read()


def test_health_needs_no_signature(server):
    status, _, body = _raw(urllib.request.Request(server.endpoint + "/_kindling/health"))
    assert (status, body) == (200, b'{"status":"ok"}')


def test_unsigned_request_is_unrecognized(server, lam):
    name = unique()
    unsigned = server.client(signature_version=botocore.UNSIGNED)
    with pytest.raises(ClientError) as exc:
        unsigned.create_function(**_create_args(name))
    assert _error(exc) == (403, "UnrecognizedClientException", INVALID_TOKEN)
    _assert_absent(lam, name)
    # on the wire: AWS's JSON body and error-type header
    status, headers, body = _raw(urllib.request.Request(server.endpoint + "/2015-03-31/functions/"))
    assert status == 403 and headers["X-Amzn-ErrorType"] == "UnrecognizedClientException"
    assert json.loads(body) == {"message": INVALID_TOKEN}


def test_unknown_access_key_is_unrecognized(server, lam):
    name = unique()
    with pytest.raises(ClientError) as exc:
        server.client(keys=("AKIAUNKNOWNKEY000000", server.keys[1])).create_function(**_create_args(name))
    assert _error(exc) == (403, "UnrecognizedClientException", INVALID_TOKEN)
    _assert_absent(lam, name)


def test_wrong_secret_is_an_invalid_signature(server, lam):
    name = unique()
    with pytest.raises(ClientError) as exc:
        server.client(keys=(server.keys[0], "x" * 40)).create_function(**_create_args(name))
    status, code, message = _error(exc)
    assert (status, code) == (403, "InvalidSignatureException")
    assert message.startswith(MISMATCH)
    assert "The Canonical String for this request should have been\n'POST\n/2015-03-31/functions" in message
    _assert_absent(lam, name)


@pytest.mark.parametrize("minutes", [-10, 10])
def test_signature_outside_five_minutes_is_rejected(server, lam, minutes):
    name = unique()
    then = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) + datetime.timedelta(minutes=minutes)
    client = server.client()
    with mock.patch("botocore.auth.get_current_datetime", return_value=then), pytest.raises(ClientError) as exc:
        client.create_function(**_create_args(name))
    status, code, message = _error(exc)
    assert (status, code) == (403, "InvalidSignatureException")
    stamp = then.strftime("%Y%m%dT%H%M%SZ")
    if minutes < 0:
        assert re.fullmatch(rf"Signature expired: {stamp} is now earlier than (\d{{8}}T\d{{6}}Z) "
                            r"\((\d{8}T\d{6}Z) - 5 min\.\)", message), message
    else:
        assert re.fullmatch(rf"Signature not yet current: {stamp} is still later than (\d{{8}}T\d{{6}}Z) "
                            r"\((\d{8}T\d{6}Z) \+ 5 min\.\)", message), message
    _assert_absent(lam, name)
    # within the window is fine
    near = then - datetime.timedelta(minutes=minutes * 0.7)
    with mock.patch("botocore.auth.get_current_datetime", return_value=near):
        assert client.list_functions()["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_credential_scoped_to_another_region_is_rejected(server):
    with pytest.raises(ClientError) as exc:
        server.client(region="eu-west-1").list_functions()
    assert _error(exc) == (403, "InvalidSignatureException",
                           "Credential should be scoped to a valid region, not 'eu-west-1'. ")


def test_tampered_body_or_query_is_an_invalid_signature(server, lam):
    name = unique()
    body = json.dumps({**_create_args(name), "Code": {"ZipFile": ""}}).encode()
    req = AWSRequest(method="POST", url=server.endpoint + "/2015-03-31/functions", data=body,
                     headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(*server.keys), "lambda", REGION).add_auth(req)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("POST", "/2015-03-31/functions", body.replace(b"python3.12", b"python3.11"), dict(req.headers))
        resp = conn.getresponse()
        assert resp.status == 403 and resp.getheader("X-Amzn-ErrorType") == "InvalidSignatureException"
        assert json.loads(resp.read())["message"].startswith(MISMATCH)
        get = AWSRequest(method="GET", url=server.endpoint + "/2015-03-31/functions/?MaxItems=1")
        SigV4Auth(Credentials(*server.keys), "lambda", REGION).add_auth(get)
        conn.request("GET", "/2015-03-31/functions/?MaxItems=2", headers=dict(get.headers))
        resp = conn.getresponse()
        assert resp.status == 403 and resp.getheader("X-Amzn-ErrorType") == "InvalidSignatureException"
        resp.read()
    finally:
        conn.close()
    _assert_absent(lam, name)


def test_malformed_authorization_header_is_incomplete(server):
    req = urllib.request.Request(server.endpoint + "/2015-03-31/functions/",
                                 headers={"Authorization": "Bearer abc", "X-Amz-Date": "20240101T000000Z"})
    status, headers, body = _raw(req)
    assert status == 400 and headers["X-Amzn-ErrorType"] == "IncompleteSignatureException"
    assert json.loads(body)["message"].startswith("Authorization header requires 'Credential' parameter.")


def test_the_right_key_works_for_list_create_and_invoke_by_arn(server, lam, create_function):
    assert lam.list_functions()["ResponseMetadata"]["HTTPStatusCode"] == 200
    fn = create_function()
    # an ARN with a qualifier in the path: %3A and %24 are signed double-encoded, as botocore does for Lambda
    out = lam.invoke(FunctionName=fn["FunctionArn"] + ":$LATEST", Payload=b'{"name": "signed"}')
    assert out["Payload"].read() == b'{"hello": "signed"}'
    assert lam.get_function_configuration(FunctionName=fn["FunctionArn"])["FunctionName"] == fn["FunctionName"]
    status, _, body = _raw(server.signed_request("GET", "/2015-03-31/functions/?MaxItems=50"))
    assert status == 200 and "Functions" in json.loads(body)


def test_presigned_url(server, lam):
    url = lam.generate_presigned_url("list_functions", Params={"MaxItems": 5}, ExpiresIn=60)
    status, _, body = _raw(urllib.request.Request(url))
    assert status == 200 and "Functions" in json.loads(body)
    tampered = re.sub(r"X-Amz-Signature=[0-9a-f]+", "X-Amz-Signature=" + "0" * 64, url)
    status, headers, _ = _raw(urllib.request.Request(tampered))
    assert status == 403 and headers["X-Amzn-ErrorType"] == "InvalidSignatureException"


def test_logs_need_a_signature_and_the_cli_signs(server, create_function, lam):
    fn = create_function(code='def handler(event, context):\n    print("logged line")\n    return 1\n')
    lam.invoke(FunctionName=fn["FunctionName"], Payload=b"{}")
    status, headers, _ = _raw(urllib.request.Request(f"{server.endpoint}/_kindling/logs/{fn['FunctionName']}"))
    assert status == 403 and headers["X-Amzn-ErrorType"] == "UnrecognizedClientException"
    cli = [sys.executable, "-m", "kindling.cli.main", "logs", fn["FunctionName"], "--endpoint-url", server.endpoint]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KINDLING_"))}
    out = subprocess.run(cli, env={**env, **server.aws_env()}, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "logged line" in out.stdout, out.stderr
    wrong = {**env, "AWS_ACCESS_KEY_ID": server.keys[0], "AWS_SECRET_ACCESS_KEY": "y" * 40}
    out = subprocess.run(cli, env=wrong, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "InvalidSignatureException" in out.stderr


def test_first_start_creates_a_private_key_pair(tmp_path: Path):
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KINDLING_"))}
    creds_cmd = [sys.executable, "-m", "kindling.cli.main", "credentials", "--data-dir", str(data)]
    none = subprocess.run(creds_cmd, env=env, capture_output=True, text=True, timeout=60)
    assert none.returncode != 0 and "No credentials" in none.stderr
    srv = Server(data, keys=None).start()
    try:
        file = data / "credentials.json"
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
        key_id, secret = srv.keys
        assert re.fullmatch(r"AKIA[A-Z0-9]{16}", key_id) and len(secret) == 40
        assert f"export AWS_ACCESS_KEY_ID={key_id} AWS_SECRET_ACCESS_KEY={secret}" in srv.log_path.read_text()
        out = subprocess.run(creds_cmd, env=env, capture_output=True, text=True, timeout=60, check=True)
        assert key_id in out.stdout and secret in out.stdout
        assert f"export AWS_ACCESS_KEY_ID={key_id} AWS_SECRET_ACCESS_KEY={secret}" in out.stdout.splitlines()
        lam = srv.client(keys=(key_id, secret))
        name = unique()
        lam.create_function(**_create_args(name))
        # the CLI's client commands find the pair through --data-dir
        cli = [sys.executable, "-m", "kindling.cli.main", "ls", "--endpoint-url", srv.endpoint, "--data-dir", str(data)]
        listed = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0 and name in listed.stdout, listed.stderr
        # the test pair is not known to this server
        with pytest.raises(ClientError) as exc:
            srv.client(keys=("AKIAKINDLINGTEST0000", secret)).list_functions()
        assert _error(exc)[1] == "UnrecognizedClientException"
    finally:
        srv.stop()
    # a restart keeps the pair and does not print it again
    srv = Server(data, keys=None)
    before = srv.log_path.stat().st_size if srv.log_path.exists() else 0
    srv.start()
    try:
        assert srv.keys == (key_id, secret)
        assert srv.client().get_function_configuration(FunctionName=name)["FunctionName"] == name
        assert secret not in srv.log_path.read_text()[before:]
    finally:
        srv.stop()
