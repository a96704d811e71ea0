"""Control-plane fidelity (issue 13): function states and update status, boto3's waiters, AWS's validation messages,
Architectures. boto3 against the real server, compared with the AWS recordings where they exist; the state machine's
in-between states (which the server passes through in milliseconds) are also checked in process, on the real store.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, WaiterError

from kindling.functions import architecture
from kindling.functions.service import FunctionService
from kindling.functions.updates import UpdateFailed
from kindling.runtimes.registry import Runtimes
from kindling.settings import Settings
from kindling.store.code import CodeStore
from kindling.store.db import open_engine
from kindling.store.functions import FunctionStore
from tests.adversarial import Bystander
from tests.conftest import ROLE, Server, make_zip, unique
from tests.recorded import assert_like, recorded

FAST = {"Delay": 1, "MaxAttempts": 5}  # waiters poll every second; every state here settles before the first poll
CODE = 'def handler(event, context):\n    return {"code": "%s"}\n'
IN_PROGRESS = "The operation cannot be performed at this time. An update is in progress for resource: {arn}"


def _zip(tag: str) -> bytes:
    return make_zip({"handler.py": CODE % tag})


def _error(exc: pytest.ExceptionInfo[ClientError]) -> dict[str, Any]:
    return dict(exc.value.response["Error"])


@pytest.fixture
def fn(lam) -> Iterator[dict[str, Any]]:  # noqa: ANN001
    """A python3.12 function made as AWS's recorded tests make theirs; deleted afterwards."""
    name = unique("fid")
    out = lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="handler.handler",
                              Code={"ZipFile": _zip("one")})
    yield out
    try:
        lam.delete_function(FunctionName=name)
    except ClientError:
        pass


def _invoke(lam: Any, name: str, qualifier: str | None = None) -> str:
    out = lam.invoke(FunctionName=name, **({"Qualifier": qualifier} if qualifier else {}))
    return str(json.loads(out["Payload"].read())["code"])


# -- states and waiters, through boto3 ----------------------------------------------------------------------
def test_create_answers_pending_and_becomes_active(lam, fn) -> None:  # noqa: ANN001
    # Given a function just created, its answer is AWS's (State Pending, reason Creating)
    assert_like(fn, recorded("lambda_api", "test_lambda_concurrent_code_updates", "create-function-response"))
    # When waited for with boto3's waiters, then it is Active and Successful, with another RevisionId
    lam.get_waiter("function_active").wait(FunctionName=fn["FunctionName"], WaiterConfig=FAST)
    lam.get_waiter("function_active_v2").wait(FunctionName=fn["FunctionName"], WaiterConfig=FAST)
    lam.get_waiter("function_exists").wait(FunctionName=fn["FunctionName"], WaiterConfig=FAST)
    config = lam.get_function_configuration(FunctionName=fn["FunctionName"])
    assert (config["State"], config["LastUpdateStatus"]) == ("Active", "Successful")
    assert "StateReason" not in config and "LastUpdateStatusReason" not in config
    assert config["RevisionId"] != fn["RevisionId"]
    assert _invoke(lam, fn["FunctionName"]) == "one"


def test_updates_answer_in_progress_and_complete(lam, fn) -> None:  # noqa: ANN001
    name = fn["FunctionName"]
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig=FAST)
    # When the configuration is updated, the answer is InProgress with AWS's reason, as recorded
    update = lam.update_function_configuration(FunctionName=name, Description="two", MemorySize=256)
    recorded_update = recorded("lambda_api", "test_function_lifecycle", "update_func_conf_response")
    for key in ("State", "LastUpdateStatus", "LastUpdateStatusReason", "LastUpdateStatusReasonCode"):
        assert update[key] == recorded_update[key]
    # Then boto3's waiters see it Successful, under a RevisionId of its own
    lam.get_waiter("function_updated").wait(FunctionName=name, WaiterConfig=FAST)
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig=FAST)
    got = lam.get_function(FunctionName=name)["Configuration"]
    assert (got["LastUpdateStatus"], got["Description"], got["MemorySize"]) == ("Successful", "two", 256)
    assert "LastUpdateStatusReason" not in got and got["RevisionId"] != update["RevisionId"]
    # And the same for the code: the new code runs once the update is done
    code = lam.update_function_code(FunctionName=name, ZipFile=_zip("two"))
    assert (code["LastUpdateStatus"], code["LastUpdateStatusReasonCode"]) == ("InProgress", "Creating")
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig=FAST)
    assert _invoke(lam, name) == "two"


def test_published_versions_pending_then_active(lam, fn) -> None:  # noqa: ANN001
    name = fn["FunctionName"]
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig=FAST)
    # PublishVersion answers the version Active (recorded: test_version_lifecycle first_publish_response)
    first = lam.publish_version(FunctionName=name)
    assert (first["State"], first["LastUpdateStatus"]) == ("Active", "Successful")
    # UpdateFunctionCode with Publish answers the new version Pending (recorded: test_publish_with_update)
    published = lam.update_function_code(FunctionName=name, ZipFile=_zip("two"), Publish=True)
    expected = recorded("lambda_api", "test_publish_with_update", "update_function_code_result")
    assert {k: published.get(k) for k in ("State", "StateReason", "StateReasonCode", "LastUpdateStatus")} == \
        {k: expected.get(k) for k in ("State", "StateReason", "StateReasonCode", "LastUpdateStatus")}
    version = published["Version"]
    lam.get_waiter("published_version_active").wait(FunctionName=name, Qualifier=version, WaiterConfig=FAST)
    assert lam.get_function_configuration(FunctionName=name, Qualifier=version)["State"] == "Active"
    assert _invoke(lam, name, version) == "two" and _invoke(lam, name, "1") == "one"


def test_create_with_publish_answers_the_version(lam) -> None:  # noqa: ANN001
    name = unique("fid")
    out = lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="handler.handler",
                              Code={"ZipFile": _zip("one")}, Publish=True)
    try:
        expected = recorded("lambda_api", "test_publish_version_on_create", "create_response")
        for key in ("State", "StateReason", "StateReasonCode", "Version"):
            assert out[key] == expected[key]
        assert "LastUpdateStatus" not in out and "LastUpdateStatus" not in expected
        lam.get_waiter("published_version_active").wait(FunctionName=name, Qualifier="1", WaiterConfig=FAST)
        assert _invoke(lam, name, "1") == "one"
    finally:
        lam.delete_function(FunctionName=name)


def test_concurrent_updates_conflict_or_serialize_never_fail(lam, fn) -> None:  # noqa: ANN001
    # Given a function, when 8 threads update it at once, then each answer is an InProgress update or AWS's
    # ResourceConflictException (recorded message), never another error, and the winner's change is kept
    name, arn = fn["FunctionName"], fn["FunctionArn"]
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig=FAST)
    results: list[Any] = [None] * 8
    start = threading.Barrier(len(results))

    def update(i: int) -> None:
        client = lam  # botocore clients are thread-safe
        start.wait()
        try:
            results[i] = client.update_function_configuration(FunctionName=name, Description=f"d{i}")
        except ClientError as exc:
            results[i] = exc

    threads = [threading.Thread(target=update, args=(i,)) for i in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    won = [r for r in results if isinstance(r, dict)]
    lost = [r for r in results if isinstance(r, ClientError)]
    assert len(won) + len(lost) == len(results) and won
    recorded_exc = recorded("lambda_api", "test_lambda_concurrent_code_updates", "update-during-in-progress-update-exc")
    for exc in lost:
        assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 409
        assert_like(exc.response["Error"], recorded_exc["Error"])
        assert exc.response["Error"]["Message"] == IN_PROGRESS.format(arn=arn)
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig=FAST)
    final = lam.get_function_configuration(FunctionName=name)
    assert final["Description"] in {r["Description"] for r in won} and final["LastUpdateStatus"] == "Successful"


# -- the in-between states, in process on the real store (the server passes them in milliseconds) -----------
@pytest.fixture
def service(tmp_path: Path) -> Iterator[FunctionService]:
    store = FunctionStore(open_engine(tmp_path))
    yield FunctionService(Settings(data_dir=str(tmp_path)), store, CodeStore(tmp_path / "code"), Runtimes(""))
    store.engine.dispose()


def _create(service: FunctionService, name: str = "f") -> dict[str, Any]:
    return service.create({"FunctionName": name, "Runtime": "python3.12", "Role": ROLE, "Handler": "handler.handler",
                           "Code": {"ZipFile": _zip("one")}})


def test_in_progress_refuses_a_second_update_and_invokes_run_the_old_code(service: FunctionService) -> None:
    _create(service)  # no event loop: settles at once

    async def scenario() -> None:
        first = await service.update_code_async({"FunctionName": "f", "ZipFile": _zip("two")})
        assert first["LastUpdateStatus"] == "InProgress"
        # While it is in progress: AWS's conflict for a second update or a publish, and invokes run the old code
        for attempt in (lambda: service.update_configuration({"FunctionName": "f", "Description": "x"}),
                        lambda: service.publish({"FunctionName": "f"})):
            with pytest.raises(Exception) as exc:
                attempt()
            assert type(exc.value).__name__ == "ResourceConflictException"
            assert exc.value.message == IN_PROGRESS.format(arn=service.arn("f"))  # type: ignore[attr-defined]
        running = service.runnable("f", "$LATEST")
        assert running is not None and running.config["CodeSha256"] != first["CodeSha256"]
        assert running.config["LastUpdateStatus"] == "Successful"
        await asyncio.sleep(0.05)  # the background task settles it
        done = service.store.get("f")
        assert done is not None and done.config["LastUpdateStatus"] == "Successful"
        assert service.runnable("f", "$LATEST") == done and done.config["CodeSha256"] == first["CodeSha256"]
        await service.updates.stop()

    asyncio.run(scenario())
    service.code_worker.close()


def test_a_failed_update_keeps_running_the_last_successful_configuration(service: FunctionService) -> None:
    created = _create(service)

    def refuse(rec: Any) -> None:
        raise UpdateFailed("The image could not be pulled.", "ImageAccessDenied")

    async def scenario() -> None:
        service.updates.preparers.append(refuse)  # what a slower part (e.g. an image pull) may do
        service.update_configuration({"FunctionName": "f", "Description": "broken"})
        await asyncio.sleep(0.05)
        rec = service.store.get("f")
        assert rec is not None
        assert (rec.config["State"], rec.config["LastUpdateStatus"]) == ("Active", "Failed")
        assert (rec.config["LastUpdateStatusReason"], rec.config["LastUpdateStatusReasonCode"]) == \
            ("The image could not be pulled.", "ImageAccessDenied")
        running = service.runnable("f", "$LATEST")
        assert running is not None and running.config["Description"] == "" and \
            running.config["CodeSha256"] == created["CodeSha256"]
        # a later update that succeeds replaces it
        service.updates.preparers.clear()
        service.update_configuration({"FunctionName": "f", "Description": "fixed"})
        await asyncio.sleep(0.05)
        running = service.runnable("f", "$LATEST")
        assert running is not None and running.config["Description"] == "fixed"
        assert running.config["LastUpdateStatus"] == "Successful"
        assert "LastUpdateStatusReason" not in running.config
        await service.updates.stop()

    asyncio.run(scenario())
    service.code_worker.close()


def test_a_pending_function_cannot_be_invoked_or_updated(service: FunctionService) -> None:
    async def scenario() -> None:
        await service.create_async({"FunctionName": "f", "Runtime": "python3.12", "Role": ROLE,
                                    "Handler": "handler.handler", "Code": {"ZipFile": _zip("one")}})
        pending = "The operation cannot be performed at this time. The function is currently in the following " \
                  "state: Pending"
        for attempt in (lambda: service.runnable("f", "$LATEST"),
                        lambda: service.update_configuration({"FunctionName": "f", "Description": "x"})):
            with pytest.raises(Exception) as exc:
                attempt()
            assert exc.value.message == pending  # type: ignore[attr-defined]
        await asyncio.sleep(0.05)
        assert service.runnable("f", "$LATEST") is not None
        await service.updates.stop()

    asyncio.run(scenario())
    service.code_worker.close()


# -- a restart mid-update finishes it ---------------------------------------------------------------------
def _rewrite_latest(db: Path, name: str, change: dict[str, Any], code_key: str | None = None) -> dict[str, Any]:
    """What a Kindling stopped mid-update leaves in its database: $LATEST InProgress (and its last successful
    configuration kept for invokes)."""
    with sqlite3.connect(db) as conn:
        config, key = conn.execute("SELECT config, code_key FROM versions WHERE function_name=? AND "
                                   "version='$LATEST'", (name,)).fetchone()
        before = json.loads(config)
        after = {**before, **change, "LastUpdateStatus": "InProgress",
                 "LastUpdateStatusReason": "The function is being created.", "LastUpdateStatusReasonCode": "Creating"}
        conn.execute("UPDATE versions SET config=?, code_key=? WHERE function_name=? AND version='$LATEST'",
                     (json.dumps(after), code_key or key, name))
        conn.execute("INSERT INTO last_successful VALUES (?, '$LATEST', ?, ?)", (name, config, key))
    return before


def test_a_restart_mid_update_finishes_it() -> None:
    with tempfile.TemporaryDirectory(prefix="kindling-fidelity-") as tmp:
        server = Server(Path(tmp) / "data").start()
        try:
            lam = server.client()
            for name in ("ok", "broken"):
                lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="handler.handler",
                                    Code={"ZipFile": _zip(name)})
                lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig=FAST)
            server.stop()
            # Given one update left in progress that can complete, and one whose code is gone from the store
            _rewrite_latest(Path(tmp) / "data" / "kindling.db", "ok", {"Description": "after restart"})
            _rewrite_latest(Path(tmp) / "data" / "kindling.db", "broken", {"Description": "lost"}, "0" * 64)
            # When Kindling starts again
            server.start()
            lam = server.client()
            # Then the first is Successful, the second Failed with a reason, still running its last configuration
            lam.get_waiter("function_updated_v2").wait(FunctionName="ok", WaiterConfig=FAST)
            assert lam.get_function_configuration(FunctionName="ok")["Description"] == "after restart"
            assert _invoke(lam, "ok") == "ok"
            with pytest.raises(WaiterError):
                lam.get_waiter("function_updated_v2").wait(FunctionName="broken", WaiterConfig=FAST)
            broken = lam.get_function_configuration(FunctionName="broken")
            assert (broken["State"], broken["LastUpdateStatus"]) == ("Active", "Failed")
            assert broken["LastUpdateStatusReasonCode"] == "InvalidZipFileException"
            assert _invoke(lam, "broken") == "broken"
            # and a new update of it succeeds
            lam.update_function_code(FunctionName="broken", ZipFile=_zip("mended"))
            lam.get_waiter("function_updated_v2").wait(FunctionName="broken", WaiterConfig=FAST)
            assert _invoke(lam, "broken") == "mended"
        finally:
            server.stop()


# -- validation, with AWS's recorded answers ---------------------------------------------------------------
def _recorded_errors(case: str, key: str) -> dict[str, Any]:
    return dict(recorded("lambda_api", f"test_function_name_and_qualifier_validation[{case}]", key))


def test_function_name_over_64_characters(lam) -> None:  # noqa: ANN001
    name = "a" * 65
    with pytest.raises(ClientError) as exc:
        lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="handler.handler",
                            Code={"ZipFile": _zip("one")})
    expected = _recorded_errors("function_name_too_long-create_function", "create_function_exception")
    errors = [e.replace("<a:len(65)>", name) for e in expected["Errors"]]
    assert _error(exc) == {"Code": expected["Code"],
                           "Message": f"{expected['Count']} validation error detected: {'; '.join(errors)}"}
    with pytest.raises(ClientError) as exc:
        lam.get_function(FunctionName=name)
    assert_like(_error(exc), _recorded_errors("function_name_too_long-get_function", "get_function_exception"))


INCOMPLETE = {
    "incomplete_arn": "arn:aws:lambda:us-east-1:000000000000:function",
    "qualifier_too_long1": "arn:aws:lambda:us-east-1:000000000000:function:my-function:" + "a" * 65,
    "function_name_and_qualifier_too_long": "my-function:" + "a" * 65,
    "function_name_too_long": "a" * 65,
}
CALLS = {"get_function": lambda lam, ident: lam.get_function(FunctionName=ident),
         "delete_function": lambda lam, ident: lam.delete_function(FunctionName=ident),
         "invoke": lambda lam, ident: lam.invoke(FunctionName=ident)}


@pytest.mark.parametrize("op", CALLS)
@pytest.mark.parametrize("case", INCOMPLETE)
def test_incomplete_and_partial_arns_name_the_parsed_function(lam, case: str, op: str) -> None:  # noqa: ANN001
    with pytest.raises(ClientError) as exc:
        CALLS[op](lam, INCOMPLETE[case])
    expected = _recorded_errors(f"{case}-{op}", f"{op.split('_')[0]}_function_exception" if op != "invoke"
                                else "invoke_exception")
    assert_like(_error(exc), {**expected, "Message": expected["Message"].replace("<a:len(65)>", "a" * 65)})


def test_more_than_50_tags(lam, fn) -> None:  # noqa: ANN001
    too_many = {f"k{i}": "v" for i in range(51)}
    expected = recorded("lambda_api", "test_tag_limits", "tag_lambda_too_many_tags")
    with pytest.raises(ClientError) as exc:
        lam.create_function(FunctionName=unique("fid"), Runtime="python3.12", Role=ROLE, Handler="handler.handler",
                            Code={"ZipFile": _zip("one")}, Tags=too_many)
    assert_like(_error(exc), expected["Error"])
    with pytest.raises(ClientError) as exc:
        lam.tag_resource(Resource=fn["FunctionArn"], Tags=too_many)
    assert_like(_error(exc), expected["Error"])
    lam.tag_resource(Resource=fn["FunctionArn"], Tags={f"k{i}": "v" for i in range(50)})  # 50 is fine


def test_invalid_runtime_lists_aws_runtimes(lam, fn) -> None:  # noqa: ANN001
    with pytest.raises(ClientError) as exc:
        lam.create_function(FunctionName=unique("fid"), Runtime="non-existent-runtime", Role=ROLE,
                            Handler="handler.handler", Code={"ZipFile": _zip("one")})
    assert_like(_error(exc), recorded("lambda_api", "test_create_lambda_exceptions", "invalid_runtime_exc")["Error"])
    lam.get_waiter("function_active_v2").wait(FunctionName=fn["FunctionName"], WaiterConfig=FAST)
    with pytest.raises(ClientError) as exc:
        lam.update_function_configuration(FunctionName=fn["FunctionName"], Runtime="non-existent-runtime")
    assert_like(_error(exc), recorded("lambda_api", "test_update_lambda_exceptions", "invalid_runtime_exc")["Error"])


def test_tag_and_untag_change_the_revision(lam, fn) -> None:  # noqa: ANN001
    name, arn = fn["FunctionName"], fn["FunctionArn"]
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig=FAST)
    before = lam.get_function(FunctionName=name)["Configuration"]["RevisionId"]
    lam.tag_resource(Resource=arn, Tags={"team": "a"})
    tagged = lam.get_function(FunctionName=name)["Configuration"]["RevisionId"]
    lam.untag_resource(Resource=arn, TagKeys=["team"])
    untagged = lam.get_function(FunctionName=name)["Configuration"]["RevisionId"]
    assert len({before, tagged, untagged}) == 3
    with pytest.raises(ClientError) as exc:  # the old RevisionId is stale now
        lam.update_function_configuration(FunctionName=name, Description="x", RevisionId=tagged)
    assert _error(exc)["Code"] == "PreconditionFailedException"
    # tagging is not a change worth a new version: publishing twice gives one version
    assert lam.publish_version(FunctionName=name)["Version"] == "1"
    lam.tag_resource(Resource=arn, Tags={"team": "b"})
    assert lam.publish_version(FunctionName=name)["Version"] == "1"


def test_tagging_keeps_the_functions_environments_warm(lam) -> None:  # noqa: ANN001
    name = unique("fid")
    code = "import uuid\nME = uuid.uuid4().hex\ndef handler(event, context):\n    return ME\n"
    fn = lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                             Code={"ZipFile": make_zip({"app.py": code})})
    try:
        lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig=FAST)
        first = json.loads(lam.invoke(FunctionName=name)["Payload"].read())
        # When its tags change (and with them its RevisionId)
        lam.tag_resource(Resource=fn["FunctionArn"], Tags={"team": "a"})
        lam.untag_resource(Resource=fn["FunctionArn"], TagKeys=["team"])
        # Then the next invoke runs in the same, warm environment
        assert json.loads(lam.invoke(FunctionName=name)["Payload"].read()) == first
    finally:
        lam.delete_function(FunctionName=name)


def test_the_update_that_removes_the_dead_letter_config_still_shows_it(lam) -> None:  # noqa: ANN001
    name, target = unique("fid"), "arn:aws:sqs:us-east-1:000000000000:dlq"
    lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="handler.handler",
                        Code={"ZipFile": _zip("one")}, DeadLetterConfig={"TargetArn": target})
    try:
        lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig=FAST)
        answer = lam.update_function_configuration(FunctionName=name, DeadLetterConfig={})
        expected = recorded("lambda_destinations", "test_dead_letter_queue", "delete_dlq")
        assert_like(answer["DeadLetterConfig"], expected["DeadLetterConfig"])
        assert answer["DeadLetterConfig"] == {"TargetArn": target}
        lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig=FAST)
        assert "DeadLetterConfig" not in lam.get_function_configuration(FunctionName=name)
    finally:
        lam.delete_function(FunctionName=name)


@pytest.mark.parametrize(("case", "payload"), [
    (r"body-n\x87r\x9e\xe9\xb5\xd7I\xee\x9bmt", b"n\x87r\x9e\xe9\xb5\xd7I\xee\x9bmt"),
    (r"message-\x99\xeb,j\x07\xa1zYh", b"\x99\xeb,j\x07\xa1zYh"),
])
def test_payloads_that_are_not_utf8(lam, fn, case: str, payload: bytes) -> None:  # noqa: ANN001
    with pytest.raises(ClientError) as exc:
        lam.invoke(FunctionName=fn["FunctionName"], Payload=payload)
    key = "invoke_function_invalid_payload_" + case.split("-")[0]  # the recorded test id keeps the escapes
    expected = recorded("lambda_behavior", f"test_lambda_invoke_payload_encoding_error[{case}]", key)
    assert _error(exc) == expected["Error"]
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


# -- Architectures ----------------------------------------------------------------------------------------
def test_another_architecture_is_refused_clearly(lam, fn) -> None:  # noqa: ANN001
    other = "arm64" if architecture.host() == "x86_64" else "x86_64"
    with pytest.raises(ClientError) as exc:
        lam.create_function(FunctionName=unique("fid"), Runtime="python3.12", Role=ROLE, Handler="handler.handler",
                            Code={"ZipFile": _zip("one")}, Architectures=[other])
    error = _error(exc)
    assert error["Code"] == "InvalidParameterValueException"
    assert f"the host is {architecture.host()}" in error["Message"] and "would not run here" in error["Message"]
    lam.get_waiter("function_active_v2").wait(FunctionName=fn["FunctionName"], WaiterConfig=FAST)
    with pytest.raises(ClientError) as exc:
        lam.update_function_code(FunctionName=fn["FunctionName"], ZipFile=_zip("two"), Architectures=[other])
    assert _error(exc)["Code"] == "InvalidParameterValueException"
    assert lam.get_function_configuration(FunctionName=fn["FunctionName"])["Architectures"] == [architecture.host()]


def test_qemu_binfmt_admits_another_architecture_for_provided_runtimes_only(tmp_path: Path) -> None:
    other = "arm64" if architecture.host() == "x86_64" else "x86_64"
    entry = tmp_path / ("qemu-aarch64" if other == "arm64" else "qemu-x86_64")
    architecture.check([architecture.host()], "python3.12", tmp_path)  # the host's own: always
    with pytest.raises(Exception, match="no qemu-user binfmt_misc entry"):
        architecture.check([other], "provided.al2023", tmp_path)
    entry.write_text("disabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n")
    with pytest.raises(Exception, match="would not run here"):
        architecture.check([other], "provided.al2023", tmp_path)
    entry.write_text("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n")
    architecture.check([other], "provided.al2023", tmp_path)
    with pytest.raises(Exception, match="host's own"):
        architecture.check([other], "python3.12", tmp_path)


# -- hostile: many concurrent updates and tag calls against one function -------------------------------------
def test_concurrent_updates_and_tags_lose_nothing(hostile_server: Server, bystander: Bystander) -> None:
    lam = hostile_server.client()
    name = unique("fid")
    arn = lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="handler.handler",
                              Code={"ZipFile": _zip("one")})["FunctionArn"]
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig=FAST)
    calls = 60
    results: list[Any] = [None] * calls

    def call(i: int) -> None:
        client = clients[i % len(clients)]
        try:
            if i % 3 == 0:
                results[i] = ("tag", client.tag_resource(Resource=arn, Tags={f"t{i}": str(i)}))
            elif i % 3 == 1:
                results[i] = ("update", client.update_function_configuration(FunctionName=name, Description=f"d{i}"))
            else:
                results[i] = ("code", client.update_function_code(FunctionName=name, ZipFile=_zip(f"c{i}")))
        except ClientError as exc:
            results[i] = ("error", exc)

    clients = [hostile_server.client() for _ in range(6)]
    threads = [threading.Thread(target=call, args=(i,)) for i in range(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    # every answer is a success or AWS's conflict (409), never a 5xx
    for kind, value in results:
        if kind == "error":
            assert value.response["ResponseMetadata"]["HTTPStatusCode"] == 409, value.response
            assert value.response["Error"]["Message"] == IN_PROGRESS.format(arn=arn)
    # every accepted update is a revision of its own
    revisions = [v["RevisionId"] for k, v in results if k in ("update", "code")]
    assert revisions and len(set(revisions)) == len(revisions)
    # no tag is lost (each call added its own key)
    tags = lam.list_tags(Resource=arn)["Tags"]
    assert tags == {f"t{i}": str(i) for i in range(0, calls, 3)}
    # the function settles Successful, with one of the winners' changes, and runs
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig=FAST)
    final = lam.get_function_configuration(FunctionName=name)
    descriptions = {v["Description"] for k, v in results if k == "update"} | {""}
    assert final["LastUpdateStatus"] == "Successful" and final["Description"] in descriptions
    out = json.loads(lam.invoke(FunctionName=name)["Payload"].read())
    assert out["code"] in {"one"} | {f"c{i}" for i in range(2, calls, 3)}
    time.sleep(1)  # the attack's own aftermath (unused code removed, old environments retired) is done by then
    bystander.check()
    lam.delete_function(FunctionName=name)


def test_payload_messages_beyond_the_recorded_ones() -> None:
    # Jackson's wording for the other ways a payload is not UTF-8 (not recorded: derived from the parser's rules)
    from kindling.invoke.payload import not_utf8

    assert not_utf8(b'{"a":\n "\xc3(" }', 8, "invalid continuation byte").startswith(
        "Invalid UTF-8 middle byte 0x28\n at [Source: REDACTED")
    assert not_utf8(b'{"a":\n "\xc3(" }', 8, "invalid continuation byte").endswith("line: 2, column: 5]")
    assert not_utf8(b"\xe9", 0).startswith("Unexpected character ('\xe9' (code 233)): expected a valid value")
