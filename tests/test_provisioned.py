"""Provisioned concurrency through boto3 against the real `kindling serve`, compared with AWS's recordings."""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import ROLE, Server, make_zip, unique
from tests.recorded import assert_like, recorded

ECHO = "def handler(event, context):\n    return event\n"
# How the environment serving an invoke was initialized; INIT_SLEEP makes init take that long.
INTROSPECT = '''
import os, time
time.sleep(float(os.environ.get("INIT_SLEEP", "0")))
def handler(event, context):
    time.sleep(event.get("sleep", 0))
    return {"init": os.environ["AWS_LAMBDA_INITIALIZATION_TYPE"], "version": os.environ["AWS_LAMBDA_FUNCTION_VERSION"]}
'''
# The function AWS's recorded tests create (TEST_LAMBDA_PYTHON_ECHO)
AS_RECORDED: dict[str, Any] = {"code": {"handler.py": ECHO}, "Handler": "handler.handler", "Timeout": 30,
                               "Environment": {"Variables": {}}}
READY_WITHIN = 20.0


def api(test: str, key: str) -> Any:
    return recorded("lambda_api", test, key)


def behavior(test: str, key: str) -> Any:
    return recorded("lambda_behavior", test, key)


def wait_done(lam: Any, name: str, qualifier: str) -> dict[str, Any]:
    """GetProvisionedConcurrencyConfig once it is no longer IN_PROGRESS (bounded)."""
    deadline = time.monotonic() + READY_WITHIN
    while True:
        out: dict[str, Any] = lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=qualifier)
        if out["Status"] != "IN_PROGRESS" or time.monotonic() > deadline:
            return out
        time.sleep(0.05)


def init_type(lam: Any, name: str, qualifier: str | None = None) -> tuple[str, str]:
    """(AWS_LAMBDA_INITIALIZATION_TYPE, REPORT line) of one invoke."""
    out = lam.invoke(FunctionName=name, LogType="Tail", **({"Qualifier": qualifier} if qualifier else {}))
    body = json.loads(out["Payload"].read())
    assert "FunctionError" not in out, body
    report = next(line for line in base64.b64decode(out["LogResult"]).decode().splitlines()
                  if line.startswith("REPORT"))
    return body["init"], report


def error(call: Any) -> dict[str, Any]:
    with pytest.raises(ClientError) as exc:
        call()
    return dict(exc.value.response)


def invoked(out: dict[str, Any]) -> dict[str, Any]:
    """An Invoke answer as the recordings keep it: the payload parsed."""
    return {**out, "Payload": json.loads(out["Payload"].read())}


# -- AWS's recorded API tests -----------------------------------------------------------------------
def test_provisioned_concurrency_exceptions(server, lam, create_function):
    t = "test_provisioned_concurrency_exceptions"
    name = create_function(**AS_RECORDED)["FunctionName"]
    publish = lam.publish_version(FunctionName=name)
    assert_like(publish, api(t, "publish_version_result"))
    version = publish["Version"]
    get, put, delete = (lam.get_provisioned_concurrency_config, lam.put_provisioned_concurrency_config,
                        lam.delete_provisioned_concurrency_config)
    for key, call in [
        ("get_provisioned_config_doesnotexist", lambda: get(FunctionName=name, Qualifier=version)),
        ("get_provisioned_functionname_doesnotexist", lambda: get(FunctionName="doesnotexist", Qualifier="noalias")),
        ("get_provisioned_qualifier_doesnotexist", lambda: get(FunctionName=name, Qualifier="noalias")),
        ("get_provisioned_version_doesnotexist", lambda: get(FunctionName=name, Qualifier="10")),
        ("get_provisioned_latest", lambda: get(FunctionName=name, Qualifier="$LATEST")),
        ("list_provisioned_functionname_doesnotexist",
         lambda: lam.list_provisioned_concurrency_configs(FunctionName="doesnotexist")),
        ("delete_provisioned_functionname_doesnotexist", lambda: delete(FunctionName="doesnotexist", Qualifier="1")),
        ("delete_provisioned_qualifier_doesnotexist", lambda: delete(FunctionName=name, Qualifier="noalias")),
        ("delete_provisioned_version_doesnotexist", lambda: delete(FunctionName=name, Qualifier="10")),
        ("delete_provisioned_latest", lambda: delete(FunctionName=name, Qualifier="$LATEST")),
        ("put_provisioned_functionname_doesnotexist_alias",
         lambda: put(FunctionName="doesnotexist", Qualifier="noalias", ProvisionedConcurrentExecutions=1)),
        ("put_provisioned_functionname_doesnotexist_version",
         lambda: put(FunctionName="doesnotexist", Qualifier="1", ProvisionedConcurrentExecutions=1)),
        ("put_provisioned_qualifier_doesnotexist",
         lambda: put(FunctionName=name, Qualifier="doesnotexist", ProvisionedConcurrentExecutions=1)),
        ("put_provisioned_version_doesnotexist",
         lambda: put(FunctionName=name, Qualifier="10", ProvisionedConcurrentExecutions=1)),
        ("put_provisioned_latest", lambda: put(FunctionName=name, Qualifier="$LATEST",
                                               ProvisionedConcurrentExecutions=1)),
    ]:
        assert_like(error(call), api(t, key), key)
    assert_like(lam.list_provisioned_concurrency_configs(FunctionName=name), api(t, "list_provisioned_noconfigs"))
    assert_like(delete(FunctionName=name, Qualifier=version), api(t, "delete_provisioned_config_doesnotexist"))
    unchecked = server.client(parameter_validation=False)  # the server's own validation answers
    assert_like(error(lambda: unchecked.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=0)),
        api(t, "put_provisioned_invalid_param_0"))


def test_lambda_provisioned_lifecycle(lam, create_function):
    t = "test_lambda_provisioned_lifecycle"
    name = create_function(**AS_RECORDED)["FunctionName"]
    publish = lam.publish_version(FunctionName=name)
    assert_like(publish, api(t, "publish_version_result"))
    version, alias = publish["Version"], unique("alias")
    assert_like(lam.create_alias(FunctionName=name, Name=alias, FunctionVersion=version),
                api(t, "create_alias_result"))
    # Given a config on the version, the alias pointing at it cannot have one
    assert_like(lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=version,
                                                       ProvisionedConcurrentExecutions=1),
                api(t, "put_provisioned_on_version"))
    assert_like(error(lambda: lam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier=alias, ProvisionedConcurrentExecutions=1)),
        api(t, "put_provisioned_on_alias_versionconflict"))
    assert wait_done(lam, name, version)["Status"] == "READY"
    assert_like(lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier=version),
                api(t, "delete_provisioned_version"))
    assert_like(error(lambda: lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=version)),
                api(t, "get_provisioned_version_postdelete"))
    # and the other way round
    assert_like(lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=alias,
                                                       ProvisionedConcurrentExecutions=1),
                api(t, "put_provisioned_on_alias"))
    assert_like(error(lambda: lam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=1)),
        api(t, "put_provisioned_on_version_conflict"))
    listed = lam.list_provisioned_concurrency_configs(FunctionName=name)["ProvisionedConcurrencyConfigs"]
    assert [c["FunctionArn"] for c in listed] == [lam.get_alias(FunctionName=name, Name=alias)["AliasArn"]]
    # When the alias is deleted, its config goes with it
    assert_like(lam.delete_alias(FunctionName=name, Name=alias), api(t, "delete_alias_result"))
    assert_like(error(lambda: lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=alias)),
                api(t, "get_provisioned_alias_postaliasdelete"))
    assert_like(lam.list_provisioned_concurrency_configs(FunctionName=name), api(t, "list_response_postdeletes"))


def test_provisioned_concurrency_limits(lam, create_function):
    t = "test_provisioned_concurrency_limits"
    name = create_function(**AS_RECORDED)["FunctionName"]
    version = lam.publish_version(FunctionName=name)["Version"]
    limits = lam.get_account_settings()["AccountLimit"]
    unreserved = limits["UnreservedConcurrentExecutions"]
    too_many = error(lambda: lam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=limits["ConcurrentExecutions"] + 1))
    assert_like(too_many, api(t, "put_provisioned_concurrency_account_limit_exceeded"))
    assert f"[{unreserved}]" in too_many["message"]
    below_minimum = error(lambda: lam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=limits["ConcurrentExecutions"]))
    assert_like(below_minimum, api(t, "put_provisioned_concurrency_below_unreserved_min_value"))
    assert "[100]" in below_minimum["message"]
    with pytest.raises(lam.exceptions.ProvisionedConcurrencyConfigNotFoundException):
        lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=version)


# -- behaviour --------------------------------------------------------------------------------------
def test_environments_are_initialized_before_the_first_invoke(lam, create_function):
    # Given provisioned concurrency 2 on version 1
    name = create_function(INTROSPECT)["FunctionName"]
    version = lam.publish_version(FunctionName=name)["Version"]
    put = lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=version,
                                                 ProvisionedConcurrentExecutions=2)
    overlap = "test_reserved_provisioned_overlap"  # AWS's recording of provisioned concurrency 2 on a version
    assert_like(put, behavior(overlap, "put_provisioned_5"))
    # When it is READY
    assert_like(wait_done(lam, name, version), behavior(overlap, "get_provisioned_postwait"))
    # Then invokes of the version run in environments initialized ahead: no Init Duration
    for _ in range(2):
        kind, report = init_type(lam, name, version)
        assert kind == "provisioned-concurrency"
        assert "Init Duration" not in report
    # while $LATEST still starts on demand
    kind, report = init_type(lam, name)
    assert kind == "on-demand" and "Init Duration" in report
    # and provisioned concurrency of a function without a reservation leaves the unreserved pool
    assert lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == 998
    # When the config is deleted, the version is on demand again
    lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier=version)
    kind, report = init_type(lam, name, version)
    assert kind == "on-demand" and "Init Duration" in report
    assert lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == 1000


def test_reserved_concurrency_holds_the_provisioned(lam, create_function):
    t = "test_lambda_concurrency_block"
    name = create_function(**AS_RECORDED)["FunctionName"]
    v1 = lam.publish_version(FunctionName=name)["Version"]
    assert_like(lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1),
                behavior(t, "reserved_concurrency_result"))
    hello = json.dumps({"hello": "world"})
    assert_like(invoked(lam.invoke(FunctionName=name, Qualifier="$LATEST", Payload=hello)),
                behavior(t, "invoke_latest_before_block"))
    # Given reserved concurrency 1, all of it provisioned for version 1
    assert_like(lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=v1,
                                                       ProvisionedConcurrentExecutions=1),
                behavior(t, "provisioned_concurrency_result"))
    assert wait_done(lam, name, v1)["Status"] == "READY"
    # Then nothing is left for $LATEST, while version 1 still answers
    assert_like(error(lambda: lam.invoke(FunctionName=name, Qualifier="$LATEST", Payload=hello)),
                behavior(t, "invoke_latest_first_exc"))
    assert_like(invoked(lam.invoke(FunctionName=name, Qualifier=v1, Payload=hello)),
                behavior(t, "invoke_v1_after_block"))
    assert_like(error(lambda: lam.invoke(FunctionName=name, Qualifier="$LATEST", Payload=hello)),
                behavior(t, "invoke_latest_second_exc"))
    # and the reservation must keep holding it (test_reserved_provisioned_overlap)
    overlap = "test_reserved_provisioned_overlap"
    assert lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == 999
    lam.update_function_configuration(FunctionName=name, Timeout=15)
    v2 = lam.publish_version(FunctionName=name)["Version"]
    assert_like(error(lambda: lam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier=v2, ProvisionedConcurrentExecutions=1)),
        behavior(overlap, "reserved_equals_provisioned_another_provisioned_exc"))
    assert_like(error(lambda: lam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier=v1, ProvisionedConcurrentExecutions=2)),
        behavior(overlap, "reserved_equals_provisioned_increase_provisioned_exc"))
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=v1, ProvisionedConcurrentExecutions=1)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=2)
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=v1, ProvisionedConcurrentExecutions=2)
    lowered = error(lambda: lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1))
    assert_like(lowered, behavior(overlap, "reserved_lower_than_provisioned_exc"))
    assert_like(lam.get_function_concurrency(FunctionName=name), behavior(overlap, "get_concurrency"))


def test_init_failure_is_reported(lam, create_function):
    name = create_function("raise RuntimeError('init failed')\ndef handler(event, context):\n    return 1\n")[
        "FunctionName"]
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=1)
    assert_like(wait_done(lam, name, version),
                behavior("test_provisioned_concurrency_init_failure", "get_provisioned_postwait"))


def test_provisioned_concurrency_moves_with_alias(lam, create_function):
    t = "test_lambda_provisioned_concurrency_moves_with_alias"
    name = create_function(INTROSPECT, Timeout=2)["FunctionName"]
    v1 = lam.publish_version(FunctionName=name)["Version"]
    assert init_type(lam, name, v1)[0] == "on-demand"
    alias = unique("alias")
    lam.create_alias(FunctionName=name, FunctionVersion=v1, Name=alias)
    # Given provisioned concurrency on an alias: its version's environments are provisioned
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=alias, ProvisionedConcurrentExecutions=1)
    assert wait_done(lam, name, alias)["Status"] == "READY"
    assert init_type(lam, name, v1)[0] == "provisioned-concurrency"  # the version's own invokes too
    assert init_type(lam, name, alias)[0] == "provisioned-concurrency"
    # When the alias moves to a new version (whose init takes a while)
    lam.update_function_configuration(FunctionName=name, Timeout=10, Environment={"Variables": {"INIT_SLEEP": "1"}})
    v2 = lam.publish_version(FunctionName=name)["Version"]
    lam.update_alias(FunctionName=name, FunctionVersion=v2, Name=alias)
    # Then the old environment serves until the new one is ready, and the config moves with the alias
    assert_like(lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=alias),
                behavior(t, "get_provisioned_config_after_alias_move"))
    assert wait_done(lam, name, alias)["Status"] == "READY"
    assert init_type(lam, name, v2)[0] == "provisioned-concurrency"
    assert init_type(lam, name, v1)[0] == "on-demand"  # its provisioned environment went with the move
    assert init_type(lam, name, alias)[0] == "provisioned-concurrency"
    assert_like(error(lambda: lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=v2)),
                behavior(t, "provisioned_concurrency_notfound"))
    lam.delete_alias(FunctionName=name, Name=alias)
    lam.delete_function(FunctionName=name, Qualifier=v1)  # its environments were retired with the move
    assert lam.list_provisioned_concurrency_configs(FunctionName=name)["ProvisionedConcurrencyConfigs"] == []


def test_changes_while_in_progress_converge(lam, create_function):
    name = create_function(INTROSPECT, Environment={"Variables": {"INIT_SLEEP": "0.3"}})["FunctionName"]
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=1)
    # When the count changes while the first environments are still initializing
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=3)
    # Then the last count wins
    done = wait_done(lam, name, version)
    assert (done["Status"], done["AvailableProvisionedConcurrentExecutions"]) == ("READY", 3)
    # and lowering it keeps what was ready
    put = lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=version,
                                                 ProvisionedConcurrentExecutions=2)
    assert put["AvailableProvisionedConcurrentExecutions"] == 2
    done = wait_done(lam, name, version)
    assert (done["Status"], done["AvailableProvisionedConcurrentExecutions"]) == ("READY", 2)


def test_a_provisioned_environment_that_died_is_replaced(lam, create_function):
    name = create_function(INTROSPECT, Timeout=1)["FunctionName"]
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=1)
    assert wait_done(lam, name, version)["Status"] == "READY"
    # When the provisioned environment is destroyed (an invoke timed out)
    out = lam.invoke(FunctionName=name, Qualifier=version, Payload=b'{"sleep": 3}')
    assert out["FunctionError"] == "Unhandled"
    # Then a new one is initialized ahead again
    deadline = time.monotonic() + READY_WITHIN
    while lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=version)[
            "AvailableProvisionedConcurrentExecutions"] < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert init_type(lam, name, version)[0] == "provisioned-concurrency"


def test_provisioned_environments_outlive_the_reaper(tmp_path: Path):
    # Given a reaper that runs every 0.1 s (it drops pools with nothing idle) and an init that takes 1 s
    srv = Server(tmp_path / "data", keep_alive="0.4").start()
    try:
        lam = srv.client()
        lam.create_function(FunctionName="slow", Runtime="python3.12", Role=ROLE, Handler="app.handler",
                            Code={"ZipFile": make_zip({"app.py": INTROSPECT})}, Publish=True,
                            Environment={"Variables": {"INIT_SLEEP": "1"}})
        # When provisioned concurrency is READY
        lam.put_provisioned_concurrency_config(FunctionName="slow", Qualifier="1", ProvisionedConcurrentExecutions=1)
        assert wait_done(lam, "slow", "1")["Status"] == "READY"
        # Then the first invoke is served by the provisioned environment
        assert init_type(lam, "slow", "1")[0] == "provisioned-concurrency"
    finally:
        srv.stop()


def test_deleted_version_takes_its_config(lam, create_function):
    name = create_function(INTROSPECT)["FunctionName"]
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=3)
    assert lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == 997
    lam.delete_function(FunctionName=name, Qualifier=version)
    assert lam.list_provisioned_concurrency_configs(FunctionName=name)["ProvisionedConcurrencyConfigs"] == []
    assert lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == 1000


def test_configs_survive_a_restart(tmp_path: Path):
    srv = Server(tmp_path / "data").start()
    try:
        lam = srv.client()
        lam.create_function(FunctionName="warm", Runtime="python3.12", Role=ROLE, Handler="app.handler",
                            Code={"ZipFile": make_zip({"app.py": INTROSPECT})}, Publish=True)
        lam.put_provisioned_concurrency_config(FunctionName="warm", Qualifier="1", ProvisionedConcurrentExecutions=2)
        assert wait_done(lam, "warm", "1")["Status"] == "READY"
        srv.stop()
        # When the server starts again
        srv.start()
        lam = srv.client()
        # Then the stored config is provisioned again before any invoke
        done = wait_done(lam, "warm", "1")
        assert (done["Status"], done["AvailableProvisionedConcurrentExecutions"]) == ("READY", 2)
        kind, report = init_type(lam, "warm", "1")
        assert kind == "provisioned-concurrency" and "Init Duration" not in report
        assert lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == 998
    finally:
        srv.stop()


def test_provisioned_utilization_metric(server, lam, create_function):
    from tests.test_metrics import scrape, value

    name = create_function(INTROSPECT, Timeout=10)["FunctionName"]
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=2)
    assert wait_done(lam, name, version)["Status"] == "READY"
    assert value(scrape(server), "kindling_provisioned_concurrency_utilization", function=name, version=version) == 0
    done = threading.Thread(target=lam.invoke, kwargs={"FunctionName": name, "Qualifier": version,
                                                       "Payload": b'{"sleep": 1}'})
    done.start()
    time.sleep(0.4)
    busy = value(scrape(server), "kindling_provisioned_concurrency_utilization", function=name, version=version)
    done.join()
    assert busy == 0.5  # one of the two provisioned environments
