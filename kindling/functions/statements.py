"""AddPermission's members as the policy statement Lambda writes for them, in Lambda's shape and key order.

Principal: ``*`` stays ``*``; an account id becomes ``{"AWS": "arn:aws:iam::<id>:root"}``; an IAM or STS ARN
``{"AWS": <arn>}``; a service's domain (``s3.amazonaws.com``) ``{"Service": ...}``. SourceAccount, FunctionUrlAuthType,
PrincipalOrgID and EventSourceToken are StringEquals conditions, SourceArn an ArnLike one (as recorded on AWS), and
InvokedViaFunctionUrl a Bool one on ``lambda:InvokedViaFunctionUrl``.
"""

from __future__ import annotations

import re
from typing import Any

from kindling import errors

INVALID_PRINCIPAL = "The provided principal was invalid. Please check the principal and try again."
_ACCOUNT = re.compile(r"\d{12}")
_IAM_ARN = re.compile(r"arn:aws[a-zA-Z-]*:(iam::\d{12}:(root|(user|role)/[\w+=,.@/-]{1,512})|"
                      r"sts::\d{12}:(assumed-role|federated-user)/[\w+=,.@/-]{1,512})")
# A service principal: a DNS name under amazonaws.com (or .amazonaws.com.cn, or Alexa's amazon.com ones)
_SERVICE = re.compile(r"[a-z0-9]([a-z0-9-]{0,62}\.){1,4}(amazonaws\.com(\.cn)?|amazon\.com)")


def principal(value: str) -> str | dict[str, str]:
    if value == "*":
        return "*"
    if _ACCOUNT.fullmatch(value):
        return {"AWS": f"arn:aws:iam::{value}:root"}
    if _IAM_ARN.fullmatch(value):
        return {"AWS": value}
    if _SERVICE.fullmatch(value):
        return {"Service": value}
    raise errors.InvalidParameterValueException(INVALID_PRINCIPAL)


def statement(p: dict[str, Any], resource: str) -> dict[str, Any]:
    """The statement AddPermission's members ``p`` add to the policy of ``resource`` (a function ARN)."""
    action = p["Action"]
    who = principal(p["Principal"])
    if p.get("FunctionUrlAuthType") and action.lower() not in ("lambda:invokefunctionurl", "lambda:*", "*"):
        raise errors.InvalidParameterValueException(
            "FunctionUrlAuthType is only supported for lambda:InvokeFunctionUrl action")
    if p.get("InvokedViaFunctionUrl") and action.lower() not in ("lambda:invokefunction", "lambda:*", "*"):
        raise errors.InvalidParameterValueException(
            "InvokedViaFunctionUrl is only supported for lambda:InvokeFunction action")
    out: dict[str, Any] = {"Sid": p["StatementId"], "Effect": "Allow", "Principal": who, "Action": action,
                           "Resource": resource}
    equals = {key: p[member] for member, key in (
        ("SourceAccount", "AWS:SourceAccount"), ("FunctionUrlAuthType", "lambda:FunctionUrlAuthType"),
        ("PrincipalOrgID", "aws:PrincipalOrgID"), ("EventSourceToken", "lambda:EventSourceToken"),
    ) if p.get(member)}
    condition: dict[str, Any] = {}
    if equals:
        condition["StringEquals"] = equals
    if p.get("SourceArn"):
        condition["ArnLike"] = {"AWS:SourceArn": p["SourceArn"]}
    if p.get("InvokedViaFunctionUrl"):
        condition["Bool"] = {"lambda:InvokedViaFunctionUrl": "true"}
    if condition:
        out["Condition"] = condition
    return out
