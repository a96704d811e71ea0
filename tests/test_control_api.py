"""The Lambda control API through boto3 against the real `kindling serve`, compared with AWS's recordings."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import urllib.error
import urllib.request

import pytest
from botocore.exceptions import ClientError

from tests.conftest import HELLO, ROLE, make_zip, unique
from tests.recorded import assert_like, recorded


def rec(test: str, key: str):  # noqa: ANN201
    return recorded("lambda_api", test, key)


def test_function_lifecycle_matches_aws(lam, create_function):
    # Given the calls of AWS's recorded test_function_lifecycle (its helper always passes Environment)
    name = unique()
    create = create_function(FunctionName=name, Handler="handler.handler", MemorySize=256, Timeout=5,
                             code={"handler.py": HELLO}, Environment={"Variables": {}})
    assert_like(create, rec("test_function_lifecycle", "create_response")["CreateFunctionResponse"])
    assert_like(lam.get_function(FunctionName=name), rec("test_function_lifecycle", "get_function_response"))

    # When the configuration changes
    upd = lam.update_function_configuration(FunctionName=name, Runtime="python3.11", Description="Changed-Description",
                                            MemorySize=512, Timeout=10, Environment={"Variables": {"ENV_A": "a"}})
    assert_like(upd, rec("test_function_lifecycle", "update_func_conf_response"))
    assert_like(lam.get_function(FunctionName=name), rec("test_function_lifecycle", "get_function_response_postupdate"))

    # And the code changes
    new_zip = make_zip({"handler.py": HELLO + "\n# v2\n"})
    code = lam.update_function_code(FunctionName=name, ZipFile=new_zip)
    assert_like(code, rec("test_function_lifecycle", "update_code_response"))
    assert code["CodeSha256"] == base64.b64encode(hashlib.sha256(new_zip).digest()).decode()
    assert code["CodeSha256"] != create["CodeSha256"]
    assert_like(lam.get_function(FunctionName=name),
                rec("test_function_lifecycle", "get_function_response_postcodeupdate"))

    # Then delete answers 204 and the function is gone, with AWS's error
    assert_like(lam.delete_function(FunctionName=name), rec("test_function_lifecycle", "delete_response"))
    with pytest.raises(ClientError) as exc:
        lam.get_function(FunctionName=name)
    assert_like(exc.value.response, rec("test_function_lifecycle", "delete_postdelete"))


def test_addressed_by_name_partial_arn_and_full_arn(lam, create_function):
    fn = create_function()
    name, arn = fn["FunctionName"], fn["FunctionArn"]
    assert arn == f"arn:aws:lambda:us-east-1:000000000000:function:{name}"
    for ident in (name, f"000000000000:function:{name}", arn):
        assert lam.get_function_configuration(FunctionName=ident)["FunctionArn"] == arn
    with pytest.raises(ClientError) as exc:
        lam.get_function(FunctionName=arn.replace("us-east-1", "ap-southeast-1"))
    assert exc.value.response["Error"] == {
        "Code": "ResourceNotFoundException",
        "Message": "Functions from 'ap-southeast-1' are not reachable in this region ('us-east-1')"}


@pytest.mark.parametrize("op", ["get_function", "get_function_configuration", "delete_function"])
def test_ops_on_nonexisting_function(lam, op):
    with pytest.raises(ClientError) as exc:
        getattr(lam, op)(FunctionName="doesnotexist-kindling")
    expected = rec(f"test_ops_on_nonexisting_fn[{op}]", "not_found_exception")
    got = exc.value.response
    assert got["Error"]["Code"] == expected["Error"]["Code"]
    assert got["Error"]["Message"] == "Function not found: arn:aws:lambda:us-east-1:000000000000:function:" \
                                      "doesnotexist-kindling"
    assert got["Type"] == "User" and got["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_qualifier_mismatch(lam, create_function):
    fn = create_function()
    with pytest.raises(ClientError) as exc:
        lam.get_function(FunctionName=fn["FunctionArn"] + ":$LATEST", Qualifier="1")
    assert_like(exc.value.response["Error"],
                rec("test_ops_with_arn_qualifier_mismatch[get_function]", "not_match_exception")["Error"])
    with pytest.raises(ClientError) as exc:
        lam.delete_function(FunctionName=fn["FunctionName"], Qualifier="$LATEST")
    assert_like(exc.value.response["Error"],
                rec("test_ops_with_arn_qualifier_mismatch[delete_function]", "match_exception")["Error"])


CREATE_EXCEPTIONS = [
    ("invalid_role_arn_exc", {"Role": "r1"}),
    ("invalid_runtime_exc", {"Runtime": "non-existent-runtime"}),
    ("uppercase_runtime_exc", {"Runtime": "PYTHON3.9"}),
    ("multiple_architectures", {"Architectures": ["x86_64", "arm64"]}),
    ("uppercase_architecture", {"Architectures": ["X86_64"]}),
    ("invalid_zip_exc", {"Code": {"ZipFile": b"this is not a zip"}}),
]


@pytest.mark.parametrize(("key", "change"), CREATE_EXCEPTIONS, ids=[c[0] for c in CREATE_EXCEPTIONS])
def test_create_exceptions_match_aws(lam, server, key, change):
    before = {f["FunctionName"] for f in lam.list_functions()["Functions"]}
    codes_before = set(server.code_dir.iterdir())
    assert codes_before  # the server's view of its code store, not an empty mount point
    args = {"FunctionName": unique(), "Runtime": "python3.12", "Role": ROLE, "Handler": "app.handler",
            "Code": {"ZipFile": make_zip({"app.py": HELLO})}, **change}
    with pytest.raises(ClientError) as exc:
        lam.create_function(**args)
    expected = rec("test_create_lambda_exceptions", key)
    got = exc.value.response
    assert got["Error"]["Code"] == expected["Error"]["Code"]
    assert got["ResponseMetadata"]["HTTPStatusCode"] == expected["ResponseMetadata"]["HTTPStatusCode"]
    if "runtime" in key:  # Kindling lists the runtimes it knows; AWS's list moves with time
        assert got["Error"]["Message"].startswith(expected["Error"]["Message"].split("enum value set")[0])
    else:
        assert got["Error"]["Message"] == expected["Error"]["Message"]
    assert {k for k in got if k not in ("Error", "ResponseMetadata")} == \
        {k for k in expected if k not in ("Error", "ResponseMetadata")}
    # Bad input changes nothing
    assert {f["FunctionName"] for f in lam.list_functions()["Functions"]} == before
    assert set(server.code_dir.iterdir()) == codes_before


def test_duplicate_create_conflicts(lam, create_function):
    fn = create_function()
    with pytest.raises(lam.exceptions.ResourceConflictException) as exc:
        create_function(FunctionName=fn["FunctionName"])
    assert exc.value.response["Error"]["Message"] == f"Function already exist: {fn['FunctionName']}"


def test_reserved_environment_keys_and_size(lam):
    base = {"FunctionName": unique(), "Runtime": "python3.12", "Role": ROLE, "Handler": "app.handler",
            "Code": {"ZipFile": make_zip({"app.py": HELLO})}}
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        lam.create_function(**base, Environment={"Variables": {"AWS_REGION": "x"}})
    assert "Reserved keys used in this request: AWS_REGION" in exc.value.response["Error"]["Message"]
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        lam.create_function(**base, Environment={"Variables": {"LARGE_VAR": "x" * 4097}})
    expected = rec("test_large_environment_variables_fails", "failed_create_fn_result")
    assert exc.value.response["Error"]["Message"].split("String measured")[0] == \
        expected["Error"]["Message"].split("String measured")[0]
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=base["FunctionName"])


def test_runtime_not_on_host_and_s3_code(lam):
    base = {"FunctionName": unique(), "Role": ROLE, "Handler": "app.handler",
            "Code": {"ZipFile": make_zip({"app.py": HELLO})}}
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        lam.create_function(**base, Runtime="java21")
    assert "not available on this Kindling host" in exc.value.response["Error"]["Message"]
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        lam.create_function(**base, Runtime="python3.7")
    assert exc.value.response["Error"]["Message"] == rec(
        "test_create_deprecated_function_runtime_with_validation_enabled[python3.7]",
        "deprecation_error")["Error"]["Message"]
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        lam.create_function(**{**base, "Code": {"S3Bucket": "bucket", "S3Key": "key.zip"}}, Runtime="python3.12")
    assert "ZipFile" in exc.value.response["Error"]["Message"]


def test_validation_from_the_model(server):
    lam = server.client(parameter_validation=False)  # as a client that does not check would send it
    with pytest.raises(ClientError) as exc:
        lam.create_function(FunctionName=unique(), Runtime="python3.12", Role=ROLE, Handler="app.handler",
                            Code={"ZipFile": make_zip({"app.py": HELLO})}, MemorySize=64)
    assert exc.value.response["Error"] == {
        "Code": "ValidationException",
        "Message": "1 validation error detected: Value '64' at 'memorySize' failed to satisfy constraint: "
                   "Member must have value greater than or equal to 128"}
    with pytest.raises(ClientError) as exc:
        lam.list_functions(FunctionVersion="invalid")
    assert exc.value.response["Error"] == rec("test_list_functions", "list_functions_invalid_functionversion")["Error"]


def test_list_functions_paging(lam, create_function):
    names = {create_function()["FunctionName"] for _ in range(5)}
    seen: list[str] = []
    marker = None
    while True:
        page = lam.list_functions(MaxItems=2, **({"Marker": marker} if marker else {}))
        assert len(page["Functions"]) <= 2
        seen += [f["FunctionName"] for f in page["Functions"]]
        marker = page.get("NextMarker")
        if not marker:
            break
    assert names <= set(seen) and len(seen) == len(set(seen))


def test_tags(lam, create_function):
    fn = create_function(Tags={"key_a": "value_a"})
    arn = fn["FunctionArn"]
    assert lam.list_tags(Resource=arn)["Tags"] == {"key_a": "value_a"}
    assert lam.get_function(FunctionName=arn)["Tags"] == {"key_a": "value_a"}
    lam.tag_resource(Resource=arn, Tags={"key_b": "value_b", "key_a": "new"})
    assert lam.list_tags(Resource=arn)["Tags"] == {"key_a": "new", "key_b": "value_b"}
    lam.untag_resource(Resource=arn, TagKeys=["key_a", "nonexisting"])
    assert lam.list_tags(Resource=arn)["Tags"] == {"key_b": "value_b"}
    excs = "test_tag_exceptions"
    with pytest.raises(ClientError) as exc:
        lam.tag_resource(Resource=arn + ":$LATEST", Tags={"a": "b"})
    assert exc.value.response["Error"] == rec(excs, "tag_lambda_qualifier_doesnotexist")["Error"]
    with pytest.raises(ClientError) as exc:
        lam.tag_resource(Resource=arn, Tags={})
    assert exc.value.response["Error"] == rec(excs, "tag_empty_tags")["Error"]
    with pytest.raises(ClientError) as exc:
        lam.list_tags(Resource=arn.replace(fn["FunctionName"], "doesnotexist"))
    assert exc.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_account_settings(lam, create_function):
    create_function()
    out = lam.get_account_settings()
    expected = rec("test_account_settings", "acc_settings_modded")
    assert sorted(out["AccountLimit"]) == expected["AccountLimit"]
    assert sorted(out["AccountUsage"]) == expected["AccountUsage"]
    assert out["AccountLimit"]["ConcurrentExecutions"] == 1000
    assert out["AccountUsage"]["FunctionCount"] >= 1


def test_code_location_is_a_signed_expiring_url(lam, create_function):
    zip_bytes = make_zip({"app.py": HELLO + "# location\n"})
    fn = create_function(Code={"ZipFile": zip_bytes})
    location = lam.get_function(FunctionName=fn["FunctionName"])["Code"]["Location"]
    with urllib.request.urlopen(location) as r:
        assert r.read() == zip_bytes
    expired = location.split("Expires=")[0] + "Expires=1&Signature=" + location.split("Signature=")[1]
    for bad in (location[:-4] + "0000", expired):
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(bad)
        exc.value.close()
        assert exc.value.code == 403


def test_concurrent_updates_never_corrupt(lam, create_function):
    fn = create_function()
    name = fn["FunctionName"]
    outcomes: list[str] = []

    def update(i: int) -> None:
        try:
            lam.update_function_configuration(FunctionName=name, Description=f"d{i}",
                                              Environment={"Variables": {"IDX": str(i)}})
            outcomes.append(f"ok{i}")
        except lam.exceptions.ResourceConflictException:
            outcomes.append("conflict")

    threads = [threading.Thread(target=update, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    config = lam.get_function_configuration(FunctionName=name)
    assert any(o.startswith("ok") for o in outcomes) and len(outcomes) == 8
    # Description and Environment come from the same update: never a mix of two
    assert config["Description"] == "d" + config["Environment"]["Variables"]["IDX"]
    assert f"ok{config['Environment']['Variables']['IDX']}" in outcomes


def test_malformed_json_body(server):
    req = server.signed_request("POST", "/2015-03-31/functions", b"{not json", {"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req)
    with exc.value:
        assert exc.value.code == 400
        assert exc.value.headers["X-Amzn-ErrorType"] == "InvalidRequestContentException"
        assert json.loads(exc.value.read())["Type"] == "User"
