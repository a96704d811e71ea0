# ruff: noqa: E501
"""kindling.frontend.validate against ValidationException messages recorded from AWS.

Expected strings in RECORDED are copied verbatim (hence the long lines) from
/work/shared/reference/aws-recorded/lambda_api.snapshot.json (placeholders such
as <partition> included; the requests below send those placeholders literally,
which breaks the same constraint). test_recorded_strings_are_verbatim re-checks
the copies against the snapshot when it is available.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import botocore.session
import pytest

from kindling.errors import ValidationException
from kindling.frontend.validate import check, message, validate

MODEL = botocore.session.get_session().get_service_model("lambda")
SNAPSHOT = Path("/work/shared/reference/aws-recorded/lambda_api.snapshot.json")

FN_PATTERN = r"(arn:(aws[a-zA-Z-]*)?:lambda:)?((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:)?(\d{12}:)?(function:)?([a-zA-Z0-9-_]+)(:(\$LATEST|[a-zA-Z0-9-_]+))?"
NS_FN_PATTERN = r"(arn:(aws[a-zA-Z-]*)?:lambda:)?((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:)?(\d{12}:)?(function:)?([a-zA-Z0-9-_\.]+)(:(\$LATEST(\.PUBLISHED)?|[a-zA-Z0-9-_]+))?"
LAYER_ARN_PATTERN = r"(arn:(aws[a-zA-Z-]*)?:lambda:(eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:\d{12}:layer:[a-zA-Z0-9-_]+:[0-9]+)|(arn:[a-zA-Z0-9-]+:lambda:::awslayer:[a-zA-Z0-9-_]+)"
LAYER = "arn:<partition>:lambda:<region>:111111111111:layer:<resource:1>"
ROLE = "arn:aws:iam::111111111111:role/r"
CREATE = {"FunctionName": "f", "Role": ROLE, "Code": {"ZipFile": b"PK"}}
ALIAS = {"FunctionName": "f", "Name": "live"}

# (test in the snapshot, operation, request params, message recorded from AWS)
RECORDED: list[tuple[str, str, dict[str, Any], str]] = [
    (
        "test_create_lambda_exceptions",
        "CreateFunction",
        {**CREATE, "Role": "r1"},
        r"1 validation error detected: Value 'r1' at 'role' failed to satisfy constraint: Member must satisfy regular expression pattern: arn:(aws[a-zA-Z-]*)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+",
    ),
    (
        "test_create_lambda_exceptions",
        "CreateFunction",
        {**CREATE, "Architectures": ["x86_64", "arm64"]},
        "1 validation error detected: Value '[x86_64, arm64]' at 'architectures' failed to satisfy constraint: Member must have length less than or equal to 1",
    ),
    (
        "test_create_lambda_exceptions",
        "CreateFunction",
        {**CREATE, "Architectures": ["X86_64"]},
        "1 validation error detected: Value '[X86_64]' at 'architectures' failed to satisfy constraint: Member must satisfy constraint: [Member must satisfy enum value set: [x86_64, arm64], Member must not be null]",
    ),
    (
        "test_tag_exceptions",
        "UntagResource",
        {"Resource": "arn:aws:lambda:us-east-1:111111111111:function:f"},
        "1 validation error detected: Value null at 'tagKeys' failed to satisfy constraint: Member must not be null",
    ),
    (
        "test_provisioned_concurrency_exceptions",
        "PutProvisionedConcurrencyConfig",
        {"FunctionName": "f", "Qualifier": "live", "ProvisionedConcurrentExecutions": 0},
        "1 validation error detected: Value '0' at 'provisionedConcurrentExecutions' failed to satisfy constraint: Member must have value greater than or equal to 1",
    ),
    (
        "test_url_config_exceptions",
        "CreateFunctionUrlConfig",
        {"FunctionName": "f", "AuthType": "NONE", "Qualifier": "1"},
        r"1 validation error detected: Value '1' at 'qualifier' failed to satisfy constraint: Member must satisfy regular expression pattern: ((?!^\d+$)^[0-9a-zA-Z-_]+$)",
    ),
    (
        "test_url_config_exceptions",
        "CreateFunctionUrlConfig",
        {"FunctionName": "f", "AuthType": "NONE", "Qualifier": "$LATEST"},
        r"1 validation error detected: Value '$LATEST' at 'qualifier' failed to satisfy constraint: Member must satisfy regular expression pattern: ((?!^\d+$)^[0-9a-zA-Z-_]+$)",
    ),
    (
        "test_permission_exceptions",
        "AddPermission",
        {
            "FunctionName": "f",
            "StatementId": "example.com",
            "Action": "lambda:InvokeFunction",
            "Principal": "s3.amazonaws.com",
        },
        "1 validation error detected: Value 'example.com' at 'statementId' failed to satisfy constraint: Member must satisfy regular expression pattern: ([a-zA-Z0-9-_]+)",
    ),
    (
        "test_permission_exceptions",
        "AddPermission",
        {
            "FunctionName": "f",
            "StatementId": "s",
            "Action": "lambda:InvokeFunction",
            "Principal": "s3.amazonaws.com",
            "Qualifier": "invalid-qualifier-with-?-char",
        },
        r"1 validation error detected: Value 'invalid-qualifier-with-?-char' at 'qualifier' failed to satisfy constraint: Member must satisfy regular expression pattern: \$(LATEST(\.PUBLISHED)?)|[a-zA-Z0-9-_$]+",
    ),
    (
        "test_list_functions",
        "ListFunctions",
        {"FunctionVersion": "invalid"},
        "1 validation error detected: Value 'invalid' at 'functionVersion' failed to satisfy constraint: Member must satisfy enum value set: [ALL]",
    ),
    (
        "test_layer_exceptions",
        "ListLayers",
        {"CompatibleArchitecture": "archdoesnotexist"},
        "1 validation error detected: Value 'archdoesnotexist' at 'compatibleArchitecture' failed to satisfy constraint: Member must satisfy enum value set: [x86_64, arm64]",
    ),
    (
        "test_layer_exceptions",
        "GetLayerVersionByArn",
        {"Arn": LAYER},
        f"1 validation error detected: Value '{LAYER}' at 'arn' failed to satisfy constraint: Member must satisfy regular expression pattern: {LAYER_ARN_PATTERN}",
    ),
    (
        "test_layer_policy_exceptions",
        "AddLayerVersionPermission",
        {"LayerName": "l", "VersionNumber": 1, "StatementId": "s", "Action": "*", "Principal": "*"},
        "1 validation error detected: Value '*' at 'action' failed to satisfy constraint: Member must satisfy regular expression pattern: lambda:GetLayerVersion",
    ),
    (
        "test_layer_function_exceptions",
        "CreateFunction",
        {**CREATE, "Layers": [LAYER]},
        f"1 validation error detected: Value '[{LAYER}]' at 'layers' failed to satisfy constraint: Member must satisfy constraint: [Member must have length less than or equal to 2048, Member must have length greater than or equal to 1, Member must satisfy regular expression pattern: {LAYER_ARN_PATTERN}, Member must not be null]",
    ),
    (
        "test_snapstart_exceptions",
        "CreateFunction",
        {**CREATE, "SnapStart": {"ApplyOn": "invalidOption"}},
        "1 validation error detected: Value 'invalidOption' at 'snapStart.applyOn' failed to satisfy constraint: Member must satisfy enum value set: [PublishedVersions, None]",
    ),
    (
        "test_function_arns",
        "CreateFunction",
        {**CREATE, "FunctionName": "invalid:function:name"},
        f"1 validation error detected: Value 'invalid:function:name' at 'functionName' failed to satisfy constraint: Member must satisfy regular expression pattern: {FN_PATTERN}",
    ),
    (
        "test_alias_naming",
        "CreateAlias",
        {"FunctionName": "f", "Name": "2024", "FunctionVersion": "1"},
        "1 validation error detected: Value '2024' at 'name' failed to satisfy constraint: Member must satisfy regular expression pattern: (?!^[0-9]+$)([a-zA-Z0-9-_]+)",
    ),
    (
        "test_invalid_invoke",
        "Invoke",
        {"FunctionName": "arn:<partition>:lambda:<region>:123400000000@function:myfn"},
        f"1 validation error detected: Value 'arn:<partition>:lambda:<region>:123400000000@function:myfn' at 'functionName' failed to satisfy constraint: Member must satisfy regular expression pattern: {NS_FN_PATTERN}",
    ),
    (
        "test_put_function_recursion_config_invalid_value",
        "PutFunctionRecursionConfig",
        {"FunctionName": "f", "RecursiveLoop": "InvalidValue"},
        "1 validation error detected: Value 'InvalidValue' at 'recursiveLoop' failed to satisfy constraint: Member must satisfy enum value set: [Terminate, Allow]",
    ),
    (
        "test_invalid_vpc_config_subnet",
        "CreateFunction",
        {**CREATE, "VpcConfig": {"SubnetIds": ["<subnet_id_2>"]}},
        "1 validation error detected: Value '[<subnet_id_2>]' at 'vpcConfig.subnetIds' failed to satisfy constraint: Member must satisfy constraint: [Member must have length less than or equal to 1024, Member must have length greater than or equal to 0, Member must satisfy regular expression pattern: subnet-[0-9a-z]*]",
    ),
    (
        "test_invalid_vpc_config_security_group",
        "CreateFunction",
        {**CREATE, "VpcConfig": {"SecurityGroupIds": ["<security_group_id_2>"]}},
        "1 validation error detected: Value '[<security_group_id_2>]' at 'vpcConfig.securityGroupIds' failed to satisfy constraint: Member must satisfy constraint: [Member must have length less than or equal to 1024, Member must have length greater than or equal to 0, Member must satisfy regular expression pattern: sg-[0-9a-zA-Z]*]",
    ),
    (
        "test_notfound_and_invalid_routingconfigs",
        "UpdateAlias",
        {**ALIAS, "RoutingConfig": {"AdditionalVersionWeights": {"2": 2.0}}},
        "1 validation error detected: Value '{2=2.0}' at 'routingConfig.additionalVersionWeights' failed to satisfy constraint: Map value must satisfy constraint: [Member must have value less than or equal to 1.0, Member must have value greater than or equal to 0.0, Member must not be null]",
    ),
    (
        "test_notfound_and_invalid_routingconfigs",
        "UpdateAlias",
        {**ALIAS, "RoutingConfig": {"AdditionalVersionWeights": {"2": -1.0}}},
        "1 validation error detected: Value '{2=-1.0}' at 'routingConfig.additionalVersionWeights' failed to satisfy constraint: Map value must satisfy constraint: [Member must have value less than or equal to 1.0, Member must have value greater than or equal to 0.0, Member must not be null]",
    ),
    (
        "test_notfound_and_invalid_routingconfigs",
        "UpdateAlias",
        {**ALIAS, "RoutingConfig": {"AdditionalVersionWeights": {"$LATEST": 0.5}}},
        "1 validation error detected: Value '{$LATEST=0.5}' at 'routingConfig.additionalVersionWeights' failed to satisfy constraint: Map keys must satisfy constraint: [Member must have length less than or equal to 1024, Member must have length greater than or equal to 1, Member must satisfy regular expression pattern: [0-9]+]",
    ),
    (
        "test_lambda_eventinvokeconfig_exceptions",
        "PutFunctionEventInvokeConfig",
        {
            "FunctionName": "f",
            "DestinationConfig": {
                "OnFailure": {
                    "Destination": "arn:<partition>:_-/!lambda:<region>:111111111111:function:<function-name:1>"
                }
            },
        },
        r"1 validation error detected: Value 'arn:<partition>:_-/!lambda:<region>:111111111111:function:<function-name:1>' at 'destinationConfig.onFailure.destination' failed to satisfy constraint: Member must satisfy regular expression pattern: $|kafka://([^.]([a-zA-Z0-9\-_.]{0,248}))|arn:(aws[a-zA-Z0-9-]*):([a-zA-Z0-9\-])+:((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1})?:(\d{12})?:(.*)",
    ),
]

# test_function_name_and_qualifier_validation records "Errors" lists; long runs of 'a' appear as <a:len(N)>.
A129, A170 = "a" * 129, "a" * 170
ERRORS: list[tuple[str, str, dict[str, Any], list[str], dict[str, str]]] = [
    (
        "function_name_is_single_invalid-get_function",
        "GetFunction",
        {"FunctionName": "*"},
        [
            f"Value '*' at 'functionName' failed to satisfy constraint: Member must satisfy regular expression pattern: {NS_FN_PATTERN}"
        ],
        {},
    ),
    (
        "invalid_characters_in_function_name-create_function",
        "CreateFunction",
        {**CREATE, "FunctionName": "my-function!"},
        [
            f"Value 'my-function!' at 'functionName' failed to satisfy constraint: Member must satisfy regular expression pattern: {FN_PATTERN}"
        ],
        {},
    ),
    (
        "invalid_characters_in_qualifier-get_function",
        "GetFunction",
        {"FunctionName": "f", "Qualifier": "invalid!"},
        [
            r"Value 'invalid!' at 'qualifier' failed to satisfy constraint: Member must satisfy regular expression pattern: \$(LATEST(\.PUBLISHED)?)|[a-zA-Z0-9-_$]+"
        ],
        {},
    ),
    (
        "qualifier_too_long0-get_function",
        "GetFunction",
        {"FunctionName": "f", "Qualifier": A129},
        [
            "Value '<a:len(129)>' at 'qualifier' failed to satisfy constraint: Member must have length less than or equal to 128"
        ],
        {A129: "<a:len(129)>"},
    ),
    # two errors on one member: length first, then pattern
    (
        "function_name_too_long_and_invalid_region-create_function",
        "CreateFunction",
        {**CREATE, "FunctionName": "arn:<partition>:lambda:invalid-region:111111111111:function:my-function" + A170},
        [
            "Value 'arn:<partition>:lambda:invalid-region:111111111111:function:my-function<a:len(140)>aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' at 'functionName' failed to satisfy constraint: Member must have length less than or equal to 140",
            f"Value 'arn:<partition>:lambda:invalid-region:111111111111:function:my-function<a:len(140)>aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' at 'functionName' failed to satisfy constraint: Member must satisfy regular expression pattern: {FN_PATTERN}",
        ],
        {"a" * 140: "<a:len(140)>"},
    ),
    # two members: qualifier is reported before functionName
    (
        "full_arn_and_qualifier_too_long_and_invalid_region-get_function",
        "GetFunction",
        {
            "FunctionName": "arn:<partition>:lambda:invalid-region:111111111111:function:my-function-" + A170,
            "Qualifier": A129,
        },
        [
            "Value '<a:len(129)>' at 'qualifier' failed to satisfy constraint: Member must have length less than or equal to 128",
            f"Value 'arn:<partition>:lambda:invalid-region:111111111111:function:my-function-<a:len(170)>' at 'functionName' failed to satisfy constraint: Member must satisfy regular expression pattern: {NS_FN_PATTERN}",
        ],
        {A170: "<a:len(170)>", A129: "<a:len(129)>"},
    ),
]


def shape(operation: str) -> Any:
    return MODEL.operation_model(operation).input_shape


def raised(operation: str, params: dict[str, Any], skip: set[str] | None = None) -> str:
    with pytest.raises(ValidationException) as info:
        validate(shape(operation), params, skip or set())
    return str(info.value.message)


@pytest.mark.parametrize(("test", "operation", "params", "expected"), RECORDED, ids=[r[0] for r in RECORDED])
def test_recorded_messages(test: str, operation: str, params: dict[str, Any], expected: str) -> None:
    assert raised(operation, params) == expected


@pytest.mark.parametrize(("case", "operation", "params", "expected", "masks"), ERRORS, ids=[e[0] for e in ERRORS])
def test_recorded_error_lists(
    case: str, operation: str, params: dict[str, Any], expected: list[str], masks: dict[str, str]
) -> None:
    found = check(shape(operation), params)
    for text, mask in masks.items():
        found = [f.replace(text, mask, 1) for f in found]
    assert found == expected


def test_recorded_strings_are_verbatim() -> None:
    if not SNAPSHOT.exists():
        pytest.skip("AWS recordings not available")
    strings: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str):
            strings.add(node)

    walk(json.loads(SNAPSHOT.read_text()))
    for _, _, _, expected in RECORDED:
        assert expected in strings
    for _, _, _, errors, _ in ERRORS:
        assert set(errors) <= strings
    assert LAYER_RUNTIMES_PLUS_ARCH in strings


# PublishLayerVersion reports compatibleRuntimes against a server-side list of layer runtimes, not the
# model's enum; the caller skips that member, checks it itself and merges the messages.
LAYER_RUNTIMES_PLUS_ARCH = "2 validation errors detected: Value '[invalidruntime]' at 'compatibleRuntimes' failed to satisfy constraint: Member must satisfy enum value set: [nodejs20.x, python3.14, provided.al2023, python3.12, python3.13, nodejs24.x, nodejs22.x, java25, python3.10, python3.11, java21, ruby3.3, ruby3.4, ruby3.2, python3.8, python3.9, java17, nodejs16.x, dotnet10, dotnet8, java11, dotnet6, nodejs18.x, provided.al2, java8.al2]; Value '[invalidarch]' at 'compatibleArchitectures' failed to satisfy constraint: Member must satisfy constraint: [Member must satisfy enum value set: [x86_64, arm64], Member must not be null]"


def test_skip_and_merge() -> None:
    params = {
        "LayerName": "l",
        "Content": {"ZipFile": b"PK"},
        "CompatibleRuntimes": ["invalidruntime"],
        "CompatibleArchitectures": ["invalidarch"],
    }
    found = check(shape("PublishLayerVersion"), params, skip={"CompatibleRuntimes"})
    runtimes = LAYER_RUNTIMES_PLUS_ARCH.split(": ", 1)[1].split("; ")[0]
    assert message([runtimes, *found]) == LAYER_RUNTIMES_PLUS_ARCH


def test_runtime_is_left_to_the_caller() -> None:
    create = shape("CreateFunction")
    assert check(create, {**CREATE, "Runtime": "python0.1"}, skip={"Runtime"}) == []
    assert check(create, {**CREATE, "Runtime": "python0.1"})[0].startswith(
        "Value 'python0.1' at 'runtime' failed to satisfy constraint: Member must satisfy enum value set: ["
    )


def test_valid_requests_pass() -> None:
    validate(
        shape("CreateFunction"),
        {
            **CREATE,
            "Runtime": "python3.12",
            "Handler": "app.handler",
            "MemorySize": 256,
            "Timeout": 30,
            "Architectures": ["arm64"],
            "Environment": {"Variables": {"A_B": "1"}},
            "Tags": {"team": "x y"},
            "Layers": ["arn:aws:lambda:us-east-1:111111111111:layer:l:1"],
            "Description": "",
            "VpcConfig": {"SubnetIds": ["subnet-1"], "SecurityGroupIds": ["sg-1"]},
        },
    )
    validate(shape("ListFunctions"), {})
    validate(
        shape("TagResource"),
        {"Resource": "arn:aws:lambda:us-east-1:111111111111:function:f", "Tags": {"Ünïcode key:/=+-@": "välue 1"}},
    )  # Java's \p{L}\p{Z}\p{N}


def test_message_format_and_count() -> None:
    text = raised("CreateFunction", {"FunctionName": "f", "Code": {}, "MemorySize": 1, "Timeout": 0})
    assert text == (
        "3 validation errors detected: "  # reverse alphabetical, as AWS orders members
        "Value '0' at 'timeout' failed to satisfy constraint: Member must have value greater than or equal to 1; "
        "Value null at 'role' failed to satisfy constraint: Member must not be null; "
        "Value '1' at 'memorySize' failed to satisfy constraint: Member must have value greater than or equal to 128"
    )


def test_nested_lists_maps_and_sensitive_values() -> None:
    found = check(
        shape("CreateFunction"),
        {**CREATE, "Environment": {"Variables": {"1bad": "v"}}, "FileSystemConfigs": [{"Arn": "x"}, None]},
    )
    assert found == [
        "Value '[{Arn=x}, null]' at 'fileSystemConfigs' failed to satisfy constraint: Member must have length less "
        "than or equal to 1",
        "Value null at 'fileSystemConfigs.1.member.localMountPath' failed to satisfy constraint: Member must not be null",
        "Value 'x' at 'fileSystemConfigs.1.member.arn' failed to satisfy constraint: Member must satisfy regular "
        "expression pattern: " + MODEL.shape_for("FileSystemArn").metadata["pattern"],
        "Value null at 'fileSystemConfigs.2.member' failed to satisfy constraint: Member must not be null",
        # a sensitive map shows no value
        "Value at 'environment.variables' failed to satisfy constraint: Map keys must satisfy constraint: "
        "[Member must satisfy regular expression pattern: [a-zA-Z]([a-zA-Z0-9_])+]",
    ]


def test_model_drift_uses_botocore_pattern() -> None:
    # AWS's TaggableResource pattern has moved on from botocore's; the model's pattern is what we print.
    [found] = check(shape("TagResource"), {"Resource": "arn:<partition>:something", "Tags": {}})
    pattern = MODEL.shape_for("TaggableResource").metadata["pattern"]
    assert (
        found == f"Value 'arn:<partition>:something' at 'resource' failed to satisfy constraint: "
        f"Member must satisfy regular expression pattern: {pattern}"
    )


def test_type_mismatches_do_not_crash() -> None:
    weird: dict[str, Any] = {
        "FunctionName": 5,
        "Role": ["x"],
        "Code": "zip",
        "MemorySize": "big",
        "Architectures": "arm64",
        "Environment": {"Variables": [1]},
        "Layers": [{"a": 1}],
        "VpcConfig": {"SubnetIds": [3]},
        "Tags": {"k": None},
    }
    assert isinstance(check(shape("CreateFunction"), weird), list)


def test_fast_enough() -> None:
    create, params = (
        shape("CreateFunction"),
        {
            **CREATE,
            "Runtime": "python3.12",
            "Handler": "app.handler",
            "MemorySize": 256,
            "Timeout": 30,
            "Architectures": ["x86_64"],
            "Environment": {"Variables": {"A": "1", "B": "2"}},
            "Layers": ["arn:aws:lambda:us-east-1:111111111111:layer:l:1"],
            "Tags": {"a": "b"},
        },
    )
    check(create, params)  # compile once
    runs = 500
    start = time.perf_counter()
    for _ in range(runs):
        check(create, params, skip={"Runtime"})
    assert (time.perf_counter() - start) / runs < 0.0005


def test_enum_values_in_java_hashset_order() -> None:
    # PublishLayerVersion's recorded list of layer runtimes is a HashSet of the model's Runtime enum values,
    # iterated by hash bucket, collisions in model order: the order used for every enum message.
    from kindling.frontend.validate import _hash_order

    recorded = LAYER_RUNTIMES_PLUS_ARCH.split("enum value set: [")[1].split("]")[0].split(", ")
    model_order = [r for r in MODEL.shape_for("Runtime").enum if r in recorded]
    assert model_order != recorded
    assert _hash_order(model_order) == recorded


# -- types: checked before any constraint, so no handler ever sees a member of the wrong type ------------------
def _parse(operation: str, doc: Any = None, body: bytes | None = None, query: dict[str, list[str]] | None = None,
           labels: dict[str, str] | None = None) -> dict[str, Any]:
    from kindling.frontend import protocol

    data = body if body is not None else json.dumps(doc).encode() if doc is not None else b""
    return protocol.parse_request(MODEL.operation_model(operation), labels or {"FunctionName": "f"}, query or {}, {},
                                  data)


WRONG_TYPES = [
    ("TagResource", {"Tags": ["a"]}, "Start of list found where not expected."),
    ("TagResource", {"Tags": {"k": 1}}, "NUMBER_VALUE can not be converted to a String"),
    ("TagResource", {"Tags": "k=v"}, "STRING_VALUE can not be converted to a Map"),
    ("CreateAlias", {"Name": {"a": 1}, "FunctionVersion": "1"}, "Start of structure or map found where not expected."),
    ("PutFunctionConcurrency", {"ReservedConcurrentExecutions": "5"}, "STRING_VALUE can not be converted to an Integer"),
    ("PutFunctionConcurrency", {"ReservedConcurrentExecutions": 2**31}, "NUMBER_VALUE can not be converted to an Integer"),
    ("PutProvisionedConcurrencyConfig", {"ProvisionedConcurrentExecutions": 1.5}, "DECIMAL_VALUE can not be converted to an Integer"),
    ("PutFunctionEventInvokeConfig", {"DestinationConfig": {"OnFailure": "arn"}}, "STRING_VALUE can not be converted to a Structure"),
    ("UpdateFunctionConfiguration", {"MemorySize": True}, "TRUE_VALUE can not be converted to an Integer"),
    ("UpdateFunctionConfiguration", {"Environment": {"Variables": ["A=1"]}}, "Start of list found where not expected."),
    ("UpdateFunctionConfiguration", {"Description": "\ud800"}, "Invalid UTF-8 in a string member"),
    ("UpdateFunctionCode", {"ZipFile": 5}, "NUMBER_VALUE can not be converted to a ByteBuffer"),
    ("UpdateFunctionCode", {"Publish": "true"}, "STRING_VALUE can not be converted to a Boolean"),
    ("UpdateAlias", {"RoutingConfig": {"AdditionalVersionWeights": {"1": 10**400}}}, "NUMBER_VALUE can not be converted to a Double"),
]


@pytest.mark.parametrize(("operation", "doc", "expected"), WRONG_TYPES, ids=[f"{w[0]}-{i}" for i, w in enumerate(WRONG_TYPES)])
def test_wrong_json_types_are_serialization_exceptions(operation: str, doc: dict[str, Any], expected: str) -> None:
    from kindling import errors

    with pytest.raises(errors.SerializationException) as exc:
        _parse(operation, doc)
    assert (exc.value.status, exc.value.message) == (400, expected)


def test_types_are_kept_nulls_and_unknown_members_dropped() -> None:
    params = _parse("UpdateFunctionConfiguration", {"Description": None, "MemorySize": 256, "Extra": [1],
                                                     "Environment": {"Variables": {"A": "1"}}, "Timeout": None})
    assert params == {"FunctionName": "f", "MemorySize": 256, "Environment": {"Variables": {"A": "1"}}}
    weights = _parse("UpdateAlias", {"RoutingConfig": {"AdditionalVersionWeights": {"1": 1}}}, labels={
        "FunctionName": "f", "Name": "a"})["RoutingConfig"]["AdditionalVersionWeights"]
    assert weights == {"1": 1.0} and isinstance(weights["1"], float)
    assert _parse("UpdateFunctionCode", {"ZipFile": "UEs="})["ZipFile"] == b"PK"


@pytest.mark.parametrize("body", [b"[" * 200_000 + b"]" * 200_000, b'{"Description": ' + b"[" * 5000 + b"]" * 5000 + b"}",
                                  b'{"MemorySize": NaN}', b'{"MemorySize": Infinity}', b"\xff"])
def test_unparseable_bodies_are_invalid_request_content(body: bytes) -> None:
    from kindling import errors

    with pytest.raises(errors.InvalidRequestContentException):
        _parse("UpdateFunctionConfiguration", body=body)


@pytest.mark.parametrize("raw", ["99999999999999999999", "2147483648", "\u0661", " 1", "1_0", "abc", ""])
def test_query_integers_are_checked_for_form_and_range(raw: str) -> None:
    from kindling import errors

    with pytest.raises(errors.InvalidParameterValueException):
        _parse("ListFunctions", query={"MaxItems": [raw]}, labels={})
    assert _parse("ListFunctions", query={"MaxItems": ["50"]}, labels={}) == {"MaxItems": 50}


LOGS_WRONG = [
    ("CreateLogGroup", {"logGroupName": ["a"]}, "SerializationException"),
    ("DescribeLogGroups", {"limit": "5"}, "SerializationException"),
    ("GetLogEvents", {"logGroupName": "g", "logStreamName": "s", "startTime": 10**30}, "SerializationException"),
    ("GetLogEvents", {"logGroupName": "g", "logStreamName": "s", "startFromHead": 1}, "SerializationException"),
    ("FilterLogEvents", {"logGroupName": "g", "logStreamNames": {"a": 1}}, "SerializationException"),
    ("PutRetentionPolicy", {"logGroupName": "g", "retentionInDays": 1.5}, "SerializationException"),
    ("DescribeLogStreams", {"logGroupIdentifier": "arn:aws:lambda:us-east-1:000000000000:function:f"}, "InvalidParameterException"),
    ("CreateLogGroup", {"logGroupName": ""}, "InvalidParameterException"),
]


@pytest.mark.parametrize(("operation", "doc", "code"), LOGS_WRONG, ids=[f"{w[0]}-{i}" for i, w in enumerate(LOGS_WRONG)])
def test_logs_members_are_typed_before_any_handler(operation: str, doc: dict[str, Any], code: str) -> None:
    from kindling import errors
    from kindling.frontend import logs_api

    with pytest.raises(errors.LogsError) as exc:
        logs_api._params(operation, json.dumps(doc).encode())
    assert (exc.value.code, exc.value.status) == (code, 400)


def test_logs_deep_or_odd_bodies_are_serialization_exceptions() -> None:
    from kindling import errors
    from kindling.frontend import logs_api

    for body in (b"[" * 200_000 + b"]" * 200_000, b'{"limit": NaN}', b"\xff", b"[]"):
        with pytest.raises(errors.LogsSerializationException):
            logs_api._params("DescribeLogGroups", body)
    assert logs_api._params("DescribeLogGroups", b'{"limit": 5, "logGroupNamePrefix": null, "x": 1}') == {"limit": 5}


def test_patterns_are_not_run_over_huge_strings() -> None:
    # A regex over a multi-megabyte member would hold the event loop for seconds; such a member breaks its
    # length constraint anyway and is reported as not matching its pattern either.
    huge = "1" * 4_000_000 + ":"
    started = time.perf_counter()
    found = check(shape("GetFunctionConfiguration"), {"FunctionName": huge})
    assert time.perf_counter() - started < 0.2
    assert [f.split("constraint: ", 1)[1][:46] for f in found] == ["Member must have length less than or equal to ",
                                                                   "Member must satisfy regular expression pattern"]
