"""Event invoke configs and recursion configs through boto3, compared with AWS's recordings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.async_support import plain
from tests.recorded import assert_like, recorded

EXCEPTIONS = "test_lambda_eventinvokeconfig_exceptions"
LIFECYCLE = "test_lambda_eventinvokeconfig_lifecycle"


def rec(test: str, key: str) -> Any:
    return recorded("lambda_api", test, key)


def like(test: str, key: str, call: Callable[[], Any]) -> None:
    """Call, and compare its answer or its error with the recording ``key``."""
    try:
        out = call()
    except ClientError as exc:
        out = exc.response
    assert_like(plain(out), rec(test, key), f"{test}.{key}")


def test_event_invoke_config_errors_and_qualifiers(lam, create_function):
    fn = create_function()
    name, arn = fn["FunctionName"], fn["FunctionArn"]
    other = create_function()["FunctionArn"]
    put, update = lam.put_function_event_invoke_config, lam.update_function_event_invoke_config
    get, delete = lam.get_function_event_invoke_config, lam.delete_function_event_invoke_config
    lam.publish_version(FunctionName=name)  # (versions and aliases are compared in their own tests)
    lam.create_alias(FunctionName=name, Name="eventinvokealias", FunctionVersion="1")
    alias_arn = f"{arn}:eventinvokealias"

    like(EXCEPTIONS, "put_functionname_name_notfound", lambda: put(FunctionName="doesnotexist", MaximumRetryAttempts=1))
    like(EXCEPTIONS, "put_functionname_arn_notfound",
         lambda: put(FunctionName=arn.replace(name, "doesnotexist"), MaximumRetryAttempts=1))
    like(EXCEPTIONS, "put_functionname_nootherargs", lambda: put(FunctionName=name))
    like(EXCEPTIONS, "put_destination_lambda_doesntexist", lambda: put(
        FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": arn.replace(name, "doesnotexist")}}))
    like(EXCEPTIONS, "put_destination_recursive",
         lambda: put(FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": arn}}))
    like(EXCEPTIONS, "put_destination_other_lambda",
         lambda: put(FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": other}}))
    like(EXCEPTIONS, "put_destination_invalid_service_arn", lambda: put(
        FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": arn.replace(":lambda:", ":iam:")}}))
    like(EXCEPTIONS, "put_destination_success_no_destination_arn",
         lambda: put(FunctionName=name, DestinationConfig={"OnSuccess": {}}))
    like(EXCEPTIONS, "put_destination_failure_no_destination_arn",
         lambda: put(FunctionName=name, DestinationConfig={"OnFailure": {}}))
    like(EXCEPTIONS, "put_destination_latest", lambda: put(FunctionName=name, Qualifier="$LATEST",
                                                           MaximumRetryAttempts=1))
    like(EXCEPTIONS, "put_destination_latest_explicit_qualifier",
         lambda: put(FunctionName=f"{arn}:$LATEST", Qualifier="$LATEST", MaximumRetryAttempts=1))
    like(EXCEPTIONS, "put_destination_version", lambda: put(FunctionName=name, Qualifier="1", MaximumRetryAttempts=1))
    like(EXCEPTIONS, "put_alias_functionname_qualifier",
         lambda: put(FunctionName=name, Qualifier="eventinvokealias", MaximumRetryAttempts=1))
    like(EXCEPTIONS, "put_alias_doesnotexist",
         lambda: put(FunctionName=name, Qualifier="doesnotexist", MaximumRetryAttempts=1))
    like(EXCEPTIONS, "put_alias_qualifiedarn", lambda: put(FunctionName=alias_arn, MaximumRetryAttempts=1))
    like(EXCEPTIONS, "put_alias_qualifiedarn_qualifier",
         lambda: put(FunctionName=alias_arn, Qualifier="eventinvokealias", MaximumRetryAttempts=1))
    like(EXCEPTIONS, "put_alias_qualifiedarn_qualifierconflict",
         lambda: put(FunctionName=alias_arn, Qualifier="$LATEST", MaximumRetryAttempts=1))
    like(EXCEPTIONS, "put_alias_shorthand", lambda: put(FunctionName=f"{name}:eventinvokealias",
                                                        MaximumRetryAttempts=1))
    like(EXCEPTIONS, "put_alias_shorthand_qualifier",
         lambda: put(FunctionName=f"{name}:eventinvokealias", Qualifier="eventinvokealias", MaximumRetryAttempts=1))
    like(EXCEPTIONS, "put_alias_shorthand_qualifierconflict",
         lambda: put(FunctionName=f"{name}:eventinvokealias", Qualifier="$LATEST", MaximumRetryAttempts=1))
    like(EXCEPTIONS, "put_version_shorthand", lambda: put(FunctionName=f"{name}:1", MaximumRetryAttempts=1))
    like(EXCEPTIONS, "put_shorthand_qualifier_match",
         lambda: put(FunctionName=f"{name}:$LATEST", Qualifier="$LATEST", MaximumRetryAttempts=1))
    for i, (ident, qualifier) in enumerate([("$LATEST", "1"), ("1", "$LATEST"), ("eventinvokealias", "1")], 1):
        like(EXCEPTIONS, f"put_shorthand_qualifier_mismatch_{i}",
             lambda: put(FunctionName=f"{name}:{ident}", Qualifier=qualifier,  # noqa: B023
                         MaximumRetryAttempts=1))
    like(EXCEPTIONS, "put_maxevent_maxvalue_result",
         lambda: put(FunctionName=name, MaximumRetryAttempts=2, MaximumEventAgeInSeconds=21600))
    # Put replaces, Update merges
    like(EXCEPTIONS, "put_pre_overwrite",
         lambda: put(FunctionName=name, MaximumRetryAttempts=2, MaximumEventAgeInSeconds=60))
    like(EXCEPTIONS, "put_post_overwrite", lambda: put(FunctionName=name, MaximumRetryAttempts=0))
    like(EXCEPTIONS, "second_overwrite_existing_response", lambda: put(FunctionName=name, MaximumRetryAttempts=0))
    like(EXCEPTIONS, "get_post_overwrite", lambda: get(FunctionName=name))
    like(EXCEPTIONS, "pre_update_response",
         lambda: put(FunctionName=name, MaximumRetryAttempts=2, MaximumEventAgeInSeconds=60))
    like(EXCEPTIONS, "update_response", lambda: update(FunctionName=name, MaximumRetryAttempts=0))
    like(EXCEPTIONS, "update_response_existing", lambda: update(FunctionName=name, MaximumRetryAttempts=0))
    like(EXCEPTIONS, "list_configs", lambda: lam.list_function_event_invoke_configs(FunctionName=name))
    like(EXCEPTIONS, "delete_latest", lambda: delete(FunctionName=name))
    like(EXCEPTIONS, "delete_version", lambda: delete(FunctionName=name, Qualifier="1"))
    like(EXCEPTIONS, "delete_alias", lambda: delete(FunctionName=name, Qualifier="eventinvokealias"))
    like(EXCEPTIONS, "list_configs_postdelete", lambda: lam.list_function_event_invoke_configs(FunctionName=name))
    like(EXCEPTIONS, "delete_function_not_found", lambda: delete(FunctionName=name))
    like(EXCEPTIONS, "delete_function_doesnotexist", lambda: delete(FunctionName="doesnotexist"))
    like(EXCEPTIONS, "list_function_doesnotexist",
         lambda: lam.list_function_event_invoke_configs(FunctionName="doesnotexist"))
    like(EXCEPTIONS, "get_function_doesnotexist", lambda: get(FunctionName="doesnotexist"))
    like(EXCEPTIONS, "get_qualifier_doesnotexist", lambda: get(FunctionName=name, Qualifier="doesnotexist"))
    like(EXCEPTIONS, "update_eventinvokeconfig_function_doesnotexist",
         lambda: update(FunctionName="doesnotexist", MaximumRetryAttempts=0))
    like(EXCEPTIONS, "get_eventinvokeconfig_doesnotexist",
         lambda: get(FunctionName=name, Qualifier="eventinvokealias"))
    like(EXCEPTIONS, "update_eventinvokeconfig_config_doesnotexist_with_qualifier",
         lambda: update(FunctionName=name, Qualifier="eventinvokealias", MaximumRetryAttempts=0))
    like(EXCEPTIONS, "update_eventinvokeconfig_config_doesnotexist_without_qualifier",
         lambda: update(FunctionName=name, MaximumRetryAttempts=0))


def test_event_invoke_config_lifecycle(lam, create_function):
    name = create_function()["FunctionName"]
    put, update = lam.put_function_event_invoke_config, lam.update_function_event_invoke_config
    get = lam.get_function_event_invoke_config
    like(LIFECYCLE, "put_invokeconfig_retries_0", lambda: put(FunctionName=name, MaximumRetryAttempts=0))
    like(LIFECYCLE, "put_invokeconfig_eventage_60", lambda: put(FunctionName=name, MaximumEventAgeInSeconds=60))
    like(LIFECYCLE, "update_invokeconfig_eventage_nochange",
         lambda: update(FunctionName=name, MaximumEventAgeInSeconds=60))
    like(LIFECYCLE, "update_invokeconfig_retries", lambda: update(FunctionName=name, MaximumRetryAttempts=1))
    like(LIFECYCLE, "get_invokeconfig", lambda: get(FunctionName=name))
    like(LIFECYCLE, "get_invokeconfig_latest", lambda: get(FunctionName=name, Qualifier="$LATEST"))
    like(LIFECYCLE, "list_single_invokeconfig", lambda: lam.list_function_event_invoke_configs(FunctionName=name))
    lam.publish_version(FunctionName=name)
    like(LIFECYCLE, "get_invokeconfig_postpublish", lambda: get(FunctionName=name, Qualifier="1"))
    like(LIFECYCLE, "put_published_invokeconfig",
         lambda: put(FunctionName=name, Qualifier="1", MaximumEventAgeInSeconds=120))
    like(LIFECYCLE, "get_published_invokeconfig", lambda: get(FunctionName=name, Qualifier="1"))
    lam.delete_function_event_invoke_config(FunctionName=name)
    like(LIFECYCLE, "list_paging_nolimit_postdelete",
         lambda: lam.list_function_event_invoke_configs(FunctionName=name))
    # paging
    put(FunctionName=name, MaximumRetryAttempts=1)
    first = lam.list_function_event_invoke_configs(FunctionName=name, MaxItems=1)
    second = lam.list_function_event_invoke_configs(FunctionName=name, Marker=first["NextMarker"], MaxItems=1)
    assert [c["FunctionArn"].rsplit(":", 1)[1] for c in first["FunctionEventInvokeConfigs"]
            + second["FunctionEventInvokeConfigs"]] == ["1", "$LATEST"]
    assert "NextMarker" not in second


def test_configs_go_with_their_function(lam, create_function):
    name = create_function()["FunctionName"]
    lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=0)
    lam.put_function_recursion_config(FunctionName=name, RecursiveLoop="Allow")
    lam.delete_function(FunctionName=name)
    create_function(FunctionName=name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_event_invoke_config(FunctionName=name)
    assert lam.get_function_recursion_config(FunctionName=name)["RecursiveLoop"] == "Terminate"


def test_recursion_config(lam, create_function):
    name = create_function()["FunctionName"]
    assert_like(lam.get_function_recursion_config(FunctionName=name),
                rec("test_put_function_recursion_config_default_terminate", "get_recursion_default_terminate_response"))
    assert_like(lam.put_function_recursion_config(FunctionName=name, RecursiveLoop="Allow"),
                rec("test_put_function_recursion_config_allow", "put_recursion_config_response"))
    assert_like(lam.get_function_recursion_config(FunctionName=name),
                rec("test_put_function_recursion_config_allow", "get_recursion_config_response"))
    with pytest.raises(ClientError) as exc:
        lam.put_function_recursion_config(FunctionName=name, RecursiveLoop="InvalidValue")
    assert_like(exc.value.response,
                rec("test_put_function_recursion_config_invalid_value", "put_recursion_invalid_value_error"))
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_recursion_config(FunctionName="doesnotexist")
