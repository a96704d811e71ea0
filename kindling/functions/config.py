"""A function's configuration as Lambda renders it, built from CreateFunction and
UpdateFunctionConfiguration requests, with Lambda's checks beyond the model."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from kindling import errors
from kindling.frontend.protocol import service_model
from kindling.functions import states
from kindling.runtimes.registry import DEPRECATED, PROVIDED, Runtimes

# Keys Lambda sets itself; a function may not set them (AWS's list).
RESERVED_KEYS = frozenset({
    "_HANDLER", "_X_AMZN_TRACE_ID", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR",
})
ENV_LIMIT = 4096

# Members of UpdateFunctionConfiguration that replace the stored value as they are.
_PLAIN = ("Role", "Handler", "Description", "Timeout", "MemorySize", "Runtime")


def lambda_timestamp(t: float | None = None) -> str:
    """Lambda's LastModified format: 2024-01-01T00:00:00.000+0000."""
    t = time.time() if t is None else t
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}+0000"


# The valid runtimes as AWS lists them in the error for an unknown one (its server-side set, in its order; recorded).
AWS_RUNTIMES = ("nodejs20.x, python3.14, provided.al2023, python3.12, python3.13, nodejs24.x, nodejs22.x, java25, "
                "python3.10, python3.11, java21, ruby3.3, ruby3.4, ruby3.2, python3.8, python3.9, java17, nodejs16.x, "
                "dotnet10, dotnet8, java11, dotnet6, nodejs18.x, provided.al2, java8.al2")


def check_runtime(runtime: str, runtimes: Runtimes) -> None:
    if runtime in DEPRECATED:
        raise errors.InvalidParameterValueException(
            f"The runtime parameter of {runtime} is no longer supported for creating or updating AWS Lambda "
            "functions. We recommend you use a supported runtime while creating or updating functions.")
    enum = service_model().shape_for("Runtime").enum
    if runtime not in enum:
        raise errors.InvalidParameterValueException(
            f"Value {runtime} at 'runtime' failed to satisfy constraint: Member must satisfy enum value set: "
            f"[{AWS_RUNTIMES}] or be a valid ARN")
    if not runtimes.available(runtime):
        raise errors.InvalidParameterValueException(
            f"The runtime {runtime} is not available on this Kindling host: no interpreter for it was found. "
            "Install it or name its path with --runtimes / KINDLING_RUNTIMES.")


def check_environment(env: dict[str, Any] | None) -> None:
    variables = (env or {}).get("Variables") or {}
    reserved = sorted(k for k in variables if k in RESERVED_KEYS)
    if reserved:
        raise errors.InvalidParameterValueException(
            "Lambda was unable to configure your environment variables because the environment variables you have "
            "provided contains reserved keys that are currently not supported for modification. Reserved keys used "
            f"in this request: {', '.join(reserved)}")
    measured = json.dumps(variables, separators=(",", ":"))
    if len(measured.encode()) > ENV_LIMIT:
        raise errors.InvalidParameterValueException(
            "Lambda was unable to configure your environment variables because the environment variables you have "
            f"provided exceeded the 4KB limit. String measured: {measured}")


def check_handler(runtime: str, handler: str | None) -> None:
    if handler is None and runtime not in PROVIDED:
        raise errors.InvalidParameterValueException("Handler must be set for this runtime.")


def logging_config(current: dict[str, Any], given: dict[str, Any] | None) -> dict[str, Any]:
    """LoggingConfig after a request: JSON brings log levels (INFO unless given), Text has none."""
    merged = {**current, **(given or {})}
    levels = ("ApplicationLogLevel", "SystemLogLevel")
    if merged.get("LogFormat") == "JSON":
        return {**{k: "INFO" for k in levels}, **merged}
    if any(k in (given or {}) for k in levels):
        raise errors.InvalidParameterValueException(
            'LogLevel is not supported when LogFormat is set to "Text". Remove LogLevel from your request or change '
            'the LogFormat to "JSON" and try again.')
    return {k: v for k, v in merged.items() if k not in levels}


def new_configuration(params: dict[str, Any], arn: str, code: dict[str, Any], region: str) -> dict[str, Any]:
    name = arn.rsplit(":", 1)[1]
    runtime = params["Runtime"]
    logging = logging_config({"LogFormat": "Text", "LogGroup": f"/aws/lambda/{name}"}, params.get("LoggingConfig"))
    config: dict[str, Any] = {
        "FunctionName": name,
        "FunctionArn": arn,
        "Runtime": runtime,
        "Role": params["Role"],
        "Handler": params.get("Handler"),
        "CodeSize": code["CodeSize"],
        "Description": params.get("Description", ""),
        "Timeout": params.get("Timeout", 3),
        "MemorySize": params.get("MemorySize", 128),
        "LastModified": lambda_timestamp(),
        "CodeSha256": code["CodeSha256"],
        "Version": "$LATEST",
        "TracingConfig": {"Mode": (params.get("TracingConfig") or {}).get("Mode", "PassThrough")},
        "RevisionId": str(uuid.uuid4()),
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "PackageType": "Zip",
        "Architectures": params.get("Architectures") or ["x86_64"],
        "EphemeralStorage": {"Size": (params.get("EphemeralStorage") or {}).get("Size", 512)},
        "SnapStart": {"ApplyOn": (params.get("SnapStart") or {}).get("ApplyOn", "None"), "OptimizationStatus": "Off"},
        "RuntimeVersionConfig": {"RuntimeVersionArn": _runtime_version_arn(runtime, region)},
        "LoggingConfig": logging,
    }
    if "Environment" in params:  # AWS shows Environment only once it was set
        config["Environment"] = {"Variables": dict((params["Environment"] or {}).get("Variables") or {})}
    if "VpcConfig" in params:  # as kindling.network.vpc answered it (with VpcId); AWS shows it once set
        config["VpcConfig"] = params["VpcConfig"]
    if (params.get("DeadLetterConfig") or {}).get("TargetArn"):  # async events that fail go there (kindling.queue)
        config["DeadLetterConfig"] = {"TargetArn": params["DeadLetterConfig"]["TargetArn"]}
    return config


def updated_configuration(config: dict[str, Any], params: dict[str, Any], region: str) -> dict[str, Any]:
    new = dict(config)
    for key in _PLAIN:
        if key in params:
            new[key] = params[key]
    if "Environment" in params:
        new["Environment"] = {"Variables": dict((params["Environment"] or {}).get("Variables") or {})}
    if "VpcConfig" in params:  # the whole of it, as kindling.network.vpc answered it; empty lists leave the VPC
        new["VpcConfig"] = params["VpcConfig"]
    if "TracingConfig" in params:
        new["TracingConfig"] = {"Mode": params["TracingConfig"].get("Mode", "PassThrough")}
    if "DeadLetterConfig" in params:  # an empty TargetArn removes it
        target = (params["DeadLetterConfig"] or {}).get("TargetArn")
        new.pop("DeadLetterConfig", None)
        if target:
            new["DeadLetterConfig"] = {"TargetArn": target}
    if "EphemeralStorage" in params:
        new["EphemeralStorage"] = {"Size": params["EphemeralStorage"]["Size"]}
    if "LoggingConfig" in params:
        new["LoggingConfig"] = logging_config(config["LoggingConfig"], params["LoggingConfig"])
    if "SnapStart" in params:
        new["SnapStart"] = {"ApplyOn": params["SnapStart"].get("ApplyOn", "None"), "OptimizationStatus": "Off"}
    if "Runtime" in new:  # not for container images
        new["RuntimeVersionConfig"] = {"RuntimeVersionArn": _runtime_version_arn(new["Runtime"], region)}
    new["LastModified"] = lambda_timestamp()
    return new


def published_configuration(latest: dict[str, Any], version: str, arn: str, description: str | None,
                            pending: bool = False) -> dict[str, Any]:
    """A published version: $LATEST's code and configuration as they are now, frozen under a number. PublishVersion
    answers it Active; published with CreateFunction / UpdateFunctionCode (``pending``) it is Pending until
    kindling.functions.updates has checked it, as recorded on AWS."""
    config = {**latest, "FunctionArn": arn, "Version": version, "RevisionId": str(uuid.uuid4()),
              "LastModified": lambda_timestamp(), "Description": description or latest.get("Description", "")}
    config = states.pending(config) if pending else states.succeeded(config)
    snap = config.get("SnapStart") or {}
    if snap.get("ApplyOn") == "PublishedVersions":
        config["SnapStart"] = {**snap, "OptimizationStatus": "On"}
    return config


def as_addressed(config: dict[str, Any], arn: str) -> dict[str, Any]:
    """A version's configuration read through a qualifier: FunctionArn is the ARN as addressed."""
    return {**config, "FunctionArn": arn}


# What list operations leave out of each configuration (as AWS's ListFunctions / ListVersionsByFunction).
_NOT_LISTED = frozenset({"State", "StateReason", "StateReasonCode", "LastUpdateStatus", "LastUpdateStatusReason",
                         "LastUpdateStatusReasonCode", "RuntimeVersionConfig"})


def as_listed(config: dict[str, Any], arn: str | None = None) -> dict[str, Any]:
    out = {k: v for k, v in config.items() if k not in _NOT_LISTED}
    if arn:
        out["FunctionArn"] = arn
    return out


def _runtime_version_arn(runtime: str, region: str) -> str:
    return f"arn:aws:lambda:{region}::runtime:{uuid.uuid5(uuid.NAMESPACE_URL, 'kindling/' + runtime).hex}"
