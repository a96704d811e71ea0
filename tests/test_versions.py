"""Published versions and qualifiers through boto3 against the real `kindling serve`, compared with AWS's recordings."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from kindling.functions.service import FunctionService
from kindling.runtimes.registry import Runtimes
from kindling.settings import Settings
from kindling.store.code import CodeStore
from kindling.store.db import open_engine
from kindling.store.functions import FunctionStore
from tests.conftest import ROLE, make_zip, unique
from tests.recorded import assert_like, recorded

ECHO = "def handler(event, context):\n    return event\n"
# Which code, configuration, version and environment served an invoke.
WHO = '''
import os, uuid
ENV_ID = uuid.uuid4().hex
CODE = "{code}"
def handler(event, context):
    return {{"env": ENV_ID, "code": CODE, "var": os.environ.get("WHICH"), "arn": context.invoked_function_arn,
             "version": os.environ["AWS_LAMBDA_FUNCTION_VERSION"], "context_version": context.function_version}}
'''


def rec(test: str, key: str) -> Any:
    return recorded("lambda_api", test, key)


def settled(expected: dict[str, Any]) -> dict[str, Any]:
    """A recorded read AWS took while still creating or updating; Kindling has finished before it answers."""
    out = {k: v for k, v in expected.items()
           if k not in ("StateReason", "StateReasonCode", "LastUpdateStatusReason", "LastUpdateStatusReasonCode")}
    return {**out, "State": "Active", "LastUpdateStatus": "Successful"}


def call(lam: Any, name: str, qualifier: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    out = lam.invoke(FunctionName=name, **({"Qualifier": qualifier} if qualifier else {}))
    body = json.loads(out["Payload"].read())
    assert "FunctionError" not in out, body
    return out, body


def code_keys(server: Any) -> set[str]:
    return {p.stem for p in server.code_dir.glob("*.zip")}


# -- AWS's recorded tests ---------------------------------------------------------------------------
def test_version_lifecycle(lam, create_function):
    t = "test_version_lifecycle"
    create = create_function(code={"index.py": ECHO}, Handler="index.handler", Description="No version :(")
    name = create["FunctionName"]
    assert_like(create, rec(t, "create_response"))
    assert_like(lam.get_function(FunctionName=name), rec(t, "get_function_result"))
    assert_like(lam.list_versions_by_function(FunctionName=name), rec(t, "list_versions_result"))

    update = lam.update_function_configuration(FunctionName=name, Description="First version :)")
    assert_like(update, rec(t, "first_update_response"))
    assert_like(lam.get_function(FunctionName=name), rec(t, "first_update_get_function"))

    first = lam.publish_version(FunctionName=name, Description="First version description :)")
    assert_like(first, rec(t, "first_publish_response"))
    assert_like(lam.get_function(FunctionName=name, Qualifier="1"), rec(t, "first_publish_get_function"))
    assert_like(lam.get_function_configuration(FunctionName=name, Qualifier="1"),
                rec(t, "first_publish_get_function_config"))

    update = lam.update_function_configuration(FunctionName=name, Description="Second version :))")
    assert_like(update, rec(t, "second_update_response"))
    after = lam.get_function(FunctionName=name, Qualifier="1")
    assert_like(after, rec(t, "first_publish_get_function_after_update"))
    assert after["Configuration"]["RevisionId"] == first["RevisionId"]  # a published version never changes

    second = lam.publish_version(FunctionName=name)
    assert_like(second, rec(t, "second_publish_response"))
    # nothing changed since version 2: publishing again answers version 2, whatever the description
    third = lam.publish_version(FunctionName=name, Description="Third version description :)))")
    assert_like(third, rec(t, "third_publish_response"))
    assert third["RevisionId"] == second["RevisionId"]
    assert_like(lam.list_versions_by_function(FunctionName=name), rec(t, "list_versions_result_after_third_publish"))

    lam.delete_function(FunctionName=name, Qualifier="1")
    assert_like(lam.list_versions_by_function(FunctionName=name),
                rec(t, "list_versions_result_after_deletion_of_first_version"))


def test_publish_version_on_create(lam, create_function):
    t = "test_publish_version_on_create"
    create = create_function(code={"index.py": ECHO}, Handler="index.handler", Publish=True)
    name = create["FunctionName"]
    assert_like(create, rec(t, "create_response"))
    assert_like(lam.get_function(FunctionName=name), rec(t, "get_function_result"))
    assert_like(lam.get_function(FunctionName=name, Qualifier="1"), rec(t, "get_function_version_result"))
    assert_like(lam.get_function(FunctionName=name, Qualifier="$LATEST"), rec(t, "get_function_latest_result"))
    assert_like(lam.list_versions_by_function(FunctionName=name), rec(t, "list_versions_result"))
    again = lam.publish_version(FunctionName=name, Description="Repeated version description :)")
    assert_like(again, rec(t, "repeated_publish_response"))
    assert_like(lam.list_versions_by_function(FunctionName=name), rec(t, "list_versions_result_after_publish"))


def older(config: dict[str, Any]) -> dict[str, Any]:
    """Without the members AWS added to configurations after an older recording was made."""
    return {k: v for k, v in config.items() if k not in ("SnapStart", "RuntimeVersionConfig", "LoggingConfig")}


def test_publish_with_wrong_revisionid(lam, create_function):
    t = "test_publish_with_wrong_revisionid"  # recorded before AWS answered SnapStart, LoggingConfig, ...
    create = create_function(code={"index.py": ECHO}, Handler="index.handler", Runtime="python3.9")
    name = create["FunctionName"]
    assert_like(older(create), rec(t, "create_response"))
    fn = lam.get_function(FunctionName=name)
    assert_like({**fn, "Configuration": older(fn["Configuration"])}, rec(t, "get_fn_response"))
    with pytest.raises(ClientError) as exc:
        lam.publish_version(FunctionName=name, RevisionId="wrong")
    assert_like(exc.value.response, rec(t, "publish_wrong_revisionid_exc"))
    published = lam.publish_version(FunctionName=name, RevisionId=fn["Configuration"]["RevisionId"])
    assert_like(older(published), rec(t, "publish_result"))


def test_publish_with_wrong_sha256(lam, create_function):
    t = "test_publish_with_wrong_sha256"
    create = create_function(code={"index.py": ECHO}, Handler="index.handler")
    name = create["FunctionName"]
    assert_like(create, rec(t, "create_response"))
    fn = lam.get_function(FunctionName=name)
    assert_like(fn, rec(t, "get_fn_response"))
    with pytest.raises(ClientError) as exc:
        lam.publish_version(FunctionName=name, CodeSha256="somenonexistentsha256")
    assert_like(exc.value.response, rec(t, "publish_wrong_sha256_exc"))
    published = lam.publish_version(FunctionName=name, CodeSha256=fn["Configuration"]["CodeSha256"])
    assert_like(published, rec(t, "publish_result"))


def test_publish_with_update(lam, create_function):
    t = "test_publish_with_update"
    create = create_function(code={"index.py": ECHO}, Handler="index.handler")
    name = create["FunctionName"]
    assert_like(create, rec(t, "create_response"))
    assert_like(lam.get_function(FunctionName=name), rec(t, "get_function_result"))
    updated = lam.update_function_code(FunctionName=name, ZipFile=make_zip({"index.py": ECHO + "# v2\n"}),
                                       Publish=True)
    assert_like(updated, rec(t, "update_function_code_result"))
    # AWS read these while still creating version 1 and updating $LATEST; Kindling is done by then
    for qualifier, key in (("1", "get_function_version_result"), ("$LATEST", "get_function_latest_result")):
        expected = rec(t, key)
        assert_like(lam.get_function(FunctionName=name, Qualifier=qualifier),
                    {**expected, "Configuration": settled(expected["Configuration"])})


def test_function_revisions_basic(lam, create_function):
    t = "test_function_revisions_basic"
    zip_bytes = make_zip({"index.py": ECHO})
    create = create_function(Handler="index.handler", Timeout=30, Environment={"Variables": {}},
                             Code={"ZipFile": zip_bytes})
    assert_like(create, rec(t, "create_function_response_rev1")["CreateFunctionResponse"])
    name = create["FunctionName"]
    rev2 = lam.get_function(FunctionName=name)
    assert_like(rev2, rec(t, "get_function_response_rev2"))
    assert rev2["Configuration"]["RevisionId"] != create["RevisionId"]  # Pending → Active is a new revision

    with pytest.raises(ClientError) as exc:
        lam.update_function_code(FunctionName=name, ZipFile=zip_bytes, RevisionId="wrong")
    assert_like(exc.value.response, rec(t, "update_function_revision_exception"))
    rev3 = lam.update_function_code(FunctionName=name, ZipFile=zip_bytes,
                                    RevisionId=rev2["Configuration"]["RevisionId"])
    assert_like(rev3, rec(t, "update_function_code_response_rev3"))
    rev4 = lam.get_function(FunctionName=name)
    assert_like(rev4, rec(t, "get_function_response_rev4"))
    assert len({rev2["Configuration"]["RevisionId"], rev3["RevisionId"], rev4["Configuration"]["RevisionId"]}) == 3

    # AWS's recording moved to python3.8, which Lambda (and Kindling) no longer accept: python3.11 instead
    with pytest.raises(ClientError) as exc:
        lam.update_function_configuration(FunctionName=name, Runtime="python3.11", RevisionId="wrong")
    assert_like(exc.value.response, rec(t, "update_function_configuration_revision_exception"))
    rev5 = lam.update_function_configuration(FunctionName=name, Runtime="python3.11",
                                             RevisionId=rev4["Configuration"]["RevisionId"])
    assert_like(rev5, {**rec(t, "update_function_configuration_response_rev5"), "Runtime": "python3.11"})
    rev6 = lam.get_function(FunctionName=name)
    expected = rec(t, "get_function_response_rev6")
    assert_like(rev6, {**expected, "Configuration": {**expected["Configuration"], "Runtime": "python3.11"}})
    assert rev6["Configuration"]["RevisionId"] != rev5["RevisionId"]


def test_redundant_updates(lam, create_function):
    t = "test_redundant_updates"
    create = create_function(Handler="handler.handler", code={"handler.py": ECHO}, Timeout=30,
                             Environment={"Variables": {}}, Description="Initial description")
    name = create["FunctionName"]
    assert_like(create, rec(t, "create_response")["CreateFunctionResponse"])
    first = lam.update_function_configuration(FunctionName=name, Description="1st update description")
    assert_like(first, rec(t, "first_update_result"))
    assert_like(lam.get_function_configuration(FunctionName=name), rec(t, "get_fn_config_result"))
    assert_like(lam.get_function(FunctionName=name), rec(t, "get_fn_result"))
    again = lam.update_function_configuration(FunctionName=name, Description="1st update description")
    assert_like(again, rec(t, "redundant_update_result"))
    assert_like(lam.get_function(FunctionName=name), rec(t, "get_fn_result_after_redundant_update"))


def test_list_functions(lam, create_function):
    t = "test_list_functions"
    base = unique()
    common = {"Handler": "handler.handler", "code": {"handler.py": ECHO}, "Timeout": 30,
              "Environment": {"Variables": {}}}
    one = create_function(FunctionName=base + "-1", Publish=True, **common)
    two = create_function(FunctionName=base + "-2", **common)
    assert_like(one, rec(t, "create_response_1")["CreateFunctionResponse"])
    assert_like(two, rec(t, "create_response_2")["CreateFunctionResponse"])
    with pytest.raises(ClientError) as exc:
        lam.list_functions(FunctionVersion="invalid")
    assert_like(exc.value.response, rec(t, "list_functions_invalid_functionversion"))

    def listed(**kwargs: Any) -> dict[str, Any]:
        pages = lam.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 2}, **kwargs)
        return {"Functions": [f for page in pages for f in page["Functions"] if f["FunctionName"].startswith(base)]}

    assert_like(listed(FunctionVersion="ALL"), rec(t, "list_all"))
    assert_like(listed(), rec(t, "list_default"))


@pytest.mark.parametrize("op", ["get_function", "get_function_configuration", "delete_function"])
def test_ops_with_arn_qualifier_mismatch(lam, op):
    t = f"test_ops_with_arn_qualifier_mismatch[{op}]"
    arn = "arn:aws:lambda:us-east-1:000000000000:function:some-function"
    with pytest.raises(ClientError) as exc:
        getattr(lam, op)(FunctionName=arn + ":1", Qualifier="$LATEST")
    assert_like(exc.value.response, rec(t, "not_match_exception"))
    with pytest.raises(ClientError) as exc:
        getattr(lam, op)(FunctionName=arn + ":$LATEST", Qualifier="$LATEST")
    assert_like(exc.value.response, rec(t, "match_exception"))


@pytest.mark.parametrize("op", ["get_function", "get_function_configuration"])
def test_ops_on_nonexisting_version(lam, create_function, op):
    name = create_function()["FunctionName"]
    with pytest.raises(ClientError) as exc:
        getattr(lam, op)(FunctionName=name, Qualifier="1221")
    expected = rec(f"test_ops_on_nonexisting_version[{op}]", "version_not_found_exception")
    assert_like(exc.value.response, json.loads(json.dumps(expected).replace("<fn-name>", name)))


def test_delete_on_nonexisting_version(lam, create_function):
    t = "test_delete_on_nonexisting_version"
    name = create_function()["FunctionName"]
    lam.delete_function(FunctionName=name, Qualifier="1233")  # a version that does not exist is already deleted
    lam.delete_function(FunctionName=name, Qualifier="1233")
    lam.delete_function(FunctionName=name)
    for key, kwargs in (("delete_function_response_non_existent", {}),
                        ("delete_function_response_non_existent_with_qualifier", {"Qualifier": "1233"})):
        with pytest.raises(ClientError) as exc:
            lam.delete_function(FunctionName=name, **kwargs)
        assert_like(exc.value.response, json.loads(json.dumps(rec(t, key)).replace("<fn-name>", name)))


# -- behaviour --------------------------------------------------------------------------------------
def test_published_versions_keep_their_code_and_configuration(lam, create_function):
    # Given version 1 published from code v1 and WHICH=one
    name = create_function(WHO.format(code="v1"), Environment={"Variables": {"WHICH": "one"}})["FunctionName"]
    v1 = lam.publish_version(FunctionName=name)
    v1.pop("ResponseMetadata")
    # When $LATEST gets new code and configuration
    lam.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": WHO.format(code="v2")}))
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"WHICH": "two"}}, Timeout=9)
    # Then version 1 still runs and shows what it was published with
    out, body = call(lam, name, "1")
    assert (body["code"], body["var"], body["version"], body["context_version"]) == ("v1", "one", "1", "1")
    assert out["ExecutedVersion"] == "1" and body["arn"].endswith(f":{name}:1")
    out, body = call(lam, name)
    assert (body["code"], body["var"], body["version"]) == ("v2", "two", "$LATEST")
    assert out["ExecutedVersion"] == "$LATEST" and body["arn"].endswith(f":{name}")
    config = lam.get_function_configuration(FunctionName=name, Qualifier="1")
    config.pop("ResponseMetadata")
    assert config == v1 and config["Timeout"] == 3
    # and a published version cannot be edited through a qualified name
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
        lam.update_function_configuration(FunctionName=f"{name}:1", Timeout=5)
    assert "versions other than $LATEST" in exc.value.response["Error"]["Message"]


def test_versions_never_share_environments(lam, create_function):
    name = create_function(WHO.format(code="v1"), Environment={"Variables": {"WHICH": "one"}})["FunctionName"]
    lam.publish_version(FunctionName=name)
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"WHICH": "two"}})
    lam.publish_version(FunctionName=name)
    _, first = call(lam, name, "1")
    _, second = call(lam, name, "2")
    assert (first["var"], second["var"]) == ("one", "two")
    assert first["env"] != second["env"]
    assert call(lam, name, "1")[1]["env"] == first["env"]  # each version keeps its own warm environment
    assert call(lam, name, "2")[1]["env"] == second["env"]


def test_warm_environment_of_a_version_survives_changes_to_latest(lam, create_function):
    name = create_function(WHO.format(code="v1"))["FunctionName"]
    lam.publish_version(FunctionName=name)
    _, before = call(lam, name, "1")
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"WHICH": "two"}})
    _, latest = call(lam, name)
    _, after = call(lam, name, "1")
    assert latest["var"] == "two" and latest["env"] != before["env"]
    assert after["env"] == before["env"]


def test_deleting_a_version(lam, create_function, server):
    # Given versions 1 (code A) and 2 (code B), and an alias on version 2
    zip_a, zip_b = make_zip({"app.py": WHO.format(code="a")}), make_zip({"app.py": WHO.format(code="b")})
    name = create_function(Code={"ZipFile": zip_a})["FunctionName"]
    lam.publish_version(FunctionName=name)
    lam.update_function_code(FunctionName=name, ZipFile=zip_b)
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="2")
    key_a = hashlib.sha256(zip_a).hexdigest()
    assert key_a in code_keys(server)
    # When version 1 is deleted, then only version 1 is gone, with the code no other version uses
    lam.delete_function(FunctionName=name, Qualifier="1")
    versions = lam.list_versions_by_function(FunctionName=name)["Versions"]
    assert [v["Version"] for v in versions] == ["$LATEST", "2"]
    deadline = time.monotonic() + 5  # unused code is removed in the code worker, right after the answer
    while key_a in code_keys(server) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert key_a not in code_keys(server) and hashlib.sha256(zip_b).hexdigest() in code_keys(server)
    for op in (lam.get_function_configuration, lam.invoke):
        with pytest.raises(lam.exceptions.ResourceNotFoundException):
            op(FunctionName=name, Qualifier="1")
    assert call(lam, name, "live")[1]["code"] == "b"
    # A version an alias points to cannot be deleted (AWS's ResourceConflictException)
    with pytest.raises(ClientError) as exc:
        lam.delete_function(FunctionName=name, Qualifier="2")
    assert exc.value.response["Error"] == {
        "Code": "ResourceConflictException",
        "Message": "Unable to delete version because the following aliases reference it: [live]"}
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409
    # Version numbers are never reused
    lam.update_function_configuration(FunctionName=name, Description="three")
    assert lam.publish_version(FunctionName=name)["Version"] == "3"


def test_qualifiers_through_arns(lam, create_function):
    fn = create_function(WHO.format(code="v1"), Publish=True)
    name, arn = fn["FunctionName"], fn["FunctionArn"]
    for ident, qualifier, version in ((f"{arn}:1", None, "1"), (f"{name}:1", None, "1"), (name, "1", "1"),
                                      (f"{arn}:$LATEST", "$LATEST", "$LATEST")):
        config = lam.get_function_configuration(FunctionName=ident, **({"Qualifier": qualifier} if qualifier else {}))
        assert config["Version"] == version and config["FunctionArn"] == f"{arn}:{version}"
        out = lam.invoke(FunctionName=ident, **({"Qualifier": qualifier} if qualifier else {}))
        assert out["ExecutedVersion"] == version and json.loads(out["Payload"].read())["version"] == version
    with pytest.raises(ClientError) as exc:
        lam.invoke(FunctionName=f"{arn}:1", Qualifier="$LATEST")
    assert exc.value.response["Error"] == {
        "Code": "InvalidParameterValueException",
        "Message": "The derived qualifier from the function name does not match the specified qualifier."}


def test_version_listeners_are_told_which_version_changed(tmp_path: Path):
    # The scheduler retires environments per version: an edit of $LATEST is (name, "$LATEST"),
    # deleting version 1 is (name, "1"), deleting the function is (name, None).
    store = FunctionStore(open_engine(tmp_path))
    functions = FunctionService(Settings(data_dir=str(tmp_path)), store, CodeStore(tmp_path / "code"), Runtimes(""))
    heard: list[tuple[str, str | None]] = []
    functions.version_listeners.append(lambda name, version: heard.append((name, version)))
    create = {"FunctionName": "f", "Runtime": "python3.12", "Role": ROLE, "Handler": "app.handler",
              "Code": {"ZipFile": make_zip({"app.py": ECHO})}}
    functions.create(create)
    assert heard == []
    functions.update_configuration({"FunctionName": "f", "Description": "x"})
    assert heard == [("f", "$LATEST")]
    functions.publish({"FunctionName": "f"})  # $LATEST gets a new RevisionId
    assert heard[-1] == ("f", "$LATEST")
    heard.clear()
    functions.delete({"FunctionName": "f", "Qualifier": "1"})
    assert heard == [("f", "1")]
    functions.delete({"FunctionName": "f"})
    assert heard == [("f", "1"), ("f", None)]
    store.engine.dispose()
