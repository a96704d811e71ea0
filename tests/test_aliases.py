"""Aliases and weighted routing through boto3 against the real `kindling serve`, compared with AWS's recordings."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.recorded import assert_like, recorded

ECHO = "def handler(event, context):\n    return event\n"
# The smallest answer that says which version ran (the ExecutedVersion header says it too).
LEAN = "import os\nV = os.environ['AWS_LAMBDA_FUNCTION_VERSION']\ndef handler(event, context):\n    return V\n"


def rec(test: str, key: str) -> Any:
    return recorded("lambda_api", test, key)


def two_versions(lam: Any, create_function: Any, code: str = ECHO, **kwargs: Any) -> tuple[str, dict, dict]:
    """A function (testenv=staging) with version 1, then testenv=prod as version 2, as AWS's alias tests make it."""
    create = create_function(code={"index.py": code}, Handler="index.handler",
                             Environment={"Variables": {"testenv": "staging"}}, **kwargs)
    name = create["FunctionName"]
    v1 = lam.publish_version(FunctionName=name)
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"testenv": "prod"}})
    v2 = lam.publish_version(FunctionName=name)
    return name, v1, v2


# -- AWS's recorded tests ---------------------------------------------------------------------------
def test_alias_lifecycle(lam, create_function):
    t = "test_alias_lifecycle"
    name, v1, v2 = two_versions(lam, create_function)
    assert_like(v1, rec(t, "publish_v1"))
    assert_like(v2, rec(t, "publish_v2"))

    a11 = lam.create_alias(FunctionName=name, Name="aliasname1_1", FunctionVersion="1", Description="custom-alias",
                           RoutingConfig={"AdditionalVersionWeights": {"2": 0.2}})
    assert_like(a11, rec(t, "create_alias_1_1"))
    assert_like(lam.get_alias(FunctionName=name, Name="aliasname1_1"), rec(t, "get_alias_1_1"))
    assert_like(lam.get_function(FunctionName=name, Qualifier="aliasname1_1"), rec(t, "get_function_alias_1_1"))
    assert_like(lam.get_function(FunctionName=a11["AliasArn"]), rec(t, "get_function_byarn_alias_1_1"))
    with pytest.raises(ClientError) as exc:
        lam.get_function(FunctionName=name, Qualifier="aliasdoesnotexist")
    assert_like(exc.value.response, rec(t, "get_function_alias_notfound_exc"))
    with pytest.raises(ClientError) as exc:
        lam.get_function(FunctionName=a11["AliasArn"].replace("aliasname1_1", "aliasdoesnotexist"))
    assert_like(exc.value.response, rec(t, "get_function_alias_byarn_notfound_exc"))

    a12 = lam.create_alias(FunctionName=name, Name="aliasname1_2", FunctionVersion="1", Description="custom-alias")
    assert_like(a12, rec(t, "create_alias_1_2"))
    assert_like(lam.get_alias(FunctionName=name, Name="aliasname1_2"), rec(t, "get_alias_1_2"))
    a13 = lam.create_alias(FunctionName=name, Name="aliasname1_3", FunctionVersion="1")
    assert_like(a13, rec(t, "create_alias_1_3"))
    assert_like(lam.get_alias(FunctionName=name, Name="aliasname1_3"), rec(t, "get_alias_1_3"))
    a2 = lam.create_alias(FunctionName=name, Name="aliasname2", FunctionVersion="2", Description="custom-alias")
    assert_like(a2, rec(t, "create_alias_2"))
    assert_like(lam.get_alias(FunctionName=name, Name="aliasname2"), rec(t, "get_alias_2"))

    paged = lam.get_paginator("list_aliases").paginate(FunctionName=name, PaginationConfig={"PageSize": 1})
    assert_like(paged.build_full_result(), rec(t, "list_aliases_for_fnname"))

    update = lam.update_alias(FunctionName=name, Name="aliasname1_1", RoutingConfig={"AdditionalVersionWeights": {}})
    assert_like(update, rec(t, "update_alias_1_1"))
    assert_like(lam.get_alias(FunctionName=name, Name="aliasname1_1"), rec(t, "get_alias_1_1_after_update"))
    assert_like(lam.list_aliases(FunctionName=name), rec(t, "list_aliases_for_fnname_after_update"))
    unchanged = lam.update_alias(FunctionName=name, Name="aliasname1_2")
    assert_like(unchanged, rec(t, "update_alias_1_2"))
    assert unchanged["RevisionId"] != a12["RevisionId"]  # every update is a new revision, as on AWS
    assert_like(lam.get_alias(FunctionName=name, Name="aliasname1_2"), rec(t, "get_alias_1_2_after_update"))
    assert_like(lam.list_aliases(FunctionName=name), rec(t, "list_aliases_for_fnname_after_update_2"))
    assert_like(lam.list_aliases(FunctionName=name, FunctionVersion="1"), rec(t, "list_aliases_for_version"))

    assert_like(lam.delete_alias(FunctionName=name, Name="aliasname1_1"), rec(t, "delete_alias_response"))
    assert_like(lam.list_aliases(FunctionName=name), rec(t, "list_aliases_for_fnname_afterdelete"))


def test_notfound_and_invalid_routingconfigs(server, create_function):
    t = "test_notfound_and_invalid_routingconfigs"
    lam = server.client(parameter_validation=False)
    create = create_function(code={"index.py": ECHO}, Handler="index.handler", Publish=True,
                             Environment={"Variables": {"testenv": "staging"}})
    name = create["FunctionName"]
    assert_like(create, rec(t, "create_response"))
    # version 1 was published with the function: publishing again is version 1 again
    assert_like(lam.publish_version(FunctionName=name), rec(t, "publish_v1"))
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"testenv": "prod"}})
    assert_like(lam.publish_version(FunctionName=name), rec(t, "publish_v2"))

    refused = [
        ("routing_config_exc_toomany", {"FunctionVersion": "1", "weights": {"1": 0.8, "2": 0.2}}),
        ("routing_config_exc_toohigh", {"FunctionVersion": "1", "weights": {"2": 2}}),
        ("routing_config_exc_subzero", {"FunctionVersion": "1", "weights": {"2": -1}}),
        ("routing_config_exc_sameversion", {"FunctionVersion": "1", "weights": {"1": 0.5}}),
        ("target_version_doesnotexist", {"FunctionVersion": "10", "weights": {"2": 0.5}}),
        ("routing_config_exc_version_doesnotexist", {"FunctionVersion": "1", "weights": {"10": 0.5}}),
        ("target_version_exc_version_latest", {"FunctionVersion": "$LATEST", "weights": {"1": 0.5}}),
        ("routing_config_exc_version_latest", {"FunctionVersion": "1", "weights": {"$LATEST": 0.5}}),
    ]
    for key, case in refused:
        with pytest.raises(ClientError) as exc:
            lam.create_alias(FunctionName=name, Name="custom", FunctionVersion=case["FunctionVersion"],
                             RoutingConfig={"AdditionalVersionWeights": case["weights"]})
        assert_like(exc.value.response, rec(t, key))

    latest = lam.create_alias(FunctionName=name, Name="custom-latest", FunctionVersion="$LATEST")
    assert_like(latest, rec(t, "create-alias-latest"))
    with pytest.raises(ClientError) as exc:
        lam.create_alias(FunctionName=f"{name}-unknown", Name="custom", FunctionVersion="1",
                         RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}})
    assert_like(exc.value.response, rec(t, "routing_config_exc_fn_doesnotexist"))
    empty = lam.create_alias(FunctionName=name, Name="custom-empty-routingconfig", FunctionVersion="1",
                             RoutingConfig={"AdditionalVersionWeights": {}})
    assert_like(empty, rec(t, "create_alias_empty_routingconfig"))
    custom = lam.create_alias(FunctionName=name, Name="custom", FunctionVersion="1",
                              RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}})
    assert_like(custom, rec(t, "create_alias_response"))
    with pytest.raises(ClientError) as exc:
        lam.create_alias(FunctionName=name, Name="custom", FunctionVersion="1",
                         RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}})
    assert_like(exc.value.response, rec(t, "routing_config_exc_already_exist"))
    with pytest.raises(ClientError) as exc:
        lam.get_alias(FunctionName=name, Name="non-existent")
    assert_like(exc.value.response, rec(t, "alias_does_not_exist_esc"))


def test_alias_naming(lam, create_function):
    t = "test_alias_naming"
    create = create_function(code={"index.py": ECHO}, Handler="index.handler",
                             Environment={"Variables": {"testenv": "staging"}})
    name = create["FunctionName"]
    assert_like(create, rec(t, "create_response"))
    assert_like(lam.publish_version(FunctionName=name), rec(t, "publish_v1"))
    dated = lam.create_alias(FunctionName=name, Name="2024-01-02", FunctionVersion="1", Description="custom-alias")
    assert_like(dated, rec(t, "create_alias_date"))
    assert_like(lam.get_alias(FunctionName=name, Name="2024-01-02"), rec(t, "get_alias_date"))
    with pytest.raises(ClientError) as exc:  # all digits would read as a version number
        lam.create_alias(FunctionName=name, Name="2024", FunctionVersion="1", Description="custom-alias")
    assert_like(exc.value.response, rec(t, "create_alias_number_exception"))


def test_non_existent_alias_deletion(lam, create_function):
    t = "test_non_existent_alias_deletion"
    create = create_function(code={"index.py": ECHO}, Handler="index.handler",
                             Environment={"Variables": {"testenv": "staging"}})
    assert_like(create, rec(t, "create_response"))
    assert_like(lam.delete_alias(FunctionName=create["FunctionName"], Name="non-existent"),
                rec(t, "delete_alias_response"))


def test_non_existent_alias_update(lam, create_function):
    t = "test_non_existent_alias_update"
    create = create_function(code={"index.py": ECHO}, Handler="index.handler",
                             Environment={"Variables": {"testenv": "staging"}})
    assert_like(create, rec(t, "create_response"))
    with pytest.raises(ClientError) as exc:
        lam.update_alias(FunctionName=create["FunctionName"], Name="non-existent", Description="update")
    assert_like(exc.value.response, rec(t, "update_alias_response"))


def test_function_revisions_version_and_alias(lam, create_function):
    t = "test_function_revisions_version_and_alias"
    create = create_function(code={"handler.py": ECHO}, Handler="handler.handler", Timeout=30,
                             Environment={"Variables": {}})
    name = create["FunctionName"]
    assert_like(create, rec(t, "create_function_response_rev1")["CreateFunctionResponse"])
    rev2 = lam.get_function(FunctionName=name)
    assert_like(rev2, rec(t, "get_function_active_rev2"))
    with pytest.raises(ClientError) as exc:
        lam.publish_version(FunctionName=name, RevisionId="wrong")
    assert_like(exc.value.response, rec(t, "publish_version_revision_exception"))
    v1 = lam.publish_version(FunctionName=name, RevisionId=rev2["Configuration"]["RevisionId"])
    assert_like(v1, rec(t, "publish_version_response_rev_v1"))
    v1_read = lam.get_function(FunctionName=name, Qualifier="1")
    assert_like(v1_read, rec(t, "get_function_published_version_rev_v2"))
    assert v1_read["Configuration"]["RevisionId"] == v1["RevisionId"]
    rev3 = lam.get_function(FunctionName=name)
    assert_like(rev3, rec(t, "get_function_latest_rev3"))
    assert rev3["Configuration"]["RevisionId"] != rev2["Configuration"]["RevisionId"]  # publishing moves $LATEST's

    alias = lam.create_alias(FunctionName=name, Name="revision_alias", FunctionVersion="1")
    assert_like(alias, rec(t, "create_alias_response_rev_a1"))
    rev4 = lam.get_function(FunctionName=name)
    assert_like(rev4, rec(t, "get_function_latest_rev4"))
    assert rev4["Configuration"]["RevisionId"] == rev3["Configuration"]["RevisionId"]  # an alias does not
    assert_like(lam.get_function(FunctionName=name, Qualifier="1"), rec(t, "get_function_published_version_rev_v3"))
    with pytest.raises(ClientError) as exc:
        lam.update_alias(FunctionName=name, Name="revision_alias", RevisionId="wrong")
    assert_like(exc.value.response, rec(t, "update_alias_revision_exception"))
    updated = lam.update_alias(FunctionName=name, Name="revision_alias", Description="something changed",
                               RevisionId=alias["RevisionId"])
    assert_like(updated, rec(t, "update_alias_response_rev_a2"))
    assert updated["RevisionId"] != alias["RevisionId"]


# -- behaviour --------------------------------------------------------------------------------------
def test_invoking_an_alias(lam, create_function):
    code = ("import os\ndef handler(event, context):\n    return {'env': os.environ['testenv'], "
            "'version': os.environ['AWS_LAMBDA_FUNCTION_VERSION'], 'arn': context.invoked_function_arn}\n")
    name, _, _ = two_versions(lam, create_function, code)
    alias = lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    for ident, qualifier in ((name, "live"), (alias["AliasArn"], None), (f"{name}:live", None)):
        out = lam.invoke(FunctionName=ident, **({"Qualifier": qualifier} if qualifier else {}))
        body = json.loads(out["Payload"].read())
        assert out["ExecutedVersion"] == "1"
        assert body == {"env": "staging", "version": "1", "arn": alias["AliasArn"]}  # the ARN as invoked
    # moving the alias moves its invokes
    lam.update_alias(FunctionName=name, Name="live", FunctionVersion="2")
    out = lam.invoke(FunctionName=name, Qualifier="live")
    assert out["ExecutedVersion"] == "2" and json.loads(out["Payload"].read())["env"] == "prod"
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.invoke(FunctionName=name, Qualifier="nothere")
    assert exc.value.response["Error"]["Message"].endswith(f":function:{name}:nothere")


def test_weighted_routing_splits_invokes(server, create_function):
    # Given an alias on version 1 that sends 10% of invokes to version 2
    lam = server.client()
    name, _, _ = two_versions(lam, create_function, LEAN)
    lam.create_alias(FunctionName=name, Name="canary", FunctionVersion="1",
                     RoutingConfig={"AdditionalVersionWeights": {"2": 0.1}})
    workers = 4
    clients = [server.client(max_pool_connections=2) for _ in range(workers)]

    def run(i: int) -> list[str]:
        client = clients[i]
        ran = []
        for _ in range(2500):
            out = client.invoke(FunctionName=name, Qualifier="canary")
            payload = json.loads(out["Payload"].read())
            assert payload == out["ExecutedVersion"]  # the header says which version really ran
            ran.append(out["ExecutedVersion"])
        return ran

    # When it is invoked 10,000 times
    started = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        ran = [v for part in pool.map(run, range(workers)) for v in part]
    elapsed = time.monotonic() - started
    # Then version 2 ran within 1.5 percentage points of 10% of them, and version 1 the rest
    assert len(ran) == 10_000 and set(ran) == {"1", "2"}
    share = ran.count("2") / len(ran)
    assert abs(share - 0.1) < 0.015, share
    assert elapsed < 60, elapsed


def test_stale_revision_ids_are_refused(lam, create_function):
    name, _, _ = two_versions(lam, create_function)
    alias = lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    stale = "00000000-0000-0000-0000-000000000000"
    calls = [
        lambda: lam.update_function_configuration(FunctionName=name, Description="x", RevisionId=stale),
        lambda: lam.update_function_code(FunctionName=name, ZipFile=b"PK", RevisionId=stale),
        lambda: lam.publish_version(FunctionName=name, RevisionId=stale),
        lambda: lam.update_alias(FunctionName=name, Name="live", FunctionVersion="2", RevisionId=stale),
    ]
    for op in calls:
        with pytest.raises(lam.exceptions.PreconditionFailedException):
            op()
    assert lam.get_alias(FunctionName=name, Name="live")["RevisionId"] == alias["RevisionId"]  # nothing changed
    # an alias read's RevisionId is the one UpdateAlias takes
    moved = lam.update_alias(FunctionName=name, Name="live", FunctionVersion="2", RevisionId=alias["RevisionId"])
    assert moved["FunctionVersion"] == "2"


def test_aliases_go_with_their_function(lam, create_function):
    name, _, _ = two_versions(lam, create_function)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    lam.delete_function(FunctionName=name)
    for op in (lambda: lam.get_alias(FunctionName=name, Name="live"), lambda: lam.list_aliases(FunctionName=name)):
        with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
            op()
        assert exc.value.response["Error"]["Message"].endswith(f":function:{name}")
    # a function made again under the same name starts without aliases or versions
    name2 = create_function(FunctionName=name)["FunctionName"]
    assert lam.list_aliases(FunctionName=name2)["Aliases"] == []
    assert lam.publish_version(FunctionName=name2)["Version"] == "1"
