"""Which IAM action and resource ARN each request Kindling serves is authorized as.

Lambda's operations are ``lambda:<Operation>`` (Invoke is lambda:InvokeFunction) on the function's ARN,
qualified when the request names a version or alias, as Lambda authorizes them; CloudWatch Logs'
are ``logs:<Operation>`` on the log group (or stream) ARN; IAM's are ``iam:<Operation>`` on the role or
policy ARN.
"""

from __future__ import annotations

from typing import Any

from kindling import arns

_LAMBDA_ACTIONS = {"Invoke": "InvokeFunction", "InvokeWithResponseStream": "InvokeFunction"}
_ACCOUNT_WIDE = "*"


def lambda_request(op: str, params: dict[str, Any], region: str, account: str) -> tuple[str, str, dict[str, list[str]]]:
    """(action, resource, extra condition keys) of a Lambda API operation."""
    action = "lambda:" + _LAMBDA_ACTIONS.get(op, op)
    if "Resource" in params and op in ("TagResource", "UntagResource", "ListTags"):
        return action, str(params["Resource"]), {}
    ident = params.get("FunctionName")
    if not isinstance(ident, str):
        return action, _ACCOUNT_WIDE, {}
    qualifier = params.get("Qualifier") if op not in ("CreateAlias", "UpdateAlias") else None
    try:
        name, qualifier = arns.split_function(ident, region, account, qualifier)
    except Exception:  # noqa: BLE001 - the handler reports a malformed name; authorize what was asked for
        name, qualifier = ident, None
    unqualified = arns.function_arn(region, account, name)
    return action, arns.function_arn(region, account, name, qualifier), {"lambda:functionarn": [unqualified]}


def logs_request(op: str, params: dict[str, Any], region: str, account: str) -> tuple[str, str]:
    group = params.get("logGroupName") or params.get("logGroupIdentifier") or ""
    base = f"arn:aws:logs:{region}:{account}:log-group:"
    if isinstance(group, str) and group.startswith("arn:"):
        base, group = group.split(":log-group:", 1)[0] + ":log-group:", group.split(":log-group:", 1)[-1]
    if not group:
        return f"logs:{op}", f"{base}*"
    stream = params.get("logStreamName")
    if isinstance(stream, str) and stream:
        return f"logs:{op}", f"{base}{group}:log-stream:{stream}"
    return f"logs:{op}", f"{base}{group}:*"


def iam_request(op: str, params: dict[str, Any], account: str, role_arn: str | None) -> tuple[str, str]:
    """``role_arn``: the ARN of the role the request names, if it exists (its path is part of it)."""
    action = f"iam:{op}"
    if "RoleName" in params:
        return action, role_arn or f"arn:aws:iam::{account}:role/{params['RoleName']}"
    if "PolicyArn" in params:
        return action, str(params["PolicyArn"])
    if op == "CreatePolicy":
        return action, f"arn:aws:iam::{account}:policy{params.get('Path', '/')}{params.get('PolicyName', '')}"
    if op == "ListRoles":
        return action, f"arn:aws:iam::{account}:role/"
    return action, _ACCOUNT_WIDE
